"""RVQ codec: residual quantizer, quantizer dropout, tokenizer contract, registry, voices."""

import math

import pytest
import torch

from speechbrain_gense.models.codec_losses import CodecGeneratorLoss, MultiScaleMelLoss
from speechbrain_gense.models.rvq_codec import (
    DEFAULT_RVQ_CONFIG,
    TINY_RVQ_CONFIG,
    RVQCodec,
    ResidualVectorQuantizer,
)
from speechbrain_gense.models.simcodec import count_parameters
from speechbrain_gense.tokenizers.registry import SpecError, guess_kind, load_tokenizer
from speechbrain_gense.tokenizers.rvq import RVQTokenizer

HOP = TINY_RVQ_CONFIG["hop_length"]
K = TINY_RVQ_CONFIG["num_quantizers"]


def speechlike(batch=2, samples=3200, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 16000
    f0 = 120 + 80 * torch.rand(batch, 1, generator=g)
    x = sum(torch.sin(2 * math.pi * f0 * h * t) / h for h in range(1, 6))
    env = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t + torch.rand(batch, 1, generator=g))
    return 0.3 * env * x + 0.01 * torch.randn(batch, samples, generator=g)


def gaussian_mixture(n=4000, dim=8, centres=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = 3 * torch.randn(centres, dim, generator=g)
    idx = torch.randint(0, centres, (n,), generator=g)
    return means[idx] + 0.5 * torch.randn(n, dim, generator=g)


def fitted_rvq(num_quantizers=4, codebook_size=16, dim=8, steps=30, dropout=0.0):
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(num_quantizers, codebook_size, dim, dropout_prob=dropout,
                                  decay=0.8).train()
    data = gaussian_mixture(dim=dim)
    for i in range(steps):
        batch = data[torch.randint(0, data.shape[0], (512,))]
        rvq(batch.view(8, 64, dim))
    return rvq.eval(), data


# -- residual quantizer -------------------------------------------------------


def test_residual_norms_shrink_with_every_codebook():
    rvq, data = fitted_rvq()
    norms = rvq.residual_norms(data.view(1, -1, 8))
    assert norms.shape == (5,)
    # Each codebook removes part of what the previous ones left.
    assert all(float(norms[k + 1]) < float(norms[k]) for k in range(4)), norms.tolist()
    assert float(norms[-1]) < 0.5 * float(norms[0])


def test_dequantize_is_the_sum_of_the_first_k_codebooks():
    rvq, data = fitted_rvq()
    z = data[:50].view(1, 50, 8)
    codes = rvq.quantize(z)
    assert codes.shape == (1, 50, 4) and codes.dtype == torch.long
    for k in range(1, 5):
        expected = sum(rvq.quantizers[i].embed[codes[..., i]] for i in range(k))
        assert torch.allclose(rvq.dequantize(codes[..., :k]), expected)
        # Encoding with k codebooks gives the first k codes of a full encoding.
        assert torch.equal(rvq.quantize(z, n_q=k), codes[..., :k])
    # Reconstruction error of the first k codebooks falls with k.
    errors = [float((z - rvq.dequantize(codes[..., :k])).norm(dim=-1).mean()) for k in range(1, 5)]
    assert errors == sorted(errors, reverse=True)


def test_forward_is_straight_through_with_commitment():
    rvq = ResidualVectorQuantizer(3, 8, 4, dropout_prob=0.0).train()
    z = torch.randn(2, 6, 4, requires_grad=True)
    zq, codes, commit = rvq(z)
    assert zq.shape == z.shape and codes.shape == (2, 6, 3)
    assert torch.allclose(zq, rvq.dequantize(codes), atol=1e-5)  # forward value: the codes
    (zq.sum() + commit).backward()
    assert z.grad is not None and float(commit.detach()) > 0


def test_quantizer_dropout_draws_k_per_item_and_masks_codebooks():
    rvq = ResidualVectorQuantizer(4, 8, 4, dropout_prob=1.0).train()
    torch.manual_seed(0)
    n_q = rvq.sample_n_q(2000)
    assert int(n_q.min()) == 1 and int(n_q.max()) == 4
    counts = torch.bincount(n_q, minlength=5)[1:].float() / 2000
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.05)  # U{1..K}
    assert torch.equal(rvq.eval().sample_n_q(5), torch.full((5,), 4))  # never in eval
    rvq.train()
    z = torch.randn(3, 5, 4)
    zq, codes, _ = rvq(z, n_q=torch.tensor([1, 2, 4]))
    for b, k in enumerate([1, 2, 4]):
        assert torch.allclose(zq[b], rvq.dequantize(codes[b:b + 1, :, :k])[0], atol=1e-5)
    # Usage is only counted for the codebooks an item used: 3 items x 5 frames
    # in codebook 1, 2 items in codebook 2, 1 item in codebooks 3 and 4.
    rvq.reset_usage()
    rvq(z, n_q=torch.tensor([1, 2, 4]))
    assert [int(u.sum()) for u in rvq.usage] == [15, 10, 5, 5]


def test_n_q_out_of_range_is_a_clear_error():
    rvq = ResidualVectorQuantizer(2, 4, 3)
    with pytest.raises(ValueError, match=r"n_q must be in \[1, 2\], got 3"):
        rvq.quantize(torch.randn(1, 2, 3), n_q=3)
    with pytest.raises(ValueError, match="num_quantizers must be >= 1"):
        ResidualVectorQuantizer(0, 4, 3)


# -- codec --------------------------------------------------------------------


@pytest.mark.parametrize("samples", [HOP * 20, HOP * 20 + 5, 7])
def test_codec_round_trip_shapes_in_b_t_k_layout(samples):
    model = RVQCodec(**TINY_RVQ_CONFIG)
    wav = torch.randn(3, samples)
    frames = math.ceil(samples / HOP)
    codes = model.encode(wav)
    assert codes.shape == (3, frames, K) and codes.dtype == torch.long
    for k in range(1, K + 1):
        assert model.decode(codes[..., :k]).shape == (3, frames * HOP)
    out = model(wav, torch.tensor([1.0, 0.5, 0.25]))
    assert out["wav"].shape == wav.shape and out["codes"].shape == (3, frames, K)
    assert out["mask"].shape == (3, frames)


def test_default_config_is_small_enough_to_ship():
    model = RVQCodec(**DEFAULT_RVQ_CONFIG)
    assert model.frame_rate == 50.0 and model.num_codebooks == 8
    assert model.quantizer.codebook_size == 1024
    # fp16 weights + codebook buffers under 20 MB.
    buffers = sum(b.numel() for b in model.buffers())
    assert (count_parameters(model) + buffers) * 2 / 2**20 < 20


def test_training_with_quantizer_dropout_decodes_with_every_k():
    """A few steps with dropout: every first-k decoding reconstructs (mel loss
    far below an untrained codec's), and the latent error falls with k."""
    torch.manual_seed(0)
    model = RVQCodec(**dict(TINY_RVQ_CONFIG, quantizer_dropout=0.5)).train()
    loss = CodecGeneratorLoss(16000)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for i in range(80):
        wav = speechlike(4, 1600, seed=i % 8)
        out = model(wav)
        total = loss(out["wav"], wav, commit_loss=out["commit_loss"])["loss"]
        opt.zero_grad()
        total.backward()
        opt.step()
    model.eval()
    mel_loss = MultiScaleMelLoss(16000)
    wav = speechlike(4, 1600, seed=100)
    with torch.no_grad():
        codes = model.encode(wav)
        mel = [float(mel_loss(model.decode(codes[..., :k])[:, :1600], wav))
               for k in range(1, K + 1)]
        untrained = float(mel_loss(RVQCodec(**TINY_RVQ_CONFIG).eval()(wav)["wav"], wav))
        norms = model.quantizer.residual_norms(model.latent(wav))
    assert all(m < 0.3 * untrained for m in mel), (mel, untrained)
    assert max(mel) < 1.2 * min(mel), mel  # any k decodes about as well
    assert all(float(norms[k + 1]) < float(norms[k]) for k in range(K)), norms.tolist()
    assert model.valid_codes(wav).shape == (4 * 100, K)
    half = model.valid_codes(wav, torch.tensor([1.0, 0.5, 0.5, 0.25]))
    assert half.shape == (100 + 50 + 50 + 25, K)
    assert torch.equal(half[:100], codes[0])


# -- tokenizer and registry -----------------------------------------------------


def test_tokenizer_contract_and_first_k_codebooks(tmp_path):
    model = RVQCodec(**TINY_RVQ_CONFIG)
    tok = RVQTokenizer(model)
    assert (tok.sample_rate, tok.frame_rate, tok.num_codebooks, tok.vocab_size) == \
        (16000, 1000.0, K, 8)
    wav, lens = torch.randn(2, 330), torch.tensor([1.0, 0.5])
    tokens, tlens = tok.encode(wav, lens)
    assert tokens.shape == (2, 21, K) and tokens.dtype == torch.long
    assert tlens.tolist() == pytest.approx([1.0, 11 / 21])
    out = tok.decode(tokens, tlens)
    assert out.shape == (2, 21 * HOP) and float(out[1, 11 * HOP:].abs().max()) == 0.0
    path = tok.save(str(tmp_path / "codec"), dtype="float16")
    assert path.endswith("rvqcodec.ckpt")
    blob = torch.load(path, weights_only=True)
    kept = tuple(RVQCodec.exact_prefixes)
    assert all(v.dtype == torch.float16 for k, v in blob["state_dict"].items()
               if v.is_floating_point() and not k.startswith(kept))
    assert all(torch.equal(v.float(), model.state_dict()[k]) for k, v in blob["state_dict"].items()
               if v.is_floating_point() and k.startswith(kept))  # what makes tokens: no loss
    for p in list(model.parameters()) + list(model.buffers()):  # a codec defined in float16
        if p.is_floating_point():  # (the recipe's export) ...
            p.data = p.data.half().float()
    blob = torch.load(tok.save(str(tmp_path / "half"), dtype="int8"), weights_only=True)
    assert {str(v.dtype) for v in blob["state_dict"].values()} <= \
        {"torch.float16", "torch.int8", "torch.int64", "torch.bool"}  # ... is stored in full
    two = load_tokenizer(f"rvq:{tmp_path / 'codec'}?num_codebooks=2")
    assert two.num_codebooks == 2 and two.spec.endswith("?num_codebooks=2")
    t2, _ = two.encode(wav, lens)
    full, _ = load_tokenizer(f"rvq:{tmp_path / 'codec'}").encode(wav, lens)
    assert torch.equal(t2, full[..., :2])
    assert two.decode(t2).shape == (2, 21 * HOP)
    with pytest.raises(ValueError, match=r"expects tokens \[B, T, 2\]"):
        two.decode(full)
    assert guess_kind(str(tmp_path / "codec")) == "rvq"
    assert load_tokenizer(str(tmp_path / "codec")).num_codebooks == K


def test_registry_errors_are_one_line(tmp_path):
    with pytest.raises(SpecError, match="no such file or folder"):
        load_tokenizer("rvq:/nonexistent")
    RVQTokenizer(RVQCodec(**TINY_RVQ_CONFIG)).save(str(tmp_path / "c"))
    with pytest.raises(SpecError, match=r"num_codebooks must be in \[1, 4\]"):
        load_tokenizer(f"rvq:{tmp_path / 'c'}?num_codebooks=9")
    with pytest.raises(SpecError, match="bad option"):
        load_tokenizer(f"rvq:{tmp_path / 'c'}?flatten=true")


# -- training voices ----------------------------------------------------------


def test_codec_voice_pool_keeps_valid_and_test_voices_out():
    from speechbrain_gense.data.voices import (
        SPLIT_SPEAKERS, VOICES, codec_voice_pool, espeak_variants, held_out_voices)

    variants = espeak_variants() or ["m1", "m2", "f2", "f3", "klatt", "Alex"]
    pool = codec_voice_pool(seed=3, variants=variants)
    assert pool == codec_voice_pool(seed=3, variants=variants)  # deterministic
    names = {v.name for v in pool}
    assert len(names) == len(pool)
    held = held_out_voices()
    held_people = {v.person for v in held}
    held_variants = {v.voice.split("+")[1] for v in held if "+" in v.voice}
    assert {"m1", "f1", "f2", "f5"} <= held_variants
    for v in pool:
        assert v.person not in held_people
        if v.engine == "espeak":
            assert v.voice.split("+")[1] not in held_variants
    for name in SPLIT_SPEAKERS["test"] + SPLIT_SPEAKERS["valid"]:
        assert VOICES[name] not in pool
    assert not any("piper" in v.name for v in pool)
    assert len(codec_voice_pool(seed=3, variants=variants, max_voices=3)) == 3 + 4


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng")
def test_build_speech_set_is_deterministic_and_avoids_given_sentences(tmp_path):
    import hashlib
    import json

    from speechbrain_gense.data.corpus import build_speech_set
    from speechbrain_gense.data.manifest import read_manifest, write_manifest
    from speechbrain_gense.data.voices import codec_voice_pool

    voices = [v for v in codec_voice_pool(seed=1, variants=["m3", "klatt", "f4"])
              if v.engine == "espeak"][:3]
    first = build_speech_set(tmp_path / "a", minutes=0.2, seed=5, voices=voices,
                             workers=1, progress=False)
    entries = read_manifest(first)
    assert len(entries) >= 3
    assert {e["speaker"] for e in entries.values()} == {v.name for v in voices}
    # The same arguments give the same audio; sentences of avoid_manifests are not spoken.
    avoid = tmp_path / "avoid.json"
    uid0 = sorted(entries)[0]
    write_manifest(avoid, {"x": {"clean_wav": "x.wav", "words": entries[uid0]["words"]}})
    second = build_speech_set(tmp_path / "b", minutes=0.2, seed=5, voices=voices,
                              avoid_manifests=[str(avoid)], workers=1, progress=False)
    again = build_speech_set(tmp_path / "c", minutes=0.2, seed=5, voices=voices,
                             avoid_manifests=[str(avoid)], workers=1, progress=False)

    def digest(manifest):
        return [hashlib.md5(open(e["clean_wav"], "rb").read()).hexdigest()
                for _, e in sorted(read_manifest(manifest).items())]

    assert digest(second) == digest(again)
    assert entries[uid0]["words"] not in {e["words"] for e in read_manifest(second).values()}
    info = json.loads((tmp_path / "b" / "speech_info.json").read_text())
    assert info["utterances"] == len(read_manifest(second))


@pytest.mark.skipif(__import__("shutil").which("flite") is None
                    or __import__("shutil").which("espeak-ng") is None,
                    reason="needs flite and espeak-ng")
def test_build_speech_set_adds_pseudo_speakers_of_its_own_voices(tmp_path):
    import json

    import soundfile as sf

    from speechbrain_gense.data.corpus import build_speech_set
    from speechbrain_gense.data.manifest import read_manifest
    from speechbrain_gense.data.voices import SPLIT_SPEAKERS, VOICES

    voices = [VOICES["flite_slt"], VOICES["espeak_gb_m3"]]
    kwargs = dict(minutes=0.3, seed=4, voices=voices, natural_share=0.5, workers=1,
                  progress=False, pseudo_speakers=2)
    entries = read_manifest(build_speech_set(tmp_path / "a", **kwargs))
    speakers = {e["speaker"] for e in entries.values()}
    # One pseudo-speaker of each group; natural ones (flite + its copy) keep half the sentences.
    assert speakers == {"flite_slt", "espeak_gb_m3", "flite_slt-ps000", "espeak_gb_m3-ps001"}
    natural = [e for e in entries.values() if e["speaker"].startswith("flite")]
    assert abs(len(natural) - len(entries) / 2) <= 1
    held_out = set(SPLIT_SPEAKERS["valid"]) | set(SPLIT_SPEAKERS["test"])
    assert not any(s.split("-ps")[0] in held_out for s in speakers)
    info = json.loads((tmp_path / "a" / "speech_info.json").read_text())
    assert sorted(info["config"]["pseudo_speakers"]) == ["espeak_gb_m3-ps001", "flite_slt-ps000"]
    again = read_manifest(build_speech_set(tmp_path / "b", **kwargs))
    for uid, e in entries.items():
        assert again[uid]["speaker"] == e["speaker"]
        a, _ = sf.read(e["clean_wav"])
        b, _ = sf.read(again[uid]["clean_wav"])
        assert a.shape == b.shape and abs(a - b).max() < 1e-4
    with pytest.raises(ValueError, match="pseudo_speakers must be >= 0"):
        build_speech_set(tmp_path / "c", minutes=0.1, voices=voices, pseudo_speakers=-1)


@pytest.mark.skipif(__import__("shutil").which("flite") is None
                    or __import__("shutil").which("espeak-ng") is None,
                    reason="needs flite and espeak-ng")
def test_pseudo_speakers_in_worker_processes_after_torch_used_threads(tmp_path):
    # A recipe has run torch on several threads before it builds its speech set; the
    # forked synthesis workers then warp pseudo-speakers with torch. This hung before.
    import subprocess
    import sys

    script = (
        "import sys, torch\n"
        "torch.set_num_threads(2)\n"
        "x = torch.randn(512, 512); (x @ x).sum()\n"
        "torch.nn.functional.interpolate(torch.randn(1, 1, 40000), scale_factor=1.1)\n"
        "from speechbrain_gense.data.corpus import build_speech_set\n"
        "from speechbrain_gense.data.voices import VOICES\n"
        "m = build_speech_set(sys.argv[1], minutes=0.3, seed=4, natural_share=0.5,\n"
        "    voices=[VOICES['flite_slt'], VOICES['espeak_gb_m3']], workers=2,\n"
        "    progress=False, pseudo_speakers=2)\n"
        "print(len(open(m).read()) > 0)\n")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s")],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "True"
