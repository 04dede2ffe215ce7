"""The MAGE recipe under DDP: 2 CPU processes (gloo), 2 debug batches per epoch."""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "LibriSpeech-noisy", "mage")


@pytest.mark.skipif(shutil.which("torchrun") is None and sys.executable is None,
                    reason="needs torch.distributed.run")
def test_mage_recipe_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29533", "train.py", "hparams/mage.yaml", "--debug",
           "--distributed_backend", "gloo", "--device", "cpu", "--output_folder", str(out),
           "--data_save_folder", str(tmp_path / "data"), "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(cmd, cwd=RECIPE, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    log = (out / "train_log.txt").read_text()
    # Two epochs logged once (by the main process only), then the test stage.
    assert log.count("epoch: 1,") == 1 and log.count("epoch: 2,") == 1, log
    assert "test loss" in log
    assert (out / "model" / "enhancer.ckpt").is_file()
    # Both ranks tokenized their share of the training set into one cache.
    caches = list((out / "tokens").iterdir())
    assert len(caches) == 1 and len(list(caches[0].glob("*.pt"))) > 0
