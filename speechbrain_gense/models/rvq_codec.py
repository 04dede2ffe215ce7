"""RVQ codec: the SimCodec frame-rate body with K residual quantizers.

The encoder, decoder and Vocos-style iSTFT head are those of
:class:`~speechbrain_gense.models.simcodec.FrameRateCodec` (STFT in,
ConvNeXt blocks at the token frame rate, magnitude + phase out); the latent
of each frame is quantized by a :class:`ResidualVectorQuantizer`: codebook
``k`` quantizes what codebooks ``1 .. k-1`` left over (SoundStream /
EnCodec / DAC). With *quantizer dropout* (SoundStream §3.3) each training
item uses only its first ``k ~ U{1..K}`` codebooks with probability
``dropout_prob``, so the decoder learns to decode any first ``k`` codebooks:
``decode(tokens[..., :k])`` is a lower-bitrate version of the same audio.

Each codebook is the project's EMA :class:`VectorQuantizer` (data
initialisation, dead-code restarts, usage counts); the training losses are
those of SimCodec (:mod:`~speechbrain_gense.models.codec_losses`, through
:class:`~speechbrain_gense.brains.codec.CodecBrain`).

Example
-------
>>> model = RVQCodec(**TINY_RVQ_CONFIG)
>>> out = model(torch.randn(2, 480))
>>> out["wav"].shape, out["codes"].shape
(torch.Size([2, 480]), torch.Size([2, 30, 4]))
>>> codes = model.encode(torch.randn(2, 480))
>>> model.decode(codes).shape, model.decode(codes[..., :1]).shape
(torch.Size([2, 480]), torch.Size([2, 480]))
"""

import torch
from torch import nn

from .simcodec import FrameRateCodec, QuantizerSet, VectorQuantizer

#: The default: 16 kHz, hop 320 (50 Hz), 8 x 1024 codes (8 kbit/s), ~6.5 M parameters.
DEFAULT_RVQ_CONFIG = dict(
    sample_rate=16000, n_fft=1280, hop_length=320, dim=256, intermediate_dim=768,
    encoder_layers=3, decoder_layers=6, latent_dim=64, num_quantizers=8,
    codebook_size=1024,
)

#: A tiny configuration for tests and doctests (hop 16, 4 x 8 codes, fast EMA).
TINY_RVQ_CONFIG = dict(
    sample_rate=16000, n_fft=64, hop_length=16, dim=16, intermediate_dim=32,
    encoder_layers=1, decoder_layers=1, latent_dim=8, num_quantizers=4,
    codebook_size=8, ema_decay=0.8,
)


class ResidualVectorQuantizer(QuantizerSet):
    """K EMA vector quantizers in cascade, with quantizer dropout.

    Arguments
    ---------
    num_quantizers : int
        ``K``, codebooks (tokens per frame).
    codebook_size : int
        Codes per codebook.
    dim : int
        Latent dimension (every codebook quantizes the full latent).
    dropout_prob : float
        In training, the probability that an item uses only its first
        ``k ~ U{1..K}`` codebooks (0: always all ``K``).
    **kwargs
        Passed to each :class:`VectorQuantizer` (``decay``,
        ``dead_code_threshold``).

    Example
    -------
    >>> rvq = ResidualVectorQuantizer(3, 16, 4)
    >>> zq, codes, commit = rvq(torch.randn(2, 5, 4))
    >>> zq.shape, codes.shape, rvq.quantize(torch.randn(2, 5, 4), n_q=2).shape
    (torch.Size([2, 5, 4]), torch.Size([2, 5, 3]), torch.Size([2, 5, 2]))
    >>> rvq.dequantize(codes[..., :1]).shape
    torch.Size([2, 5, 4])
    """

    def __init__(self, num_quantizers, codebook_size, dim, dropout_prob=0.5, **kwargs):
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"num_quantizers must be >= 1, got {num_quantizers}")
        self.dim, self.codebook_size = int(dim), int(codebook_size)
        self.dropout_prob = float(dropout_prob)
        self.quantizers = nn.ModuleList(
            [VectorQuantizer(codebook_size, dim, **kwargs) for _ in range(num_quantizers)])

    @property
    def num_quantizers(self):
        return len(self.quantizers)

    @property
    def parts(self):
        return self.quantizers

    def _check_n_q(self, n_q):
        n_q = self.num_quantizers if n_q is None else int(n_q)
        if not 1 <= n_q <= self.num_quantizers:
            raise ValueError(f"n_q must be in [1, {self.num_quantizers}], got {n_q}")
        return n_q

    def quantize(self, z, n_q=None):
        """Codes of the first ``n_q`` codebooks: ``z[..., D] -> LongTensor[..., n_q]``."""
        residual, codes = z, []
        for q in self.quantizers[:self._check_n_q(n_q)]:
            c = q.quantize(residual)
            residual = residual - q.dequantize(c)
            codes.append(c)
        return torch.stack(codes, -1)

    def dequantize(self, codes):
        """Sum of the first ``k`` codebooks' codes: ``LongTensor[..., k] -> [..., D]``."""
        k = self._check_n_q(codes.shape[-1])
        return sum(self.quantizers[i].dequantize(codes[..., i]) for i in range(k))

    @torch.no_grad()
    def residual_norms(self, z, mask=None):
        """Mean residual norm after ``0 .. K`` codebooks (``[K + 1]``; entry 0 is ``|z|``).

        Example
        -------
        >>> rvq = ResidualVectorQuantizer(2, 4, 3)
        >>> rvq.residual_norms(torch.randn(2, 5, 3)).shape
        torch.Size([3])
        """
        if mask is not None:
            z = z[mask]
        residual = z.reshape(-1, self.dim)
        norms = [residual.norm(dim=-1).mean()]
        for q in self.quantizers:
            residual = residual - q.dequantize(q.quantize(residual))
            norms.append(residual.norm(dim=-1).mean())
        return torch.stack(norms)

    def sample_n_q(self, batch_size, device=None):
        """Codebooks each training item keeps (``LongTensor[B]`` in ``[1, K]``)."""
        K = self.num_quantizers
        n_q = torch.full((batch_size,), K, dtype=torch.long, device=device)
        if self.training and self.dropout_prob > 0 and K > 1:
            drop = torch.rand(batch_size, device=device) < self.dropout_prob
            n_q[drop] = torch.randint(1, K + 1, (int(drop.sum()),), device=device)
        return n_q

    def forward(self, z, mask=None, n_q=None):
        """Quantizes ``z[B, T, D]`` (``mask[B, T]``: valid frames).

        Arguments
        ---------
        z : torch.Tensor
            ``[B, T, D]`` latent.
        mask : torch.BoolTensor, optional
            ``[B, T]`` valid frames.
        n_q : int or torch.LongTensor, optional
            Codebooks to use (one for all, or ``[B]``); default: all ``K``,
            or a quantizer-dropout draw in training.

        Returns
        -------
        zq : torch.Tensor
            ``[B, T, D]`` sum of the used codebooks' codes (straight-through).
        codes : torch.LongTensor
            ``[B, T, K]`` codes of all ``K`` codebooks (those past an item's
            ``n_q`` are computed but not used).
        commit_loss : torch.Tensor
            Mean over the used codebooks of ``||r_k - sg(q_k)||^2``.
        """
        B, T, _ = z.shape
        if mask is None:
            mask = torch.ones(B, T, dtype=torch.bool, device=z.device)
        if n_q is None:
            n_q = self.sample_n_q(B, z.device)
        elif not torch.is_tensor(n_q):
            n_q = torch.full((B,), self._check_n_q(n_q), dtype=torch.long, device=z.device)
        residual, total, codes, commits = z, torch.zeros_like(z), [], []
        for k, q in enumerate(self.quantizers):
            active = n_q > k
            stage_mask = mask & active[:, None]
            out, c, commit = q(residual, stage_mask)
            qk = out.detach()  # the codes' vectors (forward value of the straight-through)
            total = total + qk * active[:, None, None].to(z.dtype)
            residual = residual - qk
            codes.append(c)
            if bool(stage_mask.any()):
                commits.append(commit)
        commit = torch.stack(commits).mean() if commits else z.new_zeros(())
        return z + (total - z).detach(), torch.stack(codes, -1), commit

    def extra_repr(self):
        return (f"num_quantizers={self.num_quantizers}, codebook_size={self.codebook_size}, "
                f"dim={self.dim}, dropout_prob={self.dropout_prob}")


class RVQCodec(FrameRateCodec):
    """Frame-rate RVQ codec: STFT -> ConvNeXt -> K residual VQs -> ConvNeXt -> iSTFT.

    Arguments
    ---------
    sample_rate : int
        Audio rate.
    n_fft : int
        STFT size of the input features and of the output head.
    hop_length : int
        Samples per token frame (frame rate = ``sample_rate / hop_length``).
    dim, intermediate_dim : int
        ConvNeXt width and MLP width.
    encoder_layers, decoder_layers : int
        ConvNeXt blocks in the encoder and in the decoder.
    latent_dim : int
        Quantized latent dimension.
    num_quantizers : int
        ``K`` residual codebooks.
    codebook_size : int
        Codes per codebook.
    quantizer_dropout : float
        Probability that a training item keeps only its first ``k ~ U{1..K}``
        codebooks.
    ema_decay, dead_code_threshold : float
        Codebook EMA decay and dead-code restart threshold.

    Example
    -------
    >>> model = RVQCodec(**TINY_RVQ_CONFIG)
    >>> wav = torch.randn(2, 100)
    >>> codes = model.encode(wav)
    >>> codes.shape, model.encode(wav, n_q=2).shape, model.decode(codes).shape
    (torch.Size([2, 7, 4]), torch.Size([2, 7, 2]), torch.Size([2, 112]))
    >>> model.num_codebooks, model.frame_rate
    (4, 1000.0)
    """

    def __init__(self, sample_rate=16000, n_fft=1280, hop_length=320, dim=256,
                 intermediate_dim=768, encoder_layers=3, decoder_layers=6, latent_dim=64,
                 num_quantizers=8, codebook_size=1024, quantizer_dropout=0.5,
                 ema_decay=0.99, dead_code_threshold=0.1):
        super().__init__(sample_rate, n_fft, hop_length, dim, intermediate_dim,
                         encoder_layers, decoder_layers, latent_dim)
        self.config = dict(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, dim=dim,
            intermediate_dim=intermediate_dim, encoder_layers=encoder_layers,
            decoder_layers=decoder_layers, latent_dim=latent_dim,
            num_quantizers=num_quantizers, codebook_size=codebook_size,
            quantizer_dropout=quantizer_dropout, ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold)
        self.quantizer = ResidualVectorQuantizer(
            num_quantizers, codebook_size, latent_dim, dropout_prob=quantizer_dropout,
            decay=ema_decay, dead_code_threshold=dead_code_threshold)

    @property
    def num_codebooks(self):
        """``K``."""
        return self.quantizer.num_quantizers

    def encode(self, wav, n_q=None):
        """``wav[B, S] -> LongTensor[B, ceil(S / hop), n_q]`` (default ``n_q = K``)."""
        return self.quantizer.quantize(self.latent(wav), n_q)

    def decode(self, codes):
        """``LongTensor[B, T, k] -> wav[B, T * hop]`` for any ``1 <= k <= K``."""
        return self.decode_latent(self.quantizer.dequantize(codes))

    def forward(self, wav, lens=None, n_q=None):
        """Reconstructs ``wav[B, S]`` with the first ``n_q`` codebooks (all by default).

        See :meth:`FrameRateCodec.forward` and :meth:`ResidualVectorQuantizer.forward`.
        """
        return super().forward(wav, lens, n_q=n_q)


__all__ = ["DEFAULT_RVQ_CONFIG", "RVQCodec", "ResidualVectorQuantizer", "TINY_RVQ_CONFIG"]
