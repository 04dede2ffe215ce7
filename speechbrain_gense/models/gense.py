"""GenSE: hierarchical N2S -> S2S token language models (Yao et al., ICLR 2025).

GenSE enhances speech in two autoregressive stages over one vocabulary:

1. **N2S** (noise to semantic): a decoder-only LM reads the noisy signal's
   semantic tokens and writes exactly as many clean semantic tokens;
2. **S2S** (semantic to speech): a second LM reads the *token chain* ``noisy
   semantic ; clean semantic ; BOS ; noisy acoustic`` and writes exactly as
   many clean acoustic (codec) tokens as the noisy acoustic sequence has;
   the codec turns them into audio.

The layout follows the public inference code of GenSE (``models/gense.py``
and ``configs/gense.yaml`` of the authors' repository):

- both LMs are ``transformers`` ``GPT2LMHeadModel`` trained from scratch (12
  layers, width 1024, 8 heads; 2048 / 4096 positions in the paper);
- one vocabulary: pad 0, bos 1, eos 2, semantic token ``s -> s + 3``,
  acoustic token ``a -> a + 3 + N_sem`` (:class:`GenSEVocab`; the offsets
  are derived from the two tokenizers, never written as numbers);
- N2S prompt ``[noisy_sem ; BOS]`` with positions ``0 .. T_s``; the ``i``-th
  generated clean semantic token gets position ``i``, the position of the
  noisy token it replaces (:func:`n2s_layout`);
- S2S prompt ``[noisy_sem ; clean_sem ; BOS]`` with positions ``0 .. 2 T_s``
  then ``noisy_ac`` with positions ``0 .. T_a - 1``; the ``i``-th generated
  acoustic token gets position ``offset + i`` (1000 in the public code), so
  it stays aligned with noisy acoustic token ``i`` at a constant distance
  (:func:`s2s_layout`);
- logits outside the target token range are masked; sampling is
  multinomial over the (range-masked) softmax. Unlike the public code (which
  re-runs the whole sequence for every token), generation here goes through
  the shared AR path :func:`speechbrain_gense.decoding.ar_generate`
  (``transformers`` ``generate`` with a KV cache and ``LogitsProcessor``\\ s
  for the token range and the exact length; the planned position ids of the
  generated tokens go in with the prompt's as one ``[B, P + N]`` tensor).
  Speed options: ``precision="int8"`` (both LMs with int8 linear layers) and,
  through the interface, batched chunks (``carry_context: false`` with a
  ``batch_size``: all chunks of a file in one ``generate`` per LM).

Training (:meth:`GenSE.compute_objectives`): next-token cross-entropy on the
target part only (teacher forcing on the clean targets), with the softmax
restricted to the target range, as at inference.

Ablations are configuration: ``s2s_parts`` chooses the S2S prompt (the token
chain ``["noisy_sem", "clean_sem", "noisy_ac"]``; ``["clean_sem"]``: no chain;
``["noisy_sem"]`` with ``n2s=None``: one LM from noisy semantic to clean
acoustic tokens).

Example
-------
>>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> sem, ac = DebugTokenizer(hop=320, vocab_size=16), DebugTokenizer(vocab_size=32)
>>> vocab = GenSEVocab(sem.vocab_size, ac.vocab_size)
>>> model = GenSE(sem, ac, n2s=TokenLM(vocab.size, **TINY_LM), s2s=TokenLM(vocab.size, **TINY_LM),
...               max_seconds=0.5)
>>> wav = torch.randn(2, 3200) * 0.1
>>> out = model.enhance(wav, torch.tensor([1.0, 0.5]), generator=torch.Generator().manual_seed(0))
>>> out["wav"].shape, out["tokens"].shape, out["confidence"].shape, out["nfe"]
(torch.Size([2, 3200]), torch.Size([2, 16, 1]), torch.Size([2, 16]), 26)
"""

import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..data.degrade import fit_length_end
from ..tokenizers.flatten import flatten_codebooks, unflatten_codebooks
from .base import GenerativeEnhancer
from .io import ConfigCheckpoint

#: A small LM for tests and doctests.
TINY_LM = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "max_positions": 128,
           "dropout": 0.0}

#: The prompt parts of S2S that GenSE's token chain uses (in this order).
S2S_PARTS = ("noisy_sem", "clean_sem", "noisy_ac")


class GenSEVocab:
    """The one vocabulary of both LMs: specials, then semantic, then acoustic tokens.

    With ``num_codebooks`` ``K > 1`` (a multi-codebook codec such as the RVQ
    codec; GenSE itself uses SimCodec's one codebook) the acoustic tokens are
    flattened frame-major and codebook ``c`` has its own ids, ``ac_offset + c *
    N_ac + a`` (:mod:`~speechbrain_gense.tokenizers.flatten`, the layout of
    DAC-SE1), so S2S writes ``K`` tokens per frame in codebook order.

    Arguments
    ---------
    num_semantic : int
        Semantic codebook size (``N_sem``, e.g. 1024 k-means clusters).
    num_acoustic : int
        Acoustic codebook size (``N_ac``, e.g. 8192 SimCodec codes).
    num_codebooks : int
        Acoustic codebooks ``K`` (1: GenSE's layout).

    Example
    -------
    >>> v = GenSEVocab(1024, 8192)
    >>> v.pad, v.bos, v.eos, v.semantic_range, v.acoustic_range, v.size
    (0, 1, 2, (3, 1027), (1027, 9219), 9219)
    >>> v.sem(torch.tensor([0, 1023])).tolist(), v.ac(torch.tensor([0, 8191])).tolist()
    ([3, 1026], [1027, 9218])
    >>> rvq = GenSEVocab(1024, 1024, num_codebooks=2)
    >>> rvq.acoustic_range, rvq.ac(torch.tensor([[[0, 0], [1023, 1023]]])).tolist()
    ((1027, 3075), [[1027, 2051, 2050, 3074]])
    """

    pad, bos, eos = 0, 1, 2
    num_special = 3

    def __init__(self, num_semantic, num_acoustic, num_codebooks=1):
        self.num_semantic, self.num_acoustic = int(num_semantic), int(num_acoustic)
        self.num_codebooks = int(num_codebooks)
        if self.num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.sem_offset = self.num_special
        self.ac_offset = self.num_special + self.num_semantic
        self.size = self.ac_offset + self.num_codebooks * self.num_acoustic

    @property
    def semantic_range(self):
        """``(lo, hi)``: ids of semantic tokens are ``lo <= id < hi``."""
        return (self.sem_offset, self.ac_offset)

    @property
    def acoustic_range(self):
        """``(lo, hi)``: ids of acoustic tokens."""
        return (self.ac_offset, self.size)

    def sem(self, tokens):
        """Semantic tokens -> vocabulary ids."""
        return tokens + self.sem_offset

    def ac(self, tokens):
        """Acoustic tokens -> vocabulary ids: ``[B, T, K]`` -> flattened ``[B, T * K]``
        (a ``[B, T, 1]`` tensor gives ``[B, T]``); other shapes: one codebook."""
        if tokens.dim() == 3:
            if tokens.shape[-1] != self.num_codebooks:
                raise ValueError(f"acoustic tokens have {tokens.shape[-1]} codebooks, the "
                                 f"vocabulary {self.num_codebooks}")
            return flatten_codebooks(tokens, self.ac_offset, self.num_acoustic)
        if self.num_codebooks != 1:
            raise ValueError(f"acoustic tokens of {self.num_codebooks} codebooks must be "
                             f"[B, T, K], got shape {tuple(tokens.shape)}")
        return tokens + self.ac_offset

    def ac_tokens(self, ids):
        """Flattened acoustic ids ``[B, N]`` -> tokens ``[B, N // K, K]`` (the inverse of :meth:`ac`)."""
        return unflatten_codebooks(ids, self.num_codebooks, self.ac_offset, self.num_acoustic)

    def acoustic_order(self, first=0):
        """The token range of generated acoustic position ``t``: the whole acoustic range
        (one codebook), or codebook ``(first + t) % K``'s ids
        (:class:`~speechbrain_gense.decoding.CodebookOrderLogitsProcessor`)."""
        if self.num_codebooks == 1:
            return self.acoustic_range
        from ..decoding import CodebookOrderLogitsProcessor

        return CodebookOrderLogitsProcessor(self.ac_offset, self.num_acoustic,
                                            self.num_codebooks, first_codebook=first)


# -- layouts -------------------------------------------------------------------


def assemble(segments, batch):
    """Concatenates per-item segments into right-padded id and position tensors.

    Arguments
    ---------
    segments : list of tuple
        ``(ids, n, pos_start)``: ``ids`` ``LongTensor[B, T]`` (or an int: one
        special token), ``n`` ``[B]`` valid tokens of each item (ignored for
        a special token: 1), ``pos_start`` ``[B]`` or int: position id of the
        segment's first token (the others follow it).
    batch : int
        ``B``.

    Returns
    -------
    dict
        ``ids`` ``[B, L]`` (pad 0), ``positions`` ``[B, L]`` (0 in padding),
        ``lens`` ``[B]`` (tokens per item), ``starts`` ``[B, len(segments)]``
        (where each segment begins in each item).

    Example
    -------
    >>> out = assemble([(torch.tensor([[5, 6, 7], [8, 9, 0]]), torch.tensor([3, 2]), 0),
    ...                 (1, None, torch.tensor([3, 2]))], batch=2)
    >>> out["ids"].tolist(), out["positions"].tolist(), out["lens"].tolist()
    ([[5, 6, 7, 1], [8, 9, 1, 0]], [[0, 1, 2, 3], [0, 1, 2, 0]], [4, 3])
    """
    rows_ids, rows_pos, starts = [], [], []
    for b in range(batch):
        ids, pos, st = [], [], []
        offset = 0
        for seg_ids, n, p0 in segments:
            p0 = int(p0[b]) if torch.is_tensor(p0) else int(p0)
            if isinstance(seg_ids, int):
                piece = torch.tensor([seg_ids], dtype=torch.long)
            else:
                piece = seg_ids[b, :int(n[b])].long().cpu()
            st.append(offset)
            ids.append(piece)
            pos.append(torch.arange(p0, p0 + piece.numel()))
            offset += piece.numel()
        rows_ids.append(torch.cat(ids))
        rows_pos.append(torch.cat(pos))
        starts.append(st)
    lens = torch.tensor([r.numel() for r in rows_ids])
    L = int(lens.max())
    out_ids = torch.zeros(batch, L, dtype=torch.long)
    out_pos = torch.zeros(batch, L, dtype=torch.long)
    for b in range(batch):
        out_ids[b, :lens[b]] = rows_ids[b]
        out_pos[b, :lens[b]] = rows_pos[b]
    return {"ids": out_ids, "positions": out_pos, "lens": lens, "starts": torch.tensor(starts)}


def n2s_layout(vocab, noisy_sem, sem_frames, target_offset=0):
    """N2S prompt ``[noisy_sem ; BOS]`` and the positions of its targets.

    Positions (as in GenSE's public ``N2S.generate``): noisy semantic token
    ``j`` at ``j``, BOS at ``T_s``, generated clean token ``i`` at
    ``target_offset + i`` (0: the position of the noisy token it replaces).

    Arguments
    ---------
    vocab : GenSEVocab
        The vocabulary.
    noisy_sem : torch.LongTensor
        ``[B, T]`` semantic tokens of the noisy signal (tokenizer ids).
    sem_frames : torch.LongTensor
        ``[B]`` valid frames ``T_s`` of each item.
    target_offset : int
        Position of the first target token.

    Returns
    -------
    dict
        ``ids``, ``positions``, ``lens`` (the prompt, right-padded),
        ``num_tokens`` (``T_s``: tokens to generate), ``target_start``
        (position id of target token 0) and ``token_range`` (the semantic ids).

    Example
    -------
    >>> v = GenSEVocab(16, 32)
    >>> p = n2s_layout(v, torch.tensor([[4, 5, 6]]), torch.tensor([3]))
    >>> p["ids"].tolist(), p["positions"].tolist(), p["num_tokens"].tolist(), p["token_range"]
    ([[7, 8, 9, 1]], [[0, 1, 2, 3]], [3], (3, 19))
    """
    frames = torch.as_tensor(sem_frames).long().cpu()
    out = assemble([(vocab.sem(noisy_sem), frames, 0), (vocab.bos, None, frames)],
                   noisy_sem.shape[0])
    out.update(num_tokens=frames, target_start=torch.full_like(frames, int(target_offset)),
               token_range=vocab.semantic_range)
    return out


def s2s_layout(vocab, noisy_sem, clean_sem, sem_frames, noisy_ac, ac_frames, target_offset,
               parts=S2S_PARTS):
    """S2S prompt (the token chain) and the positions of its targets.

    With the default ``parts`` the prompt is ``[noisy_sem ; clean_sem ; BOS ;
    noisy_ac]`` (GenSE's ``S2S.generate``): the semantic parts and BOS have
    consecutive positions ``0 .. 2 T_s``, the noisy acoustic tokens ``0 ..
    T_a - 1`` and generated acoustic token ``i`` gets ``target_offset + i``.
    Other ``parts`` (a subset, in this order) give the ablations.

    Arguments
    ---------
    vocab : GenSEVocab
        The vocabulary.
    noisy_sem, clean_sem : torch.LongTensor or None
        ``[B, T_s]`` semantic tokens (tokenizer ids); only those named in
        ``parts`` are needed.
    sem_frames : torch.LongTensor
        ``[B]`` valid semantic frames.
    noisy_ac : torch.LongTensor or None
        ``[B, T_a]`` acoustic tokens of the noisy signal, or ``[B, T_a, K]``
        (flattened frame-major by ``vocab``: ``K`` tokens per frame).
    ac_frames : torch.LongTensor
        ``[B]`` valid acoustic frames (``K`` times as many tokens to generate).
    target_offset : int
        Position of the first generated acoustic token.
    parts : sequence of str
        Prompt parts among ``noisy_sem``, ``clean_sem``, ``noisy_ac``.

    Returns
    -------
    dict
        As :func:`n2s_layout` (``token_range``: the acoustic ids, or a
        :class:`~speechbrain_gense.decoding.CodebookOrderLogitsProcessor` for ``K > 1``;
        ``num_codebooks``: ``K``).

    Example
    -------
    >>> v = GenSEVocab(16, 32)
    >>> p = s2s_layout(v, torch.tensor([[4, 5]]), torch.tensor([[6, 7]]), torch.tensor([2]),
    ...                torch.tensor([[0, 1, 2]]), torch.tensor([3]), target_offset=10)
    >>> p["ids"].tolist(), p["positions"].tolist()
    ([[7, 8, 9, 10, 1, 19, 20, 21]], [[0, 1, 2, 3, 4, 0, 1, 2]])
    >>> p["num_tokens"].tolist(), p["target_start"].tolist(), p["token_range"]
    ([3], [10], (19, 51))
    """
    parts = tuple(parts)
    bad = [p for p in parts if p not in S2S_PARTS]
    if bad or not parts or list(parts) != [p for p in S2S_PARTS if p in parts]:
        raise ValueError(f"s2s parts must be a non-empty ordered subset of {list(S2S_PARTS)}, "
                         f"got {list(parts)}")
    sem_frames = torch.as_tensor(sem_frames).long().cpu()
    ac_tokens = torch.as_tensor(ac_frames).long().cpu() * vocab.num_codebooks
    given = {"noisy_sem": noisy_sem, "clean_sem": clean_sem, "noisy_ac": noisy_ac}
    for p in parts:
        if given[p] is None:
            raise ValueError(f"s2s prompt part {p!r} is needed but was not given")
    segments, pos = [], torch.zeros_like(sem_frames)
    for name in ("noisy_sem", "clean_sem"):
        if name in parts:
            segments.append((vocab.sem(given[name]), sem_frames, pos))
            pos = pos + sem_frames
    segments.append((vocab.bos, None, pos))
    if "noisy_ac" in parts:
        segments.append((vocab.ac(noisy_ac), ac_tokens, 0))
    batch = next(given[p] for p in parts).shape[0]
    out = assemble(segments, batch)
    out.update(num_tokens=ac_tokens, target_start=torch.full_like(ac_tokens, int(target_offset)),
               token_range=vocab.acoustic_order(), num_codebooks=vocab.num_codebooks)
    return out


def block_frames(sem_rate, ac_rate, max_frames=64):
    """Frames per streaming block: the shortest time holding whole frames of both streams.

    ``(n_sem, n_ac)`` with ``n_ac / n_sem = ac_rate / sem_rate`` in lowest
    terms (50 Hz semantic tokens and SimCodec at 80 Hz: 5 and 8, 100 ms; the
    RVQ codec at 50 Hz: 1 and 1, 20 ms).

    Example
    -------
    >>> block_frames(50.0, 80.0), block_frames(50.0, 50.0), block_frames(50.0, 100.0)
    ((5, 8), (1, 1), (1, 2))
    """
    from fractions import Fraction

    ratio = Fraction(float(ac_rate) / float(sem_rate)).limit_denominator(max_frames)
    if abs(float(ratio) - float(ac_rate) / float(sem_rate)) > 1e-6:
        raise ValueError(f"frame rates {sem_rate} and {ac_rate} Hz have no common block of "
                         f"at most {max_frames} frames")
    return ratio.denominator, ratio.numerator


def _fit_repeat(x, n):
    """The first ``n`` frames of ``x[T, ...]``, padded by repeating its last frame."""
    if x.shape[0] >= n:
        return x[:n]
    last = x[-1:] if x.shape[0] else torch.zeros((1, *x.shape[1:]), dtype=x.dtype)
    return torch.cat([x, last.expand(n - x.shape[0], *x.shape[1:])])


def interleaved_layout(vocab, noisy_sem, sem_frames, noisy_ac, ac_frames, block, lookahead,
                       clean_sem=None, clean_ac=None):
    """The streaming layout GenSE proposes as future work (appendix A.8), with lookahead.

    Time is cut into blocks of ``block = (n_sem, n_ac)`` frames
    (:func:`block_frames`). Noisy block ``N_j`` is ``n_sem`` noisy semantic
    tokens then the ``n_ac x K`` noisy acoustic tokens of the same time
    (frame-major); clean block ``C_t`` is the same for the clean signal. One
    causal LM reads and writes the sequence

    ``BOS ; N_0 .. N_{L-1} ; N_L ; C_0 ; N_{L+1} ; C_1 ; ... ; C_{T-1}``

    so clean block ``t`` is written once noisy block ``t + L`` has arrived:
    the output can start after ``L + 1`` blocks of input (the latency of the
    layout) instead of after the whole utterance. The ``N`` tokens are given
    (forced at inference); the ``C`` tokens are predicted, each within its
    range (semantic ids, or its codebook's acoustic ids). Positions are
    consecutive. ``T = ceil(ac_frames / n_ac)``; the last block is completed
    by repeating the last frame of each stream.

    Arguments
    ---------
    vocab : GenSEVocab
        The vocabulary.
    noisy_sem : torch.LongTensor
        ``[B, T_s]`` semantic tokens of the noisy signal.
    sem_frames : torch.LongTensor
        ``[B]`` valid semantic frames.
    noisy_ac : torch.LongTensor
        ``[B, T_a, K]`` (or ``[B, T_a]``) acoustic tokens of the noisy signal.
    ac_frames : torch.LongTensor
        ``[B]`` valid acoustic frames.
    block : tuple of int
        ``(n_sem, n_ac)`` frames per block.
    lookahead : int
        ``L >= 0`` noisy blocks read before the clean block of the same time.
    clean_sem, clean_ac : torch.LongTensor, optional
        Clean tokens (training targets; same shapes as the noisy ones). Without
        them the ``C`` positions hold the pad id.

    Returns
    -------
    dict
        ``ids``, ``positions``, ``lens`` (``[B, L]``, ``[B, L]``, ``[B]``),
        ``prompt_lens`` (index of the first ``C`` token), ``target`` (``[B, L]``,
        True on ``C`` tokens), ``lo`` / ``hi`` (``[B, L]``: the allowed ids of
        each ``C`` token), ``blocks`` (``[B]``: ``T``), ``block_size``
        (tokens per block) and ``block`` (``(n_sem, n_ac)``).

    Example
    -------
    >>> v = GenSEVocab(4, 8)
    >>> lay = interleaved_layout(v, torch.tensor([[0, 1, 2]]), torch.tensor([3]),
    ...                          torch.tensor([[[0], [1], [2]]]), torch.tensor([3]), (1, 1), 1,
    ...                          clean_sem=torch.tensor([[3, 3, 3]]),
    ...                          clean_ac=torch.tensor([[[7], [7], [7]]]))
    >>> lay["ids"].tolist()  # BOS, N0, N1, C0, N2, C1, C2
    [[1, 3, 7, 4, 8, 6, 14, 5, 9, 6, 14, 6, 14]]
    >>> lay["target"].int().tolist(), lay["prompt_lens"].tolist()
    ([[0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 1]], [5])
    >>> lay["lo"][0, 5:7].tolist(), lay["hi"][0, 5:7].tolist()
    ([3, 7], [7, 15])
    """
    n_sem, n_ac = (int(x) for x in block)
    lookahead = int(lookahead)
    if n_sem < 1 or n_ac < 1 or lookahead < 0:
        raise ValueError(f"need block frames >= 1 and lookahead >= 0, got {block}, {lookahead}")
    if noisy_ac.dim() == 2:
        noisy_ac = noisy_ac[..., None]
    if clean_ac is not None and clean_ac.dim() == 2:
        clean_ac = clean_ac[..., None]
    K = vocab.num_codebooks
    if noisy_ac.shape[-1] != K:
        raise ValueError(f"acoustic tokens have {noisy_ac.shape[-1]} codebooks, the "
                         f"vocabulary {K}")
    sem_lo, sem_hi = vocab.semantic_range
    ac_lo = torch.tensor([vocab.ac_offset + c * vocab.num_acoustic for c in range(K)])
    block_size = n_sem + n_ac * K
    # the ranges of the tokens of one C block
    c_lo = torch.cat([torch.full((n_sem,), sem_lo), ac_lo.repeat(n_ac)])
    c_hi = torch.cat([torch.full((n_sem,), sem_hi), ac_lo.repeat(n_ac) + vocab.num_acoustic])
    B = noisy_sem.shape[0]
    rows, blocks, prompt_lens = [], [], []
    for b in range(B):
        T = max(1, -(-int(ac_frames[b]) // n_ac))
        s_len, a_len = max(int(sem_frames[b]), 1), max(int(ac_frames[b]), 1)

        def block_ids(sem, ac):
            sem = _fit_repeat(sem[b, :s_len].long().cpu(), T * n_sem)
            ac = _fit_repeat(ac[b, :a_len].long().cpu(), T * n_ac)
            sem_ids = vocab.sem(sem).view(T, n_sem)
            ac_ids = vocab.ac(ac[None])[0].view(T, n_ac * K)
            return torch.cat([sem_ids, ac_ids], dim=1)  # [T, block_size]

        noisy = block_ids(noisy_sem, noisy_ac)
        clean = (block_ids(clean_sem, clean_ac) if clean_sem is not None and clean_ac is not None
                 else torch.full_like(noisy, vocab.pad))
        ids, target = [torch.tensor([vocab.bos])], [torch.zeros(1, dtype=torch.bool)]
        for j in range(min(lookahead, T)):
            ids.append(noisy[j])
            target.append(torch.zeros(block_size, dtype=torch.bool))
        first_c = None
        for t in range(T):
            if t + lookahead < T:
                ids.append(noisy[t + lookahead])
                target.append(torch.zeros(block_size, dtype=torch.bool))
            if first_c is None:
                first_c = sum(x.numel() for x in ids)
            ids.append(clean[t])
            target.append(torch.ones(block_size, dtype=torch.bool))
        rows.append((torch.cat(ids), torch.cat(target), T))
        blocks.append(T)
        prompt_lens.append(first_c)
    lens = torch.tensor([r[0].numel() for r in rows])
    L = int(lens.max())
    out_ids = torch.full((B, L), vocab.pad, dtype=torch.long)
    target = torch.zeros(B, L, dtype=torch.bool)
    lo = torch.zeros(B, L, dtype=torch.long)
    hi = torch.zeros(B, L, dtype=torch.long)
    for b, (ids, tgt, T) in enumerate(rows):
        out_ids[b, :ids.numel()] = ids
        target[b, :tgt.numel()] = tgt
        where = tgt.nonzero()[:, 0]
        lo[b, where] = c_lo.repeat(T)
        hi[b, where] = c_hi.repeat(T)
    positions = torch.arange(L)[None, :].expand(B, L) * (torch.arange(L)[None, :] < lens[:, None])
    return {"ids": out_ids, "positions": positions.contiguous(), "lens": lens,
            "prompt_lens": torch.tensor(prompt_lens), "target": target, "lo": lo, "hi": hi,
            "blocks": torch.tensor(blocks), "block_size": block_size, "block": (n_sem, n_ac)}


def teacher_forcing(layout, target_ids, pad=0):
    """Training input ``prompt ; target[:-1]`` with positions and target indices.

    The hidden state at index ``prompt_len - 1 + i`` predicts target token
    ``i`` (next-token prediction); only those positions enter the loss.

    Arguments
    ---------
    layout : dict
        Output of :func:`n2s_layout` / :func:`s2s_layout`.
    target_ids : torch.LongTensor
        ``[B, T]`` clean target tokens as vocabulary ids (``num_tokens`` of
        each item are used).
    pad : int
        Padding id.

    Returns
    -------
    dict
        ``ids``, ``positions``, ``attention_mask`` ``[B, L]``, ``query`` ``[B, T]``
        (indices into the sequence of the hidden states that predict each
        target), ``targets`` ``[B, T]``, ``target_mask`` ``[B, T]`` (valid).

    Example
    -------
    >>> v = GenSEVocab(16, 32)
    >>> lay = n2s_layout(v, torch.tensor([[4, 5, 6], [4, 5, 0]]), torch.tensor([3, 2]))
    >>> tf = teacher_forcing(lay, v.sem(torch.tensor([[1, 2, 3], [7, 8, 0]])))
    >>> tf["ids"].tolist()
    [[7, 8, 9, 1, 4, 5], [7, 8, 1, 10, 0, 0]]
    >>> tf["positions"].tolist(), tf["query"].tolist()
    ([[0, 1, 2, 3, 0, 1], [0, 1, 2, 0, 0, 0]], [[3, 4, 5], [2, 3, 0]])
    """
    B = target_ids.shape[0]
    n = layout["num_tokens"]
    segments = [(layout["ids"], layout["lens"], 0), (target_ids, (n - 1).clamp(min=0), 0)]
    seq = assemble(segments, B)
    # positions: the prompt's own, then target_start + i for target token i (as input)
    positions = seq["positions"].clone()
    T = int(n.max()) if n.numel() else 0
    query = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        P = int(layout["lens"][b])
        positions[b, :P] = layout["positions"][b, :P]
        k = max(int(n[b]) - 1, 0)
        positions[b, P:P + k] = int(layout["target_start"][b]) + torch.arange(k)
        query[b, :int(n[b])] = P - 1 + torch.arange(int(n[b]))
    L = seq["ids"].shape[1]
    attention = (torch.arange(L)[None, :] < seq["lens"][:, None]).long()
    target_mask = torch.arange(T)[None, :] < n[:, None]
    cut = target_ids[:, :T].cpu()
    targets = torch.where(target_mask, cut, torch.full_like(cut, pad))
    return {"ids": seq["ids"], "positions": positions, "attention_mask": attention,
            "query": query, "targets": targets, "target_mask": target_mask}


def target_positions(layout, num_tokens=None):
    """Position ids ``[B, N]`` of the generated tokens: ``target_start + i``."""
    N = int(layout["num_tokens"].max()) if num_tokens is None else int(num_tokens)
    return layout["target_start"][:, None] + torch.arange(N)[None, :]


# -- the two language models ----------------------------------------------------


_HEAD, _EMBED = "lm.lm_head.weight", ("lm.transformer.wte.weight", "lm.model.embed_tokens.weight")


def _drop_tied_head(module, state_dict, prefix, local_metadata):
    """State-dict hook: leaves out the LM head when it is the embedding table itself."""
    head = module.lm.get_output_embeddings().weight
    if head is module.lm.get_input_embeddings().weight:
        state_dict.pop(prefix + _HEAD, None)


def _fill_tied_head(module, state_dict, prefix, *args):
    """Load pre-hook: gives a state dict without the tied head its value back."""
    if prefix + _HEAD not in state_dict:
        for key in _EMBED:
            if prefix + key in state_dict:
                state_dict[prefix + _HEAD] = state_dict[prefix + key]


class TokenLM(ConfigCheckpoint, nn.Module):
    """A decoder-only ``transformers`` LM over the GenSE vocabulary (N2S or S2S).

    Arguments
    ---------
    vocab_size : int
        Vocabulary size (:attr:`GenSEVocab.size`).
    hidden_size, num_layers, num_heads : int
        Width, depth and heads (GenSE: 1024, 12, 8).
    max_positions : int
        Position-embedding table size (GenSE: 2048 for N2S, 4096 for S2S).
    dropout : float
        Residual, embedding and attention dropout (GenSE: 0.1).
    arch : str
        ``"gpt2"`` (``GPT2LMHeadModel``, GenSE's choice) or ``"llama"``
        (``LlamaForCausalLM``: RoPE over the same position ids).
    intermediate_size : int, optional
        MLP width (default: 4 x hidden).

    Example
    -------
    >>> lm = TokenLM(51, **TINY_LM)
    >>> h = lm.hidden(torch.tensor([[3, 4, 1]]), torch.tensor([[0, 1, 2]]))
    >>> h.shape, lm.range_logits(h, (3, 19)).shape
    (torch.Size([1, 3, 32]), torch.Size([1, 3, 16]))
    """

    ARCHS = ("gpt2", "llama")

    def __init__(self, vocab_size, hidden_size=256, num_layers=4, num_heads=4, max_positions=1024,
                 dropout=0.1, arch="gpt2", intermediate_size=None):
        super().__init__()
        if arch not in self.ARCHS:
            raise ValueError(f"arch must be one of {', '.join(self.ARCHS)}, got {arch!r}")
        self.config = dict(vocab_size=int(vocab_size), hidden_size=int(hidden_size),
                           num_layers=int(num_layers), num_heads=int(num_heads),
                           max_positions=int(max_positions), dropout=float(dropout), arch=arch,
                           intermediate_size=intermediate_size)
        inter = int(intermediate_size or 4 * hidden_size)
        specials = dict(bos_token_id=GenSEVocab.bos, eos_token_id=GenSEVocab.eos,
                        pad_token_id=GenSEVocab.pad)
        if arch == "gpt2":
            from transformers import GPT2Config, GPT2LMHeadModel

            cfg = GPT2Config(vocab_size=vocab_size, n_embd=hidden_size, n_layer=num_layers,
                             n_head=num_heads, n_inner=inter, n_positions=max_positions,
                             activation_function="gelu_new", resid_pdrop=dropout,
                             embd_pdrop=dropout, attn_pdrop=dropout, **specials)
            self.lm = GPT2LMHeadModel(cfg)
        else:
            from transformers import LlamaConfig, LlamaForCausalLM

            cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                              num_hidden_layers=num_layers, num_attention_heads=num_heads,
                              num_key_value_heads=num_heads, intermediate_size=inter,
                              max_position_embeddings=max_positions, attention_dropout=dropout,
                              **specials)
            self.lm = LlamaForCausalLM(cfg)
        # The LM head is tied to the token embedding: store the table once.
        self.register_state_dict_post_hook(_drop_tied_head)
        self.register_load_state_dict_pre_hook(_fill_tied_head)

    @property
    def max_positions(self):
        return self.config["max_positions"]

    def hidden(self, ids, positions, attention_mask=None):
        """Last hidden states ``[B, L, D]`` of the LM's body."""
        out = self.lm.base_model(input_ids=ids, position_ids=positions,
                                 attention_mask=attention_mask)
        return out.last_hidden_state

    def range_logits(self, hidden, token_range):
        """Logits ``[..., hi - lo]`` of the ids ``lo <= id < hi`` only (the LM head's rows)."""
        lo, hi = token_range
        weight = self.lm.get_output_embeddings().weight[lo:hi]
        return hidden @ weight.t()

    def loss(self, layout, target_ids):
        """Next-token cross-entropy on the target part only (range-restricted softmax).

        Returns
        -------
        dict
            ``loss`` (mean over valid target tokens), ``acc`` (argmax accuracy),
            ``tokens`` (number of target tokens).
        """
        device = self.lm.device
        tf = teacher_forcing(layout, target_ids.cpu())
        h = self.hidden(tf["ids"].to(device), tf["positions"].to(device),
                        tf["attention_mask"].to(device))
        query = tf["query"].to(device)
        h = h.gather(1, query[..., None].expand(-1, -1, h.shape[-1]))
        mask = tf["target_mask"].to(device)
        K = int(layout.get("num_codebooks", 1))
        if K == 1:
            lo, hi = layout["token_range"]
            logits = self.range_logits(h, (lo, hi))
            targets = (tf["targets"].to(device) - lo).clamp(min=0)
        else:  # flattened codebooks: target i is codebook i % K, softmax over its ids only
            order = layout["token_range"]
            lo = order.offsets[0]
            V = order.vocab_per_codebook
            logits = self.range_logits(h, (lo, lo + K * V))
            B, T = logits.shape[:2]
            book = (torch.arange(T, device=device) % K)[None, :, None, None].expand(B, T, 1, V)
            logits = logits.view(B, T, K, V).gather(2, book)[:, :, 0]
            targets = (tf["targets"].to(device) - lo - book[:, :, 0, 0] * V).clamp(min=0)
        ce = F.cross_entropy(logits[mask].float(), targets[mask])
        acc = (logits.argmax(-1)[mask] == targets[mask]).float().mean()
        return {"loss": ce, "acc": acc.detach(), "tokens": int(mask.sum())}


    def sequence_loss(self, layout):
        """Next-token cross-entropy on the ``target`` tokens of a whole sequence.

        For layouts whose predicted tokens are interleaved with given ones
        (:func:`interleaved_layout`): the hidden state at ``j - 1`` predicts
        token ``j`` wherever ``target[:, j]``, with the softmax restricted to
        ``[lo[:, j], hi[:, j])``.

        Returns
        -------
        dict
            ``loss``, ``acc`` and ``tokens``, as :meth:`loss`.
        """
        device = self.lm.device
        ids, lens = layout["ids"].to(device), layout["lens"].to(device)
        attention = (torch.arange(ids.shape[1], device=device)[None, :] < lens[:, None]).long()
        h = self.hidden(ids, layout["positions"].to(device), attention)
        tgt = layout["target"].to(device)[:, 1:]
        logits = self.lm.get_output_embeddings()(h[:, :-1][tgt])
        lo, hi = layout["lo"].to(device)[:, 1:][tgt], layout["hi"].to(device)[:, 1:][tgt]
        vocab = torch.arange(logits.shape[-1], device=device)[None, :]
        logits = logits.float().masked_fill((vocab < lo[:, None]) | (vocab >= hi[:, None]),
                                            -math.inf)
        targets = ids[:, 1:][tgt]
        ce = F.cross_entropy(logits, targets)
        acc = (logits.argmax(-1) == targets).float().mean()
        return {"loss": ce, "acc": acc.detach(), "tokens": int(tgt.sum())}


# -- GenSE ----------------------------------------------------------------------


class GenSE(GenerativeEnhancer):
    """Noisy wav -> semantic tokens -> N2S -> S2S -> codec decode (see the module doc).

    Arguments
    ---------
    semantic_tokenizer : AudioTokenizer
        Frozen semantic tokenizer (k-means over SSL or MFCC features; one codebook).
    acoustic_tokenizer : AudioTokenizer
        Frozen codec with a decoder, same sample rate: SimCodec (one codebook,
        as GenSE), or a multi-codebook codec (e.g. ``rvq:pretrained/rvqcodec``
        with its first ``K`` codebooks), whose tokens S2S reads and writes
        flattened frame-major, ``K`` per frame (:class:`GenSEVocab`).
    n2s : TokenLM or None
        The N2S LM; None: no semantic stage (then ``s2s_parts`` may not hold
        ``clean_sem``: the single-LM ablation).
    s2s : TokenLM
        The S2S LM.
    s2s_parts : sequence of str
        Prompt parts of S2S (default: the token chain).
    max_seconds : float
        Longest audio one :meth:`enhance` call takes (the interface chunks
        longer input); the LMs' position tables must cover it.
    n2s_target_offset : int
        Position of the first generated semantic token (GenSE: 0).
    s2s_target_offset : int, optional
        Position of the first generated acoustic token (GenSE: 1000);
        default: the acoustic tokens of ``max_seconds`` (frames x ``K``), the
        smallest offset that keeps the generated positions apart from the noisy ones.
    decode_opts : dict, optional
        This model's decoding defaults (names of :attr:`decode_defaults`).
    interleave_lookahead : int, optional
        The streaming variant (GenSE's appendix A.8): one causal LM (``s2s``;
        ``n2s`` must be None) over :func:`interleaved_layout`, which writes
        each clean block (semantic then acoustic tokens of
        :func:`block_frames`) once the noisy block ``interleave_lookahead``
        blocks later has been read. None (default): the hierarchical N2S ->
        S2S model.
    """

    method = "gense"
    #: ``temperature``/``top_k``/``top_p`` of both stages (GenSE samples from
    #: the full softmax: 1.0, None, None), ``n2s_temperature`` (None: the
    #: same), ``use_cache`` (KV cache; False re-runs the sequence per token),
    #: ``precision`` (``"fp32"``, or ``"int8"``: both LMs with int8 linear
    #: layers, :meth:`generation_lm`; the same spelling as MAGE's option).
    decode_defaults = {"temperature": 1.0, "top_k": None, "top_p": None,  # noqa: RUF012
                       "n2s_temperature": None, "use_cache": True, "precision": "fp32"}

    def __init__(self, semantic_tokenizer, acoustic_tokenizer, n2s, s2s, s2s_parts=S2S_PARTS,
                 max_seconds=5.0, n2s_target_offset=0, s2s_target_offset=None, decode_opts=None,
                 interleave_lookahead=None):
        super().__init__(decode_opts=decode_opts)
        self.interleave_lookahead = (None if interleave_lookahead is None
                                     else int(interleave_lookahead))
        if self.interleave_lookahead is not None:
            if self.interleave_lookahead < 0:
                raise ValueError(f"interleave_lookahead must be >= 0, got {interleave_lookahead}")
            if n2s is not None:
                raise ValueError("the interleaved (streaming) GenSE is one LM: give n2s=None")
            s2s_parts = ("noisy_sem", "noisy_ac")
        if semantic_tokenizer.num_codebooks != 1:
            raise ValueError(f"GenSE needs a single-codebook semantic tokenizer, got "
                             f"{semantic_tokenizer.num_codebooks} codebooks")
        if semantic_tokenizer.sample_rate != acoustic_tokenizer.sample_rate:
            raise ValueError(f"tokenizer rates differ: semantic {semantic_tokenizer.sample_rate} Hz"
                             f", acoustic {acoustic_tokenizer.sample_rate} Hz")
        self.s2s_parts = tuple(s2s_parts)
        s2s_layout_check = [p for p in S2S_PARTS if p in self.s2s_parts]
        if list(self.s2s_parts) != s2s_layout_check or not self.s2s_parts:
            raise ValueError(f"s2s_parts must be a non-empty ordered subset of {list(S2S_PARTS)}"
                             f", got {list(self.s2s_parts)}")
        if n2s is None and "clean_sem" in self.s2s_parts:
            raise ValueError("s2s_parts holds 'clean_sem' but there is no N2S model")
        self.semantic_tokenizer = semantic_tokenizer
        self.acoustic_tokenizer = acoustic_tokenizer
        self.vocab = GenSEVocab(semantic_tokenizer.vocab_size, acoustic_tokenizer.vocab_size,
                                acoustic_tokenizer.num_codebooks)
        for name, lm in (("n2s", n2s), ("s2s", s2s)):
            if lm is not None and lm.config["vocab_size"] != self.vocab.size:
                raise ValueError(f"{name} vocab_size {lm.config['vocab_size']} != "
                                 f"{self.vocab.size} (3 specials + {self.vocab.num_semantic} "
                                 f"semantic + {self.vocab.num_codebooks} x "
                                 f"{self.vocab.num_acoustic} acoustic)")
        self.n2s, self.s2s = n2s, s2s
        self.max_seconds = float(max_seconds)
        sr = acoustic_tokenizer.sample_rate
        self.max_sem = semantic_tokenizer.num_frames(int(round(self.max_seconds * sr)))
        self.max_ac = acoustic_tokenizer.num_frames(int(round(self.max_seconds * sr)))
        ac_tokens = self.max_ac * self.vocab.num_codebooks
        self.n2s_target_offset = int(n2s_target_offset)
        self.s2s_target_offset = int(ac_tokens if s2s_target_offset is None
                                     else s2s_target_offset)
        self.block = None
        if self.interleave_lookahead is not None:
            self.block = block_frames(semantic_tokenizer.frame_rate, acoustic_tokenizer.frame_rate)
        if self.block is None and "noisy_ac" in self.s2s_parts \
                and self.s2s_target_offset < ac_tokens:
            raise ValueError(f"s2s_target_offset {self.s2s_target_offset} < {ac_tokens} "
                             "acoustic tokens: generated positions would overlap the noisy ones")
        self._check_positions()

    @property
    def supports_prefix(self):
        """The hierarchical model continues from a prefix; the interleaved one does not."""
        return self.interleave_lookahead is None

    def _check_positions(self):
        need = {}
        if self.block is not None:  # BOS + 2 blocks per block of time
            n_sem, n_ac = self.block
            blocks = -(-self.max_ac // n_ac)
            n = 1 + 2 * blocks * (n_sem + n_ac * self.vocab.num_codebooks)
            if self.s2s.max_positions < n:
                raise ValueError(f"s2s: max_positions {self.s2s.max_positions} < {n} needed for "
                                 f"max_seconds={self.max_seconds} (interleaved layout)")
            return
        if self.n2s is not None:
            need["n2s"] = (self.n2s, max(self.max_sem + 1, self.n2s_target_offset + self.max_sem))
        sem_parts = sum(p in self.s2s_parts for p in ("noisy_sem", "clean_sem"))
        need["s2s"] = (self.s2s, max(sem_parts * self.max_sem + 1, self.s2s_target_offset
                                     + self.max_ac * self.vocab.num_codebooks))
        for name, (lm, n) in need.items():
            if lm.max_positions < n:
                raise ValueError(f"{name}: max_positions {lm.max_positions} < {n} needed for "
                                 f"max_seconds={self.max_seconds}")

    # -- contract facts ---------------------------------------------------------

    @property
    def output_tokenizer(self):
        return self.acoustic_tokenizer

    @property
    def tokenizer(self):
        """The output (acoustic) tokenizer (the name the interface also reads)."""
        return self.acoustic_tokenizer

    def max_frames(self):
        return int(self.max_ac)

    # -- tokens -----------------------------------------------------------------

    @torch.no_grad()
    def tokens(self, wav, lens=None):
        """Semantic and acoustic tokens of ``wav[B, S]`` with per-item frame counts.

        Returns
        -------
        dict
            ``sem`` ``[B, T_s]``, ``sem_frames`` ``[B]``, ``ac`` ``[B, T_a, K]``,
            ``ac_frames`` ``[B]`` (tokenizer ids; counts from the sample lengths).
        """
        if lens is None:
            lens = torch.ones(wav.shape[0], device=wav.device)
        samples = [int(round(float(x))) for x in lens.float().cpu() * wav.shape[-1]]
        sem, _ = self.semantic_tokenizer.encode(wav, lens)
        ac, _ = self.acoustic_tokenizer.encode(wav, lens)
        sem_frames = torch.tensor([min(sem.shape[1], self.semantic_tokenizer.num_frames(s))
                                   for s in samples])
        ac_frames = torch.tensor([min(ac.shape[1], self.acoustic_tokenizer.num_frames(s))
                                  for s in samples])
        return {"sem": sem[..., 0], "sem_frames": sem_frames, "ac": ac, "ac_frames": ac_frames}

    def n2s_layout(self, noisy):
        return n2s_layout(self.vocab, noisy["sem"], noisy["sem_frames"], self.n2s_target_offset)

    def interleaved_layout(self, noisy, clean_sem=None, clean_ac=None):
        return interleaved_layout(self.vocab, noisy["sem"], noisy["sem_frames"], noisy["ac"],
                                  noisy["ac_frames"], self.block, self.interleave_lookahead,
                                  clean_sem=clean_sem, clean_ac=clean_ac)

    def s2s_layout(self, noisy, clean_sem):
        return s2s_layout(self.vocab, noisy["sem"], clean_sem, noisy["sem_frames"],
                          noisy["ac"], noisy["ac_frames"], self.s2s_target_offset,
                          parts=self.s2s_parts)

    # -- training -----------------------------------------------------------------

    def compute_objectives(self, batch, stage=None):
        """Teacher-forced losses of N2S and S2S on one batch (for the token-model Brain).

        ``batch`` has ``noisy_sig`` and ``clean_sig`` (``PaddedBatch``
        entries: ``(wav[B, S], lens)``) and optionally ``clean_tokens``
        (cached acoustic tokens of the clean signal, ``[B, T_a, K]``).

        Returns
        -------
        dict
            ``loss`` (sum of the stages' losses), ``n2s_loss``, ``n2s_acc``,
            ``s2s_loss``, ``s2s_acc``.
        """
        noisy_wav, lens = batch.noisy_sig
        clean_wav, clean_lens = batch.clean_sig
        device = self.device
        # longer utterances (validation, test): their first max_seconds
        max_samples = int(round(self.max_seconds * self.sample_rate))
        noisy_wav, lens = crop(noisy_wav.to(device), lens.to(device), max_samples)
        clean_wav, clean_lens = crop(clean_wav.to(device), clean_lens.to(device), max_samples)
        noisy = self.tokens(noisy_wav, lens)
        with torch.no_grad():
            clean_sem = self.semantic_tokenizer.encode(clean_wav, clean_lens)[0][..., 0]
            if "clean_tokens" in batch:
                clean_ac = batch.clean_tokens.data.to(device)
            else:
                clean_ac = self.acoustic_tokenizer.encode(clean_wav, clean_lens)[0]
        # clean and noisy come from the same crop: same frame counts, cut to the noisy ones
        clean_sem = _fit_frames(clean_sem, noisy["sem"].shape[1])
        clean_ac = _fit_frames(clean_ac, noisy["ac"].shape[1])
        out, total = {}, 0.0
        if self.block is not None:  # interleaved: one LM, one sequence
            res = self.s2s.sequence_loss(self.interleaved_layout(noisy, clean_sem, clean_ac))
            return {"loss": res["loss"], "s2s_loss": res["loss"].detach(), "s2s_acc": res["acc"]}
        if self.n2s is not None:
            res = self.n2s.loss(self.n2s_layout(noisy), self.vocab.sem(clean_sem))
            total = total + res["loss"]
            out.update(n2s_loss=res["loss"].detach(), n2s_acc=res["acc"])
        res = self.s2s.loss(self.s2s_layout(noisy, clean_sem), self.vocab.ac(clean_ac))
        total = total + res["loss"]
        out.update(s2s_loss=res["loss"].detach(), s2s_acc=res["acc"])
        out["loss"] = total
        return out

    # -- inference ---------------------------------------------------------------

    PRECISIONS = ("fp32", "int8")

    def generation_lm(self, name, precision="fp32"):
        """The ``transformers`` LM that generates stage ``name`` (``"n2s"``/``"s2s"``).

        ``precision="int8"``: a copy with int8 dynamically quantised linear
        layers (:func:`~speechbrain_gense.models.quantize.cached_int8`: GPT-2's
        ``Conv1D`` projections turned into ``nn.Linear`` first; attention, MLP
        and the LM head in int8, embeddings and norms float32), built on first
        use and kept until the weights change; CPU only.
        """
        lm = getattr(self, name).lm
        if precision in (None, "fp32"):
            return lm
        if precision != "int8":
            raise ValueError(f"precision must be one of {', '.join(self.PRECISIONS)}, "
                             f"got {precision!r}")
        from .quantize import cached_int8

        if self.device.type != "cpu":
            raise ValueError(f"precision 'int8' runs on CPU only, the model is on {self.device}")
        return cached_int8(self, name, lm)

    def _generate(self, name, layout, opts, generator, temperature, prefix=None):
        """One stage through :func:`~speechbrain_gense.decoding.ar_generate`.

        The prompt's position ids and the planned ones of the generated
        tokens (``target_start + i``) go to ``ar_generate`` as one ``[B,
        P + N]`` tensor; committed ``prefix`` tokens continue the prompt.
        """
        from ..decoding import ar_generate

        device = self.device
        n = layout["num_tokens"]
        prompt, prompt_lens, positions = layout["ids"], layout["lens"], layout["positions"]
        num_prefix = 0
        if prefix is not None:  # committed target tokens continue the prompt
            num_prefix = min(int(prefix.shape[1]), int(n.min()))
            lay = assemble([(prompt, prompt_lens, 0), (prefix[:, :num_prefix],
                            torch.full_like(n, num_prefix), 0)], prompt.shape[0])
            pos = lay["positions"].clone()
            for b in range(prompt.shape[0]):
                P = int(prompt_lens[b])
                pos[b, :P] = positions[b, :P]
                pos[b, P:P + num_prefix] = int(layout["target_start"][b]) + torch.arange(num_prefix)
            prompt, prompt_lens, positions = lay["ids"], lay["lens"], pos
        remaining = n - num_prefix
        planned = torch.cat([positions, target_positions(layout)[:, num_prefix:]], dim=1)
        token_range = layout["token_range"]
        if layout.get("num_codebooks", 1) > 1:  # the codebook of the first generated token
            token_range = self.vocab.acoustic_order(first=num_prefix)
        out = ar_generate(
            self.generation_lm(name, opts["precision"]), prompt.to(device),
            prompt_lens.to(device), remaining.to(device), token_range=token_range,
            temperature=temperature, top_k=opts["top_k"], top_p=opts["top_p"],
            generator=generator, use_cache=opts["use_cache"], position_ids=planned.to(device),
            pad_token_id=self.vocab.pad)
        tokens, probs = out["tokens"], out["token_prob"]
        if num_prefix:
            pre = prefix[:, :num_prefix].to(device)
            tokens = torch.cat([pre, tokens], dim=1)
            probs = torch.cat([torch.ones(pre.shape, device=device, dtype=probs.dtype), probs], 1)
        return tokens, probs, int(out["nfe"]), int(remaining.clamp(min=0).sum())

    @torch.no_grad()
    def enhance(self, wav, lens=None, generator=None, prefix=None, **opts):
        """Enhances ``wav[B, S]`` (tokenizer rate): the whole N2S -> S2S -> codec chain.

        ``prefix`` ``[B, P, K]``: clean acoustic tokens the output starts with
        (carried context of the previous chunk); generation continues after it.
        The confidence of frame ``t`` is the probability S2S gave its token
        (the geometric mean over its ``K`` codebooks) times the probability
        N2S gave the semantic token at the same time.

        Returns
        -------
        dict
            ``wav`` ``[B, S]``, ``tokens`` ``[B, T_a, K]``, ``confidence``
            ``[B, T_a]``, ``lens`` (relative token lengths), ``nfe`` (LM calls),
            ``semantic`` ``[B, T_s]`` (clean semantic tokens of N2S, or None),
            ``generated`` (tokens sampled by both LMs over the batch, without
            the prefix: the numerator of tokens/s).
        """
        o = self.decode_options(**opts)
        if wav.dim() != 2:
            raise ValueError(f"enhance expects wav [B, S], got shape {tuple(wav.shape)}")
        if wav.shape[-1] > round(self.max_seconds * self.sample_rate):
            raise ValueError(f"GenSE takes at most {self.max_seconds} s per call, got "
                             f"{wav.shape[-1] / self.sample_rate:.2f} s (chunk longer audio)")
        B = wav.shape[0]
        prefix = self.check_prefix(prefix, B)
        wav = wav.to(self.device)
        if lens is None:
            lens = torch.ones(B, device=wav.device)
        noisy = self.tokens(wav, lens)
        if self.block is not None:
            return self._enhance_interleaved(wav, noisy, o, generator)
        nfe, generated, clean_sem, sem_prob = 0, 0, None, None
        if self.n2s is not None:
            t = o["n2s_temperature"] if o["n2s_temperature"] is not None else o["temperature"]
            tokens, sem_prob, k, g = self._generate("n2s", self.n2s_layout(noisy), o, generator, t)
            clean_sem = tokens - self.vocab.sem_offset
            nfe, generated = nfe + k, generated + g
        pre = None if prefix is None else self.vocab.ac(prefix.to(self.device))
        tokens, ac_prob, k, g = self._generate("s2s", self.s2s_layout(noisy, clean_sem), o,
                                               generator, o["temperature"], prefix=pre)
        nfe, generated = nfe + k, generated + g
        T = noisy["ac"].shape[1]
        frames = noisy["ac_frames"].to(self.device)
        valid = torch.arange(T, device=self.device)[None, :] < frames[:, None]
        ac = _fit_frames(self.vocab.ac_tokens(tokens), T)  # ar_generate keeps the ranges
        ac = torch.where(valid[..., None], ac, torch.zeros_like(ac))
        if clean_sem is not None:
            clean_sem = torch.where(_valid(noisy["sem_frames"], clean_sem), clean_sem,
                                    torch.zeros_like(clean_sem))
        K = self.vocab.num_codebooks
        frame_prob = ac_prob.float()[:, :ac_prob.shape[1] // K * K]
        frame_prob = frame_prob.clamp(min=1e-12).log().view(B, -1, K).mean(-1).exp()
        conf = _fit_frames(frame_prob, T)
        if sem_prob is not None:
            idx = (torch.arange(T, device=self.device).float()
                   * self.semantic_tokenizer.frame_rate / self.acoustic_tokenizer.frame_rate)
            idx = idx.long().clamp(max=max(sem_prob.shape[1] - 1, 0))
            conf = conf * sem_prob.float()[:, idx]
        conf = torch.where(valid, conf, torch.ones_like(conf))
        rel = frames.float() / max(1, T)
        out_wav = self.acoustic_tokenizer.decode(ac, rel)
        out_wav = fit_length_end(out_wav, wav.shape[-1])
        return {"wav": out_wav, "tokens": ac, "confidence": conf.clamp(0, 1),
                "lens": rel, "nfe": nfe, "semantic": clean_sem, "generated": generated}

    def interleaved_schedule(self, layout, b):
        """``(prompt, forced, lo, hi)`` of item ``b`` of an :func:`interleaved_layout`:
        the noisy tokens are forced, the clean ones predicted within their ranges."""
        p, n = int(layout["prompt_lens"][b]), int(layout["lens"][b])
        tgt = layout["target"][b, p:n]
        ids = layout["ids"][b, p:n]
        forced = torch.where(tgt, torch.full_like(ids, -1), ids)
        lo = torch.where(tgt, layout["lo"][b, p:n], 0)
        hi = torch.where(tgt, layout["hi"][b, p:n], 1)
        return layout["ids"][b, :p], forced, lo, hi

    def _enhance_interleaved(self, wav, noisy, o, generator):
        """:meth:`enhance` of the interleaved model, one item at a time (a stream each):
        :func:`~speechbrain_gense.decoding.forced_span_generate` feeds each noisy
        block in one forward pass and samples the clean tokens between them."""
        from ..decoding import forced_span_generate

        device, B = self.device, wav.shape[0]
        lay = self.interleaved_layout(noisy)
        lm = self.generation_lm("s2s", o["precision"])
        n_sem, n_ac = self.block
        K, bs = self.vocab.num_codebooks, lay["block_size"]
        T = noisy["ac"].shape[1]
        ac = torch.zeros(B, T, K, dtype=torch.long, device=device)
        conf = torch.ones(B, T, device=device)
        nfe = generated = 0
        for b in range(B):
            prompt, forced, lo, hi = self.interleaved_schedule(lay, b)
            out = forced_span_generate(lm, prompt, forced, lo, hi, temperature=o["temperature"],
                                       top_k=o["top_k"], top_p=o["top_p"], generator=generator)
            nfe, tgt = nfe + out["nfe"], forced < 0
            generated += int(tgt.sum())
            ids = out["tokens"][tgt].view(-1, bs)  # the clean blocks, in time order
            prob = out["token_prob"][tgt].float().view(-1, bs)
            tokens = self.vocab.ac_tokens(ids[:, n_sem:].reshape(1, -1))[0]  # [blocks*n_ac, K]
            frames = min(int(noisy["ac_frames"][b]), T)
            ac[b, :frames] = tokens[:frames].to(device)
            p_ac = prob[:, n_sem:].clamp(min=1e-12).log().view(-1, K).mean(-1).exp()
            p_sem = prob[:, :n_sem].clamp(min=1e-12).log().mean(-1).exp()  # per block
            conf[b, :frames] = (p_ac.view(-1, n_ac) * p_sem[:, None]).reshape(-1)[:frames]
        frames = noisy["ac_frames"].to(device)
        rel = frames.float() / max(1, T)
        out_wav = fit_length_end(self.acoustic_tokenizer.decode(ac, rel), wav.shape[-1])
        return {"wav": out_wav, "tokens": ac, "confidence": conf.clamp(0, 1), "lens": rel,
                "nfe": nfe, "semantic": None, "generated": generated}

    # -- persistence --------------------------------------------------------------

    def save_parts(self, folder, dtype=None, semantic_spec=None, acoustic_spec=None):
        """Writes ``n2s.ckpt`` (if any) and ``s2s.ckpt``; returns the info of ``gense.json``.

        Tokenizer specs (``semantic_spec``/``acoustic_spec``, default: the
        tokenizers' ``spec``) are stored with local paths relative to
        ``folder``, so a model folder and its tokenizers can move together.
        """
        from ..tokenizers.registry import relative_spec

        specs = {}
        for name, tok, spec in (("semantic", self.semantic_tokenizer, semantic_spec),
                                ("acoustic", self.acoustic_tokenizer, acoustic_spec)):
            spec = spec or getattr(tok, "spec", None)
            if spec is None:
                raise ValueError(f"GenSE.save needs the {name} tokenizer spec ({name}_spec=...)")
            specs[name] = relative_spec(spec, folder)
        if self.n2s is not None:
            self.n2s.save(os.path.join(folder, "n2s.ckpt"), dtype=dtype)
        self.s2s.save(os.path.join(folder, "s2s.ckpt"), dtype=dtype)
        return {"semantic_tokenizer": specs["semantic"], "acoustic_tokenizer": specs["acoustic"],
                "n2s": self.n2s is not None, "s2s_parts": list(self.s2s_parts),
                "max_seconds": self.max_seconds, "n2s_target_offset": self.n2s_target_offset,
                "s2s_target_offset": self.s2s_target_offset, "decode_opts": dict(self.decode_opts),
                "interleave_lookahead": self.interleave_lookahead}

    @classmethod
    def load_parts(cls, folder, info, device="cpu"):
        from ..tokenizers.registry import absolute_spec, load_tokenizer

        sem = load_tokenizer(absolute_spec(info["semantic_tokenizer"], folder), device=device)
        ac = load_tokenizer(absolute_spec(info["acoustic_tokenizer"], folder), device=device)
        n2s = TokenLM.load(os.path.join(folder, "n2s.ckpt"), map_location=device) \
            if info.get("n2s", True) else None
        s2s = TokenLM.load(os.path.join(folder, "s2s.ckpt"), map_location=device)
        return cls(sem, ac, n2s, s2s, s2s_parts=info.get("s2s_parts", S2S_PARTS),
                   max_seconds=info["max_seconds"],
                   n2s_target_offset=info.get("n2s_target_offset", 0),
                   s2s_target_offset=info.get("s2s_target_offset"),
                   decode_opts=info.get("decode_opts"),
                   interleave_lookahead=info.get("interleave_lookahead"))

    def num_parameters(self):
        """Trainable parameters of the LMs (tokenizers excluded)."""
        return sum(p.numel() for lm in (self.n2s, self.s2s) if lm is not None
                   for p in lm.parameters())


def vocab_size(semantic_tokenizer, acoustic_tokenizer):
    """Size of the GenSE vocabulary of two tokenizers (for YAML: ``!apply:...vocab_size``).

    Example
    -------
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> vocab_size(DebugTokenizer(vocab_size=1024), DebugTokenizer(vocab_size=8192))
    9219
    >>> vocab_size(DebugTokenizer(vocab_size=1024), DebugTokenizer(vocab_size=1024, num_codebooks=2))
    3075
    """
    return GenSEVocab(semantic_tokenizer.vocab_size, acoustic_tokenizer.vocab_size,
                      acoustic_tokenizer.num_codebooks).size


def crop(wav, lens, max_samples):
    """The first ``max_samples`` samples of a padded batch, with new relative lengths.

    Example
    -------
    >>> w, l = crop(torch.zeros(2, 10), torch.tensor([1.0, 0.4]), 5)
    >>> w.shape, l.tolist()
    (torch.Size([2, 5]), [1.0, 0.800000011920929])
    """
    S = wav.shape[-1]
    if S <= max_samples:
        return wav, lens
    samples = torch.clamp(torch.round(lens.float() * S), max=max_samples)
    return wav[..., :max_samples], samples / max_samples


def _valid(frames, tokens):
    """``[B, T]`` True on the first ``frames[b]`` frames of ``tokens[B, T]``."""
    T = tokens.shape[1]
    return torch.arange(T, device=tokens.device)[None, :] < frames.to(tokens.device)[:, None]


def _fit_frames(tokens, T):
    """Cuts or zero-pads ``tokens[B, T', ...]`` to ``T`` frames."""
    if tokens.shape[1] >= T:
        return tokens[:, :T]
    pad = [0, 0] * (tokens.dim() - 2) + [0, T - tokens.shape[1]]
    return F.pad(tokens, pad)


__all__ = ["S2S_PARTS", "TINY_LM", "GenSE", "GenSEVocab", "TokenLM",
           "assemble", "block_frames", "crop", "interleaved_layout", "n2s_layout", "s2s_layout", "target_positions", "teacher_forcing",
           "vocab_size"]
