"""The one contract of every generative enhancer, and the registry of methods.

A method (MAGE, GenSE, DAC-SE1, MAGNeT-style, or a toy in a test) is one
module holding a subclass of :class:`GenerativeEnhancer` plus one entry in
the registry (:func:`register_method`). The pretrained interface
(:class:`~speechbrain_gense.inference.EnhanceGenerative`), the command line
(``gense-enhance``) and the evaluation command (``gense-evaluate``) know only
this class; they look the ``method`` named in a folder's ``inference.yaml``
up with :func:`get_method`.

What a method provides
----------------------
- ``method``: its registry name; ``info_file``: the JSON file that marks
  one of its folders (default ``<method>.json``);
- :attr:`~GenerativeEnhancer.output_tokenizer`: the
  :class:`~speechbrain_gense.tokenizers.base.AudioTokenizer` whose tokens
  become audio (it gives the sample rate, frame rate and codebooks);
- :meth:`~GenerativeEnhancer.max_frames`: the longest output the model
  makes in one call (the interface cuts longer audio into chunks);
- ``supports_prefix``: whether :meth:`~GenerativeEnhancer.enhance` can
  continue from output tokens already committed (the interface then carries
  each chunk's tokens into the next one);
- ``decode_defaults``: every decoding option it takes, with its default;
  :meth:`~GenerativeEnhancer.decode_options` refuses any other name;
- :meth:`~GenerativeEnhancer.enhance` ``(wav[B, S], lens, generator,
  prefix, **opts) -> {wav, tokens, confidence, lens, nfe}``;
- ``save_parts`` / ``load_parts``: its files in a folder (the folder format
  itself, with ``info_file``, is :class:`~speechbrain_gense.models.io.FolderCheckpoint`).

Every saved folder also records the fingerprint of each tokenizer the model
holds (``codec_fingerprints`` in the info file:
:func:`~speechbrain_gense.tokenizers.cache.tokenizer_fingerprint`, which covers
what makes the tokens, not a codec's decoder); loading refuses, in one line,
a folder whose stored tokenizer is no longer the one it was trained with.

Example
-------
>>> {"mage", "copy-noisy"} <= set(available_methods())
True
>>> get_method("mage").__name__
'MAGE'
>>> get_method("magic")
Traceback (most recent call last):
...
ValueError: unknown method 'magic' (registered: copy-noisy, ...)
"""

import importlib
import logging

import torch

from .io import FolderCheckpoint

#: method name -> ``"module:Class"`` (imported when first asked for) or the class.
_REGISTRY = {
    "mage": "speechbrain_gense.models.mage:MAGE",
    "copy-noisy": "speechbrain_gense.models.debug:CopyNoisyEnhancer",
    "gense": "speechbrain_gense.models.gense:GenSE",
}


def register_method(name, target):
    """Registers an enhancer class under ``name`` (``inference.yaml``'s ``method``).

    Arguments
    ---------
    name : str
        Registry name.
    target : str or type
        ``"package.module:Class"`` (imported lazily) or the class itself.

    Example
    -------
    >>> register_method("mage", "speechbrain_gense.models.mage:MAGE")
    >>> register_method("", "x:Y")
    Traceback (most recent call last):
    ...
    ValueError: a method name must be a non-empty string, got ''
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a method name must be a non-empty string, got {name!r}")
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"method target must be 'module:Class', got {target!r}")
    _REGISTRY[name] = target


def available_methods():
    """Names of the registered methods (sorted)."""
    return sorted(_REGISTRY)


def get_method(name):
    """The enhancer class registered as ``name`` (imports it on first use).

    Raises
    ------
    ValueError
        ``name`` is not registered (the message lists the registered ones).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r} (registered: {', '.join(available_methods())})")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = target
    if not (isinstance(target, type) and issubclass(target, GenerativeEnhancer)):
        raise TypeError(f"method {name!r}: {target!r} is not a GenerativeEnhancer")
    return target


def method_of_folder(folder):
    """Name of the registered method whose ``info_file`` is in ``folder`` (or None).

    Example
    -------
    >>> import tempfile
    >>> method_of_folder(tempfile.mkdtemp()) is None
    True
    """
    import os

    for name in available_methods():
        try:
            cls = get_method(name)
        except (ImportError, TypeError):
            continue
        if os.path.isfile(os.path.join(folder, cls.info_name())):
            return name
    return None


def load_enhancer(folder, method=None, device="cpu"):
    """Loads the enhancer saved in ``folder`` (``inference.yaml`` calls this).

    Arguments
    ---------
    folder : str
        A folder written by the method's ``save``.
    method : str, optional
        Its registry name (default: found from the folder's files).
    device : str
        Where to put the weights.

    Returns
    -------
    GenerativeEnhancer
        In eval mode.
    """
    if method is None:
        method = method_of_folder(folder)
        if method is None:
            raise FileNotFoundError(f"{folder}: no enhancer folder of a registered method "
                                    f"({', '.join(available_methods())})")
    return get_method(method).load(folder, device=device)


class GenerativeEnhancer(FolderCheckpoint, torch.nn.Module):
    """Base class of the generative enhancers (see the module documentation).

    Arguments
    ---------
    decode_opts : dict, optional
        This model's own defaults of some decoding options (kept by
        :meth:`save`); each name must be in :attr:`decode_defaults`.

    Example
    -------
    >>> from speechbrain_gense.models.debug import CopyNoisyEnhancer
    >>> model = CopyNoisyEnhancer()
    >>> model.method, model.supports_prefix, model.sample_rate, model.max_frames()
    ('copy-noisy', True, 16000, None)
    >>> model.decode_options(shift=1)
    {'shift': 1}
    >>> model.decode_options(stpes=4)
    Traceback (most recent call last):
    ...
    ValueError: copy-noisy: unknown decoding option 'stpes' (valid: shift)
    >>> out = model.enhance(torch.randn(2, 1600))
    >>> out["wav"].shape, out["tokens"].shape, out["confidence"].shape, out["nfe"]
    (torch.Size([2, 1600]), torch.Size([2, 8, 1]), torch.Size([2, 8]), 0)
    """

    #: Registry name (``method`` of ``inference.yaml``).
    method = None
    #: Whether :meth:`enhance` can continue from committed output tokens (``prefix``).
    supports_prefix = False
    #: Every decoding option :meth:`enhance` takes, with its default.
    decode_defaults = {}  # noqa: RUF012 -- read-only class constant, overridden per method

    def __init__(self, decode_opts=None):
        super().__init__()
        self.decode_opts = self.decode_options(**(decode_opts or {}))

    # -- the tokenizers a saved model was trained with ------------------------

    def codec_fingerprints(self):
        """``{attribute name: fingerprint}`` of every tokenizer this model holds.

        Example
        -------
        >>> from speechbrain_gense.models.debug import CopyNoisyEnhancer
        >>> fps = CopyNoisyEnhancer().codec_fingerprints()
        >>> list(fps), fps["tokenizer"].startswith("DebugTokenizer-")
        (['tokenizer'], True)
        """
        from ..tokenizers.base import AudioTokenizer
        from ..tokenizers.cache import tokenizer_fingerprint

        return {name: tokenizer_fingerprint(module) for name, module in self.named_children()
                if isinstance(module, AudioTokenizer)}

    def info_extras(self):
        return {"codec_fingerprints": self.codec_fingerprints()}

    @classmethod
    def check_loaded(cls, model, info, folder, **kwargs):
        """Raises ``ValueError`` when a tokenizer differs from the one the model was saved with.

        A folder saved before fingerprints were recorded is accepted with a
        warning; a tokenizer passed in by the caller (``tokenizer=...``) only
        warns.
        """
        stored = info.get("codec_fingerprints")
        if stored is None:
            logging.getLogger(__name__).warning(
                "%s: no codec fingerprint recorded; cannot check that its tokenizer is the one "
                "it was trained with", folder)
            return
        now = model.codec_fingerprints()
        for name, fingerprint in stored.items():
            if now.get(name) == fingerprint:
                continue
            msg = (f"{folder}: its {name} is {now.get(name)}, but the model was trained on "
                   f"{fingerprint} (retrain it, or point {cls.info_name()} at that codec)")
            if any(v is not None for v in kwargs.values()):
                logging.getLogger(__name__).warning(msg)
            else:
                raise ValueError(msg)

    # -- facts the interface reads ------------------------------------------

    @property
    def output_tokenizer(self):
        """The :class:`~speechbrain_gense.tokenizers.base.AudioTokenizer` whose tokens become audio."""
        raise NotImplementedError(f"{type(self).__name__} must define output_tokenizer")

    @property
    def sample_rate(self):
        """Rate of the input and output audio of :meth:`enhance` (the output tokenizer's)."""
        return int(self.output_tokenizer.sample_rate)

    @property
    def hop_length(self):
        """Samples per output-token frame at :attr:`sample_rate` (a whole number)."""
        hop = self.output_tokenizer.hop_length
        if int(hop) != hop:
            raise ValueError(f"the tokenizer's hop length {hop} is not a whole number of samples")
        return int(hop)

    @property
    def num_codebooks(self):
        """``K`` of the output tokens ``[B, T, K]``."""
        return int(self.output_tokenizer.num_codebooks)

    def num_frames(self, num_samples):
        """Output-token frames of ``num_samples`` samples at :attr:`sample_rate`."""
        return int(self.output_tokenizer.num_frames(int(num_samples)))

    @property
    def device(self):
        """Device of the model's parameters (CPU when it has none)."""
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    def max_frames(self):
        """Most output-token frames one :meth:`enhance` call makes (``None``: no limit)."""
        return None

    # -- decoding options -----------------------------------------------------

    def decode_options(self, **opts):
        """The decoding options of a call: defaults overridden by ``opts``.

        Defaults are :attr:`decode_defaults` overridden by this model's own
        ``decode_opts``. An option not in :attr:`decode_defaults` raises
        ``ValueError`` naming it and the valid ones (a typo such as
        ``stpes=4`` is an error, not silently ignored).
        """
        unknown = sorted(set(opts) - set(self.decode_defaults))
        if unknown:
            valid = ", ".join(sorted(self.decode_defaults)) or "none"
            names = ", ".join(repr(u) for u in unknown)
            plural = "s" if len(unknown) > 1 else ""
            raise ValueError(f"{self.method}: unknown decoding option{plural} {names} "
                             f"(valid: {valid})")
        own = getattr(self, "decode_opts", None) or {}
        return {**self.decode_defaults, **own, **opts}

    # -- enhancement ----------------------------------------------------------

    def enhance(self, wav, lens=None, generator=None, prefix=None, **opts):
        """Enhances ``wav[B, S]`` at :attr:`sample_rate`.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, S]`` noisy waveforms.
        lens : torch.Tensor, optional
            ``[B]`` relative lengths.
        generator : torch.Generator, optional
            Random number generator of the sampling.
        prefix : torch.LongTensor, optional
            ``[B, P, K]`` output tokens the output must start with (only when
            :attr:`supports_prefix`).
        **opts
            Decoding options (names of :attr:`decode_defaults`).

        Returns
        -------
        dict
            ``wav`` ``[B, S]`` (the input's length), ``tokens`` ``[B, T, K]``
            (output tokens), ``confidence`` ``[B, T]`` in ``[0, 1]``, ``lens``
            ``[B]`` (relative token lengths), ``nfe`` (int: network function
            evaluations of the token model).
        """
        raise NotImplementedError

    def check_prefix(self, prefix, batch):
        """Validates a ``prefix`` argument (``None`` passes); returns it as LongTensor."""
        if prefix is None:
            return None
        if not self.supports_prefix:
            raise ValueError(f"{self.method}: this method cannot continue from a prefix")
        if prefix.dim() != 3 or prefix.shape[0] != batch or prefix.shape[2] != self.num_codebooks:
            raise ValueError(f"expected prefix [B={batch}, P, K={self.num_codebooks}], "
                             f"got {tuple(prefix.shape)}")
        return prefix.long()


__all__ = [
    "GenerativeEnhancer",
    "available_methods",
    "get_method",
    "load_enhancer",
    "method_of_folder",
    "register_method",
]
