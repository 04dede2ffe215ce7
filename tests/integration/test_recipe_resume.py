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


RVQ = os.path.join(REPO, "recipes", "LibriSpeech-noisy", "rvqcodec")


def _rvq(out, data, *extra):
    return [sys.executable, os.path.join(RVQ, "train.py"),
            os.path.join(RVQ, "hparams", "rvqcodec.yaml"), "--debug", "--noprogressbar",
            "--output_folder", str(out), "--data_save_folder", str(data), *extra]


def test_codec_run_continues_from_an_exported_codec(tmp_path):
    """A new machine has no checkpoints: ``--init_from`` starts from an export
    (e.g. the shipped codec), and the exported history continues the curve."""
    import json

    import torch

    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    data = tmp_path / "data"
    first = subprocess.run(_rvq(tmp_path / "a", data), cwd=RVQ, env=env, capture_output=True,
                           text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    # A wrong init_from is one clear line, before any training.
    bad = subprocess.run(_rvq(tmp_path / "bad", data, "--init_from", str(tmp_path / "a" / "codec"),
                              "--num_quantizers", "2"), cwd=RVQ, env=env, capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode != 0
    said = bad.stdout + bad.stderr  # SpeechBrain logs to stdout
    assert "ValueError: init_from:" in said and "num_quantizers" in said
    second = subprocess.run(_rvq(tmp_path / "b", data, "--init_from", str(tmp_path / "a" / "codec"),
                                 "--number_of_epochs", "1"), cwd=RVQ, env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Codec initialised from" in second.stdout + second.stderr
    with open(tmp_path / "b" / "codec" / "training_history.json") as f:
        history = json.load(f)
    with open(tmp_path / "a" / "codec" / "training_history.json") as f:
        before = json.load(f)
    assert [p["run"] for p in history] == [1] * len(before) + [2]
    assert history[:len(before)] == before
    assert history[-1]["epoch"] == before[-1]["epoch"] + 1
    assert history[-1]["steps"] > before[-1]["steps"]
    with open(tmp_path / "b" / "codec_report.json") as f:
        report = json.load(f)
    assert report["initialised_from"] == str(tmp_path / "a" / "codec")
    assert report["epochs_trained"] == before[-1]["epoch"] + 1
    # The second run really started from the first codec: after two steps its
    # weights are much nearer the first run's than a third, fresh run's are.
    from speechbrain_gense.tokenizers.rvq import RVQTokenizer

    third = subprocess.run(_rvq(tmp_path / "c", tmp_path / "data7", "--number_of_epochs", "1",
                                "--seed", "7"),
                           cwd=RVQ, env=env, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    a, b, c = (dict(RVQTokenizer(str(tmp_path / x / "codec")).model.named_parameters())
               for x in "abc")
    dist = lambda x, y: sum(float((x[k] - y[k]).norm()) for k in x) / sum(
        float(x[k].norm()) for k in x)
    assert dist(b, a) < 0.2 * dist(c, a)


def test_mage_run_starts_from_an_exported_model(tmp_path):
    """``--init_from`` copies an exported MAGE (e.g. ``pretrained/mage``) into a run that
    has no checkpoint; a model of other sizes is one clear line before any training."""
    import json

    import torch

    from speechbrain_gense.models.mage import MAGE

    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    data = tmp_path / "data"
    first = subprocess.run(_cmd(tmp_path / "a", data, 1), cwd=RECIPE, env=env,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    source = str(tmp_path / "a" / "model")
    # lr 0: the copied weights are exported unchanged, so the export shows what was copied.
    second = subprocess.run(_cmd(tmp_path / "b", data, 1) + ["--init_from", source, "--lr", "0.0"],
                            cwd=RECIPE, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Initialised corrector, enhancer from" in second.stdout + second.stderr
    with open(tmp_path / "b" / "save" / "init_from.json") as f:
        assert json.load(f) == {"source": source, "modules": ["corrector", "enhancer"]}
    a, b = MAGE.load(source), MAGE.load(str(tmp_path / "b" / "model"))
    for part in ("enhancer", "corrector"):
        theirs, ours = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert theirs.keys() == ours.keys()
        for key in theirs:  # both int8 exports of the same weights
            assert torch.allclose(theirs[key], ours[key], atol=1e-2, rtol=1e-2), key
    wider = _cmd(tmp_path / "c", data, 1) + ["--init_from", source]
    wider[wider.index("--hidden_size") + 1] = "48"
    bad = subprocess.run(wider, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0
    said = bad.stdout + bad.stderr
    assert "ValueError: init_from:" in said and "give the recipe the model's sizes" in said
    assert not os.path.exists(tmp_path / "c" / "train_log.txt")
