"""Decoding of discrete audio tokens from a token model.

- :func:`sample_logits`: temperature / top-k sampling of one token per
  position, with the model's probability of the chosen token;
- :func:`iterative_decode`: MaskGIT-style iterative parallel decoding, with
  confidence-based (MaskGIT) or scarcity-aware coarse-to-fine (MAGE)
  commitment order and an optional corrector pass that re-masks and
  re-generates the least reliable tokens.

Masks, schedules and token rarities come from :mod:`speechbrain_gense.masking`.
"""

import math

import torch

from speechbrain_gense.masking import (
    apply_mask,
    mask_ratio,
    rand_uniform,
    select_remask,
    select_top,
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


def _decode_steps(predict_fn, tokens, masked, token_prob, mask_id, steps, schedule,
                  strategy, freq, scarcity_weight, temperature, top_k, generator):
    """Runs ``steps`` decoding steps in place of ``masked`` positions.

    Returns the updated ``(tokens, token_prob, last_output)``.
    """
    B = tokens.shape[0]
    n_init = masked.reshape(B, -1).sum(1)
    output = None
    for s in range(1, steps + 1):
        output = predict_fn(apply_mask(tokens, masked, mask_id))
        logits = output["logits"]
        if logits.shape[:-1] != tokens.shape:
            raise ValueError(
                f"predict_fn returned logits {tuple(logits.shape)} for tokens {tuple(tokens.shape)}"
            )
        logits = logits.to(tokens.device).float()
        if 0 <= mask_id < logits.shape[-1]:
            # a model that also predicts the mask token must never commit it
            logits = logits.clone()
            logits[..., mask_id] = -math.inf
        # sample the masked positions only (the others keep their tokens)
        sampled, prob = tokens.clone(), torch.zeros_like(token_prob)
        sampled[masked], prob[masked] = sample_logits(logits[masked], temperature, top_k,
                                                      generator)
        priority = torch.log(prob.double())
        if strategy == "ctf" and scarcity_weight:
            priority = priority - scarcity_weight * freq.rarity(sampled).double()
        # positions still masked after this step: floor(ratio(s/S) * n_init)
        ratio = mask_ratio(s / steps, schedule) if s < steps else 0.0
        n_keep = torch.floor(n_init.double() * ratio + 1e-6).long()
        n_commit = (masked.reshape(B, -1).sum(1) - n_keep).clamp(min=0)
        commit = select_top(priority, masked, n_commit)
        tokens = torch.where(commit, sampled, tokens)
        token_prob = torch.where(commit, prob, token_prob)
        masked = masked & ~commit
    return tokens, token_prob, output


def iterative_decode(predict_fn, shape, lens, mask_id, steps=8, schedule="cosine",
                     strategy="ctf", freq=None, scarcity_weight=1.0, temperature=1.0,
                     top_k=None, generator=None, init_tokens=None, init_mask=None,
                     corrector_fn=None, remask_ratio=None, remask_threshold=None,
                     corrector_steps=None):
    """Iterative parallel decoding of masked tokens (MaskGIT / MAGE).

    Decoding starts with every valid position masked (or from
    ``init_tokens`` with ``init_mask``). At step ``s = 1 .. S`` the model
    predicts every position; a token is sampled at each masked position
    (:func:`sample_logits`) with its probability ``p``. Of the ``n_init``
    positions masked at the start, ``floor(mask_ratio(s / S) * n_init)``
    stay masked after step ``s`` (none after the last step); the other
    masked positions are committed in decreasing order of priority
    (ties by lower position index):

    - ``"confidence"`` (MaskGIT): ``log p``;
    - ``"ctf"`` (scarcity-aware coarse-to-fine, MAGE):
      ``log p - scarcity_weight * rarity(token)``, with the rarity of
      ``freq``: frequent tokens are committed in early steps and rare ones
      in later refinements, the order used for ``"ctf"`` training masks.

    Given tokens (``init_tokens`` outside ``init_mask``) never change.
    Committed tokens never change either, except through the corrector: when
    ``corrector_fn`` is given, the model is run once more on the finished
    tokens, the corrector scores them from the model's hidden states, the
    least reliable positions are re-masked
    (:func:`~speechbrain_gense.masking.select_remask` with ``remask_ratio``
    and/or ``remask_threshold``) and ``corrector_steps`` more steps of the
    same procedure re-generate them.

    Padded positions are 0 in the input of ``predict_fn`` and the output,
    and never change.

    Arguments
    ---------
    predict_fn : callable
        ``predict_fn(tokens LongTensor[B, T, K]) -> dict`` with ``"logits"``
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
    strategy : str
        ``"ctf"`` or ``"confidence"``.
    freq : TokenFrequency, optional
        Token frequencies, required by ``"ctf"`` (unless
        ``scarcity_weight = 0``).
    scarcity_weight : float
        Weight of the rarity in the ``"ctf"`` priority.
    temperature : float
        Sampling temperature (0 = argmax).
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
        Steps of the corrector pass; default ``max(1, steps // 2)``.

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
        ``steps``: number of ``predict_fn`` calls (``steps``, plus
        ``1 + corrector_steps`` with a corrector).

    Example
    -------
    >>> target = torch.tensor([[[3], [1], [2], [0]]])
    >>> def predict_fn(tokens):
    ...     return {"logits": 10.0 * torch.nn.functional.one_hot(target, 4).float()}
    >>> out = iterative_decode(predict_fn, (1, 4, 1), torch.tensor([1.0]), mask_id=4,
    ...                        steps=3, strategy="confidence")
    >>> out["tokens"][..., 0].tolist(), out["steps"], out["confidence"].shape
    ([[3, 1, 2, 0]], 3, torch.Size([1, 4]))
    """
    B, T, K = (int(d) for d in shape)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if strategy not in ("ctf", "confidence"):
        raise ValueError(f'unknown strategy {strategy!r}; expected "ctf" or "confidence"')
    if strategy == "ctf" and scarcity_weight and freq is None:
        raise ValueError('strategy "ctf" needs a TokenFrequency (freq)')
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

    options = {"mask_id": mask_id, "schedule": schedule, "strategy": strategy, "freq": freq,
               "scarcity_weight": scarcity_weight, "temperature": temperature,
               "top_k": top_k, "generator": generator}
    tokens, token_prob, _ = _decode_steps(predict_fn, tokens, masked, token_prob,
                                          steps=steps, **options)
    calls = steps
    token_confidence = token_prob
    remasked = None

    if corrector_fn is not None:
        output = predict_fn(tokens)
        calls += 1
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
            corrector_steps = max(1, steps // 2)
        if corrector_steps < 1:
            raise ValueError(f"corrector_steps must be >= 1, got {corrector_steps}")
        tokens, token_prob, _ = _decode_steps(predict_fn, tokens, remasked, token_prob,
                                              steps=corrector_steps, **options)
        calls += corrector_steps
        token_confidence = conf

    return {
        "tokens": tokens,
        "confidence": token_confidence.mean(-1),
        "token_confidence": token_confidence,
        "token_prob": token_prob,
        "remasked": remasked,
        "steps": calls,
    }
