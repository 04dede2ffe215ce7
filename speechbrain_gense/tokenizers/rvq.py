"""RVQ codec tokenizer: ``K`` tokens per frame from a trained :class:`RVQCodec`.

The codec was trained with quantizer dropout, so any first ``k`` of its ``K``
codebooks decode; ``num_codebooks=k`` gives a lower-bitrate tokenizer that
keeps those (``load_tokenizer("rvq:pretrained/rvqcodec?num_codebooks=2")``).

Example
-------
>>> from speechbrain_gense.models.rvq_codec import RVQCodec, TINY_RVQ_CONFIG
>>> tok = RVQTokenizer(RVQCodec(**TINY_RVQ_CONFIG))
>>> tokens, lens = tok.encode(torch.randn(2, 160), torch.tensor([1.0, 0.5]))
>>> tokens.shape, tok.vocab_size, lens.tolist()
(torch.Size([2, 10, 4]), 8, [1.0, 0.5])
>>> tok.decode(tokens, lens).shape
torch.Size([2, 160])
>>> RVQTokenizer(tok.model, num_codebooks=2).encode(torch.randn(1, 160))[0].shape
torch.Size([1, 10, 2])
"""

import os

import torch  # noqa: F401  (doctests use it)

from ..models.rvq_codec import RVQCodec
from .base import AudioTokenizer

#: File name used when ``source`` is a directory.
CHECKPOINT_NAME = "rvqcodec.ckpt"


class RVQTokenizer(AudioTokenizer):
    """Frozen :class:`RVQCodec` behind the :class:`AudioTokenizer` contract.

    Arguments
    ---------
    source : str or RVQCodec
        A model, a file written by :meth:`RVQCodec.save` / :meth:`save`, or a
        directory holding ``rvqcodec.ckpt``. A model passed in is frozen (eval
        mode, no gradients) in place.
    num_codebooks : int, optional
        Keep the first ``k`` codebooks (default: all ``K``).
    map_location : str
        Device to load a checkpoint onto.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.models.rvq_codec import RVQCodec, TINY_RVQ_CONFIG
    >>> tok = RVQTokenizer(RVQCodec(**TINY_RVQ_CONFIG))
    >>> tok.num_codebooks, tok.vocab_size, tok.frame_rate
    (4, 8, 1000.0)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = tok.save(d)
    ...     again = RVQTokenizer(d, num_codebooks=1)
    >>> wav = torch.randn(1, 320)
    >>> torch.equal(tok.encode(wav)[0][..., :1], again.encode(wav)[0])
    True
    >>> RVQTokenizer(tok.model, num_codebooks=5)
    Traceback (most recent call last):
    ...
    ValueError: num_codebooks must be in [1, 4] for this codec, got 5
    """

    def __init__(self, source, num_codebooks=None, map_location="cpu"):
        model = source if isinstance(source, RVQCodec) else RVQCodec.load(
            _checkpoint_path(source), map_location=map_location)
        K = model.num_codebooks
        k = K if num_codebooks is None else int(num_codebooks)
        if not 1 <= k <= K:
            raise ValueError(f"num_codebooks must be in [1, {K}] for this codec, got {k}")
        super().__init__(model.sample_rate, model.frame_rate, k, model.quantizer.codebook_size)
        self.model = model
        self.freeze()

    @property
    def hop_length(self):
        return self.model.hop_length

    def num_frames(self, num_samples):
        return self.model.num_frames(num_samples)

    def _encode(self, wav):
        return self.model.encode(wav, n_q=self.num_codebooks)

    def _decode(self, tokens):
        return self.model.decode(tokens)

    def save(self, path, dtype=None):
        """Writes the model to ``path`` (a file, or a directory for ``rvqcodec.ckpt``);
        ``dtype="float16"`` halves the file."""
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
        raise FileNotFoundError(f"no RVQ codec checkpoint at {source}")
    return source


__all__ = ["CHECKPOINT_NAME", "RVQTokenizer"]
