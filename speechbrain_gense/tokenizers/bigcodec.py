"""BigCodec as an :class:`AudioTokenizer`: 16 kHz, 80 Hz, one codebook of 8192 codes.

BigCodec (Xin et al., 2024) is a low-bitrate (1.04 kbps) speech codec: a
DAC-like convolutional encoder with an LSTM, one factorised VQ (8192 codes of
dimension 8, L2-normalised lookup), and a mirrored decoder with
anti-aliased SnakeBeta activations. The architecture comes from the
``bigcodec`` PyPI package (``bigcodec.CodecEncoder`` / ``bigcodec.CodecDecoder``).

Checkpoints (local files only; nothing is downloaded):

- the original release ``bigcodec.pt``: ``{"CodecEnc": <encoder state>,
  "generator": <decoder state, quantizer included>}``, built with the default
  architecture (:data:`BIGCODEC_CONFIG`). :meth:`BigCodecTokenizer.save_pretrained`
  writes the same layout, plus a ``"config"`` entry so non-default (e.g. tiny)
  models round-trip;
- a directory written by the package's ``bigcodec.BigCodec.save_pretrained``
  (``config.json`` + ``model.safetensors``).
"""

import json
import math
from pathlib import Path

import torch

from speechbrain_gense.tokenizers.base import AudioTokenizer

#: The released BigCodec (``bigcodec.pt``): 159 M parameters, hop 200 at 16 kHz.
BIGCODEC_CONFIG = dict(
    ngf=48,
    use_rnn=True,
    rnn_bidirectional=False,
    rnn_num_layers=2,
    up_ratios=(2, 2, 2, 5, 5),
    dilations=(1, 3, 9),
    out_channels=1024,
    upsample_initial_channel=1536,
    vq_num_quantizers=1,
    codebook_size=8192,
    codebook_dim=8,
    sample_rate=16000,
    # The decoder's LSTM settings when they differ from the encoder's (None:
    # the same). ``bigcodec.BigCodec`` (the hub-mixin class) never passes its
    # RNN arguments to the decoder, so its decoders always use the defaults.
    decoder_use_rnn=None,
    decoder_rnn_bidirectional=None,
    decoder_rnn_num_layers=None,
)

#: What ``bigcodec.CodecDecoder`` uses when not told otherwise.
_DECODER_RNN_DEFAULTS = dict(decoder_use_rnn=True, decoder_rnn_bidirectional=False,
                             decoder_rnn_num_layers=2)

#: File names looked for when ``path`` is a directory.
CHECKPOINT_NAMES = ("bigcodec.pt", "bigcodec.pth", "model.pt", "model.pth")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_bigcodec(**config):
    """``(encoder, decoder)`` of the ``bigcodec`` package for ``config``
    (keys of :data:`BIGCODEC_CONFIG`; missing ones take the released values)."""
    from bigcodec import CodecDecoder, CodecEncoder

    unknown = set(config) - set(BIGCODEC_CONFIG)
    if unknown:
        raise TypeError(f"unknown BigCodec config arguments {sorted(unknown)}; "
                        f"expected some of {sorted(BIGCODEC_CONFIG)}")
    c = {**BIGCODEC_CONFIG, **config}
    for key in ("use_rnn", "rnn_bidirectional", "rnn_num_layers"):
        if c["decoder_" + key] is None:
            c["decoder_" + key] = c[key]
    encoder = CodecEncoder(
        ngf=c["ngf"],
        use_rnn=c["use_rnn"],
        rnn_bidirectional=c["rnn_bidirectional"],
        rnn_num_layers=c["rnn_num_layers"],
        up_ratios=tuple(c["up_ratios"]),
        dilations=tuple(c["dilations"]),
        out_channels=c["out_channels"],
    )
    decoder = CodecDecoder(
        in_channels=c["out_channels"],
        upsample_initial_channel=c["upsample_initial_channel"],
        ngf=c["ngf"],
        use_rnn=c["decoder_use_rnn"],
        rnn_bidirectional=c["decoder_rnn_bidirectional"],
        rnn_num_layers=c["decoder_rnn_num_layers"],
        up_ratios=tuple(reversed(c["up_ratios"])),
        dilations=tuple(c["dilations"]),
        vq_num_quantizers=c["vq_num_quantizers"],
        vq_dim=c["out_channels"],
        codebook_size=c["codebook_size"],
        codebook_dim=c["codebook_dim"],
    )
    return encoder, decoder


def _missing(path):
    return FileNotFoundError(
        f"no BigCodec checkpoint at {path}; weights cannot be downloaded here, pass a local "
        f"path (the released bigcodec.pt with 'CodecEnc'/'generator' state dicts, a directory "
        f"holding one, or a bigcodec.BigCodec.save_pretrained directory)"
    )


def load_bigcodec_checkpoint(path):
    """Reads a local BigCodec checkpoint.

    Returns
    -------
    config : dict
        Architecture (the released one unless the file says otherwise).
    encoder_state, decoder_state : dict
        State dicts of ``CodecEncoder`` and ``CodecDecoder``.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
            from safetensors.torch import load_file

            hf = json.loads((p / "config.json").read_text())
            config = {k: v for k, v in hf.items() if k in BIGCODEC_CONFIG}
            config.update(_DECODER_RNN_DEFAULTS)
            state = load_file(str(p / "model.safetensors"))
            enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
            dec = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
            return config, enc, dec
        for name in CHECKPOINT_NAMES:
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise _missing(path)
    if not p.is_file():
        raise _missing(path)
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "CodecEnc" not in ckpt or "generator" not in ckpt:
        raise ValueError(f"{p} is not a BigCodec checkpoint (expected a dict with "
                         f"'CodecEnc' and 'generator' state dicts)")
    return dict(ckpt.get("config") or {}), ckpt["CodecEnc"], ckpt["generator"]


class BigCodecTokenizer(AudioTokenizer):
    """BigCodec codes as ``tokens[B, T, 1]`` (values in ``[0, 8192)``).

    Audio is right-padded to a multiple of the hop (200 samples at 16 kHz),
    so ``T = ceil(S / 200)`` and decoding returns ``T * 200`` samples.

    Arguments
    ---------
    path : str or Path, optional
        A local checkpoint (see :func:`load_bigcodec_checkpoint`). Nothing is
        downloaded.
    encoder, decoder : torch.nn.Module, optional
        Ready ``bigcodec.CodecEncoder`` / ``bigcodec.CodecDecoder`` (pass
        ``sample_rate`` too if not 16 kHz).
    **config
        Architecture of a new (random) model when neither ``path`` nor the
        modules are given: keys of :data:`BIGCODEC_CONFIG` (defaults: the
        released model).

    Example
    -------
    >>> tok = BigCodecTokenizer(ngf=2, use_rnn=False, up_ratios=(2, 2, 2, 5, 5),
    ...                         dilations=(1,), out_channels=8, upsample_initial_channel=32)
    >>> tok.sample_rate, tok.frame_rate, tok.num_codebooks, tok.vocab_size
    (16000, 80.0, 1, 8192)
    >>> tokens, lens = tok.encode(torch.randn(2, 1000), torch.tensor([1.0, 0.5]))
    >>> tokens.shape, tokens.dtype, lens.tolist()
    (torch.Size([2, 5, 1]), torch.int64, [1.0, 0.6000000238418579])
    >>> tok.decode(tokens, lens).shape
    torch.Size([2, 1000])
    """

    def __init__(self, path=None, encoder=None, decoder=None, **config):
        if (encoder is None) != (decoder is None):
            raise ValueError("pass both encoder and decoder, or neither")
        if path is not None and encoder is not None:
            raise ValueError("pass either path or encoder/decoder, not both")
        enc_state = dec_state = None
        if path is not None:
            if config:
                raise ValueError(f"config arguments {sorted(config)} only apply to a new model")
            config, enc_state, dec_state = load_bigcodec_checkpoint(path)
        if encoder is None:
            sample_rate = config.pop("sample_rate", BIGCODEC_CONFIG["sample_rate"])
            encoder, decoder = build_bigcodec(**config)
            self_config = {**BIGCODEC_CONFIG, **config, "sample_rate": sample_rate}
        else:
            sample_rate = config.pop("sample_rate", BIGCODEC_CONFIG["sample_rate"])
            self_config = None
        hop = int(math.prod(encoder.up_ratios))
        quantizer = decoder.quantizer
        super().__init__(
            sample_rate=sample_rate,
            frame_rate=sample_rate / hop,
            num_codebooks=int(quantizer.num_quantizers),
            vocab_size=int(quantizer.layers[0].codebook_size),
        )
        self.config = self_config
        self.encoder = encoder
        self.decoder = decoder
        if enc_state is not None:
            # Strict: a wrong config must fail loudly, not decode noise.
            self.encoder.load_state_dict(enc_state, strict=True)
            self.decoder.load_state_dict(dec_state, strict=True)
        self.freeze()

    def _encode(self, wav):
        emb = self.encoder(self.pad_to_frames(wav).unsqueeze(1))
        codes = self.decoder(emb, vq=True)[1]  # [K, B, T]
        return codes.permute(1, 2, 0)

    def _decode(self, tokens):
        emb = self.decoder.quantizer.vq2emb(tokens).transpose(1, 2)  # [B, D, T]
        return self.fit_to_frames(self.decoder(emb, vq=False)[:, 0], tokens.shape[1])

    def save_pretrained(self, path):
        """Writes the original ``bigcodec.pt`` layout (+ ``config``); returns the file.

        ``path`` is a directory (the file is ``path/bigcodec.pt``) or a file
        name ending in ``.pt``/``.pth``.
        """
        path = Path(path)
        if path.suffix not in (".pt", ".pth"):
            path.mkdir(parents=True, exist_ok=True)
            path = path / "bigcodec.pt"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        ckpt = {
            "CodecEnc": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "generator": {k: v.detach().cpu() for k, v in self.decoder.state_dict().items()},
        }
        if self.config is not None:
            ckpt["config"] = {k: _plain(v) for k, v in self.config.items()}
        torch.save(ckpt, path)
        return path
