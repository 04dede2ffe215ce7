"""A wheel of the tracked tree installs and enhances a shipped example from any folder.

The wheel is built from the files git tracks (what a clone has), installed
with ``--no-deps`` into a new virtual environment that reuses this
environment's packages (a ``.pth`` line to its site-packages: no second
torch; unlike ``--system-site-packages`` this also works when the tests
themselves run in a virtual environment). Editable-install hooks of this
environment are not processed there, so the package that runs is the
wheel's, with the shipped models it carries.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
import soundfile as sf

from speechbrain_gense.paths import CHECKOUT_ROOT, PRETRAINED_ENV

pytestmark = pytest.mark.slow

EXAMPLE = os.path.join(CHECKOUT_ROOT, "pretrained", "examples", "noisy",
                       "test_espeak_us_f2_00021.wav")


def _tracked_files():
    try:
        out = subprocess.run(["git", "-C", CHECKOUT_ROOT, "ls-files", "-z"], check=True,
                             capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return [name for name in out.stdout.decode().split("\0") if name]


def _isolation():
    """Builds with this environment's setuptools when it can make wheels by itself."""
    try:
        import setuptools

        major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    except (ImportError, ValueError):
        return []
    has_wheel = importlib.util.find_spec("wheel") is not None
    return ["--no-build-isolation"] if has_wheel or (major, minor) >= (70, 1) else []


def _venv_python(venv):
    return os.path.join(venv, "bin", "python")


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    files = _tracked_files()
    if not files:
        pytest.skip("not a git checkout: no tracked tree to build a wheel from")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in files:
        if not os.path.isfile(os.path.join(CHECKOUT_ROOT, name)):
            continue
        os.makedirs(src / os.path.dirname(name), exist_ok=True)
        shutil.copy2(os.path.join(CHECKOUT_ROOT, name), src / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *_isolation(),
         "-w", str(root / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    wheels = list((root / "dist").glob("speechbrain_gense-*.whl"))
    assert len(wheels) == 1

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    venv_site = subprocess.run([_venv_python(venv), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(venv_site, "_parent_env.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", _venv_python(venv), "install", "--no-deps",
         "--no-index", "-q", str(wheels[0])], capture_output=True, text=True, timeout=600)
    if install.returncode != 0 and "no such option: --python" in install.stderr:
        pytest.skip("pip too old for --python")
    assert install.returncode == 0, install.stderr[-2000:]
    return venv, wheels[0]


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in (PRETRAINED_ENV, "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_the_wheel_carries_the_shipped_models(wheel_venv):
    venv, wheel = wheel_venv
    out = subprocess.run(
        [_venv_python(venv), "-c",
         "import json, speechbrain_gense, speechbrain_gense.paths as p;"
         "print(json.dumps([speechbrain_gense.__file__, p.pretrained_roots(),"
         " p.find_pretrained('mage')]))"],
        capture_output=True, text=True, timeout=300, cwd=str(venv), env=_clean_env())
    assert out.returncode == 0, out.stderr[-2000:]
    module, roots, mage = json.loads(out.stdout)
    assert module.startswith(str(venv))  # the wheel's package, not the checkout's
    assert roots == [os.path.join(os.path.dirname(module), "pretrained")]
    assert os.path.isfile(os.path.join(mage, "inference.yaml"))


def test_installed_gense_enhance_runs_from_another_folder(wheel_venv, tmp_path):
    venv, _ = wheel_venv
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = subprocess.run(
        [os.path.join(venv, "bin", "gense-enhance"), EXAMPLE, "-o", "out", "--quiet"],
        capture_output=True, text=True, timeout=600, cwd=str(work), env=_clean_env())
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
    result = work / "out" / os.path.basename(EXAMPLE)
    info, source = sf.info(str(result)), sf.info(EXAMPLE)
    assert info.frames == source.frames and info.samplerate == source.samplerate
    wav, _ = sf.read(str(result), dtype="float32")
    assert abs(wav).max() > 1e-3


def test_a_missing_model_is_one_line_naming_the_folders(wheel_venv, tmp_path):
    venv, _ = wheel_venv
    out = subprocess.run(
        [_venv_python(venv), "-c",
         "from speechbrain_gense.paths import find_pretrained; find_pretrained('nope')"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path), env=_clean_env())
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("FileNotFoundError: shipped model 'nope' not found; searched")
    assert PRETRAINED_ENV in last and "site-packages" in last
