"""Scores folders of enhanced speech: the Python API and ``gense-eval``.

``gense-eval ENHANCED_DIR --manifest test.json`` reads ``ENHANCED_DIR/{id}.wav``
for each manifest entry, compares it with the entry's ``clean_wav`` (when
present) and ``words`` (when present), and prints a markdown table. Results
have per-utterance scores, overall means (WER: corpus WER, total errors over
total reference words; dWER likewise, against the ASR's transcript of the
clean reference) and breakdowns by SNR band and degradation type. The metric
ASR is Whisper tiny.en unless ``--asr pocketsphinx`` (see
:func:`~speechbrain_gense.metrics.wer.make_asr`).

A missing or unreadable enhanced file (empty, not audio, stereo ...) is
reported on one line and listed under ``failed``; the other files are still
scored. Exit status: 0 when every file was scored, 1 when some failed, 2 for
bad usage (missing manifest or folder, unknown metric).
"""

import argparse
import json
import logging
import math
import os
import sys
import warnings

import torchaudio
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..audio import AudioError, load_audio
from ..data.manifest import read_manifest
from ..utils import first_line
from . import METRICS
from .common import SAMPLE_RATE, MetricWarning, nanmean
from .wer import ASR, asr_for_manifest, dwer_errors, make_asr, transcribe_errors

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("dnsmos", "pesq", "estoi", "sisdr", "secs", "wer", "dwer")
#: Metrics that run the ASR.
ASR_METRICS = ("wer", "dwer")
SNR_BANDS = ("<0", "0-5", "5-10", "10-15", ">=15", "none")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
# column: (table header, decimals, scale)
COLUMNS = {
    "sig": ("SIG", 2, 1), "bak": ("BAK", 2, 1), "ovrl": ("OVRL", 2, 1),
    "p808": ("P.808", 2, 1), "pesq": ("PESQ", 2, 1), "estoi": ("ESTOI", 3, 1),
    "sisdr": ("SI-SDR (dB)", 1, 1), "secs": ("SECS", 3, 1),
    "wer": ("WER (%)", 1, 100), "dwer": ("dWER (%)", 1, 100), "mcd": ("MCD (dB)", 2, 1),
    "rtf": ("RTF", 4, 1),
}


def snr_band(snr):
    """The SNR band of a mixture (``"none"`` when it has no added noise).

    Example
    -------
    >>> [snr_band(s) for s in (-3, 0, 7.5, 15, None)]
    ['<0', '0-5', '5-10', '>=15', 'none']
    """
    if snr is None:
        return "none"
    for band, upper in zip(SNR_BANDS, (0, 5, 10, 15)):
        if float(snr) < upper:
            return band
    return ">=15"


def read_signal(path):
    """Reads a mono file at 16 kHz (other rates are resampled, with a warning)."""
    wav, sr = load_audio(path)
    if sr != SAMPLE_RATE:
        warnings.warn(f"{path}: {sr} Hz, resampled to {SAMPLE_RATE} Hz", MetricWarning)
        wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
    return wav


def score_utterance(estimate, reference=None, words=None, metrics=DEFAULT_METRICS, asr=None,
                    reference_text=None):
    """Scores one enhanced signal with the metrics whose inputs are available.

    Arguments
    ---------
    estimate : torch.Tensor
        ``[S]`` enhanced signal at 16 kHz.
    reference : torch.Tensor, optional
        ``[S]`` clean reference (intrusive metrics are skipped without it).
    words : str, optional
        Transcript (WER is skipped without it).
    metrics : sequence of str
        Keys of :data:`~speechbrain_gense.metrics.METRICS`.
    asr : ASR, optional
        Recogniser for WER and dWER (default: Whisper tiny.en).
    reference_text : str, optional
        The ASR's transcript of ``reference`` when known (dWER).

    Returns
    -------
    dict
        ``{column: float or None}`` (None: not scorable); WER adds ``hyp``,
        ``wer_errors`` and ``wer_words``; dWER adds ``ref_hyp``,
        ``dwer_errors`` and ``dwer_words``.

    Example
    -------
    >>> import torch
    >>> x = torch.randn(16000)
    >>> score_utterance(x, x, metrics=["estoi", "wer"])
    {'estoi': 1.0}
    """
    scores = {}
    for name in metrics:
        metric = METRICS[name]
        if name == "wer":
            if words:
                hyp, errors, total = transcribe_errors(estimate, words, asr)
                scores.update(wer=errors / total if total else None, hyp=hyp,
                              wer_errors=errors, wer_words=total)
        elif name == "dwer":
            if reference is not None:
                hyp, ref_hyp, errors, total = dwer_errors(estimate, reference, asr,
                                                          reference_text=reference_text)
                scores.update(dwer=errors / total if total else None, hyp=hyp, ref_hyp=ref_hyp,
                              dwer_errors=errors, dwer_words=total)
        elif metric.needs is None:
            scores.update(metric.fn(estimate))
        elif reference is not None:
            scores[name] = metric.fn(estimate, reference)
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}


def aggregate(records, columns):
    """Means of the scores of some utterances (WER: corpus WER).

    Example
    -------
    >>> aggregate([{"pesq": 2.0, "wer": 0.5, "wer_errors": 1, "wer_words": 2},
    ...            {"pesq": None, "wer": 0.0, "wer_errors": 0, "wer_words": 6}], ["pesq", "wer"])
    {'n': 2, 'pesq': 2.0, 'wer': 0.125, 'wer_mean': 0.25}
    """
    out = {"n": len(records)}
    for column in columns:
        if column in ASR_METRICS:
            total = sum(r.get(f"{column}_words") or 0 for r in records)
            errors = sum(r.get(f"{column}_errors") or 0 for r in records)
            out[column] = errors / total if total else None
            out[f"{column}_mean"] = nanmean(r.get(column) for r in records)
        else:
            out[column] = nanmean(r.get(column) for r in records)
    return out


def summarize(utterances, columns):
    """Overall scores and breakdowns by SNR band, degradation type and speaker.

    Arguments
    ---------
    utterances : dict
        ``{uid: {"snr": float or None, "degradation": str, "speaker": str, column: score}}``
        (``speaker``: the manifest's; utterances without one are left out of ``by_speaker``).
    columns : sequence of str
        Score columns to summarise.

    Returns
    -------
    dict
        ``{"overall": {...}, "by_snr": {band: {...}}, "by_degradation": {type: {...}},
        "by_speaker": {speaker: {...}}}``, each an :func:`aggregate` (with ``n``, the
        number of utterances).
    """
    records = list(utterances.values())

    def grouped(key, order=None):
        groups = {}
        for r in records:
            if key(r) is not None:
                groups.setdefault(key(r), []).append(r)
        names = [g for g in order if g in groups] if order else sorted(groups)
        return {g: aggregate(groups[g], columns) for g in names}

    return {
        "overall": aggregate(records, columns),
        "by_snr": grouped(lambda r: snr_band(r.get("snr")), SNR_BANDS),
        "by_degradation": grouped(lambda r: r.get("degradation") or "unknown"),
        "by_speaker": grouped(lambda r: r.get("speaker")),
    }


def _prefetch_transcripts(items, metrics, asr, progress):
    """Batch-transcribes every readable output (and reference, for dWER) up front
    when the ASR can (``transcribe_many``, e.g. Whisper); scoring then hits its cache."""
    if not hasattr(asr, "transcribe_many") or not any(m in ASR_METRICS for m in metrics):
        return
    paths = []
    for item in items:
        if "wer" in metrics and item.get("words") or "dwer" in metrics and item.get("clean"):
            paths.append(item["enhanced"])
        if "dwer" in metrics and item.get("clean"):
            paths.append(item["clean"])
    wavs = []
    for path in dict.fromkeys(paths):
        try:
            wavs.append(read_signal(path))
        except (AudioError, OSError, RuntimeError):
            pass  # reported when the item is scored
    if wavs:
        asr.transcribe_many(wavs, SAMPLE_RATE, progress=progress)


def _evaluate(items, metrics, asr=None, progress=True, desc="eval"):
    """Scores ``items`` (dicts with uid, enhanced, clean, words, snr, degradation)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r} (choose from {', '.join(METRICS)})")
    needs_reference = any(METRICS[m].needs == "reference" for m in metrics)
    if any(m in ASR_METRICS for m in metrics):
        asr = make_asr(asr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MetricWarning)
            _prefetch_transcripts(items, metrics, asr, progress)
    utterances, failed, notes = {}, {}, {}
    for item in tqdm(items, desc=desc, unit="file", disable=not progress):
        uid = item["uid"]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetricWarning)
            try:
                estimate = read_signal(item["enhanced"])
                clean = item.get("clean") if needs_reference else None
                reference = read_signal(clean) if clean else None
                scores = score_utterance(estimate, reference, item.get("words"), metrics, asr)
            except AudioError as e:
                failed[uid] = str(e)
            except Exception as e:  # noqa: BLE001 -- a metric crashed: report it, go on
                reason = first_line(e)
                failed[uid] = f"{item['enhanced']}: scoring failed ({reason})"
            else:
                utterances[uid] = {"snr": item.get("snr"),
                                   "degradation": item.get("degradation"),
                                   "speaker": item.get("speaker"), **scores}
        for w in caught:
            if issubclass(w.category, MetricWarning):
                notes.setdefault(uid, []).append(str(w.message))
                logger.warning("%s: %s", uid, w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if uid in failed:
            logger.error("error: %s", failed[uid])
    columns = [c for m in metrics for c in METRICS[m].columns]
    return {"metrics": list(metrics), "columns": columns, "num_files": len(items),
            "num_scored": len(utterances), **summarize(utterances, columns),
            "utterances": utterances, "failed": failed, "warnings": notes}


def _check_dir(path, what):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such {what} folder")


def evaluate_manifest(enhanced_dir, manifest, metrics=DEFAULT_METRICS, asr=None,
                      data_root=None, progress=True):
    """Scores ``enhanced_dir/{uid}.wav`` for every entry of a manifest.

    Arguments
    ---------
    enhanced_dir : str
        Folder of enhanced files, one ``{uid}.wav`` per manifest entry
        (16 kHz mono; other rates are resampled with a warning).
    manifest : str
        SpeechBrain JSON manifest; fields used: ``clean_wav`` (reference),
        ``words`` (transcript), ``snr`` (float or null) and ``degradation``.
        Missing fields skip the metrics that need them.
    metrics : sequence of str
        Keys of :data:`~speechbrain_gense.metrics.METRICS`.
    asr : ASR or str, optional
        Recogniser for WER and dWER, or its name (default: Whisper tiny.en;
        ``"pocketsphinx"`` uses the domain language model ``asr_lm.arpa`` when
        one sits next to the manifest, as in the embedded corpus; see
        :func:`~speechbrain_gense.metrics.wer.make_asr`).
    data_root : str, optional
        Replaces ``{data_root}`` in the manifest (default: its folder).
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``overall``, ``by_snr``, ``by_degradation`` (see :func:`summarize`),
        ``utterances`` (per-utterance scores, ASR hypotheses), ``failed``
        (``{uid: message}``), ``warnings`` (``{uid: [message]}``), and
        ``metrics``, ``columns``, ``num_files``, ``num_scored``.

    Raises
    ------
    FileNotFoundError
        When the folder or the manifest does not exist.
    ValueError
        For an unknown metric or a manifest that is not valid JSON.

    Example
    -------
    >>> import os, tempfile, torch
    >>> from speechbrain_gense.audio import save_audio
    >>> from speechbrain_gense.data.manifest import write_manifest
    >>> root = tempfile.mkdtemp()
    >>> clean = os.path.join(root, "a.wav")
    >>> save_audio(clean, 0.1 * torch.randn(16000), 16000)
    >>> write_manifest(os.path.join(root, "m.json"),
    ...                {"a": {"clean_wav": clean, "snr": 3.0}, "b": {}})
    >>> res = evaluate_manifest(root, os.path.join(root, "m.json"), ["sisdr"],
    ...                         progress=False)  # b.wav is missing
    >>> res["overall"]["sisdr"], list(res["by_snr"]), list(res["failed"])
    (100.0, ['0-5'], ['b'])
    """
    enhanced_dir, manifest = os.fspath(enhanced_dir), os.fspath(manifest)
    _check_dir(enhanced_dir, "enhanced")
    try:
        entries = read_manifest(manifest, data_root)
    except ValueError as e:  # e.g. json.JSONDecodeError
        raise ValueError(f"{manifest}: not a valid JSON manifest ({e})") from None
    items = [
        {"uid": uid, "enhanced": os.path.join(enhanced_dir, f"{uid}.wav"),
         "clean": fields.get("clean_wav"), "words": fields.get("words"),
         "snr": fields.get("snr"), "degradation": fields.get("degradation"),
         "speaker": fields.get("speaker")}
        for uid, fields in entries.items()
    ]
    if any(m in ASR_METRICS for m in metrics):
        asr = asr if isinstance(asr, ASR) else asr_for_manifest(manifest, asr)
    results = _evaluate(items, metrics, asr, progress,
                        os.path.basename(os.path.normpath(enhanced_dir)))
    if any(m in ASR_METRICS for m in metrics):
        results["asr"] = repr(asr)
    return results


def evaluate_folders(enhanced_dir, clean_dir=None, noisy_dir=None, metrics=DEFAULT_METRICS,
                     asr=None, progress=True):
    """Scores a folder of enhanced files matched by file name (no manifest).

    Arguments
    ---------
    enhanced_dir : str
        Folder of enhanced files.
    clean_dir : str, optional
        Folder of clean references with the same file names (without it,
        only reference-free metrics are computed).
    noisy_dir : str, optional
        Folder of the noisy inputs. The files expected are those of
        ``noisy_dir``, else ``clean_dir``, else ``enhanced_dir`` (so with
        either folder a missing enhanced file is reported as failed).
    metrics, asr, progress
        As in :func:`evaluate_manifest` (no transcripts: WER is skipped; no
        SNR or degradation: the breakdowns have one group).

    Returns
    -------
    dict
        As :func:`evaluate_manifest`.
    """
    enhanced_dir, clean_dir, noisy_dir = (
        None if d is None else os.fspath(d) for d in (enhanced_dir, clean_dir, noisy_dir))
    for path, what in ((enhanced_dir, "enhanced"), (clean_dir, "clean"), (noisy_dir, "noisy")):
        if path is not None:
            _check_dir(path, what)
    listed = noisy_dir or clean_dir or enhanced_dir
    names = sorted(f for f in os.listdir(listed) if f.lower().endswith(AUDIO_EXTENSIONS))
    items = [
        {"uid": os.path.splitext(name)[0], "enhanced": os.path.join(enhanced_dir, name),
         "clean": os.path.join(clean_dir, name) if clean_dir else None}
        for name in names
    ]
    if any(m in ASR_METRICS for m in metrics):
        asr = make_asr(asr)
    results = _evaluate(items, metrics, asr, progress,
                        os.path.basename(os.path.normpath(enhanced_dir)))
    if any(m in ASR_METRICS for m in metrics):
        results["asr"] = repr(asr)
    return results


def _fmt(value, column):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    _, decimals, scale = COLUMNS[column]
    return f"{value * scale:.{decimals}f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


#: The breakdown tables of :func:`format_markdown`: result key and title.
BREAKDOWNS = (("by_snr", "SNR band (dB)"), ("by_degradation", "degradation"),
              ("by_speaker", "speaker"))


def format_markdown(results_by_system, breakdown=("ovrl", "pesq")):
    """Markdown tables comparing systems.

    Arguments
    ---------
    results_by_system : dict
        ``{system name: results of evaluate_manifest / evaluate_folders}``.
    breakdown : sequence of str
        Columns broken down by SNR band, degradation type and speaker (one table
        each; groups that no system has, or a single group, are left out).

    Returns
    -------
    str
        A table with one row per system and one column per score (WER in
        %, corpus level), then the breakdown tables.

    Example
    -------
    >>> res = {"columns": ["pesq"], "num_files": 2, "num_scored": 2,
    ...        "overall": {"n": 2, "pesq": 2.345},
    ...        "by_snr": {"0-5": {"n": 1, "pesq": 2.0}, "none": {"n": 1, "pesq": 2.69}},
    ...        "by_degradation": {"noise": {"n": 2, "pesq": 2.345}}}
    >>> print(format_markdown({"noisy": res}))
    | system | files | PESQ |
    |---|---:|---:|
    | noisy | 2 | 2.35 |
    <BLANKLINE>
    **PESQ by SNR band (dB)**
    <BLANKLINE>
    | system | 0-5 (n=1) | none (n=1) |
    |---|---:|---:|
    | noisy | 2.00 | 2.69 |
    """
    systems = list(results_by_system.items())
    present = {c for _, res in systems for c in res["columns"]}
    columns = [c for c in COLUMNS if c in present]

    def files(res):
        failed = res["num_files"] - res["num_scored"]
        return str(res["num_scored"]) + (f" ({failed} failed)" if failed else "")

    rows = [[name, files(res), *(_fmt(res["overall"].get(c), c) for c in columns)]
            for name, res in systems]
    lines = _table(["system", "files", *(COLUMNS[c][0] for c in columns)], rows)
    for key, title in BREAKDOWNS:
        groups = {}
        for _, res in systems:
            for group, agg in res.get(key, {}).items():
                groups[group] = max(groups.get(group, 0), agg["n"])
        if len(groups) < 2:
            continue
        order = [g for g in SNR_BANDS if g in groups] if key == "by_snr" else sorted(groups)
        for column in (c for c in breakdown if c in columns):
            header = ["system", *(f"{g} (n={groups[g]})" for g in order)]
            rows = [[name, *(_fmt(res.get(key, {}).get(g, {}).get(column), column)
                            for g in order)]
                    for name, res in systems]
            lines += ["", f"**{COLUMNS[column][0]} by {title}**", "", *_table(header, rows)]
    return "\n".join(lines)


def system_names(folders):
    """Row names of enhanced folders: the shortest path tails that tell them apart.

    Example
    -------
    >>> system_names(["out/noisy", "out/mage/draw=1", "out/gense/draw=1"])
    ['noisy', 'mage/draw=1', 'gense/draw=1']
    >>> system_names(["a/x", "a/x/"])
    Traceback (most recent call last):
    ...
    ValueError: a/x: the same folder as another one given
    """
    parts = [os.path.normpath(os.path.abspath(f)).split(os.sep) for f in folders]
    names = []
    for i, p in enumerate(parts):
        for depth in range(1, len(p) + 1):
            tail = p[-depth:]
            if all(q[-depth:] != tail for j, q in enumerate(parts) if j != i):
                names.append("/".join(tail))
                break
        else:
            raise ValueError(f"{folders[i]}: the same folder as another one given")
    return names


def main(argv=None):
    """``gense-eval ENHANCED_DIR... (--manifest M | --clean-dir C) [options]``."""
    parser = argparse.ArgumentParser(
        prog="gense-eval",
        description="Scores folders of enhanced speech (DNSMOS, PESQ, ESTOI, SI-SDR, SECS, "
        "WER, dWER, MCD) and prints a markdown table, one row per folder.")
    parser.add_argument("enhanced_dirs", nargs="+", metavar="ENHANCED_DIR",
                        help="folder(s) of enhanced files: {id}.wav, or names as in --clean-dir")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="SpeechBrain JSON manifest (clean_wav, words, snr, "
                        "degradation)")
    source.add_argument("--clean-dir", help="folder of clean references, matched by file name")
    parser.add_argument("--noisy-dir", help="with --clean-dir: folder whose files must all "
                        "have an enhanced version")
    parser.add_argument("--data-root", help="replaces {data_root} in the manifest "
                        "(default: the manifest's folder)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, from {','.join(METRICS)} "
                        f"(default {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--asr", default=None,
                        help="metric ASR for WER/dWER: whisper (default, tiny.en), "
                        "whisper:FOLDER, pocketsphinx (domain LM when the corpus has one), "
                        "pocketsphinx:LM.arpa or pocketsphinx:none")
    parser.add_argument("--name", help="system name(s), comma-separated, one per "
                        "ENHANCED_DIR (default: the folder names)")
    parser.add_argument("--out", help="write all results (per utterance too) to this JSON file")
    parser.add_argument("--markdown", help="write the table to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def usage_error(message):
        print(f"gense-eval: error: {message}", file=sys.stderr)
        return 2

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        names = ([n.strip() for n in args.name.split(",")] if args.name else
                 system_names(args.enhanced_dirs))
    except ValueError as e:
        return usage_error(e)
    if len(names) != len(args.enhanced_dirs):
        return usage_error(f"{len(names)} names for {len(args.enhanced_dirs)} folders")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        return usage_error(f"--name {twice!r} is given twice (each folder needs its own)")
    if args.noisy_dir and not args.clean_dir:
        return usage_error("--noisy-dir goes with --clean-dir")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        return usage_error(f"unknown metric {unknown[0] if unknown else ''!r} "
                           f"(choose from {','.join(METRICS)})")
    if args.manifest and not os.path.isfile(args.manifest):
        return usage_error(f"{args.manifest}: no such manifest")
    for folder in args.enhanced_dirs:
        if not os.path.isdir(folder):
            return usage_error(f"{folder}: no such enhanced folder")
    results = {}
    try:
        if args.asr is not None:
            make_asr(args.asr)  # an unknown name is a usage error, before any work
        with logging_redirect_tqdm():
            for name, folder in zip(names, args.enhanced_dirs):
                if args.manifest:
                    results[name] = evaluate_manifest(folder, args.manifest, metrics,
                                                      asr=args.asr, data_root=args.data_root,
                                                      progress=not args.quiet)
                else:
                    results[name] = evaluate_folders(folder, args.clean_dir, args.noisy_dir,
                                                     metrics, asr=args.asr,
                                                     progress=not args.quiet)
    except (FileNotFoundError, ValueError) as e:
        return usage_error(e)
    table = format_markdown(results)
    print(table)
    for path, write in ((args.out, lambda f: json.dump(results, f, indent=2)),
                        (args.markdown, lambda f: f.write(table + "\n"))):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                write(f)
    failed = sum(len(res["failed"]) for res in results.values())
    if failed:
        total = sum(res["num_files"] for res in results.values())
        print(f"gense-eval: {failed} of {total} files failed (see the errors above)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
