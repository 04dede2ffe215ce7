"""Best of N: choosing among sampled outputs by transcript consensus.

A sampling decoder gives a different output for every seed, and for the
shipped MAGE the words change from one draw to the next far more than the
sound does (on a 223-utterance validation split the per-file dWER of two
draws differs with a standard deviation of 36 points, while their mean OVRL
is the same to 0.01). :class:`ConsensusSelector`
decodes ``N`` candidates of a chunk (one batched model call), transcribes
them and the noisy input with an ASR, and keeps the candidate whose
transcript is nearest the others' (minimum Bayes risk under word edit
distance): words that most draws agree on, and that the input also carries,
are the ones least likely to be invented. The noisy input's transcript
votes with ``input_weight`` but is never chosen.

It runs at the interface (``EnhanceGenerative.enhance_file(...,
candidates=4)``, ``gense-enhance --candidates 4``, ``gense-evaluate --grid
candidates=1,4``), so every method gets it; the cost is ``N`` times the
decoding plus ``N + 1`` transcriptions per chunk.
"""

from .metrics.wer import make_asr, word_errors

#: Interface options of candidate selection (not model decoding options).
SELECTION_OPTIONS = ("candidates", "candidate_asr")


def word_distance(a, b):
    """Word edit distance (substitutions + deletions + insertions) of two texts,
    after :func:`~speechbrain_gense.metrics.wer.normalize_text`.

    Example
    -------
    >>> word_distance("the cat sat", "The cat sat on 2 mats"), word_distance("", "a b")
    (3, 2)
    """
    return word_errors(a, b)[0]


def consensus_scores(transcripts, input_transcript=None, input_weight=1.0):
    """Expected word distance of each candidate to the others (lower is better).

    Arguments
    ---------
    transcripts : list of str
        One transcript per candidate.
    input_transcript : str, optional
        The noisy input's transcript: one more voter, weighted by ``input_weight``.
    input_weight : float
        Weight of ``input_transcript``'s vote.

    Returns
    -------
    list of float
        ``score[i] = sum_j d(t_i, t_j) + input_weight * d(t_i, input)``.

    Example
    -------
    >>> consensus_scores(["a b c", "a b d", "x y z"])
    [4.0, 4.0, 6.0]
    >>> consensus_scores(["a b c", "a b d", "x y z"], input_transcript="a b d")
    [5.0, 4.0, 9.0]
    """
    n = len(transcripts)
    dist = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            dist[i][j] = dist[j][i] = float(word_distance(transcripts[i], transcripts[j]))
    scores = [sum(row) for row in dist]
    if input_transcript is not None and input_weight:
        scores = [s + input_weight * word_distance(t, input_transcript)
                  for s, t in zip(scores, transcripts)]
    return scores


class ConsensusSelector:
    """Keeps the candidate whose transcript the other candidates and the input agree with.

    Arguments
    ---------
    candidates : int
        Outputs decoded per chunk (at least 2; 1 is no selection).
    asr : str or speechbrain_gense.metrics.wer.ASR, optional
        Recogniser (:func:`~speechbrain_gense.metrics.wer.make_asr`; default
        ``"whisper"``: Whisper tiny.en, loaded on first use).
    input_weight : float
        Weight of the noisy input's transcript among the voters (chosen on the
        validation split: 1.0, one more voter).

    Example
    -------
    >>> import torch
    >>> class LengthASR:  # "transcribes" a signal as its number of loud samples
    ...     def transcribe_many(self, wavs, sr):
    ...         return [" ".join(["w"] * int((w.abs() > 0.5).sum())) for w in wavs]
    >>> selector = ConsensusSelector(3, asr=LengthASR())
    >>> cands = torch.zeros(3, 10)
    >>> cands[0, :2] = 1.0; cands[1, :3] = 1.0; cands[2, :9] = 1.0
    >>> noisy = torch.zeros(10); noisy[:3] = 1.0
    >>> selector.select(cands, noisy, 16000)
    (1, [9.0, 7.0, 19.0])
    """

    def __init__(self, candidates, asr=None, input_weight=1.0):
        candidates = int(candidates)
        if candidates < 2:
            raise ValueError(f"ConsensusSelector needs at least 2 candidates, got {candidates}")
        self.candidates, self.input_weight = candidates, float(input_weight)
        self._asr_spec = asr
        self._asr = None

    def __repr__(self):
        return f"ConsensusSelector(candidates={self.candidates}, asr={self.asr!r})"

    @property
    def asr(self):
        """The recogniser (built from its name on first use)."""
        if self._asr is None:
            spec = self._asr_spec
            self._asr = make_asr(spec or "whisper") if spec is None or isinstance(spec, str) \
                else spec
        return self._asr

    def transcribe(self, wavs, sample_rate):
        """Transcripts of a list of 1-D signals."""
        asr = self.asr
        wavs = [w.detach().float().cpu() for w in wavs]
        if hasattr(asr, "transcribe_many"):
            return list(asr.transcribe_many(wavs, sample_rate))
        return [asr.transcribe(w, sample_rate) for w in wavs]

    def select(self, candidates, noisy, sample_rate):
        """Index of the chosen row of ``candidates[N, S]`` for the input ``noisy[S]``.

        Returns
        -------
        index : int
            The chosen candidate (the lowest index among equal scores, so the
            first candidate, the seed's own draw, wins ties).
        scores : list of float
            :func:`consensus_scores` of the candidates.
        """
        texts = self.transcribe([*candidates, noisy], sample_rate)
        scores = consensus_scores(texts[:-1], texts[-1], self.input_weight)
        return min(range(len(scores)), key=lambda i: (scores[i], i)), scores


def make_selector(candidates=None, asr=None):
    """A :class:`ConsensusSelector` for ``candidates > 1``, else None (no selection).

    Example
    -------
    >>> make_selector(None), make_selector(1), make_selector(4)
    (None, None, ConsensusSelector(candidates=4, asr=Whisper (tiny.en, greedy)))
    >>> make_selector(0)
    Traceback (most recent call last):
    ...
    ValueError: candidates must be a whole number >= 1, got 0
    """
    if isinstance(candidates, ConsensusSelector):
        return candidates
    if candidates is None:
        return None
    text = str(candidates).strip()
    if isinstance(candidates, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"candidates must be a whole number >= 1, got {candidates!r}")
    n = int(text)
    return ConsensusSelector(n, asr=asr) if n > 1 else None


__all__ = ["SELECTION_OPTIONS", "ConsensusSelector", "consensus_scores", "make_selector",
           "word_distance"]
