"""SimCodec: a frame-rate single-quantizer codec built by codebook reorganisation.

GenSE (Yao et al., 2025, §3.2) trains its acoustic codec in two stages:

1. **Stage 1.** The latent (dimension ``D``) is split into two halves, each
   quantized by its own VQ codebook (:class:`GroupQuantizer`, *not* residual):
   a frame's code is the pair ``(i, j)``.
2. **Reorganisation.** The ``top_n`` most used codes of group 1 and the
   ``top_k`` most used codes of group 2 form one codebook of ``top_n * top_k``
   entries, entry ``a * top_k + b`` being ``[c1[top_n[a]] ; c2[top_k[b]]]``
   (:func:`reorganize`). Stage 2 continues training with that single codebook;
   the projections around the quantizer are re-initialised and the rest copied
   (:func:`to_stage2`).

Following the project's CPU budget (DESIGN §2) the codec works at the token
frame rate: STFT log-magnitudes in, ConvNeXt blocks, a Vocos-style
magnitude + phase head and an inverse STFT out. Nothing runs at sample rate
except the (i)STFT itself.

Example
-------
>>> model = SimCodec(**TINY_CONFIG)
>>> out = model(torch.randn(2, 480))
>>> out["wav"].shape, out["codes"].shape
(torch.Size([2, 480]), torch.Size([2, 30, 2]))
>>> stage2 = to_stage2(model, top_n=4, top_k=4)
>>> stage2.encode(torch.randn(2, 480)).shape, stage2.quantizer.codebook_size
(torch.Size([2, 30, 1]), 16)
"""

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .io import ConfigCheckpoint

logger = logging.getLogger(__name__)

#: A small default: 16 kHz, hop 200 (80 Hz), about 4.8 M parameters.
DEFAULT_CONFIG = dict(
    sample_rate=16000, n_fft=800, hop_length=200, dim=256, intermediate_dim=768,
    encoder_layers=4, decoder_layers=6, latent_dim=64, quantizer="group",
    codebook_size=1024,
)

#: A tiny configuration for tests and doctests (hop 16, 8 codes per group,
#: fast EMA so a 20-step test run keeps its codes alive).
TINY_CONFIG = dict(
    sample_rate=16000, n_fft=64, hop_length=16, dim=16, intermediate_dim=32,
    encoder_layers=1, decoder_layers=1, latent_dim=8, quantizer="group",
    codebook_size=8, ema_decay=0.8,
)


# --------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    """ConvNeXt 1-D block as in Vocos: depthwise conv, LayerNorm, MLP, layer scale.

    Arguments
    ---------
    dim : int
        Channels.
    intermediate_dim : int
        Hidden size of the pointwise MLP.
    kernel_size : int
        Depthwise convolution kernel (odd).
    layer_scale_init : float
        Initial value of the per-channel residual scale.

    Example
    -------
    >>> ConvNeXtBlock(16, 32)(torch.randn(2, 16, 10)).shape
    torch.Size([2, 16, 10])
    """

    def __init__(self, dim, intermediate_dim, kernel_size=7, layer_scale_init=None):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init))) \
            if layer_scale_init else None

    def forward(self, x):
        """``x[B, C, T] -> [B, C, T]``."""
        residual = x
        x = self.dwconv(x).transpose(1, 2)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = self.gamma * x
        return residual + x.transpose(1, 2)


class ConvNeXtStack(nn.Module):
    """Vocos backbone: conv embedding, LayerNorm, ConvNeXt blocks, LayerNorm.

    Arguments
    ---------
    in_channels : int
        Input channels.
    dim : int
        Model width.
    intermediate_dim : int
        MLP width inside each block.
    num_layers : int
        Number of ConvNeXt blocks.

    Example
    -------
    >>> ConvNeXtStack(5, 16, 32, 2)(torch.randn(2, 5, 10)).shape
    torch.Size([2, 16, 10])
    """

    def __init__(self, in_channels, dim, intermediate_dim, num_layers):
        super().__init__()
        self.embed = nn.Conv1d(in_channels, dim, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList([
            ConvNeXtBlock(dim, intermediate_dim, layer_scale_init=1.0 / max(1, num_layers))
            for _ in range(num_layers)
        ])
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        """``x[B, C_in, T] -> [B, dim, T]``."""
        x = self.embed(x)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x.transpose(1, 2)).transpose(1, 2)


class STFTFeatures(nn.Module):
    """Log-magnitude STFT with "same" padding: ``ceil(S / hop)`` frames.

    The waveform is right-padded to a multiple of ``hop_length`` and padded by
    ``(n_fft - hop_length) / 2`` on each side, so frame ``t`` is centred on
    samples ``[t * hop, (t + 1) * hop)`` and :class:`ISTFTHead` inverts it
    to exactly ``T * hop`` samples.

    Example
    -------
    >>> STFTFeatures(64, 16)(torch.randn(2, 100)).shape
    torch.Size([2, 33, 7])
    """

    def __init__(self, n_fft, hop_length):
        super().__init__()
        if (n_fft - hop_length) % 2:
            raise ValueError("n_fft - hop_length must be even")
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wav):
        """``wav[B, S] -> log|STFT| [B, n_fft // 2 + 1, ceil(S / hop)]``."""
        frames = math.ceil(wav.shape[-1] / self.hop_length)
        pad = (self.n_fft - self.hop_length) // 2
        wav = F.pad(wav, (pad, pad + frames * self.hop_length - wav.shape[-1]))
        spec = torch.stft(wav, self.n_fft, self.hop_length, window=self.window,
                          center=False, return_complex=True)
        return torch.log(spec.abs().clamp(min=1e-5))


class ISTFTHead(nn.Module):
    """Vocos head: linear to log-magnitude + phase, then "same"-padded iSTFT.

    Arguments
    ---------
    dim : int
        Input channels.
    n_fft : int
        FFT size (window length).
    hop_length : int
        Hop between frames.

    Example
    -------
    >>> ISTFTHead(16, 64, 16)(torch.randn(2, 16, 7)).shape
    torch.Size([2, 112])
    """

    def __init__(self, dim, n_fft, hop_length):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.out = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x):
        """``x[B, dim, T] -> wav[B, T * hop]``."""
        x = self.out(x.transpose(1, 2)).transpose(1, 2)
        log_mag, phase = x.chunk(2, dim=1)
        mag = torch.exp(log_mag).clamp(max=1e2)
        spec = torch.polar(mag, phase)
        return self.istft(spec)

    def istft(self, spec):
        """Inverse of :class:`STFTFeatures`' framing (overlap-add, window-normalised)."""
        T = spec.shape[-1]
        win, hop = self.n_fft, self.hop_length
        pad = (win - hop) // 2
        frames = torch.fft.irfft(spec, win, dim=1) * self.window[None, :, None]
        size = (T - 1) * hop + win
        y = F.fold(frames, (1, size), kernel_size=(1, win), stride=(1, hop))[:, 0, 0]
        env = F.fold(self.window.square()[None, :, None].expand(1, win, T),
                     (1, size), kernel_size=(1, win), stride=(1, hop))[0, 0, 0]
        return (y / env.clamp(min=1e-11))[:, pad:size - pad]


# --------------------------------------------------------------------------
# Quantizers
# --------------------------------------------------------------------------


def codebook_stats(counts):
    """Used codes and perplexity of a usage histogram.

    Arguments
    ---------
    counts : torch.Tensor
        ``[N]`` usage counts.

    Returns
    -------
    dict
        ``used`` (codes with a nonzero count), ``size``, ``perplexity``
        (``exp`` of the entropy of the usage distribution; 0 when unused).

    Example
    -------
    >>> codebook_stats(torch.tensor([1.0, 1.0, 0.0, 0.0]))
    {'used': 2, 'size': 4, 'perplexity': 2.0}
    """
    counts = counts.detach().float().cpu()
    total = float(counts.sum())
    if total <= 0:
        return {"used": 0, "size": counts.numel(), "perplexity": 0.0}
    p = counts / total
    entropy = -float((p[p > 0] * p[p > 0].log()).sum())
    return {"used": int((counts > 0).sum()), "size": counts.numel(),
            "perplexity": round(math.exp(entropy), 4)}


class VectorQuantizer(nn.Module):
    """Euclidean VQ with an EMA-updated codebook and per-code usage counts.

    The codebook (buffer ``embed``) is initialised from the first training
    batch, updated by exponential moving averages, and codes whose EMA
    cluster size falls below ``dead_code_threshold`` times a uniform share
    (EMA frames per step / codebook size) are restarted from random latents
    of the batch (without restarts a collapsed codebook makes every frame
    alike and the iSTFT output a buzz at the frame rate). ``usage`` accumulates how often each code
    was chosen (in training, or whenever ``track_usage`` is True) until
    :meth:`reset_usage`.

    Arguments
    ---------
    codebook_size : int
        Number of codes.
    dim : int
        Code dimension.
    decay : float
        EMA decay.
    dead_code_threshold : float
        Restart codes whose EMA cluster size is below this fraction of a
        uniform share (0: never).
    eps : float
        Laplace smoothing of cluster sizes.

    Example
    -------
    >>> vq = VectorQuantizer(16, 4)
    >>> zq, codes, commit = vq(torch.randn(2, 5, 4))
    >>> zq.shape, codes.shape, int(vq.usage.sum())
    (torch.Size([2, 5, 4]), torch.Size([2, 5]), 10)
    """

    def __init__(self, codebook_size, dim, decay=0.99, dead_code_threshold=0.1, eps=1e-5):
        super().__init__()
        self.codebook_size, self.dim = int(codebook_size), int(dim)
        self.decay, self.eps = decay, eps
        self.dead_code_threshold = dead_code_threshold
        self.track_usage = False
        self.register_buffer("embed", torch.randn(self.codebook_size, self.dim))
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.ones(self.codebook_size))
        self.register_buffer("usage", torch.zeros(self.codebook_size))
        self.register_buffer("initted", torch.tensor(False))

    def reset_usage(self):
        """Sets every usage count to zero."""
        self.usage.zero_()

    def stats(self):
        """:func:`codebook_stats` of the accumulated :attr:`usage`."""
        return codebook_stats(self.usage)

    def set_codebook(self, embed):
        """Replaces the codebook (and resets EMA statistics and usage)."""
        self.embed.copy_(embed)
        self.embed_avg.copy_(embed)
        self.cluster_size.fill_(1.0)
        self.usage.zero_()
        self.initted.fill_(True)

    def quantize(self, z):
        """Nearest code of each vector: ``z[..., D] -> LongTensor[...]``."""
        flat = z.reshape(-1, self.dim)
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.t()
                + self.embed.pow(2).sum(1)[None])
        return dist.argmin(1).view(z.shape[:-1])

    def dequantize(self, codes):
        """``LongTensor[...] -> [..., D]``."""
        return F.embedding(codes, self.embed)

    def forward(self, z, mask=None):
        """Quantizes ``z[B, T, D]`` (``mask[B, T]``: valid frames).

        Returns
        -------
        zq : torch.Tensor
            ``[B, T, D]`` quantized latent with a straight-through gradient.
        codes : torch.LongTensor
            ``[B, T]``.
        commit_loss : torch.Tensor
            ``||z - sg(zq)||^2`` averaged over valid frames and dimensions.
        """
        if mask is None:
            mask = torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)
        valid = z.detach()[mask].float()
        if self.training and not bool(self.initted) and valid.shape[0] > 0:
            self._init_codebook(valid)
        codes = self.quantize(z.detach())
        if self.training or self.track_usage:
            self.usage += torch.bincount(codes[mask], minlength=self.codebook_size).to(self.usage)
        if self.training and valid.shape[0] > 0:
            self._ema_update(valid, codes[mask])
        zq = self.dequantize(codes).to(z.dtype)
        m = mask.unsqueeze(-1).to(z.dtype)
        commit = ((z - zq.detach()).pow(2) * m).sum() / (m.sum() * self.dim).clamp(min=1)
        return z + (zq - z).detach(), codes, commit

    @torch.no_grad()
    def _sample(self, z, n):
        idx = torch.randint(0, z.shape[0], (n,), device=z.device)
        return z[idx] + (1e-3 * torch.randn(n, z.shape[1], device=z.device)
                         if z.shape[0] < n else 0.0)

    @torch.no_grad()
    def _init_codebook(self, z):
        self.set_codebook(self._sample(z, self.codebook_size))

    @torch.no_grad()
    def _ema_update(self, z, codes):
        counts = torch.bincount(codes, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.embed).index_add_(0, codes, z)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(self.embed_avg / size[:, None])
        if self.dead_code_threshold > 0:
            # Relative to a uniform share of the (EMA) frames per step.
            dead = self.cluster_size < self.dead_code_threshold * n / self.codebook_size
            if dead.any():
                new = self._sample(z, int(dead.sum()))
                self.embed[dead] = new
                self.embed_avg[dead] = new
                self.cluster_size[dead] = 1.0

    def extra_repr(self):
        return f"codebook_size={self.codebook_size}, dim={self.dim}"


class SingleQuantizer(VectorQuantizer):
    """The stage-2 single quantizer (a :class:`VectorQuantizer`).

    After :func:`reorganize`, ``top_n_index`` and ``top_k_index`` (not saved
    in the state dict) hold the stage-1 codes the codebook was built from.
    """

    def __init__(self, codebook_size, dim, **kwargs):
        super().__init__(codebook_size, dim, **kwargs)
        self.top_n_index = self.top_k_index = None


class QuantizerSet(nn.Module):
    """Bookkeeping shared by quantizers made of several :class:`VectorQuantizer` s.

    Subclasses list their codebooks in :attr:`parts` (groups side by side,
    or residual stages); usage, its reset and its statistics are per part.
    """

    @property
    def parts(self):
        """The :class:`VectorQuantizer` s, in token order."""
        raise NotImplementedError

    @property
    def usage(self):
        """Usage counts of each codebook, a list of ``[N_i]`` tensors."""
        return [q.usage for q in self.parts]

    def reset_usage(self):
        for q in self.parts:
            q.reset_usage()

    def stats(self):
        """:func:`codebook_stats` of each codebook."""
        return [q.stats() for q in self.parts]


class GroupQuantizer(QuantizerSet):
    """Two independent VQ codebooks, one per half of the latent (not residual).

    Arguments
    ---------
    codebook_size : int or tuple of int
        Codes per group (one value for both, or one per group).
    dim : int
        Latent dimension ``D`` (even); each group sees ``D / 2``.
    **kwargs
        Passed to each :class:`VectorQuantizer`.

    Example
    -------
    >>> gq = GroupQuantizer(8, 6)
    >>> zq, codes, commit = gq(torch.randn(2, 5, 6))
    >>> zq.shape, codes.shape, gq.flatten_codes(codes).max() < 64
    (torch.Size([2, 5, 6]), torch.Size([2, 5, 2]), tensor(True))
    """

    num_codebooks = 2

    def __init__(self, codebook_size, dim, **kwargs):
        super().__init__()
        if dim % 2:
            raise ValueError("GroupQuantizer needs an even latent dimension")
        sizes = (codebook_size, codebook_size) if isinstance(codebook_size, int) \
            else tuple(int(s) for s in codebook_size)
        self.dim = dim
        self.groups = nn.ModuleList([VectorQuantizer(s, dim // 2, **kwargs) for s in sizes])

    @property
    def codebook_sizes(self):
        return tuple(q.codebook_size for q in self.groups)

    @property
    def parts(self):
        return self.groups

    def quantize(self, z):
        """``z[..., D] -> LongTensor[..., 2]``."""
        halves = z.split(self.dim // 2, dim=-1)
        return torch.stack([q.quantize(h) for q, h in zip(self.groups, halves)], -1)

    def dequantize(self, codes):
        """``LongTensor[..., 2] -> [..., D]``."""
        return torch.cat([q.dequantize(codes[..., g]) for g, q in enumerate(self.groups)], -1)

    def flatten_codes(self, codes):
        """Pair ``(i, j)`` -> ``i * N_2 + j`` (``[..., 2] -> [...]``)."""
        return codes[..., 0] * self.groups[1].codebook_size + codes[..., 1]

    def unflatten_codes(self, flat):
        """Inverse of :meth:`flatten_codes`."""
        n2 = self.groups[1].codebook_size
        return torch.stack([flat // n2, flat % n2], -1)

    def forward(self, z, mask=None):
        """Like :meth:`VectorQuantizer.forward`, with ``codes[B, T, 2]``."""
        outs = [q(h, mask) for q, h in zip(self.groups, z.split(self.dim // 2, dim=-1))]
        zq = torch.cat([o[0] for o in outs], -1)
        codes = torch.stack([o[1] for o in outs], -1)
        return zq, codes, sum(o[2] for o in outs) / len(outs)


@torch.no_grad()
def reorganize(quantizer, top_n, top_k, usage=None):
    """Builds the single ``top_n * top_k`` codebook from a :class:`GroupQuantizer`.

    Arguments
    ---------
    quantizer : GroupQuantizer
        Stage-1 quantizer with usage counts.
    top_n, top_k : int
        Codes kept from group 1 and from group 2 (most used first; ties
        broken by the lower index).
    usage : tuple of torch.Tensor, optional
        Usage counts per group to select from instead of ``quantizer.usage``.

    Returns
    -------
    SingleQuantizer
        Entry ``a * top_k + b`` is ``cat(c1[top_n_index[a]], c2[top_k_index[b]])``.

    Example
    -------
    >>> gq = GroupQuantizer(8, 4)
    >>> gq.groups[0].usage[3] = 5.0
    >>> sq = reorganize(gq, top_n=2, top_k=4)
    >>> sq.codebook_size, sq.dim, sq.top_n_index[0].item()
    (8, 4, 3)
    """
    usage = list(usage) if usage is not None else quantizer.usage
    sizes = quantizer.codebook_sizes
    if not (0 < top_n <= sizes[0] and 0 < top_k <= sizes[1]):
        raise ValueError(f"top_n/top_k must be within the group sizes {sizes}")
    idx = []
    for counts, keep in zip(usage, (top_n, top_k)):
        counts = counts.detach().float().cpu()
        # Stable sort on -counts: most used first, lower index first on ties.
        order = torch.sort(-counts, stable=True).indices
        idx.append(order[:keep])
    c1 = quantizer.groups[0].embed.cpu()[idx[0]]
    c2 = quantizer.groups[1].embed.cpu()[idx[1]]
    embed = torch.cat([c1[:, None, :].expand(-1, top_k, -1),
                       c2[None, :, :].expand(top_n, -1, -1)], -1).reshape(top_n * top_k, -1)
    q0 = quantizer.groups[0]
    single = SingleQuantizer(top_n * top_k, quantizer.dim, decay=q0.decay,
                             dead_code_threshold=q0.dead_code_threshold, eps=q0.eps)
    single.set_codebook(embed)
    single.top_n_index, single.top_k_index = idx
    return single.to(q0.embed.device)


# --------------------------------------------------------------------------
# The codec
# --------------------------------------------------------------------------


class FrameRateCodec(ConfigCheckpoint, nn.Module):
    """The frame-rate codec body shared by :class:`SimCodec` and the RVQ codec.

    STFT log-magnitudes -> ConvNeXt encoder -> ``proj_in`` (latent ``D``) ->
    *quantizer* -> ``proj_out`` -> ConvNeXt decoder -> Vocos-style iSTFT head.
    Subclasses set ``self.quantizer`` and ``self.config``.

    Arguments
    ---------
    sample_rate : int
        Audio rate.
    n_fft : int
        STFT size of the input features and of the output head.
    hop_length : int
        Samples per token frame (frame rate = ``sample_rate / hop_length``).
    dim : int
        ConvNeXt width.
    intermediate_dim : int
        ConvNeXt MLP width.
    encoder_layers, decoder_layers : int
        ConvNeXt blocks in the encoder and in the decoder.
    latent_dim : int
        Quantized latent dimension ``D``.

    Example
    -------
    >>> body = FrameRateCodec(16000, 64, 16, 16, 32, 1, 1, 8)
    >>> z = body.latent(torch.randn(2, 100))
    >>> z.shape, body.decode_latent(z).shape
    (torch.Size([2, 7, 8]), torch.Size([2, 112]))
    """

    #: What makes the tokens is always stored as it is (``save(dtype=...)``
    #: converts the decoder only), so a re-stored codec keeps its tokens.
    exact_prefixes = ("features.", "encoder.", "proj_in.", "quantizer.")
    #: Buffers under those prefixes that count the tokens rather than make
    #: them (usage statistics): left out of the tokenizer fingerprint.
    token_statistics = ("usage",)

    def __init__(self, sample_rate, n_fft, hop_length, dim, intermediate_dim, encoder_layers,
                 decoder_layers, latent_dim):
        super().__init__()
        self.sample_rate, self.hop_length = sample_rate, hop_length
        self.features = STFTFeatures(n_fft, hop_length)
        self.encoder = ConvNeXtStack(n_fft // 2 + 1, dim, intermediate_dim, encoder_layers)
        self.proj_in = nn.Linear(dim, latent_dim)
        self.proj_out = nn.Linear(latent_dim, dim)
        self.decoder = ConvNeXtStack(dim, dim, intermediate_dim, decoder_layers)
        self.head = ISTFTHead(dim, n_fft, hop_length)

    @property
    def frame_rate(self):
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples):
        return math.ceil(num_samples / self.hop_length)

    def frame_mask(self, num_samples, lens=None, device=None):
        """``[B, T]`` bool mask of valid frames from relative lengths."""
        T = self.num_frames(num_samples)
        if lens is None:
            return None
        frames = torch.ceil(lens.to(device).float() * num_samples / self.hop_length)
        return torch.arange(T, device=device)[None, :] < frames[:, None]

    def valid_codes(self, wav, lens=None):
        """``[N, K]`` codes of the valid frames of a padded batch ``wav[B, S]``
        (``N`` = frames within ``lens``; all ``B * T`` without ``lens``)."""
        codes = self.encode(wav)
        if codes.dim() == 2:
            codes = codes.unsqueeze(-1)
        mask = self.frame_mask(wav.shape[-1], lens, wav.device)
        if mask is not None:
            codes = codes[mask]
        return codes.reshape(-1, codes.shape[-1])

    def latent(self, wav):
        """``wav[B, S] -> z[B, T, D]`` (pre-quantization latent)."""
        return self.proj_in(self.encoder(self.features(wav)).transpose(1, 2))

    def decode_latent(self, zq):
        """``zq[B, T, D] -> wav[B, T * hop]``."""
        return self.head(self.decoder(self.proj_out(zq).transpose(1, 2)))

    def forward(self, wav, lens=None, **quantizer_kwargs):
        """Reconstructs ``wav[B, S]``.

        ``quantizer_kwargs`` go to the quantizer (e.g. ``n_q`` of the RVQ codec).

        Returns
        -------
        dict
            ``wav`` ``[B, S]`` reconstruction, ``codes`` ``[B, T, K]``,
            ``commit_loss`` (scalar), ``latent`` and ``quantized`` ``[B, T, D]``,
            ``mask`` ``[B, T]`` (None without ``lens``).
        """
        mask = self.frame_mask(wav.shape[-1], lens, wav.device)
        z = self.latent(wav)
        zq, codes, commit = self.quantizer(z, mask, **quantizer_kwargs)
        out = self.decode_latent(zq)[:, :wav.shape[-1]]
        if codes.dim() == 2:
            codes = codes.unsqueeze(-1)
        return {"wav": out, "codes": codes, "commit_loss": commit, "latent": z,
                "quantized": zq, "mask": mask}


class SimCodec(FrameRateCodec):
    """Frame-rate codec: STFT -> ConvNeXt encoder -> VQ -> ConvNeXt decoder -> iSTFT.

    Arguments
    ---------
    sample_rate : int
        Audio rate.
    n_fft : int
        STFT size of the input features and of the output head.
    hop_length : int
        Samples per token frame (frame rate = ``sample_rate / hop_length``).
    dim : int
        ConvNeXt width.
    intermediate_dim : int
        ConvNeXt MLP width.
    encoder_layers, decoder_layers : int
        ConvNeXt blocks in the encoder and in the decoder.
    latent_dim : int
        Quantized latent dimension ``D``.
    quantizer : str
        ``"group"`` (stage 1, two codebooks on ``D / 2`` each) or ``"single"``
        (stage 2).
    codebook_size : int or list of int
        Codes per group (``"group"``; one value, or one per group, e.g.
        ``[64, 128]`` so that reorganisation keeps every code) or in total
        (``"single"``).
    ema_decay : float
        EMA decay of the codebooks.
    dead_code_threshold : float
        Codes used less than this fraction of a uniform share are restarted.

    Example
    -------
    >>> model = SimCodec(**TINY_CONFIG)
    >>> wav = torch.randn(2, 100)
    >>> codes = model.encode(wav)
    >>> codes.shape, model.decode(codes).shape, model(wav)["wav"].shape
    (torch.Size([2, 7, 2]), torch.Size([2, 112]), torch.Size([2, 100]))
    """

    def __init__(self, sample_rate=16000, n_fft=800, hop_length=200, dim=256,
                 intermediate_dim=768, encoder_layers=4, decoder_layers=6, latent_dim=64,
                 quantizer="group", codebook_size=1024, ema_decay=0.99,
                 dead_code_threshold=0.1):
        super().__init__(sample_rate, n_fft, hop_length, dim, intermediate_dim,
                         encoder_layers, decoder_layers, latent_dim)
        if not isinstance(codebook_size, int):
            codebook_size = [int(c) for c in codebook_size]
        self.config = dict(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, dim=dim,
            intermediate_dim=intermediate_dim, encoder_layers=encoder_layers,
            decoder_layers=decoder_layers, latent_dim=latent_dim, quantizer=quantizer,
            codebook_size=codebook_size, ema_decay=ema_decay,
            dead_code_threshold=dead_code_threshold)
        vq_args = dict(decay=ema_decay, dead_code_threshold=dead_code_threshold)
        if quantizer == "group":
            self.quantizer = GroupQuantizer(codebook_size, latent_dim, **vq_args)
        elif quantizer == "single":
            if not isinstance(codebook_size, int):
                raise ValueError("a single quantizer takes one codebook_size")
            self.quantizer = SingleQuantizer(codebook_size, latent_dim, **vq_args)
        else:
            raise ValueError(f"quantizer must be 'group' or 'single', got {quantizer!r}")

    @property
    def num_codebooks(self):
        """Codes per frame: 2 (group) or 1 (single)."""
        return 2 if isinstance(self.quantizer, GroupQuantizer) else 1

    def encode(self, wav):
        """``wav[B, S] -> LongTensor[B, ceil(S / hop), K]`` (K = :attr:`num_codebooks`)."""
        codes = self.quantizer.quantize(self.latent(wav))
        return codes if codes.dim() == 3 else codes.unsqueeze(-1)

    def decode(self, codes):
        """``LongTensor[B, T, K] -> wav[B, T * hop]``."""
        if self.num_codebooks == 1 and codes.dim() == 3:
            codes = codes[..., 0]
        return self.decode_latent(self.quantizer.dequantize(codes))



@torch.no_grad()
def codebook_usage(model, wav, lens=None):
    """Codebook usage of ``model`` on a batch (eval mode; nothing is updated).

    Returns
    -------
    dict
        ``frames`` counted, ``tokens`` (stats of the flattened token: the pair
        ``(i, j)`` for stage 1, the code for stage 2) and, for stage 1,
        ``groups`` (stats of each group).

    Example
    -------
    >>> m = SimCodec(**TINY_CONFIG)
    >>> codebook_usage(m, torch.randn(1, 160))["frames"]
    10
    """
    codes = model.valid_codes(wav, lens)
    q = model.quantizer
    if isinstance(q, GroupQuantizer):
        flat = q.flatten_codes(codes)
        n = math.prod(q.codebook_sizes)
        groups = [codebook_stats(torch.bincount(codes[:, g], minlength=s))
                  for g, s in enumerate(q.codebook_sizes)]
    else:
        flat, n, groups = codes[:, 0], q.codebook_size, None
    out = {"frames": int(codes.shape[0]),
           "tokens": codebook_stats(torch.bincount(flat, minlength=n))}
    if groups is not None:
        out["groups"] = groups
    return out


def to_stage2(model, top_n, top_k, wav=None, lens=None, reinit_projections=True,
              min_kept_share=None):
    """The stage-2 model: single ``top_n * top_k`` codebook from reorganisation.

    Encoder and decoder weights are copied and the codebook is built by
    :func:`reorganize` from the stage-1 usage counts. The projections around
    the quantizer (``proj_in``, ``proj_out``) are freshly initialised (GenSE's
    description) or, with ``reinit_projections=False``, copied too: then a
    frame whose stage-1 pair is among the kept codes gets exactly the stage-2
    code of that pair, and with stage-1 group sizes equal (or close) to
    ``top_n`` and ``top_k`` the quantized space stays (almost) what stage 1
    learnt (the kept share of usage is reported).

    Arguments
    ---------
    model : SimCodec
        Stage-1 model (``quantizer="group"``) with usage counts.
    top_n, top_k : int
        Codes kept from each group.
    wav, lens : torch.Tensor, optional
        A batch on which to measure usage before and after (see
        :func:`codebook_usage`); without it "before" is the stage-1 counts.
    reinit_projections : bool
        Re-initialise ``proj_in`` / ``proj_out`` (True) or copy them.
    min_kept_share : float, optional
        The share of each group's usage the kept codes must cover; a lower
        share is logged as a warning and flagged in the report
        (``meets_min_kept_share``).

    Returns
    -------
    SimCodec
        Stage-2 model; ``model.reorganization`` holds ``before``/``after``
        usage, the kept share of stage-1 usage, the selected indices and,
        with ``wav``, ``same_code_share``: the share of frames whose stage-2
        code is their stage-1 pair.

    Example
    -------
    >>> s1 = SimCodec(**TINY_CONFIG)
    >>> s2 = to_stage2(s1, 2, 4, wav=torch.randn(2, 320))
    >>> s2.config["quantizer"], s2.config["codebook_size"], s2.reorganization["after"]["frames"]
    ('single', 8, 40)
    """
    if not isinstance(model.quantizer, GroupQuantizer):
        raise ValueError("to_stage2 needs a stage-1 model (quantizer='group')")
    usage = [u.detach().clone() for u in model.quantizer.usage]
    before = codebook_usage(model, wav, lens) if wav is not None \
        else {"groups": model.quantizer.stats()}
    config = dict(model.config, quantizer="single", codebook_size=top_n * top_k)
    device = next(model.parameters()).device
    new = SimCodec(**config).to(device)
    fresh = ("quantizer.", "proj_in.", "proj_out.") if reinit_projections else ("quantizer.",)
    keep = {k: v for k, v in model.state_dict().items() if not k.startswith(fresh)}
    missing, unexpected = new.load_state_dict(keep, strict=False)
    assert not unexpected and all(k.startswith(fresh) for k in missing), (missing, unexpected)
    new.quantizer = reorganize(model.quantizer, top_n, top_k, usage=usage)
    new.train(model.training)
    kept = [float(u[i].sum() / u.sum().clamp(min=1e-12))
            for u, i in zip(usage, (new.quantizer.top_n_index, new.quantizer.top_k_index))]
    info = {"before": before, "kept_usage_share": kept,
            "group_sizes": list(model.quantizer.codebook_sizes),
            "reinit_projections": bool(reinit_projections),
            "top_n_index": new.quantizer.top_n_index.tolist(),
            "top_k_index": new.quantizer.top_k_index.tolist()}
    if min_kept_share is not None:
        info["min_kept_share"] = float(min_kept_share)
        info["meets_min_kept_share"] = all(k >= min_kept_share for k in kept)
        if not info["meets_min_kept_share"]:
            logger.warning("SimCodec reorganisation keeps only %s of the stage-1 usage "
                           "(wanted >= %.2f): make the stage-1 groups closer to %d and %d",
                           [round(k, 3) for k in kept], min_kept_share, top_n, top_k)
    if wav is not None:
        info["after"] = codebook_usage(new, wav, lens)
        info["same_code_share"] = same_code_share(model, new, wav, lens)
    logger.info("SimCodec reorganisation %dx%d: before %s, after %s, kept usage %s",
                top_n, top_k, before, info.get("after"), kept)
    new.reorganization = info
    return new


@torch.no_grad()
def same_code_share(stage1, stage2, wav, lens=None):
    """Share of valid frames whose stage-2 code is the reorganised stage-1 pair.

    Stage-1 pair ``(i, j)`` maps to stage-2 code ``a * top_k + b`` where
    ``top_n_index[a] = i`` and ``top_k_index[b] = j``; a pair with a code
    that was not kept counts as changed.

    Example
    -------
    >>> s1 = SimCodec(**TINY_CONFIG)
    >>> s2 = to_stage2(s1, 8, 8, reinit_projections=False)
    >>> same_code_share(s1, s2, torch.randn(2, 320))
    1.0
    """
    q = stage2.quantizer
    n1, n2 = stage1.quantizer.codebook_sizes
    rank_n = torch.full((n1,), -1, dtype=torch.long)
    rank_n[q.top_n_index] = torch.arange(len(q.top_n_index))
    rank_k = torch.full((n2,), -1, dtype=torch.long)
    rank_k[q.top_k_index] = torch.arange(len(q.top_k_index))
    pairs = stage1.encode(wav).cpu()
    codes = stage2.encode(wav)[..., 0].cpu()
    a, b = rank_n[pairs[..., 0]], rank_k[pairs[..., 1]]
    expected = torch.where((a >= 0) & (b >= 0), a * len(q.top_k_index) + b,
                           torch.full_like(a, -1))
    mask = stage1.frame_mask(wav.shape[-1], lens, wav.device)
    same = (expected == codes)
    if mask is not None:
        same = same[mask.cpu()]
    return round(float(same.float().mean()), 4) if same.numel() else float("nan")


def count_parameters(module):
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "DEFAULT_CONFIG",
    "TINY_CONFIG",
    "ConvNeXtBlock",
    "ConvNeXtStack",
    "FrameRateCodec",
    "GroupQuantizer",
    "ISTFTHead",
    "STFTFeatures",
    "SimCodec",
    "SingleQuantizer",
    "VectorQuantizer",
    "codebook_stats",
    "codebook_usage",
    "count_parameters",
    "reorganize",
    "same_code_share",
    "to_stage2",
]
