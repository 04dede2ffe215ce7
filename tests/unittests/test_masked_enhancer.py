"""MaskedEnhancer (MAGE backbone): shapes, bidirectionality, padding, loss,
save/load, gradients, and selective layer retention from a Qwen2 checkpoint."""

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F

from speechbrain_gense.models.masked_enhancer import (
    SMALL_CONFIG,
    TINY_CONFIG,
    BandAwareEncoder,
    MaskedEnhancer,
    mel_band_edges,
)

V = 24
HOP = 16


def tiny_band_encoder(**kwargs):
    return BandAwareEncoder(n_fft=64, hop_length=HOP, num_bands=3, dim=8, out_dim=12, **kwargs)


def build(seed=0, **kwargs):
    torch.manual_seed(seed)
    cfg = dict(TINY_CONFIG, vocab_size=V)
    cfg.update(kwargs)
    return MaskedEnhancer(**cfg).eval()


def inputs(model, batch=2, length=10, seed=1):
    """Random inputs for every conditioning the model was built with."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V + 1, (batch, length, model.num_codebooks), generator=g)
    kw = {}
    if model.noisy_embed is not None:
        kw["noisy_tokens"] = torch.randint(0, model.noisy_vocab_size,
                                           (batch, length, model.noisy_codebooks), generator=g)
    if model.band_encoder is not None:
        kw["noisy_wav"] = torch.randn(batch, length * HOP, generator=g)
    if model.speaker_dim is not None:
        kw["speaker"] = torch.randn(batch, model.speaker_dim, generator=g)
    return tokens, kw


# ---------------------------------------------------------------- band encoder
def test_mel_band_edges():
    edges = mel_band_edges(800, 4)
    assert edges[0] == 0 and edges[-1] == 401 and len(edges) == 5
    widths = [b - a for a, b in pairwise(edges)]
    assert widths == sorted(widths)  # mel scale: bands widen with frequency
    assert mel_band_edges(8, 5) == [0, 1, 2, 3, 4, 5]  # every band at least one bin


def test_band_encoder_shapes_and_edges():
    enc = tiny_band_encoder()
    wav = torch.randn(2, 100)
    assert enc(wav).shape == (2, 100 // HOP + 1, 12)
    assert enc(wav, num_frames=4).shape == (2, 4, 12)
    padded = enc(wav, num_frames=9)
    assert padded.shape == (2, 9, 12) and padded[:, 7:].abs().sum() == 0
    custom = BandAwareEncoder(n_fft=64, hop_length=HOP, band_edges=[0, 10, 33], dim=4, out_dim=6)
    assert len(custom.bands) == 2 and custom.config["num_bands"] == 2
    with pytest.raises(ValueError, match="band_edges"):
        BandAwareEncoder(n_fft=64, hop_length=HOP, band_edges=[0, 10, 10, 33])
    with pytest.raises(ValueError, match="wav"):
        enc(torch.randn(2, 1, 100))


def test_band_encoder_lens_zero_padded_frames():
    enc = tiny_band_encoder()
    out = enc(torch.randn(2, 160), num_frames=10, lens=torch.tensor([1.0, 0.5]))
    assert out[1, 5:].abs().sum() == 0 and out[1, :5].abs().sum() > 0


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("num_codebooks", [1, 2])
@pytest.mark.parametrize("noisy,band,speaker", [
    (False, False, False), (True, False, False), (False, True, False),
    (False, False, True), (True, True, True)])
def test_shapes(num_codebooks, noisy, band, speaker):
    model = build(num_codebooks=num_codebooks, noisy_vocab_size=None if noisy else 0,
                  band_encoder=tiny_band_encoder() if band else None,
                  speaker_dim=6 if speaker else None)
    tokens, kw = inputs(model, batch=2, length=7)
    out = model(tokens, lens=torch.tensor([1.0, 0.6]), **kw)
    assert out["logits"].shape == (2, 7, num_codebooks, V)
    assert out["hidden"].shape == (2, 7, TINY_CONFIG["hidden_size"])
    assert torch.isfinite(out["logits"]).all()
    assert model.mask_id == V and model.embed[0].num_embeddings == V + 1


def test_noisy_vocab_and_codebooks_differ():
    model = build(num_codebooks=2, noisy_vocab_size=7, noisy_codebooks=1)
    assert model.noisy_embed[0].num_embeddings == 7 and len(model.noisy_embed) == 1
    tokens, kw = inputs(model, length=5)
    assert kw["noisy_tokens"].shape == (2, 5, 1)
    assert model(tokens, **kw)["logits"].shape == (2, 5, 2, V)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tokens=torch.zeros(2, 5, 2, dtype=torch.long)), "tokens must be"),
    (dict(tokens=torch.zeros(2, 5, dtype=torch.long)), "tokens must be"),
    (dict(noisy_tokens=None), "noisy_tokens are required"),
    (dict(noisy_tokens=torch.zeros(2, 4, 1, dtype=torch.long)), "noisy_tokens must be"),
    (dict(noisy_wav=None), "noisy_wav is required"),
    (dict(noisy_wav=torch.zeros(2, 1, 80)), "noisy_wav must be"),
    (dict(speaker=None), "speaker is required"),
    (dict(speaker=torch.zeros(2, 5)), "speaker must be"),
    (dict(lens=torch.ones(3)), "lens must be"),
    (dict(tokens=torch.zeros(2, 600, 1, dtype=torch.long),
          noisy_tokens=torch.zeros(2, 600, 1, dtype=torch.long)), "max_position"),
])
def test_input_errors(kwargs, match):
    model = build(band_encoder=tiny_band_encoder(), speaker_dim=6)
    tokens, kw = inputs(model, length=5)
    kw = dict(kw, tokens=tokens)
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        model(**kw)


def test_unexpected_conditioning_errors():
    model = build(noisy_vocab_size=0)
    tokens = torch.zeros(1, 4, 1, dtype=torch.long)
    for kw, match in [(dict(noisy_tokens=tokens), "noisy_vocab_size=0"),
                      (dict(noisy_wav=torch.zeros(1, 64)), "without band_encoder"),
                      (dict(speaker=torch.zeros(1, 3)), "speaker_dim=None")]:
        with pytest.raises(ValueError, match=match):
            model(tokens, **kw)
    with pytest.raises(ValueError, match="attn_implementation"):
        build(attn_implementation="flash_attention_2")


# ---------------------------------------------------------------- attention
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_attention_is_bidirectional(attn):
    model = build(attn_implementation=attn, speaker_dim=6)
    tokens, kw = inputs(model, batch=1, length=12)
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    with torch.no_grad():
        a = model(tokens, **kw)["logits"]
        b = model(changed, **kw)["logits"]
    assert not torch.allclose(a[:, 0], b[:, 0])  # the end influences the start


def test_eager_and_sdpa_agree():
    sdpa = build(attn_implementation="sdpa")
    eager = build(attn_implementation="eager")
    eager.load_state_dict(sdpa.state_dict())
    tokens, kw = inputs(sdpa, length=9)
    lens = torch.tensor([1.0, 5 / 9])
    with torch.no_grad():
        a = sdpa(tokens, lens=lens, **kw)["logits"]
        b = eager(tokens, lens=lens, **kw)["logits"]
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_does_not_leak(attn):
    model = build(attn_implementation=attn, speaker_dim=6)
    tokens, kw = inputs(model, length=10)
    lens = torch.tensor([1.0, 0.5])
    tokens2, noisy2 = tokens.clone(), kw["noisy_tokens"].clone()
    tokens2[1, 5:] = (tokens2[1, 5:] + 3) % V
    noisy2[1, 5:] = (noisy2[1, 5:] + 3) % V
    with torch.no_grad():
        a = model(tokens, lens=lens, **kw)["logits"]
        b = model(tokens2, lens=lens, **dict(kw, noisy_tokens=noisy2))["logits"]
    assert torch.equal(a[0], b[0])
    assert torch.allclose(a[1, :5], b[1, :5], atol=1e-6)
    assert not torch.allclose(a[1, 5:], b[1, 5:])


def test_padded_batch_matches_single_item():
    model = build(speaker_dim=6)
    tokens, kw = inputs(model, length=10)
    with torch.no_grad():
        batched = model(tokens, lens=torch.tensor([1.0, 0.4]), **kw)["logits"]
        single = model(tokens[1:, :4], noisy_tokens=kw["noisy_tokens"][1:, :4],
                       speaker=kw["speaker"][1:])["logits"]
    assert torch.allclose(batched[1, :4], single[0], atol=1e-5)


@pytest.mark.parametrize("num_codebooks", [1, 2])
def test_heads_on_masked_positions_only_match_the_full_heads(num_codebooks):
    model = build(num_codebooks=num_codebooks, speaker_dim=6)
    tokens, kw = inputs(model, length=10)
    where = tokens == model.mask_id
    where[0, :3] = True  # some positions of each item
    with torch.no_grad():
        full = model(tokens, lens=torch.tensor([1.0, 0.6]), **kw)
        part = model(tokens, lens=torch.tensor([1.0, 0.6]), logits_mask=where, **kw)
        frames = model(tokens, logits_mask=where.any(-1), **kw)["logits"]
    assert part["logits"].shape == full["logits"].shape
    assert torch.allclose(part["logits"][where], full["logits"][where], atol=1e-6)
    assert part["logits"][~where].abs().sum() == 0
    assert torch.equal(part["hidden"], full["hidden"])
    assert frames.shape == full["logits"].shape
    with pytest.raises(ValueError, match="logits_mask"):
        model(tokens, logits_mask=where[:, :5], **kw)


@pytest.mark.parametrize("num_codebooks", [1, 2])
def test_packed_heads_give_the_selected_logits_in_row_major_order(num_codebooks):
    model = build(num_codebooks=num_codebooks, speaker_dim=6)
    tokens, kw = inputs(model, length=10)
    where = torch.rand(tokens.shape, generator=torch.Generator().manual_seed(1)) < 0.4
    lens = torch.tensor([1.0, 0.6])
    with torch.no_grad():
        part = model(tokens, lens=lens, logits_mask=where, **kw)
        packed = model(tokens, lens=lens, logits_mask=where, packed=True, **kw)
    assert "logits" not in packed
    assert packed["masked_logits"].shape == (int(where.sum()), model.vocab_size)
    assert torch.equal(packed["masked_logits"], part["logits"][where])
    assert torch.equal(packed["hidden"], part["hidden"])
    with pytest.raises(ValueError, match="packed=True needs a logits_mask"):
        model(tokens, packed=True, **kw)


def test_unpadded_batch_takes_the_mask_free_attention_path_with_the_same_outputs():
    model = build()
    tokens, kw = inputs(model, length=8)
    with torch.no_grad():
        unmasked = model(tokens, lens=torch.ones(2), **kw)["logits"]
        # the same attention with an explicit all-True key mask (the path before)
        valid = torch.ones(2, 1, 1, 8, dtype=torch.bool)
        x = model.embed[0](tokens[..., 0]) + model.noisy_embed[0](kw["noisy_tokens"][..., 0])
        pos = torch.arange(8)[None]
        emb = model.rotary_emb(x, pos)
        for layer in model.layers:
            x = layer(x, attention_mask=valid, position_ids=pos, position_embeddings=emb,
                      is_causal=False)
        masked = model.head_logits(model.norm(x))
    assert torch.allclose(unmasked, masked, atol=1e-6)


# ---------------------------------------------------------------- loss
def test_loss_counts_masked_positions_only():
    torch.manual_seed(0)
    model = build(num_codebooks=2)
    logits = torch.randn(2, 6, 2, V, requires_grad=True)
    targets = torch.randint(0, V, (2, 6, 2))
    mask = torch.rand(2, 6, 2) < 0.4
    mask[0, 0, 0] = True
    stats = model.loss(logits, targets, mask)
    expected = F.cross_entropy(logits[mask], targets[mask])
    assert torch.allclose(stats["loss"], expected)
    assert int(stats["n"]) == int(mask.sum())
    acc = (logits[mask].argmax(-1) == targets[mask]).float().mean()
    assert torch.allclose(stats["acc"], acc)
    # unmasked positions have no influence on the loss
    stats["loss"].backward()
    assert logits.grad[~mask].abs().sum() == 0 and logits.grad[mask].abs().sum() > 0
    # perfect predictions at masked positions: accuracy 1
    perfect = F.one_hot(targets, V).float() * 50
    assert float(model.loss(perfect, targets, mask)["acc"]) == 1.0


def test_loss_empty_mask_and_errors():
    model = build()
    logits = torch.randn(1, 3, 1, V, requires_grad=True)
    targets = torch.zeros(1, 3, 1, dtype=torch.long)
    stats = model.loss(logits, targets, torch.zeros(1, 3, 1, dtype=torch.bool))
    assert stats["loss"].item() == 0.0 and int(stats["n"]) == 0
    stats["loss"].backward()
    with pytest.raises(ValueError, match="logits"):
        model.loss(logits, targets[..., 0], targets.bool())


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path):
    model = build(num_codebooks=2, band_encoder=tiny_band_encoder(), speaker_dim=6, dropout=0.1)
    tokens, kw = inputs(model, length=8)
    lens = torch.tensor([1.0, 0.75])
    path = tmp_path / "mage.pt"
    model.save(path)
    loaded = MaskedEnhancer.load(path).eval()
    assert loaded.config == model.config
    with torch.no_grad():
        a = model(tokens, lens=lens, **kw)
        b = loaded(tokens, lens=lens, **kw)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["hidden"], b["hidden"])


# ---------------------------------------------------------------- gradients
def test_gradient_reaches_all_parameters():
    model = build(num_codebooks=2, band_encoder=tiny_band_encoder(), speaker_dim=6).train()
    tokens, kw = inputs(model, length=8)
    tokens[:, ::2] = model.mask_id
    out = model(tokens, lens=torch.tensor([1.0, 0.75]), **kw)
    target = torch.randint(0, V, tokens.shape)
    model.loss(out["logits"], target, tokens == model.mask_id)["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gradient_checkpointing_matches():
    model = build().train()
    tokens, kw = inputs(model, length=6)
    grads = []
    for flag in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = flag
        model(tokens, **kw)["logits"].square().mean().backward()
        grads.append(model.layers[0].self_attn.q_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_configs_and_parameter_count():
    model = build()
    n = model.num_parameters()
    assert n == sum(p.numel() for p in model.parameters())
    model.embed[0].weight.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == n - model.embed[0].weight.numel()
    assert SMALL_CONFIG["hidden_size"] == 384 and SMALL_CONFIG["num_layers"] == 8
    default = MaskedEnhancer(vocab_size=8, hidden_size=384, num_heads=6, num_layers=1)
    assert default.config["intermediate_size"] == 1024


# ---------------------------------------------------------------- Qwen2 layer retention
@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
                      rms_norm_eps=1e-5)
    source = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # make the final norm distinguishable from a fresh one
        source.model.norm.weight.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("qwen2")
    source.save_pretrained(path)
    return path, source.model


def test_from_pretrained_qwen2_keeps_layers(qwen_dir):
    path, source = qwen_dir
    model = MaskedEnhancer.from_pretrained_qwen2(str(path), keep_layers=[0, 2], vocab_size=V,
                                                 speaker_dim=6).eval()
    assert len(model.layers) == 2 and model.config["num_layers"] == 2
    for kept, idx in zip(model.layers, [0, 2]):
        theirs = source.layers[idx].state_dict()
        mine = kept.state_dict()
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert torch.equal(mine[key], theirs[key]), (idx, key)
    assert torch.equal(model.norm.weight, source.norm.weight)
    cfg = model.config
    assert (cfg["hidden_size"], cfg["num_heads"], cfg["num_kv_heads"], cfg["intermediate_size"],
            cfg["rope_theta"], cfg["rms_norm_eps"]) == (32, 2, 1, 48, 5000.0, 1e-5)
    assert model.embed[0].num_embeddings == V + 1 and model.heads[0].out_features == V
    assert model.pretrained_info["keep_layers"] == [0, 2]
    tokens, kw = inputs(model, length=6)
    assert model(tokens, **kw)["logits"].shape == (2, 6, 1, V)


def test_from_pretrained_qwen2_order_and_reload(qwen_dir, tmp_path):
    path, source = qwen_dir
    model = MaskedEnhancer.from_pretrained_qwen2(path, keep_layers=[3, 1], vocab_size=V,
                                                 noisy_vocab_size=0).eval()
    assert torch.equal(model.layers[0].mlp.up_proj.weight, source.layers[3].mlp.up_proj.weight)
    assert torch.equal(model.layers[1].self_attn.k_proj.bias,
                       source.layers[1].self_attn.k_proj.bias)
    model.save(tmp_path / "m.pt")
    loaded = MaskedEnhancer.load(tmp_path / "m.pt").eval()
    tokens = torch.randint(0, V, (1, 5, 1))
    with torch.no_grad():
        assert torch.equal(model(tokens)["logits"], loaded(tokens)["logits"])


def test_from_pretrained_qwen2_errors(qwen_dir, tmp_path):
    path, _ = qwen_dir
    with pytest.raises(ValueError, match="out of range"):
        MaskedEnhancer.from_pretrained_qwen2(path, keep_layers=[0, 4], vocab_size=V)
    with pytest.raises(ValueError, match="out of range"):
        MaskedEnhancer.from_pretrained_qwen2(path, keep_layers=[-1], vocab_size=V)
    with pytest.raises(ValueError, match="at least one"):
        MaskedEnhancer.from_pretrained_qwen2(path, keep_layers=[], vocab_size=V)
    with pytest.raises(FileNotFoundError):
        MaskedEnhancer.from_pretrained_qwen2(tmp_path / "missing", keep_layers=[0], vocab_size=V)


def test_zero_length_item_stays_finite():
    model = build()
    tokens, kw = inputs(model, length=6)
    out = model(tokens, lens=torch.tensor([1.0, 0.0]), **kw)
    assert torch.isfinite(out["logits"]).all()

