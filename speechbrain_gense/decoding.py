"""Decoding of discrete audio tokens from a token model: the one decoding module.

Masked (non-autoregressive) decoding:

- :func:`sample_logits`: temperature / top-k sampling of one token per
  position, with the model's probability of the chosen token;
- :func:`iterative_decode`: MaskGIT-style iterative parallel decoding with
  extension points: a step-aware ``predict_fn`` (it may receive a
  :class:`DecodeStep`), pluggable commit priority (``"confidence"``
  (MaskGIT), ``"ctf"`` (scarcity-aware coarse-to-fine, MAGE), ``"span"``
  or any callable), span-level commitment, a stage loop over codebooks with
  per-stage step counts and a rescoring hook (MAGNeT, Ziv et al. 2024), and
  an optional corrector pass that re-masks and re-generates the least
  reliable tokens;
- :class:`ClassifierFreeGuidance`: a ``predict_fn`` wrapper running the
  conditional and the null condition in one batch with an annealed
  guidance coefficient.

Autoregressive decoding goes through ``transformers``' ``generate`` (and its
KV cache): :func:`ar_generate`, with the logits processors
:class:`TokenRangeLogitsProcessor`, :class:`CodebookOrderLogitsProcessor`
and :class:`ExactLengthLogitsProcessor`.

Masks, schedules, spans and token rarities come from
:mod:`speechbrain_gense.masking`. Tokens are ``LongTensor[B, T, K]``.
"""

import copy
import dataclasses
import inspect
import logging
import math

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from speechbrain_gense.masking import (
    SPAN_REDUCTIONS,
    apply_mask,
    mask_ratio,
    rand_uniform,
    select_remask,
    select_top,
    select_top_spans,
    span_pool,
    valid_mask,
)


def gumbel_perturb(scores, generator=None):
    """``scores + G`` with Gumbel noise ``G = -log(-log(U))``, ``U ~ U(0, 1)``.

    ``argmax(gumbel_perturb(scores))`` is a sample of ``softmax(scores)``
    (the Gumbel-max trick); ``-inf`` scores stay ``-inf``. (On CPU, drawing
    ``U`` and taking two logs is several times faster than
    ``exponential_()``.)

    Arguments
    ---------
    scores : torch.Tensor
        ``[..., V]`` float scores.
    generator : torch.Generator, optional
        Random number generator (any device) of ``U``.

    Returns
    -------
    torch.Tensor
        Same shape as ``scores``.

    Example
    -------
    >>> x = gumbel_perturb(torch.tensor([[0.0, -math.inf, 50.0]]), torch.Generator().manual_seed(0))
    >>> x.shape, x.argmax(-1).tolist(), bool(x[0, 1].isinf())
    (torch.Size([1, 3]), [2], True)
    """
    uniform = rand_uniform(scores.shape, generator, scores.device)
    exponential = (-torch.log(uniform.clamp(min=1e-20))).clamp(min=1e-20)
    return scores - torch.log(exponential)


#: Block length of the two-level CDF of :func:`inverse_cdf_sample`.
CDF_BLOCK = 128


def _inverse_cdf(scores, generator=None):
    """``(tokens[N], max[N], total[N])`` of :func:`inverse_cdf_sample` on ``scores[N, V]``
    (``max + log(total)`` is ``logsumexp(scores)``)."""
    N, V = scores.shape
    top = scores.amax(-1, keepdim=True)
    weights = (scores - top).exp_()
    block = min(CDF_BLOCK, V)
    nb = -(-V // block)
    if nb * block != V:
        weights = torch.nn.functional.pad(weights, (0, nb * block - V))
    inner = weights.view(N, nb, block).cumsum(-1)  # float32, relative to each block
    outer = inner[..., -1].double().cumsum(-1)  # [N, nb] float64
    total = outer[:, -1:].contiguous()
    gen_device = generator.device if generator is not None else scores.device
    uniform = torch.rand(N, 1, generator=generator, device=gen_device,
                         dtype=torch.float64).to(scores.device)
    target = uniform * total
    # first block whose end exceeds the target (at worst u * total rounds up to
    # total: the last block of positive weight)
    b = torch.minimum(torch.searchsorted(outer, target, right=True),
                      torch.searchsorted(outer, total))
    start = torch.where(b > 0, outer.gather(-1, (b - 1).clamp(min=0)), 0.0)
    rows = inner[torch.arange(N, device=scores.device), b[:, 0]]  # [N, block]
    rest = (target - start).float()
    t = torch.minimum(torch.searchsorted(rows, rest, right=True),
                      torch.searchsorted(rows, rows[:, -1:].contiguous()))
    return (b * block + t)[:, 0], top[:, 0], total[:, 0]


def inverse_cdf_sample(scores, generator=None):
    """One sample of ``softmax(scores)`` per row by inverting its CDF.

    With ``w = exp(scores - max)``, one uniform ``u`` per row (float64, drawn
    with ``generator``) and ``C`` the cumulative sum of ``w``, the token is
    the first index with ``C > u * C[-1]``: the distribution of the Gumbel-max
    trick (:func:`gumbel_perturb`), with one ``exp`` per score and one random
    number per row instead of a random number and two logarithms per score
    (a different random stream: other tokens for a given seed). ``C`` is
    summed in two levels: float32 within blocks of :data:`CDF_BLOCK` ids,
    float64 over the blocks, so a token's probability is off by at most
    ``2**-24`` times its block's share of the mass (a total-variation error
    below ``CDF_BLOCK * 2**-24 < 1e-5``; a flat float32 sum over 8192 codes
    would allow 64 times more). ``-inf`` scores (weight 0) are never drawn.

    Arguments
    ---------
    scores : torch.Tensor
        ``[..., V]`` float scores (each row with at least one finite value).
    generator : torch.Generator, optional
        Random number generator (any device) of ``u``.

    Returns
    -------
    torch.LongTensor
        ``[...]`` the drawn ids.

    Example
    -------
    >>> scores = torch.tensor([[0.0, -math.inf, 50.0], [-math.inf, 1.0, -math.inf]])
    >>> inverse_cdf_sample(scores, torch.Generator().manual_seed(0)).tolist()
    [2, 1]
    """
    V = scores.shape[-1]
    tokens, _, _ = _inverse_cdf(scores.float().reshape(-1, V), generator)
    return tokens.reshape(scores.shape[:-1])


#: Sampling methods of :func:`sample_logits` (``sampler``).
SAMPLERS = ("gumbel", "cdf")


def sample_logits(logits, temperature=1.0, top_k=None, generator=None, sampler="gumbel"):
    """Samples one token per position from logits.

    The logits are divided by ``temperature`` and, with ``top_k``, all but
    the ``top_k`` largest are removed (values tied with the ``top_k``-th are
    kept); a token is then drawn using ``generator`` with the Gumbel-max
    trick (``sampler="gumbel"``, :func:`gumbel_perturb`) or by inverting the
    CDF (``sampler="cdf"``, :func:`inverse_cdf_sample`: the same
    distribution, several times cheaper over a large vocabulary, other
    tokens for a given seed). ``temperature = 0`` and ``top_k = 1`` give the
    argmax (lowest id among equal maxima).

    Arguments
    ---------
    logits : torch.Tensor
        ``[..., V]`` unnormalised log-probabilities.
    temperature : float
        Sampling temperature (``>= 0``).
    top_k : int, optional
        Number of most likely tokens to sample from.
    generator : torch.Generator, optional
        Random number generator (any device), for reproducible samples.
    sampler : str
        ``"gumbel"`` or ``"cdf"`` (:data:`SAMPLERS`).

    Returns
    -------
    tokens : torch.LongTensor
        ``[...]`` the sampled ids.
    probs : torch.FloatTensor
        ``[...]`` the probability of each sampled id under the model's
        unmodified distribution ``softmax(logits)`` (not the tempered or
        truncated one), so that it measures the model's confidence.

    Example
    -------
    >>> logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    >>> tokens, probs = sample_logits(logits, temperature=0.0)
    >>> tokens.tolist(), [round(p, 3) for p in probs.tolist()]
    ([1, 0], [0.665, 0.909])
    >>> tokens, probs = sample_logits(logits, sampler="cdf", generator=torch.Generator().manual_seed(0))
    >>> tokens.shape, probs.shape
    (torch.Size([2]), torch.Size([2]))
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    logits = logits.float()
    V = logits.shape[-1]
    lse = None
    if temperature == 0 or top_k == 1:
        tokens = logits.argmax(-1)
    else:
        scores = logits if temperature == 1 else logits / temperature  # x / 1 == x exactly
        if top_k is not None and top_k < V:
            kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        if sampler == "cdf":
            flat = scores.reshape(-1, V)
            tokens, top, total = _inverse_cdf(flat, generator)
            tokens = tokens.reshape(logits.shape[:-1])
            if scores is logits:
                # the sampled distribution is the model's: reuse its normaliser
                lse = (top + total.log().float()).reshape(logits.shape[:-1])
        else:
            tokens = gumbel_perturb(scores, generator).argmax(-1)
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if lse is None:
        lse = torch.logsumexp(logits, dim=-1)
    probs = (chosen - lse).exp()
    return tokens, probs



# --------------------------------------------------------------------------
# Iterative masked decoding
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DecodeStep:
    """What a step-aware ``predict_fn``, a priority or a rescorer is told.

    Attributes
    ----------
    step : int
        1-based index of the step within its pass (0 for the corrector's
        scoring call).
    steps : int
        Number of steps of the pass (of the stage, in a stage loop).
    ratio : float
        Schedule ratio of this step's input: the fraction of the pass's
        positions still masked when the model is called,
        ``mask_ratio((step - 1) / steps)`` (1 at the first step, 0 for the
        scoring call).
    stage : int or None
        Codebook decoded in this stage of a stage loop, else ``None``.
    phase : str
        ``"decode"`` (main pass), ``"score"`` (the corrector's scoring call)
        or ``"correct"`` (re-generation after the corrector).
    call : int
        0-based index of this model call in the whole decode.

    Example
    -------
    >>> DecodeStep(step=1, steps=8, ratio=1.0)
    DecodeStep(step=1, steps=8, ratio=1.0, stage=None, phase='decode', call=0)
    """

    step: int
    steps: int
    ratio: float
    stage: int = None
    phase: str = "decode"
    call: int = 0


def accepts_step_info(fn):
    """Whether ``fn`` takes a ``step_info`` keyword (or ``**kwargs``).

    A step-aware ``predict_fn`` is called ``predict_fn(tokens,
    step_info=DecodeStep(...))``, a plain one ``predict_fn(tokens)``.

    Example
    -------
    >>> accepts_step_info(lambda tokens: None), accepts_step_info(lambda tokens, step_info: None)
    (False, True)
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "step_info" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def confidence_priority(log_prob, tokens, step_info):
    """MaskGIT commit priority: the log-probability of the sampled token.

    Example
    -------
    >>> confidence_priority(torch.tensor([-0.5, -2.0]), None, None).tolist()
    [-0.5, -2.0]
    """
    return log_prob


class ScarcityPriority:
    """MAGE coarse-to-fine priority ``log p - weight * rarity(token)``.

    Frequent tokens are committed in early steps and rare ones in later
    refinements (the order used for ``"ctf"`` training masks).

    Arguments
    ---------
    freq : TokenFrequency
        Token frequencies (rarity in ``[0, 1]``).
    weight : float
        Weight of the rarity.

    Example
    -------
    >>> from speechbrain_gense.masking import TokenFrequency
    >>> prio = ScarcityPriority(TokenFrequency(torch.tensor([9, 1, 5])), weight=1.0)
    >>> prio(torch.zeros(1, 3, 1).double(), torch.tensor([[[0], [1], [2]]]), None)[0, :, 0].tolist()
    [0.0, -1.0, -0.5]
    """

    def __init__(self, freq, weight=1.0):
        self.freq = freq
        self.weight = weight

    def __call__(self, log_prob, tokens, step_info):
        if not self.weight:
            return log_prob
        return log_prob - self.weight * self.freq.rarity(tokens).double()


#: Names of the built-in commit priorities of :func:`iterative_decode`.
PRIORITIES = ("confidence", "ctf", "span")


def _resolve_priority(strategy, freq, scarcity_weight):
    if callable(strategy):
        return strategy
    if strategy not in PRIORITIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of "
                         f"{', '.join(repr(p) for p in PRIORITIES)} or a callable")
    if strategy == "ctf":
        if scarcity_weight and freq is None:
            raise ValueError('strategy "ctf" needs a TokenFrequency (freq)')
        return ScarcityPriority(freq, scarcity_weight)
    return confidence_priority  # "span": confidence pooled over spans


def _check_logits(logits, tokens, mask_id, what="predict_fn"):
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"{what} returned logits {tuple(logits.shape)} for tokens {tuple(tokens.shape)}"
        )
    logits = logits.to(tokens.device).float()
    if 0 <= mask_id < logits.shape[-1]:
        # a model that also predicts the mask token must never commit it
        logits = logits.clone()
        logits[..., mask_id] = -math.inf
    return logits


def _masked_logits(output, tokens, masked, fed, mask_id):
    """``[N, V]`` logits of the ``masked`` positions from a ``predict_fn`` output.

    The output has ``"logits"`` ``[B, T, K, V]`` (every position) or
    ``"masked_logits"`` ``[N_fed, V]``: the positions fed masked (``fed``, the
    input's ``mask_id`` positions), in row-major order, as ``logits[fed]``.
    """
    packed = output.get("masked_logits")
    if packed is None:
        return _check_logits(output["logits"], tokens, mask_id)[masked]
    n_fed = int(fed.sum())
    if packed.dim() != 2 or packed.shape[0] != n_fed:
        raise ValueError(f"predict_fn returned masked_logits {tuple(packed.shape)} for "
                         f"{n_fed} masked positions")
    packed = packed.to(tokens.device).float()
    if 0 <= mask_id < packed.shape[-1]:
        packed = packed.clone()
        packed[:, mask_id] = -math.inf
    return packed if masked is fed else packed[masked[fed]]


class _Caller:
    """Calls ``predict_fn`` (step-aware or not) and counts the calls."""

    def __init__(self, predict_fn):
        self.fn = predict_fn
        self.step_aware = accepts_step_info(predict_fn)
        self.calls = 0

    def __call__(self, tokens, **info):
        info = DecodeStep(call=self.calls, **info)
        self.calls += 1
        if self.step_aware:
            return self.fn(tokens, step_info=info), info
        return self.fn(tokens), info


def _num_units(masked, span):
    """``[B]`` number of masked positions (``span = 1``) or partly masked spans."""
    B = masked.shape[0]
    if span > 1:
        masked = span_pool(masked.double(), masked, span)[1]
    return masked.reshape(B, -1).sum(1)


def _decode_steps(call, tokens, masked, token_prob, mask_id, steps, schedule, priority,
                  temperature, top_k, generator, span=1, span_score="mean", pending=None,
                  stage=None, phase="decode", rescore_fn=None, rescore_weight=0.0,
                  sampler="gumbel"):
    """Runs ``steps`` decoding steps in place of ``masked`` positions.

    ``pending`` positions are also fed masked but not decoded (later stages).
    Returns the updated ``(tokens, token_prob, last_output)``.
    """
    B = tokens.shape[0]
    fed = masked if pending is None else masked | pending
    n_init = _num_units(masked, span)
    output = None
    for s in range(1, steps + 1):
        ratio_in = mask_ratio((s - 1) / steps, schedule)
        output, info = call(apply_mask(tokens, fed, mask_id), step=s, steps=steps,
                            ratio=ratio_in, stage=stage, phase=phase)
        temp = temperature(info) if callable(temperature) else temperature
        # sample the masked positions only (the others keep their tokens)
        sampled, prob = tokens.clone(), torch.zeros_like(token_prob)
        sampled[masked], prob[masked] = sample_logits(
            _masked_logits(output, tokens, masked, fed, mask_id), temp, top_k, generator,
            sampler)
        log_prob = torch.log(prob.double())
        if rescore_fn is not None and rescore_weight:
            out = rescore_fn(sampled, info)
            rlogits = _check_logits(out["logits"] if isinstance(out, dict) else out, tokens,
                                    mask_id, "rescore_fn")
            rlp = torch.log_softmax(rlogits, -1).gather(-1, sampled[..., None])[..., 0]
            log_prob = (1.0 - rescore_weight) * log_prob + rescore_weight * rlp.double()
        score = priority(log_prob, sampled, info)
        # positions (spans) still masked after this step: floor(ratio(s/S) * n_init)
        ratio = mask_ratio(s / steps, schedule) if s < steps else 0.0
        n_keep = torch.floor(n_init.double() * ratio + 1e-6).long()
        n_commit = (_num_units(masked, span) - n_keep).clamp(min=0)
        if span > 1:
            commit = select_top_spans(score, masked, n_commit, span, span_score)
        else:
            commit = select_top(score, masked, n_commit)
        tokens = torch.where(commit, sampled, tokens)
        token_prob = torch.where(commit, prob, token_prob)
        masked = masked & ~commit
        fed = masked if pending is None else masked | pending
    return tokens, token_prob, output


def iterative_decode(predict_fn, shape, lens, mask_id, steps=8, schedule="cosine",
                     strategy="ctf", freq=None, scarcity_weight=1.0, temperature=1.0,
                     top_k=None, generator=None, init_tokens=None, init_mask=None,
                     corrector_fn=None, remask_ratio=None, remask_threshold=None,
                     corrector_steps=None, span=None, span_score="mean", stage_steps=None,
                     rescore_fn=None, rescore_weight=0.0, sampler="gumbel"):
    """Iterative parallel decoding of masked tokens (MaskGIT / MAGE / MAGNeT).

    Decoding starts with every valid position masked (or from
    ``init_tokens`` with ``init_mask``). At step ``s = 1 .. S`` the model
    predicts every position; a token is sampled at each masked position
    (:func:`sample_logits`) with its probability ``p``. Of the ``n_init``
    positions masked at the start, ``floor(mask_ratio(s / S) * n_init)``
    stay masked after step ``s`` (none after the last step); the other
    masked positions are committed in decreasing order of priority
    (ties by lower position index). ``strategy`` names the priority:

    - ``"confidence"`` (MaskGIT): ``log p``;
    - ``"ctf"`` (scarcity-aware coarse-to-fine, MAGE):
      ``log p - scarcity_weight * rarity(token)``, with the rarity of
      ``freq``: frequent tokens are committed in early steps and rare ones
      in later refinements, the order used for ``"ctf"`` training masks;
    - ``"span"`` (MAGNeT): ``log p`` pooled over spans (below), default
      span length 3 (MAGNeT's ``span_len``);
    - a callable ``priority(log_prob[B, T, K], tokens[B, T, K], step_info)
      -> score[B, T, K]`` (float64 log-probabilities of the sampled
      ``tokens``; only masked positions are ranked).

    **Extension points** (defaults give plain MaskGIT / MAGE decoding):

    - *step-aware model*: a ``predict_fn`` with a ``step_info`` keyword (or
      ``**kwargs``), detected once, is called ``predict_fn(tokens,
      step_info=DecodeStep(...))`` (step index, schedule ratio, stage,
      phase), e.g. :class:`ClassifierFreeGuidance`; ``temperature`` may also
      be a callable ``temperature(step_info) -> float`` (MAGNeT anneals it
      linearly to 0 within each stage).
    - *span commit* (``span > 1``, MAGNeT): positions are grouped into
      non-overlapping spans of ``span`` consecutive frames per codebook
      (:func:`~speechbrain_gense.masking.select_top_spans`); the schedule
      counts spans instead of positions and whole spans are committed,
      ranked by the ``span_score`` (``"mean"`` or ``"max"``) of their
      positions' priorities. (MAGNeT re-masks the spans of lowest ``max``
      or product probability; ``"mean"`` of log-probabilities ranks as the
      product for equal-length spans.)
    - *stage loop* (``stage_steps``, MAGNeT): codebook ``k`` is decoded in
      stage ``k`` with ``stage_steps[k]`` steps, codebooks ``> k`` are fed
      masked and codebooks ``< k`` are fixed (audiocraft's default is
      ``[20, 10, 10, 10]``); ``steps`` is then unused.
    - *rescoring* (MAGNeT's model rescoring): ``rescore_fn(tokens[B, T, K],
      step_info) -> logits[B, T, K, V]`` (or a dict with ``"logits"``) is
      called on the sampled tokens of each step, and the priority is
      computed from ``(1 - rescore_weight) * log p + rescore_weight *
      log p_rescorer`` (the token probabilities returned stay the model's).

    Given tokens (``init_tokens`` outside ``init_mask``) never change.
    Committed tokens never change either, except through the corrector: when
    ``corrector_fn`` is given, the model is run once more on the finished
    tokens, the corrector scores them from the model's hidden states, the
    least reliable positions are re-masked
    (:func:`~speechbrain_gense.masking.select_remask` with ``remask_ratio``
    and/or ``remask_threshold``) and ``corrector_steps`` more steps of the
    same procedure (all codebooks at once) re-generate them.

    Padded positions are 0 in the input of ``predict_fn`` and the output,
    and never change.

    Arguments
    ---------
    predict_fn : callable
        ``predict_fn(tokens LongTensor[B, T, K]) -> dict`` (or
        ``predict_fn(tokens, step_info=...)``) with ``"logits"``
        ``[B, T, K, V]`` and optionally ``"hidden"`` ``[B, T, H]`` (needed by
        the corrector). Masked positions hold ``mask_id``. The caller closes
        over its conditioning (e.g. the noisy speech). Instead of
        ``"logits"`` it may return ``"masked_logits"`` ``[N, V]``: only the
        ``N`` positions holding ``mask_id``, in row-major order (as
        ``logits[tokens == mask_id]``), the only ones sampled; this saves
        writing and reading a ``[B, T, K, V]`` tensor of which the decoding
        uses a part.
    shape : tuple
        ``(B, T, K)``.
    lens : torch.Tensor
        ``[B]`` relative lengths (``None``: all valid).
    mask_id : int
        Id of the mask token (its logit, if the model has one, is ignored).
    steps : int
        Number of decoding steps ``S`` (model calls of the main pass).
    schedule : str
        Masking schedule (:func:`~speechbrain_gense.masking.mask_ratio`).
    strategy : str or callable
        Commit priority: ``"ctf"``, ``"confidence"``, ``"span"`` or a
        callable (see above).
    freq : TokenFrequency, optional
        Token frequencies, required by ``"ctf"`` (unless
        ``scarcity_weight = 0``).
    scarcity_weight : float
        Weight of the rarity in the ``"ctf"`` priority.
    temperature : float or callable
        Sampling temperature (0 = argmax), or ``temperature(step_info)``.
    top_k : int, optional
        Sample among the ``top_k`` most likely tokens.
    generator : torch.Generator, optional
        Random number generator, for reproducible samples.
    init_tokens : torch.LongTensor, optional
        ``[B, T, K]`` starting tokens (e.g. a prefix, or a finished decode).
    init_mask : torch.BoolTensor, optional
        ``[B, T, K]`` or ``[B, T]``, ``True`` = still to generate. Default:
        every valid position. Only used with ``init_tokens``.
    corrector_fn : callable, optional
        ``corrector_fn(hidden[B, T, H], tokens[B, T, K]) -> confidence``
        ``[B, T, K]`` (or ``[B, T]``) in ``[0, 1]``.
    remask_ratio : float, optional
        Fraction of valid positions the corrector re-masks.
    remask_threshold : float, optional
        Corrector confidence under which a position is re-masked.
    corrector_steps : int, optional
        Steps of the corrector pass; default ``max(1, steps // 2)`` (with a
        stage loop, half the total number of steps).
    span : int, optional
        Span length in frames for span commit; default 3 for ``"span"``,
        else 1 (token-level commit).
    span_score : str
        ``"mean"`` or ``"max"`` pooling of priorities over a span.
    stage_steps : list of int, optional
        Steps per codebook stage (length ``K``).
    rescore_fn : callable, optional
        External scorer of the sampled tokens (see above).
    rescore_weight : float
        Weight of the rescorer's log-probabilities, in ``[0, 1]``.
    sampler : str
        How tokens are drawn (:func:`sample_logits`): ``"gumbel"``
        (Gumbel-max) or ``"cdf"`` (inverse CDF: the same distribution,
        cheaper over a large vocabulary, other tokens for a given seed).

    Returns
    -------
    dict
        ``tokens``: ``LongTensor[B, T, K]``;
        ``token_confidence``: ``FloatTensor[B, T, K]``, the corrector's
        confidence in the tokens of the main pass when there is a corrector
        (low where it re-masked), else the model's probability of each
        chosen token (1 for tokens given in ``init_tokens`` and not
        generated, 0 for padding);
        ``confidence``: ``FloatTensor[B, T]``, its mean over codebooks;
        ``token_prob``: ``FloatTensor[B, T, K]``, the model's probability
        of each chosen token (final tokens);
        ``remasked``: ``BoolTensor[B, T, K]`` re-masked by the corrector, or
        ``None``;
        ``steps``: number of ``predict_fn`` calls (``steps`` or
        ``sum(stage_steps)``, plus ``1 + corrector_steps`` with a
        corrector; a :class:`ClassifierFreeGuidance` call counts once).

    Example
    -------
    >>> target = torch.tensor([[[3], [1], [2], [0]]])
    >>> def predict_fn(tokens):
    ...     return {"logits": 10.0 * torch.nn.functional.one_hot(target, 4).float()}
    >>> out = iterative_decode(predict_fn, (1, 4, 1), torch.tensor([1.0]), mask_id=4,
    ...                        steps=3, strategy="confidence")
    >>> out["tokens"][..., 0].tolist(), out["steps"], out["confidence"].shape
    ([[3, 1, 2, 0]], 3, torch.Size([1, 4]))

    Two codebooks decoded stage by stage, spans of 2 frames, by a
    step-aware model:

    >>> target = torch.tensor([[[3, 0], [1, 1], [2, 2], [0, 3]]])
    >>> seen = []
    >>> def predict_fn(tokens, step_info):
    ...     seen.append((step_info.stage, step_info.step))
    ...     return {"logits": 10.0 * torch.nn.functional.one_hot(target, 4).float()}
    >>> out = iterative_decode(predict_fn, (1, 4, 2), None, mask_id=4, strategy="span",
    ...                        span=2, stage_steps=[2, 1])
    >>> out["tokens"].shape, torch.equal(out["tokens"], target), seen
    (torch.Size([1, 4, 2]), True, [(0, 1), (0, 2), (1, 1)])
    """
    B, T, K = (int(d) for d in shape)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    priority = _resolve_priority(strategy, freq, scarcity_weight)
    if span is None:
        span = 3 if strategy == "span" else 1
    if int(span) != span or span < 1:
        raise ValueError(f"span must be an integer >= 1, got {span}")
    span = int(span)
    if span_score not in SPAN_REDUCTIONS:
        raise ValueError(f"unknown span_score {span_score!r}; expected one of {SPAN_REDUCTIONS}")
    if stage_steps is not None:
        stage_steps = [int(n) for n in stage_steps]
        if len(stage_steps) != K:
            raise ValueError(f"stage_steps needs one step count per codebook ({K}), "
                             f"got {len(stage_steps)}")
        if min(stage_steps) < 1:
            raise ValueError(f"stage_steps must be >= 1, got {stage_steps}")
    if not 0.0 <= rescore_weight <= 1.0:
        raise ValueError(f"rescore_weight must be in [0, 1], got {rescore_weight}")
    if rescore_weight and rescore_fn is None:
        raise ValueError("rescore_weight > 0 needs a rescore_fn")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if corrector_fn is not None and remask_ratio is None and remask_threshold is None:
        raise ValueError("a corrector needs remask_ratio and/or remask_threshold")

    device = init_tokens.device if init_tokens is not None else (
        lens.device if isinstance(lens, torch.Tensor) else torch.device("cpu"))
    lens = torch.ones(B, device=device) if lens is None else torch.as_tensor(lens, device=device)
    if lens.shape != (B,):
        raise ValueError(f"expected lens of shape [{B}], got {tuple(lens.shape)}")
    valid = valid_mask(lens, T, K)

    if init_tokens is None:
        tokens = torch.zeros(B, T, K, dtype=torch.long, device=device)
        masked = valid.clone()
    else:
        if tuple(init_tokens.shape) != (B, T, K):
            raise ValueError(f"expected init_tokens of shape {(B, T, K)}, got {tuple(init_tokens.shape)}")
        tokens = init_tokens.long().masked_fill(~valid, 0)
        if init_mask is None:
            masked = valid.clone()
        else:
            init_mask = init_mask.to(device).bool()
            if init_mask.dim() == 2:
                init_mask = init_mask[:, :, None].expand(B, T, K)
            masked = init_mask & valid
    to_decode = masked.clone()  # given (carried) tokens are never re-masked
    token_prob = valid.float()  # given tokens: probability 1; padding: 0

    call = _Caller(predict_fn)
    options = {"mask_id": mask_id, "schedule": schedule, "priority": priority,
               "temperature": temperature, "top_k": top_k, "generator": generator,
               "span": span, "span_score": span_score, "rescore_fn": rescore_fn,
               "rescore_weight": rescore_weight, "sampler": sampler}
    if stage_steps is None:
        tokens, token_prob, _ = _decode_steps(call, tokens, masked, token_prob,
                                              steps=steps, **options)
        total_steps = steps
    else:
        codebook = torch.arange(K, device=device)[None, None, :]
        for k, n in enumerate(stage_steps):
            tokens, token_prob, _ = _decode_steps(
                call, tokens, masked & (codebook == k), token_prob, steps=n,
                pending=masked & (codebook > k), stage=k, **options)
        total_steps = sum(stage_steps)
    token_confidence = token_prob
    remasked = None

    if corrector_fn is not None:
        output, _ = call(tokens, step=0, steps=0, ratio=0.0, phase="score")
        if output.get("hidden") is None:
            raise ValueError("the corrector needs predict_fn to return 'hidden' states")
        conf = corrector_fn(output["hidden"], tokens).to(device).float()
        if conf.dim() == 2:
            conf = conf[:, :, None].expand(B, T, K)
        if tuple(conf.shape) != (B, T, K):
            raise ValueError(f"corrector_fn returned {tuple(conf.shape)}, expected {(B, T, K)}")
        conf = conf.masked_fill(~valid, 0.0)
        score = conf.masked_fill(~to_decode, float("inf"))
        remasked = select_remask(score, lens, ratio=remask_ratio,
                                 threshold=remask_threshold) & to_decode
        if corrector_steps is None:
            corrector_steps = max(1, total_steps // 2)
        if corrector_steps < 1:
            raise ValueError(f"corrector_steps must be >= 1, got {corrector_steps}")
        tokens, token_prob, _ = _decode_steps(call, tokens, remasked, token_prob,
                                              steps=corrector_steps, phase="correct",
                                              **options)
        token_confidence = conf

    return {
        "tokens": tokens,
        "confidence": token_confidence.mean(-1),
        "token_confidence": token_confidence,
        "token_prob": token_prob,
        "remasked": remasked,
        "steps": call.calls,
    }


# --------------------------------------------------------------------------
# Classifier-free guidance
# --------------------------------------------------------------------------


def _cat_batch(a, b):
    """Concatenates two conditions along the batch dimension (recursively)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape[1:] != b.shape[1:]:
            raise ValueError(f"condition and null condition differ in shape: "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        return torch.cat([a, b.to(a.device, a.dtype)], dim=0)
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            raise ValueError(f"condition and null condition have different keys: "
                             f"{sorted(a)} and {sorted(b)}")
        return {k: _cat_batch(a[k], b[k]) for k in a}
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return type(a)(_cat_batch(x, y) for x, y in zip(a, b))
    if a is None and b is None:
        return None
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or a != b:
        raise ValueError(f"cannot batch condition {type(a).__name__} with null condition "
                         f"{type(b).__name__}")
    return a


class ClassifierFreeGuidance:
    """Classifier-free guidance as a step-aware ``predict_fn``.

    Each call runs ``model_fn`` once on a batch of ``2 B`` items: the tokens
    with the condition and the same tokens with the null condition,
    concatenated along the batch dimension (as MAGNeT does, "one forward
    pass instead of two"), and returns the guided logits
    ``uncond + w * (cond - uncond)``. The coefficient is annealed linearly
    by the schedule ratio of the step's input,
    ``w = w_end + (w_start - w_end) * step_info.ratio``: ``w_start`` at the
    first step (everything masked), moving to ``w_end`` as tokens are
    committed (audiocraft's MAGNeT: ``mask_p * max_cfg_coef + (1 - mask_p)
    * min_cfg_coef`` with 10 and 1). Called without ``step_info`` it uses
    ``w_start``. Other ``[2 B, ...]`` outputs (e.g. ``"hidden"`` for a
    corrector) are returned for the conditional half.

    Arguments
    ---------
    model_fn : callable
        ``model_fn(tokens[2B, T, K], condition) -> dict`` with ``"logits"``
        ``[2B, T, K, V]``, where ``condition`` is the batch of both
        conditions.
    cond : tensor, dict, list or tuple
        The condition of the ``B`` items (tensors ``[B, ...]``).
    null_cond : same structure as ``cond``
        The null condition (same shapes).
    w_start : float
        Guidance coefficient at the first step.
    w_end : float
        Coefficient reached when nothing is left masked (``w = 1`` is the
        conditional model alone).

    Example
    -------
    >>> def model_fn(tokens, condition):  # logits = the condition, per item
    ...     return {"logits": condition[:, None, None, :].expand(-1, 2, 1, -1)}
    >>> cfg = ClassifierFreeGuidance(model_fn, torch.tensor([[2.0, 0.0]]),
    ...                              torch.tensor([[1.0, 1.0]]), w_start=3.0, w_end=1.0)
    >>> out = cfg(torch.zeros(1, 2, 1, dtype=torch.long), DecodeStep(step=1, steps=4, ratio=1.0))
    >>> out["logits"].shape, out["logits"][0, 0, 0].tolist(), out["guidance"]
    (torch.Size([1, 2, 1, 2]), [4.0, -2.0], 3.0)
    """

    def __init__(self, model_fn, cond, null_cond, w_start=3.0, w_end=1.0):
        self.model_fn = model_fn
        self.condition = _cat_batch(cond, null_cond)
        self.w_start = float(w_start)
        self.w_end = float(w_end)

    def coefficient(self, step_info=None):
        """The guidance coefficient ``w`` of a step."""
        ratio = 1.0 if step_info is None else float(step_info.ratio)
        return self.w_end + (self.w_start - self.w_end) * ratio

    def __call__(self, tokens, step_info=None):
        B = tokens.shape[0]
        out = self.model_fn(torch.cat([tokens, tokens], dim=0), self.condition)
        logits = out["logits"]
        if logits.shape[0] != 2 * B:
            raise ValueError(f"model_fn returned logits for {logits.shape[0]} items, "
                             f"expected {2 * B} (condition and null condition)")
        cond, uncond = logits.float().split(B, dim=0)
        w = self.coefficient(step_info)
        result = {k: v[:B] if torch.is_tensor(v) and v.dim() and v.shape[0] == 2 * B else v
                  for k, v in out.items()}
        result["logits"] = uncond + w * (cond - uncond)
        result["guidance"] = w
        return result


# --------------------------------------------------------------------------
# Autoregressive decoding (transformers generate)
# --------------------------------------------------------------------------


class _PositionalLogitsProcessor(LogitsProcessor):
    """A logits processor that knows the generated position ``t``.

    ``start`` is the column of ``input_ids`` where generation starts (the
    left-padded prompt width, the same for the whole batch);
    :func:`ar_generate` sets it with :meth:`at`.
    """

    start = None

    def at(self, start):
        """A copy of the processor for generation starting at column ``start``."""
        new = copy.copy(self)
        new.start = int(start)
        return new

    def position(self, input_ids):
        """0-based index of the token about to be generated."""
        if self.start is None:
            raise ValueError(f"{type(self).__name__}: the generation start is unknown "
                             "(use .at(prompt_width) or pass it to ar_generate)")
        return input_ids.shape[1] - self.start


class TokenRangeLogitsProcessor(_PositionalLogitsProcessor):
    """Allows only the token ids of a half-open range ``[lo, hi)``.

    The range is fixed (``(lo, hi)``), one per generated position (a list
    of ``(lo, hi)``; positions past its end are not constrained), or given
    by a callable ``token_range(t) -> (lo, hi)`` of the generated position
    ``t``. All other logits become ``-inf``.

    Arguments
    ---------
    token_range : tuple, list or callable
        See above.
    start : int, optional
        Column of ``input_ids`` where generation starts (set by
        :func:`ar_generate`).

    Example
    -------
    >>> proc = TokenRangeLogitsProcessor((1, 3), start=2)
    >>> proc(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 5)).tolist()
    [[-inf, 0.0, 0.0, -inf, -inf]]
    >>> proc = TokenRangeLogitsProcessor([(0, 2), (3, 5)], start=2)
    >>> proc(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 5)).tolist()
    [[-inf, -inf, -inf, 0.0, 0.0]]
    """

    def __init__(self, token_range, start=None):
        if callable(token_range):
            self._range = token_range
            self.length = None
        elif (isinstance(token_range, (list, tuple)) and len(token_range) == 2
              and not any(isinstance(v, (list, tuple)) for v in token_range)):
            r = (int(token_range[0]), int(token_range[1]))
            self._check(r)
            self._range = lambda t, r=r: r
            self.length = None
        elif isinstance(token_range, (list, tuple)):
            ranges = [tuple(int(v) for v in r) for r in token_range]
            for r in ranges:
                self._check(r)
            self._range = lambda t, rs=ranges: rs[t] if t < len(rs) else None
            self.length = len(ranges)
        else:
            raise ValueError(f"token_range must be (lo, hi), a list of (lo, hi) or a callable, "
                             f"got {token_range!r}")
        self.start = start

    @staticmethod
    def _check(r):
        if len(r) != 2 or not 0 <= int(r[0]) < int(r[1]):
            raise ValueError(f"a token range is (lo, hi) with 0 <= lo < hi, got {r!r}")

    def range_at(self, t):
        """``(lo, hi)`` of generated position ``t`` (``None``: unconstrained)."""
        return self._range(t)

    def __call__(self, input_ids, scores):
        r = self.range_at(self.position(input_ids))
        if r is None:
            return scores
        lo, hi = int(r[0]), int(r[1])
        if not 0 <= lo < hi <= scores.shape[-1]:
            raise ValueError(f"token range [{lo}, {hi}) outside the vocabulary "
                             f"[0, {scores.shape[-1]})")
        allowed = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        allowed[lo:hi] = True
        return scores.masked_fill(~allowed, -math.inf)


class CodebookOrderLogitsProcessor(TokenRangeLogitsProcessor):
    """Codebook order of flattened multi-codebook tokens.

    Generated position ``t`` holds codebook ``c = (first_codebook + t) % K``
    (frame-major, e.g. DAC-SE1's 9 DAC codebooks) and may only emit the ids
    ``[offsets[c], offsets[c] + vocab_per_codebook)``.

    Arguments
    ---------
    offsets : int or list of int
        First id of each codebook (``K`` values), or of codebook 0 with
        codebook ``c`` at ``offsets + c * vocab_per_codebook``.
    vocab_per_codebook : int
        Ids per codebook.
    num_codebooks : int
        ``K``.
    first_codebook : int
        Codebook of the first generated token.
    start : int, optional
        Column of ``input_ids`` where generation starts.

    Example
    -------
    >>> proc = CodebookOrderLogitsProcessor(5, 2, 3, start=1)
    >>> [proc.range_at(t) for t in range(4)]
    [(5, 7), (7, 9), (9, 11), (5, 7)]
    >>> proc(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 12)).isfinite().int().tolist()
    [[0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]]
    """

    def __init__(self, offsets, vocab_per_codebook, num_codebooks, first_codebook=0, start=None):
        K, V = int(num_codebooks), int(vocab_per_codebook)
        if K < 1 or V < 1:
            raise ValueError(f"need num_codebooks >= 1 and vocab_per_codebook >= 1, got {K}, {V}")
        if isinstance(offsets, int):
            offsets = [offsets + c * V for c in range(K)]
        offsets = [int(o) for o in offsets]
        if len(offsets) != K:
            raise ValueError(f"expected {K} codebook offsets, got {len(offsets)}")
        self.offsets, self.vocab_per_codebook, self.num_codebooks = offsets, V, K
        self.first_codebook = int(first_codebook)
        super().__init__(self._codebook_range, start=start)

    def _codebook_range(self, t):
        c = (self.first_codebook + t) % self.num_codebooks
        return (self.offsets[c], self.offsets[c] + self.vocab_per_codebook)


class ExactLengthLogitsProcessor(_PositionalLogitsProcessor):
    """Generates exactly ``num_tokens[b]`` tokens before the end token.

    Before position ``num_tokens[b]`` the end token is forbidden; from it
    on the end token is the only choice (so ``generate`` stops each item
    there; finished items are then filled with the pad id by ``generate``).

    Arguments
    ---------
    num_tokens : torch.LongTensor
        ``[B]`` tokens to generate per item.
    eos_token_id : int
        The end token.
    start : int, optional
        Column of ``input_ids`` where generation starts.

    Example
    -------
    >>> proc = ExactLengthLogitsProcessor(torch.tensor([1, 2]), eos_token_id=0, start=3)
    >>> proc(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3)).tolist()
    [[0.0, -inf, -inf], [-inf, 0.0, 0.0]]
    """

    def __init__(self, num_tokens, eos_token_id, start=None):
        self.num_tokens = torch.as_tensor(num_tokens).long()
        self.eos_token_id = int(eos_token_id)
        self.start = start

    def __call__(self, input_ids, scores):
        t = self.position(input_ids)
        done = (self.num_tokens.to(scores.device) <= t)[:, None]
        is_eos = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        is_eos[self.eos_token_id] = True
        forced = torch.where(is_eos, 0.0, -math.inf).to(scores.dtype)
        return torch.where(done, forced.expand_as(scores), scores.masked_fill(is_eos, -math.inf))


def check_schedule(forced, lo, hi, dims):
    """A schedule of forced ids (``-1``: predicted) and ranges as LongTensors of one shape.

    Example
    -------
    >>> check_schedule([-1, 4], [1, 0], [3, 0], dims=1)[0].tolist()
    [-1, 4]
    >>> check_schedule([-1], [2], [2], dims=1)
    Traceback (most recent call last):
    ...
    ValueError: every predicted position needs a range 0 <= lo < hi
    """
    forced, lo, hi = (torch.as_tensor(x).long() for x in (forced, lo, hi))
    if forced.dim() != dims or forced.shape != lo.shape or forced.shape != hi.shape:
        shape = "[B, N]" if dims == 2 else "[N]"
        raise ValueError(f"forced, lo and hi must be {shape} of one shape, got "
                         f"{tuple(forced.shape)}, {tuple(lo.shape)}, {tuple(hi.shape)}")
    if bool(((forced < 0) & ((lo < 0) | (hi <= lo))).any()):
        raise ValueError("every predicted position needs a range 0 <= lo < hi")
    return forced, lo, hi


class ScheduledTokensLogitsProcessor(_PositionalLogitsProcessor):
    """A per-item schedule of the generated positions: forced tokens or token ranges.

    At generated position ``t`` item ``b`` may only emit ``forced[b, t]``
    when it is ``>= 0`` (a token that is known rather than predicted, e.g.
    the noisy input tokens of an interleaved streaming layout, which arrive
    between the generated ones), else an id of ``[lo[b, t], hi[b, t])``.
    Positions past the schedule's end are not constrained.

    Arguments
    ---------
    forced : torch.LongTensor
        ``[B, N]`` forced ids, ``-1`` where the model chooses.
    lo, hi : torch.LongTensor
        ``[B, N]`` half-open ranges of the chosen positions.
    start : int, optional
        Column of ``input_ids`` where generation starts (set by
        :func:`ar_generate`).

    Example
    -------
    >>> proc = ScheduledTokensLogitsProcessor(torch.tensor([[-1, 4]]), torch.tensor([[1, 0]]),
    ...                                       torch.tensor([[3, 0]]), start=2)
    >>> proc(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 5)).isfinite().int().tolist()
    [[0, 1, 1, 0, 0]]
    >>> proc(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 5)).isfinite().int().tolist()
    [[0, 0, 0, 0, 1]]
    """

    def __init__(self, forced, lo, hi, start=None):
        self.forced, self.lo, self.hi = check_schedule(forced, lo, hi, dims=2)
        self.start = start

    def __call__(self, input_ids, scores):
        t = self.position(input_ids)
        if t >= self.forced.shape[1]:
            return scores
        device = scores.device
        forced = self.forced[:, t].to(device)[:, None]
        lo, hi = self.lo[:, t].to(device)[:, None], self.hi[:, t].to(device)[:, None]
        ids = torch.arange(scores.shape[-1], device=device)[None, :]
        allowed = torch.where(forced >= 0, ids == forced, (ids >= lo) & (ids < hi))
        return scores.masked_fill(~allowed, -math.inf)


class _ChosenProbRecorder(LogitsProcessor):
    """Records the probability of each chosen token under the scores it sees.

    The chosen token of a step is only known at the next call (last column
    of ``input_ids``); :meth:`finish` takes the last one.
    """

    def __init__(self):
        self.probs, self._log_probs = [], None

    def _take(self, chosen):
        if self._log_probs is not None:
            self.probs.append(self._log_probs.gather(1, chosen[:, None].to(
                self._log_probs.device))[:, 0].exp())
        self._log_probs = None

    def __call__(self, input_ids, scores):
        self._take(input_ids[:, -1])
        self._log_probs = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens):
        self._take(last_tokens)
        return torch.stack(self.probs, dim=1) if self.probs else None


class GumbelNoiseLogitsProcessor(LogitsProcessor):
    """Adds Gumbel noise drawn with a ``torch.Generator``.

    With greedy search on top, ``argmax(scores + G)`` is a sample of
    ``softmax(scores)`` (:func:`gumbel_perturb`, as :func:`sample_logits`): it
    makes ``generate`` sampling reproducible with a generator of its own,
    without touching the global random state.

    Arguments
    ---------
    generator : torch.Generator, optional
        Random number generator (any device).

    Example
    -------
    >>> proc = GumbelNoiseLogitsProcessor(torch.Generator().manual_seed(0))
    >>> scores = torch.tensor([[0.0, -math.inf, 50.0]])
    >>> proc(None, scores).argmax(-1).tolist(), bool(proc(None, scores)[0, 1].isinf())
    ([2], True)
    """

    def __init__(self, generator=None):
        self.generator = generator

    def __call__(self, input_ids, scores):
        return gumbel_perturb(scores.float(), self.generator)


class _ForwardCounter:
    """Counts the forward passes of a module while active."""

    def __init__(self, module):
        self.count = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.count += 1

    def remove(self):
        self._handle.remove()


_STOPPING_LOGGER = logging.getLogger("transformers.generation.stopping_criteria")


class _DropLengthReminder(logging.Filter):
    """Drops ``generate``'s "exceeded the model's predefined maximum length" reminder."""

    def filter(self, record):
        return "predefined maximum length" not in record.getMessage()


class _PlannedPositions:
    """Gives each forward pass of ``model`` the planned position ids of its inputs.

    ``plan`` ``[B, W + N]``: positions of the left-padded sequence (prompt
    width ``W``, then the ``N`` generated tokens). A forward call with
    ``input_ids`` ``[B, n]`` after ``past`` cached tokens (0 without a cache)
    gets ``plan[:, past:past + n]``: the prompt at prefill, then the planned
    position of each token fed back.
    """

    def __init__(self, model, plan):
        self.plan = plan
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    what = "positions"

    def _planned(self, kwargs):
        """``(input_ids, plan columns of those inputs)``, or None without ``input_ids``."""
        ids = kwargs.get("input_ids")
        if ids is None:
            return None
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = int(cache.get_seq_length()) if hasattr(cache, "get_seq_length") else 0
        n = ids.shape[1]
        if past + n > self.plan.shape[1]:
            raise RuntimeError(f"planned {self.what} cover {self.plan.shape[1]} tokens, "
                               f"the model got {past + n}")
        return ids, self.plan[:, past:past + n].to(ids.device)

    def _hook(self, module, args, kwargs):
        planned = self._planned(kwargs)
        if planned is None:
            return None
        kwargs["position_ids"] = planned[1]
        return args, kwargs

    def remove(self):
        self._handle.remove()


class _PlannedHints(_PlannedPositions):
    """Turns each forward pass's ``input_ids`` into ``inputs_embeds = embed(model, ids,
    plan[:, past:past + n])``: the planned hint ids of its inputs (see ``ar_generate``)."""

    def __init__(self, model, plan, embed):
        self.embed, self.model = embed, model
        super().__init__(model, plan)

    what = "hints"

    def _hook(self, module, args, kwargs):
        planned = self._planned(kwargs)
        if planned is None:
            return None
        kwargs["inputs_embeds"] = self.embed(self.model, *planned)
        kwargs["input_ids"] = None
        return args, kwargs


def _left_pad(x, lens, width, value):
    """Right-padded ``x[B, P]`` with ``lens[B]`` -> left-padded ``[B, width]``."""
    B = x.shape[0]
    cols = torch.arange(width, device=x.device)[None, :] - (width - lens[:, None])
    keep = cols >= 0
    src = x.gather(1, cols.clamp(min=0, max=x.shape[1] - 1))
    return torch.where(keep, src, torch.full((B, width), value, dtype=x.dtype, device=x.device)), keep


@torch.no_grad()
def sampling_processors(temperature=1.0, top_k=None, top_p=None, generator=None, seed=None):
    """The sampling stage of the AR path: temperature, top-k, top-p, Gumbel noise.

    ``transformers``' warpers then :class:`GumbelNoiseLogitsProcessor` (drawn
    with ``generator``, or a new one seeded with ``seed``), so that an argmax
    over the result is a sample; empty (greedy) for ``temperature = 0`` or
    ``top_k = 1``.

    Example
    -------
    >>> [type(p).__name__ for p in sampling_processors(0.8, top_k=5, seed=0)]
    ['TemperatureLogitsWarper', 'TopKLogitsWarper', 'GumbelNoiseLogitsProcessor']
    >>> sampling_processors(0.0)
    []
    """
    if temperature <= 0 or top_k == 1:
        return []
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    out = []
    if temperature != 1.0:
        out.append(TemperatureLogitsWarper(float(temperature)))
    if top_k is not None:
        out.append(TopKLogitsWarper(int(top_k)))
    if top_p is not None and top_p < 1.0:
        out.append(TopPLogitsWarper(float(top_p)))
    out.append(GumbelNoiseLogitsProcessor(generator))
    return out


@torch.no_grad()
def forced_span_generate(model, prompt, forced, lo, hi, *, temperature=1.0, top_k=None,
                         top_p=None, generator=None, seed=None):
    """AR generation of one sequence whose known tokens come in spans between predicted ones.

    Position ``i`` of the continuation is ``forced[i]`` when it is ``>= 0``
    (e.g. the noisy input blocks of
    :func:`~speechbrain_gense.models.gense.interleaved_layout`), else a token
    of ``[lo[i], hi[i])`` sampled as :func:`ar_generate` samples
    (:func:`sampling_processors`). With the KV cache (``transformers``'
    ``DynamicCache``) a run of forced tokens goes through the model in one
    forward pass together with the token chosen before it, so a continuation
    costs one pass per predicted token (``generate`` feeds forced tokens one
    at a time: as many passes as tokens). Under greedy decoding the tokens
    equal those of :func:`ar_generate` with a
    :class:`ScheduledTokensLogitsProcessor` (unit test).

    Arguments
    ---------
    model : transformers.PreTrainedModel
        A causal LM.
    prompt : torch.LongTensor
        ``[P]`` (``P >= 1``).
    forced, lo, hi : torch.LongTensor
        ``[N]``: the continuation's forced ids (``-1``: predicted) and the
        ranges of the predicted ones.
    temperature, top_k, top_p, generator, seed
        As :func:`ar_generate`.

    Returns
    -------
    dict
        ``tokens`` ``[N]``, ``token_prob`` ``[N]`` (probability of each
        predicted token under the range-restricted, untempered softmax; 1 for
        forced ones) and ``nfe`` (forward passes).

    Example
    -------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> _ = torch.manual_seed(0)
    >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=32, n_embd=16,
    ...                                    n_layer=1, n_head=2)).eval()
    >>> out = forced_span_generate(model, torch.tensor([1]), torch.tensor([5, 6, -1, 7, 8, -1]),
    ...                            torch.tensor([0, 0, 10, 0, 0, 10]),
    ...                            torch.tensor([0, 0, 16, 0, 0, 16]), temperature=0)
    >>> out["tokens"][[0, 1, 3, 4]].tolist(), bool((out["tokens"][[2, 5]] >= 10).all()), out["nfe"]
    ([5, 6, 7, 8], True, 2)
    """
    from transformers import DynamicCache

    prompt = torch.as_tensor(prompt).long()
    if prompt.dim() != 1 or prompt.numel() < 1:
        raise ValueError(f"expected a prompt [P] with P >= 1, got {tuple(prompt.shape)}")
    forced, lo, hi = check_schedule(forced, lo, hi, dims=1)
    device = next(model.parameters()).device
    samplers = sampling_processors(temperature, top_k, top_p, generator, seed)
    N = forced.numel()
    tokens, probs = forced.clone(), torch.ones(N)
    cache, pending, i, nfe = DynamicCache(), prompt, 0, 0
    while i < N:
        j = i
        while j < N and forced[j] >= 0:
            j += 1
        feed = torch.cat([pending, forced[i:j]]).to(device)
        logits = model(input_ids=feed[None], past_key_values=cache, use_cache=True).logits
        nfe += 1
        i = j
        if i >= N:
            break
        scores = logits[:, -1].float()
        ids = torch.arange(scores.shape[-1], device=device)
        scores = scores.masked_fill((ids < int(lo[i])) | (ids >= int(hi[i])), -math.inf)
        log_probs = torch.log_softmax(scores, dim=-1)
        for proc in samplers:
            scores = proc(feed[None], scores)
        choice = int(scores.argmax(-1))
        tokens[i], probs[i] = choice, float(log_probs[0, choice].exp())
        pending, i = torch.tensor([choice]), i + 1
    return {"tokens": tokens, "token_prob": probs, "nfe": nfe}


def ar_generate(model, prompt, prompt_lens, num_tokens, token_range=None, *,
                temperature=1.0, top_k=None, top_p=None, generator=None, seed=None,
                use_cache=True, extra_processors=(), position_ids=None, eos_token_id=None,
                pad_token_id=0, cache_implementation="static", hint_ids=None, hint_embed=None):
    """Autoregressive generation of exactly ``num_tokens`` tokens per item.

    A thin layer over ``transformers``' ``model.generate`` (its KV cache,
    attention masks and position ids): the right-padded prompts are
    left-padded for batched generation with an attention mask (positions
    are counted from each item's first real token), and the logits go
    through, in this order:

    1. constraints: the token range (:class:`TokenRangeLogitsProcessor`,
       or :class:`CodebookOrderLogitsProcessor` given as ``token_range``),
       ``extra_processors``, then the exact length
       (:class:`ExactLengthLogitsProcessor`, with ``eos_token_id``);
    2. the probability of the chosen token is taken here (``token_prob``);
    3. sampling: ``TemperatureLogitsWarper``, ``TopKLogitsWarper``,
       ``TopPLogitsWarper`` (``transformers``) and Gumbel noise drawn with
       ``generator`` (:class:`GumbelNoiseLogitsProcessor`), so that greedy
       search samples, reproducibly for a seed. ``temperature = 0`` is
       greedy decoding.

    Without ``eos_token_id`` every item runs for ``max(num_tokens)`` steps
    and is cut to its length. The model's own ``generation_config`` (e.g. a
    checkpoint's repetition penalty or sampling defaults) is set aside
    during the call: only the options here apply.

    Arguments
    ---------
    model : transformers.PreTrainedModel
        A causal LM (e.g. ``GPT2LMHeadModel``, ``LlamaForCausalLM``,
        ``Qwen2ForCausalLM``).
    prompt : torch.LongTensor
        ``[B, P]`` prompts, right-padded with ``pad_token_id``.
    prompt_lens : torch.LongTensor
        ``[B]`` prompt lengths (``1 .. P``).
    num_tokens : int or torch.LongTensor
        Tokens to generate per item (``[B]`` or one for all).
    token_range : tuple, list, callable or TokenRangeLogitsProcessor, optional
        ``(lo, hi)`` half-open ids allowed, one range per generated
        position, a callable ``t -> (lo, hi)``, or a processor such as
        :class:`CodebookOrderLogitsProcessor`.
    temperature : float
        Sampling temperature (0: greedy).
    top_k : int, optional
        Sample among the ``top_k`` most likely tokens.
    top_p : float, optional
        Nucleus sampling mass, in ``(0, 1]``.
    generator : torch.Generator, optional
        Random number generator of the sampling.
    seed : int, optional
        Seed of a new CPU generator (when ``generator`` is not given).
    use_cache : bool
        Use the KV cache (same tokens, fewer operations).
    cache_implementation : str
        ``"static"`` (default): ``transformers``' ``StaticCache``, the keys
        and values of prompt + new tokens preallocated and written in place;
        ``"dynamic"``: ``DynamicCache``, grown by concatenation at every step
        (the concatenations were 20 % of a batched GenSE decode here; same
        tokens either way).
    extra_processors : sequence of LogitsProcessor
        More constraints, applied after the token range.
    position_ids : torch.LongTensor, optional
        ``[B, P]`` position ids of the prompts (right-padded like them):
        generated tokens continue from each item's last one; or ``[B, P +
        max(num_tokens)]``, *planned* positions: the prompts' (right-padded),
        then column ``P + i`` is the position of generated token ``i`` (e.g.
        GenSE places token ``i`` at a fixed distance from the noisy token it
        replaces). ``generate`` keeps its own KV cache, masks and stopping;
        each forward pass gets the planned positions of its input tokens
        (a forward pre-hook, for any causal LM: GPT-2, LLaMA, Qwen2).
    eos_token_id : int, optional
        End token: forbidden before, forced at ``num_tokens`` (stops early).
    pad_token_id : int
        Pad id of the prompts and of the returned tokens.
    hint_ids : torch.LongTensor, optional
        ``[B, P + max(num_tokens)]``, planned like ``position_ids``: an extra
        id for each input token (the prompt's, right-padded; then column ``P
        + i`` for generated token ``i`` fed back), ``pad_token_id`` for none.
        Each forward pass then gets ``inputs_embeds = hint_embed(model,
        input_ids, hints)`` instead of ``input_ids`` (GenSE's ``hint``
        option: :func:`~speechbrain_gense.models.gense.hint_embeddings`).
    hint_embed : callable, optional
        ``(model, ids[B, n], hints[B, n]) -> FloatTensor[B, n, D]``; needed
        with ``hint_ids``.

    Returns
    -------
    dict
        ``tokens``: ``LongTensor[B, max(num_tokens)]`` (padded with
        ``pad_token_id``); ``lens``: ``LongTensor[B]`` (``num_tokens``);
        ``token_prob``: ``FloatTensor[B, max(num_tokens)]``, probability of
        each chosen token under the constrained, untempered softmax (0 on
        padding); ``nfe``: number of model forward passes.

    Example
    -------
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> _ = torch.manual_seed(0)
    >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=32, n_embd=16,
    ...                                    n_layer=1, n_head=2)).eval()
    >>> prompt = torch.tensor([[5, 6, 7], [8, 9, 0]])
    >>> out = ar_generate(model, prompt, torch.tensor([3, 2]), torch.tensor([4, 2]),
    ...                   token_range=(3, 10), eos_token_id=2, seed=0)
    >>> out["tokens"].shape, out["lens"].tolist(), out["nfe"]
    (torch.Size([2, 4]), [4, 2], 5)
    >>> bool(((out["tokens"][0] >= 3) & (out["tokens"][0] < 10)).all()), out["tokens"][1, 2:].tolist()
    (True, [0, 0])
    """
    if prompt.dim() != 2:
        raise ValueError(f"expected prompt [B, P], got {tuple(prompt.shape)}")
    B, P = prompt.shape
    device = prompt.device
    prompt = prompt.long()
    prompt_lens = torch.as_tensor(prompt_lens, device=device).long()
    if prompt_lens.shape != (B,):
        raise ValueError(f"expected prompt_lens of shape [{B}], got {tuple(prompt_lens.shape)}")
    if B and (int(prompt_lens.min()) < 1 or int(prompt_lens.max()) > P):
        raise ValueError(f"prompt_lens must be in [1, {P}], got {prompt_lens.tolist()}")
    num_tokens = torch.as_tensor(num_tokens, device=device).long()
    if num_tokens.dim() == 0:
        num_tokens = num_tokens.expand(B)
    if num_tokens.shape != (B,):
        raise ValueError(f"expected num_tokens int or of shape [{B}], got {tuple(num_tokens.shape)}")
    if B and int(num_tokens.min()) < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens.tolist()}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if cache_implementation not in ("static", "dynamic"):
        raise ValueError(f"cache_implementation must be 'static' or 'dynamic', got "
                         f"{cache_implementation!r}")
    n_max = int(num_tokens.max()) if B else 0
    lens = num_tokens.clone()
    if n_max == 0:
        empty = torch.full((B, 0), pad_token_id, dtype=torch.long, device=device)
        return {"tokens": empty, "lens": lens, "token_prob": empty.float(), "nfe": 0}

    width = int(prompt_lens.max())
    input_ids, attention_mask = _left_pad(prompt, prompt_lens, width, pad_token_id)
    kwargs, plan = {}, None
    if position_ids is not None:
        position_ids = torch.as_tensor(position_ids, device=device).long()
        if position_ids.dim() != 2 or position_ids.shape[0] != B or \
                position_ids.shape[1] not in (P, P + n_max):
            raise ValueError(f"expected position_ids of shape [{B}, {P}] (prompt) or "
                             f"[{B}, {P + n_max}] (prompt + planned), got "
                             f"{tuple(position_ids.shape)}")
        kwargs["position_ids"] = _left_pad(position_ids[:, :P], prompt_lens, width, 0)[0]
        if position_ids.shape[1] == P + n_max and n_max:
            plan = torch.cat([kwargs["position_ids"], position_ids[:, P:]], dim=1)
        table = getattr(model.config, "max_position_embeddings", None)
        if plan is not None and table is not None and int(plan.max()) >= int(table):
            raise ValueError(f"planned position ids reach {int(plan.max())}, the model has "
                             f"{int(table)} positions")

    hint_plan = None
    if hint_ids is not None:
        hint_ids = torch.as_tensor(hint_ids, device=device).long()
        if hint_ids.shape != (B, P + n_max):
            raise ValueError(f"expected hint_ids of shape [{B}, {P + n_max}] (prompt + planned), "
                             f"got {tuple(hint_ids.shape)}")
        if hint_embed is None:
            raise ValueError("hint_ids need hint_embed (model, ids, hints) -> input embeddings")
        hint_plan = torch.cat([_left_pad(hint_ids[:, :P], prompt_lens, width, pad_token_id)[0],
                               hint_ids[:, P:]], dim=1)

    processors = []
    if token_range is not None:
        if not isinstance(token_range, TokenRangeLogitsProcessor):
            token_range = TokenRangeLogitsProcessor(token_range)
        if token_range.length is not None and token_range.length < n_max:
            raise ValueError(f"token_range gives {token_range.length} ranges for "
                             f"{n_max} generated tokens")
        processors.append(token_range.at(width))
    for proc in extra_processors:
        processors.append(proc.at(width) if isinstance(proc, _PositionalLogitsProcessor) else proc)
    if eos_token_id is not None:
        processors.append(ExactLengthLogitsProcessor(num_tokens, eos_token_id, start=width))
    recorder = _ChosenProbRecorder()
    processors.append(recorder)
    processors += sampling_processors(temperature, top_k, top_p, generator, seed)

    config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=n_max + (eos_token_id is not None),
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=use_cache,
        **({"cache_implementation": cache_implementation} if use_cache else {}))
    saved_config = model.generation_config
    model.generation_config = GenerationConfig()
    counter = _ForwardCounter(model)
    planner = _PlannedPositions(model, plan) if plan is not None else None
    hinter = _PlannedHints(model, hint_plan, hint_embed) if hint_plan is not None else None
    # planned positions stay inside the position table (checked above) although the
    # sequence is longer than it: transformers' length reminder does not apply
    quiet = _DropLengthReminder() if plan is not None else None
    if quiet is not None:
        _STOPPING_LOGGER.addFilter(quiet)
    try:
        out = model.generate(input_ids, attention_mask=attention_mask.long(),
                             generation_config=config,
                             logits_processor=LogitsProcessorList(processors), **kwargs)
    finally:
        counter.remove()
        if hinter is not None:
            hinter.remove()
        if planner is not None:
            planner.remove()
            _STOPPING_LOGGER.removeFilter(quiet)
        model.generation_config = saved_config
    generated = out[:, width:]
    prob = recorder.finish(generated[:, -1])
    T_gen = generated.shape[1]
    if T_gen < n_max:
        raise RuntimeError(f"generate stopped after {T_gen} of {n_max} tokens")
    keep = torch.arange(n_max, device=device)[None, :] < lens[:, None]
    tokens = generated[:, :n_max].masked_fill(~keep, pad_token_id)
    token_prob = prob[:, :n_max].to(device).masked_fill(~keep, 0.0)
    return {"tokens": tokens, "lens": lens, "token_prob": token_prob, "nfe": counter.count}
