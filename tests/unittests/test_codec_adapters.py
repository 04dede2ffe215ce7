"""DAC and BigCodec adapters: tiny random models saved to a temp dir and loaded
back by path (no weights are ever downloaded), checked against the
AudioTokenizer contract."""

import math

import pytest
import torch

from speechbrain_gense.tokenizers.bigcodec import BigCodecTokenizer
from speechbrain_gense.tokenizers.dac import DACTokenizer, _dac_class

try:
    import dac  # noqa: F401

    HAVE_DESCRIPT = True
except ImportError:
    HAVE_DESCRIPT = False

TINY_DAC = dict(encoder_dim=4, encoder_rates=[2, 4], decoder_dim=8, decoder_rates=[4, 2],
                n_codebooks=4, codebook_size=32, codebook_dim=4, sample_rate=16000)
TINY_BIGCODEC = dict(ngf=2, use_rnn=True, rnn_num_layers=1, up_ratios=(2, 2, 2, 5, 5),
                     dilations=(1,), out_channels=8, upsample_initial_channel=32)

BACKENDS = ["speechbrain",
            pytest.param("descript", marks=pytest.mark.skipif(
                not HAVE_DESCRIPT, reason="descript-audio-codec not installed"))]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def _wav(batch=2, samples=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, samples, generator=g)


def _contract(tok, samples, hop):
    """Shapes, dtype, ranges, relative lengths and decode length."""
    tokens, lens = tok.encode(_wav(2, samples), torch.tensor([1.0, 0.5]))
    T = math.ceil(samples / hop)
    assert tokens.shape == (2, T, tok.num_codebooks)
    assert tokens.dtype == torch.long
    assert int(tokens.min()) >= 0 and int(tokens.max()) < tok.vocab_size
    assert lens.tolist() == pytest.approx([1.0, math.ceil(samples / 2 / hop) / T])
    wav = tok.decode(tokens, lens)
    assert wav.shape == (2, T * hop)
    assert torch.isfinite(wav).all()
    # Samples past the second item's length are zeroed.
    assert wav[1, int(round(lens[1].item() * T * hop)):].abs().max() == 0
    return tokens


def _frozen(tok):
    assert not tok.training
    assert all(not p.requires_grad for p in tok.parameters())
    tok.train()
    assert not tok.training and not any(m.training for m in tok.modules())


# ---------------------------------------------------------------- DAC


def test_dac_save_load_roundtrip(tmp_path, backend):
    torch.manual_seed(0)
    tok = DACTokenizer(backend=backend, **TINY_DAC)
    file = tok.save_pretrained(tmp_path / "tiny_dac")
    assert file.name == "dac.pth"
    loaded = DACTokenizer(path=tmp_path / "tiny_dac", backend=backend)
    assert (loaded.sample_rate, loaded.hop_length, loaded.num_codebooks, loaded.vocab_size) \
        == (16000, 8, 4, 32)
    assert loaded.frame_rate == 2000.0
    tokens = _contract(loaded, samples=1001, hop=8)
    # Same weights: same tokens, bit-identical decode.
    assert torch.equal(tok.encode(_wav(2, 1001))[0], loaded.encode(_wav(2, 1001))[0])
    assert torch.equal(tok.decode(tokens), loaded.decode(tokens))
    _frozen(loaded)


@pytest.mark.skipif(not HAVE_DESCRIPT, reason="descript-audio-codec not installed")
def test_dac_file_formats_interoperate(tmp_path):
    """A file written by ``dac.DAC.save`` (the released layout) loads, in both
    backends, and ours loads with descript's and SpeechBrain's own loaders."""
    import dac
    from speechbrain.lobes.models.discrete.dac import DAC as SBDAC

    torch.manual_seed(0)
    model = dac.DAC(**TINY_DAC)
    model.save(str(tmp_path / "weights.pth"), package=False)
    ref = DACTokenizer(model=model)
    tokens = ref.encode(_wav())[0]
    for backend in ("descript", "speechbrain"):
        tok = DACTokenizer(path=tmp_path, backend=backend)
        assert torch.equal(tok.encode(_wav())[0], tokens)
        assert torch.allclose(tok.decode(tokens), ref.decode(tokens), atol=1e-6)
    sb_file = DACTokenizer(path=tmp_path, backend="speechbrain").save_pretrained(tmp_path / "sb.pth")
    for model in (dac.DAC.load(str(sb_file)),
                  SBDAC(load_path=str(sb_file), load_pretrained=True, strict=True)):
        tok = DACTokenizer(model=model)
        assert torch.allclose(tok.decode(tokens), ref.decode(tokens), atol=1e-6)


def test_dac_fewer_codebooks(tmp_path):
    torch.manual_seed(0)
    DACTokenizer(backend="speechbrain", **TINY_DAC).save_pretrained(tmp_path)
    full = DACTokenizer(path=tmp_path)
    two = DACTokenizer(path=tmp_path, num_codebooks=2)
    assert two.num_codebooks == 2
    t4 = full.encode(_wav())[0]
    t2 = _contract(two, samples=1000, hop=8)
    # The first K codebooks of the RVQ.
    assert torch.equal(t2, t4[..., :2])
    with pytest.raises(ValueError):
        DACTokenizer(path=tmp_path, num_codebooks=5)
    # The choice of K is saved with the model.
    two.save_pretrained(tmp_path / "k2")
    assert DACTokenizer(path=tmp_path / "k2").num_codebooks == 2


def test_dac_odd_strides_and_resampling():
    """A 24 kHz-like layout (odd stride): lengths still T*hop; input at
    another rate is resampled at the boundary."""
    torch.manual_seed(0)
    tok = DACTokenizer(backend="speechbrain", encoder_dim=4, encoder_rates=[2, 5],
                       decoder_dim=8, decoder_rates=[5, 2], n_codebooks=2,
                       codebook_size=16, codebook_dim=4, sample_rate=24000)
    assert tok.hop_length == 10 and tok.frame_rate == 2400.0
    _contract(tok, samples=997, hop=10)
    tokens, lens = tok.encode(_wav(1, 800), sample_rate=16000)  # 1200 samples at 24 kHz
    assert tokens.shape == (1, 120, 2)
    assert tok.decode(tokens, sample_rate=16000).shape == (1, 800)


def test_dac_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights cannot be downloaded here"):
        DACTokenizer(path=tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="no DAC checkpoint in directory"):
        DACTokenizer(path=tmp_path)
    with pytest.raises(TypeError):
        DACTokenizer(bogus=1)


def test_dac_backend_choice():
    from speechbrain.lobes.models.discrete.dac import DAC as SBDAC

    assert _dac_class("speechbrain") is SBDAC
    if HAVE_DESCRIPT:
        assert _dac_class("auto").__module__.startswith("dac.")
    with pytest.raises(ValueError):
        _dac_class("nope")


# ---------------------------------------------------------------- BigCodec


def test_bigcodec_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    tok = BigCodecTokenizer(**TINY_BIGCODEC)
    file = tok.save_pretrained(tmp_path)
    ckpt = torch.load(file, weights_only=True)
    assert {"CodecEnc", "generator"} <= set(ckpt)  # the original bigcodec.pt layout
    loaded = BigCodecTokenizer(path=tmp_path)
    assert (loaded.sample_rate, loaded.frame_rate, loaded.hop_length) == (16000, 80.0, 200)
    assert (loaded.num_codebooks, loaded.vocab_size) == (1, 8192)
    tokens = _contract(loaded, samples=1234, hop=200)
    assert torch.equal(tok.encode(_wav(2, 1234))[0], tokens)
    assert torch.equal(tok.decode(tokens), loaded.decode(tokens))
    _frozen(loaded)


def test_bigcodec_original_layout_without_config(tmp_path):
    """A ``bigcodec.pt`` without a config entry means the released architecture:
    a tiny one then fails loudly instead of decoding noise."""
    torch.manual_seed(0)
    tok = BigCodecTokenizer(**TINY_BIGCODEC)
    torch.save({"CodecEnc": tok.encoder.state_dict(), "generator": tok.decoder.state_dict()},
               tmp_path / "bigcodec.pt")
    with pytest.raises(RuntimeError, match="state_dict"):
        BigCodecTokenizer(path=tmp_path / "bigcodec.pt")


def test_bigcodec_resampling():
    torch.manual_seed(0)
    tok = BigCodecTokenizer(**TINY_BIGCODEC)
    tokens, lens = tok.encode(_wav(2, 1000), torch.tensor([1.0, 0.5]), sample_rate=8000)
    assert tokens.shape == (2, 10, 1)  # 2000 samples at 16 kHz
    assert lens.tolist() == [1.0, 0.5]
    assert tok.decode(tokens, lens, sample_rate=8000).shape == (2, 1000)


def test_bigcodec_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights cannot be downloaded here"):
        BigCodecTokenizer(path=tmp_path / "bigcodec.pt")
    with pytest.raises(FileNotFoundError, match="no BigCodec checkpoint"):
        BigCodecTokenizer(path=tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a BigCodec checkpoint"):
        BigCodecTokenizer(path=tmp_path / "x.pt")
    with pytest.raises(TypeError):
        BigCodecTokenizer(bogus=1)


def test_bigcodec_hub_mixin_directory(tmp_path):
    """A directory written by the package's ``BigCodec.save_pretrained``
    (config.json + model.safetensors) loads by path."""
    import bigcodec

    torch.manual_seed(0)
    model = bigcodec.BigCodec(ngf=2, use_rnn=False, rnn_bidirectional=False, rnn_num_layers=1,
                              up_ratios=[2, 2, 2, 5, 5], dilations=[1], out_channels=8,
                              codebook_size=8192, vq_num_quantizers=1, codebook_dim=8).eval()
    model.save_pretrained(tmp_path)
    tok = BigCodecTokenizer(path=tmp_path)
    x = _wav(1, 800)
    with torch.no_grad():
        codes = model.encode(x.unsqueeze(1))  # [K, B, T]
        ref = model.decode(codes.permute(1, 0, 2))[:, 0]
    tokens = tok.encode(x)[0]
    assert torch.equal(tokens, codes.permute(1, 2, 0))
    assert torch.allclose(tok.decode(tokens), ref, atol=1e-6)


def test_dac_released_name_lookup(tmp_path, monkeypatch):
    """"44khz"-style names resolve to the descript cache, never to a download."""
    import speechbrain_gense.tokenizers.dac as dac_mod

    monkeypatch.setattr(dac_mod, "DESCRIPT_CACHE", tmp_path)
    with pytest.raises(FileNotFoundError, match="weights cannot be downloaded here"):
        DACTokenizer(path="16khz")
    torch.manual_seed(0)
    DACTokenizer(backend="speechbrain", **TINY_DAC).save_pretrained(
        tmp_path / "weights_16khz_8kbps_0.0.5.pth")
    assert DACTokenizer(path="16khz_8kbps").sample_rate == 16000
