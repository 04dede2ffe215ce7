"""Runs every recipe registered in tests/recipes/*.csv with --debug (SpeechBrain style).

Each row names the script, its hparams, data prep and README (all must exist),
extra debug flags, and checks on the output folder (``file_exists=[a,b]``);
every model folder a recipe exports (an ``inference.yaml``) is loaded back
with ``EnhanceGenerative.from_hparams`` and enhances half a second.
The recipes run on the embedded corpus, built in a temporary folder.
"""

import csv
import glob
import os
import shlex
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # subprocess runs / shipped models: minutes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = []
for path in sorted(glob.glob(os.path.join(REPO, "tests", "recipes", "*.csv"))):
    with open(path, newline="") as f:
        ROWS += [row for row in csv.DictReader(f)]


def _checks(spec):
    spec = spec.strip()
    if not spec:
        return []
    assert spec.startswith("file_exists=[") and spec.endswith("]"), spec
    return [name.strip() for name in spec[len("file_exists=["):-1].split(",") if name.strip()]


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['Dataset']}/{r['Task']}/"
                                           f"{os.path.basename(r['Hparam_file'])}" for r in ROWS])
def test_recipe_debug(row, tmp_path):
    for key in ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file"):
        assert os.path.isfile(os.path.join(REPO, row[key])), f"{key} missing: {row[key]}"
    script = os.path.join(REPO, row["Script_file"])
    out = tmp_path / "out"
    cmd = [sys.executable, script, os.path.join(REPO, row["Hparam_file"]), "--debug",
           "--output_folder", str(out), "--data_save_folder", str(tmp_path / "data"),
           *shlex.split(row["test_debug_flags"])]
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run(cmd, cwd=os.path.dirname(script), env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in _checks(row["test_debug_checks"]):
        assert (out / name).exists(), f"{name} not written by {row['Script_file']}"
    for folder in sorted(out.glob("**/inference.yaml")):
        _load_back(folder.parent)


def _load_back(folder):
    """An exported model folder loads through the user path and enhances."""
    import torch

    from speechbrain_gense.inference import EnhanceGenerative

    if folder.name.startswith("debug_models") or folder.parent.name == "debug_models":
        return  # models a recipe writes for its own --debug run (se_asr)
    enhancer = EnhanceGenerative.from_hparams(source=str(folder), run_opts={"device": "cpu"})
    noisy = 0.1 * torch.randn(1, enhancer.sample_rate // 2,
                              generator=torch.Generator().manual_seed(0))
    out = enhancer.enhance_batch(noisy, seed=0)
    assert out.shape == noisy.shape and torch.isfinite(out).all(), folder
