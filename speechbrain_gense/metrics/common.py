"""Helpers shared by the metric modules: signal checks and batch forms.

Every metric works on 1-D signals at :data:`SAMPLE_RATE`. A signal that is
empty or silent (peak below :data:`SILENCE_PEAK`) has no meaningful score:
the metric returns NaN and warns with a :class:`MetricWarning` instead of
raising, so that one bad file never stops an evaluation.
"""

import math
import warnings

import numpy as np
import torch

SAMPLE_RATE = 16000
SILENCE_PEAK = 1e-4  # -80 dBFS


class MetricWarning(UserWarning):
    """A metric could not score a signal (the score is NaN) or changed it."""


def warn(message):
    """Emits a :class:`MetricWarning` (shown at the caller of the metric)."""
    warnings.warn(message, MetricWarning, stacklevel=3)


def to_numpy(wav):
    """Returns a 1-D float64 numpy copy of a tensor, array or list.

    Example
    -------
    >>> to_numpy(torch.ones(3)).dtype, to_numpy([0.5, 0.5]).shape
    (dtype('float64'), (2,))
    """
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().double().numpy()
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise ValueError(f"expected a 1-D signal, got shape {tuple(wav.shape)}")
    return wav


def signals(metric, estimate, reference=None, min_samples=1):
    """Checks and converts the inputs of a metric.

    The estimate and reference are trimmed to the shorter of the two.

    Arguments
    ---------
    metric : str
        Name used in warnings (e.g. ``"PESQ"``).
    estimate : array-like
        ``[S]`` signal to score.
    reference : array-like, optional
        ``[S]`` reference signal (intrusive metrics).
    min_samples : int
        Shortest usable length.

    Returns
    -------
    tuple of numpy.ndarray, or None
        ``(estimate, reference)`` (or ``(estimate,)``), or ``None`` after a
        :class:`MetricWarning` when a signal is too short or silent.

    Example
    -------
    >>> x, r = signals("X", torch.ones(5), torch.ones(4))
    >>> x.shape, r.shape
    ((4,), (4,))
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     out = signals("X", torch.zeros(8))
    >>> out, str(w[0].message)
    (None, 'X: estimate is silent (peak < 1e-04); score is NaN')
    """
    named = {"estimate": to_numpy(estimate)}
    if reference is not None:
        named["reference"] = to_numpy(reference)
        length = min(len(x) for x in named.values())
        named = {k: x[:length] for k, x in named.items()}
    for name, x in named.items():
        if len(x) < min_samples:
            warn(f"{metric}: {name} is too short ({len(x)} samples, "
                 f"needs {min_samples}); score is NaN")
            return None
        if np.max(np.abs(x)) < SILENCE_PEAK:
            warn(f"{metric}: {name} is silent (peak < {SILENCE_PEAK:.0e}); score is NaN")
            return None
    return tuple(named.values())


def batchify(fn, target="signal"):
    """Turns a 1-D metric into the batch form used by ``MetricStats``.

    Arguments
    ---------
    fn : callable
        ``fn(estimate[S], target) -> float`` (or ``fn(estimate[S])``).
    target : str or None
        ``"signal"``: ``target[B, S]`` is cut to each length like
        ``predict``; ``"text"``: ``target`` is a list of strings;
        ``None``: the metric is reference-free and ``target`` is ignored.

    Returns
    -------
    callable
        ``batch(predict[B, S], target, lengths[B]) -> Tensor[B]`` where
        ``lengths`` are relative (SpeechBrain convention; default: all 1).

    Example
    -------
    >>> peak = batchify(lambda x: float(abs(x).max()), target=None)
    >>> peak(torch.tensor([[1.0, 3.0], [2.0, 5.0]]), None, torch.tensor([1.0, 0.5]))
    tensor([3., 2.])
    """

    def batch(predict, target_=None, lengths=None):
        size = predict.shape[1]
        if lengths is None:
            ends = [size] * predict.shape[0]
        else:
            ends = (torch.as_tensor(lengths) * size).round().int().tolist()
        scores = []
        for i, end in enumerate(ends):
            if target == "signal":
                scores.append(fn(predict[i, :end], target_[i, :end]))
            elif target == "text":
                scores.append(fn(predict[i, :end], target_[i]))
            else:
                scores.append(fn(predict[i, :end]))
        return torch.tensor(scores, dtype=torch.float32)

    batch.__name__ = batch.__qualname__ = f"{fn.__name__}_batch"
    batch.__doc__ = (
        f"Batch form of :func:`{fn.__name__}` for SpeechBrain's ``MetricStats``: "
        "``(predict[B, S], target, lengths[B]) -> Tensor[B]``."
    )
    return batch


def nanmean(values):
    """Mean of the finite values (``None`` and NaN skipped), or ``None``.

    Example
    -------
    >>> nanmean([1.0, None, float("nan"), 3.0]), nanmean([None])
    (2.0, None)
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None
