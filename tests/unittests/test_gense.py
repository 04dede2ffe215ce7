"""GenSE: vocabulary, prompt layouts, position ids, training loss, AR generation, save/load."""

import os

import pytest
import torch
import torch.nn.functional as F

from speechbrain_gense.models.gense import (
    TINY_LM,
    GenSE,
    GenSEVocab,
    TokenLM,
    n2s_layout,
    s2s_layout,
    teacher_forcing,
    vocab_size,
)
from speechbrain_gense.tokenizers.debug import DebugTokenizer

SR = 16000


def _tokenizers(num_codebooks=1):
    # 50 Hz semantic (16 codes) and 80 Hz acoustic (32 codes), as k-means + SimCodec;
    # with K codebooks (an RVQ codec) 40 Hz, so the flattened S2S sequence fits TINY_LM
    if num_codebooks == 1:
        return DebugTokenizer(hop=320, vocab_size=16), DebugTokenizer(hop=200, vocab_size=32)
    return (DebugTokenizer(hop=320, vocab_size=16),
            DebugTokenizer(hop=400, vocab_size=32, num_codebooks=num_codebooks))


def tiny_gense(seed=0, max_seconds=0.5, num_codebooks=1, s2s_hint=False, **kwargs):
    torch.manual_seed(seed)
    sem, ac = _tokenizers(num_codebooks)
    v = GenSEVocab(sem.vocab_size, ac.vocab_size, ac.num_codebooks)
    n2s = kwargs.pop("n2s", TokenLM(v.size, **TINY_LM))
    return GenSE(sem, ac, n2s, TokenLM(v.size, hint=s2s_hint, **TINY_LM),
                 max_seconds=max_seconds, **kwargs).eval()


class _Batch(dict):
    """Enough of a PaddedBatch for compute_objectives."""

    __getattr__ = dict.__getitem__


class _Padded(tuple):
    @property
    def data(self):
        return self[0]


def _batch(noisy, clean, lens):
    return _Batch(noisy_sig=_Padded((noisy, lens)), clean_sig=_Padded((clean, lens)))


def _audio(seed=0, B=2, S=3200):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(B, S, generator=g) * 0.1
    return clean + 0.05 * torch.randn(B, S, generator=g), clean


# -- vocabulary and layouts ------------------------------------------------------


def test_vocabulary_offsets_derived_from_tokenizers():
    v = GenSEVocab(1024, 8192)  # GenSE's sizes: semantic 3..1026, acoustic 1027..9218
    assert (v.pad, v.bos, v.eos) == (0, 1, 2)
    assert v.semantic_range == (3, 1027) and v.acoustic_range == (1027, 9219)
    sem, ac = _tokenizers()
    assert vocab_size(sem, ac) == 3 + 16 + 32
    assert GenSEVocab(16, 32).ac(torch.tensor([0, 31])).tolist() == [19, 50]


def test_n2s_layout_batched_with_padding():
    v = GenSEVocab(16, 32)
    noisy = torch.tensor([[4, 5, 6], [7, 8, 0]])
    lay = n2s_layout(v, noisy, torch.tensor([3, 2]))
    assert lay["ids"].tolist() == [[7, 8, 9, 1], [10, 11, 1, 0]]
    assert lay["positions"].tolist() == [[0, 1, 2, 3], [0, 1, 2, 0]]
    assert lay["lens"].tolist() == [4, 3]
    assert lay["num_tokens"].tolist() == [3, 2]
    assert lay["target_start"].tolist() == [0, 0]  # clean token i at position i (noisy i's)


def test_s2s_layout_token_chain_and_ablations():
    v = GenSEVocab(16, 32)
    ns, cs = torch.tensor([[1, 2]]), torch.tensor([[3, 4]])
    na = torch.tensor([[0, 5, 6]])
    lay = s2s_layout(v, ns, cs, torch.tensor([2]), na, torch.tensor([3]), target_offset=8)
    # [noisy_sem ; clean_sem ; BOS ; noisy_ac]
    assert lay["ids"].tolist() == [[4, 5, 6, 7, 1, 19, 24, 25]]
    assert lay["positions"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]
    assert lay["target_start"].tolist() == [8] and lay["token_range"] == (19, 51)
    no_chain = s2s_layout(v, None, cs, torch.tensor([2]), None, torch.tensor([3]), 8,
                          parts=["clean_sem"])
    assert no_chain["ids"].tolist() == [[6, 7, 1]]
    assert no_chain["positions"].tolist() == [[0, 1, 2]]
    with pytest.raises(ValueError, match="ordered subset"):
        s2s_layout(v, ns, cs, torch.tensor([2]), na, torch.tensor([3]), 8,
                   parts=["noisy_ac", "noisy_sem"])
    with pytest.raises(ValueError, match="not given"):
        s2s_layout(v, ns, None, torch.tensor([2]), na, torch.tensor([3]), 8)


def test_teacher_forcing_positions_and_queries():
    v = GenSEVocab(16, 32)
    lay = s2s_layout(v, torch.tensor([[1, 2]]), torch.tensor([[3, 4]]), torch.tensor([2]),
                     torch.tensor([[0, 5, 6]]), torch.tensor([3]), target_offset=8)
    tf = teacher_forcing(lay, v.ac(torch.tensor([[9, 10, 11]])))
    # prompt, then the targets but the last as input; target i as input at 8 + i
    assert tf["ids"].tolist() == [[4, 5, 6, 7, 1, 19, 24, 25, 28, 29]]
    assert tf["positions"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 8, 9]]
    # the last prompt token predicts target 0, target i predicts target i + 1
    assert tf["query"].tolist() == [[7, 8, 9]]


def test_loss_is_next_token_ce_on_targets_only():
    torch.manual_seed(0)
    v = GenSEVocab(16, 32)
    lm = TokenLM(v.size, **TINY_LM).eval()
    lay = n2s_layout(v, torch.tensor([[4, 5, 6], [7, 8, 0]]), torch.tensor([3, 2]))
    target = v.sem(torch.tensor([[1, 2, 3], [9, 10, 0]]))
    loss = lm.loss(lay, target)
    # by hand: full forward of the HF model, softmax over the semantic ids only
    lo, hi = v.semantic_range
    ce = []
    rows = [([7, 8, 9, 1, 4, 5], [0, 1, 2, 3, 0, 1], 3), ([10, 11, 1, 12], [0, 1, 2, 0], 2)]
    for b, (seq, pos, n) in enumerate(rows):
        logits = lm.lm(input_ids=torch.tensor([seq]), position_ids=torch.tensor([pos])).logits[0]
        P = len(seq) - (n - 1)
        for i in range(n):
            ce.append(F.cross_entropy(logits[P - 1 + i, lo:hi][None], (target[b, i] - lo)[None]))
    assert loss["tokens"] == 5
    assert torch.allclose(loss["loss"], torch.stack(ce).mean(), atol=1e-5)
    # padding targets do not count
    target2 = target.clone()
    target2[1, 2] = v.sem(torch.tensor(15))
    assert torch.allclose(lm.loss(lay, target2)["loss"], loss["loss"])


def test_bad_configurations_raise():
    sem, ac = _tokenizers()
    v = GenSEVocab(16, 32)
    with pytest.raises(ValueError, match="vocab_size"):
        GenSE(sem, ac, TokenLM(v.size + 1, **TINY_LM), TokenLM(v.size, **TINY_LM),
              max_seconds=0.5)
    with pytest.raises(ValueError, match="max_positions"):
        GenSE(sem, ac, TokenLM(v.size, **TINY_LM), TokenLM(v.size, **TINY_LM), max_seconds=2.0)
    with pytest.raises(ValueError, match="no N2S"):
        GenSE(sem, ac, None, TokenLM(v.size, **TINY_LM), max_seconds=0.5)
    with pytest.raises(ValueError, match="arch"):
        TokenLM(v.size, arch="rnn")
    model = tiny_gense()
    with pytest.raises(ValueError, match="unknown decoding option 'temprature'"):
        model.enhance(torch.randn(1, 3200), temprature=0.5)
    with pytest.raises(ValueError, match="at most 0.5 s"):
        model.enhance(torch.randn(1, 16000))


# -- generation -----------------------------------------------------------------


def test_exact_lengths_and_acoustic_range_only():
    model = tiny_gense()
    noisy, _ = _audio()
    lens = torch.tensor([1.0, 0.5])
    out = model.enhance(noisy, lens, generator=torch.Generator().manual_seed(0),
                        temperature=50.0)  # near uniform: unmasked, 1/3 would be semantic
    assert out["tokens"].shape == (2, 16, 1) and out["wav"].shape == noisy.shape
    assert out["semantic"].shape[1] == 10  # T_s of 0.2 s at 50 Hz
    assert out["lens"].tolist() == [1.0, 0.5]
    assert ((out["tokens"] >= 0) & (out["tokens"] < 32)).all()
    assert ((out["semantic"] >= 0) & (out["semantic"] < 16)).all()
    assert (out["semantic"][1, 5:] == 0).all()
    assert (out["tokens"][1, 8:] == 0).all()  # past the item's 8 frames: padding
    assert out["nfe"] > 0
    assert ((out["confidence"] >= 0) & (out["confidence"] <= 1)).all()


def test_flattened_codebooks_are_generated_in_codebook_order():
    """With a 2-codebook codec S2S writes 2 tokens per frame, each from its own codebook's
    ids (near-uniform sampling: unconstrained, 3/4 of the draws would be another range)."""
    model = tiny_gense(num_codebooks=2)
    v = model.vocab
    assert v.size == 3 + 16 + 2 * 32 and v.acoustic_range == (19, 83)
    noisy, _ = _audio()
    lens = torch.tensor([1.0, 0.5])
    lay = model.s2s_layout(model.tokens(noisy, lens), torch.zeros(2, 10, dtype=torch.long))
    assert lay["num_tokens"].tolist() == [16, 8]  # 8 and 4 frames x 2 codebooks
    assert lay["target_start"].tolist() == [40, 40]  # 20 frames x 2 of max_seconds
    out = model.enhance(noisy, lens, generator=torch.Generator().manual_seed(0),
                        temperature=50.0)
    assert out["tokens"].shape == (2, 8, 2)
    # each id minus its own codebook's offset: any id of another range falls outside [0, 32)
    assert ((out["tokens"] >= 0) & (out["tokens"] < 32)).all()
    assert (out["tokens"][1, 4:] == 0).all()
    assert len(set(out["tokens"][0, :, 1].tolist())) > 1  # sampled, not a constant
    with pytest.raises(ValueError, match="codebooks"):
        v.ac(torch.zeros(1, 4, dtype=torch.long))  # [B, T] is one codebook only


def test_kv_cache_generation_equals_no_cache():
    model = tiny_gense(seed=3)
    noisy, _ = _audio(1)
    lens = torch.tensor([1.0, 0.6])
    a = model.enhance(noisy, lens, top_k=1, use_cache=True)
    b = model.enhance(noisy, lens, top_k=1, use_cache=False)
    assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["semantic"], b["semantic"])
    assert torch.allclose(a["confidence"], b["confidence"], atol=1e-4)
    s1 = model.enhance(noisy, lens, generator=torch.Generator().manual_seed(5), use_cache=True)
    s2 = model.enhance(noisy, lens, generator=torch.Generator().manual_seed(5), use_cache=False)
    assert torch.equal(s1["tokens"], s2["tokens"])


@pytest.mark.parametrize("num_codebooks,hint", [(1, False), (2, False), (2, True)])
def test_teacher_lm_reproduces_the_targets(num_codebooks, hint):
    """LMs fitted to one batch by the training loss regenerate its clean tokens exactly
    (training and generation agree on prompts, positions and target ranges; with 2
    codebooks, on the frame-major flattening and the codebook order, prefix included;
    with hints, on where each target's hint is read)."""
    kwargs = {}
    if hint:
        v = GenSEVocab(16, 32, num_codebooks)
        torch.manual_seed(1)
        kwargs = {"n2s": TokenLM(v.size, hint=True, **TINY_LM)}
    model = tiny_gense(seed=1, num_codebooks=num_codebooks, s2s_hint=hint, **kwargs)
    model.train()
    noisy, clean = _audio(2)
    lens = torch.tensor([1.0, 0.75])
    batch = _batch(noisy, clean, lens)
    params = list(model.n2s.parameters()) + list(model.s2s.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    for _ in range(300):
        out = model.compute_objectives(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if out["n2s_acc"] == 1.0 and out["s2s_acc"] == 1.0 and out["loss"] < 0.05:
            break
    assert out["n2s_acc"] == 1.0 and out["s2s_acc"] == 1.0
    model.eval()
    enhanced = model.enhance(noisy, lens, top_k=1)
    target = model.tokens(clean, lens)
    sem_n = target["sem_frames"]
    for b in range(2):
        assert torch.equal(enhanced["semantic"][b, :sem_n[b]], target["sem"][b, :sem_n[b]])
        n = int(target["ac_frames"][b])
        assert enhanced["tokens"].shape[-1] == num_codebooks
        assert torch.equal(enhanced["tokens"][b, :n], target["ac"][b, :n])
    # and with a committed prefix, generation continues it to the same targets
    prefix = target["ac"][:, :5]
    cont = model.enhance(noisy, lens, top_k=1, prefix=prefix)
    assert torch.equal(cont["tokens"], enhanced["tokens"])


def test_save_load_round_trip(tmp_path):
    from speechbrain_gense.models.base import get_method, load_enhancer

    model = tiny_gense(seed=4, decode_opts={"temperature": 0.7})
    model.semantic_tokenizer.spec = "debug?hop=320,vocab_size=16"
    model.acoustic_tokenizer.spec = "debug?vocab_size=32"
    folder = model.save(str(tmp_path / "gense"))
    assert sorted(os.listdir(folder)) == ["gense.json", "n2s.ckpt", "s2s.ckpt"]
    stored = torch.load(os.path.join(folder, "s2s.ckpt"), weights_only=True)["state_dict"]
    assert "lm.lm_head.weight" not in stored  # tied to the embedding: stored once
    assert get_method("gense") is GenSE
    loaded = load_enhancer(folder)
    assert isinstance(loaded, GenSE) and loaded.decode_opts["temperature"] == 0.7
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    noisy, _ = _audio(3)
    assert torch.equal(model.enhance(noisy, top_k=1)["tokens"],
                       loaded.enhance(noisy, top_k=1)["tokens"])
    half = GenSE.load(model.save(str(tmp_path / "half"), dtype="float16"))
    w, h = model.s2s.lm.lm_head.weight, half.s2s.lm.lm_head.weight
    assert h.dtype == torch.float32 and torch.allclose(w, h, atol=1e-3)


def test_from_hparams_enhances(tmp_path):
    from speechbrain_gense.inference import EnhanceGenerative, write_inference_yaml

    model = tiny_gense(seed=5)
    model.semantic_tokenizer.spec = "debug?hop=320,vocab_size=16"
    model.acoustic_tokenizer.spec = "debug?vocab_size=32"
    folder = model.save(str(tmp_path / "gense"))
    write_inference_yaml(folder, chunk_seconds=0.3, overlap_seconds=0.05)
    enhancer = EnhanceGenerative.from_hparams(source=folder, run_opts={"device": "cpu"})
    wav = enhancer.enhance_batch(torch.randn(2, 16000) * 0.1, seed=0)  # 1 s: chunked
    assert wav.shape == (2, 16000) and torch.isfinite(wav).all()


def test_token_model_brain_trains_gense():
    from speechbrain_gense.brains.token_model import TokenModelBrain

    model = tiny_gense(seed=6)
    brain = TokenModelBrain(modules={"n2s": model.n2s, "s2s": model.s2s},
                            opt_class=lambda p: torch.optim.Adam(p, 1e-3),
                            hparams={"model": model}, run_opts={"device": "cpu"})
    brain.init_optimizers()
    noisy, clean = _audio(4)
    from speechbrain.dataio.batch import PaddedBatch

    batch = PaddedBatch([{"noisy_sig": noisy[0], "clean_sig": clean[0]},
                         {"noisy_sig": noisy[1, :2000], "clean_sig": clean[1, :2000]}])
    loss = brain.fit_batch(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"n2s_loss", "s2s_loss", "n2s_acc", "s2s_acc"} <= set(brain.last_stats)
    # the initial loss is about log(range size) for an untrained LM
    assert abs(brain.last_stats["n2s_loss"] - torch.log(torch.tensor(16.0))) < 1.0


def test_s2s_trains_on_n2s_outputs_when_asked():
    """s2s_on_n2s=1: in training, S2S's clean_sem prompt holds tokens sampled from N2S's
    teacher-forced softmax (here peaked on clean + 1); in eval mode, the clean tokens."""
    model = tiny_gense(seed=8, s2s_on_n2s=1.0)
    noisy, clean = _audio(6)
    lens = torch.ones(2)
    clean_sem = model.semantic_tokenizer.encode(clean, lens)[0][..., 0]
    shifted = (clean_sem + 1) % 16
    true_loss = model.n2s.loss

    def peaked_loss(layout, target_ids):  # an N2S whose prediction is always clean + 1
        res = true_loss(layout, target_ids)
        res["logits"] = F.one_hot(shifted, 16).float() * 50.0
        return res

    model.n2s.loss = peaked_loss
    seen = []
    true_layout = model.s2s_layout
    model.s2s_layout = lambda noisy_tokens, sem: seen.append(sem.clone()) or true_layout(
        noisy_tokens, sem)
    model.train()
    out = model.compute_objectives(_batch(noisy, clean, lens))
    assert torch.isfinite(out["loss"])
    assert torch.equal(seen[-1], shifted)
    model.n2s.eval()  # what the Brain does in validation: its modules are the LMs
    model.s2s.eval()
    out = model.compute_objectives(_batch(noisy, clean, lens))
    assert torch.equal(seen[-2], clean_sem)  # the validation loss: clean tokens
    assert torch.equal(seen[-1], shifted)  # and the diagnostic on N2S's outputs
    assert {"s2s_acc_on_n2s", "s2s_loss_on_n2s"} <= set(out)
    model.s2s_on_n2s = 0.0
    model.train()
    model.compute_objectives(_batch(noisy, clean, lens))
    assert torch.equal(seen[-1], clean_sem)
    with pytest.raises(ValueError, match="probability"):
        tiny_gense(s2s_on_n2s=1.5)


def test_generated_tokens_get_the_planned_positions():
    """N2S: clean token i at position i; S2S: acoustic token i at s2s_target_offset + i."""
    model = tiny_gense(seed=7)
    seen = {"n2s": [], "s2s": []}
    # the LM body sees the position ids ar_generate gave the LM (after its planning hook)
    hooks = [getattr(model, name).lm.base_model.register_forward_pre_hook(
        lambda mod, args, kwargs, name=name: seen[name].append(kwargs["position_ids"].clone()),
        with_kwargs=True) for name in seen]
    noisy, _ = _audio(5, B=1)
    model.enhance(noisy, top_k=1)
    for h in hooks:
        h.remove()
    # first call: the (left-padded) prompt; then one call per generated token but the last
    n2s = [p[0, -1].item() for p in seen["n2s"][1:]]
    assert seen["n2s"][0][0].tolist() == list(range(10)) + [10]  # noisy 0..9, BOS 10
    assert n2s == list(range(9))  # clean_0 .. clean_8 as inputs at 0 .. 8
    s2s = [p[0, -1].item() for p in seen["s2s"][1:]]
    assert seen["s2s"][0][0].tolist() == list(range(21)) + list(range(16))
    assert model.s2s_target_offset == 40  # acoustic frames of max_seconds (0.5 s at 80 Hz)
    assert s2s == [40 + i for i in range(15)]


def test_aligned_s2s_positions_share_the_noisy_acoustic_ones():
    """s2s_target_offset=1: the state predicting acoustic token i + 1 sits at noisy acoustic
    token i + 1's position; a negative offset is refused."""
    model = tiny_gense(seed=7, s2s_target_offset=1)
    seen = []
    hook = model.s2s.lm.base_model.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["position_ids"].clone()), with_kwargs=True)
    noisy, _ = _audio(5, B=1)
    out = model.enhance(noisy, top_k=1)
    hook.remove()
    assert seen[0][0].tolist() == list(range(21)) + list(range(16))  # the prompt is unchanged
    assert [p[0, -1].item() for p in seen[1:]] == list(range(1, 16))  # clean_i read at i + 1
    assert out["tokens"].shape[1] == 16
    with pytest.raises(ValueError, match="must be >= 0"):
        tiny_gense(n2s_target_offset=-1)


def test_llama_lms_generate_what_the_training_forward_predicts():
    """RoPE LMs (arch llama): KV-cache generation = greedy decoding by full forwards
    with the planned positions (the training path)."""
    sem, ac = _tokenizers()
    v = GenSEVocab(16, 32)
    torch.manual_seed(8)
    cfg = dict(TINY_LM, arch="llama")
    model = GenSE(sem, ac, TokenLM(v.size, **cfg), TokenLM(v.size, **cfg), max_seconds=0.5).eval()
    noisy, _ = _audio(6, B=1)
    out = model.enhance(noisy, top_k=1)
    noisy_tok = model.tokens(noisy)
    lay = model.s2s_layout(noisy_tok, out["semantic"])
    ids, pos = lay["ids"], lay["positions"]
    lo, hi = lay["token_range"]
    with torch.no_grad():
        for i in range(4):
            h = model.s2s.hidden(ids, pos, torch.ones_like(ids))
            nxt = model.s2s.range_logits(h[:, -1], (lo, hi)).argmax(-1) + lo
            assert int(nxt - v.ac_offset) == int(out["tokens"][0, i, 0])
            ids = torch.cat([ids, nxt[:, None]], 1)
            pos = torch.cat([pos, torch.tensor([[model.s2s_target_offset + i]])], 1)


def test_shipped_gense_runs_from_hparams(tmp_path):
    """pretrained/gense (when shipped) loads by name from any folder and enhances 3 s."""
    from speechbrain_gense.inference import EnhanceGenerative
    from speechbrain_gense.paths import CHECKOUT_ROOT

    if not os.path.isfile(os.path.join(CHECKOUT_ROOT, "pretrained", "gense", "inference.yaml")):
        pytest.skip("pretrained/gense is not shipped in this checkout")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        enhancer = EnhanceGenerative.from_hparams(source="pretrained/gense")
    finally:
        os.chdir(cwd)
    assert enhancer.model.method == "gense" and enhancer.sample_rate == SR
    wav, conf = enhancer.enhance_batch(torch.randn(1, 3 * SR) * 0.05, seed=0,
                                       return_confidence=True)
    assert wav.shape == (1, 3 * SR) and torch.isfinite(wav).all()
    frames = round(3 * enhancer.model.output_tokenizer.frame_rate)  # 150 at the RVQ's 50 Hz
    assert conf.shape == (1, frames) and ((conf >= 0) & (conf <= 1)).all()


# -- speed options: int8, batched chunks, KV cache ---------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kv_cache_generation_equals_no_cache_for_each_arch(arch):
    """Greedy and seeded sampling: the KV cache changes the work, not the tokens
    (GPT-2, GenSE's choice, and the LLaMA option; batched with padding)."""
    sem, ac = _tokenizers()
    v = GenSEVocab(16, 32)
    torch.manual_seed(11)
    cfg = dict(TINY_LM, arch=arch)
    model = GenSE(sem, ac, TokenLM(v.size, **cfg), TokenLM(v.size, **cfg), max_seconds=0.5).eval()
    noisy, _ = _audio(7)
    lens = torch.tensor([1.0, 0.55])
    a = model.enhance(noisy, lens, temperature=0.0, use_cache=True)
    b = model.enhance(noisy, lens, temperature=0.0, use_cache=False)
    assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["semantic"], b["semantic"])
    assert torch.allclose(a["confidence"], b["confidence"], atol=1e-5)
    assert a["nfe"] == b["nfe"] == 10 + 16  # one forward per generated token of each stage
    s1 = model.enhance(noisy, lens, generator=torch.Generator().manual_seed(2), use_cache=True)
    s2 = model.enhance(noisy, lens, generator=torch.Generator().manual_seed(2), use_cache=False)
    assert torch.equal(s1["tokens"], s2["tokens"]) and torch.equal(s1["semantic"], s2["semantic"])


def test_int8_precision_uses_quantised_copies_of_both_lms():
    from torch import nn

    model = tiny_gense(seed=12)
    noisy, _ = _audio(8)
    lens = torch.tensor([1.0, 0.7])
    ref = model.enhance(noisy, lens, temperature=0.0)
    out = model.enhance(noisy, lens, temperature=0.0, precision="int8")
    assert out["tokens"].shape == ref["tokens"].shape and out["wav"].shape == noisy.shape
    assert ((out["tokens"] >= 0) & (out["tokens"] < 32)).all()
    # the int8 LMs' logits stay close to the float ones on the same prompt
    for name in ("n2s", "s2s"):
        q = model.generation_lm(name, "int8")
        assert q is model.generation_lm(name, "int8")  # cached
        assert not any(type(m) is nn.Linear for m in q.modules())
        lm = getattr(model, name).lm
        assert any(type(m).__name__ == "Conv1D" for m in lm.modules())  # float LM untouched
        ids = torch.randint(3, 51, (2, 30), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            a, b = lm(ids).logits, q(ids).logits
        assert (a - b).abs().max() <= 0.05 * a.abs().max()
    assert model.generation_lm("s2s", "fp32") is model.s2s.lm
    assert all("int8" not in n for n, _ in model.named_modules())
    assert set(model.state_dict()) == set(tiny_gense(seed=12).state_dict())  # not saved
    with pytest.raises(ValueError, match="precision must be one of fp32, int8"):
        model.enhance(noisy, lens, precision="int4")


def test_batched_items_equal_items_one_by_one_under_greedy():
    """Chunks batched in one generate call (left-padded prompts, planned positions)
    give each chunk the tokens it gets alone."""
    model = tiny_gense(seed=13)
    noisy, _ = _audio(9, B=3, S=4000)
    lens = torch.tensor([1.0, 0.4, 0.75])
    batched = model.enhance(noisy, lens, temperature=0.0)
    for b in range(3):
        n = int(round(float(lens[b]) * noisy.shape[1]))
        alone = model.enhance(noisy[b:b + 1, :n], temperature=0.0)
        T = alone["tokens"].shape[1]
        assert torch.equal(batched["tokens"][b, :T], alone["tokens"][0])
        S = alone["semantic"].shape[1]
        assert torch.equal(batched["semantic"][b, :S], alone["semantic"][0])
        assert torch.allclose(batched["confidence"][b, :T], alone["confidence"][0], atol=1e-5)
    assert batched["nfe"] == 13 + 20  # the longest item's tokens, once for the batch
    # tokens sampled: each item's semantic + acoustic frames (1.0, 0.4, 0.75 of 4000 samples)
    assert batched["generated"] == (13 + 5 + 10) + (20 + 8 + 15)


def test_interface_batches_independent_chunks(tmp_path):
    """carry_context: false + batch_size: the chunks of one file go through one
    enhance call, with the same output as chunk by chunk (greedy)."""
    from speechbrain_gense.inference import EnhanceGenerative, write_inference_yaml

    model = tiny_gense(seed=14)
    model.semantic_tokenizer.spec = "debug?hop=320,vocab_size=16"
    model.acoustic_tokenizer.spec = "debug?vocab_size=32"
    folder = model.save(str(tmp_path / "gense"))
    write_inference_yaml(folder, chunk_seconds=0.3, overlap_seconds=0.05, carry_context=False)
    enhancer = EnhanceGenerative.from_hparams(source=folder, run_opts={"device": "cpu"})
    calls = []
    original = enhancer.model.enhance

    def spy(wav, *args, **kwargs):
        calls.append(wav.shape[0])
        return original(wav, *args, **kwargs)

    enhancer.model.enhance = spy
    wav = torch.randn(1, 16000, generator=torch.Generator().manual_seed(3)) * 0.1
    one = enhancer.enhance_batch(wav, temperature=0.0, batch_size=1)
    assert calls == [1, 1, 1, 1]  # 1 s in chunks of 0.3, 0.3, 0.3 and 0.1 s
    calls.clear()
    batched = enhancer.enhance_batch(wav, temperature=0.0, batch_size=8)
    assert calls == [4]
    assert torch.allclose(one, batched, atol=1e-6)


def test_int8_from_inference_yaml(tmp_path):
    """``decode_opts: {precision: int8}`` in inference.yaml runs both LMs in int8."""
    from speechbrain_gense.inference import EnhanceGenerative, write_inference_yaml

    model = tiny_gense(seed=15)
    model.semantic_tokenizer.spec = "debug?hop=320,vocab_size=16"
    model.acoustic_tokenizer.spec = "debug?vocab_size=32"
    folder = model.save(str(tmp_path / "gense"))
    write_inference_yaml(folder, decode_opts={"precision": "int8"})
    enhancer = EnhanceGenerative.from_hparams(source=folder, run_opts={"device": "cpu"})
    wav = enhancer.enhance_batch(torch.randn(1, 8000) * 0.1, seed=0)
    assert wav.shape == (1, 8000) and torch.isfinite(wav).all()
    assert sorted(enhancer.model.__dict__["_int8_copies"]) == ["n2s", "s2s"]


@pytest.mark.parametrize("use_cache", [True, False])
def test_prefix_continues_greedy_generation_exactly(use_cache):
    """Given its own first tokens as ``prefix``, greedy S2S continues with the same
    tokens (the prefix sits at the planned positions of the tokens it replaces)."""
    model = tiny_gense(seed=16)
    noisy, _ = _audio(10)
    lens = torch.tensor([1.0, 0.8])
    ref = model.enhance(noisy, lens, temperature=0.0, use_cache=use_cache)
    out = model.enhance(noisy, lens, temperature=0.0, use_cache=use_cache,
                        prefix=ref["tokens"][:, :6])
    assert torch.equal(out["tokens"], ref["tokens"])
    assert torch.equal(out["semantic"], ref["semantic"])
    assert out["generated"] == ref["generated"] - 2 * 6
    # given tokens count as certain for S2S: their frames keep only N2S's probability
    assert (out["confidence"][:, :6] >= ref["confidence"][:, :6] - 1e-6).all()
    assert torch.allclose(out["confidence"][:, 6:], ref["confidence"][:, 6:], atol=1e-5)


# -- hints: each target also reads the noisy token of its frame ---------------------


@pytest.mark.parametrize("num_codebooks,use_cache", [(1, True), (2, True), (2, False)])
def test_hinted_generation_is_what_the_training_forward_predicts(num_codebooks, use_cache):
    """With ``hint=True`` LMs, greedy generation (batched, padded, KV cache or not) gives
    the argmax of the teacher-forced forward on its own outputs at every target: the
    hints reach the same inputs in training and in generation."""
    v = GenSEVocab(16, 32, num_codebooks)
    torch.manual_seed(21)
    n2s = TokenLM(v.size, hint=True, **TINY_LM)
    model = tiny_gense(seed=21, num_codebooks=num_codebooks, s2s_hint=True, n2s=n2s)
    with torch.no_grad():  # a hint map far from the identity, so that the hints matter
        for lm in (model.n2s, model.s2s):
            lm.lm.hint_proj.weight.mul_(4.0)
    noisy, _ = _audio(11)
    lens = torch.tensor([1.0, 0.6])
    out = model.enhance(noisy, lens, temperature=0.0, use_cache=use_cache)
    tok = model.tokens(noisy, lens)
    sem = out["semantic"][:, :tok["sem"].shape[1]]
    with torch.no_grad():
        n2s_res = model.n2s.loss(model.n2s_layout(tok), v.sem(sem))
        s2s_lay = model.s2s_layout(tok, sem)
        s2s_res = model.s2s.loss(s2s_lay, v.ac(out["tokens"][:, :tok["ac"].shape[1]]))
        assert float(n2s_res["acc"]) == 1.0 and float(s2s_res["acc"]) == 1.0
        # the same forward without the hints predicts something else
        tf = teacher_forcing(s2s_lay, v.ac(out["tokens"][:, :tok["ac"].shape[1]]))
        with_h = model.s2s.hidden(tf["ids"], tf["positions"], tf["attention_mask"], tf["hints"])
        without = model.s2s.hidden(tf["ids"], tf["positions"], tf["attention_mask"],
                                   torch.zeros_like(tf["hints"]))
    assert not torch.allclose(with_h, without, atol=1e-3)


def test_hinted_lms_save_load_and_int8(tmp_path):
    model = tiny_gense(seed=22, s2s_hint=True)
    model.semantic_tokenizer.spec = "debug?hop=320,vocab_size=16"
    model.acoustic_tokenizer.spec = "debug?vocab_size=32"
    folder = model.save(str(tmp_path / "gense"))
    loaded = GenSE.load(folder)
    assert loaded.s2s.config["hint"] and not loaded.n2s.config["hint"]
    assert torch.equal(loaded.s2s.lm.hint_proj.weight, model.s2s.lm.hint_proj.weight)
    noisy, _ = _audio(12)
    assert torch.equal(model.enhance(noisy, temperature=0.0)["tokens"],
                       loaded.enhance(noisy, temperature=0.0)["tokens"])
    q = model.enhance(noisy, temperature=0.0, precision="int8")
    assert q["tokens"].shape == (2, 16, 1) and ((q["tokens"] >= 0) & (q["tokens"] < 32)).all()


def test_hints_need_their_noisy_tokens():
    v = GenSEVocab(16, 32)
    with pytest.raises(ValueError, match="s2s reads hints .* needs noisy_ac in s2s_parts"):
        tiny_gense(s2s_hint=True, s2s_parts=("noisy_sem", "clean_sem"))
    with pytest.raises(ValueError, match="needs the hierarchical model"):
        tiny_gense(s2s_hint=True, n2s=None, interleave_lookahead=1, max_seconds=0.2)
    lm = TokenLM(v.size, hint=True, **TINY_LM)
    ids = torch.tensor([[3, 4]])
    with pytest.raises(ValueError, match="this LM reads hints"):
        lm.hidden(ids, torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="built without hint=True"):
        TokenLM(v.size, **TINY_LM).hidden(ids, torch.tensor([[0, 1]]), hints=ids)


# -- the interleaved (streaming) variant ------------------------------------------


def tiny_streaming_gense(seed=0, lookahead=1, num_codebooks=1, **kwargs):
    torch.manual_seed(seed)
    sem, ac = _tokenizers(num_codebooks)
    v = GenSEVocab(sem.vocab_size, ac.vocab_size, ac.num_codebooks)
    lm = TokenLM(v.size, **{**TINY_LM, "max_positions": 160})
    return GenSE(sem, ac, None, lm, max_seconds=0.5, interleave_lookahead=lookahead,
                 **kwargs).eval()


@pytest.mark.parametrize("block,lookahead,K", [((1, 1), 0, 1), ((1, 1), 2, 2), ((5, 8), 1, 1)])
def test_interleaved_layout_writes_each_block_after_its_lookahead(block, lookahead, K):
    from speechbrain_gense.models.gense import interleaved_layout

    v = GenSEVocab(16, 32, num_codebooks=K)
    n_sem, n_ac = block
    T_a = torch.tensor([4 * n_ac, 2 * n_ac + 1])  # 4 blocks; 3 (the last one completed)
    T_s = (T_a * n_sem + n_ac - 1) // n_ac
    g = torch.Generator().manual_seed(0)
    noisy_sem = torch.randint(0, 16, (2, int(T_s.max())), generator=g)
    noisy_ac = torch.randint(0, 32, (2, int(T_a.max()), K), generator=g)
    clean_sem, clean_ac = (noisy_sem + 1) % 16, (noisy_ac + 1) % 32
    lay = interleaved_layout(v, noisy_sem, T_s, noisy_ac, T_a, block, lookahead,
                             clean_sem=clean_sem, clean_ac=clean_ac)
    bs = n_sem + n_ac * K
    assert lay["block_size"] == bs and lay["blocks"].tolist() == [4, 3]
    assert lay["lens"].tolist() == [1 + 2 * 4 * bs, 1 + 2 * 3 * bs]
    for b, T in enumerate((4, 3)):
        ids, tgt = lay["ids"][b], lay["target"][b]
        assert ids[0] == v.bos and int(tgt.sum()) == T * bs
        c_starts = tgt.nonzero()[::bs, 0].tolist()
        assert lay["prompt_lens"][b] == c_starts[0]
        for t, start in enumerate(c_starts):
            # before clean block t: BOS and the noisy blocks 0 .. t + L (all of them near the end)
            assert start == 1 + min(t + lookahead + 1, T) * bs + t * bs
            blk = ids[start:start + bs]
            frames = slice(t * n_sem, (t + 1) * n_sem)
            want_sem = clean_sem[b, :int(T_s[b])]
            want_sem = torch.cat([want_sem, want_sem[-1:].expand(T * n_sem, )])[frames]
            assert blk[:n_sem].tolist() == v.sem(want_sem).tolist()
            assert bool(((blk >= lay["lo"][b, start:start + bs])
                         & (blk < lay["hi"][b, start:start + bs])).all())
        # the ranges: semantic ids, then each codebook's own ids
        lo = lay["lo"][b, c_starts[0]:c_starts[0] + bs].tolist()
        assert lo == [v.sem_offset] * n_sem + [v.ac_offset + c * 32 for c in range(K)] * n_ac


def test_interleaved_loss_is_on_the_clean_blocks_only():
    model = tiny_streaming_gense(seed=2)
    assert model.block == (5, 8) and not model.supports_prefix
    noisy, clean = _audio(5)
    out = model.compute_objectives(_batch(noisy, clean, torch.tensor([1.0, 0.6])))
    assert set(out) == {"loss", "s2s_loss", "s2s_acc"} and torch.isfinite(out["loss"])
    # an untrained LM: about the mean log range size over the targets (5 x 16 and 8 x 32 ids)
    expected = (5 * torch.log(torch.tensor(16.0)) + 8 * torch.log(torch.tensor(32.0))) / 13
    assert abs(float(out["loss"].detach()) - float(expected)) < 0.5
    with pytest.raises(ValueError, match="one LM"):
        sem, ac = _tokenizers()
        v = GenSEVocab(16, 32)
        GenSE(sem, ac, TokenLM(v.size, **TINY_LM), TokenLM(v.size, **TINY_LM),
              interleave_lookahead=1, max_seconds=0.5)
    with pytest.raises(ValueError, match="max_positions"):
        GenSE(sem, ac, None, TokenLM(v.size, **TINY_LM), interleave_lookahead=1,
              max_seconds=0.5)


@pytest.mark.parametrize("num_codebooks", [1, 2])
def test_interleaved_teacher_lm_reproduces_the_targets(num_codebooks):
    model = tiny_streaming_gense(seed=3, num_codebooks=num_codebooks)
    model.train()
    noisy, clean = _audio(6)
    lens = torch.tensor([1.0, 0.7])
    batch = _batch(noisy, clean, lens)
    opt = torch.optim.Adam(model.s2s.parameters(), lr=3e-3)
    for _ in range(400):
        out = model.compute_objectives(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if out["s2s_acc"] == 1.0 and out["loss"] < 0.05:
            break
    assert out["s2s_acc"] == 1.0
    model.eval()
    enhanced = model.enhance(noisy, lens, top_k=1)
    target = model.tokens(clean, lens)
    assert enhanced["tokens"].shape == target["ac"].shape
    for b in range(2):
        n = int(target["ac_frames"][b])
        assert torch.equal(enhanced["tokens"][b, :n], target["ac"][b, :n])
        assert bool((enhanced["tokens"][b, n:] == 0).all())
    assert enhanced["confidence"].shape == target["ac"].shape[:2]
    assert enhanced["generated"] == int(model.interleaved_layout(model.tokens(noisy, lens))
                                        ["target"].sum())


def test_interleaved_output_does_not_wait_for_later_input():
    """Clean block t depends on the noisy blocks up to t + lookahead only (greedy): changing
    the noisy tokens from block m on leaves blocks 0 .. m - lookahead - 1 unchanged."""
    lookahead = 1
    model = tiny_streaming_gense(seed=4, lookahead=lookahead)
    noisy, _ = _audio(7, B=1, S=8000)  # 0.5 s: 5 blocks of 100 ms
    tok = model.tokens(noisy)
    n_sem, n_ac = model.block
    m = 3
    changed = {**tok, "sem": tok["sem"].clone(), "ac": tok["ac"].clone()}
    changed["sem"][:, m * n_sem:] = (changed["sem"][:, m * n_sem:] + 7) % 16
    changed["ac"][:, m * n_ac:] = (changed["ac"][:, m * n_ac:] + 11) % 32
    opts = model.decode_options(top_k=1)
    a = model._enhance_interleaved(noisy, tok, opts, None)["tokens"]
    b = model._enhance_interleaved(noisy, changed, opts, None)["tokens"]
    keep = (m - lookahead) * n_ac
    assert torch.equal(a[:, :keep], b[:, :keep])
    assert not torch.equal(a[:, keep:], b[:, keep:])


def test_interleaved_save_load_round_trip(tmp_path):
    model = tiny_streaming_gense(seed=5, lookahead=2)
    model.semantic_tokenizer.spec = "debug?hop=320,vocab_size=16"
    model.acoustic_tokenizer.spec = "debug?hop=200,vocab_size=32"
    folder = model.save(str(tmp_path / "stream"))
    assert sorted(os.listdir(folder)) == ["gense.json", "s2s.ckpt"]
    loaded = GenSE.load(folder)
    assert loaded.interleave_lookahead == 2 and loaded.block == (5, 8)
    noisy, _ = _audio(8)
    assert torch.equal(model.enhance(noisy, top_k=1)["tokens"],
                       loaded.enhance(noisy, top_k=1)["tokens"])
    with pytest.raises(ValueError, match="cannot continue from a prefix"):
        loaded.enhance(noisy, prefix=torch.zeros(2, 3, 1, dtype=torch.long))
    # through the interface: chunked, no carried prefix (the model does not take one)
    from speechbrain_gense.inference import EnhanceGenerative, write_inference_yaml

    write_inference_yaml(folder, chunk_seconds=0.3, overlap_seconds=0.05)
    enhancer = EnhanceGenerative.from_hparams(source=folder, run_opts={"device": "cpu"})
    wav = enhancer.enhance_batch(torch.randn(2, 16000) * 0.1, seed=0)  # 1 s: 4 chunks
    assert wav.shape == (2, 16000) and torch.isfinite(wav).all()


def test_forced_spans_in_one_pass_equal_generate_token_by_token():
    """forced_span_generate (a forward pass per predicted token, each noisy block fed at once)
    gives the tokens of transformers' generate with the schedule processor (a pass per
    token), under greedy decoding."""
    from speechbrain_gense.decoding import (ScheduledTokensLogitsProcessor, ar_generate,
                                            forced_span_generate)

    model = tiny_streaming_gense(seed=9, lookahead=1)
    noisy, _ = _audio(10, B=1, S=8000)
    lay = model.interleaved_layout(model.tokens(noisy))
    prompt, forced, lo, hi = model.interleaved_schedule(lay, 0)
    lm = model.s2s.lm
    fast = forced_span_generate(lm, prompt, forced, lo, hi, temperature=0)
    ref = ar_generate(lm, prompt[None], torch.tensor([prompt.numel()]), forced.numel(),
                      extra_processors=[ScheduledTokensLogitsProcessor(forced[None], lo[None],
                                                                       hi[None])],
                      temperature=0)
    assert torch.equal(fast["tokens"], ref["tokens"][0])
    assert torch.allclose(fast["token_prob"], ref["token_prob"][0], atol=1e-5)
    predicted = int((forced < 0).sum())
    assert fast["nfe"] == predicted == 5 * 13 and ref["nfe"] == forced.numel()
    # sampling: the tokens stay in range, and a seed repeats them
    a = forced_span_generate(lm, prompt, forced, lo, hi, seed=3)
    b = forced_span_generate(lm, prompt, forced, lo, hi, seed=3)
    assert torch.equal(a["tokens"], b["tokens"])
    free = forced < 0
    assert bool(((a["tokens"][free] >= lo[free]) & (a["tokens"][free] < hi[free])).all())
    assert torch.equal(a["tokens"][~free], forced[~free])
