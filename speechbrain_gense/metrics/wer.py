"""Word error rate of an ASR system on enhanced speech.

An :class:`ASR` turns a signal into text. :class:`PocketsphinxASR` works
offline with the en-us model shipped in ``pocketsphinx`` (the default);
:class:`SpeechBrainASR` wraps any SpeechBrain ASR interface (for instance an
``EncoderDecoderASR`` loaded from a local folder). Texts are normalised with
:func:`normalize_text` and aligned with ``jiwer``.
"""

import math
import os
import re
from collections import Counter
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
        the default is the bundled en-us model at 16 kHz. ``lm`` may be an
        ARPA file such as the embedded corpus's ``asr_lm.arpa``
        (see :func:`write_bigram_lm`).

    Example
    -------
    >>> PocketsphinxASR().transcribe(np.zeros(0), 16000)
    ''
    """

    def __init__(self, **config):
        self.config = {"logfn": os.devnull, **config}
        self._decoder = None

    def __repr__(self):
        lm = self.config.get("lm")
        return f"pocketsphinx ({'LM ' + os.path.basename(lm) if lm else 'en-us LM'})"

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
def default_asr(lm=None):
    """A shared :class:`PocketsphinxASR` per language model (created once)."""
    return PocketsphinxASR(lm=lm) if lm else PocketsphinxASR()


CORPUS_LM = "asr_lm.arpa"


def corpus_lm(manifest):
    """The domain language model of a manifest, or None.

    ``asr_lm.arpa`` (written by the embedded corpus) next to the manifest or
    in its ``corpus/`` subfolder (where the recipes' data preparation builds
    the corpus).

    Example
    -------
    >>> corpus_lm("/nonexistent/test.json") is None
    True
    """
    folder = os.path.dirname(os.path.abspath(manifest))
    for path in (os.path.join(folder, CORPUS_LM), os.path.join(folder, "corpus", CORPUS_LM)):
        if os.path.isfile(path):
            return path
    return None


def asr_for_manifest(manifest):
    """The ASR used to score a manifest: pocketsphinx, with the domain LM
    (:func:`corpus_lm`) when there is one, else with the bundled en-us LM."""
    return default_asr(corpus_lm(manifest))


def write_bigram_lm(sentences, path, discount=0.5):
    """Writes an ARPA bigram LM (absolute discounting with back-off) of ``sentences``.

    Unigram probabilities are interpolated with a uniform floor so that every
    word seen gets some mass; bigrams seen in the text are discounted by
    ``discount`` and the freed mass backs off to the unigrams.

    Arguments
    ---------
    sentences : iterable of str
        Training text (one sentence each; case is ignored).
    path : str
        ARPA file to write.
    discount : float
        Absolute discount of each seen bigram count.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "lm.arpa")
    >>> write_bigram_lm(["the cat sat", "the dog sat"], path)
    >>> open(path).read().splitlines()[1:3]
    ['ngram 1=6', 'ngram 2=6']
    """
    unigrams, bigrams = Counter(), Counter()
    for sentence in sentences:
        words = ["<s>", *sentence.lower().split(), "</s>"]
        unigrams.update(words)
        bigrams.update(zip(words[:-1], words[1:]))
    total = sum(c for w, c in unigrams.items() if w != "<s>")
    vocab = len(unigrams)
    p_uni = {w: 0.99 * (c / total if w != "<s>" else 0.0) + 0.01 / vocab
             for w, c in unigrams.items()}
    following = {}
    for (a, b), c in bigrams.items():
        following.setdefault(a, {})[b] = c
    p_bi, backoff = {}, {}
    for a, nexts in following.items():
        count = sum(nexts.values())
        seen = seen_uni = 0.0
        for b, c in nexts.items():
            p_bi[(a, b)] = (c - discount) / count
            seen += p_bi[(a, b)]
            seen_uni += p_uni[b]
        backoff[a] = (1.0 - seen) / max(1e-9, 1.0 - seen_uni)
    lines = ["\\data\\", f"ngram 1={len(unigrams)}", f"ngram 2={len(p_bi)}", "",
             "\\1-grams:"]
    for w in sorted(unigrams):
        logp = -99.0 if w == "<s>" else math.log10(p_uni[w])
        lines.append(f"{logp:.6f} {w} {math.log10(backoff.get(w, 1.0)):.6f}")
    lines += ["", "\\2-grams:"]
    lines += [f"{math.log10(p):.6f} {a} {b}" for (a, b), p in sorted(p_bi.items())]
    lines += ["", "\\end\\", ""]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


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
