"""Token masking for masked generative modelling (training and decoding).

This module is the single place where masks over discrete audio tokens are
drawn; the training Brain and the iterative decoder
(:mod:`speechbrain_gense.decoding`) both call it.

Conventions
-----------
- Tokens are ``LongTensor[B, T, K]`` (``K`` codebooks, ``K = 1`` for MAGE)
  with relative lengths ``lens[B]``: frame ``t`` of utterance ``b`` is valid
  when ``t < round(lens[b] * T)`` (see :func:`valid_frames`).
- A mask is ``BoolTensor[B, T, K]``, ``True`` = masked. Padded positions are
  never masked.
- Masks are drawn jointly over the ``T * K`` positions of an utterance; ties
  between positions are always broken by the lower flat index ``t * K + k``.
- Counts derived from ratios are computed in float64 with a tolerance of
  ``1e-6`` so that, e.g., a ratio of ``0.3`` of ``10`` positions is ``3``.

Contents
--------
- schedules: :func:`mask_ratio` (``cosine``, ``linear``, ``square``);
- token frequencies: :class:`TokenFrequency` (rarity for scarcity-aware
  masking and decoding);
- training masks: :func:`sample_training_mask` (``random`` and ``ctf``
  strategies; each strategy is a function giving a score per position, the
  ``n`` valid positions with the largest scores are masked), :func:`apply_mask`;
- corrector re-masking: :func:`select_remask`;
- shared helpers: :func:`valid_frames`, :func:`valid_mask`,
  :func:`select_top` (the selection step of every strategy and of the
  decoder), :func:`select_top_spans` (the same over spans of consecutive
  frames, MAGNeT), :func:`num_to_mask`, :func:`rand_uniform`.

Structured masks (e.g. MAGNeT-style spans) belong in the "training masks"
section: they draw their own ``[B, T, K]`` mask of valid positions instead of
scoring positions, and :func:`sample_training_mask` dispatches to them.
"""

import math

import torch

_EPS = 1e-6


# --------------------------------------------------------------------------
# Lengths and shared helpers
# --------------------------------------------------------------------------


def valid_frames(lens, T):
    """Number of valid frames per utterance from relative lengths.

    Arguments
    ---------
    lens : torch.Tensor
        ``[B]`` relative lengths (fraction of ``T`` that is valid).
    T : int
        Padded number of frames.

    Returns
    -------
    torch.LongTensor
        ``[B]`` values ``round(lens * T)`` clamped to ``[0, T]``.

    Example
    -------
    >>> valid_frames(torch.tensor([1.0, 0.5, 0.0]), 6).tolist()
    [6, 3, 0]
    """
    lens = torch.as_tensor(lens)
    return torch.round(lens.double() * T).long().clamp(0, T)


def valid_mask(lens, T, K=1):
    """Mask of the valid (non padded) positions.

    Arguments
    ---------
    lens : torch.Tensor
        ``[B]`` relative lengths.
    T : int
        Padded number of frames.
    K : int
        Number of codebooks.

    Returns
    -------
    torch.BoolTensor
        ``[B, T, K]``, ``True`` where ``t < round(lens * T)``.

    Example
    -------
    >>> valid_mask(torch.tensor([1.0, 0.5]), 4, K=2)[..., 0].int().tolist()
    [[1, 1, 1, 1], [1, 1, 0, 0]]
    """
    n = valid_frames(lens, T)
    frames = torch.arange(T, device=n.device)
    valid = frames[None, :] < n[:, None]
    return valid[:, :, None].expand(-1, -1, K).contiguous()


def _default_lens(lens, B, device):
    if lens is None:
        return torch.ones(B, device=device)
    lens = torch.as_tensor(lens, device=device)
    if lens.shape != (B,):
        raise ValueError(f"expected lens of shape [{B}], got {tuple(lens.shape)}")
    return lens


def rand_uniform(shape, generator=None, device=None):
    """Uniform ``[0, 1)`` float32 numbers drawn with ``generator``.

    The numbers are drawn on the generator's device (so a CPU generator
    gives the same numbers for CPU and GPU tensors) and moved to ``device``.

    Arguments
    ---------
    shape : tuple
        Shape of the result.
    generator : torch.Generator, optional
        Random number generator; ``None``: the default one of ``device``.
    device : torch.device, optional
        Device of the result.

    Returns
    -------
    torch.FloatTensor

    Example
    -------
    >>> a = rand_uniform((2, 3), torch.Generator().manual_seed(0))
    >>> b = rand_uniform((2, 3), torch.Generator().manual_seed(0))
    >>> a.shape, bool((a == b).all())
    (torch.Size([2, 3]), True)
    """
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


def _per_utterance(value, B, device):
    """A float or ``[B]`` tensor as a float64 ``[B]`` tensor."""
    value = torch.as_tensor(value, dtype=torch.float64, device=device)
    if value.dim() == 0:
        value = value.expand(B)
    if value.shape != (B,):
        raise ValueError(f"expected a float or a [{B}] tensor, got {tuple(value.shape)}")
    return value


def _rank_desc(scores):
    """Rank of each entry of ``scores[B, N]`` in decreasing order (0 = largest).

    Ties are broken by the lower index (stable sort).
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(scores.shape[1], device=scores.device)
    ranks.scatter_(1, order, positions.expand_as(order))
    return ranks


def select_top(scores, candidates, n):
    """Selects, per utterance, the ``n`` candidate positions of highest score.

    This is the selection step shared by every masking strategy and by the
    decoder: positions are flattened over all but the batch dimension, ties
    are broken by the lower flat index, and non-candidates are never
    selected (``n`` is clamped to the number of candidates).

    Arguments
    ---------
    scores : torch.Tensor
        ``[B, ...]`` scores (higher = selected first). ``-inf`` and ``nan``
        scores of candidates are ranked last among the candidates.
    candidates : torch.BoolTensor
        ``[B, ...]`` positions that may be selected.
    n : torch.LongTensor
        ``[B]`` number of positions to select.

    Returns
    -------
    torch.BoolTensor
        ``[B, ...]`` the selected positions.

    Example
    -------
    >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.9]])
    >>> select_top(scores, torch.tensor([[True, True, True, False]]), torch.tensor([2])).tolist()
    [[False, True, True, False]]
    """
    B = scores.shape[0]
    flat = scores.reshape(B, -1).double()
    cand = candidates.reshape(B, -1)
    lowest = torch.finfo(torch.float64).min
    flat = torch.nan_to_num(flat, nan=lowest, neginf=lowest, posinf=torch.finfo(torch.float64).max)
    flat = flat.masked_fill(~cand, -math.inf)
    ranks = _rank_desc(flat)
    n = torch.as_tensor(n, device=scores.device).long().reshape(B, 1)
    selected = (ranks < n) & cand
    return selected.reshape(scores.shape)


SPAN_REDUCTIONS = ("mean", "max")


def span_pool(scores, candidates, span, reduce="mean"):
    """Scores of spans of ``span`` consecutive frames (MAGNeT span scoring).

    Frames are cut into non-overlapping spans ``[j * span, (j + 1) * span)``
    from frame 0, one span per codebook (the last span is shorter when
    ``span`` does not divide ``T``), as MAGNeT's non-overlapping spans
    (Ziv et al. 2024; audiocraft ``MagnetLMModel._generate_stage``, which
    trims ``T`` to a multiple of the span length instead). A span's score
    is the ``"mean"`` or the ``"max"`` of the scores of its candidate
    positions; a span without candidates is not a candidate.

    Arguments
    ---------
    scores : torch.Tensor
        ``[B, T, K]`` scores per position.
    candidates : torch.BoolTensor
        ``[B, T, K]`` positions that count.
    span : int
        Span length in frames (``>= 1``).
    reduce : str
        ``"mean"`` or ``"max"``.

    Returns
    -------
    span_scores : torch.DoubleTensor
        ``[B, ceil(T / span), K]`` (``-inf`` for spans without candidates).
    span_candidates : torch.BoolTensor
        ``[B, ceil(T / span), K]`` spans with at least one candidate.

    Example
    -------
    >>> scores = torch.tensor([0.0, -1.0, -3.0, -2.0, -4.0])[None, :, None]
    >>> cand = torch.tensor([True, True, True, False, True])[None, :, None]
    >>> s, c = span_pool(scores, cand, 2)
    >>> s.shape, s[0, :, 0].tolist(), c[0, :, 0].tolist()
    (torch.Size([1, 3, 1]), [-0.5, -3.0, -4.0], [True, True, True])
    >>> span_pool(scores, cand, 2, "max")[0][0, :, 0].tolist()
    [0.0, -3.0, -4.0]
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    if reduce not in SPAN_REDUCTIONS:
        raise ValueError(f"unknown span score {reduce!r}; expected one of {SPAN_REDUCTIONS}")
    if scores.dim() != 3 or candidates.shape != scores.shape:
        raise ValueError(f"expected scores and candidates [B, T, K], got {tuple(scores.shape)} "
                         f"and {tuple(candidates.shape)}")
    B, T, K = scores.shape
    J = -(-T // span)
    pad = J * span - T
    s = torch.nn.functional.pad(scores.double(), (0, 0, 0, pad)).reshape(B, J, span, K)
    c = torch.nn.functional.pad(candidates.bool(), (0, 0, 0, pad)).reshape(B, J, span, K)
    count = c.sum(2)
    if reduce == "mean":
        pooled = s.masked_fill(~c, 0.0).sum(2) / count.clamp(min=1)
    else:
        pooled = s.masked_fill(~c, -math.inf).amax(2)
    span_cand = count > 0
    return pooled.masked_fill(~span_cand, -math.inf), span_cand


def select_top_spans(scores, candidates, n, span, reduce="mean"):
    """Selects, per utterance, the ``n`` spans of highest span score.

    The span version of :func:`select_top` (MAGNeT's span-level masking
    and commitment): spans are those of :func:`span_pool`, ranked by their
    pooled score (ties by the lower flat span index ``j * K + k``), and the
    candidate positions of the ``n`` selected spans are returned. With
    ``span = 1`` it is :func:`select_top`.

    Arguments
    ---------
    scores : torch.Tensor
        ``[B, T, K]`` scores per position (higher = selected first).
    candidates : torch.BoolTensor
        ``[B, T, K]`` positions that may be selected.
    n : torch.LongTensor
        ``[B]`` number of spans to select (clamped to the candidate spans).
    span : int
        Span length in frames.
    reduce : str
        ``"mean"`` or ``"max"`` (see :func:`span_pool`).

    Returns
    -------
    torch.BoolTensor
        ``[B, T, K]`` the selected positions (candidates only).

    Example
    -------
    >>> scores = torch.tensor([0.0, -1.0, -3.0, -2.0, -0.1, -0.2])[None, :, None]
    >>> cand = torch.ones(1, 6, 1, dtype=torch.bool)
    >>> select_top_spans(scores, cand, torch.tensor([2]), 2)[0, :, 0].int().tolist()
    [1, 1, 0, 0, 1, 1]
    """
    B, T, K = scores.shape
    pooled, span_cand = span_pool(scores, candidates, span, reduce)
    chosen = select_top(pooled, span_cand, n)  # [B, J, K]
    return chosen.repeat_interleave(span, dim=1)[:, :T] & candidates.bool()


# --------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------

SCHEDULES = {
    # MaskGIT: many tokens masked for most of the time, fast decay at the end
    "cosine": lambda t: torch.cos(t * (math.pi / 2)),
    "linear": lambda t: 1.0 - t,
    "square": lambda t: 1.0 - t * t,
}


def mask_ratio(t, schedule="cosine"):
    """Fraction of tokens still masked at time ``t`` of a masking schedule.

    ``t = 0`` is the start of decoding (everything masked, ratio 1) and
    ``t = 1`` the end (nothing masked, ratio 0). During training ``t`` is
    drawn uniformly, so the schedule is also the distribution of the
    training mask ratio.

    Schedules: ``"cosine"`` ``cos(pi/2 * t)`` (MaskGIT), ``"linear"``
    ``1 - t``, ``"square"`` ``1 - t^2``. ``t`` is clamped to ``[0, 1]``; the
    endpoints are exact (0 and 1).

    Arguments
    ---------
    t : float or torch.Tensor
        Time(s) in ``[0, 1]``.
    schedule : str
        One of :data:`SCHEDULES`.

    Returns
    -------
    float or torch.Tensor
        The ratio(s) in ``[0, 1]``: a float for a float ``t``, else a tensor
        of the same shape (float64 computation, floating dtype of ``t`` kept).

    Example
    -------
    >>> mask_ratio(0.0), mask_ratio(1.0), round(mask_ratio(0.5, "linear"), 3)
    (1.0, 0.0, 0.5)
    >>> mask_ratio(torch.tensor([0.0, 0.5, 1.0]), "square").tolist()
    [1.0, 0.75, 0.0]
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {sorted(SCHEDULES)}")
    is_tensor = isinstance(t, torch.Tensor)
    tt = torch.as_tensor(t, dtype=torch.float64).clamp(0.0, 1.0)
    ratio = SCHEDULES[schedule](tt).clamp(0.0, 1.0)
    ratio = torch.where(tt >= 1.0, torch.zeros_like(ratio), ratio)
    ratio = torch.where(tt <= 0.0, torch.ones_like(ratio), ratio)
    if not is_tensor:
        return float(ratio)
    dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    return ratio.to(dtype)


# --------------------------------------------------------------------------
# Token frequencies
# --------------------------------------------------------------------------


class TokenFrequency:
    """Token-frequency table for scarcity-aware masking and decoding.

    The *rarity* of token ``v`` (of codebook ``k``) is its rank in the order
    of decreasing smoothed count ``counts[k, v] + 1`` (add-one smoothing),
    ties broken by the lower token id, divided by ``V - 1``:
    the most frequent token has rarity 0, the rarest rarity 1, and the
    rarities of the ``V`` tokens of a codebook are exactly
    ``0, 1/(V-1), ..., 1``. (Smoothing does not change the order; it makes
    :meth:`probs` non-zero for unseen tokens.)

    Arguments
    ---------
    counts : torch.Tensor
        ``[V]`` (one table, used for every codebook) or ``[K, V]`` (one table
        per codebook) non-negative counts.

    Example
    -------
    >>> freq = TokenFrequency(torch.tensor([10, 0, 5, 5, 1]))
    >>> len(freq), freq.num_codebooks
    (5, 1)
    >>> freq.rarity(torch.tensor([0, 1, 2, 3, 4])).tolist()
    [0.0, 1.0, 0.25, 0.5, 0.75]
    """

    def __init__(self, counts):
        counts = torch.as_tensor(counts).detach().cpu()
        if counts.dim() not in (1, 2) or counts.shape[-1] < 1:
            raise ValueError(f"expected counts of shape [V] or [K, V], got {tuple(counts.shape)}")
        if counts.is_floating_point():
            counts = counts.double()
        else:
            counts = counts.long()
        if (counts < 0).any():
            raise ValueError("token counts must be non-negative")
        self.counts = counts
        table = counts if counts.dim() == 2 else counts[None]
        V = table.shape[-1]
        ranks = _rank_desc(table.double() + 1.0)
        self._rarity = ranks.double() / max(V - 1, 1)
        self._rarity = self._rarity.float()  # [K, V]

    @property
    def vocab_size(self):
        """Number of tokens ``V`` per codebook."""
        return self.counts.shape[-1]

    @property
    def num_codebooks(self):
        """Number of tables ``K`` (1 for a ``[V]`` table)."""
        return 1 if self.counts.dim() == 1 else self.counts.shape[0]

    def __len__(self):
        return self.vocab_size

    def __repr__(self):
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, num_codebooks={self.num_codebooks})"

    def probs(self):
        """Add-one smoothed token probabilities, ``[V]`` or ``[K, V]``.

        Example
        -------
        >>> TokenFrequency(torch.tensor([2, 0])).probs().tolist()
        [0.75, 0.25]
        """
        smoothed = self.counts.double() + 1.0
        return smoothed / smoothed.sum(-1, keepdim=True)

    def rarity_table(self):
        """Rarity of every token: ``[V]`` for a ``[V]`` table, else ``[K, V]``."""
        return self._rarity[0].clone() if self.counts.dim() == 1 else self._rarity.clone()

    def rarity(self, tokens):
        """Rarity in ``[0, 1]`` of each token (0 = most frequent, 1 = rarest).

        Arguments
        ---------
        tokens : torch.LongTensor
            Any shape with a single table (``[V]`` or ``[1, V]`` counts);
            ``[..., K]`` with ``K`` tables (codebook ``k`` uses table ``k``).

        Returns
        -------
        torch.FloatTensor
            Same shape and device as ``tokens``.

        Example
        -------
        >>> freq = TokenFrequency(torch.tensor([[3, 1, 2], [1, 2, 3]]))
        >>> freq.rarity(torch.tensor([[[0, 0], [1, 2]]])).tolist()
        [[[0.0, 1.0], [1.0, 0.0]]]
        """
        tokens = torch.as_tensor(tokens)
        V = self.vocab_size
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= V):
            raise ValueError(
                f"token ids must be in [0, {V}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        table = self._rarity.to(tokens.device)
        if table.shape[0] == 1:
            return table[0][tokens]
        K = table.shape[0]
        if tokens.dim() == 0 or tokens.shape[-1] != K:
            raise ValueError(f"expected tokens of shape [..., {K}], got {tuple(tokens.shape)}")
        codebook = torch.arange(K, device=tokens.device).expand_as(tokens)
        return table[codebook, tokens]

    @classmethod
    def from_tokens(cls, batches, vocab_size, num_codebooks=1):
        """Counts tokens over an iterable of batches (valid frames only).

        Arguments
        ---------
        batches : iterable
            Items are ``(tokens[B, T, K], lens[B])`` pairs (only frames
            ``t < round(lens * T)`` are counted), or unpadded ``LongTensor``
            of shape ``[N]`` (``K = 1``) or ``[N, K]``.
        vocab_size : int
            ``V``, the number of tokens per codebook.
        num_codebooks : int
            ``K``.

        Returns
        -------
        TokenFrequency
            With ``[K, V]`` counts.

        Example
        -------
        >>> tokens = torch.tensor([[[0], [0], [2]], [[1], [2], [2]]])
        >>> freq = TokenFrequency.from_tokens([(tokens, torch.tensor([1.0, 1 / 3]))], 3)
        >>> freq.counts.tolist()
        [[2, 1, 1]]
        >>> TokenFrequency.from_tokens([torch.tensor([2, 2, 1])], 3).counts.tolist()
        [[0, 1, 2]]
        """
        K, V = int(num_codebooks), int(vocab_size)
        counts = torch.zeros(K, V, dtype=torch.long)
        for item in batches:
            if isinstance(item, (tuple, list)):
                tokens, lens = item
                tokens = torch.as_tensor(tokens)
                if tokens.dim() != 3:
                    raise ValueError(f"expected tokens [B, T, K], got {tuple(tokens.shape)}")
                valid = valid_mask(_default_lens(lens, tokens.shape[0], tokens.device),
                                   tokens.shape[1], tokens.shape[2])
                flat = tokens[valid].reshape(-1, tokens.shape[2])
            else:
                flat = torch.as_tensor(item)
                if flat.dim() == 1:
                    flat = flat[:, None]
                if flat.dim() != 2:
                    raise ValueError(f"expected tokens [N] or [N, K], got {tuple(flat.shape)}")
            if flat.shape[1] != K:
                raise ValueError(f"expected {K} codebooks, got {flat.shape[1]}")
            flat = flat.long().cpu()
            if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= V):
                raise ValueError(
                    f"token ids must be in [0, {V}), got [{int(flat.min())}, {int(flat.max())}]"
                )
            offsets = torch.arange(K) * V
            counts += torch.bincount((flat + offsets).reshape(-1), minlength=K * V).reshape(K, V)
        return cls(counts)

    def state_dict(self):
        """The table as a dict (``{"counts": counts}``)."""
        return {"counts": self.counts.clone()}

    def save(self, path):
        """Saves the counts with ``torch.save`` (see :meth:`load`).

        Example
        -------
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "freq.pt")
        >>> TokenFrequency(torch.tensor([1, 2, 3])).save(path)
        >>> TokenFrequency.load(path).counts.tolist()
        [1, 2, 3]
        """
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path):
        """Loads a table written by :meth:`save`."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["counts"])


# --------------------------------------------------------------------------
# Training masks
# --------------------------------------------------------------------------


def _random_scores(tokens, freq, noise, generator):
    return rand_uniform(tokens.shape, generator, tokens.device)


def _ctf_scores(tokens, freq, noise, generator):
    if freq is None:
        raise ValueError('strategy "ctf" needs a TokenFrequency (freq)')
    scores = freq.rarity(tokens).double()
    if noise:
        scores = scores + noise * rand_uniform(tokens.shape, generator, tokens.device).double()
    return scores


# strategy name -> scores(tokens, freq, noise, generator) -> [B, T, K];
# the n valid positions of largest score are masked
MASK_STRATEGIES = {
    "random": _random_scores,
    "ctf": _ctf_scores,
}


def num_to_mask(ratio, n_valid):
    """Number of positions masked for a ratio: ``max(1, ceil(r * n))``.

    Clamped to ``n`` (and 0 when ``n = 0``).

    Arguments
    ---------
    ratio : torch.Tensor
        ``[B]`` ratios.
    n_valid : torch.LongTensor
        ``[B]`` numbers of valid positions.

    Returns
    -------
    torch.LongTensor
        ``[B]``.

    Example
    -------
    >>> num_to_mask(torch.tensor([0.3, 0.0, 1.0, 0.5]), torch.tensor([10, 10, 10, 0])).tolist()
    [3, 1, 10, 0]
    """
    n_valid = torch.as_tensor(n_valid).long()
    r = _per_utterance(ratio, n_valid.shape[0], n_valid.device)
    n = torch.ceil(r * n_valid.double() - _EPS).long()
    n = torch.minimum(n.clamp(min=1), n_valid)
    return torch.where(n_valid > 0, n, torch.zeros_like(n))


def sample_training_mask(tokens, lens, strategy="random", freq=None, ratio=None,
                         schedule="cosine", noise=0.3, generator=None, span=1,
                         span_score="mean"):
    """Draws the training mask of a batch of tokens.

    Per utterance, the ratio is ``r = mask_ratio(u, schedule)`` with
    ``u ~ U(0, 1)`` (unless ``ratio`` is given) and
    ``n = max(1, ceil(r * n_valid))`` of its ``n_valid = n_frames * K`` valid
    positions are masked (none for an empty utterance). Positions are chosen
    jointly over frames and codebooks:

    - ``"random"`` (MaskGIT): a uniformly random subset of ``n`` positions;
    - ``"ctf"`` (scarcity-aware coarse-to-fine, MAGE): the ``n`` positions
      with the largest ``rarity(token) + noise * U(0, 1)``. Rare tokens are
      masked first, so the model learns to fill in rare tokens given
      frequent ones, as at inference, where frequent tokens are committed in
      early steps and rare ones in later refinements. ``noise`` sets how
      strictly the rarity order is followed (0: exactly the rarest tokens,
      ties by lower position).

    With ``span > 1`` (MAGNeT-style span masking) whole spans of ``span``
    consecutive frames per codebook are masked instead of positions: the
    spans of :func:`select_top_spans` (non-overlapping, from frame 0),
    ``n = max(1, ceil(r * n_spans))`` of the ``n_spans`` spans with valid
    frames, ranked by the ``span_score`` of the strategy's scores. (MAGNeT
    draws possibly overlapping spans and maps the rate to a span count;
    non-overlapping spans make the count exact, and the decoder commits the
    same spans.)

    Padded positions are never masked.

    Arguments
    ---------
    tokens : torch.LongTensor
        ``[B, T, K]`` target tokens.
    lens : torch.Tensor
        ``[B]`` relative lengths (``None``: all valid).
    strategy : str
        ``"random"`` or ``"ctf"``.
    freq : TokenFrequency, optional
        Required by ``"ctf"``.
    ratio : float or torch.Tensor, optional
        Fixed ratio (float or ``[B]``) instead of a random one.
    schedule : str
        Schedule of :func:`mask_ratio` for random ratios.
    noise : float
        Weight of the uniform noise added to the rarity (``"ctf"``).
    generator : torch.Generator, optional
        Random number generator (any device).
    span : int
        Span length in frames (1: position-level masks).
    span_score : str
        ``"mean"`` or ``"max"`` pooling of the scores over a span.

    Returns
    -------
    mask : torch.BoolTensor
        ``[B, T, K]``, ``True`` = masked.
    ratio : torch.FloatTensor
        ``[B]`` the ratio ``r`` of each utterance.

    Example
    -------
    >>> tokens = torch.tensor([[[0], [1], [2], [3]], [[0], [0], [3], [1]]])
    >>> freq = TokenFrequency(torch.tensor([40, 30, 20, 10]))
    >>> mask, r = sample_training_mask(tokens, torch.tensor([1.0, 0.5]), "ctf",
    ...                                freq=freq, ratio=0.5, noise=0.0)
    >>> mask[..., 0].int().tolist(), r.tolist()
    ([[0, 0, 1, 1], [1, 0, 0, 0]], [0.5, 0.5])
    >>> mask, _ = sample_training_mask(torch.zeros(1, 7, 1, dtype=torch.long), None, ratio=0.3,
    ...                                span=3, generator=torch.Generator().manual_seed(0))
    >>> mask.shape, int(mask.sum()) in (1, 3)  # one of the spans [0, 3), [3, 6), [6, 7)
    (torch.Size([1, 7, 1]), True)
    """
    if tokens.dim() != 3:
        raise ValueError(f"expected tokens [B, T, K], got {tuple(tokens.shape)}")
    if strategy not in MASK_STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {sorted(MASK_STRATEGIES)}")
    B, T, K = tokens.shape
    device = tokens.device
    lens = _default_lens(lens, B, device)
    valid = valid_mask(lens, T, K)
    if ratio is None:
        r = mask_ratio(rand_uniform((B,), generator, device).double(), schedule)
    else:
        r = _per_utterance(ratio, B, device)
        if (r < 0).any() or (r > 1).any():
            raise ValueError("mask ratios must be in [0, 1]")
    scores = MASK_STRATEGIES[strategy](tokens, freq, noise, generator)
    if span > 1:
        n_spans = span_pool(scores, valid, span)[1].reshape(B, -1).sum(1)
        mask = select_top_spans(scores, valid, num_to_mask(r, n_spans), span, span_score)
    else:
        mask = select_top(scores, valid, num_to_mask(r, valid.sum((1, 2))))
    return mask, r.float()


def apply_mask(tokens, mask, mask_id):
    """Replaces masked positions by ``mask_id``.

    Arguments
    ---------
    tokens : torch.LongTensor
        ``[B, T, K]``.
    mask : torch.BoolTensor
        ``[B, T, K]`` (or ``[B, T]``, applied to every codebook).
    mask_id : int
        The mask token id (usually the vocabulary size).

    Returns
    -------
    torch.LongTensor
        A new tensor.

    Example
    -------
    >>> apply_mask(torch.tensor([[[1], [2], [3]]]), torch.tensor([[[False], [True], [False]]]), 9)[..., 0].tolist()
    [[1, 9, 3]]
    """
    if mask.dim() == tokens.dim() - 1:
        mask = mask.unsqueeze(-1)
    return tokens.masked_fill(mask.to(tokens.device), mask_id)


# --------------------------------------------------------------------------
# Corrector re-masking
# --------------------------------------------------------------------------


def select_remask(confidence, lens, ratio=None, threshold=None):
    """Selects the positions to re-mask for a corrector pass.

    - with ``threshold``: the valid positions whose confidence is
      ``< threshold``;
    - with ``ratio``: exactly ``floor(ratio * n_valid)`` valid positions per
      utterance, those of lowest confidence (ties by lower index), where
      ``n_valid`` counts the valid positions of ``confidence``;
    - with both: the positions below ``threshold`` among those chosen by
      ``ratio`` (``ratio`` is then an upper bound).

    Padded positions are never selected.

    Arguments
    ---------
    confidence : torch.Tensor
        ``[B, T, K]`` or ``[B, T]`` confidences (higher = more reliable).
    lens : torch.Tensor
        ``[B]`` relative lengths (``None``: all valid).
    ratio : float or torch.Tensor, optional
        Fraction (float or ``[B]``) of valid positions to re-mask.
    threshold : float, optional
        Confidence under which a position is re-masked.

    Returns
    -------
    torch.BoolTensor
        Same shape as ``confidence``, ``True`` = re-mask.

    Example
    -------
    >>> conf = torch.tensor([[0.9, 0.2, 0.5, 0.1], [0.3, 0.8, 0.0, 0.0]])
    >>> select_remask(conf, torch.tensor([1.0, 0.5]), ratio=0.5).int().tolist()
    [[0, 1, 0, 1], [1, 0, 0, 0]]
    >>> select_remask(conf, torch.tensor([1.0, 0.5]), threshold=0.4).int().tolist()
    [[0, 1, 0, 1], [1, 0, 0, 0]]
    """
    if ratio is None and threshold is None:
        raise ValueError("select_remask needs a ratio or a threshold")
    if confidence.dim() not in (2, 3):
        raise ValueError(f"expected confidence [B, T, K] or [B, T], got {tuple(confidence.shape)}")
    B, T = confidence.shape[:2]
    K = confidence.shape[2] if confidence.dim() == 3 else 1
    lens = _default_lens(lens, B, confidence.device)
    valid = valid_mask(lens, T, K).reshape(confidence.shape)
    selected = valid
    if threshold is not None:
        selected = selected & (confidence < threshold)
    if ratio is not None:
        r = _per_utterance(ratio, B, confidence.device)
        if (r < 0).any() or (r > 1).any():
            raise ValueError("re-mask ratios must be in [0, 1]")
        n = torch.floor(r * valid.reshape(B, -1).sum(1).double() + _EPS).long()
        selected = selected & select_top(-confidence.double(), valid, n)
    return selected
