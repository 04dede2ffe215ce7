"""Autoregressive decoding through transformers generate (decoding.ar_generate)."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from speechbrain_gense.decoding import (
    CodebookOrderLogitsProcessor,
    ExactLengthLogitsProcessor,
    TokenRangeLogitsProcessor,
    ar_generate,
)

V, PAD, EOS = 40, 0, 2


def tiny_gpt2(seed=0, vocab=V, n_layer=2, n_embd=32):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=128, n_embd=n_embd, n_layer=n_layer,
                        n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=1, eos_token_id=EOS)
    return GPT2LMHeadModel(config).eval()


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=128, rope_theta=1e5)
    return LlamaForCausalLM(config).eval()


def tiny_qwen2(seed=0):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=128)
    return Qwen2ForCausalLM(config).eval()


def batch():
    """Three right-padded prompts of different lengths."""
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([5, 2, 7])
    prompt = torch.randint(3, V, (3, 7), generator=g)
    prompt[torch.arange(7)[None, :] >= lens[:, None]] = PAD
    return prompt, lens


def lookup_model(targets, n_positions=48):
    """A GPT-2 whose logits at absolute position p are a one-hot lookup of
    ``targets[p + 1]``: attention and MLP outputs are zero, token embeddings
    are zero and position p has the one-hot embedding e_p."""
    n_embd = n_positions
    config = GPT2Config(vocab_size=V, n_positions=n_positions, n_embd=n_embd, n_layer=2,
                        n_head=2, tie_word_embeddings=False, bos_token_id=1, eos_token_id=EOS)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for block in model.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
        model.transformer.wte.weight.zero_()
        model.transformer.wpe.weight.copy_(torch.eye(n_positions))
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.ln_f.bias.zero_()
        head = torch.zeros(V, n_embd)
        for p in range(n_positions - 1):
            head[targets[p + 1], p] = 20.0
        model.lm_head.weight.copy_(head)
    return model


def run_alone(model, prompt, lens, b, n, **kw):
    out = ar_generate(model, prompt[b:b + 1, : int(lens[b])], lens[b:b + 1],
                      torch.tensor([int(n)]), **kw)
    return out["tokens"][0]


# --------------------------------------------------------------------------


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, None, None), (1.0, None, None),
                                                     (0.8, 10, None), (1.2, None, 0.9)])
def test_kv_cache_equals_no_cache(temperature, top_k, top_p):
    model = tiny_gpt2()
    prompt, lens = batch()
    n = torch.tensor([6, 9, 3])
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, eos_token_id=EOS,
              token_range=(3, V))
    a = ar_generate(model, prompt, lens, n, seed=5, use_cache=True, **kw)
    b = ar_generate(model, prompt, lens, n, seed=5, use_cache=False, **kw)
    assert torch.equal(a["tokens"], b["tokens"])
    assert torch.allclose(a["token_prob"], b["token_prob"], atol=1e-5)
    assert a["nfe"] == b["nfe"] == 9 + 1  # max(n) tokens + the forced end token


def test_seed_reproducibility_and_generator():
    model = tiny_gpt2()
    prompt, lens = batch()

    def run(**kw):
        return ar_generate(model, prompt, lens, 12, **kw)["tokens"]

    assert torch.equal(run(seed=3), run(seed=3))
    assert not torch.equal(run(seed=3), run(seed=4))
    assert torch.equal(run(seed=3), run(generator=torch.Generator().manual_seed(3)))
    # top_k = 1 is greedy whatever the temperature
    assert torch.equal(run(seed=3, top_k=1, temperature=2.0), run(temperature=0.0))


def test_token_range_never_violated():
    model = tiny_gpt2(seed=2)
    prompt, lens = batch()
    out = ar_generate(model, prompt, lens, 30, token_range=(10, 14), seed=0, temperature=3.0)
    assert out["tokens"].shape == (3, 30)
    assert ((out["tokens"] >= 10) & (out["tokens"] < 14)).all()
    # per-position ranges (a list) and a callable
    ranges = [(3 + t % 5, 4 + t % 5) for t in range(8)]  # one allowed id per position
    out = ar_generate(model, prompt, lens, 8, token_range=ranges, seed=0)
    assert (out["tokens"] == torch.tensor([lo for lo, _ in ranges])).all()
    out = ar_generate(model, prompt, lens, 8, token_range=lambda t: (20 + t, 21 + t), seed=1)
    assert (out["tokens"] == 20 + torch.arange(8)).all()
    with pytest.raises(ValueError, match="ranges"):
        ar_generate(model, prompt, lens, 9, token_range=ranges)


def test_codebook_order():
    K, Vc, offset = 3, 4, 5  # DAC-SE1-like layout: codebook c at 5 + c * 4
    model = tiny_gpt2(seed=3, vocab=offset + K * Vc)
    prompt, lens = batch()
    prompt = prompt.clamp(max=offset + K * Vc - 1)
    proc = CodebookOrderLogitsProcessor(offset, Vc, K)
    n = torch.tensor([7, 12, 4])
    out = ar_generate(model, prompt, lens, n, token_range=proc, temperature=2.0, seed=0,
                      eos_token_id=EOS)
    for b in range(3):
        for t in range(int(n[b])):
            lo = offset + (t % K) * Vc
            assert lo <= int(out["tokens"][b, t]) < lo + Vc, (b, t)
    # explicit offsets and a first codebook
    proc = CodebookOrderLogitsProcessor([5, 9, 13], Vc, K, first_codebook=2)
    assert [proc.range_at(t) for t in range(3)] == [(13, 17), (5, 9), (9, 13)]


@pytest.mark.parametrize("eos", [EOS, None])
def test_exact_length_batch(eos):
    model = tiny_gpt2(seed=4)
    prompt, lens = batch()
    n = torch.tensor([4, 11, 0])
    out = ar_generate(model, prompt, lens, n, eos_token_id=eos, seed=2, pad_token_id=PAD)
    assert out["tokens"].shape == (3, 11) and out["token_prob"].shape == (3, 11)
    assert out["lens"].tolist() == [4, 11, 0]
    mask = torch.arange(11)[None, :] < n[:, None]
    assert (out["tokens"][~mask] == PAD).all()
    assert (out["token_prob"][~mask] == 0).all()
    assert (out["token_prob"][mask] > 0).all()
    if eos is not None:
        assert not (out["tokens"][mask] == eos).any()  # eos forbidden before the end
    assert out["nfe"] == 11 + (eos is not None)


def test_model_eos_does_not_stop_without_eos_token_id():
    """The model's own end token (config.eos_token_id = 2) is an ordinary token
    when ar_generate is given no eos_token_id."""
    model = tiny_gpt2(seed=8)
    prompt, lens = batch()
    out = ar_generate(model, prompt, lens, 40, token_range=(2, 4), seed=0, temperature=2.0)
    assert out["tokens"].shape == (3, 40)
    assert (out["tokens"] == EOS).any() and ((out["tokens"] == 2) | (out["tokens"] == 3)).all()


def test_exact_length_processor_values():
    proc = ExactLengthLogitsProcessor(torch.tensor([0, 1, 3]), eos_token_id=1, start=2)
    scores = proc(torch.zeros(3, 3, dtype=torch.long), torch.zeros(3, 4))  # position t = 1
    inf = float("-inf")
    assert scores.tolist() == [[inf, 0.0, inf, inf], [inf, 0.0, inf, inf], [0.0, inf, 0.0, 0.0]]


def test_perfect_lookup_model_reproduces_targets():
    g = torch.Generator().manual_seed(7)
    targets = torch.randint(3, V, (48,), generator=g)
    model = lookup_model(targets)
    lens = torch.tensor([3, 6, 1])
    prompt = torch.full((3, 6), PAD)
    for b in range(3):
        prompt[b, : lens[b]] = targets[: lens[b]]
    n = torch.tensor([20, 9, 15])
    for use_cache in (True, False):
        out = ar_generate(model, prompt, lens, n, eos_token_id=EOS, seed=0, use_cache=use_cache)
        for b in range(3):
            start, stop = int(lens[b]), int(lens[b] + n[b])
            assert torch.equal(out["tokens"][b, : n[b]], targets[start:stop])
        mask = torch.arange(20)[None, :] < n[:, None]
        assert (out["token_prob"][mask] > 0.999).all()


def test_position_ids_are_used():
    """Given position ids shift the lookup model's output."""
    targets = torch.arange(48) % (V - 3) + 3
    model = lookup_model(targets)
    prompt = torch.tensor([[5, 6, 7]])
    pos = torch.tensor([[10, 11, 12]])
    out = ar_generate(model, prompt, torch.tensor([3]), 4, position_ids=pos, temperature=0.0)
    assert out["tokens"][0].tolist() == targets[13:17].tolist()


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama, tiny_qwen2])
@pytest.mark.parametrize("planned", [False, True])
@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_kv_cache_equals_no_cache_for_each_architecture(factory, planned, cache):
    """Greedy and seeded sampling, batched with left padding, with continued or
    planned position ids, static or dynamic KV cache: the cache changes the work,
    not the tokens. (The "LLaMA no-cache mismatch" noted earlier does not reproduce
    with transformers 5.24 on these configurations, with or without planned positions.)"""
    model = factory()
    prompt, lens = batch()
    n = torch.tensor([6, 9, 3])
    kw = dict(eos_token_id=EOS, token_range=(3, V))
    if planned:  # prompt at 0.., generated token i at 60 + i
        kw["position_ids"] = torch.cat([torch.arange(7).expand(3, 7),
                                        60 + torch.arange(9).expand(3, 9)], dim=1)
    for sampling in (dict(temperature=0.0), dict(temperature=1.0, seed=4)):
        a = ar_generate(model, prompt, lens, n, use_cache=True, cache_implementation=cache,
                        **kw, **sampling)
        b = ar_generate(model, prompt, lens, n, use_cache=False, **kw, **sampling)
        assert torch.equal(a["tokens"], b["tokens"])
        assert torch.allclose(a["token_prob"], b["token_prob"], atol=1e-5)


def test_planned_position_ids_place_each_generated_token():
    """position_ids [B, P + N]: generated token i is fed back at the planned position
    P + i (the lookup model's output follows the plan, with and without the cache)."""
    targets = torch.arange(48) % (V - 3) + 3
    model = lookup_model(targets)
    prompt = torch.tensor([[5, 6, 7], [8, 9, 0]])
    lens = torch.tensor([3, 2])
    plan = torch.tensor([[0, 1, 2, 20, 21, 22, 23], [4, 5, 0, 30, 31, 32, 33]])
    for use_cache in (True, False):
        out = ar_generate(model, prompt, lens, torch.tensor([4, 4]), position_ids=plan,
                          temperature=0.0, use_cache=use_cache)
        # token 0 follows the prompt's last position; token i, fed back at plan[P + i],
        # makes the model predict token i + 1 from there
        assert out["tokens"][0].tolist() == [targets[3], targets[21], targets[22], targets[23]]
        assert out["tokens"][1].tolist() == [targets[6], targets[31], targets[32], targets[33]]
    with pytest.raises(ValueError, match=r"position_ids of shape \[2, 3\] \(prompt\) or \[2, 7\]"):
        ar_generate(model, prompt, lens, 4, position_ids=plan[:, :5])  # neither width
    with pytest.raises(ValueError, match="planned position ids reach 48, the model has 48"):
        ar_generate(model, prompt, lens, 4, position_ids=plan + 15)


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_llama, tiny_qwen2])
def test_left_padding_equals_items_alone(factory):
    model = factory()
    prompt, lens = batch()
    n = torch.tensor([5, 8, 3])
    out = ar_generate(model, prompt, lens, n, temperature=0.0, eos_token_id=EOS)
    for b in range(3):
        alone = run_alone(model, prompt, lens, b, n[b], temperature=0.0, eos_token_id=EOS)
        assert torch.equal(out["tokens"][b, : n[b]], alone)


def test_token_prob_is_constrained_untempered_softmax():
    model = tiny_gpt2(seed=5)
    prompt, lens = batch()
    lo, hi = 8, 20
    out = ar_generate(model, prompt, lens, 6, token_range=(lo, hi), temperature=2.5, seed=1)
    for b in range(3):
        seq = torch.cat([prompt[b, : lens[b]], out["tokens"][b]])[None]
        logits = model(seq).logits[0, lens[b] - 1: -1]  # predicts each generated token
        masked = torch.full_like(logits, float("-inf"))
        masked[:, lo:hi] = logits[:, lo:hi]
        expected = masked.softmax(-1).gather(1, out["tokens"][b][:, None])[:, 0]
        assert torch.allclose(out["token_prob"][b], expected, atol=1e-5)


def test_sampling_follows_tempered_distribution():
    """Sampled frequencies of the first token match softmax(logits / T)."""
    model = tiny_gpt2(seed=6, vocab=8)
    prompt = torch.tensor([[3, 4]]).expand(4000, 2).contiguous()
    lens = torch.full((4000,), 2)
    T = 1.5
    out = ar_generate(model, prompt, lens, 1, temperature=T, seed=0)
    logits = model(prompt[:1]).logits[0, -1]
    expected = (logits / T).softmax(-1)
    freq = torch.bincount(out["tokens"][:, 0], minlength=8).float() / 4000
    assert torch.allclose(freq, expected, atol=0.03)


def test_errors():
    model = tiny_gpt2()
    prompt, lens = batch()
    with pytest.raises(ValueError, match="prompt_lens"):
        ar_generate(model, prompt, torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="prompt_lens"):
        ar_generate(model, prompt, torch.tensor([0, 2, 3]), 3)
    with pytest.raises(ValueError, match="num_tokens"):
        ar_generate(model, prompt, lens, torch.tensor([1, -1, 2]))
    with pytest.raises(ValueError, match="top_p"):
        ar_generate(model, prompt, lens, 3, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        ar_generate(model, prompt, lens, 3, temperature=-1.0)
    with pytest.raises(ValueError, match="token range"):
        TokenRangeLogitsProcessor((5, 5))
    with pytest.raises(ValueError, match="vocabulary"):
        ar_generate(model, prompt, lens, 3, token_range=(0, V + 1))
    with pytest.raises(ValueError, match="cache_implementation must be 'static' or 'dynamic'"):
        ar_generate(model, prompt, lens, 3, cache_implementation="paged")


def test_model_generation_config_is_set_aside():
    model = tiny_gpt2()
    model.generation_config.repetition_penalty = 50.0
    model.generation_config.do_sample = True
    prompt, lens = batch()
    a = ar_generate(model, prompt, lens, 10, temperature=0.0)
    assert model.generation_config.repetition_penalty == 50.0  # restored
    model.generation_config.repetition_penalty = 1.0
    model.generation_config.do_sample = False
    b = ar_generate(model, prompt, lens, 10, temperature=0.0)
    assert torch.equal(a["tokens"], b["tokens"])
