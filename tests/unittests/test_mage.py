"""MAGE glue: one training path and one inference path over the shared modules."""

import os

import pytest
import torch

from speechbrain_gense.models.base import GenerativeEnhancer, get_method
from speechbrain_gense.models.debug import tiny_mage
from speechbrain_gense.models.mage import MAGE
from speechbrain_gense.models.masked_enhancer import TINY_CONFIG, MaskedEnhancer
from speechbrain_gense.tokenizers.debug import DebugTokenizer


def build(strategy="ctf", corrector=True, band=True):
    return tiny_mage(mask_strategy=strategy, corrector=corrector, band=band).train()


def test_mage_is_the_registered_mage_method():
    mage = build()
    assert isinstance(mage, GenerativeEnhancer) and get_method("mage") is MAGE
    assert mage.output_tokenizer is mage.tokenizer and mage.sample_rate == 16000
    assert mage.supports_prefix and mage.max_frames() == TINY_CONFIG["max_position"]
    assert set(mage.decode_defaults) >= {"steps", "strategy", "corrector", "precision"}


def test_max_frames_counts_the_speaker_position():
    assert tiny_mage(speaker_dim=8, max_position=100).max_frames() == 99
    assert tiny_mage(max_position=100).max_frames() == 100


def test_unknown_decoding_option_is_an_error():
    mage = build().eval()
    with pytest.raises(ValueError, match=r"mage: unknown decoding option 'stpes' \(valid: .*steps"):
        mage.enhance(torch.randn(1, 1600), stpes=4)
    with pytest.raises(ValueError, match="unknown decoding option"):
        tiny_mage(decode_opts={"stepz": 2})


def test_enhance_reports_nfe_and_strategy_option_changes_the_order():
    mage = build().eval()
    noisy = torch.randn(1, 3200)
    gen = torch.Generator().manual_seed
    out = mage.enhance(noisy, generator=gen(0), steps=2, corrector_steps=1)
    assert out["nfe"] == 2 + 1 + 1
    assert mage.enhance(noisy, generator=gen(0), steps=2, corrector=False)["nfe"] == 2
    ctf = mage.enhance(noisy, generator=gen(0), steps=4, corrector=False, strategy="ctf")
    default = mage.enhance(noisy, generator=gen(0), steps=4, corrector=False)
    assert torch.equal(ctf["tokens"], default["tokens"])  # frequency table: ctf by default
    with pytest.raises(ValueError, match="strategy"):
        mage.enhance(noisy, strategy="magic")
    plain = tiny_mage(corrector=False)
    assert plain.enhance(noisy, steps=2)["nfe"] == 2  # corrector=None: used when there is one
    with pytest.raises(ValueError, match="the model has no corrector"):
        plain.enhance(noisy, steps=2, corrector=True)


def test_prefix_tokens_are_kept_and_checked():
    mage = build(corrector=True).eval()
    noisy = torch.randn(2, 3200)  # 16 frames
    prefix = torch.randint(0, 32, (2, 5, 1))
    out = mage.enhance(noisy, prefix=prefix, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["tokens"][:, :5], prefix) and out["tokens"].shape == (2, 16, 1)
    assert torch.all(out["confidence"][:, :5] > 0)
    with pytest.raises(ValueError, match=r"expected prefix \[B=2, P, K=1\]"):
        mage.enhance(noisy, prefix=prefix[:1])


def test_vocab_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="vocab_size"):
        MAGE(DebugTokenizer(vocab_size=32), MaskedEnhancer(16, **TINY_CONFIG))


def test_forward_train_masks_only_valid_frames_and_losses_are_finite():
    mage = build()
    noisy, clean = torch.randn(2, 3200), torch.randn(2, 3200)
    lens = torch.tensor([1.0, 0.5])
    tokens, tok_lens = mage.tokenize(clean, lens)
    out = mage.forward_train(tokens, mage.condition(noisy, lens))
    T = tokens.shape[1]
    n_valid = torch.round(tok_lens * T).long()
    assert out["mask"][1, n_valid[1]:].sum() == 0
    assert out["mask"].sum(dim=(1, 2)).min() >= 1
    # The corrector sees the clean token wherever nothing was masked.
    assert torch.equal(out["predicted"][~out["mask"]], tokens[~out["mask"]])
    losses = mage.losses(out)
    assert torch.isfinite(losses["loss"]) and "corrector_loss" in losses
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mage.enhancer.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mage.corrector.parameters())


def test_ctf_training_masks_the_rarest_tokens_at_zero_noise():
    mage = build()
    mage.mask_noise = 0.0
    tokens = torch.tensor([[[0], [31], [1], [30], [2], [29]]])
    cond = mage.condition(torch.randn(1, 1200))
    out = mage.forward_train(tokens, cond, ratio=0.5)
    masked = sorted(tokens[out["mask"]].tolist())
    assert masked == [29, 30, 31]


def test_enhance_keeps_length_is_seeded_and_gives_frame_confidence():
    mage = build()
    noisy = torch.randn(2, 3000)
    lens = torch.tensor([1.0, 0.6])
    a = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(1))
    b = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(1))
    c = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(2))
    assert a["wav"].shape == noisy.shape
    assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["wav"], b["wav"])
    assert not torch.equal(a["tokens"], c["tokens"])
    T = a["tokens"].shape[1]
    assert a["confidence"].shape == (2, T)
    n1 = int(torch.round(a["lens"][1] * T))
    assert torch.all(a["confidence"][1, n1:] == 0) and torch.all(a["tokens"][1, n1:] == 0)
    assert torch.all((a["confidence"] >= 0) & (a["confidence"] <= 1))


def test_generate_counts_model_calls_with_and_without_corrector():
    mage = build()
    cond = mage.condition(torch.randn(1, 1600))
    with_corr = mage.generate(cond, generator=torch.Generator().manual_seed(0))
    without = mage.generate(cond, generator=torch.Generator().manual_seed(0),
                            corrector=False)
    assert mage.generate(cond, steps=1)["steps"] == 1 + 1 + 1
    assert without["steps"] == 3
    assert with_corr["steps"] == 3 + 1 + 1
    assert without["remasked"] is None and with_corr["remasked"].any()


def test_random_strategy_without_frequency_table_decodes_by_confidence():
    mage = build(strategy="random", corrector=False, band=False)
    mage.token_frequency = None
    out = mage.enhance(torch.randn(1, 1600), steps=2,
                       generator=torch.Generator().manual_seed(0))
    assert out["tokens"].max() < 32


def test_bf16_precision_runs_the_enhancer_under_autocast_and_keeps_outputs_float32():
    mage = build().eval()
    seen = []
    mage.enhancer.register_forward_hook(  # packed logits: the masked positions' only
        lambda m, i, o: seen.append(o.get("logits", o.get("masked_logits")).dtype))
    noisy = torch.randn(1, 3200)
    a = mage.enhance(noisy, generator=torch.Generator().manual_seed(0))
    b = mage.enhance(noisy, generator=torch.Generator().manual_seed(0), precision="bf16")
    assert set(seen[:len(seen) // 2]) == {torch.float32}
    assert set(seen[len(seen) // 2:]) == {torch.bfloat16}
    assert b["wav"].dtype == torch.float32 and b["confidence"].dtype == torch.float32
    assert b["tokens"].shape == a["tokens"].shape and b["wav"].shape == noisy.shape
    with pytest.raises(ValueError, match="precision"):
        mage.enhance(noisy, precision="int4")


def test_save_load_round_trip_gives_the_same_enhancement(tmp_path):
    from speechbrain_gense.tokenizers.registry import load_tokenizer

    mage = build()
    mage.tokenizer = load_tokenizer("debug?vocab_size=32")
    folder = mage.save(str(tmp_path / "model"))
    again = MAGE.load(folder)
    assert get_method("mage").load(folder).decode_opts == mage.decode_opts
    import json
    import os

    assert json.load(open(os.path.join(folder, "mage.json")))["method"] == "mage"
    assert again.decode_opts == mage.decode_opts and again.mask_strategy == "ctf"
    assert torch.equal(again.token_frequency.counts, mage.token_frequency.counts)
    noisy = torch.randn(1, 2000)
    a = mage.eval().enhance(noisy, generator=torch.Generator().manual_seed(0))
    b = again.enhance(noisy, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a["tokens"], b["tokens"]) and torch.allclose(a["wav"], b["wav"])


def test_half_precision_export_halves_the_files_and_loads_as_float32(tmp_path):
    import os

    from speechbrain_gense.tokenizers.registry import load_tokenizer

    mage = build()
    mage.tokenizer = load_tokenizer("debug?vocab_size=32")
    full = mage.save(str(tmp_path / "fp32"))
    half = mage.save(str(tmp_path / "fp16"), dtype="float16")
    for name in ("enhancer.ckpt", "corrector.ckpt"):
        ratio = os.path.getsize(os.path.join(half, name)) / os.path.getsize(os.path.join(full, name))
        assert 0.45 < ratio < 0.7, (name, ratio)
    again = MAGE.load(half)
    params = list(again.enhancer.parameters()) + list(again.corrector.parameters())
    assert all(p.dtype == torch.float32 for p in params)
    for a, b in zip(mage.enhancer.state_dict().values(), again.enhancer.state_dict().values()):
        assert torch.equal(a.half().float(), b) if a.is_floating_point() else torch.equal(a, b)


def test_load_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="mage.json"):
        MAGE.load(str(tmp_path))


def test_heads_on_masked_positions_only_give_the_same_enhancement():
    mage = build().eval()
    noisy, lens = torch.randn(2, 3200), torch.tensor([1.0, 0.7])
    a = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(0))
    b = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(0), masked_head=False)
    assert mage.decode_options()["masked_head"] is True
    assert torch.equal(a["tokens"], b["tokens"]) and a["nfe"] == b["nfe"]
    assert torch.allclose(a["confidence"], b["confidence"], atol=1e-6)
    assert torch.allclose(a["wav"], b["wav"], atol=1e-6)


def test_cdf_sampler_option_is_seeded_and_decodes_the_same_way():
    mage = build().eval()
    noisy, lens = torch.randn(2, 3200), torch.tensor([1.0, 0.7])
    assert mage.decode_options()["sampler"] == "gumbel"
    a = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(0), sampler="cdf")
    b = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(0), sampler="cdf")
    g = mage.enhance(noisy, lens, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a["tokens"], b["tokens"]) and a["nfe"] == g["nfe"]
    assert a["tokens"].shape == g["tokens"].shape and not torch.equal(a["tokens"], g["tokens"])
    assert a["wav"].shape == noisy.shape
    with pytest.raises(ValueError, match="unknown sampler 'cfd'"):
        mage.enhance(noisy, lens, sampler="cfd")


def test_int8_precision_quantises_the_linear_layers_once_and_keeps_the_float_model():
    from torch import nn

    mage = build().eval()
    noisy = torch.randn(1, 3200)
    out = mage.enhance(noisy, generator=torch.Generator().manual_seed(0), precision="int8")
    assert out["tokens"].shape[:2] == (1, out["confidence"].shape[1])
    assert out["wav"].shape == noisy.shape and out["wav"].dtype == torch.float32
    q = mage.quantized_enhancer()
    assert q is mage.quantized_enhancer()  # cached
    assert not any(type(m) is nn.Linear for m in q.modules())
    assert any(type(m) is nn.Linear for m in mage.enhancer.modules())  # float model untouched
    assert all(not n.startswith("_int8") for n, _ in mage.named_modules())
    with torch.no_grad():
        mage.enhancer.heads[0].bias.add_(1.0)  # changed weights: quantised again
    assert mage.quantized_enhancer() is not q


def _content_mage(tmp_path, content):
    """tiny_mage's parts with a content encoder (``content``: a feature config)."""
    from speechbrain_gense.models.mage import build_content_encoder

    base = tiny_mage(band=True)
    encoder = build_content_encoder(content)
    enhancer = MaskedEnhancer(32, band_encoder=base.enhancer.band_encoder, content_dim=encoder.dim,
                              **TINY_CONFIG)
    return MAGE(base.tokenizer, enhancer, corrector=base.corrector,
                token_frequency=base.token_frequency, decode_opts=base.decode_opts,
                content_encoder=encoder).eval()


def test_content_features_are_aligned_to_the_token_frames_and_change_the_output(tmp_path):
    mage = _content_mage(tmp_path, {"name": "spectral", "kind": "fbank", "n_mels": 12})
    noisy = torch.randn(2, 2400)
    cond = mage.condition(noisy, torch.tensor([1.0, 0.5]))
    assert cond["content"].shape == (2, cond["num_frames"], 12)
    out = mage.predict(cond["noisy_tokens"], cond)
    without = mage.enhancer.content_proj
    with torch.no_grad():
        without.weight.zero_()
        without.bias.zero_()
    again = mage.predict(cond["noisy_tokens"], cond)
    assert not torch.allclose(out["logits"], again["logits"])  # the features reach the logits
    # a model with a content input needs its features, and a plain one refuses them
    with pytest.raises(ValueError, match="content is required"):
        mage.enhancer(cond["noisy_tokens"], noisy_tokens=cond["noisy_tokens"],
                      noisy_wav=noisy)
    with pytest.raises(ValueError, match="content_dim 12 != content encoder dim None"):
        MAGE(mage.tokenizer, mage.enhancer)
    # training crops the features with the tokens
    batch = mage.forward_train(cond["noisy_tokens"][:, :5], cond)
    assert batch["logits"].shape[1] == 5


def test_content_encoder_is_rebuilt_from_its_config_on_load(tmp_path):
    from speechbrain_gense.tokenizers.registry import load_tokenizer
    from speechbrain_gense.whisper import convert_ct2_whisper, write_tiny_ct2_folder

    hf = str(tmp_path / "hf")
    convert_ct2_whisper(write_tiny_ct2_folder(str(tmp_path / "ct2")), hf)
    mage = _content_mage(tmp_path, {"name": "whisper", "source": hf, "layer": 1})
    mage.tokenizer = load_tokenizer("debug?vocab_size=32")
    assert not any(p.requires_grad for p in mage.content_encoder.parameters())
    folder = mage.save(str(tmp_path / "model"))
    again = MAGE.load(folder)
    assert again.content_encoder.config() == mage.content_encoder.config()
    noisy = torch.randn(1, 3200)
    a = mage.enhance(noisy, generator=torch.Generator().manual_seed(0))
    b = again.enhance(noisy, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a["tokens"], b["tokens"])


def test_a_model_on_a_shipped_codec_still_loads_when_its_folder_is_copied_elsewhere(tmp_path):
    """The stored spec is relative to the model folder (``../../pretrained/rvqcodec``);
    a copy at another depth finds the shipped codec by its name."""
    import json
    import shutil

    from speechbrain_gense.tokenizers.cache import tokenizer_fingerprint
    from speechbrain_gense.tokenizers.registry import load_tokenizer

    tok = load_tokenizer("rvq:pretrained/rvqcodec?num_codebooks=2")
    mage = MAGE(tok, MaskedEnhancer(tok.vocab_size, **dict(TINY_CONFIG, num_codebooks=2)))
    folder = mage.save(str(tmp_path / "run" / "model"))
    with open(os.path.join(folder, "mage.json")) as f:
        spec = json.load(f)["tokenizer_spec"]
    assert spec.startswith("rvq:../") and spec.endswith("pretrained/rvqcodec?num_codebooks=2")
    moved = shutil.copytree(folder, tmp_path / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "model")
    again = MAGE.load(str(moved))
    assert again.tokenizer.num_codebooks == 2
    assert tokenizer_fingerprint(again.tokenizer) == tokenizer_fingerprint(tok)
