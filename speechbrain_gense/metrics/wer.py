"""Word error rate of an ASR system on enhanced speech.

An :class:`ASR` turns a signal into text. :class:`PocketsphinxASR` works
offline with the en-us model shipped in ``pocketsphinx`` (the default);
:class:`SpeechBrainASR` wraps any SpeechBrain ASR interface (for instance an
``EncoderDecoderASR`` loaded from a local folder). Texts are normalised with
:func:`normalize_text` and aligned with ``jiwer``.
"""

import math
import re
from functools import cache

import numpy as np
import torch

from .common import SAMPLE_RATE, batchify, to_numpy, warn


class ASR:
    """Speech recogniser interface: ``transcribe(wav, sr) -> str``."""

    def transcribe(self, wav, sr):
        """Returns the transcript of a 1-D signal sampled at ``sr`` Hz."""
        raise NotImplementedError


class PocketsphinxASR(ASR):
    """CMU pocketsphinx with its bundled US English model, LM and dictionary.

    Arguments
    ---------
    **config
        Options of ``pocketsphinx.Decoder`` (e.g. ``hmm``, ``lm``, ``dict``);
        the default is the bundled en-us model at 16 kHz.

    Example
    -------
    >>> PocketsphinxASR().transcribe(np.zeros(0), 16000)
    ''
    """

    def __init__(self, **config):
        self.config = config
        self._decoder = None

    def transcribe(self, wav, sr):
        """Transcribes a 1-D signal (resampled to 16 kHz when needed)."""
        wav = _resample(wav, sr, SAMPLE_RATE)
        if len(wav) == 0:
            return ""
        if self._decoder is None:
            from pocketsphinx import Decoder

            self._decoder = Decoder(**self.config)
        pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class SpeechBrainASR(ASR):
    """Adapter for an object with SpeechBrain's ``transcribe_batch``.

    Arguments
    ---------
    model : object
        Has ``transcribe_batch(wavs[B, S], wav_lens[B])`` returning the
        words (or a tuple whose first item is the words) of each signal,
        e.g. ``EncoderDecoderASR.from_hparams(source=LOCAL_DIR)``.
    sample_rate : int
        Rate the model expects.

    Example
    -------
    >>> class Echo:
    ...     def transcribe_batch(self, wavs, wav_lens):
    ...         return [f"{wavs.shape[1]} samples"], None
    >>> SpeechBrainASR(Echo()).transcribe(torch.zeros(8000), 8000)
    '16000 samples'
    """

    def __init__(self, model, sample_rate=SAMPLE_RATE):
        self.model = model
        self.sample_rate = sample_rate

    def transcribe(self, wav, sr):
        """Transcribes a 1-D signal with the wrapped model."""
        wav = torch.from_numpy(_resample(wav, sr, self.sample_rate)).float()
        with torch.no_grad():
            out = self.model.transcribe_batch(wav[None], torch.ones(1))
        words = out[0] if isinstance(out, tuple) else out
        words = words[0]
        return words if isinstance(words, str) else " ".join(words)


def _resample(wav, sr, target):
    wav = to_numpy(wav)
    if sr == target or len(wav) == 0:
        return wav
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(wav), sr, target).numpy()


@cache
def default_asr():
    """The shared :class:`PocketsphinxASR` (created once)."""
    return PocketsphinxASR()


def normalize_text(text):
    """Upper case, punctuation removed (apostrophes inside words kept).

    Example
    -------
    >>> normalize_text("Hello, world!  It's 'fine'.")
    "HELLO WORLD IT'S FINE"
    """
    text = re.sub(r"[^\w\s']|_", " ", text.upper())
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def word_errors(reference, hypothesis):
    """Word errors (substitutions + deletions + insertions) and reference words.

    Arguments
    ---------
    reference : str
        Reference transcript.
    hypothesis : str
        Recognised text.

    Returns
    -------
    errors : int
    words : int
        Number of words of the normalised reference.

    Example
    -------
    >>> word_errors("the cat sat.", "The cat sat on")
    (1, 3)
    """
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def corpus_wer(references, hypotheses):
    """Corpus WER: total errors over total reference words.

    Example
    -------
    >>> corpus_wer(["a b c d", "e f"], ["a b c d", "x"])
    0.3333333333333333
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    counts = [word_errors(r, h) for r, h in zip(references, hypotheses)]
    total = sum(n for _, n in counts)
    return sum(e for e, _ in counts) / total if total else math.nan


def transcribe_errors(estimate, words, asr=None, sample_rate=SAMPLE_RATE):
    """Transcribes one signal and counts its word errors.

    Arguments
    ---------
    estimate : array-like
        ``[S]`` signal.
    words : str
        Reference transcript.
    asr : ASR, optional
        Recogniser (default: the shared :class:`PocketsphinxASR`).
    sample_rate : int
        Rate of ``estimate``.

    Returns
    -------
    hypothesis : str
    errors : int
    words : int
        Number of reference words.

    Example
    -------
    >>> transcribe_errors(np.zeros(0), "hello world")
    ('', 2, 2)
    """
    hypothesis = (asr or default_asr()).transcribe(estimate, sample_rate)
    return (hypothesis, *word_errors(words, hypothesis))


def wer(estimate, words, asr=None, sample_rate=SAMPLE_RATE):
    """WER of the transcript of one signal against its reference words.

    Arguments are those of :func:`transcribe_errors`.

    Returns
    -------
    float
        Errors / reference words (may exceed 1); NaN with a warning for an
        empty reference.

    Example
    -------
    >>> wer(np.zeros(0), "hello world")
    1.0
    """
    _, errors, total = transcribe_errors(estimate, words, asr, sample_rate)
    if total == 0:
        warn("WER: empty reference transcript; score is NaN")
        return math.nan
    return errors / total


wer_batch = batchify(wer, target="text")
