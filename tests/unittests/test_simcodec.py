"""SimCodec: shapes, group quantizer, reorganisation, stage 2, losses, tokenizer."""

import math
import os

import pytest
import torch

from speechbrain_gense.models.codec_losses import (
    CodecDiscriminator,
    CodecDiscriminatorLoss,
    CodecGeneratorLoss,
    MultiScaleMelLoss,
)
from speechbrain_gense.models.simcodec import (
    TINY_CONFIG,
    GroupQuantizer,
    SimCodec,
    SingleQuantizer,
    VectorQuantizer,
    codebook_stats,
    reorganize,
    same_code_share,
    to_stage2,
)
from speechbrain_gense.tokenizers.simcodec import SimCodecTokenizer

HOP = TINY_CONFIG["hop_length"]


def speechlike(batch=2, samples=3200, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    f0 = 120 + 80 * torch.rand(batch, 1, generator=g)
    x = sum(torch.sin(2 * math.pi * f0 * h * t) / h for h in range(1, 6))
    env = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t + torch.rand(batch, 1, generator=g))
    return 0.3 * env * x + 0.01 * torch.randn(batch, samples, generator=g)


def trained_stage1(steps=3, seed=0):
    torch.manual_seed(seed)
    model = SimCodec(**TINY_CONFIG).train()
    for i in range(steps):
        model(speechlike(seed=i))
    return model.eval()


# -- shapes -------------------------------------------------------------------


@pytest.mark.parametrize("samples", [HOP * 20, HOP * 20 + 5, HOP * 20 - 3, 7])
def test_shapes_through_encoder_quantizer_decoder(samples):
    model = SimCodec(**TINY_CONFIG)
    wav = torch.randn(3, samples)
    frames = math.ceil(samples / HOP)
    z = model.latent(wav)
    assert z.shape == (3, frames, TINY_CONFIG["latent_dim"])
    codes = model.encode(wav)
    assert codes.shape == (3, frames, 2) and codes.dtype == torch.long
    assert model.decode(codes).shape == (3, frames * HOP)
    out = model(wav)
    assert out["wav"].shape == wav.shape  # cropped back to the input length
    assert out["codes"].shape == (3, frames, 2)
    assert torch.isfinite(out["wav"]).all() and out["commit_loss"].dim() == 0


def test_stft_features_and_istft_head_are_inverse():
    model = SimCodec(**TINY_CONFIG)
    feats, head = model.features, model.head
    wav = torch.randn(2, HOP * 12)
    pad = (feats.n_fft - HOP) // 2
    spec = torch.stft(torch.nn.functional.pad(wav, (pad, pad)), feats.n_fft, HOP,
                      window=feats.window, center=False, return_complex=True)
    assert spec.shape[-1] == 12 == feats(wav).shape[-1]
    torch.testing.assert_close(head.istft(spec), wav, atol=1e-4, rtol=1e-4)


def test_default_config_frame_rate():
    model = SimCodec()
    assert model.frame_rate == 80.0 and model.num_codebooks == 2
    assert model.quantizer.codebook_sizes == (1024, 1024)


# -- quantizers ---------------------------------------------------------------


def test_group_quantizer_is_not_residual():
    torch.manual_seed(0)
    gq = GroupQuantizer(16, 8)
    gq.train()
    gq(torch.randn(4, 50, 8))  # initialise the codebooks from data
    gq.eval()
    z = torch.randn(3, 20, 8)
    codes = gq.quantize(z)
    # Each group's code is the nearest code of its own half, nothing else.
    assert torch.equal(codes[..., 0], gq.groups[0].quantize(z[..., :4]))
    assert torch.equal(codes[..., 1], gq.groups[1].quantize(z[..., 4:]))
    z2 = z.clone()
    z2[..., 4:] = torch.randn(3, 20, 4) * 5
    codes2 = gq.quantize(z2)
    assert torch.equal(codes2[..., 0], codes[..., 0])
    assert not torch.equal(codes2[..., 1], codes[..., 1])
    # The quantized latent is the concatenation of the two codes.
    zq, c, _ = gq(z)
    torch.testing.assert_close(zq, torch.cat([gq.groups[0].embed[c[..., 0]],
                                              gq.groups[1].embed[c[..., 1]]], -1))
    assert torch.equal(gq.unflatten_codes(gq.flatten_codes(c)), c)


def test_vector_quantizer_usage_counts_and_mask():
    vq = VectorQuantizer(8, 4, dead_code_threshold=0).train()
    z = torch.randn(2, 6, 4, requires_grad=True)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    zq, codes, commit = vq(z, mask)
    assert int(vq.usage.sum()) == 8
    assert torch.equal(vq.usage, torch.bincount(codes[mask], minlength=8).float())
    (zq.sum() + commit).backward()  # straight-through gradient reaches z
    assert z.grad is not None and torch.isfinite(z.grad).all()
    vq.eval()
    vq(z)
    assert int(vq.usage.sum()) == 8  # eval does not count unless asked
    vq.track_usage = True
    vq(z)
    assert int(vq.usage.sum()) == 20
    assert codebook_stats(torch.tensor([2.0, 2.0, 0.0]))["perplexity"] == 2.0


# -- reorganisation --------------------------------------------------------------


def test_reorganize_selects_by_usage_and_concatenates():
    torch.manual_seed(0)
    gq = GroupQuantizer((10, 6), 8)
    u1 = torch.tensor([0., 9., 1., 7., 0., 3., 8., 2., 0., 5.])
    u2 = torch.tensor([4., 0., 6., 1., 9., 0.])
    gq.groups[0].usage.copy_(u1)
    gq.groups[1].usage.copy_(u2)
    top_n, top_k = 3, 2
    sq = reorganize(gq, top_n, top_k)
    assert isinstance(sq, SingleQuantizer)
    assert sq.codebook_size == top_n * top_k and sq.embed.shape == (6, 8)
    assert sq.top_n_index.tolist() == [1, 6, 3]
    assert sq.top_k_index.tolist() == [4, 2]
    c1, c2 = gq.groups[0].embed, gq.groups[1].embed
    for a in range(top_n):
        for b in range(top_k):
            expected = torch.cat([c1[sq.top_n_index[a]], c2[sq.top_k_index[b]]])
            assert torch.equal(sq.embed[a * top_k + b], expected)
    assert int(sq.usage.sum()) == 0
    # A latent made of two kept codes maps to code a * K + b.
    z = torch.cat([c1[6], c2[2]])[None, None]
    assert sq.quantize(z).item() == 1 * top_k + 1
    # Explicit usage overrides the stored counts.
    sq2 = reorganize(gq, 2, 2, usage=(torch.arange(10.), torch.arange(6.)))
    assert sq2.top_n_index.tolist() == [9, 8] and sq2.top_k_index.tolist() == [5, 4]
    with pytest.raises(ValueError):
        reorganize(gq, 11, 2)


def test_to_stage2_copies_weights_and_reinitialises_projections():
    s1 = trained_stage1()
    wav = speechlike(seed=5)
    s2 = to_stage2(s1, top_n=4, top_k=4, wav=wav)
    assert isinstance(s2.quantizer, SingleQuantizer) and s2.num_codebooks == 1
    assert s2.quantizer.codebook_size == 16 and s2.config["codebook_size"] == 16
    sd1, sd2 = s1.state_dict(), s2.state_dict()
    copied = [k for k in sd1 if k.startswith(("encoder.", "decoder.", "head."))]
    assert copied and all(torch.equal(sd1[k], sd2[k]) for k in copied)
    for k in ("proj_in.weight", "proj_out.weight"):
        assert sd1[k].shape == sd2[k].shape and not torch.equal(sd1[k], sd2[k])
    ref = reorganize(s1.quantizer, 4, 4)
    assert torch.equal(s2.quantizer.embed, ref.embed)
    info = s2.reorganization
    assert info["before"]["groups"][0]["used"] >= 1
    assert info["after"]["tokens"]["size"] == 16 and info["after"]["frames"] == 400
    assert len(info["kept_usage_share"]) == 2
    assert s2(wav)["codes"].shape == (2, 200, 1)
    with pytest.raises(ValueError):
        to_stage2(s2, 2, 2)


def _toy_group_usage(sizes, steps=40, centres=32, seed=0):
    """A GroupQuantizer of ``sizes`` fitted (EMA) on a toy mixture with flat usage."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    means = 4 * torch.randn(centres, 4, generator=g)
    gq = GroupQuantizer(sizes, 4, decay=0.8).train()
    for _ in range(steps):
        idx = torch.randint(0, centres, (8, 64), generator=g)
        gq(means[idx] + 0.3 * torch.randn(8, 64, 4, generator=g))
    gq.reset_usage()
    for _ in range(10):  # usage counted on fresh batches
        idx = torch.randint(0, centres, (8, 64), generator=g)
        gq(means[idx] + 0.3 * torch.randn(8, 64, 4, generator=g))
    return gq


def test_reorganisation_keeps_the_usage_share_of_groups_sized_like_the_kept_codes():
    """Groups of the kept sizes keep >= 90 % of the usage (here all of it); 4x
    larger groups with flat usage keep a small share (the first shipped codec's
    18 % / 31 % problem)."""
    top_n, top_k = 8, 8
    for sizes, low, high in [((8, 8), 0.999, 1.0), ((32, 32), 0.0, 0.5)]:
        gq = _toy_group_usage(sizes)
        usage = [u.clone() for u in gq.usage]
        assert all(int((u > 0).sum()) > 0.75 * n for u, n in zip(usage, sizes))  # in use
        sq = reorganize(gq, top_n, top_k)
        for u, idx in zip(usage, (sq.top_n_index, sq.top_k_index)):
            share = float(u[idx].sum() / u.sum())
            assert low <= share <= high, (sizes, share)
    # The recipe's check: to_stage2 reports the kept share and flags a short one.
    torch.manual_seed(0)
    for sizes, ok in [((8, 8), True), ((32, 32), False)]:
        s1 = SimCodec(**dict(TINY_CONFIG, codebook_size=list(sizes))).train()
        for i in range(6):
            s1(speechlike(seed=i))
        s1.eval()
        s2 = to_stage2(s1, top_n, top_k, wav=speechlike(seed=9), reinit_projections=False,
                       min_kept_share=0.9)
        info = s2.reorganization
        assert info["meets_min_kept_share"] is ok, info["kept_usage_share"]
        assert info["group_sizes"] == list(sizes)
        if ok:
            assert min(info["kept_usage_share"]) >= 0.9


def test_stage2_with_copied_projections_keeps_every_code():
    """Group sizes equal to top_n / top_k and copied projections: every frame's
    stage-2 code is its stage-1 pair, and the decoded audio is identical."""
    torch.manual_seed(0)
    s1 = SimCodec(**dict(TINY_CONFIG, codebook_size=[4, 8])).train()
    for i in range(4):
        s1(speechlike(seed=i))
    s1.eval()
    wav = speechlike(seed=7)
    s2 = to_stage2(s1, 4, 8, wav=wav, reinit_projections=False).eval()
    assert s2.reorganization["same_code_share"] == 1.0
    assert s2.reorganization["kept_usage_share"] == [1.0, 1.0]
    assert s2.reorganization["after"]["tokens"]["used"] == \
        s2.reorganization["before"]["tokens"]["used"]
    assert torch.allclose(s1.decode(s1.encode(wav)), s2.decode(s2.encode(wav)), atol=1e-5)
    # GenSE's re-initialised projections change most codes.
    s2_fresh = to_stage2(s1, 4, 8, wav=wav)
    assert s2_fresh.reorganization["same_code_share"] < 0.9
    assert same_code_share(s1, s2, wav) == 1.0


# -- losses and training -----------------------------------------------------------


def test_losses_finite_and_gan_training_reduces_reconstruction():
    torch.manual_seed(0)
    model = SimCodec(**TINY_CONFIG).train()
    disc = CodecDiscriminator(periods=(2, 3), num_scales=2, width=0.0625)
    g_loss, d_loss = CodecGeneratorLoss(16000), CodecDiscriminatorLoss()
    opt_g = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=1e-3)
    wav = speechlike(batch=2, samples=3200)
    recon = []
    for _ in range(20):
        out = model(wav)
        y_hat = out["wav"]
        scores_fake, _ = disc(y_hat.detach().unsqueeze(1))
        scores_real, feats_real = disc(wav.unsqueeze(1))
        d = d_loss(scores_fake, scores_real)
        assert torch.isfinite(d["D_loss"])
        opt_d.zero_grad()
        d["D_loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in disc.parameters() if p.grad is not None)
        opt_d.step()
        scores_fake, feats_fake = disc(y_hat.unsqueeze(1))
        _, feats_real = disc(wav.unsqueeze(1))
        feats_real = [[f.detach() for f in fs] for fs in feats_real]
        g = g_loss(y_hat, wav, out["commit_loss"], scores_fake, feats_fake, feats_real)
        for key in ("loss", "G_recon_loss", "G_commit_loss", "G_mse_fake_loss",
                    "G_feat_match_loss"):
            assert torch.isfinite(g[key]), key
        opt_g.zero_grad()
        g["loss"].backward()
        assert model.encoder.embed.weight.grad.abs().sum() > 0
        opt_g.step()
        recon.append(float(g["G_recon_loss"].detach()))
    assert max(recon[-3:]) < 0.75 * recon[0], recon


def test_mel_loss_zero_on_identity_and_handles_channel_dim():
    loss = MultiScaleMelLoss(16000)
    y = speechlike()
    assert float(loss(y, y)) == 0.0
    assert float(loss(y.unsqueeze(1), (y + 0.05).unsqueeze(1))) > 0


# -- tokenizer ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", [1, 2])
def test_tokenizer_save_load_round_trip(tmp_path, stage):
    model = trained_stage1()
    if stage == 2:
        model = to_stage2(model, 4, 8)
    tok = SimCodecTokenizer(model)
    assert tok.num_codebooks == 1
    assert tok.vocab_size == (32 if stage == 2 else TINY_CONFIG["codebook_size"] ** 2)
    path = tok.save(str(tmp_path / "codec"))
    again = SimCodecTokenizer(str(tmp_path / "codec"))
    again_file = SimCodecTokenizer(path)
    wav, lens = speechlike(batch=2, samples=1000, seed=3), torch.tensor([1.0, 0.6])
    tokens, tlens = tok.encode(wav, lens)
    assert tokens.shape == (2, math.ceil(1000 / HOP), 1)
    assert int(tokens.max()) < tok.vocab_size
    for other in (again, again_file):
        t2, l2 = other.encode(wav, lens)
        assert torch.equal(tokens, t2) and torch.equal(tlens, l2)
        torch.testing.assert_close(tok.decode(tokens, tlens), other.decode(t2, l2),
                                   rtol=0, atol=0)
    assert tok.decode(tokens, tlens).shape == (2, tokens.shape[1] * HOP)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_restoring_in_fewer_bits_keeps_the_tokens_and_the_fingerprint(tmp_path, dtype):
    """``save(dtype=...)`` converts the decoder only: same tokens, same fingerprint."""
    from speechbrain_gense.tokenizers.cache import tokenizer_fingerprint

    tok = SimCodecTokenizer(to_stage2(trained_stage1(), 4, 8))
    exact = SimCodecTokenizer(tok.save(str(tmp_path / "fp32")))
    small = SimCodecTokenizer(tok.save(str(tmp_path / dtype), dtype=dtype))
    blob = torch.load(tmp_path / dtype / "simcodec.ckpt", weights_only=True)
    original = tok.model.state_dict()
    for key, value in blob["state_dict"].items():
        if key.startswith(("encoder.", "proj_in.", "quantizer.")) and value.is_floating_point():
            assert torch.equal(value.float(), original[key]), key  # kept without loss
    assert any(v.dtype == torch.float32 for k, v in blob["state_dict"].items()
               if k.startswith("encoder."))
    assert all(v.dtype != torch.float32 for k, v in blob["state_dict"].items()
               if k.startswith("decoder."))
    assert blob["storage"] == {"dtype": dtype, "kept": list(SimCodec.exact_prefixes)}
    wav = speechlike(batch=2, samples=1000, seed=4)
    tokens, lens = exact.encode(wav)
    t2, _ = small.encode(wav)
    assert torch.equal(tokens, t2)
    assert tokenizer_fingerprint(small) == tokenizer_fingerprint(exact)
    ref, out = exact.decode(tokens, lens), small.decode(tokens, lens)
    rel = ((out - ref).norm() / ref.norm()).item()
    assert 0 < rel < (2e-3 if dtype == "float16" else 2e-2)
    assert os.path.getsize(tmp_path / dtype / "simcodec.ckpt") < \
        os.path.getsize(tmp_path / "fp32" / "simcodec.ckpt")


def test_tokenizer_stage1_unflattened_and_missing_checkpoint(tmp_path):
    tok = SimCodecTokenizer(trained_stage1(), flatten=False)
    assert tok.num_codebooks == 2 and tok.vocab_size == TINY_CONFIG["codebook_size"]
    tokens, _ = tok.encode(speechlike(samples=320))
    assert tokens.shape == (2, 20, 2)
    assert tok.decode(tokens).shape == (2, 320)
    with pytest.raises(FileNotFoundError):
        SimCodecTokenizer(str(tmp_path / "nothing"))


def test_decoder_fine_tuning_keeps_the_tokens_and_trains_the_decoder():
    """``freeze_prefixes: tokens``: CodecBrain trains the decoder alone (GAN
    phase included); encoder, codebook (no EMA update) and fingerprint stay."""
    from speechbrain.dataio.batch import PaddedBatch

    from speechbrain_gense.brains.codec import CodecBrain
    from speechbrain_gense.models.codec_losses import (
        CodecDiscriminator,
        CodecDiscriminatorLoss,
    )
    from speechbrain_gense.tokenizers.cache import tokenizer_fingerprint

    torch.manual_seed(0)
    model = SimCodec(**{**TINY_CONFIG, "quantizer": "single", "codebook_size": 16})
    wav = speechlike(batch=2, samples=3200)
    with torch.no_grad():
        model.train()(wav)  # data-initialise the codebook, as a trained codec has it
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fingerprint, tokens = tokenizer_fingerprint(SimCodecTokenizer(model)), model.encode(wav)
    for param in model.parameters():  # the tokenizer froze it; training unfreezes
        param.requires_grad_(True)
    hparams = {"generator_loss": CodecGeneratorLoss(16000),
               "discriminator_loss": CodecDiscriminatorLoss(),
               "opt_class_generator": lambda p: torch.optim.AdamW(p, 1e-3),
               "opt_class_discriminator": lambda p: torch.optim.AdamW(p, 1e-3),
               "adversarial_start_epoch": 1, "valid_pesq_utterances": 0,
               "freeze_prefixes": "tokens"}
    brain = CodecBrain(modules={"codec": model,
                                "discriminator": CodecDiscriminator(periods=(2,), num_scales=1,
                                                                    width=0.0625)},
                       hparams=hparams, run_opts={"device": "cpu"})
    brain.init_optimizers()
    brain.modules.train()
    batch = PaddedBatch([{"sig": w} for w in wav])
    for _ in range(3):
        brain.fit_batch(batch)
    assert "D_loss" in brain.last_losses  # the adversarial phase ran
    after = model.state_dict()
    frozen = [k for k in before if k.startswith(model.exact_prefixes)]
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert frozen and not [k for k in moved if k in frozen], moved
    assert any(k.startswith("decoder.") for k in moved) and any(
        k.startswith("head.") for k in moved), moved
    assert torch.equal(model.encode(wav), tokens)
    assert tokenizer_fingerprint(SimCodecTokenizer(model)) == fingerprint
    # Everything frozen is one clear error.
    brain.hparams.freeze_prefixes = ["features.", "encoder.", "proj_in.", "quantizer.",
                                     "proj_out.", "decoder.", "head."]
    with pytest.raises(ValueError, match="leave no codec parameter to train"):
        brain.init_optimizers()


def test_fingerprint_ignores_usage_counts_but_not_the_codebook():
    from speechbrain_gense.tokenizers.cache import tokenizer_fingerprint

    model = SimCodec(**{**TINY_CONFIG, "quantizer": "single", "codebook_size": 16})
    before = tokenizer_fingerprint(SimCodecTokenizer(model))
    model.quantizer.usage += 3.0  # validation counts codes: the tokens do not change
    assert tokenizer_fingerprint(SimCodecTokenizer(model)) == before
    model.quantizer.embed[0] += 1.0
    assert tokenizer_fingerprint(SimCodecTokenizer(model)) != before
