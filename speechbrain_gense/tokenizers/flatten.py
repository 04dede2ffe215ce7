"""Frame-major view of ``K`` codebooks: ``[B, T, K]`` tokens <-> ``[B, T * K]`` ids.

Autoregressive LMs over multi-codebook codec tokens (GenSE's S2S on an RVQ
codec, DAC-SE1) read one sequence: frame 0's codebooks ``0 .. K-1``, then
frame 1's, and so on ("flattened", as DAC-SE1 flattens DAC's 9 codebooks).
Each codebook has its own ids, ``offset + c * V + token`` for codebook ``c``
of ``V`` codes, so the LM always knows which codebook a position holds and a
:class:`~speechbrain_gense.decoding.CodebookOrderLogitsProcessor` with the
same ``offset`` and ``V`` keeps generation in codebook order.

Example
-------
>>> tokens = torch.tensor([[[1, 2], [3, 0]]])          # [B=1, T=2, K=2], V = 4
>>> ids = flatten_codebooks(tokens, offset=10, vocab_per_codebook=4)
>>> ids.tolist()
[[11, 16, 13, 14]]
>>> unflatten_codebooks(ids, 2, offset=10, vocab_per_codebook=4).tolist()
[[[1, 2], [3, 0]]]
"""

import torch


def codebook_offsets(num_codebooks, offset, vocab_per_codebook):
    """``LongTensor[K]``: the first id of each codebook (``offset + c * V``)."""
    return offset + vocab_per_codebook * torch.arange(int(num_codebooks))


def flatten_codebooks(tokens, offset=0, vocab_per_codebook=None):
    """``tokens[B, T, K]`` (codebook ids ``0 .. V-1``) -> frame-major ids ``[B, T * K]``.

    Arguments
    ---------
    tokens : torch.LongTensor
        ``[B, T, K]`` tokens.
    offset : int
        Id of codebook 0's token 0.
    vocab_per_codebook : int, optional
        ``V``; required when ``K > 1``.

    Returns
    -------
    torch.LongTensor
        ``[B, T * K]``; item ``b``'s first ``frames * K`` ids are its first ``frames`` frames.

    Example
    -------
    >>> flatten_codebooks(torch.zeros(2, 3, 4, dtype=torch.long), 5, 8).shape
    torch.Size([2, 12])
    >>> flatten_codebooks(torch.zeros(1, 2, 3, dtype=torch.long), 5, 8)[0, :3].tolist()
    [5, 13, 21]
    """
    if tokens.dim() != 3:
        raise ValueError(f"expected tokens [B, T, K], got shape {tuple(tokens.shape)}")
    B, T, K = tokens.shape
    if K > 1 and vocab_per_codebook is None:
        raise ValueError("flatten_codebooks needs vocab_per_codebook for K > 1 codebooks")
    V = int(vocab_per_codebook or 0)
    shifted = tokens + codebook_offsets(K, int(offset), V).to(tokens.device)
    return shifted.reshape(B, T * K)


def unflatten_codebooks(ids, num_codebooks, offset=0, vocab_per_codebook=None):
    """Frame-major ids ``[B, N]`` -> ``tokens[B, N // K, K]`` (a last partial frame is cut).

    The inverse of :func:`flatten_codebooks`.

    Example
    -------
    >>> ids = flatten_codebooks(torch.tensor([[[7, 1, 0]]]), 2, 8)
    >>> unflatten_codebooks(torch.cat([ids, ids[:, :1]], 1), 3, 2, 8).tolist()
    [[[7, 1, 0]]]
    """
    K = int(num_codebooks)
    if ids.dim() != 2 or K < 1:
        raise ValueError(f"expected ids [B, N] and K >= 1, got shape {tuple(ids.shape)}, K={K}")
    if K > 1 and vocab_per_codebook is None:
        raise ValueError("unflatten_codebooks needs vocab_per_codebook for K > 1 codebooks")
    B, N = ids.shape
    T = N // K
    frames = ids[:, :T * K].reshape(B, T, K)
    return frames - codebook_offsets(K, int(offset), int(vocab_per_codebook or 0)).to(ids.device)


__all__ = ["codebook_offsets", "flatten_codebooks", "unflatten_codebooks"]
