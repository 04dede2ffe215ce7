"""Evaluation metrics for speech enhancement, as SpeechBrain ``MetricStats``.

Families (one module each; all work on 1-D signals at 16 kHz):

- :mod:`.dnsmos`: DNSMOS P.835 SIG/BAK/OVRL and P.808 (reference-free);
- :mod:`.intrusive`: PESQ-WB, ESTOI, SI-SDR, MCD (need the clean reference);
- :mod:`.speaker`: SECS, Resemblyzer speaker similarity to the reference;
- :mod:`.wer`: WER of an ASR against the true words and dWER against the ASR's
  transcript of the clean reference (Whisper tiny.en by default, pocketsphinx
  or any SpeechBrain ASR as options).

:data:`METRICS` maps a family name to its 1-D function, what it needs and
the score columns it gives; :data:`BATCH_METRICS` maps each column to its
batch form ``metric(predict[B, S], target, lengths[B]) -> Tensor[B]``, and
:func:`make_metric_stats` wraps them in ``MetricStats`` objects for a Brain.
:mod:`.evaluate` scores folders of enhanced files (``gense-eval``).

A signal that cannot be scored (silent, too short) gets NaN and a
:class:`MetricWarning`, never an exception.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from speechbrain.utils.metric_stats import MetricStats as _MetricStats

from .common import SAMPLE_RATE, MetricWarning, batchify
from .dnsmos import DNSMOS_KEYS, dnsmos, dnsmos_batch
from .intrusive import (
    estoi,
    estoi_batch,
    mcd,
    mcd_batch,
    mel_cepstrum,
    pesq_batch,
    pesq_wb,
    sisdr,
    sisdr_batch,
)
from .speaker import secs, secs_batch, speaker_embedding
from .wer import (
    ASR,
    DEFAULT_ASR,
    PocketsphinxASR,
    SpeechBrainASR,
    WhisperTranscriber,
    corpus_wer,
    dwer,
    dwer_batch,
    make_asr,
    normalize_text,
    wer,
    wer_batch,
    word_errors,
)


@dataclass(frozen=True)
class Metric:
    """An entry of :data:`METRICS`.

    Arguments
    ---------
    fn : callable
        1-D function: ``fn(estimate)``, ``fn(estimate, reference)`` or
        ``fn(estimate, words, asr)``; returns a float, or a dict of columns.
    needs : str or None
        ``"reference"`` (clean signal), ``"words"`` (transcript) or None.
    columns : tuple of str
        Names of the scores it gives.
    """

    fn: Callable
    needs: str | None
    columns: tuple[str, ...]


METRICS = {
    "dnsmos": Metric(dnsmos, None, DNSMOS_KEYS),
    "pesq": Metric(pesq_wb, "reference", ("pesq",)),
    "estoi": Metric(estoi, "reference", ("estoi",)),
    "sisdr": Metric(sisdr, "reference", ("sisdr",)),
    "secs": Metric(secs, "reference", ("secs",)),
    "wer": Metric(wer, "words", ("wer",)),
    "dwer": Metric(dwer, "reference", ("dwer",)),
    "mcd": Metric(mcd, "reference", ("mcd",)),
}

BATCH_METRICS = {
    **{key: partial(dnsmos_batch, key=key) for key in DNSMOS_KEYS},
    "pesq": pesq_batch,
    "estoi": estoi_batch,
    "sisdr": sisdr_batch,
    "secs": secs_batch,
    "wer": wer_batch,
    "dwer": dwer_batch,
    "mcd": mcd_batch,
}


class MetricStats(_MetricStats):
    """SpeechBrain's ``MetricStats`` with a summary that skips NaN scores.

    The summary also gives ``nan_count``, the number of signals that could
    not be scored.

    Example
    -------
    >>> import torch, warnings
    >>> stats = MetricStats(metric=sisdr_batch)
    >>> x = torch.randn(2, 8000)
    >>> with warnings.catch_warnings(record=True):  # b: silent reference
    ...     stats.append(["a", "b"], x, x * torch.tensor([[1.0], [0.0]]))
    >>> stats.summarize("nan_count"), stats.summarize("max_id")
    (1, 'a')
    """

    def summarize(self, field=None):
        """Average, min and max of the finite scores, and their ids."""
        finite = [(float(s), i) for s, i in zip(self.scores, self.ids) if math.isfinite(s)]
        if finite:
            (low, low_id), (high, high_id) = min(finite), max(finite)
            average = sum(s for s, _ in finite) / len(finite)
        else:
            low = high = average = math.nan
            low_id = high_id = None
        self.summary = {
            "average": average, "min_score": low, "min_id": low_id,
            "max_score": high, "max_id": high_id,
            "nan_count": len(self.scores) - len(finite),
        }
        return self.summary if field is None else self.summary[field]


def make_metric_stats(names=("ovrl", "pesq", "estoi", "sisdr"), n_jobs=1):
    """Builds one :class:`MetricStats` per score column.

    Arguments
    ---------
    names : sequence of str
        Columns of :data:`BATCH_METRICS` (``ovrl``, ``sig``, ``bak``,
        ``p808``, ``pesq``, ``estoi``, ``sisdr``, ``secs``, ``wer``,
        ``dwer``, ``mcd``); ``"dnsmos"`` stands for ``"ovrl"``.
    n_jobs : int
        Passed to ``MetricStats`` (batch evaluation is used).

    Returns
    -------
    dict
        ``{name: MetricStats}``; call ``stats.append(ids, predict, target,
        lengths)`` (for ``wer``, ``target`` is the list of transcripts).

    Example
    -------
    >>> import torch
    >>> stats = make_metric_stats(["sisdr"])
    >>> x = torch.randn(2, 16000)
    >>> stats["sisdr"].append(["a", "b"], x, x, torch.tensor([1.0, 0.5]))
    >>> stats["sisdr"].summarize("average")
    100.0
    """
    stats = {}
    for name in names:
        column = "ovrl" if name == "dnsmos" else name
        if column not in BATCH_METRICS:
            raise ValueError(f"unknown metric {name!r} (choose from {', '.join(BATCH_METRICS)})")
        stats[name] = MetricStats(metric=BATCH_METRICS[column], n_jobs=n_jobs)
    return stats


__all__ = [
    "ASR",
    "BATCH_METRICS",
    "DEFAULT_ASR",
    "DNSMOS_KEYS",
    "METRICS",
    "SAMPLE_RATE",
    "Metric",
    "MetricStats",
    "MetricWarning",
    "PocketsphinxASR",
    "SpeechBrainASR",
    "WhisperTranscriber",
    "batchify",
    "corpus_wer",
    "dnsmos",
    "dnsmos_batch",
    "dwer",
    "dwer_batch",
    "estoi",
    "estoi_batch",
    "make_asr",
    "make_metric_stats",
    "mcd",
    "mcd_batch",
    "mel_cepstrum",
    "normalize_text",
    "pesq_batch",
    "pesq_wb",
    "secs",
    "secs_batch",
    "sisdr",
    "sisdr_batch",
    "speaker_embedding",
    "wer",
    "wer_batch",
    "word_errors",
]
