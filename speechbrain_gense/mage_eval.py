"""The MAGE results table and its ablations in one command: ``gense-mage-eval``.

Every noisy utterance of the test split (or of a manifest) is enhanced by
each *system* and written to ``OUT/<system>/{id}.wav`` (the input's rate and
length), then scored against the clean reference by the evaluation harness
(:func:`~speechbrain_gense.metrics.evaluate.evaluate_manifest`: DNSMOS
OVRL/SIG/BAK, PESQ, ESTOI, SI-SDR, SECS, WER). Each system also gets its
real-time factor: compute seconds / audio seconds (``time.perf_counter``,
one utterance at a time, after one untimed warm-up call on the first
utterance; torch's thread count is left as it is unless ``--threads``).

Systems:

- MAGE models: each ``--model NAME=DIR`` is a folder written by
  :meth:`~speechbrain_gense.models.mage.MAGE.save` (trained variants such
  as CTF vs random training masks, or with and without speaker
  conditioning, are different folders). Its inference variants are the
  cross product of ``--steps``, ``--corrector`` and ``--decode``; a row is
  named after the model and the axes given, e.g.
  ``mage/steps=8/corrector=on/decode=ctf``, and without these options a
  model has one row, named after it, with its own ``decode_opts``.
  ``--decode-opt KEY=VALUE`` overrides a decoding option for every row.
  A variant a model cannot run (``corrector=on`` without a corrector,
  ``decode=ctf`` without a token-frequency table) is skipped with a warning.
  Decoding is seeded: utterance ``i`` (in manifest order) is decoded with
  a generator seeded from ``(--seed, i)``, the same for every row, so two
  runs with the same seed write the same files.
- ``--baselines``: ``noisy`` (the input), ``clean`` (the reference against
  itself, the ceiling), RNNoise and spectral gating
  (:mod:`speechbrain_gense.baselines`).
- ``--codec``: the resynthesis of the *clean* speech by the tokenizer of the
  models (``codec``; ``codec-<model>`` for each distinct tokenizer when the
  models use several): the ceiling of any model over these tokens
  (:class:`~speechbrain_gense.codec_eval.TimedTokenizer`, as in
  ``gense-codec-eval``).

Example::

    gense-mage-eval --corpus corpus --minutes 20 --model mage=pretrained/mage \\
        --model random_mask=results/mage_random/model --steps 1,4,8,16 \\
        --corrector on,off --decode ctf,confidence --baselines --codec --out results/mage

writes ``OUT/mage_results.json`` (everything, per utterance too, and a flat
``summary`` per system), ``OUT/mage_table.md`` (the table it prints: one row
per system, then the breakdowns by SNR band and degradation type of
:func:`~speechbrain_gense.metrics.evaluate.format_markdown`) and
``OUT/mage_input.json`` (the utterances used). The wavs of ``OUT/<system>/``
are rewritten on every run (the timings are measured while making them);
inputs are never written over. Exit status: 0 when every file was processed
and scored, 1 when some failed (each reported on one line), 2 for bad usage
(missing model folder, unknown metric ...).
"""

import argparse
import itertools
import json
import logging
import os
import sys
import time

import torch
import torchaudio
from tqdm.contrib.logging import logging_redirect_tqdm

from .baselines import BASELINES, CLEAN, enhance_manifest
from .codec_eval import (
    _NAME,
    TimedTokenizer,
    _sync,
    summary_row,
    token_statistics,
    write_input_manifest,
)
from .data.corpus import stable_seed
from .data.degrade import fit_length_end
from .data.manifest import subset_manifest, write_manifest  # noqa: F401 (doctests)
from .tokenizers.registry import _first_line, _value

logger = logging.getLogger(__name__)

PROG = "gense-mage-eval"
#: Harness metrics scored by default (all but MCD).
DEFAULT_METRICS = ("dnsmos", "pesq", "estoi", "sisdr", "secs", "wer")
#: Rows added by ``--baselines``, in table order.
BASELINE_ROWS = ("noisy", CLEAN, "rnnoise", "spectral_gating")
#: Name of the codec-resynthesis row (``codec-<model>`` with several tokenizers).
CODEC_ROW = "codec"
#: Decoding strategies of ``--decode`` (see :func:`~speechbrain_gense.decoding.iterative_decode`).
STRATEGIES = ("ctf", "confidence")
SWITCHES = {"on": True, "off": False}
INPUT_MANIFEST = "mage_input.json"
CODEC_INPUT_MANIFEST = "mage_codec_input.json"
RESULTS_FILE = "mage_results.json"
TABLE_FILE = "mage_table.md"


# ---------------------------------------------------------------------------
# Command-line values
# ---------------------------------------------------------------------------


def parse_model(arg):
    """Splits ``[NAME=]DIR`` into ``(name, folder)``; the name defaults to the folder's.

    Example
    -------
    >>> parse_model("mage=pretrained/mage")
    ('mage', 'pretrained/mage')
    >>> parse_model("results/mage_random/model/")
    ('model', 'results/mage_random/model/')
    """
    name, eq, folder = arg.partition("=")
    if not eq or not _NAME.match(name):  # the "=" belongs to the path
        name, folder = None, arg
    if name is None:
        name = os.path.basename(os.path.normpath(folder))
    return name, folder


def parse_list(text, cast, option):
    """Comma-separated values of an option, cast one by one (one-line ``ValueError``).

    Example
    -------
    >>> parse_list("1, 4,8", int, "--steps")
    [1, 4, 8]
    >>> parse_list("on,maybe", SWITCHES.__getitem__, "--corrector")
    Traceback (most recent call last):
    ...
    ValueError: --corrector: bad value 'maybe'
    """
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            values.append(cast(item))
        except (ValueError, KeyError):
            raise ValueError(f"{option}: bad value {item!r}") from None
    if not values:
        raise ValueError(f"{option}: no value")
    if len(set(values)) < len(values):
        raise ValueError(f"{option}: a value is repeated in {text!r}")
    return values


def _steps(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _strategy(text):
    if text not in STRATEGIES:
        raise ValueError(text)
    return text


def parse_decode_opts(items):
    """``KEY=VALUE`` overrides of the models' decoding options.

    Keys are those of :attr:`MAGE.DECODE_DEFAULTS` but ``steps`` (an axis of
    its own: ``--steps``); ``none``/``null`` give None.

    Example
    -------
    >>> parse_decode_opts(["temperature=0.5", "top_k=none"])
    {'temperature': 0.5, 'top_k': None}
    >>> parse_decode_opts(["tmp=1"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --decode-opt: unknown option 'tmp' (choose from temperature, top_k, ...)
    """
    from .models.mage import MAGE

    keys = [k for k in MAGE.DECODE_DEFAULTS if k != "steps"]
    opts = {}
    for item in items:
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq or not key:
            raise ValueError(f"--decode-opt: expected KEY=VALUE, got {item!r}")
        if key not in keys:
            hint = " (use --steps)" if key == "steps" else f" (choose from {', '.join(keys)})"
            raise ValueError(f"--decode-opt: unknown option {key!r}{hint}")
        opts[key] = None if value.lower() in ("none", "null") else _value(value)
    return opts


def inference_variants(steps=None, corrector=None, decode=None):
    """Cross product of the inference axes: ``[(suffix, options)]``.

    Only the axes given appear in the suffix and the options (``steps``,
    ``use_corrector``, ``strategy``: keyword arguments of
    :meth:`~speechbrain_gense.models.mage.MAGE.enhance`); with none, one
    variant with the model's own settings.

    Example
    -------
    >>> for suffix, options in inference_variants(steps=[1, 8], corrector=[True, False]):
    ...     print(suffix, options)
    steps=1/corrector=on {'steps': 1, 'use_corrector': True}
    steps=1/corrector=off {'steps': 1, 'use_corrector': False}
    steps=8/corrector=on {'steps': 8, 'use_corrector': True}
    steps=8/corrector=off {'steps': 8, 'use_corrector': False}
    >>> inference_variants(decode=["ctf"])
    [('decode=ctf', {'strategy': 'ctf'})]
    >>> inference_variants()
    [('', {})]
    """
    axes = []
    if steps:
        axes.append([(f"steps={s}", "steps", s) for s in steps])
    if corrector:
        axes.append([(f"corrector={'on' if c else 'off'}", "use_corrector", c)
                     for c in corrector])
    if decode:
        axes.append([(f"decode={d}", "strategy", d) for d in decode])
    return [("/".join(label for label, _, _ in combo),
             {key: value for _, key, value in combo})
            for combo in itertools.product(*axes)]


# ---------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------


def decoding_settings(mage, variant, decode_opts=None):
    """The settings a MAGE row decodes with, and why it cannot run (or None).

    Arguments
    ---------
    mage : MAGE
        The model.
    variant : dict
        Options of an :func:`inference_variants` entry.
    decode_opts : dict, optional
        ``--decode-opt`` overrides.

    Returns
    -------
    settings : dict
        The model's ``decode_opts`` with the overrides, ``strategy``,
        ``use_corrector`` (both resolved as
        :meth:`~speechbrain_gense.models.mage.MAGE.generate` does) and
        ``model_calls``: enhancer forward passes per utterance (``steps``,
        plus ``1 + corrector_steps`` with the corrector).
    problem : str or None
        Why the model cannot run this variant.
    """
    opts = {**mage.decode_opts, **(decode_opts or {}), **variant}
    strategy = opts.pop("strategy", None) or (
        "ctf" if mage.token_frequency is not None else "confidence")
    use_corrector = opts.pop("use_corrector", True) and mage.corrector is not None
    problem = None
    if variant.get("use_corrector") and mage.corrector is None:
        problem = "the model has no corrector"
    elif strategy == "ctf" and mage.token_frequency is None and opts["scarcity_weight"]:
        problem = "the model has no token-frequency table (needed by decode=ctf)"
    calls = opts["steps"]
    if use_corrector:
        corrector_steps = opts["corrector_steps"]
        calls += 1 + (max(1, opts["steps"] // 2) if corrector_steps is None else corrector_steps)
    settings = {**opts, "strategy": strategy, "use_corrector": use_corrector,
                "model_calls": calls}
    return settings, problem


class MageMethod:
    """MAGE as a ``method(wav[S], sample_rate) -> wav[S]`` of
    :func:`~speechbrain_gense.baselines.enhance_manifest`.

    The signal is resampled to the tokenizer's rate, enhanced by
    :meth:`~speechbrain_gense.models.mage.MAGE.enhance` and brought back to
    ``sample_rate`` and the input length. The ``i``-th call (utterance ``i``
    in manifest order) decodes with a generator seeded from ``(seed, i)``;
    :meth:`warm_up` runs without counting. The tokens and mean confidence of
    each utterance are kept.

    Arguments
    ---------
    mage : MAGE
        The model (eval mode).
    name : str
        Name of the system (progress bars).
    seed : int
        Seed of the per-utterance generators.
    **opts
        Keyword arguments of :meth:`MAGE.enhance` (``steps``,
        ``use_corrector``, ``strategy``, decoding options).

    Example
    -------
    >>> from speechbrain_gense.models.mage import MAGE
    >>> from speechbrain_gense.models.masked_enhancer import MaskedEnhancer, TINY_CONFIG
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> _ = torch.manual_seed(0)
    >>> mage = MAGE(DebugTokenizer(vocab_size=32), MaskedEnhancer(32, **TINY_CONFIG)).eval()
    >>> run = MageMethod(mage, "mage", seed=0, steps=2)
    >>> run(0.1 * torch.randn(8000), 8000).shape  # resampled to 16 kHz and back
    torch.Size([8000])
    >>> run.tokens[0].shape, run.index
    (torch.Size([80, 1]), 1)
    """

    def __init__(self, mage, name, seed=1234, **opts):
        self.mage, self.__name__, self.seed, self.opts = mage, name, seed, opts
        self.index = 0
        self.tokens, self.confidence = [], []

    def generator(self, index):
        """The generator of utterance ``index`` (CPU: the same draws on any device)."""
        return torch.Generator().manual_seed(stable_seed(self.seed, "mage", index))

    def enhance(self, wav, sample_rate, generator):
        """Enhances one ``[S]`` signal; returns ``(wav[S], MAGE.enhance output)``."""
        rate = self.mage.tokenizer.sample_rate
        x = wav.detach().reshape(1, -1).float()
        if sample_rate != rate:
            x = torchaudio.functional.resample(x, sample_rate, rate)
        out = self.mage.enhance(x.to(self.mage.device), generator=generator, **self.opts)
        y = out["wav"].float().cpu()
        if sample_rate != rate:
            y = torchaudio.functional.resample(y, rate, sample_rate)
        return fit_length_end(y[0], wav.shape[-1]).to(wav.dtype), out

    def warm_up(self, wav, sample_rate):
        """One untimed call that decodes with its own generator and is not counted."""
        self.enhance(wav, sample_rate, self.generator("warm-up"))

    def __call__(self, wav, sample_rate):
        generator = self.generator(self.index)
        self.index += 1
        y, out = self.enhance(wav, sample_rate, generator)
        self.tokens.append(out["tokens"][0].cpu())
        self.confidence.append(float(out["confidence"].float().mean()))
        return y


class TimedMethod:
    """Times a ``method(wav[S], sample_rate) -> wav[S]``, one utterance at a time.

    The first call runs the method once untimed (its ``warm_up`` when it has
    one) before the timed run; CUDA work is synchronised around each timed call.

    Arguments
    ---------
    method : callable
        The method (a baseline function, :class:`MageMethod` ...).
    name : str, optional
        Its name (progress bars); default ``method.__name__``.
    device : str or torch.device
        Device whose work is waited for.

    Example
    -------
    >>> run = TimedMethod(lambda wav, sr: 2 * wav, "double")
    >>> run(torch.ones(16000), 16000)[:2]
    tensor([2., 2.])
    >>> t = run.timing()
    >>> t["utterances"], t["audio_s"], t["rtf"] > 0
    (1, 1.0, True)
    """

    def __init__(self, method, name=None, device="cpu"):
        self.method = method
        self.__name__ = name or getattr(method, "__name__", "method")
        self.device = torch.device(device)
        self.utterances = 0
        self.audio_s = self.compute_s = 0.0
        self._warm = False

    def __call__(self, wav, sample_rate):
        if not self._warm:
            getattr(self.method, "warm_up", self.method)(wav, sample_rate)
            self._warm = True
        _sync(self.device)
        start = time.perf_counter()
        out = self.method(wav, sample_rate)
        _sync(self.device)
        self.compute_s += time.perf_counter() - start
        self.audio_s += wav.shape[-1] / sample_rate
        self.utterances += 1
        return out

    def timing(self):
        """Utterances, seconds of audio and compute, and the real-time factor ``rtf``."""
        audio = self.audio_s
        return {"utterances": self.utterances, "audio_s": round(audio, 3),
                "compute_s": self.compute_s,
                "rtf": self.compute_s / audio if audio > 0 else None}


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


def select_utterances(manifest, path, max_utts=None, seed=1234):
    """Writes the utterances to enhance (entries with a ``noisy_wav``) to ``path``.

    Arguments
    ---------
    manifest : str
        Source manifest (``noisy_wav``, ``clean_wav``, ``words``, ``snr``,
        ``degradation``).
    path : str
        Manifest to write (all fields kept, paths resolved).
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
    ...     "a": {"noisy_wav": "a.wav", "clean_wav": "c.wav", "snr": 3.0},
    ...     "b": {"noisy_wav": "b.wav"}, "c": {"noisy_wav": "c.wav"}})
    >>> list(select_utterances(os.path.join(root, "m.json"), os.path.join(root, "in.json")))
    ['a', 'b', 'c']
    >>> len(select_utterances(os.path.join(root, "m.json"), os.path.join(root, "in.json"), 2))
    2
    """
    return subset_manifest(manifest, path, "noisy_wav", max_utts, seed)


def check_model_names(names, reserved=(*BASELINE_ROWS, CODEC_ROW)):
    """Raises a one-line ``ValueError`` for a duplicate, reserved or unsafe model name.

    Example
    -------
    >>> check_model_names(["mage", "random_mask"])
    >>> check_model_names(["mage", "noisy"])
    Traceback (most recent call last):
    ...
    ValueError: the name 'noisy' is taken by another row: name the model, e.g. --model mynoisy=DIR
    """
    seen = set()
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"bad model name {name!r} (letters, digits, _ . + - only)")
        if name in reserved or name.startswith(CODEC_ROW + "-"):
            raise ValueError(f"the name {name!r} is taken by another row: name the model, "
                             f"e.g. --model my{name}=DIR")
        if name in seen:
            raise ValueError(f"two models named {name!r}: name them, e.g. --model {name}2=DIR")
        seen.add(name)


def plan_rows(models, variants=(("", {}),), decode_opts=None, reserved=()):
    """The MAGE rows to run: ``(rows, skipped)``.

    Arguments
    ---------
    models : sequence of (str, str, MAGE)
        ``(name, folder, model)``.
    variants : sequence of (str, dict)
        :func:`inference_variants`.
    decode_opts : dict, optional
        ``--decode-opt`` overrides.
    reserved : sequence of str
        Names taken by other rows.

    Returns
    -------
    rows : list of dict
        ``row`` (name), ``model``, ``folder``, ``mage``, ``variant`` (the
        :meth:`MAGE.enhance` options) and ``settings`` (see
        :func:`decoding_settings`).
    skipped : dict
        ``{row: reason}`` of the variants a model cannot run.

    Raises
    ------
    ValueError
        For a duplicate, reserved or unsafe model name.
    """
    check_model_names([name for name, _, _ in models], reserved)
    rows, skipped = [], {}
    for (name, folder, mage), (suffix, variant) in itertools.product(models, variants):
        row = f"{name}/{suffix}" if suffix else name
        settings, problem = decoding_settings(mage, variant, decode_opts)
        if problem:
            skipped[row] = problem
            logger.warning("%s: skipped (%s)", row, problem)
            continue
        rows.append({"row": row, "model": name, "folder": folder, "mage": mage,
                     "variant": variant, "settings": settings})
    return rows, skipped


def codec_rows(models):
    """One codec row per distinct tokenizer spec: ``[(row, tokenizer)]``.

    Named ``codec`` when every model uses the same tokenizer, else
    ``codec-<model>`` after the first model that uses it.
    """
    by_spec = {}
    for name, _, mage in models:
        spec = getattr(mage.tokenizer, "spec", None) or f"<{name}>"
        by_spec.setdefault(spec, (name, mage.tokenizer))
    if len(by_spec) == 1:
        return [(CODEC_ROW, tok) for _, tok in by_spec.values()]
    return [(f"{CODEC_ROW}-{name}", tok) for name, tok in by_spec.values()]


def run_mage_eval(manifest, out_dir, models=(), variants=(("", {}),), baselines=False,
                  codec=False, metrics=DEFAULT_METRICS, max_utts=None, seed=1234,
                  decode_opts=None, device="cpu", progress=True):
    """Enhances the test utterances with every system, scores them, times them.

    Arguments
    ---------
    manifest : str
        Test manifest (``noisy_wav``, ``clean_wav``, ``words``, ``snr``,
        ``degradation``); the metric ASR uses the ``asr_lm.arpa`` next to it
        when there is one.
    out_dir : str
        ``out_dir/<system>/{id}.wav`` (replaced on each run),
        ``mage_input.json``, ``mage_results.json`` and ``mage_table.md``.
    models : sequence of (str, str, MAGE)
        ``(name, folder, model)``, models in eval mode on ``device``.
    variants : sequence of (str, dict)
        Inference variants (:func:`inference_variants`).
    baselines : bool
        Add the :data:`BASELINE_ROWS`.
    codec : bool
        Add the codec resynthesis of the clean speech (:func:`codec_rows`).
    metrics : sequence of str
        Harness metrics (keys of :data:`~speechbrain_gense.metrics.METRICS`).
    max_utts : int, optional
        Use at most this many utterances (a seeded draw).
    seed : int
        Seed of that draw and of the decoding.
    decode_opts : dict, optional
        Overrides of the models' decoding options.
    device : str or torch.device
        Device of the models (for the timings).
    progress : bool
        Progress bars of the scoring.

    Returns
    -------
    results : dict
        ``manifest``, ``num_utterances``, ``metrics``, ``seed``, ``device``,
        ``torch_threads``, ``skipped`` (``{row: reason}``), ``systems``
        (``{name: {"kind", "timing", "rate", "quality", ...}}``, ``quality``
        being the :func:`evaluate_manifest` result) and ``summary``
        (``{name: flat row}``: :func:`~speechbrain_gense.codec_eval.summary_row`
        plus ``rtf``, ``model_calls`` and ``confidence``).
    table : str
        The markdown table (:func:`format_mage_table`).
    """
    from .metrics.evaluate import evaluate_manifest
    from .metrics.wer import asr_for_manifest

    codecs = codec_rows(models) if codec else []
    reserved = [*BASELINE_ROWS, CODEC_ROW, *(n for n, _ in codecs)]
    rows, skipped = plan_rows(models, variants, decode_opts, reserved)
    if not rows and not baselines and not codecs:
        raise ValueError("nothing to evaluate: every model variant was skipped")
    os.makedirs(out_dir, exist_ok=True)
    input_manifest = os.path.join(out_dir, INPUT_MANIFEST)
    entries = select_utterances(manifest, input_manifest, max_utts, seed)
    asr = asr_for_manifest(manifest) if "wer" in metrics else None
    systems = {}

    def run(name, method):
        _, failed = enhance_manifest(method, input_manifest, os.path.join(out_dir, name),
                                     overwrite=True)
        quality = evaluate_manifest(os.path.join(out_dir, name), input_manifest, metrics,
                                    asr=asr, progress=progress)
        # An input that could not be enhanced is reported with its own
        # error, not as a missing output.
        quality["failed"].update(dict(failed))
        return quality

    if baselines:
        for name in BASELINE_ROWS:
            timed = None if name in ("noisy", CLEAN) else TimedMethod(BASELINES[name], name)
            quality = run(name, timed or name)
            systems[name] = {"kind": "reference" if name == CLEAN else "baseline",
                             "rate": None, "timing": timed and timed.timing(),
                             "quality": quality}
    if codecs:
        codec_manifest = os.path.join(out_dir, CODEC_INPUT_MANIFEST)
        write_input_manifest(input_manifest, codec_manifest)
        for name, tokenizer in codecs:
            runner = TimedTokenizer(tokenizer, name)
            _, failed = enhance_manifest(runner, codec_manifest, os.path.join(out_dir, name),
                                         overwrite=True)
            # Scored against the test manifest: same references, with the
            # SNR and degradation of each utterance for the breakdowns.
            quality = evaluate_manifest(os.path.join(out_dir, name), input_manifest, metrics,
                                        asr=asr, progress=progress)
            quality["failed"].update(dict(failed))
            timing = runner.timing()
            audio = runner.audio_s
            timing["rtf"] = (runner.encode_s + runner.decode_s) / audio if audio > 0 else None
            systems[name] = {"kind": "codec", "spec": getattr(tokenizer, "spec", None),
                             "rate": token_statistics(tokenizer, runner.tokens),
                             "timing": timing, "quality": quality}
    for row in rows:
        mage = row["mage"]
        method = MageMethod(mage, row["row"], seed, **{**(decode_opts or {}), **row["variant"]})
        timed = TimedMethod(method, row["row"], device)
        quality = run(row["row"], timed)
        confidence = method.confidence
        systems[row["row"]] = {
            "kind": "mage", "model": row["model"], "folder": os.path.abspath(row["folder"]),
            "tokenizer": getattr(mage.tokenizer, "spec", None), "variant": row["variant"],
            "settings": row["settings"], "model_calls": row["settings"]["model_calls"],
            "confidence": sum(confidence) / len(confidence) if confidence else None,
            "rate": token_statistics(mage.tokenizer, method.tokens),
            "timing": timed.timing(), "quality": quality}

    summary = {}
    for name, system in systems.items():
        timing = system["timing"] or {}
        summary[name] = {**summary_row(system), "rtf": timing.get("rtf"),
                         "model_calls": system.get("model_calls"),
                         "confidence": system.get("confidence")}
    results = {"manifest": os.path.abspath(manifest), "num_utterances": len(entries),
               "metrics": list(metrics), "seed": seed, "device": str(device),
               "torch_threads": torch.get_num_threads(),
               "decode_opts": dict(decode_opts or {}),
               "asr": repr(asr) if asr is not None else None, "skipped": skipped,
               "summary": summary, "systems": systems}
    table = format_mage_table(results)
    with open(os.path.join(out_dir, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, TABLE_FILE), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return results, table


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def format_mage_table(results, breakdown=("ovrl", "pesq")):
    """The markdown table: one row per system, then the breakdowns.

    Columns: files, enhancer forward passes per utterance (``NFE``:
    decoding steps, plus the corrector's pass and steps), real-time factor, then the
    harness's score columns (same headers and decimals as
    :func:`~speechbrain_gense.metrics.evaluate.format_markdown`, WER in %).
    The breakdown tables (``breakdown`` columns by SNR band and by
    degradation) are those of ``format_markdown``.

    Example
    -------
    >>> quality = {"columns": ["pesq"], "num_files": 2, "num_scored": 2,
    ...            "overall": {"n": 2, "pesq": 2.0}, "by_snr": {"0-5": {"n": 2, "pesq": 2.0}},
    ...            "by_degradation": {"noise": {"n": 2, "pesq": 2.0}}}
    >>> res = {"systems": {"noisy": {"quality": quality}, "mage": {"quality": quality}},
    ...        "summary": {"noisy": {"files": 2, "failed": 0, "pesq": 1.5},
    ...                    "mage": {"files": 2, "failed": 0, "pesq": 2.3, "rtf": 0.0421,
    ...                             "model_calls": 11}}}
    >>> print(format_mage_table(res))
    | system | files | NFE | RTF | PESQ |
    |---|---:|---:|---:|---:|
    | noisy | 2 | – | – | 1.50 |
    | mage | 2 | 11 | 0.0421 | 2.30 |
    """
    from .metrics.evaluate import COLUMNS, _fmt, _table, format_markdown

    rows = results["summary"]
    present = {c for row in rows.values() for c in row}
    quality = [c for c in COLUMNS if c in present]
    lines = []
    for name, row in rows.items():
        calls, rtf = row.get("model_calls"), row.get("rtf")
        lines.append([
            name, str(row["files"]) + (f" ({row['failed']} failed)" if row["failed"] else ""),
            "–" if calls is None else str(calls), "–" if rtf is None else f"{rtf:.3g}",
            *(_fmt(row.get(c), c) for c in quality)])
    table = "\n".join(_table(["system", "files", "NFE", "RTF",
                              *(COLUMNS[c][0] for c in quality)], lines))
    # format_markdown's overall table is replaced by the one above; keep its breakdowns.
    qualities = {name: system["quality"] for name, system in results["systems"].items()}
    breakdowns = format_markdown(qualities, breakdown).partition("\n\n")[2]
    return table + ("\n\n" + breakdowns if breakdowns else "")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv=None):
    """``gense-mage-eval``: MAGE models, their ablations and the baselines in one table."""
    from .metrics import METRICS
    from .models.mage import MAGE

    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Enhances the noisy test utterances with each MAGE model (and each\n"
        "inference variant: the cross product of --steps, --corrector and --decode),\n"
        "optionally the classical baselines and the codec resynthesis of the clean speech,\n"
        "scores every system against the clean reference (DNSMOS, PESQ, ESTOI, SI-SDR,\n"
        "SECS, WER), measures its real-time factor and prints one table (with breakdowns\n"
        "by SNR band and degradation).",
        epilog="rows: MODEL (no variant option), or MODEL/steps=S/corrector=on|off/decode=D\n"
        "with the axes given. A variant a model cannot run (corrector=on without a\n"
        "corrector, decode=ctf without a token-frequency table) is skipped with a warning.\n"
        "examples:\n  gense-mage-eval --model mage=pretrained/mage --baselines --codec "
        "--out results/mage\n  gense-mage-eval --model mage=pretrained/mage --model "
        "random_mask=results/mage_random/model \\\n      --steps 1,4,8,16 --corrector on,off "
        "--decode ctf,confidence --out results/mage_ablation")
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                        help="a MAGE model folder (written by MAGE.save; repeatable); NAME "
                        "defaults to the folder name")
    parser.add_argument("--steps", help="comma-separated decoding steps, e.g. 1,4,8,16 "
                        "(default: each model's own)")
    parser.add_argument("--corrector", help="comma-separated on/off: decode with and/or "
                        "without the corrector (default: with it, when the model has one)")
    parser.add_argument("--decode", help="comma-separated decoding orders, from "
                        f"{','.join(STRATEGIES)} (default: ctf when the model has a "
                        "token-frequency table)")
    parser.add_argument("--decode-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="override a decoding option of every model (repeatable): "
                        "temperature, top_k, scarcity_weight, remask_ratio, "
                        "remask_threshold, corrector_steps, precision (fp32, bf16)")
    parser.add_argument("--baselines", action="store_true",
                        help="add the noisy, clean, rnnoise and spectral_gating rows")
    parser.add_argument("--codec", action="store_true",
                        help="add the resynthesis of the clean speech by the models' "
                        "tokenizer (the ceiling of a token model)")
    parser.add_argument("--corpus", default="corpus",
                        help="embedded corpus folder, built when missing (default: corpus)")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="corpus size when it is built (default 20)")
    parser.add_argument("--corpus-seed", type=int, default=1234,
                        help="seed of the corpus when it is built (default 1234)")
    parser.add_argument("--manifest", help="enhance the noisy_wav of this manifest instead "
                        "of the corpus test split")
    parser.add_argument("--max-utts", type=int, help="use at most this many utterances")
    parser.add_argument("--seed", type=int, default=1234,
                        help="seed of the decoding (and of --max-utts) (default 1234)")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, from {','.join(METRICS)} "
                        f"(default {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--device", default="cpu", help="device of the models (default cpu)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--out", default="results/mage", help="output folder "
                        "(default results/mage)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars of the scoring")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def usage_error(message):
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    if not args.model and not args.baselines:
        return usage_error("nothing to evaluate: give at least one --model or --baselines")
    if args.codec and not args.model:
        return usage_error("--codec resynthesises with the models' tokenizer: give a --model")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        return usage_error(f"unknown metric {unknown[0] if unknown else ''!r} "
                           f"(choose from {','.join(METRICS)})")
    try:
        variants = inference_variants(
            args.steps and parse_list(args.steps, _steps, "--steps"),
            args.corrector and parse_list(args.corrector, SWITCHES.__getitem__, "--corrector"),
            args.decode and parse_list(args.decode, _strategy, "--decode"))
        decode_opts = parse_decode_opts(args.decode_opt)
    except ValueError as e:
        return usage_error(e)
    if args.max_utts is not None and args.max_utts < 1:
        return usage_error(f"--max-utts must be >= 1, got {args.max_utts}")
    if args.threads is not None and args.threads < 1:
        return usage_error(f"--threads must be >= 1, got {args.threads}")
    if args.manifest and not os.path.isfile(args.manifest):
        return usage_error(f"{args.manifest}: no such manifest")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        return usage_error(f"bad --device {args.device!r} (e.g. cpu, cuda, cuda:1)")
    if device.type == "cuda" and not torch.cuda.is_available():
        return usage_error(f"--device {args.device}: CUDA is not available")

    # Check names and load every model first: a bad one fails before any long work.
    try:
        check_model_names([parse_model(arg)[0] for arg in args.model])
    except ValueError as e:
        return usage_error(e)
    models = []
    for arg in args.model:
        name, folder = parse_model(arg)
        try:
            mage = MAGE.load(folder, map_location=str(device)).to(device).eval()
        except Exception as e:  # noqa: BLE001 -- any loading failure is bad usage here
            return usage_error(f"--model {arg}: {_first_line(e)}")
        models.append((name, folder, mage))

    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        with logging_redirect_tqdm():
            manifest = args.manifest
            if manifest is None:
                from .data.corpus import build_corpus

                manifest = build_corpus(args.corpus, minutes=args.minutes,
                                        seed=args.corpus_seed, progress=not args.quiet)["test"]
            results, table = run_mage_eval(
                manifest, args.out, models, variants, args.baselines, args.codec, metrics,
                args.max_utts, args.seed, decode_opts, device, not args.quiet)
    except (ValueError, OSError, RuntimeError) as e:
        return usage_error(_first_line(e))
    finally:
        torch.set_num_threads(threads)
    print(f"\nMAGE evaluation on {manifest} ({results['num_utterances']} files, device "
          f"{results['device']}, torch threads {results['torch_threads']}, seed "
          f"{results['seed']}):\n")
    print(table)
    if results["skipped"]:
        print(f"\nskipped: {', '.join(results['skipped'])}")
    print(f"\nwritten: {os.path.join(args.out, TABLE_FILE)}, "
          f"{os.path.join(args.out, RESULTS_FILE)}")
    failed = sum(row["failed"] for row in results["summary"].values())
    if failed:
        print(f"{PROG}: {failed} files failed (see the errors above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
