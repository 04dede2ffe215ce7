"""A tiny, random, deterministic tokenizer for tests of everything downstream.

:class:`DebugTokenizer` follows the :class:`~speechbrain_gense.tokenizers.base.AudioTokenizer`
contract exactly (``[B, T, K]`` tokens, relative lengths, resampling at the
boundary, frozen and in eval mode) with no download and no learned weights:
a fixed random projection of each frame of ``hop`` samples is quantised by a
fixed random residual codebook, and decoding projects the summed code vectors
back to ``hop`` samples per frame. It is fast enough to run inside unit tests
and recipe smoke tests, e.g. in YAML::

    tokenizer: !new:speechbrain_gense.tokenizers.debug.DebugTokenizer
        num_codebooks: 4
        vocab_size: 64
        seed: 0
"""

import torch

from .base import AudioTokenizer


class DebugTokenizer(AudioTokenizer):
    """A seeded random residual-VQ tokenizer over non-overlapping frames.

    Encoding cuts the (zero-padded) signal into ``ceil(S / hop)`` frames of
    ``hop`` samples, projects each frame on ``dim`` fixed orthonormal
    directions and quantises the result with ``num_codebooks`` random
    codebooks of ``vocab_size`` codes, residually (codebook ``k`` quantises
    what codebooks ``0..k-1`` left). Decoding sums the chosen code vectors,
    projects them back to ``hop`` samples and concatenates the frames, so the
    output has ``T * hop`` samples, is a function of the tokens only, and
    each frame's samples depend only on that frame's tokens (padding frames
    never leak into the valid region).

    All tensors are buffers built from ``seed``: two instances with the same
    arguments are identical, and the module has no parameters.

    Arguments
    ---------
    sample_rate : int
        Rate of the audio it works at (input at another rate is resampled by
        :meth:`encode`).
    hop : int
        Samples per token frame (``frame_rate = sample_rate / hop``; 200 at
        16 kHz gives 80 Hz).
    num_codebooks : int
        ``K``, tokens per frame.
    vocab_size : int
        ``V``, codes per codebook.
    dim : int
        Size of the frame features (at most ``hop``).
    seed : int
        Seed of the random projection and codebooks.
    scale : float
        Standard deviation of the first codebook's vectors (later codebooks
        are halved at each level); about the level of the feature values of
        speech at a usual loudness.

    Example
    -------
    >>> tok = DebugTokenizer(num_codebooks=2, vocab_size=64)
    >>> tok.frame_rate, tok.hop_length
    (80.0, 200)
    >>> wav = torch.randn(2, 16000) * 0.1
    >>> tokens, lens = tok.encode(wav, torch.tensor([1.0, 0.5]))
    >>> tokens.shape, tokens.dtype, lens.tolist()
    (torch.Size([2, 80, 2]), torch.int64, [1.0, 0.5])
    >>> bool(tokens.min() >= 0 and tokens.max() < 64)
    True
    >>> tok.decode(tokens, lens).shape
    torch.Size([2, 16000])
    >>> sum(p.numel() for p in tok.parameters()), tok.training
    (0, False)
    """

    def __init__(self, sample_rate=16000, hop=200, num_codebooks=1, vocab_size=64,
                 dim=16, seed=0, scale=0.1):
        hop, dim = int(hop), int(dim)
        num_codebooks, vocab_size = int(num_codebooks), int(vocab_size)
        if hop < 1:
            raise ValueError(f"hop must be >= 1, got {hop}")
        if not 1 <= dim <= hop:
            raise ValueError(f"dim must be in [1, hop={hop}], got {dim}")
        if num_codebooks < 1 or vocab_size < 1:
            raise ValueError("num_codebooks and vocab_size must be >= 1, got "
                             f"{num_codebooks} and {vocab_size}")
        super().__init__(sample_rate=sample_rate, frame_rate=int(sample_rate) / hop,
                         num_codebooks=num_codebooks, vocab_size=vocab_size)
        self.hop = hop
        self.dim = dim
        self.seed = int(seed)
        self.scale = float(scale)
        gen = torch.Generator().manual_seed(self.seed)
        # Orthonormal columns: decode(encode(x)) is the projection of each
        # frame on a dim-dimensional subspace, up to quantisation.
        proj, _ = torch.linalg.qr(torch.randn(hop, dim, generator=gen, dtype=torch.float64))
        levels = self.scale * 0.5 ** torch.arange(num_codebooks, dtype=torch.float64)
        codebooks = torch.randn(num_codebooks, vocab_size, dim, generator=gen,
                                dtype=torch.float64) * levels[:, None, None]
        self.register_buffer("proj", proj.float())
        self.register_buffer("codebooks", codebooks.float())
        self.freeze()

    @property
    def config(self):
        """The constructor arguments (used e.g. by the token cache fingerprint)."""
        return {"sample_rate": self.sample_rate, "hop": self.hop,
                "num_codebooks": self.num_codebooks, "vocab_size": self.vocab_size,
                "dim": self.dim, "seed": self.seed, "scale": self.scale}

    def _encode(self, wav):
        batch, num_samples = wav.shape
        frames = -(-num_samples // self.hop)
        wav = torch.nn.functional.pad(wav, (0, frames * self.hop - num_samples))
        residual = wav.reshape(batch, frames, self.hop) @ self.proj  # [B, T, D]
        codes = []
        for book in self.codebooks:  # [V, D]
            dist = ((residual.unsqueeze(-2) - book) ** 2).sum(-1)  # [B, T, V]
            index = dist.argmin(-1)
            codes.append(index)
            residual = residual - book[index]
        return torch.stack(codes, dim=-1)

    def _decode(self, tokens):
        batch, frames, _ = tokens.shape
        vectors = torch.zeros(batch, frames, self.dim, device=tokens.device)
        for k, book in enumerate(self.codebooks):
            vectors = vectors + book[tokens[..., k]]
        return (vectors @ self.proj.T).reshape(batch, frames * self.hop)

    def extra_repr(self):
        return super().extra_repr() + f", hop={self.hop}, dim={self.dim}, seed={self.seed}"
