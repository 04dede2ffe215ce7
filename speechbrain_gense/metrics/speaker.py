"""Speaker similarity (SECS) with Resemblyzer's GE2E speaker encoder.

SECS is the cosine similarity of the two utterance embeddings (the
embeddings are L2-normalised, so it is their dot product): 1 for the same
signal, about 0.5 to 0.75 between different TTS voices. The encoder (shipped
with ``resemblyzer``) is loaded once, on first use.
"""

import math
from functools import cache

import numpy as np
import torch

from ..utils import torch_threads
from .common import SAMPLE_RATE, batchify, signals, warn

MIN_SPEECH = 0.3  # seconds of voiced audio needed after Resemblyzer's trimming


@cache
def voice_encoder(device="cpu"):
    """The Resemblyzer ``VoiceEncoder`` (loaded on the first call, then cached)."""
    from resemblyzer import VoiceEncoder

    return VoiceEncoder(device, verbose=False)


def speaker_embedding(wav, name="signal"):
    """GE2E embedding of one 16 kHz signal.

    The signal goes through Resemblyzer's ``preprocess_wav`` (volume
    normalisation and removal of long silences by voice activity detection).

    Arguments
    ---------
    wav : array-like
        ``[S]`` signal at 16 kHz.
    name : str
        Name used in warnings.

    Returns
    -------
    numpy.ndarray or None
        ``[256]`` unit-norm embedding, or ``None`` (with a warning) when the
        signal is silent or has less than :data:`MIN_SPEECH` s of speech.

    Example
    -------
    >>> speaker_embedding(np.zeros(16000)) is None  # doctest: +SKIP
    True
    """
    from resemblyzer import preprocess_wav

    checked = signals("SECS", wav)
    if checked is None:
        return None
    speech = preprocess_wav(checked[0], source_sr=SAMPLE_RATE)
    if len(speech) < MIN_SPEECH * SAMPLE_RATE:
        warn(f"SECS: {name} has {len(speech) / SAMPLE_RATE:.2f} s of speech "
             f"(needs {MIN_SPEECH} s); score is NaN")
        return None
    with torch_threads(1):  # see torch_threads: an LSTM on 2 busy cores
        return voice_encoder().embed_utterance(speech)


def secs(estimate, reference):
    """Speaker-embedding cosine similarity of two signals.

    Arguments
    ---------
    estimate : array-like
        ``[S]`` signal, 16 kHz.
    reference : array-like
        ``[S']`` reference, 16 kHz (lengths may differ).

    Returns
    -------
    float
        Cosine similarity in [-1, 1]; NaN with a warning when a signal is
        silent or too short.

    Example
    -------
    >>> x = np.random.randn(16000)
    >>> round(secs(x, x), 3)  # doctest: +SKIP
    1.0
    """
    est = speaker_embedding(estimate, "estimate")
    ref = speaker_embedding(reference, "reference") if est is not None else None
    if est is None or ref is None:
        return math.nan
    return float(np.dot(est, ref) / (np.linalg.norm(est) * np.linalg.norm(ref)))


secs_batch = batchify(secs)
