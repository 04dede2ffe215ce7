"""Long audio: real-time factor and peak memory of ``enhance_file`` against duration.

For each duration, a noisy 16 kHz mono WAV file of that length is written
(the embedded corpus' noisy test utterances one after the other, repeated as
needed; a synthetic speech-like signal in noise when the corpus was not
built) and enhanced by
:meth:`~speechbrain_gense.inference.EnhanceGenerative.enhance_file` (output
to a WAV file, ``return_audio=False``: the file is streamed chunk by chunk)
in a **fresh subprocess**, so that each peak of memory is that duration's
alone. Each subprocess reports:

- ``load`` seconds (imports + ``from_hparams``) and ``enhance`` wall seconds
  (``enhance_file`` alone); RTF = enhance seconds / audio seconds; the CPU
  seconds of ``enhance_file`` (user + system, all threads) per audio second;
- its peak resident memory (``VmHWM``: the high-water mark of its own
  memory; ``ru_maxrss`` is not used as on Linux it inherits the parent's
  size at the fork), its resident memory right after loading and at the end.

A first subprocess only loads the model: its peak is the baseline, so
``peak - load-only`` is what enhancing that duration added. The claim
checked is that this does not grow with the duration (bounded chunks,
streamed reading and writing).

Not part of the test run. Usage::

    python benchmarks/long_audio.py                       # pretrained/mage; 1, 10, 60 min
    python benchmarks/long_audio.py --tiny --quick        # tiny random model; 5 s, 30 s
    python benchmarks/long_audio.py --model results/mage/1234/model --threads 1 \\
        --durations 30s 5m 20m --out results/benchmarks/long_audio_mine
    python benchmarks/long_audio.py --recipe-size --durations 30s 2m
    python benchmarks/long_audio.py --model results/gense_demo --threads 1 --durations 1m 10m \
        --override carry_context=false --batch-size 16 --decode-opt precision=int8

Any method folder works (MAGE, GenSE, ...: whatever ``inference.yaml`` says):
``--override KEY=VALUE`` changes an ``inference.yaml`` key (``from_hparams``
overrides, e.g. ``carry_context=false``), ``--decode-opt NAME=VALUE`` a
decoding option of the method (``precision=int8``, ``use_cache=false``,
``steps=4``; values are read as YAML), ``--batch-size N`` the ``batch_size``
of ``enhance_file`` (independent chunks batched together).

Results: ``--out`` stem + ``.md`` (the table) and ``.json`` (everything,
including an RSS time line of each run).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # after the path set-up
    add_model_arguments,
    model_folder,
    REPO,
    BenchmarkError,
    format_duration,
    format_load,
    machine_info,
    parse_duration,
    peak_rss_mib,
    proc_status_kib,
    resolve_model_folder,
    write_noisy_wav,
    write_results,
)

PROG = "long_audio"
DEFAULT_DURATIONS = ("1m", "10m", "60m")
QUICK_DURATIONS = ("5s", "30s")
DEFAULT_OUT = os.path.join(REPO, "results", "benchmarks", "long_audio")
SAMPLE_RATE = 16000
#: Seconds between two samples of the resident memory during ``enhance_file``.
RSS_SAMPLE_SECONDS = 0.25


# -- the subprocess ----------------------------------------------------------------


class _RssSampler(threading.Thread):
    """Samples this process' resident memory (``VmRSS``) every ``period`` seconds."""

    def __init__(self, period=RSS_SAMPLE_SECONDS):
        super().__init__(daemon=True)
        self.period, self.samples, self.stop = period, [], threading.Event()
        self.t0 = time.perf_counter()

    def run(self):
        while not self.stop.is_set():
            kib = proc_status_kib("VmRSS")
            if kib is not None:
                self.samples.append((round(time.perf_counter() - self.t0, 3), round(kib / 1024, 1)))
            self.stop.wait(self.period)

    def finish(self, max_points=400):
        self.stop.set()
        self.join()
        step = max(1, len(self.samples) // max_points)
        return self.samples[::step]


def _cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(spec):
    """Runs in the subprocess: loads the model, optionally enhances one file.

    Arguments
    ---------
    spec : dict
        ``mode`` (``load`` or ``enhance``), ``model``, ``threads``,
        ``device``, ``result`` (JSON written there) and, for ``enhance``,
        ``input``, ``output``, ``seed``, ``decode_opts``.
    """
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from speechbrain_gense.inference import EnhanceGenerative

    t_import = time.perf_counter() - t0
    enhancer = EnhanceGenerative.from_hparams(source=spec["model"],
                                              overrides=spec.get("overrides") or None,
                                              run_opts={"device": spec["device"]})
    result = {
        "method": enhancer.model.method,
        "import_s": t_import, "load_s": time.perf_counter() - t0,
        "peak_rss_after_load_mib": peak_rss_mib(),
        "rss_after_load_mib": (proc_status_kib("VmRSS") or 0) / 1024,
        "threads": torch.get_num_threads(),
        "max_frames": enhancer.max_frames(),
    }
    cuda = spec["device"].startswith("cuda")
    if spec["mode"] == "enhance":
        import soundfile as sf

        info = sf.info(spec["input"])
        plan = enhancer.chunk_plan(info.frames, info.samplerate)
        first = plan["chunks"][0]
        result.update({
            "chunks": len(plan["chunks"]),
            "chunk_s": (first[1] - first[0]) / info.samplerate,
            "window_s": max(we - ws for *_, ws, we in plan["chunks"]) / info.samplerate,
            "overlap_s": enhancer.overlap_seconds,
            "crossfade_s": plan["crossfade"] / info.samplerate,
            "carry_context": enhancer.carries_context(),
            "batch_size": spec.get("batch_size"),
        })
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sampler = _RssSampler()
        sampler.start()
        cpu0, t1 = _cpu_seconds(), time.perf_counter()
        enhancer.enhance_file(spec["input"], spec["output"], seed=spec["seed"], overwrite=True,
                              return_audio=False, batch_size=spec.get("batch_size"),
                              **spec.get("decode_opts", {}))
        if cuda:
            torch.cuda.synchronize()
        result["enhance_s"] = time.perf_counter() - t1
        result["enhance_cpu_s"] = _cpu_seconds() - cpu0
        result["rss_timeline"] = sampler.finish()
        result["output_frames"] = sf.info(spec["output"]).frames
        result["input_frames"] = info.frames
        if cuda:
            result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    result["peak_rss_mib"] = peak_rss_mib()
    result["rss_end_mib"] = (proc_status_kib("VmRSS") or 0) / 1024
    with open(spec["result"], "w", encoding="utf-8") as f:
        json.dump(result, f)


def run_worker(spec, threads, workdir, name):
    """Runs :func:`worker` in a fresh Python process and returns its result.

    The parent adds ``wall_s`` (the whole subprocess) and ``cpu_s`` (its user
    + system time, from ``os.wait4``).

    Raises
    ------
    BenchmarkError
        When the subprocess fails (with the last line of its error output).
    """
    spec = {**spec, "threads": threads, "result": os.path.join(workdir, f"{name}.json")}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    err_path = os.path.join(workdir, f"{name}.stderr")
    start = time.perf_counter()
    with open(err_path, "w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                 json.dumps(spec)], stdout=subprocess.DEVNULL, stderr=err,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        with open(err_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        raise BenchmarkError(f"{name}: the subprocess failed (exit {proc.returncode}): "
                             f"{lines[-1] if lines else 'no message'}")
    with open(spec["result"], encoding="utf-8") as f:
        result = json.load(f)
    result.update({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime})
    return result


# -- the parent ----------------------------------------------------------------------


def run(model, durations, threads=2, seed=0, device="cpu", decode_opts=None, workdir=None,
        source="auto", progress=True, overrides=None, batch_size=None):
    """Measures the load-only subprocess, then one subprocess per duration.

    Arguments
    ---------
    model : str
        Model folder (with ``inference.yaml``).
    durations : list of float
        Seconds of audio of each run.
    threads : int
        Torch (and OpenMP) threads of the subprocesses.
    seed, device, decode_opts
        Passed to ``enhance_file`` / ``from_hparams``.
    workdir : str, optional
        Where the test files go (deleted after each run; default: a
        temporary folder).
    source : str
        ``auto``, ``corpus`` or ``synthetic`` (see ``common.speech_blocks``).
    progress : bool
        Progress bar over the durations.
    overrides : dict, optional
        ``inference.yaml`` overrides of ``from_hparams`` (e.g.
        ``{"carry_context": False}``).
    batch_size : int, optional
        ``batch_size`` of ``enhance_file``.

    Returns
    -------
    dict
        ``load_only`` and ``rows`` (one per duration).
    """
    from tqdm import tqdm

    with tempfile.TemporaryDirectory(prefix="long_audio-", dir=workdir) as tmp:
        base = {"model": model, "device": device, "overrides": dict(overrides or {}),
                "batch_size": batch_size}
        load_only = run_worker({**base, "mode": "load"}, threads, tmp, "load_only")
        rows = []
        for seconds in tqdm(durations, desc="durations", unit="file", disable=not progress):
            name = f"noisy_{seconds:g}s"
            noisy = os.path.join(tmp, name + ".wav")
            enhanced = os.path.join(tmp, name + "_enhanced.wav")
            made = write_noisy_wav(noisy, seconds, SAMPLE_RATE, seed=seed, source=source)
            try:
                row = run_worker({**base, "mode": "enhance", "input": noisy, "output": enhanced,
                                  "seed": seed, "decode_opts": dict(decode_opts or {})},
                                 threads, tmp, name)
            finally:
                for path in (noisy, enhanced):
                    if os.path.exists(path):
                        os.remove(path)
            audio = made["samples"] / SAMPLE_RATE
            row.update({
                "duration": format_duration(seconds), "audio_s": audio, "source": made["source"],
                "rtf": row["enhance_s"] / audio, "cpu_rtf": row["enhance_cpu_s"] / audio,
                "growth_over_load_only_mib": row["peak_rss_mib"] - load_only["peak_rss_mib"],
            })
            rows.append(row)
    return {"load_only": load_only, "rows": rows}


def summary(result):
    """Peak RSS of the shortest and longest runs and the difference (MiB)."""
    rows = sorted(result["rows"], key=lambda r: r["audio_s"])
    if not rows:
        return None
    short, long = rows[0], rows[-1]
    return {"shortest": short["duration"], "longest": long["duration"],
            "peak_rss_shortest_mib": short["peak_rss_mib"],
            "peak_rss_longest_mib": long["peak_rss_mib"],
            "peak_rss_change_mib": long["peak_rss_mib"] - short["peak_rss_mib"],
            "audio_ratio": long["audio_s"] / short["audio_s"]}


def format_table(result):
    """The markdown report of a :func:`main` result."""
    machine, load = result["machine"], result["load_only"]
    lines = [
        "# Long audio: RTF and peak memory of enhance_file against duration",
        "",
        f"- command: `{result['command']}`",
        f"- model: {result['model_name']} (method {load.get('method', 'n/a')})",
        (f"- inference.yaml overrides: {result.get('overrides') or 'none'}; decoding "
         f"options: {result.get('decode_opts') or 'the model defaults'}; batch_size "
         f"{result.get('batch_size') or 'none (one chunk per call)'}"),
        (f"- machine: {machine['cpu']}, {machine['cpu_count']} CPUs; torch "
         f"{machine['torch']}; {result['threads']} torch thread(s) per subprocess; device "
         f"{result['device']}"),
        (f"- load average (1/5/15 min): {format_load(machine['load_average'])} at start, "
         f"{format_load(result['load_average_end'])} at end"),
        "",
        ("| input | audio (s) | chunks | chunk / window (s) | load (s) | enhance (s) | RTF "
         "| CPU s per audio s | peak RSS (MiB) | peak − load-only (MiB) | RSS at end (MiB) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        (f"| load only | – | – | – | {load['load_s']:.2f} | – | – | – | "
         f"{load['peak_rss_mib']:.0f} | 0 | {load['rss_end_mib']:.0f} |"),
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['duration']} | {row['audio_s']:.1f} | {row['chunks']} | "
            f"{row['chunk_s']:.2f} / {row['window_s']:.2f} | {row['load_s']:.2f} | "
            f"{row['enhance_s']:.2f} | {row['rtf']:.4f} | {row['cpu_rtf']:.4f} | "
            f"{row['peak_rss_mib']:.0f} | {row['growth_over_load_only_mib']:+.0f} | "
            f"{row['rss_end_mib']:.0f} |")
    lines.append("")
    s = result["summary"]
    if s and len(result["rows"]) > 1:
        lines.append(
            f"- peak RSS from the shortest ({s['shortest']}) to the longest ({s['longest']}) "
            f"input, {s['audio_ratio']:.0f}x the audio: {s['peak_rss_shortest_mib']:.0f} → "
            f"{s['peak_rss_longest_mib']:.0f} MiB ({s['peak_rss_change_mib']:+.1f} MiB)")
    sources = sorted({row["source"] for row in result["rows"]})
    lines += [
        (f"- input: 16 kHz mono PCM-16 WAV, {' + '.join(sources) or 'n/a'} audio (corpus: the "
         "embedded corpus' noisy test utterances, repeated); output: WAV, streamed "
         "(`return_audio=False`); seed " + str(result["seed"])),
        ("- each row is a fresh subprocess; load = imports + `from_hparams`; RTF = "
         "`enhance_file` wall seconds / audio seconds; peak RSS = the subprocess' VmHWM"),
    ]
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="RTF and peak memory of EnhanceGenerative.enhance_file against the "
        "duration of the input, one fresh subprocess per duration. Writes a markdown table "
        "and JSON.")
    add_model_arguments(parser)
    parser.add_argument("--durations", nargs="+", metavar="D",
                        help="durations, e.g. 30s 1.5m 60m 1h (default 1m 10m 60m; "
                        "--quick: 5s 30s)")
    parser.add_argument("--quick", action="store_true",
                        help="short durations (5 s, 30 s) unless --durations is given")
    parser.add_argument("--workdir", help="folder for the temporary audio files "
                        "(default: the system's temporary folder)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="output stem: writes STEM.md and STEM.json (default "
                        "results/benchmarks/long_audio)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--decode-opt", action="append", default=[], metavar="NAME=VALUE",
                        help="a decoding option of the method (repeatable; YAML values), "
                        "e.g. precision=int8")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="an inference.yaml key (repeatable; YAML values), e.g. "
                        "carry_context=false")
    parser.add_argument("--batch-size", type=int,
                        help="batch_size of enhance_file (independent chunks together)")
    return parser


def parse_assignments(items, what):
    """``["a=1", "b=false"]`` -> ``{"a": 1, "b": False}`` (values read as YAML).

    Example
    -------
    >>> parse_assignments(["precision=int8", "carry_context=false", "steps=4"], "--x")
    {'precision': 'int8', 'carry_context': False, 'steps': 4}
    """
    import yaml

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{what} expects NAME=VALUE, got {item!r}")
        out[name.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        worker(json.loads(argv[1]))
        return 0
    args = build_parser().parse_args(argv)

    def error(message):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    try:
        texts = args.durations or (QUICK_DURATIONS if args.quick else DEFAULT_DURATIONS)
        durations = [parse_duration(d) for d in texts]
    except ValueError as e:
        return error(f"--durations: {e}")
    if args.threads < 1:
        return error(f"--threads must be >= 1, got {args.threads}")
    if args.steps is not None and args.steps < 1:
        return error(f"--steps must be >= 1, got {args.steps}")
    if args.workdir and not os.path.isdir(args.workdir):
        return error(f"--workdir {args.workdir}: no such folder")
    try:
        if not (args.tiny or args.recipe_size):
            args.model = resolve_model_folder(args.model)
    except BenchmarkError as e:
        return error(str(e))
    import torch

    torch.set_num_threads(args.threads)
    if args.batch_size is not None and args.batch_size < 1:
        return error(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        decode_opts = parse_assignments(args.decode_opt, "--decode-opt")
        overrides = parse_assignments(args.override, "--override")
    except ValueError as e:
        return error(str(e))
    if args.steps:
        decode_opts["steps"] = args.steps
    machine = machine_info(args.threads)
    try:
        with tempfile.TemporaryDirectory(prefix="long_audio-model-") as tmp:
            model, name = model_folder(args, tmp)
            result = run(model, durations, args.threads, args.seed, args.device, decode_opts,
                         args.workdir, args.source, progress=not args.quiet,
                         overrides=overrides, batch_size=args.batch_size)
    except BenchmarkError as e:
        return error(str(e))
    result.update({
        "command": " ".join(["python benchmarks/long_audio.py"] + [shlex.quote(a) for a in argv]),
        "model_name": name, "threads": args.threads, "device": args.device, "seed": args.seed,
        "decode_opts": decode_opts, "overrides": overrides, "batch_size": args.batch_size,
        "machine": machine,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    })
    result["summary"] = summary(result)
    table = format_table(result)
    print(table)
    md_path, json_path = write_results(args.out, table, result)
    print(f"\nwritten: {md_path}, {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
