"""Tiny models for tests, benchmarks and recipe ``--debug`` runs.

- :func:`tiny_mage`: a tiny, randomly initialised MAGE (debug tokenizer,
  2-layer enhancer, optional corrector, band encoder and token frequencies);
  :func:`write_tiny_model` writes it (or any tiny model) as a model folder
  with its ``inference.yaml``, ready for ``EnhanceGenerative.from_hparams``.
- :class:`CopyNoisyEnhancer`: a toy second method (registered as
  ``"copy-noisy"``): the output tokens are the noisy input's own tokens. It
  exists to prove that a method plugs into the interface, the command line
  and the evaluation through :class:`~speechbrain_gense.models.base.GenerativeEnhancer`
  and one registry entry only.

Example
-------
>>> import tempfile
>>> mage = tiny_mage(corrector=True)
>>> type(mage).__name__, mage.method, mage.sample_rate, mage.max_frames()
('MAGE', 'mage', 16000, 512)
>>> folder = write_tiny_model(tempfile.mkdtemp(), "copy-noisy")
>>> sorted(os.listdir(folder))
['copy-noisy.json', 'inference.yaml']
"""

import os

import torch

from .base import GenerativeEnhancer


def tiny_mage(vocab_size=32, seed=0, corrector=True, token_frequency=True, band=False,
              speaker_dim=None, mask_strategy="ctf", max_position=None, decode_opts=None):
    """A tiny, randomly initialised :class:`~speechbrain_gense.models.mage.MAGE`.

    Arguments
    ---------
    vocab_size : int
        Codebook size of the debug tokenizer (``debug?vocab_size=...``).
    seed : int
        Seed of the weights (and of the token frequencies).
    corrector : bool
        With a :class:`~speechbrain_gense.models.corrector.Corrector`.
    token_frequency : bool
        With a token-frequency table (needed by ``"ctf"`` decoding).
    band : bool
        With a band-aware spectrogram encoder.
    speaker_dim : int, optional
        Speaker-embedding size of the enhancer (no speaker encoder attached).
    mask_strategy : str
        ``"ctf"`` or ``"random"`` (``"ctf"`` falls back to ``"random"``
        without a frequency table).
    max_position : int, optional
        Longest sequence of the enhancer (default: ``TINY_CONFIG``'s).
    decode_opts : dict, optional
        Decoding defaults (default: 3 steps, 1 corrector step, re-mask 20 %).

    Returns
    -------
    MAGE
        In eval mode.

    Example
    -------
    >>> out = tiny_mage().enhance(torch.randn(2, 1600), steps=2)
    >>> out["wav"].shape, out["tokens"].shape, out["nfe"]
    (torch.Size([2, 1600]), torch.Size([2, 8, 1]), 4)
    """
    from ..masking import TokenFrequency
    from ..tokenizers.registry import load_tokenizer
    from .corrector import Corrector
    from .mage import MAGE
    from .masked_enhancer import TINY_CONFIG, BandAwareEncoder, MaskedEnhancer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(f"debug?vocab_size={vocab_size}")
    config = dict(TINY_CONFIG)
    if max_position:
        config["max_position"] = int(max_position)
    if speaker_dim:
        config["speaker_dim"] = int(speaker_dim)
    band_encoder = None
    if band:
        hop = int(tokenizer.hop_length)
        band_encoder = BandAwareEncoder(n_fft=4 * hop, hop_length=hop, num_bands=2, dim=8,
                                        out_dim=TINY_CONFIG["hidden_size"])
    enhancer = MaskedEnhancer(vocab_size, band_encoder=band_encoder, **config)
    corr = Corrector(TINY_CONFIG["hidden_size"], vocab_size, dim=16) if corrector else None
    freq = TokenFrequency(torch.arange(vocab_size, 0, -1)) if token_frequency else None
    if freq is None and mask_strategy == "ctf":
        mask_strategy = "random"
    if decode_opts is None:
        decode_opts = {"steps": 3, "corrector_steps": 1, "remask_ratio": 0.2}
    mage = MAGE(tokenizer, enhancer, corrector=corr, token_frequency=freq,
                mask_strategy=mask_strategy, decode_opts=decode_opts)
    return mage.eval()


class CopyNoisyEnhancer(GenerativeEnhancer):
    """Toy method: the output tokens are the noisy input's tokens (shifted by ``shift``).

    No network, no sampling: ``nfe`` is 0 and the confidence is 1. It can
    continue from a ``prefix`` (the prefix's tokens are kept, the rest
    copied), so the interface's carried chunk context is exercised too.

    Arguments
    ---------
    tokenizer : AudioTokenizer, optional
        Its codec (default: the debug tokenizer ``debug?vocab_size=32``).
    decode_opts : dict, optional
        Defaults of the one decoding option, ``shift`` (added to every token
        id, modulo the vocabulary).

    Example
    -------
    >>> model = CopyNoisyEnhancer()
    >>> prefix = torch.zeros(1, 3, 1, dtype=torch.long)
    >>> out = model.enhance(torch.randn(1, 1600), prefix=prefix, shift=1)
    >>> out["tokens"][0, :4, 0].tolist()[:3], out["tokens"].shape
    ([0, 0, 0], torch.Size([1, 8, 1]))
    """

    method = "copy-noisy"
    supports_prefix = True
    decode_defaults = {"shift": 0}  # noqa: RUF012

    def __init__(self, tokenizer=None, decode_opts=None):
        super().__init__(decode_opts)
        if tokenizer is None:
            from ..tokenizers.registry import load_tokenizer

            tokenizer = load_tokenizer("debug?vocab_size=32")
        self.tokenizer = tokenizer

    @property
    def output_tokenizer(self):
        return self.tokenizer

    @torch.no_grad()
    def enhance(self, wav, lens=None, generator=None, prefix=None, **opts):
        o = self.decode_options(**opts)
        prefix = self.check_prefix(prefix, wav.shape[0])
        if lens is None:
            lens = torch.ones(wav.shape[0], device=wav.device)
        tokens, tok_lens = self.tokenizer.encode(wav, lens)
        tokens = (tokens + int(o["shift"])) % self.tokenizer.vocab_size
        if prefix is not None:
            n = min(prefix.shape[1], tokens.shape[1])
            tokens[:, :n] = prefix[:, :n].to(tokens.device)
        out = self.tokenizer.decode(tokens, tok_lens)
        out = torch.nn.functional.pad(out, (0, max(0, wav.shape[-1] - out.shape[-1])))
        return {"wav": out[:, :wav.shape[-1]], "tokens": tokens,
                "confidence": torch.ones(tokens.shape[:2], device=tokens.device),
                "lens": tok_lens, "nfe": 0}

    def save_parts(self, folder, dtype=None):
        spec = getattr(self.tokenizer, "spec", None)
        if spec is None:
            raise ValueError("CopyNoisyEnhancer.save needs a tokenizer from load_tokenizer")
        return {"tokenizer_spec": spec, "decode_opts": self.decode_opts}

    @classmethod
    def load_parts(cls, folder, info, device="cpu"):
        from ..tokenizers.registry import load_tokenizer

        return cls(load_tokenizer(info["tokenizer_spec"], device=device),
                   decode_opts=info.get("decode_opts"))


def write_tiny_model(folder, method="mage", **kwargs):
    """Writes a tiny model folder of ``method`` with its ``inference.yaml``.

    Arguments
    ---------
    folder : str
        Output folder (created).
    method : str
        ``"mage"`` (:func:`tiny_mage`, keyword arguments passed on) or
        ``"copy-noisy"`` (:class:`CopyNoisyEnhancer`).
    **kwargs
        Options of the model's builder.

    Returns
    -------
    str
        ``folder``.
    """
    from ..inference import write_inference_yaml

    if method == "mage":
        model = tiny_mage(**kwargs)
    elif method == "copy-noisy":
        model = CopyNoisyEnhancer(**kwargs)
    else:
        raise ValueError(f"no tiny model of method {method!r} (have: mage, copy-noisy)")
    model.save(folder)
    write_inference_yaml(folder, method=method, overwrite=True)
    return folder


def write_tiny_mage(folder, vocab_size=32, seed=0, max_position=None):
    """:func:`write_tiny_model` of a tiny MAGE (debug tokenizer, corrector, 3 steps)."""
    return write_tiny_model(folder, "mage", vocab_size=vocab_size, seed=seed,
                            max_position=max_position)


__all__ = ["CopyNoisyEnhancer", "tiny_mage", "write_tiny_mage", "write_tiny_model"]
