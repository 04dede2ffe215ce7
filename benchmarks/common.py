"""Shared parts of the benchmark scripts (not a package module: imported by path).

- model folders: :func:`resolve_model_folder` (a path, else looked up in the
  project like :func:`speechbrain_gense.tokenizers.registry.resolve_path`),
  :func:`build_tiny_model_folder` (the tiny random MAGE the tests use, saved
  with an ``inference.yaml``), :func:`build_tiny_gense_folder` (a tiny random
  GenSE) and :func:`build_recipe_model_folder` (the
  recipe's MAGE, freshly initialised, over the shipped SimCodec);
- test audio: :func:`noisy_speech_sources` (noisy test utterances of the
  embedded corpus, when it was built) and :func:`write_noisy_wav`, which
  writes any duration block by block;
- :func:`parse_duration`, :func:`machine_info`, :func:`peak_rss_mib` and
  :func:`write_results`.
"""

import glob
import json
import math
import os
import platform
import re
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # run from a checkout without installing

#: Where the noisy test utterances of the embedded corpus may be (first found wins).
CORPUS_NOISY_TEST = (os.path.join("corpus", "noisy", "test"),
                     os.path.join("results", "libri_data", "corpus", "noisy", "test"))

#: Default model folder of the benchmarks (as the ``gense-enhance`` command's).
DEFAULT_MODEL = os.path.join("pretrained", "mage")

#: Decoding of the tiny model (as in ``tests/unittests/test_inference.py``).


class BenchmarkError(Exception):
    """A problem reported on one line (exit status 2)."""


def resolve_model_folder(path):
    """The model folder ``path``: as given when it exists, else in the project checkout.

    Arguments
    ---------
    path : str
        A folder holding an ``inference.yaml`` (e.g. ``pretrained/mage``).

    Returns
    -------
    str
        Absolute path of the folder.

    Raises
    ------
    BenchmarkError
        One-line message when there is no such folder or it has no
        ``inference.yaml``.

    Example
    -------
    >>> resolve_model_folder("/no/such/model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    common.BenchmarkError: /no/such/model: no such model folder (train one, ...)
    """
    from speechbrain_gense.tokenizers.registry import resolve_path

    folder = resolve_path(os.fspath(path))
    if not os.path.isdir(folder):
        raise BenchmarkError(f"{path}: no such model folder (train one, pass --model DIR, "
                             "or use --tiny)")
    if not os.path.isfile(os.path.join(folder, "inference.yaml")):
        raise BenchmarkError(f"{folder}: no inference.yaml (add it with speechbrain_gense."
                             f"inference.write_inference_yaml({folder!r}))")
    return os.path.abspath(folder)


def build_tiny_model_folder(folder, max_position=512, seed=0):
    """Saves the tiny random MAGE of the tests, with an ``inference.yaml``, to ``folder``.

    Debug tokenizer (16 kHz, 80 Hz, vocabulary 32), ``TINY_CONFIG`` enhancer
    (2 layers, hidden 32), a small BLSTM corrector and a token-frequency
    table, decoding with 3 steps: the model of
    ``tests/unittests/test_inference.py``. Its output is noise: it only
    exercises the code paths.

    Arguments
    ---------
    folder : str
        Output folder (created).
    max_position : int
        Longest sequence of the enhancer, in token frames (512: windows of
        at most 6.4 s, as in the tests).
    seed : int
        Seed of the random initialisation.

    Returns
    -------
    str
        ``folder``.
    """
    from speechbrain_gense.models.debug import write_tiny_mage

    return write_tiny_mage(folder, seed=seed, max_position=max_position)


def build_tiny_gense_folder(folder, seed=0, max_seconds=1.0, chunk_seconds=0.5,
                            overlap_seconds=0.1, hint=False):
    """Saves a tiny random GenSE (debug tokenizers, ``TINY_LM`` GPT-2 LMs) to ``folder``.

    50 Hz semantic (16 codes) and 80 Hz acoustic (32 codes) debug tokenizers,
    two 2-layer width-32 LMs, ``max_seconds`` per call and an
    ``inference.yaml`` with chunks of ``chunk_seconds`` (+ ``overlap_seconds``
    each side): the code paths of GenSE's benchmarks, not its speed. ``hint``:
    both LMs read the noisy token of each target's frame (``TokenLM(hint=True)``,
    as the shipped ``pretrained/gense``).

    Returns
    -------
    str
        ``folder``.
    """
    import torch

    from speechbrain_gense.inference import write_inference_yaml
    from speechbrain_gense.models.gense import TINY_LM, GenSE, GenSEVocab, TokenLM
    from speechbrain_gense.tokenizers.registry import load_tokenizer

    torch.manual_seed(seed)
    sem = load_tokenizer("debug?hop=320,vocab_size=16")
    ac = load_tokenizer("debug?hop=200,vocab_size=32")
    size = GenSEVocab(sem.vocab_size, ac.vocab_size).size
    lm = dict(TINY_LM, max_positions=int(320 * max_seconds) + 8)  # S2S: 2 x 80 Hz frames
    model = GenSE(sem, ac, TokenLM(size, hint=hint, **lm), TokenLM(size, hint=hint, **lm),
                  max_seconds=max_seconds).eval()
    model.save(folder, semantic_spec="debug?hop=320,vocab_size=16",
               acoustic_spec="debug?hop=200,vocab_size=32")
    write_inference_yaml(folder, method="gense", overwrite=True, chunk_seconds=chunk_seconds,
                         overlap_seconds=overlap_seconds)
    return folder


def add_model_arguments(parser):
    """The model a benchmark runs and how: ``--model DIR`` | ``--tiny`` |
    ``--recipe-size``, and ``--threads``, ``--seed``, ``--steps``, ``--device``,
    ``--source`` (the test audio)."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default=DEFAULT_MODEL,
                       help="model folder with an inference.yaml (default pretrained/mage, "
                       "looked up in the project when not found here)")
    which.add_argument("--tiny", action="store_true",
                       help="a tiny random MAGE (debug tokenizer) built in a temporary folder")
    which.add_argument("--recipe-size", action="store_true",
                       help="the recipe's MAGE (mage.yaml), freshly initialised, over the "
                       "shipped pretrained/simcodec")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="decoding seed (default 0)")
    parser.add_argument("--steps", type=int, help="decoding steps (default: the model's)")
    parser.add_argument("--device", default="cpu", help="device (default cpu)")
    parser.add_argument("--source", choices=("auto", "corpus", "synthetic"), default="auto",
                        help="input audio: the embedded corpus' noisy test utterances, a "
                        "synthetic speech-like signal, or auto (corpus when built)")


def model_folder(args, tmp, tiny_max_position=512):
    """The model folder chosen by :func:`add_model_arguments` and its description.

    ``--tiny`` and ``--recipe-size`` build their model in ``tmp``; ``--model``
    must have been checked with :func:`resolve_model_folder` (``args.model``).

    Returns
    -------
    tuple
        ``(folder, name)``.
    """
    if args.tiny:
        folder = build_tiny_model_folder(os.path.join(tmp, "tiny_mage"),
                                         max_position=tiny_max_position)
        return folder, ("tiny random MAGE (debug tokenizer, TINY_CONFIG enhancer with "
                        f"max_position {tiny_max_position}, BLSTM corrector, 3 steps): "
                        "untrained, exercises the code only")
    if args.recipe_size:
        folder = build_recipe_model_folder(os.path.join(tmp, "recipe_mage"))
        return folder, ("recipe-size MAGE (recipes/LibriSpeech-noisy/mage/hparams/mage.yaml), "
                        "freshly initialised, over pretrained/simcodec: untrained")
    return args.model, args.model


def build_recipe_model_folder(folder, codec="pretrained/simcodec"):
    """Saves the recipe's MAGE, freshly initialised, over a codec, to ``folder``.

    The model of ``recipes/LibriSpeech-noisy/mage/hparams/mage.yaml`` as
    written (hidden 256, 6 layers, Resemblyzer speaker embedding, BLSTM
    corrector) with ``codec`` as its tokenizer and a uniform token-frequency
    table, so that memory and speed are those of a trained model of that
    size (its output is not enhanced speech).

    Returns
    -------
    str
        ``folder``.
    """
    import torch
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_gense.inference import write_inference_yaml
    from speechbrain_gense.masking import TokenFrequency
    from speechbrain_gense.tokenizers.registry import resolve_path

    codec_path = os.path.abspath(resolve_path(codec))
    if not os.path.isdir(codec_path):
        raise BenchmarkError(f"{codec}: no such codec folder")
    hparams = os.path.join(REPO, "recipes", "LibriSpeech-noisy", "mage", "hparams", "mage.yaml")
    torch.manual_seed(0)
    with open(hparams, encoding="utf-8") as f:
        hp = load_hyperpyyaml(f, overrides={"tokenizer_spec": f"simcodec:{codec_path}",
                                            "output_folder": os.path.join(folder, "recipe_out")})
    mage = hp["model"]
    mage.token_frequency = TokenFrequency(torch.ones(mage.tokenizer.vocab_size))
    mage.save(folder, tokenizer_spec=f"simcodec:{codec_path}")
    write_inference_yaml(folder, overwrite=True)
    return folder


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(h|m|min|s|sec)?\s*$", re.IGNORECASE)


def parse_duration(text):
    """Seconds of a duration: ``90``, ``90s``, ``1.5m``, ``10min``, ``1h``.

    Example
    -------
    >>> parse_duration("1m"), parse_duration("30s"), parse_duration("2.5"), parse_duration("1h")
    (60.0, 30.0, 2.5, 3600.0)
    >>> parse_duration("ten")
    Traceback (most recent call last):
    ...
    ValueError: not a duration: 'ten' (expected e.g. 30s, 1.5m, 60m, 1h)
    """
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 1.5m, 60m, 1h)")
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * {"h": 3600.0, "m": 60.0, "min": 60.0}.get(unit, 1.0)


def format_duration(seconds):
    """Short label of a duration.

    Example
    -------
    >>> format_duration(5), format_duration(90), format_duration(3600), format_duration(2.5)
    ('5 s', '1.5 min', '60 min', '2.5 s')
    """
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def noisy_speech_sources():
    """Noisy test utterances of the embedded corpus (sorted), or ``[]`` without one."""
    for folder in CORPUS_NOISY_TEST:
        files = sorted(glob.glob(os.path.join(REPO, folder, "*.wav")))
        if files:
            return files
    return []


def _synthetic_block(start, length, sample_rate, seed):
    """Samples ``[start, start + length)`` of an endless speech-like signal in noise.

    Harmonics of a gliding 100-220 Hz pitch with a 3-4 Hz syllabic envelope,
    pauses every few seconds and white noise at about 10 dB SNR; any block
    is a function of its position only, so blocks join without a seam.
    """
    n = np.arange(start, start + length, dtype=np.float64)
    t = n / sample_rate
    # f0(t) = 160 + 60 sin(2 pi 0.13 t): its phase integral in closed form
    phase = 2 * np.pi * (160.0 * t - 60.0 / (2 * np.pi * 0.13) * np.cos(2 * np.pi * 0.13 * t))
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 3.5 * t))
    pauses = (np.sin(2 * np.pi * 0.23 * t) > -0.6).astype(np.float64)
    rng = np.random.default_rng([seed, start])
    noise = rng.standard_normal(length)
    return (0.15 * voiced * syllables * pauses + 0.03 * noise).astype(np.float32)


def speech_blocks(seconds, sample_rate=16000, block_seconds=10.0, seed=0, source="auto"):
    """Yields float32 blocks adding up to ``seconds`` of noisy speech.

    Arguments
    ---------
    seconds : float
        Total duration.
    sample_rate : int
        Rate of the blocks.
    block_seconds : float
        Length of each block (the last may be shorter).
    seed : int
        Seed of the synthetic signal.
    source : str
        ``"corpus"``: the embedded corpus' noisy test utterances one after
        the other, repeated as needed (10 ms fades at the joins);
        ``"synthetic"``: :func:`_synthetic_block`; ``"auto"``: the corpus
        when it was built, else synthetic.

    Yields
    ------
    numpy.ndarray
        ``[n]`` float32 samples.
    """
    total = round(seconds * sample_rate)
    block = max(1, int(block_seconds * sample_rate))
    files = noisy_speech_sources() if source in ("auto", "corpus") else []
    if source == "corpus" and not files:
        raise BenchmarkError("the embedded corpus is not built (make demo, or gense-corpus "
                             "--out corpus)")
    if not files:
        for start in range(0, total, block):
            yield _synthetic_block(start, min(block, total - start), sample_rate, seed)
        return
    yield from _corpus_blocks(files, total, block, sample_rate)


def _read_resampled(path, sample_rate):
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=True)
    data = data.mean(axis=1)
    if rate != sample_rate:
        import torch
        import torchaudio

        data = torchaudio.functional.resample(torch.from_numpy(data), rate, sample_rate).numpy()
    return data


def _corpus_blocks(files, total, block, sample_rate):
    fade = int(0.01 * sample_rate)
    ramp = np.sin(0.5 * np.pi * (np.arange(fade) + 0.5) / fade).astype(np.float32)
    pending, produced, index = np.zeros(0, np.float32), 0, 0
    cache = {}
    while produced < total:
        while pending.shape[0] < block and produced + pending.shape[0] < total:
            path = files[index % len(files)]
            index += 1
            if path not in cache:
                if len(cache) > 64:  # bounded: the corpus split is ~2 min
                    cache.clear()
                cache[path] = _read_resampled(path, sample_rate)
            utt = cache[path].copy()
            if utt.shape[0] > 2 * fade:
                utt[:fade] *= ramp
                utt[-fade:] *= ramp[::-1]
            pending = np.concatenate([pending, utt])
        n = min(block, total - produced, pending.shape[0])
        yield pending[:n]
        pending = pending[n:]
        produced += n


def write_noisy_wav(path, seconds, sample_rate=16000, seed=0, source="auto", subtype="PCM_16"):
    """Writes ``seconds`` of noisy speech (:func:`speech_blocks`) to a mono WAV file.

    Written block by block: any duration takes the memory of one block.

    Returns
    -------
    dict
        ``path``, ``seconds``, ``samples`` and ``source`` (``corpus`` or ``synthetic``).
    """
    import soundfile as sf

    used = "corpus" if source == "corpus" or (source == "auto" and noisy_speech_sources()) \
        else "synthetic"
    samples = 0
    with sf.SoundFile(path, "w", sample_rate, 1, subtype=subtype, format="WAV") as f:
        for block in speech_blocks(seconds, sample_rate, seed=seed, source=used):
            f.write(np.clip(block, -1.0, 1.0))
            samples += block.shape[0]
    return {"path": path, "seconds": samples / sample_rate, "samples": samples, "source": used}


def proc_status_kib(field, pid="self"):
    """A ``/proc/<pid>/status`` field in KiB (``VmHWM``, ``VmRSS``), or None off Linux."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib():
    """Peak resident memory of this process so far, in MiB.

    ``VmHWM`` of ``/proc/self/status`` (the high-water mark of this process'
    own memory since it was started). ``getrusage(...).ru_maxrss`` is not
    used on Linux: for a process started by ``fork``/``vfork`` + ``exec`` it
    also counts the resident memory of the parent at the time of the fork,
    so a child of a big parent reports the parent's size.
    """
    kib = proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kib //= 1024
    return kib / 1024


def machine_info(threads=None):
    """CPU model, core count, torch version, threads and load average."""
    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": name, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": threads,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def format_load(load):
    """``1.00/0.50/0.25`` or ``n/a``."""
    return "n/a" if not load else "/".join(f"{x:.2f}" for x in load)


def output_paths(out):
    """``(markdown, json)`` paths of an ``--out`` stem (a ``.md``/``.json`` suffix is dropped).

    Example
    -------
    >>> output_paths("results/x.json")
    ('results/x.md', 'results/x.json')
    """
    stem, ext = os.path.splitext(out)
    if ext.lower() not in (".md", ".json"):
        stem = out
    return stem + ".md", stem + ".json"


def write_results(out, markdown, result):
    """Writes ``markdown`` and ``result`` (JSON, with the markdown under ``table``)."""
    md_path, json_path = output_paths(out)
    os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown.rstrip("\n") + "\n")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump({**result, "table": markdown}, f, indent=2, allow_nan=True)
    return md_path, json_path


def command_line(script, argv):
    """The command a run was started with, for its table (``python benchmarks/SCRIPT ...``).

    Example
    -------
    >>> command_line("gense_speed.py", ["--out", "a b"])
    "python benchmarks/gense_speed.py --out 'a b'"
    """
    import shlex

    return " ".join([f"python benchmarks/{script}"] + [shlex.quote(a) for a in argv])


def finite(x):
    """``float(x)``, with NaN for None (JSON-friendly)."""
    return math.nan if x is None else float(x)
