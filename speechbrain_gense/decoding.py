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

import dataclasses
import inspect
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


def sample_logits(logits, temperature=1.0, top_k=None, generator=None):
    """Samples one token per position from logits.

    The logits are divided by ``temperature`` and, with ``top_k``, all but
    the ``top_k`` largest are removed (values tied with the ``top_k``-th are
    kept); a token is then drawn with the Gumbel-max trick using
    ``generator``. ``temperature = 0`` and ``top_k = 1`` give the argmax
    (lowest id among equal maxima).

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
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    logits = logits.float()
    V = logits.shape[-1]
    if temperature == 0 or top_k == 1:
        tokens = logits.argmax(-1)
    else:
        scores = logits / temperature
        if top_k is not None and top_k < V:
            kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
            scores = scores.masked_fill(scores < kth, -math.inf)
        # Gumbel-max: argmax(scores + G), G = -log(-log(U)) (on CPU, drawing U
        # and taking two logs is several times faster than exponential_()).
        uniform = rand_uniform(scores.shape, generator, scores.device)
        exponential = (-torch.log(uniform.clamp(min=1e-20))).clamp(min=1e-20)
        tokens = (scores - torch.log(exponential)).argmax(-1)
    chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    probs = (chosen - torch.logsumexp(logits, dim=-1)).exp()
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
                  stage=None, phase="decode", rescore_fn=None, rescore_weight=0.0):
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
        logits = _check_logits(output["logits"], tokens, mask_id)
        temp = temperature(info) if callable(temperature) else temperature
        # sample the masked positions only (the others keep their tokens)
        sampled, prob = tokens.clone(), torch.zeros_like(token_prob)
        sampled[masked], prob[masked] = sample_logits(logits[masked], temp, top_k, generator)
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
                     rescore_fn=None, rescore_weight=0.0):
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
        over its conditioning (e.g. the noisy speech).
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
               "rescore_weight": rescore_weight}
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
