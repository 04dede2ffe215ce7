"""The one contract every audio tokenizer of the project follows.

``encode(wav[B, S], lens[B]) -> (tokens LongTensor[B, T, K], lens[B])`` and
``decode(tokens[B, T, K], lens[B]) -> wav[B, S]``, with relative lengths as in
SpeechBrain (1.0 = the longest item of the batch). A tokenizer is frozen and in
eval mode; it resamples input at another rate at the boundary.

Subclasses implement :meth:`AudioTokenizer._encode` and
:meth:`AudioTokenizer._decode` on padded batches at their own rate, and set
``sample_rate``, ``frame_rate``, ``num_codebooks`` and ``vocab_size``.
SpeechBrain's own wrappers disagree on layout ([B,T,K], [B,K,T], [K,B,T]);
adapters normalise to [B, T, K] inside ``_encode``/``_decode``.
"""

import math

import torch
import torchaudio

from ..data.degrade import fit_length_end


class AudioTokenizer(torch.nn.Module):
    """Base class (a SpeechBrain-style lobe) for discrete audio tokenizers.

    Arguments
    ---------
    sample_rate : int
        Rate of the audio the codec works at.
    frame_rate : float
        Token frames per second.
    num_codebooks : int
        ``K``, tokens per frame.
    vocab_size : int
        Codes per codebook (token values are in ``[0, vocab_size)``).

    Example
    -------
    >>> class Repeat(AudioTokenizer):
    ...     def __init__(self):
    ...         super().__init__(sample_rate=100, frame_rate=10, num_codebooks=1, vocab_size=256)
    ...     def _encode(self, wav):
    ...         return ((wav[:, ::10].clamp(-1, 1) + 1) * 127.5).long().unsqueeze(-1)
    ...     def _decode(self, tokens):
    ...         return (tokens[..., 0].float() / 127.5 - 1).repeat_interleave(10, dim=1)
    >>> tok = Repeat()
    >>> tokens, lens = tok.encode(torch.zeros(2, 100), torch.tensor([1.0, 0.5]))
    >>> tokens.shape, tokens.dtype, lens.tolist()
    (torch.Size([2, 10, 1]), torch.int64, [1.0, 0.5])
    >>> tok.decode(tokens, lens).shape
    torch.Size([2, 100])
    """

    def __init__(self, sample_rate, frame_rate, num_codebooks, vocab_size):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.frame_rate = float(frame_rate)
        self.num_codebooks = int(num_codebooks)
        self.vocab_size = int(vocab_size)

    @property
    def hop_length(self):
        """Samples per token frame at :attr:`sample_rate` (an ``int`` when whole)."""
        hop = self.sample_rate / self.frame_rate
        return int(round(hop)) if abs(hop - round(hop)) < 1e-6 else hop

    def num_frames(self, num_samples):
        """Token frames for ``num_samples`` samples at :attr:`sample_rate`."""
        return math.ceil(num_samples / self.hop_length)

    def pad_to_frames(self, wav):
        """Zero-pads ``wav[B, S]`` at the end to a whole number of frames."""
        length = self.num_frames(wav.shape[-1]) * int(self.hop_length)
        return fit_length_end(wav, length)

    def fit_to_frames(self, wav, num_frames):
        """Pads or crops decoded ``wav[B, S']`` to exactly ``num_frames`` frames."""
        return fit_length_end(wav, num_frames * int(self.hop_length))

    def freeze(self):
        """Eval mode, no gradients (tokenizers are frozen everywhere)."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode=True):
        # A tokenizer stays in eval mode even inside a Brain in training mode.
        return super().train(False)

    @property
    def device(self):
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def _encode(self, wav):
        """``wav[B, S]`` at :attr:`sample_rate` -> ``LongTensor[B, T, K]``."""
        raise NotImplementedError

    def _decode(self, tokens):
        """``LongTensor[B, T, K]`` -> ``wav[B, S]`` at :attr:`sample_rate`."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, wav, lens=None, sample_rate=None):
        """Tokenizes a padded batch.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, S]`` (or ``[S]``) audio.
        lens : torch.Tensor, optional
            ``[B]`` relative lengths (default: all 1).
        sample_rate : int, optional
            Rate of ``wav`` when it differs from :attr:`sample_rate`.

        Returns
        -------
        tokens : torch.LongTensor
            ``[B, T, K]``; frames past an item's length are padding.
        lens : torch.Tensor
            ``[B]`` relative lengths in frames.
        """
        if wav.dim() == 1:
            wav = wav.unsqueeze(0)
        if wav.dim() != 2:
            raise ValueError(f"encode expects wav [B, S], got shape {tuple(wav.shape)}")
        if lens is None:
            lens = torch.ones(wav.shape[0])
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = torchaudio.functional.resample(wav, sample_rate, self.sample_rate)
        wav = wav.to(self.device, torch.float32)
        tokens = self._encode(wav).long()
        if tokens.dim() != 3 or tokens.shape[0] != wav.shape[0] \
                or tokens.shape[2] != self.num_codebooks:
            raise RuntimeError(f"{type(self).__name__}._encode returned {tuple(tokens.shape)}, "
                               f"expected [B, T, {self.num_codebooks}]")
        if lens.shape[0] != wav.shape[0]:
            raise ValueError(f"{lens.shape[0]} lengths for a batch of {wav.shape[0]}")
        # Frame lengths from sample lengths, relative to the padded token
        # tensor (SpeechBrain's convention).
        samples = lens.float().cpu() * wav.shape[1]
        frames = torch.tensor([min(tokens.shape[1], self.num_frames(int(round(float(s)))))
                               for s in samples], dtype=torch.float)
        return tokens, frames / max(1, tokens.shape[1])

    @torch.no_grad()
    def decode(self, tokens, lens=None, sample_rate=None):
        """Turns ``tokens[B, T, K]`` back into audio ``[B, S]``.

        Samples past an item's length are set to zero. With ``sample_rate``
        the audio is resampled to that rate.
        """
        if tokens.dim() != 3 or tokens.shape[2] != self.num_codebooks:
            raise ValueError(f"decode expects tokens [B, T, {self.num_codebooks}], "
                             f"got shape {tuple(tokens.shape)}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token values must be in [0, {self.vocab_size})")
        wav = self._decode(tokens.to(self.device).long()).float()
        if lens is not None:
            length = wav.shape[1]
            keep = (lens.to(wav.device).float() * length).round().long()
            mask = torch.arange(length, device=wav.device)[None, :] < keep[:, None]
            wav = wav * mask
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = torchaudio.functional.resample(wav, self.sample_rate, sample_rate)
        return wav

    def extra_repr(self):
        return (f"sample_rate={self.sample_rate}, frame_rate={self.frame_rate}, "
                f"num_codebooks={self.num_codebooks}, vocab_size={self.vocab_size}")
