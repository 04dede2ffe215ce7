"""One evaluation command for every method: ``gense-evaluate``.

Every noisy utterance of the test split (or of a manifest) is enhanced by
each *system* and written to ``OUT/<system>/{id}.wav`` (the input's rate and
length), then scored against the clean reference by the evaluation harness
(:func:`~speechbrain_gense.metrics.evaluate.evaluate_manifest`: DNSMOS
SIG/BAK/OVRL, PESQ, ESTOI, SI-SDR, SECS, WER ...).

Systems:

- Models: each ``--model NAME=DIR`` is a model folder loaded with
  :meth:`EnhanceGenerative.from_hparams <speechbrain_gense.inference.EnhanceGenerative.from_hparams>`,
  the path users run (chunking of long inputs, silence pass-through,
  resampling); any registered method works. ``--grid NAME=V1,V2`` adds an
  axis of a decoding option (``--grid steps=1,4,8 --grid corrector=on,off``);
  the rows of a model are the cross product of the axes, named
  ``MODEL/steps=8/corrector=on``, or just ``MODEL`` (its own settings)
  without ``--grid``. ``--decode-opt NAME=VALUE`` sets an option for every
  row. A row a model cannot run (an option its method does not declare,
  ``corrector=on`` without a corrector ...) is skipped with the model's own
  one-line reason. ``--grid guard=off,fallback`` (and ``guard_fallback=input,dfn3``)
  is an axis of the interface's content and voice guard (:mod:`speechbrain_gense.guard`),
  not a decoding option; its rows record how many chunks it flagged. Utterance ``i`` (in manifest order) is decoded with a
  generator seeded from ``(--seed, i)``, the same for every row.
  ``--draws N`` decodes every row N times (seeds ``--seed`` ... ``--seed + N - 1``,
  rows ``ROW/draw=1`` ...) and adds the mean ± standard deviation of each score
  over the draws: on a few dozen utterances a sampling decoder's dWER moves by
  several points with the seed alone.
- ``--baselines``: ``noisy`` (the input), ``clean`` (the reference against
  itself), RNNoise and spectral gating (:mod:`speechbrain_gense.baselines`).
- ``--codec``: the resynthesis of the *clean* speech by the models' output
  tokenizer (``codec``; ``codec-<model>`` when models use several): the
  ceiling of any model over these tokens.

Measured, not recomputed: ``NFE`` is the mean number of token-model calls
per utterance as the model reports them (all chunks together); ``RTF`` is
compute seconds / audio seconds (``time.perf_counter``, one utterance at a
time, after one untimed warm-up call; torch's thread count is left as it is
unless ``--threads``); ``confidence`` is the mean per-frame confidence.

Example::

    gense-evaluate --model mage=pretrained/mage --baselines --codec --out results/eval
    gense-evaluate --model mage=pretrained/mage --grid steps=1,4,8 --grid corrector=on,off \\
        --max-utts 20 --out results/eval_steps

writes ``OUT/results.json`` (everything, per utterance too, and a flat
``summary`` per system), ``OUT/table.md`` (the table printed: one row per
system, then the breakdowns by SNR band and degradation type) and
``OUT/input.json`` (the utterances used). Exit status: 0 when every file
was processed and scored, 1 when some failed (each on one line), 2 for bad
usage (missing model folder, unknown metric, bad grid ...).
"""

import argparse
import itertools
import json
import logging
import os
import sys
import time

import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from .baselines import BASELINES, CLEAN, enhance_manifest
from .commands import (
    NAME,
    UsageError,
    add_corpus_arguments,
    add_device_arguments,
    add_metric_argument,
    check_corpus_args,
    check_threads,
    exit_status,
    markdown_table,
    parse_assignment,
    parse_list,
    parse_metrics,
    parse_named,
    parse_value,
    resolve_device,
    resolve_manifest,
    sync,
    usage_error,
    write_results,
)
from .data.corpus import stable_seed
from .guard import GUARD_OPTIONS, make_guard
from .selection import SELECTION_OPTIONS, make_selector
from .data.manifest import subset_manifest, write_manifest  # noqa: F401 (doctests)
from .utils import first_line

logger = logging.getLogger(__name__)

PROG = "gense-evaluate"
#: Harness metrics scored by default (all but MCD).
DEFAULT_METRICS = ("dnsmos", "pesq", "estoi", "sisdr", "secs", "wer")
#: Rows added by ``--baselines``, in table order.
BASELINE_ROWS = ("noisy", CLEAN, "rnnoise", "spectral_gating", "dfn3")
#: Name of the codec-resynthesis row (``codec-<model>`` with several tokenizers).
CODEC_ROW = "codec"
#: Tag of the per-utterance seeds (``stable_seed(--seed, SEED_TAG, i)``): the one
#: ``gense-mage-eval`` used, so that a seed gives the audio of its published tables.
SEED_TAG = "mage"
INPUT_MANIFEST = "input.json"
CODEC_INPUT_MANIFEST = "codec_input.json"
RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"


# ---------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------


def parse_grid(items):
    """``--grid NAME=V1,V2`` axes: ``[(name, [(text, value), ...])]``.

    Values are parsed by :func:`~speechbrain_gense.commands.parse_value`
    (``on``/``off`` are booleans); the text is kept for the row names.

    Example
    -------
    >>> parse_grid(["steps=1,8", "corrector=on,off"])
    [('steps', [('1', 1), ('8', 8)]), ('corrector', [('on', True), ('off', False)])]
    >>> parse_grid(["steps=1", "steps=2"])
    Traceback (most recent call last):
    ...
    ValueError: --grid: axis 'steps' given twice
    """
    axes, seen = [], set()
    for item in items:
        name, text = parse_assignment(item, "--grid")
        if name in seen:
            raise ValueError(f"--grid: axis {name!r} given twice")
        seen.add(name)
        texts = parse_list(text, str, f"--grid {name}")
        axes.append((name, [(t, parse_value(t)) for t in texts]))
    return axes


def parse_decode_opts(items):
    """``--decode-opt NAME=VALUE`` items as a dict (values by ``parse_value``).

    Example
    -------
    >>> parse_decode_opts(["temperature=0.5", "top_k=none"])
    {'temperature': 0.5, 'top_k': None}
    """
    opts = {}
    for item in items:
        name, text = parse_assignment(item, "--decode-opt")
        opts[name] = parse_value(text)
    return opts


def grid_variants(axes=()):
    """Cross product of the grid axes: ``[(suffix, options)]``.

    Example
    -------
    >>> for suffix, opts in grid_variants(parse_grid(["steps=1,8", "corrector=on,off"])):
    ...     print(suffix, opts)
    steps=1/corrector=on {'steps': 1, 'corrector': True}
    steps=1/corrector=off {'steps': 1, 'corrector': False}
    steps=8/corrector=on {'steps': 8, 'corrector': True}
    steps=8/corrector=off {'steps': 8, 'corrector': False}
    >>> grid_variants()
    [('', {})]
    """
    labelled = [[(f"{name}={text}", name, value) for text, value in values]
                for name, values in axes]
    return [("/".join(label for label, _, _ in combo),
             {name: value for _, name, value in combo})
            for combo in itertools.product(*labelled)]


# ---------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------


def _own_cache(asr):
    """The metric's Whisper model with its own transcript cache (None for another ASR)."""
    from .metrics.wer import WhisperTranscriber

    if isinstance(asr, WhisperTranscriber):
        return WhisperTranscriber(model=asr.model, batch_size=asr.batch_size)
    return None


class InterfaceMethod:
    """A model behind :class:`~speechbrain_gense.inference.EnhanceGenerative` as a
    ``method(wav[S], sample_rate) -> wav[S]`` of
    :func:`~speechbrain_gense.baselines.enhance_manifest`.

    The ``i``-th call (utterance ``i`` in manifest order) decodes with a
    generator seeded from ``(seed, i)``; :meth:`warm_up` runs without being
    counted. The NFE the interface measured and the mean confidence of each
    utterance are kept.

    Arguments
    ---------
    enhancer : EnhanceGenerative
        The loaded model folder.
    name : str
        Name of the system.
    seed : int
        Seed of the per-utterance generators.
    **opts
        Decoding options of the calls.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.inference import EnhanceGenerative
    >>> from speechbrain_gense.models.debug import write_tiny_mage
    >>> enhancer = EnhanceGenerative.from_hparams(source=write_tiny_mage(tempfile.mkdtemp()))
    >>> run = InterfaceMethod(enhancer, "mage", seed=0, steps=2)
    >>> run(0.1 * torch.randn(8000), 8000).shape  # any rate in, the same rate out
    torch.Size([8000])
    >>> run.nfe, run.index  # 2 steps + the corrector's pass and step
    ([4], 1)
    """

    def __init__(self, enhancer, name, seed=1234, guard_asr=None, **opts):
        opts, guard_opts = split_guard_options(opts)
        self.enhancer, self.__name__, self.seed, self.opts = enhancer, name, seed, opts
        self.index = 0
        self.nfe, self.confidence = [], []
        #: The content and voice guard of the calls (``--grid guard=off,fallback``), or None.
        self.guard = make_guard(guard_opts.get("guard"), guard_opts.get("guard_fallback"),
                                getattr(enhancer, "guard_thresholds", None))
        # The metric's Whisper model, with one transcript cache of its own for the
        # guard and the selector.
        own = _own_cache(guard_asr)
        if self.guard is not None and own is not None:
            self.guard._asr = own
        self.guard_chunks = self.guard_flagged = 0
        #: Best of N (``--grid candidates=1,4``), or None; with the metric's Whisper
        #: model unless ``candidate_asr`` names another recogniser.
        self.selector = make_selector(guard_opts.get("candidates",
                                                     getattr(enhancer, "candidates", None)),
                                      guard_opts.get("candidate_asr") or own)

    def generator(self, index):
        """The generator of utterance ``index`` (CPU: the same draws on any device)."""
        return torch.Generator().manual_seed(stable_seed(self.seed, SEED_TAG, index))

    def enhance(self, wav, sample_rate, generator):
        """Enhances one ``[S]`` signal; returns ``(wav[S], confidence[T])``."""
        y, confidence = self.enhancer.enhance_batch(
            wav.detach().reshape(1, -1).float(), sample_rate=sample_rate, generator=generator,
            return_confidence=True, guard=self.guard, candidates=self.selector, **self.opts)
        return y[0].to(wav.dtype), confidence[0]

    def warm_up(self, wav, sample_rate):
        """One untimed call that decodes with its own generator and is not counted."""
        self.enhance(wav, sample_rate, self.generator("warm-up"))

    def __call__(self, wav, sample_rate):
        generator = self.generator(self.index)
        self.index += 1
        y, confidence = self.enhance(wav, sample_rate, generator)
        if self.guard is not None:
            scored = [r for r in self.enhancer.guard_report
                      if not r["reason"].startswith("silent")]
            self.guard_chunks += len(scored)
            self.guard_flagged += sum(bool(r["flagged"]) for r in scored)
        self.nfe.append(int(self.enhancer.nfe))
        if confidence.numel():
            self.confidence.append(float(confidence.float().mean()))
        return y


class TimedMethod:
    """Times a ``method(wav[S], sample_rate) -> wav[S]``, one utterance at a time.

    The first call runs the method once untimed (its ``warm_up`` when it has
    one) before the timed run; CUDA work is synchronised around each timed call.

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
        sync(self.device)
        start = time.perf_counter()
        out = self.method(wav, sample_rate)
        sync(self.device)
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


def load_models(args, device):
    """``[(name, folder, EnhanceGenerative)]`` of the ``--model`` arguments.

    Raises
    ------
    UsageError
        A bad name or a folder that does not load (one line).
    """
    from .inference import EnhanceGenerative

    named = [parse_named(arg) for arg in args]
    check_model_names([name for name, _ in named])
    models = []
    for arg, (name, folder) in zip(args, named):
        try:
            enhancer = EnhanceGenerative.from_hparams(source=folder,
                                                      run_opts={"device": str(device)})
        except Exception as e:  # noqa: BLE001 -- any loading failure is bad usage here
            raise UsageError(f"--model {arg}: {first_line(e)}") from None
        models.append((name, folder, enhancer))
    return models


def check_model_names(names, reserved=(*BASELINE_ROWS, CODEC_ROW)):
    """Raises a one-line ``UsageError`` for a duplicate, reserved or unsafe model name.

    Example
    -------
    >>> check_model_names(["mage", "random_mask"])
    >>> check_model_names(["mage", "noisy"])
    Traceback (most recent call last):
    ...
    speechbrain_gense.commands.UsageError: the name 'noisy' is taken by another row: name the model, e.g. --model mynoisy=DIR
    """
    seen = set()
    for name in names:
        if not NAME.match(name):
            raise UsageError(f"bad model name {name!r} (letters, digits, _ . + - only)")
        if name in reserved or name.startswith(CODEC_ROW + "-"):
            raise UsageError(f"the name {name!r} is taken by another row: name the model, "
                             f"e.g. --model my{name}=DIR")
        if name in seen:
            raise UsageError(f"two models named {name!r}: name them, e.g. --model {name}2=DIR")
        seen.add(name)


def split_guard_options(opts):
    """``(decoding options, interface options)``: the guard's keys
    (:data:`~speechbrain_gense.guard.GUARD_OPTIONS`) and best of N's
    (:data:`~speechbrain_gense.selection.SELECTION_OPTIONS`) are options of the
    interface, not of the model.

    Example
    -------
    >>> split_guard_options({"steps": 4, "guard": "fallback", "candidates": 4})
    ({'steps': 4}, {'guard': 'fallback', 'candidates': 4})
    """
    opts = dict(opts)
    return opts, {k: opts.pop(k) for k in GUARD_OPTIONS + SELECTION_OPTIONS if k in opts}


def _probe(enhancer, opts):
    """Why ``enhancer`` cannot decode with ``opts`` (a one-line reason), or None.

    Checks the option names, then decodes a quarter second of faint noise.
    """
    opts, guard_opts = split_guard_options(opts)
    try:
        make_guard(guard_opts.get("guard"), guard_opts.get("guard_fallback"))
        make_selector(guard_opts.get("candidates"), guard_opts.get("candidate_asr"))
        enhancer.model.decode_options(**{**enhancer.decode_opts, **opts})
        probe = 0.01 * torch.randn(1, enhancer.sample_rate // 4,
                                   generator=torch.Generator().manual_seed(0))
        enhancer.enhance_batch(probe, seed=0, **opts)
    except ValueError as e:
        return first_line(e)
    return None


def plan_rows(models, variants=(("", {}),), decode_opts=None):
    """The model rows to run: ``(rows, skipped)``.

    Returns
    -------
    rows : list of dict
        ``row``, ``model``, ``folder``, ``enhancer``, ``variant`` (its grid
        options), ``opts`` (the options of the calls) and ``settings`` (every
        decoding option as the model resolves it).
    skipped : dict
        ``{row: reason}`` of the rows a model cannot run.
    """
    rows, skipped = [], {}
    for (name, folder, enhancer), (suffix, variant) in itertools.product(models, variants):
        row = f"{name}/{suffix}" if suffix else name
        opts = {**(decode_opts or {}), **variant}
        problem = _probe(enhancer, opts)
        if problem:
            skipped[row] = problem
            logger.warning("%s: skipped (%s)", row, problem)
            continue
        decode, _ = split_guard_options(opts)
        settings = enhancer.model.decode_options(**{**enhancer.decode_opts, **decode})
        rows.append({"row": row, "model": name, "folder": folder, "enhancer": enhancer,
                     "variant": variant, "opts": opts, "settings": settings})
    return rows, skipped


def codec_rows(models):
    """One codec row per distinct output tokenizer: ``[(row, tokenizer)]``.

    Named ``codec`` when every model uses the same one, else ``codec-<model>``
    after the first model that uses it.
    """
    by_spec = {}
    for name, _, enhancer in models:
        tokenizer = enhancer.model.output_tokenizer
        spec = getattr(tokenizer, "spec", None) or f"<{name}>"
        by_spec.setdefault(spec, (name, tokenizer))
    if len(by_spec) == 1:
        return [(CODEC_ROW, tok) for _, tok in by_spec.values()]
    return [(f"{CODEC_ROW}-{name}", tok) for name, tok in by_spec.values()]


def _mean(values):
    return sum(values) / len(values) if values else None


def baseline_names(baselines):
    """The baseline rows of ``baselines`` in table order: all of :data:`BASELINE_ROWS`
    (``True`` or ``"all"``), none (``False``/``None``), or the names given (a sequence or a
    comma-separated string).

    Example
    -------
    >>> baseline_names(True)
    ('noisy', 'clean', 'rnnoise', 'spectral_gating', 'dfn3')
    >>> baseline_names("clean,noisy"), baseline_names(None)
    (('noisy', 'clean'), ())
    >>> baseline_names("noisy,rnoise")
    Traceback (most recent call last):
    ...
    ValueError: unknown baseline 'rnoise' (have: noisy, clean, rnnoise, spectral_gating, dfn3)
    """
    if baselines is True or baselines == "all":
        return BASELINE_ROWS
    if not baselines:
        return ()
    names = baselines.split(",") if isinstance(baselines, str) else list(baselines)
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if name not in BASELINE_ROWS:
            raise ValueError(f"unknown baseline {name!r} (have: {', '.join(BASELINE_ROWS)})")
    return tuple(n for n in BASELINE_ROWS if n in names)


def run_evaluation(manifest, out_dir, models=(), variants=(("", {}),), baselines=False,
                   codec=False, metrics=DEFAULT_METRICS, max_utts=None, seed=1234,
                   decode_opts=None, device="cpu", progress=True, asr=None, draws=1):
    """Enhances the test utterances with every system, scores and times them.

    Arguments
    ---------
    manifest : str
        Test manifest (``noisy_wav``, ``clean_wav``, ``words``, ``snr``,
        ``degradation``).
    out_dir : str
        ``out_dir/<system>/{id}.wav`` (replaced on each run), ``input.json``,
        ``results.json`` and ``table.md``.
    models : sequence of (str, str, EnhanceGenerative)
        ``(name, folder, enhancer)`` (:func:`load_models`).
    variants : sequence of (str, dict)
        :func:`grid_variants`.
    baselines : bool or sequence of str
        Add the :data:`BASELINE_ROWS` (True), or those named (e.g. ``("noisy",)``).
    codec : bool
        Add the codec resynthesis (:func:`codec_rows`).
    metrics : sequence of str
        Harness metrics.
    max_utts : int, optional
        Use at most this many utterances (a seeded draw).
    seed : int
        Seed of that draw and of the decoding.
    decode_opts : dict, optional
        Decoding options of every model row.
    device : str or torch.device
        Device of the models (for the timings).
    progress : bool
        Progress bars of the scoring.
    asr : str, optional
        ASR of the WER metrics (``"whisper"``, ``"pocketsphinx"``; default:
        :func:`~speechbrain_gense.metrics.wer.asr_for_manifest`'s).
    draws : int
        Decode every model row this many times, draw ``d`` (0-based) with
        the seed ``seed + d`` (rows ``ROW/draw=1`` ... ``ROW/draw=N``; one
        draw keeps the name ``ROW``), and report the mean and standard
        deviation of each score over the draws (:func:`draw_statistics`):
        a sampling decoder's scores on a few dozen utterances move with
        the seed.

    Returns
    -------
    results : dict
        ``manifest``, ``num_utterances``, ``metrics``, ``seed``, ``device``,
        ``torch_threads``, ``skipped``, ``systems``, ``summary``
        (``{name: flat row}`` with ``nfe``, ``rtf`` and ``confidence``) and,
        with several draws, ``draws`` (``{row: statistics}``).
    table : str
        The markdown table (:func:`format_table`).
    """
    from .codec_eval import TimedTokenizer, summary_row, token_statistics, write_input_manifest
    from .metrics.evaluate import evaluate_manifest
    from .metrics.wer import asr_for_manifest

    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    draws = int(draws)
    baselines = baseline_names(baselines)
    codecs = codec_rows(models) if codec else []
    check_model_names([name for name, _, _ in models],
                      [*BASELINE_ROWS, CODEC_ROW, *(n for n, _ in codecs)])
    rows, skipped = plan_rows(models, variants, decode_opts)
    if not rows and not baselines and not codecs:
        raise ValueError("nothing to evaluate: every model row was skipped "
                         f"({'; '.join(f'{k}: {v}' for k, v in skipped.items())})")
    os.makedirs(out_dir, exist_ok=True)
    input_manifest = os.path.join(out_dir, INPUT_MANIFEST)
    entries = subset_manifest(manifest, input_manifest, "noisy_wav", max_utts, seed)
    asr = asr_for_manifest(manifest, asr) if {"wer", "dwer"} & set(metrics) else None
    systems = {}

    def run(name, method, manifest_in=input_manifest):
        _, failed = enhance_manifest(method, manifest_in, os.path.join(out_dir, name),
                                     overwrite=True)
        quality = evaluate_manifest(os.path.join(out_dir, name), input_manifest, metrics,
                                    asr=asr, progress=progress)
        quality["failed"].update(dict(failed))  # the enhancement's own error, not "missing"
        return quality

    if baselines:
        from .baselines import _dfn3_library

        if "dfn3" in baselines:
            _dfn3_library()  # dfn3 without its package: one clear error before any work
        for name in baselines:
            timed = None if name in ("noisy", CLEAN) else TimedMethod(BASELINES[name], name)
            systems[name] = {"kind": "reference" if name == CLEAN else "baseline",
                             "rate": None, "quality": run(name, timed or name),
                             "timing": timed and timed.timing()}
    if codecs:
        codec_manifest = os.path.join(out_dir, CODEC_INPUT_MANIFEST)
        write_input_manifest(input_manifest, codec_manifest)
        for name, tokenizer in codecs:
            runner = TimedTokenizer(tokenizer, name)
            quality = run(name, runner, codec_manifest)
            timing = runner.timing()
            audio = runner.audio_s
            timing["rtf"] = (runner.encode_s + runner.decode_s) / audio if audio > 0 else None
            systems[name] = {"kind": "codec", "spec": getattr(tokenizer, "spec", None),
                             "rate": token_statistics(tokenizer, runner.tokens),
                             "timing": timing, "quality": quality}
    drawn = {}
    for row, draw in itertools.product(rows, range(draws)):
        enhancer = row["enhancer"]
        name = row["row"] if draws == 1 else f"{row['row']}/draw={draw + 1}"
        drawn.setdefault(row["row"], []).append(name)
        method = InterfaceMethod(enhancer, name, seed + draw,
                                 guard_asr=asr,
                                 **row["opts"])
        timed = TimedMethod(method, name, device)
        quality = run(name, timed)
        systems[name] = {
            "kind": "model", "method": enhancer.hparams.method, "model": row["model"],
            "folder": os.path.abspath(row["folder"]),
            "tokenizer": getattr(enhancer.model.output_tokenizer, "spec", None),
            "variant": row["variant"], "settings": row["settings"], "seed": seed + draw,
            "nfe": _mean(method.nfe), "confidence": _mean(method.confidence),
            "rate": None, "timing": timed.timing(), "quality": quality}
        if method.guard is not None:
            systems[name]["guard"] = {"mode": method.guard.mode,
                                      "fallback": method.guard.fallback,
                                      "chunks": method.guard_chunks,
                                      "flagged": method.guard_flagged}

    summary = {}
    for name, system in systems.items():
        timing = system["timing"] or {}
        summary[name] = {**summary_row(system), "rtf": timing.get("rtf"),
                         "nfe": system.get("nfe"), "confidence": system.get("confidence")}
    results = {"manifest": os.path.abspath(manifest), "num_utterances": len(entries),
               "metrics": list(metrics), "seed": seed, "device": str(device),
               "torch_threads": torch.get_num_threads(), "decode_opts": dict(decode_opts or {}),
               "asr": repr(asr) if asr is not None else None, "skipped": skipped,
               "summary": summary, "systems": systems}
    if draws > 1:
        results["draws"] = {row: draw_statistics([summary[n] for n in names], seed)
                            for row, names in drawn.items()}
    table = format_table(results)
    write_results(out_dir, results, table, RESULTS_FILE, TABLE_FILE)
    return results, table


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


#: Summary keys that are not scores (left out of :func:`draw_statistics`).
_NOT_SCORES = ("kind", "files", "failed")


def draw_statistics(rows, seed):
    """Mean and sample standard deviation of each score over a row's draws.

    Arguments
    ---------
    rows : list of dict
        The draws' flat summary rows, in draw order.
    seed : int
        Seed of the first draw (draw ``d`` used ``seed + d``).

    Returns
    -------
    dict
        ``draws``, ``seeds``, ``files`` (of the first draw), and per score
        key ``{"mean", "sd", "values"}`` (keys that are None in some draw
        are left out; ``sd`` is 0 for one draw).

    Example
    -------
    >>> st = draw_statistics([{"files": 3, "dwer": 0.6, "ovrl": 2.0},
    ...                       {"files": 3, "dwer": 0.7, "ovrl": 2.2}], seed=10)
    >>> st["seeds"], round(st["dwer"]["mean"], 3), round(st["dwer"]["sd"], 4)
    ([10, 11], 0.65, 0.0707)
    """
    import statistics

    out = {"draws": len(rows), "seeds": [seed + d for d in range(len(rows))],
           "files": rows[0].get("files")}
    for key in rows[0]:
        values = [row.get(key) for row in rows]
        if key in _NOT_SCORES or any(not isinstance(v, (int, float)) or isinstance(v, bool)
                                     for v in values):
            continue
        out[key] = {"mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return out


def format_draws(draws):
    """The ``mean ± sd`` table of :func:`draw_statistics` results (``{row: stats}``).

    Example
    -------
    >>> st = draw_statistics([{"files": 3, "dwer": 0.6, "ovrl": 2.0},
    ...                       {"files": 3, "dwer": 0.7, "ovrl": 2.2}], seed=10)
    >>> print(format_draws({"mage": st}))
    | system | draws | seeds | OVRL | dWER (%) |
    |---|---:|---:|---:|---:|
    | mage | 2 | 10–11 | 2.10 ± 0.14 | 65.0 ± 7.1 |
    """
    from .metrics.evaluate import COLUMNS, _fmt

    present = {k for st in draws.values() for k in st}
    cols = [c for c in COLUMNS if c in present and c not in ("nfe", "rtf")]
    lines = []
    for name, st in draws.items():
        seeds = st["seeds"]
        cells = []
        for c in cols:
            v = st.get(c)
            cells.append("–" if v is None else f"{_fmt(v['mean'], c)} ± {_fmt(v['sd'], c)}")
        lines.append([name, str(st["draws"]), f"{seeds[0]}–{seeds[-1]}", *cells])
    return markdown_table(["system", "draws", "seeds", *(COLUMNS[c][0] for c in cols)], lines)


def format_table(results, breakdown=("ovrl", "pesq", "dwer")):
    """The markdown table: one row per system, then the breakdowns.

    Columns: files, ``NFE`` (token-model calls per utterance, as measured),
    ``RTF``, then the harness's score columns (same headers and decimals as
    :func:`~speechbrain_gense.metrics.evaluate.format_markdown`, WER in %).
    The breakdown tables (``breakdown`` columns by SNR band, degradation and
    speaker; dWER only when scored) are those of ``format_markdown``.

    Example
    -------
    >>> quality = {"columns": ["pesq"], "num_files": 2, "num_scored": 2,
    ...            "overall": {"n": 2, "pesq": 2.0}, "by_snr": {"0-5": {"n": 2, "pesq": 2.0}},
    ...            "by_degradation": {"noise": {"n": 2, "pesq": 2.0}}}
    >>> res = {"systems": {"noisy": {"quality": quality}, "mage": {"quality": quality}},
    ...        "summary": {"noisy": {"files": 2, "failed": 0, "pesq": 1.5},
    ...                    "mage": {"files": 2, "failed": 0, "pesq": 2.3, "rtf": 0.0421,
    ...                             "nfe": 11.0}}}
    >>> print(format_table(res).split("\\n\\n")[0])
    | system | files | NFE | RTF | PESQ |
    |---|---:|---:|---:|---:|
    | noisy | 2 | – | – | 1.50 |
    | mage | 2 | 11 | 0.0421 | 2.30 |
    """
    from .metrics.evaluate import COLUMNS, _fmt, format_markdown

    rows = results["summary"]
    present = {c for row in rows.values() for c in row}
    quality = [c for c in COLUMNS if c in present and c not in ("nfe", "rtf")]  # own columns
    lines = []
    for name, row in rows.items():
        nfe, rtf = row.get("nfe"), row.get("rtf")
        lines.append([
            name, str(row["files"]) + (f" ({row['failed']} failed)" if row["failed"] else ""),
            "–" if nfe is None else f"{nfe:.3g}", "–" if rtf is None else f"{rtf:.3g}",
            *(_fmt(row.get(c), c) for c in quality)])
    table = markdown_table(["system", "files", "NFE", "RTF", *(COLUMNS[c][0] for c in quality)],
                           lines)
    # format_markdown's overall table is replaced by the one above; keep its breakdowns.
    qualities = {name: system["quality"] for name, system in results["systems"].items()}
    breakdowns = format_markdown(qualities, breakdown).partition("\n\n")[2]
    if results.get("draws"):
        table += ("\n\n**Mean ± standard deviation over the decoding draws** (each draw "
                  "decodes every utterance with its own seed)\n\n" + format_draws(results["draws"]))
    return table + ("\n\n" + breakdowns if breakdowns else "")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def build_parser(prog=PROG):
    """The argument parser of ``gense-evaluate``."""
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Enhances the noisy test utterances with each model folder (through\n"
        "EnhanceGenerative.from_hparams, any registered method) and each --grid variant,\n"
        "optionally the classical baselines and the codec resynthesis of the clean speech,\n"
        "scores every system against the clean reference, measures its NFE and real-time\n"
        "factor and prints one table (with breakdowns by SNR band and degradation).",
        epilog="rows: MODEL, or MODEL/NAME=VALUE/... with the --grid axes. A row a model\n"
        "cannot run is skipped with the model's reason.\nexamples:\n"
        "  gense-evaluate --model mage=pretrained/mage --baselines --codec --out results/eval\n"
        "  gense-evaluate --model mage=pretrained/mage --grid steps=1,4,8 "
        "--grid corrector=on,off --out results/eval_steps")
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]DIR",
                        help="a model folder with inference.yaml (repeatable); NAME defaults "
                        "to the folder name")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="an axis of decoding-option values (repeatable): rows are the "
                        "cross product, e.g. steps=1,4,8 or corrector=on,off")
    parser.add_argument("--decode-opt", action="append", default=[], metavar="NAME=VALUE",
                        help="a decoding option of every model row (repeatable)")
    parser.add_argument("--baselines", nargs="?", const="all", default=None, metavar="NAMES",
                        help="add the noisy, clean, rnnoise, spectral_gating and dfn3 rows, or "
                        "only those named, e.g. --baselines noisy,clean")
    parser.add_argument("--codec", action="store_true",
                        help="add the resynthesis of the clean speech by the models' output "
                        "tokenizer (the ceiling of a token model)")
    add_corpus_arguments(parser)
    parser.add_argument("--seed", type=int, default=1234,
                        help="seed of the decoding (and of --max-utts) (default 1234)")
    parser.add_argument("--draws", type=int, default=1, metavar="N",
                        help="decode every model row N times, with the seeds SEED ... "
                        "SEED+N-1 (rows ROW/draw=1 ... ROW/draw=N), and add the mean and "
                        "standard deviation of each score over the draws (default 1)")
    add_metric_argument(parser, DEFAULT_METRICS)
    parser.add_argument("--asr", help="ASR of wer/dwer: whisper or pocketsphinx (default: the "
                        "metrics' default)")
    add_device_arguments(parser)
    parser.add_argument("--out", default="results/eval", help="output folder (default "
                        "results/eval)")
    parser.add_argument("--training-log", action="append", default=[],
                        metavar="NAME=TRAIN_LOG",
                        help="plot an enhancer recipe's train_log.txt (validation loss, "
                        "masked-token accuracy and DNSMOS OVRL per epoch; every run in one "
                        "figure) to OUT/training_curves.png (repeatable; alone, only the plot)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars of the scoring")
    return parser


#: Validation values of an enhancer's ``train_log.txt`` plotted by ``--training-log``.
CURVE_KEYS = (("valid_loss", "validation loss"), ("valid_acc", "masked-token accuracy"),
              ("valid_ovrl", "DNSMOS OVRL (decoded)"))


def plot_enhancer_curves(curves, path):
    """Validation curves of enhancer runs (``{name: points}``, see
    :func:`~speechbrain_gense.codec_eval.read_training_log`) against epochs, one PNG.

    Example
    -------
    >>> import tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> points = [{"epoch": 1, "valid_loss": 6.5, "valid_acc": 0.02, "valid_ovrl": 1.6},
    ...           {"epoch": 2, "valid_loss": 6.1, "valid_acc": 0.05}]
    >>> os.path.getsize(plot_enhancer_curves({"a": points}, out)) > 0
    True
    """
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(4 * len(CURVE_KEYS), 3.4))
    for ax, (key, label) in zip(axes, CURVE_KEYS):
        for name, points in curves.items():
            ax.plot([p["epoch"] for p in points], [p.get(key, math.nan) for p in points],
                    marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_training_curves(items, out_dir):
    """``--training-log`` values -> ``OUT/training_curves.png`` and ``.json`` (their points).

    Raises
    ------
    UsageError
        For a malformed value, a missing file or a log without epochs.
    """
    from .codec_eval import parse_training_log_arg, read_training_log

    curves = {}
    for item in items:
        try:
            name, log, _ = parse_training_log_arg(item)
        except ValueError as err:
            raise UsageError(str(err)) from None
        curves[name] = read_training_log(log, 1)
        if not curves[name]:
            raise UsageError(f"{log}: no epoch lines (not a recipe's train_log.txt?)")
    png = plot_enhancer_curves(curves, os.path.join(out_dir, "training_curves.png"))
    with open(os.path.join(out_dir, "training_curves.json"), "w") as f:
        json.dump(curves, f, indent=1)
    return png


def main(argv=None, prog=PROG):
    """``gense-evaluate``: models of any method, their grid and the baselines in one table."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.training_log:
            print(f"training curves: {write_training_curves(args.training_log, args.out)}")
            if not args.model and not args.baselines:
                return 0
        if not args.model and not args.baselines:
            raise UsageError("nothing to evaluate: give at least one --model, --baselines "
                             "or --training-log")
        if args.codec and not args.model:
            raise UsageError("--codec resynthesises with the models' tokenizer: give a --model")
        metrics = parse_metrics(args.metrics)
        try:
            args.baselines = baseline_names(args.baselines)
            variants = grid_variants(parse_grid(args.grid))
            decode_opts = parse_decode_opts(args.decode_opt)
        except ValueError as e:
            raise UsageError(first_line(e)) from None
        check_corpus_args(args)
        check_threads(args.threads)
        if args.draws < 1:
            raise UsageError(f"--draws must be >= 1, got {args.draws}")
        device = resolve_device(args.device)
        models = load_models(args.model, device)  # a bad folder fails before any long work
    except UsageError as e:
        return usage_error(prog, e)

    threads = torch.get_num_threads()
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        with logging_redirect_tqdm():
            manifest = resolve_manifest(args, progress=not args.quiet)
            results, table = run_evaluation(
                manifest, args.out, models, variants, args.baselines, args.codec, metrics,
                args.max_utts, args.seed, decode_opts, device, not args.quiet, args.asr,
                args.draws)
    except (ValueError, OSError, RuntimeError) as e:
        return usage_error(prog, e)
    finally:
        torch.set_num_threads(threads)
    print(f"\nEvaluation on {manifest} ({results['num_utterances']} files, device "
          f"{results['device']}, torch threads {results['torch_threads']}, seed "
          f"{results['seed']}):\n")
    print(table)
    if results["skipped"]:
        print("\nskipped: " + "; ".join(f"{k} ({v})" for k, v in results["skipped"].items()))
    print(f"\nwritten: {os.path.join(args.out, TABLE_FILE)}, "
          f"{os.path.join(args.out, RESULTS_FILE)}")
    return exit_status(prog, sum(row["failed"] for row in results["summary"].values()))


if __name__ == "__main__":
    sys.exit(main())
