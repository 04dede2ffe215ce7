"""MAGE-style masked generative enhancer over discrete audio tokens.

The backbone is a *bidirectional* transformer built from ``transformers``'
Qwen2 decoder layers (RMSNorm, SwiGLU MLP, grouped-query attention with RoPE),
called with a key-padding mask and no causal mask, so every frame attends to
every valid frame. It predicts the clean codec tokens of the masked frames
from:

* the partly masked clean tokens (mask token id = ``vocab_size``),
* optionally the tokens of the noisy signal (:attr:`noisy_vocab_size`),
* optionally band-aware features of the noisy spectrogram
  (:class:`BandAwareEncoder`),
* optionally a speaker embedding.

Conditioning inputs are summed per frame (each through its own embedding or
projection). The speaker embedding is projected to ``hidden_size``, added to
every frame *and* prepended as one extra "speaker" position (RoPE position 0,
frames take positions ``1..T``); that position is dropped from the outputs.

:meth:`MaskedEnhancer.from_pretrained_qwen2` builds the backbone from a subset
of the decoder layers of a local Qwen2/Qwen2.5 checkpoint (selective layer
retention: MAGE keeps a few layers of Qwen2.5-0.5B to get a ~200M model).

Example
-------
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = MaskedEnhancer(vocab_size=32, **TINY_CONFIG)
>>> tokens = torch.randint(0, 32, (2, 10, 1))
>>> mask = torch.rand(2, 10, 1) < 0.5
>>> inputs = tokens.masked_fill(mask, model.mask_id)
>>> out = model(inputs, lens=torch.tensor([1.0, 0.6]), noisy_tokens=tokens)
>>> out["logits"].shape, out["hidden"].shape
(torch.Size([2, 10, 1, 32]), torch.Size([2, 10, 32]))
>>> stats = model.loss(out["logits"], tokens, mask)
>>> sorted(stats)
['acc', 'loss', 'n']
"""

import math
import os
from functools import partial
from itertools import pairwise

import torch
import torch.nn.functional as F
from speechbrain.dataio.dataio import length_to_mask
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import Qwen2Config
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)

from .io import ConfigCheckpoint

#: CPU-sized default backbone (8 layers, width 384). Use as
#: ``MaskedEnhancer(vocab_size=..., **SMALL_CONFIG)``.
SMALL_CONFIG = dict(
    num_codebooks=1,
    hidden_size=384,
    num_layers=8,
    num_heads=6,
    num_kv_heads=None,
    intermediate_size=1024,
    max_position=4096,
)

#: Minimal configuration for tests and doctests.
TINY_CONFIG = dict(
    num_codebooks=1,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    intermediate_size=64,
    max_position=512,
)

#: Attention implementations supported (each gets a 4-D key-padding mask).
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")


def _mel(hz):
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _inv_mel(mel):
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_band_edges(n_fft, num_bands, sample_rate=16000):
    """Contiguous band edges (in STFT bins) equally spaced on the mel scale.

    Arguments
    ---------
    n_fft : int
        FFT size (``n_fft // 2 + 1`` bins).
    num_bands : int
        Number of bands.
    sample_rate : int
        Audio rate, in Hz.

    Returns
    -------
    list of int
        ``num_bands + 1`` strictly increasing bin indices, from 0 to
        ``n_fft // 2 + 1``; band ``b`` covers bins ``[edges[b], edges[b + 1])``.

    Example
    -------
    >>> mel_band_edges(800, 4)
    [0, 31, 88, 197, 401]
    """
    num_bins = n_fft // 2 + 1
    if not 1 <= num_bands <= num_bins:
        raise ValueError(f"num_bands must be in [1, {num_bins}], got {num_bands}")
    top = _mel(sample_rate / 2)
    hz_per_bin = sample_rate / n_fft
    edges = [0]
    for b in range(1, num_bands):
        edge = round(_inv_mel(top * b / num_bands) / hz_per_bin)
        # keep every band at least one bin wide, leaving room for those above
        edges.append(min(max(edge, edges[-1] + 1), num_bins - (num_bands - b)))
    edges.append(num_bins)
    return edges


class BandEncoder(nn.Module):
    """Encoder of one frequency band: Linear + LayerNorm + GELU, then a
    residual depthwise convolution over time.

    Arguments
    ---------
    num_bins : int
        Frequency bins of the band.
    dim : int
        Output channels.
    kernel_size : int
        Time kernel of the depthwise convolution (odd).

    Example
    -------
    >>> enc = BandEncoder(10, 8)
    >>> enc(torch.randn(2, 7, 10)).shape
    torch.Size([2, 7, 8])
    """

    def __init__(self, num_bins, dim, kernel_size=5):
        super().__init__()
        self.proj = nn.Linear(num_bins, dim)
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pointwise = nn.Linear(dim, dim)

    def forward(self, x, frame_mask=None):
        """Encodes ``x[B, T, num_bins]`` into ``[B, T, dim]``.

        Arguments
        ---------
        x : torch.Tensor
            Band features ``[B, T, num_bins]``.
        frame_mask : torch.Tensor, optional
            ``[B, T, 1]`` float mask; padded frames are zeroed before the time
            convolution so they do not leak into valid ones.

        Returns
        -------
        torch.Tensor
            ``[B, T, dim]``.
        """
        x = F.gelu(self.norm(self.proj(x)))
        if frame_mask is not None:
            x = x * frame_mask
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.pointwise(F.gelu(y))


class BandAwareEncoder(nn.Module):
    """MAGE's band-aware conditioning on the noisy log-magnitude spectrogram.

    The centred STFT (``S // hop_length + 1`` frames) is split into
    ``num_bands`` contiguous frequency bands, each encoded by its own
    :class:`BandEncoder`; the band outputs are concatenated and projected to
    ``out_dim``. Separate band encoders let the model treat low bands (voiced
    speech) and high bands (fricatives, most broadband noise) differently.

    Arguments
    ---------
    n_fft : int
        FFT and window size (Hann window).
    hop_length : int
        STFT hop; should equal the token hop so that frames align.
    num_bands : int
        Number of bands (ignored when ``band_edges`` is given).
    dim : int
        Channels of each band encoder.
    out_dim : int
        Output features per frame.
    band_edges : list of int, optional
        Explicit band edges in STFT bins (``num_bands + 1`` increasing values
        from 0 to ``n_fft // 2 + 1``). Default: equal widths on the mel scale
        (:func:`mel_band_edges`), i.e. narrow low bands and wide high bands.
    sample_rate : int
        Audio rate, used for the default mel-scale edges.
    kernel_size : int
        Time kernel of the band encoders' depthwise convolutions.
    eps : float
        Floor of the magnitude before the log.

    Example
    -------
    >>> enc = BandAwareEncoder(n_fft=64, hop_length=16, num_bands=3, dim=8, out_dim=12)
    >>> enc.band_edges
    [0, 4, 12, 33]
    >>> wav = torch.randn(2, 160)
    >>> enc(wav).shape  # 160 // 16 + 1 frames
    torch.Size([2, 11, 12])
    >>> enc(wav, num_frames=10).shape, enc(wav, num_frames=13).shape
    (torch.Size([2, 10, 12]), torch.Size([2, 13, 12]))
    """

    def __init__(self, n_fft=800, hop_length=200, num_bands=4, dim=64, out_dim=256,
                 band_edges=None, sample_rate=16000, kernel_size=5, eps=1e-5):
        super().__init__()
        num_bins = n_fft // 2 + 1
        if band_edges is None:
            band_edges = mel_band_edges(n_fft, num_bands, sample_rate)
        band_edges = [int(e) for e in band_edges]
        if (len(band_edges) < 2 or band_edges[0] != 0 or band_edges[-1] != num_bins
                or any(b <= a for a, b in pairwise(band_edges))):
            raise ValueError(
                f"band_edges must increase strictly from 0 to {num_bins}, got {band_edges}")
        self.n_fft, self.hop_length, self.eps = n_fft, hop_length, eps
        self.band_edges = band_edges
        self.out_dim = out_dim
        self.config = dict(n_fft=n_fft, hop_length=hop_length, num_bands=len(band_edges) - 1,
                           dim=dim, out_dim=out_dim, band_edges=list(band_edges),
                           sample_rate=sample_rate, kernel_size=kernel_size, eps=eps)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.bands = nn.ModuleList([BandEncoder(hi - lo, dim, kernel_size)
                                    for lo, hi in pairwise(band_edges)])
        self.out = nn.Linear(dim * len(self.bands), out_dim)

    def spectrogram(self, wav):
        """Log-magnitude of the centred STFT.

        Arguments
        ---------
        wav : torch.Tensor
            Waveforms ``[B, S]``.

        Returns
        -------
        torch.Tensor
            ``[B, S // hop_length + 1, n_fft // 2 + 1]``.
        """
        spec = torch.stft(wav.float(), self.n_fft, self.hop_length, window=self.window,
                          center=True, return_complex=True)
        return spec.abs().clamp(min=self.eps).log().transpose(1, 2)

    def forward(self, wav, num_frames=None, lens=None):
        """Band-aware features of ``wav``.

        Arguments
        ---------
        wav : torch.Tensor
            Noisy waveforms ``[B, S]``.
        num_frames : int, optional
            Crop the STFT frames to this many (the token length), or append
            all-zero output frames up to it; default ``S // hop_length + 1``.
        lens : torch.Tensor, optional
            Relative valid lengths ``[B]`` (of the ``num_frames`` frames):
            features of padded frames are zeroed.

        Returns
        -------
        torch.Tensor
            ``[B, num_frames, out_dim]``.
        """
        if wav.dim() != 2:
            raise ValueError(f"BandAwareEncoder expects wav [B, S], got shape {tuple(wav.shape)}")
        spec = self.spectrogram(wav)
        total = spec.shape[1] if num_frames is None else num_frames
        spec = spec[:, :total]
        frame_mask = None
        if lens is not None:
            keep = torch.round(lens.float() * total).clamp(max=spec.shape[1])
            frame_mask = length_to_mask(keep, spec.shape[1], dtype=spec.dtype,
                                        device=spec.device).unsqueeze(-1)
        feats = [band(spec[..., lo:hi], frame_mask)
                 for band, (lo, hi) in zip(self.bands, pairwise(self.band_edges))]
        out = self.out(torch.cat(feats, dim=-1))
        if frame_mask is not None:
            out = out * frame_mask
        return F.pad(out, (0, 0, 0, total - out.shape[1]))  # frames past the signal: zeros


def align_frames(features, num_frames):
    """Resamples frame features ``[B, T_in, D]`` to ``num_frames`` frames (linear).

    Content features come at their own rate (Whisper: 50 Hz) and the tokens
    at the codec's (80 Hz SimCodec, 50 Hz RVQ); both cover the same padded
    signal, so a linear resampling of the time axis lines them up.

    Example
    -------
    >>> x = torch.arange(4.0).view(1, 4, 1)
    >>> align_frames(x, 8)[0, :, 0].tolist()
    [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0]
    >>> align_frames(x, 4) is x
    True
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [B, T, D], got {tuple(features.shape)}")
    if features.shape[1] == num_frames:
        return features
    out = F.interpolate(features.transpose(1, 2).float(), size=int(num_frames), mode="linear",
                        align_corners=False)
    return out.transpose(1, 2).to(features.dtype)


def _head_out(head, hidden, dtype):
    """``head(hidden)`` in ``dtype`` (no copy when it already is)."""
    out = head(hidden)
    return out if out.dtype == dtype else out.to(dtype)


class MaskedEnhancer(ConfigCheckpoint, nn.Module):
    """Bidirectional masked-token transformer (MAGE backbone) on Qwen2 layers.

    Arguments
    ---------
    vocab_size : int
        Codec vocabulary per codebook. The mask token id is ``vocab_size``, so
        each clean-token embedding has ``vocab_size + 1`` rows; the heads
        predict ``vocab_size`` logits (never the mask token).
    num_codebooks : int
        Codebooks ``K`` of the tokens ``[B, T, K]`` (MAGE: 1). One embedding
        table per codebook, summed; one output head per codebook.
    hidden_size : int
        Transformer width.
    num_layers : int
        Number of Qwen2 decoder layers (used without causal mask).
    num_heads : int
        Attention heads (``hidden_size`` must be divisible by it; the head
        size must be even for RoPE).
    num_kv_heads : int, optional
        Key/value heads (grouped-query attention); default ``num_heads``.
    intermediate_size : int, optional
        SwiGLU width; default ``8/3 * hidden_size`` rounded up to a multiple
        of 64 (the same MLP parameter count as a 4x GELU MLP).
    max_position : int
        Longest input (frames, plus one with a speaker position).
    dropout : float
        Dropout on the summed input embeddings and on the attention weights.
    noisy_vocab_size : int, optional
        Vocabulary of the noisy-token conditioning; ``None`` means
        ``vocab_size``, ``0`` disables the noisy-token input.
    band_encoder : BandAwareEncoder or dict, optional
        Band-aware encoder of the noisy waveform (a dict is its ``config``);
        ``None`` disables the waveform input.
    speaker_dim : int, optional
        Size of the speaker embedding input; ``None`` disables it.
    content_dim : int, optional
        Size of frame-aligned content features of the noisy input (e.g.
        Whisper encoder states, :class:`~speechbrain_gense.tokenizers.semantic.WhisperFeatures`,
        resampled to the token frames by :func:`align_frames`), projected and
        added to every frame; ``None`` (default) disables the input.
    rope_theta : float
        RoPE base.
    noisy_codebooks : int, optional
        Codebooks of the noisy tokens; default ``num_codebooks``.
    rms_norm_eps : float
        Epsilon of the RMSNorms.
    hidden_act : str
        MLP activation (``transformers`` name).
    attn_implementation : str
        ``"sdpa"`` (default; given a boolean 4-D padding mask) or ``"eager"``
        (given the equivalent additive mask). Layers are called with
        ``is_causal=False`` and have ``self_attn.is_causal = False``, so sdpa
        never falls back to its causal path.

    Example
    -------
    >>> enc = BandAwareEncoder(n_fft=64, hop_length=16, num_bands=2, dim=8, out_dim=16)
    >>> model = MaskedEnhancer(vocab_size=16, num_codebooks=2, hidden_size=32, num_layers=1,
    ...                        num_heads=2, noisy_vocab_size=0, band_encoder=enc, speaker_dim=8)
    >>> tokens = torch.randint(0, 17, (2, 6, 2))
    >>> out = model(tokens, noisy_wav=torch.randn(2, 96), speaker=torch.randn(2, 8))
    >>> out["logits"].shape, out["hidden"].shape
    (torch.Size([2, 6, 2, 16]), torch.Size([2, 6, 32]))
    >>> rebuilt = MaskedEnhancer(**model.config)
    >>> rebuilt.num_parameters() == model.num_parameters()
    True
    """

    def __init__(self, vocab_size, num_codebooks=1, hidden_size=384, num_layers=8, num_heads=6,
                 num_kv_heads=None, intermediate_size=None, max_position=4096, dropout=0.0,
                 noisy_vocab_size=None, band_encoder=None, speaker_dim=None, rope_theta=10000.0,
                 noisy_codebooks=None, rms_norm_eps=1e-6, hidden_act="silu",
                 attn_implementation="sdpa", content_dim=None):
        super().__init__()
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(
                f"hidden_size {hidden_size} must split into {num_heads} heads of even size")
        if attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, "
                             f"got {attn_implementation!r}")
        num_kv_heads = num_kv_heads or num_heads
        if intermediate_size is None:
            intermediate_size = 64 * math.ceil(hidden_size * 8 / 3 / 64)
        if noisy_vocab_size is None:
            noisy_vocab_size = vocab_size
        noisy_codebooks = noisy_codebooks or num_codebooks
        if isinstance(band_encoder, dict):
            band_encoder = BandAwareEncoder(**band_encoder)
        self.config = dict(
            vocab_size=vocab_size, num_codebooks=num_codebooks, hidden_size=hidden_size,
            num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
            intermediate_size=intermediate_size, max_position=max_position, dropout=dropout,
            noisy_vocab_size=noisy_vocab_size, rope_theta=float(rope_theta),
            band_encoder=None if band_encoder is None else dict(band_encoder.config),
            speaker_dim=speaker_dim, noisy_codebooks=noisy_codebooks,
            rms_norm_eps=rms_norm_eps, hidden_act=hidden_act,
            attn_implementation=attn_implementation,
        )
        if content_dim is not None:  # only when used: older checkpoints' configs stay the same
            self.config["content_dim"] = int(content_dim)
        self.vocab_size, self.num_codebooks = vocab_size, num_codebooks
        self.noisy_vocab_size, self.noisy_codebooks = noisy_vocab_size, noisy_codebooks
        self.speaker_dim, self.max_position = speaker_dim, max_position
        self.gradient_checkpointing = False

        self.qwen_config = Qwen2Config(
            vocab_size=vocab_size + 1, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads, hidden_act=hidden_act,
            max_position_embeddings=max_position, rms_norm_eps=rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
            attention_dropout=dropout, use_sliding_window=False, use_cache=False,
            attn_implementation=attn_implementation,
        )
        self.embed = nn.ModuleList([nn.Embedding(vocab_size + 1, hidden_size)
                                    for _ in range(num_codebooks)])
        self.noisy_embed = None
        if noisy_vocab_size:
            self.noisy_embed = nn.ModuleList([nn.Embedding(noisy_vocab_size, hidden_size)
                                              for _ in range(noisy_codebooks)])
        self.band_encoder, self.band_proj = band_encoder, None
        if band_encoder is not None:
            self.band_proj = nn.Linear(band_encoder.out_dim, hidden_size)
        self.speaker_proj = None if speaker_dim is None else nn.Linear(speaker_dim, hidden_size)
        self.content_dim = None if content_dim is None else int(content_dim)
        self.content_proj = (None if content_dim is None
                             else nn.Linear(int(content_dim), hidden_size))
        self.input_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList([Qwen2DecoderLayer(self.qwen_config, i)
                                     for i in range(num_layers)])
        for layer in self.layers:
            layer.self_attn.is_causal = False  # sdpa would apply a causal mask without this
        self.norm = Qwen2RMSNorm(hidden_size, eps=rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(self.qwen_config)
        self.heads = nn.ModuleList([nn.Linear(hidden_size, vocab_size)
                                    for _ in range(num_codebooks)])
        self.apply(self._init_weights)

    @property
    def mask_id(self):
        """Id of the mask token (``vocab_size``)."""
        return self.vocab_size

    def _init_weights(self, module):
        """Qwen2-style init (normal, std 0.02) of the transformer, embeddings,
        projections and heads; the band encoder keeps PyTorch defaults."""
        if self.band_encoder is not None and any(module is m for m in self.band_encoder.modules()):
            return
        std = self.qwen_config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)

    def num_parameters(self, trainable_only=False):
        """Number of parameters.

        Arguments
        ---------
        trainable_only : bool
            Count only parameters with ``requires_grad``.

        Returns
        -------
        int
            The count.

        Example
        -------
        >>> MaskedEnhancer(vocab_size=8, hidden_size=16, num_layers=1, num_heads=2).num_parameters()
        4600
        """
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _check_inputs(self, tokens, lens, noisy_tokens, noisy_wav, speaker, content=None):
        if tokens.dim() != 3 or tokens.shape[2] != self.num_codebooks:
            raise ValueError(
                f"tokens must be [B, T, {self.num_codebooks}], got {tuple(tokens.shape)}")
        batch, length = tokens.shape[:2]
        if lens is not None and tuple(lens.shape) != (batch,):
            raise ValueError(f"lens must be [{batch}], got {tuple(lens.shape)}")
        if self.noisy_embed is None and noisy_tokens is not None:
            raise ValueError("noisy_tokens given but the model was built with noisy_vocab_size=0")
        if self.noisy_embed is not None:
            if noisy_tokens is None:
                raise ValueError(
                    "noisy_tokens are required: the model was built with noisy-token input")
            if tuple(noisy_tokens.shape) != (batch, length, self.noisy_codebooks):
                raise ValueError(f"noisy_tokens must be {(batch, length, self.noisy_codebooks)}, "
                                 f"got {tuple(noisy_tokens.shape)}")
        if self.band_encoder is None and noisy_wav is not None:
            raise ValueError("noisy_wav given but the model was built without band_encoder")
        if self.band_encoder is not None:
            if noisy_wav is None:
                raise ValueError("noisy_wav is required: the model was built with a band_encoder")
            if noisy_wav.dim() != 2 or noisy_wav.shape[0] != batch:
                raise ValueError(f"noisy_wav must be [{batch}, S], got {tuple(noisy_wav.shape)}")
        if self.speaker_proj is None and speaker is not None:
            raise ValueError("speaker given but the model was built with speaker_dim=None")
        if self.speaker_proj is not None:
            if speaker is None:
                raise ValueError("speaker is required: the model was built with speaker_dim")
            if tuple(speaker.shape) != (batch, self.speaker_dim):
                raise ValueError(f"speaker must be [{batch}, {self.speaker_dim}], "
                                 f"got {tuple(speaker.shape)}")
        if self.content_proj is None and content is not None:
            raise ValueError("content given but the model was built with content_dim=None")
        if self.content_proj is not None:
            if content is None:
                raise ValueError("content is required: the model was built with content_dim")
            if tuple(content.shape) != (batch, length, self.content_dim):
                raise ValueError(f"content must be [{batch}, {length}, {self.content_dim}] "
                                 f"(frame-aligned), got {tuple(content.shape)}")
        total = length + (self.speaker_proj is not None)
        if total > self.max_position:
            raise ValueError(
                f"sequence of {total} positions exceeds max_position={self.max_position}")

    def forward(self, tokens, lens=None, noisy_tokens=None, noisy_wav=None, speaker=None,
                logits_mask=None, packed=False, content=None):
        """Logits of the clean tokens at every frame (or at the frames asked for).

        Arguments
        ---------
        tokens : torch.LongTensor
            Partly masked clean tokens ``[B, T, K]`` (mask id ``vocab_size``).
        lens : torch.Tensor, optional
            Relative valid lengths ``[B]`` (fraction of ``T``, rounded to
            frames, at least one); padded frames are excluded as attention
            keys (their outputs are computed but meaningless). Default: all
            frames valid.
        noisy_tokens : torch.LongTensor, optional
            Noisy-signal tokens ``[B, T, noisy_codebooks]``; required iff the
            model has a noisy-token input.
        noisy_wav : torch.Tensor, optional
            Noisy waveform ``[B, S]``; required iff the model has a band
            encoder (its frames are cropped / zero-padded to ``T``).
        speaker : torch.Tensor, optional
            Speaker embeddings ``[B, speaker_dim]``; required iff the model
            has a speaker input. Projected, added to every frame and
            prepended as an extra position, which is dropped from the outputs.
        content : torch.Tensor, optional
            Content features ``[B, T, content_dim]`` aligned with the frames;
            required iff the model has a content input.
        logits_mask : torch.BoolTensor, optional
            ``[B, T, K]`` (or ``[B, T]``, all codebooks): compute the output
            heads only where True (e.g. the masked positions, the only ones
            the decoding samples); the logits elsewhere are 0. The heads are
            a fifth of an inference forward on a 8192-code vocabulary, so
            this saves that share times the unmasked fraction. Default: all
            positions.
        packed : bool
            With ``logits_mask``: return ``masked_logits`` ``[N, vocab_size]``,
            the logits of the ``N`` selected positions in row-major order (as
            ``logits[logits_mask]``), instead of the mostly-zero ``logits``
            (what :func:`~speechbrain_gense.decoding.iterative_decode` reads).

        Returns
        -------
        dict
            ``logits``: ``[B, T, K, vocab_size]`` (``masked_logits``
            ``[N, vocab_size]`` when ``packed``); ``hidden``: ``[B, T, H]``,
            the final hidden states after the final norm.

        Example
        -------
        >>> model = MaskedEnhancer(vocab_size=16, **TINY_CONFIG).eval()
        >>> tokens = torch.randint(0, 16, (1, 6, 1))
        >>> where = torch.tensor([[True, False, True, False, False, True]])
        >>> full = model(tokens, noisy_tokens=tokens)["logits"]
        >>> part = model(tokens, noisy_tokens=tokens, logits_mask=where)["logits"]
        >>> part.shape, torch.allclose(part[where], full[where], atol=1e-6)
        (torch.Size([1, 6, 1, 16]), True)
        >>> part[~where].abs().sum().item()
        0.0
        >>> packed = model(tokens, noisy_tokens=tokens, logits_mask=where, packed=True)
        >>> packed["masked_logits"].shape, torch.equal(packed["masked_logits"], part[where][:, 0])
        (torch.Size([3, 16]), True)
        """
        self._check_inputs(tokens, lens, noisy_tokens, noisy_wav, speaker, content)
        batch, length = tokens.shape[:2]
        x = sum(emb(tokens[..., k]) for k, emb in enumerate(self.embed))
        if self.noisy_embed is not None:
            x = x + sum(emb(noisy_tokens[..., k]) for k, emb in enumerate(self.noisy_embed))
        if self.band_encoder is not None:
            feats = self.band_encoder(noisy_wav, num_frames=length, lens=lens)
            x = x + self.band_proj(feats.to(x.dtype))
        if self.content_proj is not None:
            x = x + self.content_proj(content.to(x.dtype))
        valid = torch.ones(batch, length, dtype=torch.bool, device=x.device)
        padded = lens is not None and bool((torch.round(lens.float() * length) < length).any())
        if padded:
            keep = torch.round(lens.float() * length).clamp(min=1)  # never an empty key set
            valid = length_to_mask(keep, length, dtype=torch.bool, device=x.device)
        offset = 0
        if self.speaker_proj is not None:
            spk = self.speaker_proj(speaker.to(x.dtype)).unsqueeze(1)
            x = torch.cat([spk, x + spk], dim=1)
            valid = F.pad(valid, (1, 0), value=True)
            offset = 1
        x = self.input_dropout(x)

        # key-padding mask [B, 1, 1, T'] broadcast over heads and queries (no
        # causal part): boolean (True = attend) for sdpa, additive for eager;
        # none without padding (the same attention; sdpa's fused CPU kernel
        # is faster without a mask)
        attn_mask = valid[:, None, None, :] if padded else None
        if attn_mask is not None and self.config["attn_implementation"] == "eager":
            attn_mask = torch.zeros(attn_mask.shape, dtype=x.dtype, device=x.device).masked_fill(
                ~attn_mask, torch.finfo(x.dtype).min)
        position_ids = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        position_embeddings = self.rotary_emb(x, position_ids)
        for layer in self.layers:
            call = partial(layer, attention_mask=attn_mask, position_ids=position_ids,
                           position_embeddings=position_embeddings, is_causal=False)
            if self.gradient_checkpointing and self.training:
                x = checkpoint(call, x, use_reentrant=False)
            else:
                x = call(x)
        hidden = self.norm(x)[:, offset:]
        if packed:
            if logits_mask is None:
                raise ValueError("packed=True needs a logits_mask")
            return {"masked_logits": self.head_logits(hidden, logits_mask, packed=True),
                    "hidden": hidden}
        return {"logits": self.head_logits(hidden, logits_mask), "hidden": hidden}

    def head_logits(self, hidden, logits_mask=None, packed=False):
        """Output heads on ``hidden[B, T, H]``: logits ``[B, T, K, vocab_size]``.

        With ``logits_mask`` (``[B, T, K]`` or ``[B, T]`` bool) only the
        selected positions are computed, the others are 0 (see :meth:`forward`);
        with ``packed`` too, only the selected positions are returned,
        ``[N, vocab_size]`` in row-major order.

        Example
        -------
        >>> model = MaskedEnhancer(vocab_size=16, **TINY_CONFIG)
        >>> model.head_logits(torch.randn(2, 5, 32), torch.zeros(2, 5, dtype=torch.bool)).shape
        torch.Size([2, 5, 1, 16])
        >>> model.head_logits(torch.randn(2, 5, 32), torch.ones(2, 5, dtype=torch.bool),
        ...                   packed=True).shape
        torch.Size([10, 16])
        """
        if logits_mask is None:
            return torch.stack([head(hidden) for head in self.heads], dim=2)
        batch, length = hidden.shape[:2]
        if logits_mask.dim() == 2:
            logits_mask = logits_mask[..., None].expand(batch, length, self.num_codebooks)
        if tuple(logits_mask.shape) != (batch, length, self.num_codebooks):
            raise ValueError(f"logits_mask must be [{batch}, {length}] or "
                             f"[{batch}, {length}, {self.num_codebooks}], "
                             f"got {tuple(logits_mask.shape)}")
        logits_mask = logits_mask.to(hidden.device, torch.bool)
        dtype = self.heads[0].weight.dtype if torch.is_tensor(
            getattr(self.heads[0], "weight", None)) else hidden.dtype
        if torch.is_autocast_enabled(hidden.device.type):
            dtype = torch.get_autocast_dtype(hidden.device.type)
        if packed:
            if self.num_codebooks == 1:
                return _head_out(self.heads[0], hidden[logits_mask[..., 0]], dtype)
            # row of each selected (b, t, k) in row-major order
            row = torch.cumsum(logits_mask.reshape(-1), 0).reshape(logits_mask.shape) - 1
            logits = hidden.new_empty(int(logits_mask.sum()), self.vocab_size, dtype=dtype)
            for k, head in enumerate(self.heads):
                where = logits_mask[..., k]
                if where.any():
                    logits[row[..., k][where]] = _head_out(head, hidden[where], dtype)
            return logits
        logits = hidden.new_zeros(batch, length, self.num_codebooks, self.vocab_size,
                                  dtype=dtype)
        for k, head in enumerate(self.heads):
            where = logits_mask[..., k]
            if where.any():
                logits[:, :, k][where] = head(hidden[where]).to(dtype)
        return logits

    def loss(self, logits, targets, mask, label_smoothing=0.0):
        """Cross-entropy and accuracy over the masked positions only.

        Arguments
        ---------
        logits : torch.Tensor
            ``[B, T, K, V]`` from :meth:`forward`.
        targets : torch.LongTensor
            Clean tokens ``[B, T, K]``.
        mask : torch.BoolTensor
            ``[B, T, K]``, True where the input token was masked (and valid).
        label_smoothing : float
            Passed to :func:`torch.nn.functional.cross_entropy`.

        Returns
        -------
        dict
            ``loss``: mean cross-entropy over masked positions (0 with a graph
            when none is masked); ``acc``: their top-1 accuracy (detached);
            ``n``: their number (long tensor).

        Example
        -------
        >>> model = MaskedEnhancer(vocab_size=4, hidden_size=16, num_layers=1, num_heads=2,
        ...                        noisy_vocab_size=0)
        >>> logits = torch.tensor([[[[9.0, 0, 0, 0]], [[0, 9.0, 0, 0]]]])
        >>> targets, mask = torch.tensor([[[0], [2]]]), torch.tensor([[[True], [False]]])
        >>> stats = model.loss(logits, targets, mask)
        >>> round(float(stats["loss"]), 4), float(stats["acc"]), int(stats["n"])
        (0.0004, 1.0, 1)
        """
        if logits.dim() != 4 or logits.shape[:3] != targets.shape or targets.shape != mask.shape:
            raise ValueError(f"expected logits [B, T, K, V] with targets and mask [B, T, K], got "
                             f"{tuple(logits.shape)}, {tuple(targets.shape)}, {tuple(mask.shape)}")
        mask = mask.bool()
        picked, target = logits[mask], targets[mask]
        n = mask.sum()
        if picked.shape[0] == 0:
            zero = logits.sum() * 0.0
            return {"loss": zero, "acc": zero.detach(), "n": n}
        loss = F.cross_entropy(picked.float(), target, label_smoothing=label_smoothing)
        acc = (picked.detach().argmax(-1) == target).float().mean()
        return {"loss": loss, "acc": acc, "n": n}


    @classmethod
    def from_pretrained_qwen2(cls, path, keep_layers, vocab_size, num_codebooks=1, dropout=0.0,
                              noisy_vocab_size=None, band_encoder=None, speaker_dim=None,
                              noisy_codebooks=None, max_position=None, attn_implementation="sdpa"):
        """Backbone from selected decoder layers of a local Qwen2/Qwen2.5 model.

        The decoder layers listed in ``keep_layers`` (in that order) and the
        final norm are copied from the checkpoint; width, heads, MLP size,
        RoPE base and norm epsilon come from its config. Token embeddings and
        output heads are newly initialised for the codec vocabulary plus the
        mask token: the text embeddings index a different vocabulary and
        carry no meaning for codec tokens, and dropping them (136M parameters
        for Qwen2.5-0.5B) is most of the size reduction. The retained layers
        run bidirectionally, unlike in the causal checkpoint.

        Arguments
        ---------
        path : str
            Local directory of a ``transformers`` Qwen2 model (``config.json``
            and safetensors / bin weights, of ``Qwen2Model`` or
            ``Qwen2ForCausalLM``); nothing is downloaded.
        keep_layers : list of int
            Indices of the decoder layers to keep, in ``[0, num_hidden_layers)``.
        vocab_size, num_codebooks, dropout, noisy_vocab_size
            As in :class:`MaskedEnhancer`.
        band_encoder, speaker_dim, noisy_codebooks, attn_implementation
            As in :class:`MaskedEnhancer`.
        max_position : int, optional
            Default: the checkpoint's ``max_position_embeddings``.

        Returns
        -------
        MaskedEnhancer
            The model; ``pretrained_info`` records the source and layers.
        """
        from transformers import AutoConfig, Qwen2Model

        if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(
                f"no local Qwen2 model directory (with config.json) at {str(path)!r}")
        qcfg = AutoConfig.from_pretrained(path, local_files_only=True)
        if qcfg.model_type != "qwen2":
            raise ValueError(f"expected a qwen2 checkpoint, got model_type={qcfg.model_type!r}")
        keep_layers = [int(i) for i in keep_layers]
        if not keep_layers:
            raise ValueError("keep_layers must name at least one layer")
        bad = [i for i in keep_layers if not 0 <= i < qcfg.num_hidden_layers]
        if bad:
            raise ValueError(f"keep_layers {bad} out of range [0, {qcfg.num_hidden_layers})")
        rope = qcfg.rope_parameters or {"rope_type": "default", "rope_theta": 10000.0}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(
                f"only default RoPE is supported, checkpoint uses {rope['rope_type']!r}")
        head_dim = getattr(qcfg, "head_dim", None)
        if head_dim and head_dim != qcfg.hidden_size // qcfg.num_attention_heads:
            raise ValueError(
                f"head_dim {head_dim} != hidden_size / num_attention_heads is not supported")

        model = cls(
            vocab_size=vocab_size, num_codebooks=num_codebooks, hidden_size=qcfg.hidden_size,
            num_layers=len(keep_layers), num_heads=qcfg.num_attention_heads,
            num_kv_heads=qcfg.num_key_value_heads, intermediate_size=qcfg.intermediate_size,
            max_position=max_position or qcfg.max_position_embeddings, dropout=dropout,
            noisy_vocab_size=noisy_vocab_size, band_encoder=band_encoder, speaker_dim=speaker_dim,
            rope_theta=rope["rope_theta"], noisy_codebooks=noisy_codebooks,
            rms_norm_eps=qcfg.rms_norm_eps, hidden_act=qcfg.hidden_act,
            attn_implementation=attn_implementation,
        )
        source = Qwen2Model.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        with torch.no_grad():
            for layer, idx in zip(model.layers, keep_layers):
                layer.load_state_dict(source.layers[idx].state_dict())
            model.norm.load_state_dict(source.norm.state_dict())
        del source
        model.pretrained_info = {"path": str(path), "keep_layers": keep_layers,
                                 "source_layers": qcfg.num_hidden_layers}
        return model
