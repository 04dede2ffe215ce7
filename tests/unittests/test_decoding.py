"""Token sampling and iterative (MaskGIT / MAGE / MAGNeT) decoding (decoding.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from speechbrain_gense.decoding import (
    ClassifierFreeGuidance,
    DecodeStep,
    ScarcityPriority,
    inverse_cdf_sample,
    iterative_decode,
    sample_logits,
)
from speechbrain_gense.masking import (
    TokenFrequency,
    mask_ratio,
    sample_training_mask,
    select_top,
    select_top_spans,
    span_pool,
    valid_mask,
)

MASK = 99


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class Recorder:
    """A predict_fn returning fixed logits (optionally from a callable) and
    recording its inputs."""

    def __init__(self, logits, hidden_size=4):
        self.logits = logits
        self.hidden_size = hidden_size
        self.inputs = []

    def __call__(self, tokens):
        self.inputs.append(tokens.clone())
        logits = self.logits(len(self.inputs)) if callable(self.logits) else self.logits
        B, T = tokens.shape[:2]
        hidden = torch.full((B, T, self.hidden_size), float(len(self.inputs)))
        return {"logits": logits.clone(), "hidden": hidden}

    def masks(self):
        return [(x == MASK) for x in self.inputs]


def perfect(target, V, scale=30.0):
    return Recorder(scale * F.one_hot(target, V).float())


# --------------------------------------------------------------------------
# sample_logits
# --------------------------------------------------------------------------


def test_sample_logits_argmax_and_probs():
    logits = torch.randn(5, 7, 11, generator=gen(1))
    tokens, probs = sample_logits(logits, temperature=0.0)
    assert torch.equal(tokens, logits.argmax(-1))
    expected = logits.softmax(-1).gather(-1, tokens[..., None])[..., 0]
    assert torch.allclose(probs, expected)
    # top_k = 1 is the argmax whatever the temperature
    tokens1, probs1 = sample_logits(logits, temperature=1.0, top_k=1, generator=gen(2))
    assert torch.equal(tokens1, tokens) and torch.allclose(probs1, probs)


def test_sample_logits_follows_tempered_distribution():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    n = 20000
    for temperature in (1.0, 2.0, 0.5):
        tokens, probs = sample_logits(logits.expand(n, 4), temperature, generator=gen(3))
        freq = torch.bincount(tokens, minlength=4).float() / n
        expected = (logits / temperature).softmax(-1)
        assert torch.allclose(freq, expected, atol=0.015), (temperature, freq, expected)
        # probs are the untempered model probabilities of the chosen tokens
        assert torch.allclose(probs, logits.softmax(-1)[tokens])


def test_sample_logits_top_k_restricts_support():
    logits = torch.tensor([3.0, 0.0, 2.9, 1.0, 2.8])
    tokens, _ = sample_logits(logits.expand(5000, 5), 5.0, top_k=3, generator=gen(4))
    assert set(tokens.tolist()) == {0, 2, 4}
    with pytest.raises(ValueError):
        sample_logits(logits, -1.0)


def test_sample_logits_reproducible_with_generator():
    logits = torch.zeros(100, 16)
    a, _ = sample_logits(logits, generator=gen(5))
    b, _ = sample_logits(logits, generator=gen(5))
    c, _ = sample_logits(logits, generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def chi_square_p(tokens, probs):
    """p-value of the counts of ``tokens`` against ``probs`` (bins of expected count < 5 pooled)."""
    from scipy.stats import chi2

    n = tokens.numel()
    observed = torch.bincount(tokens.reshape(-1), minlength=probs.numel()).double()
    expected = probs.double() * n
    small = expected < 5
    obs = torch.cat([observed[~small], observed[small].sum().reshape(1)])
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    stat = float(((obs - exp) ** 2 / exp).sum())
    return float(chi2.sf(stat, obs.numel() - 1))


@pytest.mark.parametrize("V", [7, 300])  # one block; three blocks, the last padded
def test_cdf_sampler_follows_the_softmax_chi_square(V):
    logits = 2.0 * torch.randn(V, generator=gen(10))
    logits[3] = -math.inf  # never drawn
    n = 200_000
    for sampler in ("cdf", "gumbel"):
        tokens, _ = sample_logits(logits.expand(n, V), generator=gen(11), sampler=sampler)
        assert not (tokens == 3).any()
        assert chi_square_p(tokens, logits.softmax(-1)) > 1e-3, sampler
    # the test has power: a slightly tempered distribution is rejected
    tokens, _ = sample_logits(logits.expand(n, V), 1.1, generator=gen(11), sampler="cdf")
    assert chi_square_p(tokens, logits.softmax(-1)) < 1e-6


def test_cdf_sampler_keeps_the_sample_logits_contract():
    logits = torch.tensor([0.0, 1.0, 2.0, -1.0])
    n = 50_000
    for temperature in (2.0, 0.5):
        tokens, probs = sample_logits(logits.expand(n, 4), temperature, generator=gen(12),
                                      sampler="cdf")
        freq = torch.bincount(tokens, minlength=4).float() / n
        assert torch.allclose(freq, (logits / temperature).softmax(-1), atol=0.01)
        assert torch.allclose(probs, logits.softmax(-1)[tokens])  # untempered probabilities
    tokens, probs = sample_logits(logits.expand(n, 4), generator=gen(12), sampler="cdf")
    assert torch.allclose(probs, logits.softmax(-1)[tokens])  # normaliser reused at T = 1
    top = torch.tensor([3.0, 0.0, 2.9, 1.0, 2.8])
    tokens, _ = sample_logits(top.expand(5000, 5), 5.0, top_k=3, generator=gen(13), sampler="cdf")
    assert set(tokens.tolist()) == {0, 2, 4}
    x = torch.randn(5, 7, 11, generator=gen(14))
    for kw in ({"temperature": 0.0}, {"top_k": 1}):
        assert torch.equal(sample_logits(x, sampler="cdf", **kw)[0], x.argmax(-1))
    a = sample_logits(torch.zeros(100, 16), generator=gen(5), sampler="cdf")[0]
    b = sample_logits(torch.zeros(100, 16), generator=gen(5), sampler="cdf")[0]
    c = sample_logits(torch.zeros(100, 16), generator=gen(6), sampler="cdf")[0]
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (100,)
    with pytest.raises(ValueError, match="unknown sampler 'exact'"):
        sample_logits(x, sampler="exact")


def test_inverse_cdf_never_draws_zero_weight_tokens_at_the_edges():
    # the only finite scores at the first and the last id of a 256-code (2-block)
    # vocabulary, and a row whose mass is all in one block
    V = 256
    scores = torch.full((4, V), -math.inf)
    scores[0, 0] = 0.0
    scores[1, V - 1] = 0.0
    scores[2, 130] = scores[2, 140] = 1.0
    scores[3, :] = -1e4
    scores[3, 5] = 0.0
    tokens = inverse_cdf_sample(scores.repeat(500, 1), gen(15)).view(500, 4)
    assert (tokens[:, 0] == 0).all() and (tokens[:, 1] == V - 1).all()
    assert set(tokens[:, 2].tolist()) == {130, 140} and (tokens[:, 3] == 5).all()
    assert inverse_cdf_sample(torch.randn(3, 2, 9), gen(16)).shape == (3, 2)


def test_inverse_cdf_uniform_at_one_gives_the_last_token_of_positive_weight(monkeypatch):
    # u * total can round up to total: never an id past the vocabulary or of weight 0
    scores = torch.randn(3, 300, generator=gen(17))
    scores[:, 250:] = -math.inf  # the last block and the end of the one before: weight 0
    scores[2, 100:] = -math.inf
    rand = torch.rand
    monkeypatch.setattr(torch, "rand", lambda *a, **kw: torch.ones(rand(*a, **kw).shape,
                                                                   dtype=torch.float64))
    assert inverse_cdf_sample(scores).tolist() == [249, 249, 99]


def test_iterative_decode_cdf_sampler_and_packed_logits():
    B, T, V = 2, 12, 16
    target = torch.randint(0, V, (B, T, 1), generator=gen(20))
    full = perfect(target, V)

    def packed(tokens):
        out = full(tokens)
        return {"masked_logits": out["logits"][tokens == MASK], "hidden": out["hidden"]}

    lens = torch.tensor([1.0, 0.5])
    for sampler in ("gumbel", "cdf"):
        a = iterative_decode(full, (B, T, 1), lens, MASK, steps=4, generator=gen(21),
                             strategy="confidence", sampler=sampler)
        b = iterative_decode(packed, (B, T, 1), lens, MASK, steps=4, generator=gen(21),
                             strategy="confidence", sampler=sampler)
        assert torch.equal(a["tokens"], b["tokens"])
        assert torch.equal(a["token_prob"], b["token_prob"])
        valid = valid_mask(lens, T, 1)
        assert torch.equal(a["tokens"][valid], target[valid])
    noisy = Recorder(lambda i: torch.randn(B, T, 1, V, generator=gen(22 + i)))

    def noisy_packed(tokens):
        out = noisy(tokens)
        return {"masked_logits": out["logits"][tokens == MASK], "hidden": out["hidden"]}

    a = iterative_decode(noisy, (B, T, 1), lens, MASK, steps=3, generator=gen(23),
                         strategy="confidence", sampler="cdf")
    noisy.inputs.clear()
    b = iterative_decode(noisy_packed, (B, T, 1), lens, MASK, steps=3, generator=gen(23),
                         strategy="confidence", sampler="cdf")
    assert torch.equal(a["tokens"], b["tokens"])
    with pytest.raises(ValueError, match="masked_logits"):
        iterative_decode(lambda t: {"masked_logits": torch.zeros(1, V)}, (B, T, 1), lens, MASK,
                         strategy="confidence")
    with pytest.raises(ValueError, match="unknown sampler"):
        iterative_decode(full, (B, T, 1), lens, MASK, strategy="confidence", sampler="Gumbel")


# --------------------------------------------------------------------------
# iterative_decode
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["confidence", "ctf"])
@pytest.mark.parametrize("steps", [1, 3, 8, 25])
@pytest.mark.parametrize("K", [1, 3])
def test_perfect_predictor_reconstructs(strategy, steps, K):
    B, T, V = 3, 10, 16
    target = torch.randint(0, V, (B, T, K), generator=gen(steps * K))
    lens = torch.tensor([1.0, 0.6, 0.25])
    valid = valid_mask(lens, T, K)
    freq = TokenFrequency(torch.randint(0, 50, (V,), generator=gen(1)))
    predict = perfect(target, V)
    out = iterative_decode(predict, (B, T, K), lens, MASK, steps=steps, strategy=strategy,
                           freq=freq, generator=gen(2))
    assert out["tokens"].shape == (B, T, K) and out["tokens"].dtype == torch.long
    assert torch.equal(out["tokens"][valid], target[valid])
    assert (out["tokens"][~valid] == 0).all()
    assert out["steps"] == steps == len(predict.inputs)
    assert out["confidence"].shape == (B, T) and out["token_confidence"].shape == (B, T, K)
    assert out["remasked"] is None
    # the confidence is the probability of the chosen token (~1), 0 on padding
    assert (out["token_confidence"][valid] > 0.99).all()
    assert (out["token_confidence"][~valid] == 0).all()
    assert torch.allclose(out["confidence"], out["token_confidence"].mean(-1))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square"])
def test_number_masked_per_step_follows_schedule(schedule):
    B, T, K, V, S = 2, 9, 2, 8, 5
    target = torch.randint(0, V, (B, T, K), generator=gen(3))
    lens = torch.tensor([1.0, 5 / 9])
    predict = perfect(target, V)
    iterative_decode(predict, (B, T, K), lens, MASK, steps=S, schedule=schedule,
                     strategy="confidence", generator=gen())
    valid = valid_mask(lens, T, K)
    n_init = valid.sum((1, 2))
    for s, masked in enumerate(predict.masks()):  # input of step s + 1
        expected = torch.floor(mask_ratio(s / S, schedule) * n_init.double() + 1e-9).long()
        assert masked.sum((1, 2)).tolist() == expected.tolist()
        assert not (masked & ~valid).any()
        assert (predict.inputs[s][~valid] == 0).all()  # padding is fed as 0
    # the masks only shrink: committed tokens are never re-masked
    masks = predict.masks()
    for before, after in zip(masks[:-1], masks[1:]):
        assert not (after & ~before).any()


def commit_steps(predict):
    """Step (1-based) at which each position was committed, from the input masks."""
    masks = predict.masks() + [torch.zeros_like(predict.masks()[0])]
    step = torch.zeros(masks[0].shape, dtype=torch.long)
    for s in range(len(masks) - 1):
        step[masks[s] & ~masks[s + 1]] = s + 1
    return step


def test_ctf_commits_frequent_tokens_first():
    V, T, S = 8, 8, 4
    # token v has count 100 - 10 v: rarity increases with the id
    freq = TokenFrequency(100 - 10 * torch.arange(V))
    target = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])[None, :, None]
    predict = perfect(target, V, scale=10.0)  # same probability everywhere
    out = iterative_decode(predict, (1, T, 1), None, MASK, steps=S, strategy="ctf",
                           freq=freq, temperature=0.0)
    assert torch.equal(out["tokens"], target)
    # committed per step: 8 - floor(cos(pi/8) 8) = 1, then 7 - 5 = 2, 5 - 3 = 2, 3
    step = commit_steps(predict)[0, :, 0]
    by_token = step[target[0, :, 0].argsort()].tolist()  # commit step of token 0, 1, ..., 7
    assert by_token == [1, 2, 2, 3, 3, 4, 4, 4]


def test_confidence_commits_most_probable_first_and_ctf_weight_trades_off():
    V, T, S = 4, 6, 3
    target = torch.tensor([0, 1, 2, 3, 0, 1])[None, :, None]
    # decreasing confidence along time
    scale = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])[None, :, None, None]
    logits = scale * F.one_hot(target, V).float()
    freq = TokenFrequency(torch.tensor([1, 10, 100, 1000]))  # token 3 most frequent
    # cosine, n_init 6: keep floor(cos(pi/6) 6) = 5, floor(cos(pi/3) 6) = 3, 0
    predict = Recorder(logits)
    iterative_decode(predict, (1, T, 1), None, MASK, steps=S, strategy="confidence",
                     temperature=0.0)
    assert commit_steps(predict)[0, :, 0].tolist() == [1, 2, 2, 3, 3, 3]
    # a zero scarcity weight is the confidence order
    predict = Recorder(logits)
    iterative_decode(predict, (1, T, 1), None, MASK, steps=S, strategy="ctf", freq=freq,
                     scarcity_weight=0.0, temperature=0.0)
    assert commit_steps(predict)[0, :, 0].tolist() == [1, 2, 2, 3, 3, 3]
    # a large weight follows the frequency table (3, then 2, then 1 and 0)
    predict = Recorder(logits)
    iterative_decode(predict, (1, T, 1), None, MASK, steps=S, strategy="ctf", freq=freq,
                     scarcity_weight=100.0, temperature=0.0)
    # (token 1 at t=1 is more probable than token 1 at t=5)
    assert commit_steps(predict)[0, :, 0].tolist() == [3, 2, 2, 1, 3, 3]


def test_ties_committed_by_lower_position():
    target = torch.zeros(1, 6, 2, dtype=torch.long)
    predict = perfect(target, 3)
    iterative_decode(predict, (1, 6, 2), None, MASK, steps=2, schedule="linear",
                     strategy="confidence", temperature=0.0)
    # 12 positions, 6 committed at step 1: the first 6 in (t, k) order
    assert commit_steps(predict)[0].flatten().tolist() == [1] * 6 + [2] * 6


def test_seed_reproducibility():
    B, T, K, V = 2, 16, 2, 8
    logits = torch.randn(B, T, K, V, generator=gen(1))
    freq = TokenFrequency(torch.arange(V))

    def run(seed):
        return iterative_decode(Recorder(logits), (B, T, K), None, MASK, steps=4, freq=freq,
                                temperature=1.0, generator=gen(seed))["tokens"]

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_top_k_one_equals_argmax():
    B, T, K, V = 2, 12, 1, 10
    logits = torch.randn(B, T, K, V, generator=gen(2))
    freq = TokenFrequency(torch.arange(V))
    kwargs = {"steps": 4, "freq": freq}
    a = iterative_decode(Recorder(logits), (B, T, K), None, MASK, top_k=1, generator=gen(3), **kwargs)
    b = iterative_decode(Recorder(logits), (B, T, K), None, MASK, temperature=0.0, **kwargs)
    assert torch.equal(a["tokens"], logits.argmax(-1))
    assert torch.equal(a["tokens"], b["tokens"])
    assert torch.allclose(a["token_confidence"], logits.softmax(-1).amax(-1))


def test_mask_token_logit_is_never_committed():
    V = 5
    logits = torch.zeros(1, 4, 1, V + 1)
    logits[..., V] = 100.0  # the model's own mask-token logit
    logits[..., 2] = 5.0
    out = iterative_decode(Recorder(logits), (1, 4, 1), None, V, steps=2,
                           strategy="confidence", temperature=0.0)
    assert out["tokens"].flatten().tolist() == [2, 2, 2, 2]


def test_init_tokens_and_prefix_are_kept():
    B, T, K, V = 2, 8, 1, 6
    target = torch.randint(0, V, (B, T, K), generator=gen(4))
    prefix = torch.full((B, T, K), 5)
    init_mask = torch.zeros(B, T, dtype=torch.bool)
    init_mask[:, 3:] = True  # frames 0-2 are a given prefix
    lens = torch.tensor([1.0, 0.75])
    predict = perfect(target, V)
    out = iterative_decode(predict, (B, T, K), lens, MASK, steps=3, strategy="confidence",
                           init_tokens=prefix, init_mask=init_mask)
    valid = valid_mask(lens, T, K)
    assert (out["tokens"][:, :3] == 5).all()
    gen_pos = valid & init_mask[..., None]
    assert torch.equal(out["tokens"][gen_pos], target[gen_pos])
    assert (out["tokens"][~valid] == 0).all()
    # the first input masks exactly the positions to generate
    assert torch.equal(predict.masks()[0], gen_pos)
    # given tokens have confidence 1
    assert (out["token_confidence"][:, :3] == 1).all()


def test_corrector_remasks_lowest_confidence_and_regenerates():
    B, T, K, V, S = 2, 10, 2, 8, 4
    first = torch.randint(0, V, (B, T, K), generator=gen(5))
    second = (first + 1) % V
    lens = torch.tensor([1.0, 0.5])
    valid = valid_mask(lens, T, K)
    # main pass and corrector scoring predict `first`, the re-pass `second`
    predict = Recorder(lambda call: 30.0 * F.one_hot(first if call <= S + 1 else second, V).float())
    conf = torch.rand(B, T, K, generator=gen(6))
    seen = {}

    def corrector_fn(hidden, tokens):
        seen["hidden"], seen["tokens"] = hidden.clone(), tokens.clone()
        return conf

    out = iterative_decode(predict, (B, T, K), lens, MASK, steps=S, strategy="confidence",
                           corrector_fn=corrector_fn, remask_ratio=0.3, corrector_steps=3,
                           generator=gen())
    assert out["steps"] == len(predict.inputs) == S + 1 + 3
    # the corrector saw the hidden states of the finished (unmasked) main-pass tokens
    assert torch.equal(predict.inputs[S], seen["tokens"])
    assert not (predict.inputs[S] == MASK).any()
    assert (seen["hidden"] == S + 1).all()
    assert torch.equal(seen["tokens"][valid], first[valid])
    # exactly floor(0.3 n_valid) lowest-confidence valid positions are re-masked
    expected = torch.zeros(B, T, K, dtype=torch.bool)
    for b in range(B):
        n_valid = int(valid[b].sum())
        idx = conf[b].masked_fill(~valid[b], math.inf).flatten().argsort()[: int(0.3 * n_valid)]
        expected[b].view(-1)[idx] = True
    assert torch.equal(out["remasked"], expected)
    assert torch.equal(predict.masks()[S + 1], expected)  # first input of the re-pass
    # re-masked positions are re-generated, the others are kept
    assert torch.equal(out["tokens"][expected], second[expected])
    keep = valid & ~expected
    assert torch.equal(out["tokens"][keep], first[keep])
    assert (out["tokens"][~valid] == 0).all()
    # the returned confidence is the corrector's
    assert torch.equal(out["token_confidence"][valid], conf[valid])
    assert torch.allclose(out["confidence"], out["token_confidence"].mean(-1))


def test_corrector_never_remasks_given_tokens():
    """Carried context (init_tokens outside init_mask) survives the corrector,
    even when the corrector trusts it least."""
    B, T, K, V, S = 1, 10, 1, 6, 3
    target = torch.randint(0, V, (B, T, K), generator=gen(7))
    given = torch.full((B, T, K), 5)
    init_mask = torch.zeros(B, T, dtype=torch.bool)
    init_mask[:, 4:] = True  # frames 0-3 are carried context
    conf = torch.linspace(0.0, 0.9, T)[None, :, None]  # lowest on the given frames
    out = iterative_decode(perfect(target, V), (B, T, K), None, MASK, steps=S,
                           strategy="confidence", init_tokens=given, init_mask=init_mask,
                           corrector_fn=lambda h, t: conf, remask_ratio=0.3)
    # floor(0.3 * 10) = 3 positions, the least trusted among the generated frames 4-9
    assert out["remasked"][0, :, 0].tolist() == [False] * 4 + [True] * 3 + [False] * 3
    assert (out["tokens"][:, :4] == 5).all()
    assert torch.equal(out["tokens"][:, 4:], target[:, 4:])
    out = iterative_decode(perfect(target, V), (B, T, K), None, MASK, steps=S,
                           strategy="confidence", init_tokens=given, init_mask=init_mask,
                           corrector_fn=lambda h, t: conf, remask_threshold=0.55)
    assert out["remasked"][0, :, 0].tolist() == [False] * 4 + [True] * 2 + [False] * 4


def test_corrector_threshold_and_default_steps():
    B, T, K, V, S = 1, 6, 1, 4, 5
    target = torch.tensor([[[0], [1], [2], [3], [0], [1]]])
    predict = perfect(target, V)
    conf = torch.tensor([[0.9, 0.2, 0.95, 0.1, 0.5, 0.6]])  # [B, T] accepted
    out = iterative_decode(predict, (B, T, K), None, MASK, steps=S, strategy="confidence",
                           corrector_fn=lambda h, t: conf, remask_threshold=0.55)
    assert out["remasked"][0, :, 0].tolist() == [False, True, False, True, True, False]
    assert out["steps"] == S + 1 + max(1, S // 2)
    assert torch.equal(out["tokens"], target)
    with pytest.raises(ValueError, match="remask"):
        iterative_decode(predict, (B, T, K), None, MASK, strategy="confidence",
                         corrector_fn=lambda h, t: conf)


def test_errors():
    predict = perfect(torch.zeros(1, 3, 1, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="freq"):
        iterative_decode(predict, (1, 3, 1), None, MASK, strategy="ctf")
    with pytest.raises(ValueError, match="strategy"):
        iterative_decode(predict, (1, 3, 1), None, MASK, strategy="random", freq=None)
    with pytest.raises(ValueError, match="logits"):
        iterative_decode(predict, (1, 4, 1), None, MASK, strategy="confidence")


# --------------------------------------------------------------------------
# Extension points: step-aware predict_fn, priorities, spans, stages,
# guidance, rescoring
# --------------------------------------------------------------------------


class StepRecorder(Recorder):
    """A step-aware Recorder: also records the DecodeStep of each call."""

    def __init__(self, logits, hidden_size=4):
        super().__init__(logits, hidden_size)
        self.infos = []

    def __call__(self, tokens, step_info):
        self.infos.append(step_info)
        return super().__call__(tokens)


def test_step_aware_predict_fn_gets_step_and_ratio():
    B, T, K, V, S = 2, 12, 2, 8, 5
    target = torch.randint(0, V, (B, T, K), generator=gen(11))
    lens = torch.tensor([1.0, 0.5])
    conf = torch.rand(B, T, K, generator=gen(12))
    predict = StepRecorder(30.0 * F.one_hot(target, V).float())
    out = iterative_decode(predict, (B, T, K), lens, MASK, steps=S, strategy="confidence",
                           generator=gen(), corrector_fn=lambda h, t: conf,
                           remask_ratio=0.25, corrector_steps=2)
    infos = predict.infos
    assert [i.step for i in infos] == [1, 2, 3, 4, 5, 0, 1, 2]
    assert [i.steps for i in infos] == [S] * S + [0, 2, 2]
    assert [i.phase for i in infos] == ["decode"] * S + ["score"] + ["correct"] * 2
    assert [i.call for i in infos] == list(range(S + 3))
    assert all(i.stage is None for i in infos)
    for s, info in enumerate(infos[:S]):  # the ratio is the masked fraction of the input
        assert info.ratio == pytest.approx(mask_ratio(s / S))
        n_init = valid_mask(lens, T, K).sum((1, 2)).double()
        assert predict.masks()[s].sum((1, 2)).tolist() == \
            torch.floor(info.ratio * n_init + 1e-6).long().tolist()
    assert infos[S].ratio == 0.0 and infos[S + 1].ratio == 1.0
    # the same logits through a plain predict_fn give the same decode
    plain = Recorder(30.0 * F.one_hot(target, V).float())
    ref = iterative_decode(plain, (B, T, K), lens, MASK, steps=S, strategy="confidence",
                           generator=gen(), corrector_fn=lambda h, t: conf,
                           remask_ratio=0.25, corrector_steps=2)
    assert torch.equal(out["tokens"], ref["tokens"]) and out["steps"] == ref["steps"] == S + 3


def test_kwargs_predict_fn_is_step_aware():
    seen = []

    def predict(tokens, **kw):
        seen.append(kw["step_info"].step)
        return {"logits": torch.zeros(*tokens.shape, 4)}

    iterative_decode(predict, (1, 4, 1), None, MASK, steps=3, strategy="confidence")
    assert seen == [1, 2, 3]


def test_temperature_schedule_callable():
    """A temperature of 0 from step 2 on commits the argmax there."""
    B, T, V, S = 1, 40, 6, 4
    logits = torch.randn(B, T, 1, V, generator=gen(13))
    temps = []

    def temperature(info):
        temps.append(info.step)
        return 50.0 if info.step == 1 else 0.0

    predict = Recorder(logits)
    out = iterative_decode(predict, (B, T, 1), None, MASK, steps=S, strategy="confidence",
                           temperature=temperature, generator=gen(1))
    assert temps == [1, 2, 3, 4]
    later = commit_steps(predict) > 1
    assert torch.equal(out["tokens"][later], logits.argmax(-1)[later])


def test_callable_priority_orders_commits():
    """A priority of minus the frame index commits left to right."""
    B, T, K, V, S = 1, 8, 1, 5, 4
    target = torch.randint(0, V, (B, T, K), generator=gen(14))
    calls = []

    def left_to_right(log_prob, tokens, step_info):
        calls.append((log_prob.clone(), tokens.clone(), step_info.step))
        return -torch.arange(T, dtype=torch.float64)[None, :, None].expand(B, T, K)

    predict = perfect(target, V, scale=5.0)
    out = iterative_decode(predict, (B, T, K), None, MASK, steps=S, strategy=left_to_right,
                           temperature=0.0)
    assert torch.equal(out["tokens"], target)
    # commits per step (cosine, n = 8): 1, 2, 2, 3, in time order
    assert commit_steps(predict)[0, :, 0].tolist() == [1, 2, 2, 3, 3, 4, 4, 4]
    log_prob, tokens, step = calls[0]
    assert step == 1 and torch.equal(tokens, target)
    expected = torch.log_softmax(5.0 * F.one_hot(target, V).double(), -1).amax(-1)
    assert torch.allclose(log_prob, expected)


def test_scarcity_priority_callable_equals_ctf():
    B, T, K, V = 2, 16, 2, 8
    logits = torch.randn(B, T, K, V, generator=gen(15))
    freq = TokenFrequency(torch.randint(0, 90, (V,), generator=gen(16)))
    a = iterative_decode(Recorder(logits), (B, T, K), None, MASK, steps=5, strategy="ctf",
                         freq=freq, scarcity_weight=2.0, generator=gen(3))
    b = iterative_decode(Recorder(logits), (B, T, K), None, MASK, steps=5,
                         strategy=ScarcityPriority(freq, 2.0), generator=gen(3))
    assert torch.equal(a["tokens"], b["tokens"])


def test_select_top_spans_values():
    scores = torch.randn(3, 11, 2, generator=gen(17)).double()
    cand = torch.rand(3, 11, 2, generator=gen(18)) < 0.7
    n = torch.tensor([3, 0, 30])
    # span 1 is select_top
    assert torch.equal(select_top_spans(scores, cand, n, 1), select_top(scores, cand, n))
    # spans of 3 frames per codebook, mean of the candidates' scores
    pooled, span_cand = span_pool(scores, cand, 3)
    assert pooled.shape == (3, 4, 2)
    for b, j, k in [(0, 0, 0), (1, 2, 1), (2, 3, 0)]:
        c = cand[b, 3 * j: 3 * j + 3, k]
        if c.any():
            assert pooled[b, j, k] == pytest.approx(float(scores[b, 3 * j: 3 * j + 3, k][c].mean()))
        else:
            assert not span_cand[b, j, k]
    chosen = select_top_spans(scores, cand, n, 3)
    assert not (chosen & ~cand).any()
    # each span is taken whole or not at all, and n spans per utterance
    spans = torch.nn.functional.pad(chosen, (0, 0, 0, 1)).reshape(3, 4, 3, 2)
    c4 = torch.nn.functional.pad(cand, (0, 0, 0, 1)).reshape(3, 4, 3, 2)
    taken = spans.any(2)
    assert torch.equal(spans, taken[:, :, None] & c4)
    assert taken.reshape(3, -1).sum(1).tolist() == [3, 0, int(span_cand[2].sum())]
    with pytest.raises(ValueError, match="span"):
        select_top_spans(scores, cand, n, 0)
    with pytest.raises(ValueError, match="span score"):
        span_pool(scores, cand, 2, "median")


def test_span_training_mask_uses_the_same_spans():
    """Training span masks (masking.sample_training_mask) mask whole spans of the
    decoder's span grid, ceil(r * n_spans) of them, never padding."""
    B, T, K = 4, 13, 2
    tokens = torch.randint(0, 8, (B, T, K), generator=gen(24))
    lens = torch.tensor([1.0, 10 / 13, 5 / 13, 1 / 13])
    valid = valid_mask(lens, T, K)
    ratio = torch.tensor([0.3, 0.5, 1.0, 0.01])
    mask, r = sample_training_mask(tokens, lens, ratio=ratio, span=3, generator=gen(25))
    assert torch.equal(r, ratio)
    assert not (mask & ~valid).any()
    grid = torch.nn.functional.pad(mask, (0, 0, 0, 2)).reshape(B, 5, 3, K)
    vgrid = torch.nn.functional.pad(valid, (0, 0, 0, 2)).reshape(B, 5, 3, K)
    taken = grid.any(2)
    assert torch.equal(grid, taken[:, :, None] & vgrid)  # whole spans
    n_spans = vgrid.any(2).reshape(B, -1).sum(1).double()  # 10, 8, 4, 2
    assert n_spans.tolist() == [10, 8, 4, 2]
    expected = torch.ceil(ratio.double() * n_spans - 1e-6).clamp(min=1).long()
    assert taken.reshape(B, -1).sum(1).tolist() == expected.tolist() == [3, 4, 4, 1]
    # span = 1 is the position-level mask
    a, _ = sample_training_mask(tokens, lens, ratio=ratio, span=1, generator=gen(26))
    b, _ = sample_training_mask(tokens, lens, ratio=ratio, generator=gen(26))
    assert torch.equal(a, b)


def test_span_commit_mean_and_max():
    """Spans of 2 frames are committed whole, by mean or max log-probability."""
    T, V, S = 6, 4, 3
    target = torch.tensor([0, 1, 2, 3, 0, 1])[None, :, None]
    # spans (0,1), (2,3), (4,5): per-frame confidences; mean ranks span 1 > 0 > 2,
    # max ranks span 0 > 2 > 1
    scale = torch.tensor([9.0, 1.0, 4.5, 4.5, 8.0, 0.5])[None, :, None, None]
    logits = scale * F.one_hot(target, V).float()
    for span_score, order in (("mean", [2, 1, 3]), ("max", [1, 3, 2])):
        predict = Recorder(logits)
        out = iterative_decode(predict, (1, T, 1), None, MASK, steps=S, strategy="span",
                               span=2, span_score=span_score, temperature=0.0)
        assert torch.equal(out["tokens"], target)
        # cosine over 3 spans: keep floor(cos(pi/6) 3) = 2, floor(cos(pi/3) 3) = 1, 0
        steps = commit_steps(predict)[0, :, 0].tolist()
        assert steps == [order[0]] * 2 + [order[1]] * 2 + [order[2]] * 2, span_score


def test_span_strategy_defaults_to_three_frames_and_handles_padding():
    B, T, K, V, S = 3, 11, 2, 8, 4
    target = torch.randint(0, V, (B, T, K), generator=gen(19))
    lens = torch.tensor([1.0, 8 / 11, 4 / 11])
    valid = valid_mask(lens, T, K)
    predict = perfect(target, V)
    out = iterative_decode(predict, (B, T, K), lens, MASK, steps=S, strategy="span",
                           generator=gen())
    assert torch.equal(out["tokens"][valid], target[valid])
    assert (out["tokens"][~valid] == 0).all()
    step = commit_steps(predict)
    # frames 3j..3j+2 of a codebook share their commit step (where valid)
    for b in range(B):
        for k in range(K):
            for j in range(4):
                s = step[b, 3 * j: 3 * j + 3, k][valid[b, 3 * j: 3 * j + 3, k]]
                assert s.numel() == 0 or (s == s[0]).all()
    # spans per step follow the schedule: n_spans(b) = 2 * ceil(frames / 3)
    n_spans = torch.tensor([8, 6, 4]).double()
    for s, masked in enumerate(predict.masks()):
        spans = torch.nn.functional.pad(masked, (0, 0, 0, 1)).reshape(B, 4, 3, K).any(2)
        expected = torch.floor(mask_ratio(s / S) * n_spans + 1e-6).long()
        assert spans.reshape(B, -1).sum(1).tolist() == expected.tolist()


def test_stage_loop_over_codebooks():
    B, T, K, V = 2, 10, 3, 8
    stage_steps = [3, 2, 1]
    target = torch.randint(0, V, (B, T, K), generator=gen(20))
    lens = torch.tensor([1.0, 0.6])
    valid = valid_mask(lens, T, K)
    predict = StepRecorder(30.0 * F.one_hot(target, V).float())
    out = iterative_decode(predict, (B, T, K), lens, MASK, strategy="confidence",
                           stage_steps=stage_steps, steps=99, generator=gen())
    assert torch.equal(out["tokens"][valid], target[valid])
    assert out["steps"] == len(predict.inputs) == 6
    assert [(i.stage, i.step, i.steps) for i in predict.infos] == [
        (0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 2), (1, 2, 2), (2, 1, 1)]
    n_frames = valid[..., 0].sum(1).double()
    for x, info in zip(predict.inputs, predict.infos):
        k = info.stage
        m = x == MASK
        # later codebooks are fed masked, earlier ones fixed at their final tokens
        assert torch.equal(m[..., k + 1:], valid[..., k + 1:])
        assert torch.equal(x[..., :k][valid[..., :k]], out["tokens"][..., :k][valid[..., :k]])
        # this stage's mask follows its own schedule
        expected = torch.floor(mask_ratio((info.step - 1) / info.steps) * n_frames + 1e-6)
        assert m[..., k].sum(1).tolist() == expected.long().tolist()
    with pytest.raises(ValueError, match="stage_steps"):
        iterative_decode(predict, (B, T, K), lens, MASK, strategy="confidence",
                         stage_steps=[2, 2])


def test_stage_loop_with_spans_and_prefix():
    B, T, K, V = 1, 9, 2, 6
    target = torch.randint(0, V, (B, T, K), generator=gen(21))
    given = torch.full((B, T, K), 5)
    init_mask = torch.zeros(B, T, dtype=torch.bool)
    init_mask[:, 4:] = True
    out = iterative_decode(perfect(target, V), (B, T, K), None, MASK, strategy="span",
                           span=2, stage_steps=[2, 2], init_tokens=given,
                           init_mask=init_mask, generator=gen())
    assert (out["tokens"][:, :4] == 5).all()
    assert torch.equal(out["tokens"][:, 4:], target[:, 4:])


def test_classifier_free_guidance_one_batch_and_annealing():
    B, T, K, V, S = 2, 8, 1, 5, 4
    cond = torch.randn(B, T, K, V, generator=gen(22))
    null = torch.randn(B, T, K, V, generator=gen(23))
    batches = []

    def model_fn(tokens, condition):
        batches.append((tokens.clone(), condition["c"].clone()))
        return {"logits": condition["c"], "hidden": torch.arange(2 * B).float()[:, None, None]
                .expand(2 * B, T, 3)}

    cfg = ClassifierFreeGuidance(model_fn, {"c": cond}, {"c": null}, w_start=5.0, w_end=1.0)
    out = cfg(torch.zeros(B, T, K, dtype=torch.long), DecodeStep(step=2, steps=S, ratio=0.25))
    w = 1.0 + 4.0 * 0.25
    assert out["guidance"] == w
    assert torch.allclose(out["logits"], null + w * (cond - null))
    assert (out["hidden"][:, 0, 0] == torch.arange(B).float()).all()  # conditional half
    tokens, condition = batches[0]
    assert tokens.shape[0] == 2 * B and torch.equal(condition, torch.cat([cond, null]))
    assert torch.equal(cfg(tokens[:B])["logits"], null + 5.0 * (cond - null))  # no step info
    # inside iterative_decode: one call per step, coefficient annealed by the ratio
    batches.clear()
    coefs = []

    def model_fn2(tokens, condition):
        batches.append(tokens.clone())
        return {"logits": condition["c"]}

    class Spy(ClassifierFreeGuidance):
        def coefficient(self, step_info=None):
            coefs.append(super().coefficient(step_info))
            return coefs[-1]

    res = iterative_decode(Spy(model_fn2, {"c": cond}, {"c": null}, 5.0, 1.0), (B, T, K),
                           None, MASK, steps=S, strategy="confidence", temperature=0.0)
    assert res["steps"] == S and len(batches) == S
    assert all(x.shape[0] == 2 * B and torch.equal(x[:B], x[B:]) for x in batches)
    assert coefs == pytest.approx([1.0 + 4.0 * mask_ratio(s / S) for s in range(S)])
    # greedy on the guided logits of the step where each position was committed
    guided = [null + c * (cond - null) for c in coefs]
    masks = [x[:B] == MASK for x in batches] + [torch.zeros(B, T, K, dtype=torch.bool)]
    for s in range(S):
        committed = masks[s] & ~masks[s + 1]
        assert torch.equal(res["tokens"][committed], guided[s].argmax(-1)[committed])
    with pytest.raises(ValueError, match="differ in shape"):
        ClassifierFreeGuidance(model_fn, cond, null[:, :3])


def test_rescoring_changes_commit_order_not_probabilities():
    B, T, V, S = 1, 6, 4, 3
    target = torch.tensor([0, 1, 2, 3, 0, 1])[None, :, None]
    scale = torch.tensor([9.0, 8.0, 7.0, 6.0, 5.0, 4.0])[None, :, None, None]
    logits = scale * F.one_hot(target, V).float()
    # the rescorer trusts the last frames most
    rscale = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])[None, :, None, None]
    seen = []

    def rescore_fn(tokens, step_info):
        seen.append((tokens.clone(), step_info.step))
        return {"logits": rscale * F.one_hot(target, V).float()}

    def run(weight):
        predict = Recorder(logits)
        out = iterative_decode(predict, (B, T, 1), None, MASK, steps=S, strategy="confidence",
                               temperature=0.0, rescore_fn=rescore_fn, rescore_weight=weight)
        return commit_steps(predict)[0, :, 0].tolist(), out

    order0, out0 = run(0.0)
    assert order0 == [1, 2, 2, 3, 3, 3] and not seen  # weight 0: rescorer not called
    order1, out1 = run(1.0)
    assert order1 == [3, 3, 3, 2, 2, 1]
    assert [s for _, s in seen] == [1, 2, 3] and torch.equal(seen[0][0], target)
    # weight 0.5: priority 0.5 (log p + log p_r); equal sums tie -> lower position first
    seen.clear()
    lp = torch.log_softmax(logits.double(), -1).amax(-1)[0, :, 0]
    lr = torch.log_softmax((rscale * F.one_hot(target, V)).double(), -1).amax(-1)[0, :, 0]
    order_half, _ = run(0.5)
    rank = torch.sort(-(lp + lr), stable=True).indices.tolist()
    expected = [0] * T
    for r, t in enumerate(rank):
        expected[t] = 1 if r < 1 else 2 if r < 3 else 3
    assert order_half == expected
    # token probabilities stay the model's
    assert torch.allclose(out1["token_prob"], out0["token_prob"])
    with pytest.raises(ValueError, match="rescore_fn"):
        iterative_decode(Recorder(logits), (B, T, 1), None, MASK, strategy="confidence",
                         rescore_weight=0.5)


def test_extension_errors():
    predict = perfect(torch.zeros(1, 3, 2, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="span"):
        iterative_decode(predict, (1, 3, 2), None, MASK, strategy="confidence", span=0)
    with pytest.raises(ValueError, match="span_score"):
        iterative_decode(predict, (1, 3, 2), None, MASK, strategy="span", span_score="median")
    with pytest.raises(ValueError, match="rescore_weight"):
        iterative_decode(predict, (1, 3, 2), None, MASK, strategy="confidence",
                         rescore_fn=lambda t, i: None, rescore_weight=1.5)
    with pytest.raises(ValueError, match="stage_steps"):
        iterative_decode(predict, (1, 3, 2), None, MASK, strategy="confidence",
                         stage_steps=[2, 0])
