"""Seams: what cutting long audio into chunks does to the output at the chunk borders.

One noisy file, short enough for a single pass (``--seconds``, default 10:
the embedded corpus' noisy test utterances one after the other, or
``--input``), is enhanced by
:meth:`~speechbrain_gense.inference.EnhanceGenerative.enhance_file` three
times with the same model:

- **one-pass**: one chunk (``chunk_seconds`` longer than the file,
  ``overlap_seconds: 0``), seed ``S``;
- **chunked**: forced into small chunks (``--chunk-seconds``, default 2,
  with the model's overlap and crossfade unless ``--overlap-seconds`` /
  ``--crossfade-seconds``), seed ``S``;
- **one-pass, seed S+1**: the spread between two samples of the same
  generative model, the yardstick for any chunked-vs-one-pass difference.

The chunking is forced through ``from_hparams(overrides={"chunk_seconds": ...,
"overlap_seconds": ..., "crossfade_seconds": ...})``: the keys of
``inference.yaml``. The borders are those of
:meth:`~speechbrain_gense.inference.EnhanceGenerative.chunk_plan`.

Measures (all at the file's rate):

(a) discontinuity, at each border and at every other position (further than
    ``--near-ms`` from any border), for the noisy input, the one-pass and the
    chunked outputs:

    - **Δx energy**: mean of the squared first difference ``x[n] - x[n-1]``
      in ``±--window-ms`` (5 ms) around the position; reported relative to
      the median over the other positions (dB), with the percentile of the
      border values among them;
    - **spectral flux**: RMS difference (dB) of the log-magnitude spectra of
      the two adjacent 20 ms Hann frames on either side of the position (the
      last frame before it and the first after it);
    - and, content-controlled, chunked minus one-pass of each at the same
      positions: at the borders (mean) against elsewhere (median).

(b) distance between chunked and one-pass outputs (and between the two
    one-pass seeds): log-spectral distance (dB, 32 ms frames, 8 ms hop, mean
    over frames) and SI-SDR (dB), over the whole file, within ``--near-ms``
    of a border, and further away.

Not part of the test run. Usage::

    python benchmarks/seams.py                            # pretrained/mage, 10 s, 2 s chunks
    python benchmarks/seams.py --tiny --quick             # tiny random model, 4 s, 1 s chunks
    python benchmarks/seams.py --model DIR --chunk-seconds 3 --overlap-seconds 0.5 \\
        --input some.wav --out results/benchmarks/seams_mine

Results: ``--out`` stem + ``.md`` (the tables) and ``.json`` (with the
per-border values).
"""

import argparse
import math
import os
import shlex
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # after the path set-up
    add_model_arguments,
    model_folder,
    REPO,
    BenchmarkError,
    format_load,
    machine_info,
    resolve_model_folder,
    write_noisy_wav,
    write_results,
)

PROG = "seams"
DEFAULT_OUT = os.path.join(REPO, "results", "benchmarks", "seams")
#: The tiny model's longest sequence here (frames at 80 Hz): 25.6 s in one pass.
TINY_MAX_POSITION = 2048
EPS = 1e-20


# -- measures --------------------------------------------------------------------------


def diff_energy(x, centres, half):
    """Mean squared first difference in ``±half`` samples around each centre.

    The step across position ``c`` is ``x[c] - x[c - 1]``; the window holds
    the ``2 * half + 1`` steps centred on it.

    Example
    -------
    >>> x = np.r_[np.zeros(50), np.ones(50)]
    >>> diff_energy(x, np.array([50, 20]), 5).round(3).tolist()
    [0.091, 0.0]
    """
    d2 = np.diff(np.asarray(x, dtype=np.float64)) ** 2  # d2[j]: step between j and j + 1
    csum = np.concatenate([[0.0], np.cumsum(d2)])
    lo = np.clip(centres - 1 - half, 0, d2.shape[0])
    hi = np.clip(centres + half, 0, d2.shape[0])
    return (csum[hi] - csum[lo]) / np.maximum(1, hi - lo)


def spectral_flux(x, centres, frame, floor_db=-80.0):
    """Spectral flux (dB) between the frames just before and just after each centre.

    Two adjacent Hann frames of ``frame`` samples, one ending and one
    starting at the position; the RMS over frequency of the difference
    of their log magnitudes, floored ``floor_db`` below the loudest bin of
    the whole signal (frames every ``frame // 2`` samples), so the values do
    not depend on which positions are asked for.

    Example
    -------
    >>> t = np.arange(4000) / 16000
    >>> x = np.sin(2 * np.pi * 440 * t); x[2000:] = np.sin(2 * np.pi * 1500 * t[2000:])
    >>> a, b = spectral_flux(x, np.array([1000, 2000]), 320)
    >>> bool(b > a + 10)
    True
    """
    x = np.asarray(x, dtype=np.float64)
    half = frame // 2
    padded = np.pad(x, frame, mode="reflect")
    window = np.hanning(frame)
    offsets = np.arange(frame)

    def spectra(positions):
        starts = positions - half + frame  # in padded coordinates
        return np.abs(np.fft.rfft(padded[starts[:, None] + offsets] * window, axis=1))

    before, after = spectra(centres - half), spectra(centres + half)
    everywhere = np.arange(0, x.shape[0], max(1, half))
    ref = max(spectra(everywhere).max(initial=0.0), EPS)
    floor = ref * 10 ** (floor_db / 20)
    la, lb = 20 * np.log10(before + floor), 20 * np.log10(after + floor)
    return np.sqrt(np.mean((la - lb) ** 2, axis=1))


def _power_spectrogram(x, n_fft=512, hop=128):
    import torch

    spec = torch.stft(torch.as_tensor(np.asarray(x, dtype=np.float32)), n_fft, hop_length=hop,
                      window=torch.hann_window(n_fft), return_complex=True)
    return (spec.abs() ** 2).T.double().numpy()  # [frames, bins]; frame i centred at i * hop


def log_spectral_distance(est, ref, frames_mask=None, n_fft=512, hop=128, floor_db=-80.0):
    """Mean over frames of the RMS (over frequency) log-power difference, dB.

    Example
    -------
    >>> rng = np.random.default_rng(0); x = rng.standard_normal(8000)
    >>> log_spectral_distance(x, x), bool(log_spectral_distance(2 * x, x) > 5)
    (0.0, True)
    """
    pe, pr = _power_spectrogram(est, n_fft, hop), _power_spectrogram(ref, n_fft, hop)
    floor = max(pr.max(initial=0.0), EPS) * 10 ** (floor_db / 10)
    lsd = np.sqrt(np.mean((10 * np.log10(pe + floor) - 10 * np.log10(pr + floor)) ** 2, axis=1))
    if frames_mask is not None:
        lsd = lsd[frames_mask[:lsd.shape[0]]]
    return float(lsd.mean()) if lsd.size else math.nan


def si_sdr(est, ref):
    """Scale-invariant SDR (dB) of ``est`` against ``ref`` (both made zero-mean).

    Example
    -------
    >>> rng = np.random.default_rng(0); x = rng.standard_normal(1000)
    >>> round(si_sdr(0.5 * x + 0.05 * rng.standard_normal(1000), x))
    20
    """
    est = np.asarray(est, dtype=np.float64) - np.mean(est)
    ref = np.asarray(ref, dtype=np.float64) - np.mean(ref)
    alpha = np.dot(est, ref) / max(np.dot(ref, ref), EPS)
    target = alpha * ref
    return float(10 * np.log10(max(np.dot(target, target), EPS)
                               / max(np.dot(est - target, est - target), EPS)))


def near_mask(length, borders, radius):
    """Boolean ``[length]``: within ``radius`` samples of a border.

    Example
    -------
    >>> near_mask(10, [5], 1).astype(int).tolist()
    [0, 0, 0, 0, 1, 1, 1, 0, 0, 0]
    """
    mask = np.zeros(length, dtype=bool)
    for b in borders:
        mask[max(0, b - radius):min(length, b + radius + 1)] = True
    return mask


def _percentile_of(values, population):
    population = np.sort(population)
    if population.size == 0:
        return [math.nan for _ in values]
    return [float(100.0 * np.searchsorted(population, v) / population.size) for v in values]


def border_stats(at_borders, elsewhere, log=True):
    """Border values against the other positions.

    Arguments
    ---------
    at_borders, elsewhere : numpy.ndarray
        A measure at the borders and at the other positions.
    log : bool
        Energies (compared as ``10 log10`` ratios) rather than dB values
        (compared as differences).

    Returns
    -------
    dict
        ``borders`` (per border), ``border_mean``, ``elsewhere_median``,
        ``border_re_elsewhere_db`` (per border and ``_mean``), and
        ``border_percentile`` (per border and ``_mean``: the share of other
        positions below each border value, %).
    """
    med = float(np.median(elsewhere)) if elsewhere.size else math.nan
    if log:
        rel = 10 * np.log10((at_borders + EPS) / (med + EPS))
    else:
        rel = at_borders - med
    pct = _percentile_of(at_borders, elsewhere)
    return {"borders": [float(v) for v in at_borders], "border_mean": float(np.mean(at_borders)),
            "elsewhere_median": med, "border_re_elsewhere_db": [float(v) for v in rel],
            "border_re_elsewhere_db_mean": float(np.mean(rel)),
            "border_percentile": pct, "border_percentile_mean": float(np.mean(pct))}


def discontinuity(signals, borders, sample_rate, window_ms=5.0, near_ms=100.0):
    """Measures (a) for each signal, and chunked minus one-pass.

    Arguments
    ---------
    signals : dict
        ``name -> [S]`` arrays; must hold ``one_pass`` and ``chunked``.
    borders : list of int
        Chunk borders (samples).
    sample_rate : int
        Rate of the signals.
    window_ms : float
        Half-width of the Δx energy window.
    near_ms : float
        Positions closer than this to a border are not "elsewhere".

    Returns
    -------
    dict
        ``diff_energy`` and ``spectral_flux``: ``name -> border_stats``,
        plus ``chunked_minus_one_pass`` (border_stats of the per-position
        difference, in dB).
    """
    length = len(next(iter(signals.values())))
    half = max(1, round(window_ms * sample_rate / 1000))
    frame = 2 * round(0.01 * sample_rate)  # 20 ms
    step = max(1, frame // 8)  # positions every 2.5 ms
    radius = round(near_ms * sample_rate / 1000)
    margin = max(half + 1, frame)
    grid = np.arange(margin, length - margin, step)
    grid = grid[~near_mask(length, borders, radius)[grid]]
    b = np.asarray(borders, dtype=np.int64)
    out = {"diff_energy": {}, "spectral_flux": {}}
    values = {}
    for name, x in signals.items():
        e_b, e_o = diff_energy(x, b, half), diff_energy(x, grid, half)
        f_b, f_o = spectral_flux(x, b, frame), spectral_flux(x, grid, frame)
        values[name] = (e_b, e_o, f_b, f_o)
        out["diff_energy"][name] = border_stats(e_b, e_o, log=True)
        out["spectral_flux"][name] = border_stats(f_b, f_o, log=False)
    c, o = values["chunked"], values["one_pass"]
    out["diff_energy"]["chunked_minus_one_pass"] = border_stats(
        10 * np.log10((c[0] + EPS) / (o[0] + EPS)), 10 * np.log10((c[1] + EPS) / (o[1] + EPS)),
        log=False)
    out["spectral_flux"]["chunked_minus_one_pass"] = border_stats(c[2] - o[2], c[3] - o[3],
                                                                  log=False)
    out["positions"] = {"borders": len(borders), "elsewhere": int(grid.size),
                        "window_samples": 2 * half + 1, "flux_frame_samples": frame,
                        "near_samples": radius}
    return out


def distances(est, ref, borders, sample_rate, near_ms=100.0, n_fft=512, hop=128):
    """Measures (b): LSD and SI-SDR of ``est`` against ``ref``, overall / near / away."""
    length = min(len(est), len(ref))
    est, ref = np.asarray(est[:length]), np.asarray(ref[:length])
    radius = round(near_ms * sample_rate / 1000)
    near = near_mask(length, borders, radius)
    frames = np.arange(length // hop + 1) * hop
    near_frames = near[np.minimum(frames, length - 1)]
    result = {}
    for region, samples, frame_mask in (("overall", None, None), ("near", near, near_frames),
                                        ("away", ~near, ~near_frames)):
        if samples is None:
            result[region] = {"lsd_db": log_spectral_distance(est, ref, None, n_fft, hop),
                              "si_sdr_db": si_sdr(est, ref), "samples": length}
        else:
            result[region] = {
                "lsd_db": log_spectral_distance(est, ref, frame_mask, n_fft, hop),
                "si_sdr_db": si_sdr(est[samples], ref[samples]) if samples.any() else math.nan,
                "samples": int(samples.sum())}
    return result


# -- the run ---------------------------------------------------------------------------


def _load(model, device, threads, **overrides):
    import torch

    from speechbrain_gense.inference import EnhanceGenerative

    torch.set_num_threads(threads)
    return EnhanceGenerative.from_hparams(source=model, run_opts={"device": device},
                                          overrides=overrides or None)


def _prepare_input(path, workdir, seconds, seed, source, given):
    """Writes the test file (FLOAT WAV, mono) and returns its path, rate and length."""
    import soundfile as sf

    if given:
        data, rate = sf.read(given, dtype="float32", always_2d=True)
        if seconds:
            data = data[:int(seconds * rate)]
        sf.write(path, data[:, 0], rate, subtype="FLOAT")
        return {"path": path, "sample_rate": rate, "samples": data.shape[0], "source": given}
    made = write_noisy_wav(path, seconds, 16000, seed=seed, source=source, subtype="FLOAT")
    return {"path": path, "sample_rate": 16000, "samples": made["samples"],
            "source": made["source"]}


def run(model, seconds=10.0, chunk_seconds=2.0, overlap_seconds=None, crossfade_seconds=None,
        seed=0, threads=2, device="cpu", decode_opts=None, window_ms=5.0, near_ms=100.0,
        source="auto", input_file=None, progress=True):
    """Enhances one file in one pass and in chunks; returns every measure.

    Returns
    -------
    dict
        ``input``, ``one_pass``/``chunked`` settings and timings,
        ``borders`` (seconds), ``discontinuity`` and ``distances``.
    """
    import soundfile as sf
    from tqdm import tqdm

    decode_opts = dict(decode_opts or {})
    with tempfile.TemporaryDirectory(prefix="seams-") as tmp:
        forced = {"chunk_seconds": chunk_seconds}
        if overlap_seconds is not None:
            forced["overlap_seconds"] = overlap_seconds
        if crossfade_seconds is not None:
            forced["crossfade_seconds"] = crossfade_seconds
        chunked = _load(model, device, threads, **forced)
        notes = []
        info = _prepare_input(os.path.join(tmp, "noisy.wav"), tmp, seconds, seed, source,
                              input_file)
        rate, n = info["sample_rate"], info["samples"]
        limit = chunked.max_frames()
        if limit is not None:  # the longest input the model takes in one pass
            most = int(limit * chunked.hop_length * rate / chunked.sample_rate)
            most -= most % chunked.chunk_plan(most, rate)["unit"]
            if n > most:
                notes.append(f"input cut from {n / rate:.2f} s to {most / rate:.2f} s: the model "
                             f"takes at most {limit} frames in one pass")
                data, _ = sf.read(info["path"], dtype="float32")
                sf.write(info["path"], data[:most], rate, subtype="FLOAT")
                n = info["samples"] = most
        overlap = chunked.overlap_seconds
        one = _load(model, device, threads, chunk_seconds=n / rate + 1.0, overlap_seconds=0.0)
        plan_one, plan = one.chunk_plan(n, rate), chunked.chunk_plan(n, rate)
        if len(plan_one["chunks"]) != 1:
            raise BenchmarkError(f"{n / rate:.2f} s do not fit in one pass of this model")
        borders = [start for start, *_ in plan["chunks"][1:]]
        if not borders:
            raise BenchmarkError(f"--chunk-seconds {chunk_seconds:g} gives one chunk for "
                                 f"{n / rate:.2f} s: use shorter chunks or a longer input")
        runs = {}
        jobs = (("one_pass", one, seed), ("chunked", chunked, seed),
                ("one_pass_seed2", one, seed + 1))
        for name, enhancer, s in tqdm(jobs, desc="passes", disable=not progress):
            t0 = time.perf_counter()
            wav = enhancer.enhance_file(info["path"], seed=s, **decode_opts)
            runs[name] = {"wav": wav[0].double().numpy(), "seconds": time.perf_counter() - t0,
                          "seed": s}
        noisy, _ = sf.read(info["path"], dtype="float64")
    signals = {"noisy": noisy, "one_pass": runs["one_pass"]["wav"],
               "chunked": runs["chunked"]["wav"]}
    for name, x in signals.items():
        if not np.isfinite(x).all():
            raise BenchmarkError(f"the {name} output has NaN or Inf samples")
    first = plan["chunks"][0]
    return {
        "input": {"source": info["source"], "seconds": n / rate, "sample_rate": rate},
        "notes": notes,
        "one_pass": {"chunks": 1, "seconds": runs["one_pass"]["seconds"]},
        "chunked": {"chunks": len(plan["chunks"]), "chunk_s": (first[1] - first[0]) / rate,
                    "overlap_s": overlap, "crossfade_s": plan["crossfade"] / rate,
                    "carry_context": chunked.carries_context(),
                    "seconds": runs["chunked"]["seconds"]},
        "seed_baseline_seconds": runs["one_pass_seed2"]["seconds"],
        "seed": seed, "max_frames": limit,
        "borders_s": [b / rate for b in borders],
        "discontinuity": discontinuity(signals, borders, rate, window_ms, near_ms),
        "distances": {
            "chunked_vs_one_pass": distances(signals["chunked"], signals["one_pass"], borders,
                                             rate, near_ms),
            "one_pass_seed2_vs_one_pass": distances(runs["one_pass_seed2"]["wav"],
                                                    signals["one_pass"], borders, rate, near_ms),
        },
        "window_ms": window_ms, "near_ms": near_ms,
    }


def _f(value, digits=1, sign=False):
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_table(result):
    """The markdown report of a :func:`main` result."""
    machine, d = result["machine"], result["discontinuity"]
    c, w, near = result["chunked"], result["window_ms"], result["near_ms"]
    nb = len(result["borders_s"])
    lines = [
        "# Seams: chunked against one-pass enhancement",
        "",
        f"- command: `{result['command']}`",
        f"- model: {result['model_name']}",
        (f"- input: {result['input']['seconds']:.2f} s at {result['input']['sample_rate']} Hz "
         f"({result['input']['source']}); seed {result['seed']}"),
        (f"- chunked: {c['chunks']} chunks of {c['chunk_s']:.2f} s, overlap {c['overlap_s']:g} s "
         f"each side, crossfade {1000 * c['crossfade_s']:.0f} ms, context carried: "
         f"{'yes' if c['carry_context'] else 'no'}; borders at "
         + ", ".join(f"{b:.2f}" for b in result["borders_s"]) + " s"),
        (f"- time: one-pass {result['one_pass']['seconds']:.2f} s, chunked {c['seconds']:.2f} s "
         f"({machine['cpu']}, {machine['cpu_count']} CPUs, {result['threads']} thread(s), "
         f"torch {machine['torch']}; load average {format_load(machine['load_average'])})"),
    ]
    lines += [f"- note: {note}" for note in result["notes"]]
    lines += [
        "",
        (f"(a) Discontinuity at the {nb} borders against the {d['positions']['elsewhere']} "
         f"positions further than {near:g} ms from any border"),
        "",
        "| measure | noisy input | one-pass | chunked |",
        "|---|---:|---:|---:|",
    ]
    names = ("noisy", "one_pass", "chunked")
    de, sfx = d["diff_energy"], d["spectral_flux"]
    lines += [
        (f"| Δx energy ±{w:g} ms at borders, re median elsewhere (dB, mean) | "
         + " | ".join(_f(de[k]["border_re_elsewhere_db_mean"], 1, True) for k in names) + " |"),
        ("| Δx energy at borders: percentile among other positions (mean) | "
         + " | ".join(_f(de[k]["border_percentile_mean"], 0) for k in names) + " |"),
        ("| spectral flux at borders (dB, mean) | "
         + " | ".join(_f(sfx[k]["border_mean"]) for k in names) + " |"),
        ("| spectral flux elsewhere (dB, median) | "
         + " | ".join(_f(sfx[k]["elsewhere_median"]) for k in names) + " |"),
        ("| spectral flux at borders: percentile among other positions (mean) | "
         + " | ".join(_f(sfx[k]["border_percentile_mean"], 0) for k in names) + " |"),
        "",
        "Chunked minus one-pass at the same positions (content-controlled):",
        "",
        "| measure | at borders (mean) | elsewhere (median) | border percentile (mean) |",
        "|---|---:|---:|---:|",
    ]
    for label, key in (("Δx energy (dB)", "diff_energy"), ("spectral flux (dB)", "spectral_flux")):
        s = d[key]["chunked_minus_one_pass"]
        lines.append(f"| {label} | {_f(s['border_mean'], 2, True)} | "
                     f"{_f(s['elsewhere_median'], 2, True)} | "
                     f"{_f(s['border_percentile_mean'], 0)} |")
    lines += [
        "",
        f"(b) Distances, overall, within {near:g} ms of a border (near) and further (away)",
        "",
        "| comparison | measure | overall | near borders | away from borders |",
        "|---|---|---:|---:|---:|",
    ]
    for label, key in (("chunked vs one-pass (same seed)", "chunked_vs_one_pass"),
                       ("one-pass seed+1 vs one-pass (sampling spread)",
                        "one_pass_seed2_vs_one_pass")):
        dist = result["distances"][key]
        lines.append(f"| {label} | LSD (dB) | " + " | ".join(
            _f(dist[r]["lsd_db"], 2) for r in ("overall", "near", "away")) + " |")
        lines.append(f"| {label} | SI-SDR (dB) | " + " | ".join(
            _f(dist[r]["si_sdr_db"], 1) for r in ("overall", "near", "away")) + " |")
    lines += [
        "",
        ("- Δx energy: mean squared first difference in the window; 0 dB and percentile 50 "
         "mean a border looks like any other position; a click shows as a high percentile "
         "in the chunked column only"),
        ("- spectral flux: RMS log-magnitude difference of the 20 ms frames just before and "
         "just after the position (it shows a change of level or timbre across a border; a "
         "click is what Δx energy shows)"),
        ("- LSD: 32 ms frames, 8 ms hop, mean over frames; SI-SDR of the first signal "
         "against the second"),
    ]
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Seams of chunked enhancement: one file enhanced in one pass and in small "
        "chunks (same seed); discontinuity at the chunk borders and distances near and away "
        "from them. Writes a markdown table and JSON.")
    add_model_arguments(parser)
    parser.add_argument("--input", help="a noisy file to use (first channel; default: the "
                        "embedded corpus' noisy test utterances, or a synthetic signal)")
    parser.add_argument("--seconds", type=float,
                        help="length of the test file (default 10; --quick: 4)")
    parser.add_argument("--chunk-seconds", type=float,
                        help="chunk length of the chunked pass (default 2; --quick: 1)")
    parser.add_argument("--overlap-seconds", type=float,
                        help="context each side of a chunk (default: the model's; --quick: 0.25)")
    parser.add_argument("--crossfade-seconds", type=float,
                        help="crossfade at the borders (default: the model's)")
    parser.add_argument("--window-ms", type=float, default=5.0,
                        help="half-width of the Δx energy window (default 5)")
    parser.add_argument("--near-ms", type=float, default=100.0,
                        help="'near a border' radius (default 100)")
    parser.add_argument("--quick", action="store_true",
                        help="4 s, 1 s chunks with 0.25 s overlap (unless given)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="output stem: writes STEM.md and STEM.json (default "
                        "results/benchmarks/seams)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def error(message):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    seconds = args.seconds or (4.0 if args.quick else 10.0)
    chunk = args.chunk_seconds or (1.0 if args.quick else 2.0)
    overlap = args.overlap_seconds
    if overlap is None and args.quick:
        overlap = 0.25
    if seconds <= 0 or chunk <= 0 or (overlap is not None and overlap < 0):
        return error("--seconds and --chunk-seconds must be > 0, --overlap-seconds >= 0")
    if args.crossfade_seconds is not None and args.crossfade_seconds < 0:
        return error("--crossfade-seconds must be >= 0")
    if args.threads < 1 or (args.steps is not None and args.steps < 1):
        return error("--threads and --steps must be >= 1")
    if args.window_ms <= 0 or args.near_ms <= 0:
        return error("--window-ms and --near-ms must be > 0")
    if args.input and not os.path.isfile(args.input):
        return error(f"{args.input}: no such file")
    try:
        if not (args.tiny or args.recipe_size):
            args.model = resolve_model_folder(args.model)
    except BenchmarkError as e:
        return error(str(e))
    import torch

    torch.set_num_threads(args.threads)
    machine = machine_info(args.threads)
    decode_opts = {"steps": args.steps} if args.steps else {}
    try:
        with tempfile.TemporaryDirectory(prefix="seams-model-") as tmp:
            model, name = model_folder(args, tmp, TINY_MAX_POSITION)
            result = run(model, seconds, chunk, overlap, args.crossfade_seconds, args.seed,
                         args.threads, args.device, decode_opts, args.window_ms, args.near_ms,
                         args.source, args.input, progress=not args.quiet)
    except BenchmarkError as e:
        return error(str(e))
    result.update({
        "command": " ".join(["python benchmarks/seams.py"] + [shlex.quote(a) for a in argv]),
        "model_name": name, "threads": args.threads, "device": args.device,
        "decode_opts": decode_opts, "machine": machine,
        "load_average_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    })
    table = format_table(result)
    print(table)
    md_path, json_path = write_results(args.out, table, result)
    print(f"\nwritten: {md_path}, {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
