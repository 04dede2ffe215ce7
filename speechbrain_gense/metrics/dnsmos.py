"""DNSMOS: reference-free quality (P.835 SIG/BAK/OVRL and P.808 MOS).

Uses the ONNX models shipped with ``speechmos`` through
``speechmos.dnsmos.run``, which creates its two ``onnxruntime`` sessions on
the first call and keeps them in a module global (later calls reuse them).

Input requirements of ``speechmos`` (checked): 16 kHz, a 1-D float array
with every value in [-1, 1] (otherwise it raises), and at least 9.01 s of
audio; the model scores 9.01 s windows with a 1 s hop and averages them.
Shorter signals are **looped** here (repeated from their start, as the
official DNSMOS script does) to exactly 9.01 s, so a short clip is scored on
one window. Values outside [-1, 1] are clipped with a warning.
"""

import math

import numpy as np

from .common import SAMPLE_RATE, batchify, signals, warn

INPUT_LENGTH = 9.01  # seconds, speechmos.dnsmos.INPUT_LENGTH
DNSMOS_KEYS = ("sig", "bak", "ovrl", "p808")


def dnsmos(wav, personalized=False):
    """DNSMOS P.835 and P.808 scores of one 16 kHz signal.

    Arguments
    ---------
    wav : array-like
        ``[S]`` signal at 16 kHz.
    personalized : bool
        Use the personalized DNSMOS model (penalises interfering talkers).

    Returns
    -------
    dict
        ``{"sig", "bak", "ovrl", "p808"}`` (about 1 to 5; NaN for an empty or
        silent signal, with a :class:`MetricWarning`).

    Example
    -------
    >>> import torch
    >>> scores = dnsmos(0.1 * torch.randn(16000))  # doctest: +SKIP
    >>> sorted(scores), scores["ovrl"] < 2  # doctest: +SKIP
    (['bak', 'ovrl', 'p808', 'sig'], True)
    """
    from speechmos.dnsmos import run

    checked = signals("DNSMOS", wav)
    if checked is None:
        return dict.fromkeys(DNSMOS_KEYS, math.nan)
    (x,) = checked
    if np.max(np.abs(x)) > 1:
        warn("DNSMOS: signal exceeds [-1, 1]; clipped")
        x = np.clip(x, -1.0, 1.0)
    needed = math.ceil(INPUT_LENGTH * SAMPLE_RATE)
    if len(x) < needed:
        x = np.resize(x, needed)  # loops the signal
    model_type = "dnsmos_personalized" if personalized else "dnsmos"
    out = run(x.astype(np.float32), SAMPLE_RATE, model_type=model_type)
    return {key: float(out[f"{key}_mos"]) for key in DNSMOS_KEYS}


def dnsmos_batch(predict, target=None, lengths=None, key="ovrl"):
    """One DNSMOS score per signal, for SpeechBrain's ``MetricStats``.

    Each call runs the model once per signal, so use one column in a Brain
    (usually OVRL, the default); :func:`dnsmos` gives all four at once.

    Arguments
    ---------
    predict : torch.Tensor
        ``[B, S]`` signals at 16 kHz.
    target : any
        Ignored (DNSMOS is reference-free).
    lengths : torch.Tensor, optional
        ``[B]`` relative lengths.
    key : str
        One of ``sig``, ``bak``, ``ovrl``, ``p808``.

    Returns
    -------
    torch.Tensor
        ``[B]`` scores.
    """
    if key not in DNSMOS_KEYS:
        raise ValueError(f"key must be one of {DNSMOS_KEYS}, not {key!r}")
    score = batchify(lambda wav: dnsmos(wav)[key], target=None)
    return score(predict, target, lengths)
