"""The MAGE recipe resumes after being killed (SpeechBrain checkpoints)."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytestmark = pytest.mark.slow  # two recipe runs in subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "LibriSpeech-noisy", "mage")


def _tiny():
    """The --debug sizes of hparams/debug.yaml, given as plain overrides: --debug stops
    after its own number of epochs whatever the epoch counter says, which hides resumption."""
    with open(os.path.join(RECIPE, "hparams", "debug.yaml")) as f:
        debug = yaml.safe_load(f)
    args = []
    for key, value in debug.items():
        text = value if isinstance(value, str) else yaml.safe_dump(
            value, default_flow_style=True).strip().removesuffix("...").strip()
        args += [f"--{key}", text]
    return [*args, "--noprogressbar"]


TINY = _tiny()


def _cmd(out, data, epochs):
    return [sys.executable, os.path.join(RECIPE, "train.py"),
            os.path.join(RECIPE, "hparams", "mage.yaml"), "--output_folder", str(out),
            "--data_save_folder", str(data), "--number_of_epochs", str(epochs), *TINY]


def _epochs(train_log):
    with open(train_log) as f:
        return [int(m.group(1)) for m in re.finditer(r"^epoch: (\d+),", f.read(), re.M)]


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    # A long run, killed once its first epoch checkpoint is on disk.
    proc = subprocess.Popen(_cmd(out, data, 100), cwd=RECIPE, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not glob.glob(str(out / "save" / "CKPT+*" / "CKPT.yaml")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "no checkpoint after 300 s"
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _epochs(out / "train_log.txt")
    assert done and done == list(range(1, len(done) + 1)) and not (out / "model").exists()
    # The same command with a final epoch count goes on from the next epoch.
    last = len(done) + 1
    run = subprocess.run(_cmd(out, data, last), cwd=RECIPE, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _epochs(out / "train_log.txt") == list(range(1, last + 1))
    assert (out / "model" / "inference.yaml").exists() and (out / "test_stats.json").exists()
