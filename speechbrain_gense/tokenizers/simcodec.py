"""SimCodec tokenizer: one token per frame from a trained SimCodec.

A stage-2 SimCodec (single reorganised codebook of ``N * K`` codes) gives
``[B, T, 1]`` tokens with ``vocab_size = N * K``. A stage-1 model (two group
codebooks of sizes ``N_1``, ``N_2``) is also accepted: by default its pair
``(i, j)`` is flattened to the single token ``i * N_2 + j``
(``vocab_size = N_1 * N_2``); with ``flatten=False`` it gives ``[B, T, 2]``
tokens with ``vocab_size = max(N_1, N_2)``.

Example
-------
>>> from speechbrain_gense.models.simcodec import SimCodec, TINY_CONFIG, to_stage2
>>> tok = SimCodecTokenizer(to_stage2(SimCodec(**TINY_CONFIG), 2, 4))
>>> tokens, lens = tok.encode(torch.randn(2, 160), torch.tensor([1.0, 0.5]))
>>> tokens.shape, tok.vocab_size, lens.tolist()
(torch.Size([2, 10, 1]), 8, [1.0, 0.5])
>>> tok.decode(tokens, lens).shape
torch.Size([2, 160])
"""

import os

import torch  # noqa: F401  (doctests use it)

from ..models.simcodec import GroupQuantizer, SimCodec
from .base import AudioTokenizer

#: File name used when ``source`` is a directory.
CHECKPOINT_NAME = "simcodec.ckpt"


class SimCodecTokenizer(AudioTokenizer):
    """Frozen SimCodec behind the :class:`AudioTokenizer` contract.

    Arguments
    ---------
    source : str or SimCodec
        A model, a file written by :meth:`SimCodec.save` / :meth:`save`, or a
        directory holding ``simcodec.ckpt``. A model passed in is frozen
        (eval mode, no gradients) in place.
    flatten : bool
        For stage-1 models: one flattened token ``i * N_2 + j`` per frame
        (default) instead of two.
    map_location : str
        Device to load a checkpoint onto.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.models.simcodec import SimCodec, TINY_CONFIG
    >>> tok = SimCodecTokenizer(SimCodec(**TINY_CONFIG))
    >>> tok.num_codebooks, tok.vocab_size, tok.frame_rate
    (1, 64, 1000.0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = tok.save(d)
    ...     again = SimCodecTokenizer(d)
    >>> wav = torch.randn(1, 320)
    >>> torch.equal(tok.encode(wav)[0], again.encode(wav)[0])
    True
    """

    def __init__(self, source, flatten=True, map_location="cpu"):
        model = source if isinstance(source, SimCodec) else SimCodec.load(
            _checkpoint_path(source), map_location=map_location)
        grouped = isinstance(model.quantizer, GroupQuantizer)
        self.flatten = bool(flatten) and grouped
        if not grouped:
            k, vocab = 1, model.quantizer.codebook_size
        elif self.flatten:
            k, vocab = 1, model.quantizer.codebook_sizes[0] * model.quantizer.codebook_sizes[1]
        else:
            k, vocab = 2, max(model.quantizer.codebook_sizes)
        super().__init__(model.sample_rate, model.frame_rate, k, vocab)
        self.model = model
        self.freeze()

    @property
    def hop_length(self):
        return self.model.hop_length

    def num_frames(self, num_samples):
        return self.model.num_frames(num_samples)

    def _encode(self, wav):
        codes = self.model.encode(wav)
        if self.flatten:
            codes = self.model.quantizer.flatten_codes(codes).unsqueeze(-1)
        return codes

    def _decode(self, tokens):
        if self.flatten:
            tokens = self.model.quantizer.unflatten_codes(tokens[..., 0])
        return self.model.decode(tokens)

    def save(self, path, dtype=None):
        """Writes the model to ``path`` (a file, or a directory for ``simcodec.ckpt``).

        ``dtype`` (``"float16"`` or ``"int8"``) stores the decoder in fewer
        bits; the encoder and codebook stay as they are, so the tokens do not
        change (``FrameRateCodec.exact_prefixes``).
        """
        if os.path.isdir(path) or not os.path.splitext(path)[1]:
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, CHECKPOINT_NAME)
        self.model.save(path, dtype=dtype)
        return path


def _checkpoint_path(source):
    source = os.fspath(source)
    if os.path.isdir(source):
        source = os.path.join(source, CHECKPOINT_NAME)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"no SimCodec checkpoint at {source}")
    return source
