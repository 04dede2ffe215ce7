"""Install checks, run first: the pinned torch pair, the lock file, the doctor."""

import os
import pickle
import re
import subprocess
import sys

import pytest

from speechbrain_gense import doctor
from speechbrain_gense.paths import CHECKOUT_ROOT

LOCK = os.path.join(CHECKOUT_ROOT, "requirements", "lock.txt")
SETUP = os.path.join(CHECKOUT_ROOT, "setup.py")


def _pins(path):
    with open(path) as f:
        return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", f.read(), re.M))


def test_torch_and_torchaudio_load_together():
    assert doctor.check_torch_pair() is None
    import torch
    import torchaudio

    assert doctor._release(torch.__version__) == doctor._release(torchaudio.__version__)


def test_a_mismatched_pair_is_named_with_its_fix():
    problem = doctor.torch_pair_problem("2.11.0", "2.11.1")
    assert "torchaudio 2.11.1" in problem and "torch 2.11.0" in problem
    assert "requirements/lock.txt" in problem and "\n" not in problem


def test_setup_pins_torch_exactly_and_the_lock_agrees():
    with open(SETUP) as f:
        setup = f.read()
    assert '"torch==2.11.0"' in setup and '"torchaudio==2.11.0"' in setup
    if not os.path.exists(LOCK):
        pytest.skip("no requirements/lock.txt in this tree (an installed package)")
    pins = _pins(LOCK)
    assert pins.get("torch") == "2.11.0" and pins.get("torchaudio") == "2.11.0"
    assert "speechbrain-gense" not in {name.lower() for name in pins}


def test_installed_versions_match_the_lock():
    """What this environment runs is what the lock file says (a fresh
    ``make test`` installs with ``-c requirements/lock.txt``)."""
    if not os.path.exists(LOCK):
        pytest.skip("no requirements/lock.txt in this tree")
    pins = _pins(LOCK)
    for name in ("torch", "torchaudio", "speechbrain", "transformers"):
        assert doctor._release(doctor.installed_version(name)) == pins[name], name


def test_gense_doctor_reports_versions_models_and_voices():
    out = subprocess.run([sys.executable, "-m", "speechbrain_gense.doctor"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "torch/torchaudio: OK" in text
    assert re.search(r"torch 2\.11\.0\b", text) and "speechbrain " in text
    assert "mage (" in text and "simcodec (" in text
    assert "TTS voices (embedded corpus):" in text


def _tracked_sizes():
    try:
        out = subprocess.run(["git", "-C", CHECKOUT_ROOT, "ls-files", "-z"], check=True,
                             capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    names = [n for n in out.stdout.decode().split("\0") if n]
    return {n: os.path.getsize(os.path.join(CHECKOUT_ROOT, n)) for n in names
            if os.path.isfile(os.path.join(CHECKOUT_ROOT, n))}


def test_tracked_tree_within_the_size_budget():
    sizes = _tracked_sizes()
    assert sum(sizes.values()) <= 100e6, f"tracked tree is {sum(sizes.values()) / 1e6:.1f} MB"


def test_shipped_checkpoints_hold_no_training_state():
    """Shipped weights only: no optimizer, scheduler or discriminator state."""
    import torch

    banned = ("optimizer", "exp_avg", "discriminator", "scheduler", "lr_scheduler")
    checkpoints = [n for n in _tracked_sizes() if n.startswith("pretrained/")
                   and n.endswith((".ckpt", ".pt", ".pth"))]
    assert checkpoints
    for name in checkpoints:
        try:
            state = torch.load(os.path.join(CHECKOUT_ROOT, name), map_location="cpu",
                               weights_only=False)
        except pickle.UnpicklingError:
            continue  # a text checkpoint (e.g. a label encoder)
        keys = []
        stack = [("", state)]
        while stack:
            prefix, value = stack.pop()
            if isinstance(value, dict):
                stack += [(f"{prefix}{k}.", v) for k, v in value.items()]
                keys += [f"{prefix}{k}" for k in value]
        bad = [k for k in keys if any(b in k.lower() for b in banned)]
        assert not bad, f"{name} holds training state: {bad[:3]}"


#: Largest shipped weight file (the project's budget per model file).
MAX_SHIPPED_FILE_MB = 20.0
#: Files this small may keep float32 (tokenizer tables such as k-means
#: centroids: converting them would change the tokens, and they cost little).
EXACT_SMALL_FILE_MB = 1.0


def test_shipped_weights_are_compact():
    """Every shipped file is at most 20 MB; weights are float16 / int8.

    float32 is allowed only under the prefixes a checkpoint records as kept
    exact (a codec's encoder and codebook: ``storage.kept``), and in small
    tokenizer tables.
    """
    import torch

    sizes = {n: s for n, s in _tracked_sizes().items() if n.startswith("pretrained/")}
    too_big = {n: round(s / 1e6, 1) for n, s in sizes.items() if s > MAX_SHIPPED_FILE_MB * 1e6}
    assert not too_big, f"shipped files over {MAX_SHIPPED_FILE_MB} MB: {too_big}"
    checked = 0
    for name, size in sizes.items():
        if not name.endswith((".ckpt", ".pt", ".pth")) or size <= EXACT_SMALL_FILE_MB * 1e6:
            continue
        blob = torch.load(os.path.join(CHECKOUT_ROOT, name), map_location="cpu", weights_only=True)
        state = blob.get("state_dict", blob) if isinstance(blob, dict) else {}
        kept = tuple(blob.get("storage", {}).get("kept", ())) if "state_dict" in blob else ()
        wide = [k for k, v in state.items() if isinstance(v, torch.Tensor)
                and v.dtype == torch.float32 and not k.startswith(kept)]
        assert not wide, f"{name}: float32 tensors outside {kept or 'any kept prefix'}: {wide[:3]}"
        checked += 1
    assert checked >= 3
