"""Tests of the semantic (k-means) tokenizer and its recipe.

SSL features are tested with a tiny random WavLM saved with
``save_pretrained`` and loaded back by path, the way transformers tests
itself: no weights are downloaded.
"""

import os

import pytest
import torch

from speechbrain_gense.tokenizers.base import AudioTokenizer
from speechbrain_gense.tokenizers.semantic import (
    KMeansTokenizer, SpectralFeatures, SSLFeatures, WhisperFeatures, build_features,
    cluster_usage, tiny_wavlm_config,
)


pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")


@pytest.fixture(scope="module")
def wavlm_dir(tmp_path_factory):
    from transformers import WavLMModel

    torch.manual_seed(0)
    folder = str(tmp_path_factory.mktemp("tiny_wavlm"))
    WavLMModel(tiny_wavlm_config()).eval().save_pretrained(folder)
    return folder


def blobs(n_per=100, dim=8, seed=0):
    """4 well-separated Gaussian blobs, ``[4 * n_per, dim]`` and true labels."""
    gen = torch.Generator().manual_seed(seed)
    centers = torch.zeros(4, dim)
    for i in range(4):
        centers[i, i] = 10.0
    labels = torch.arange(4).repeat_interleave(n_per)
    return centers[labels] + 0.3 * torch.randn(len(labels), dim, generator=gen), labels


class Fixed(torch.nn.Module):
    """Identity 'features' for k-means tests: [B, T, dim] in, same out."""

    sample_rate, frame_rate, dim = 16000, 50.0, 8

    def config(self):
        return {"name": "spectral"}

    def forward(self, x, lens=None):
        return x


# ----------------------------------------------------------------- SSL features
def test_ssl_features_layer_from_local_folder(wavlm_dir):
    from transformers import AutoModel

    wav = torch.randn(2, 16000)
    ref = AutoModel.from_pretrained(wavlm_dir).eval()
    with torch.no_grad():
        hidden = ref(wav, output_hidden_states=True).hidden_states
    for layer in (0, 1, 2):
        ssl = SSLFeatures(wavlm_dir, layer=layer)
        feats = ssl(wav)
        assert feats.shape == (2, 49, 32)  # T ~ S / 320, H
        # pruned layers above `layer` do not change the chosen hidden state
        torch.testing.assert_close(feats, hidden[layer], atol=1e-5, rtol=1e-4)
    assert ssl.frame_rate == 50.0 and ssl.dim == 32 and ssl.sample_rate == 16000
    assert not any(p.requires_grad for p in ssl.parameters())
    assert not ssl.lobe.model.training
    assert ssl.normalize is False  # no preprocessor_config.json in the folder


def test_ssl_features_normalisation_from_preprocessor_config(wavlm_dir, tmp_path):
    import shutil

    from transformers import Wav2Vec2FeatureExtractor

    folder = str(tmp_path / "with_preproc")
    shutil.copytree(wavlm_dir, folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    ssl = SSLFeatures(folder, layer=1)
    assert ssl.normalize is True
    wav = torch.randn(1, 8000)
    # per-utterance normalisation: the level of the input does not matter
    torch.testing.assert_close(ssl(wav), ssl(wav * 7.0), atol=1e-4, rtol=1e-3)


def test_ssl_missing_path_and_bad_layer(wavlm_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot be downloaded here; pass a local folder"):
        SSLFeatures("microsoft/wavlm-base-plus")
    with pytest.raises(FileNotFoundError, match="local folder"):
        SSLFeatures(str(tmp_path))  # a folder without config.json
    with pytest.raises(ValueError, match="layer must be in"):
        SSLFeatures(wavlm_dir, layer=3)


def test_ssl_tokenizer_encode_save_load(wavlm_dir, tmp_path):
    tok = KMeansTokenizer(SSLFeatures(wavlm_dir, layer=2), n_clusters=8, seed=0)
    wav = torch.randn(3, 16000)
    tok.fit([tok.feature_frames(wav)])
    tokens, lens = tok.encode(wav[:2], torch.tensor([1.0, 0.5]))
    assert tokens.shape == (2, 49, 1) and tokens.dtype == torch.long
    # The conv front end gives 24 frames for 8000 samples, 49 for 16000.
    assert lens.tolist() == pytest.approx([1.0, 24 / 49])
    path = str(tmp_path / "ssl_kmeans.pt")
    tok.save(path)
    again = KMeansTokenizer.load(path)
    assert again.features.config() == tok.features.config()
    assert torch.equal(again.encode(wav[:2], torch.tensor([1.0, 0.5]))[0], tokens)
    with pytest.raises(FileNotFoundError, match="pass a local folder"):
        KMeansTokenizer.load(path, source=str(tmp_path / "moved"))


# ---------------------------------------------------------------------- k-means
def test_kmeans_recovers_blobs_and_is_deterministic():
    x, labels = blobs()
    tok = KMeansTokenizer(Fixed(), n_clusters=4, seed=3)
    info = tok.fit([x[::2], x[1::2]])
    assert info["frames"] == 400
    pred = tok.predict(x)
    assert pred.dtype == torch.long and pred.shape == (400,)
    assert len(set(pred.tolist())) == 4
    for i in range(4):  # each blob gets one label
        assert len(set(pred[labels == i].tolist())) == 1
    # batched prediction keeps shapes, chunking does not change results
    assert torch.equal(tok.predict(x.reshape(4, 100, 8)).reshape(-1), pred)
    assert torch.equal(tok.predict(x, chunk_size=7), pred)
    other = KMeansTokenizer(Fixed(), n_clusters=4, seed=3)
    other.fit([x[::2], x[1::2]])
    assert torch.equal(other.centroids, tok.centroids)


def test_kmeans_errors():
    tok = KMeansTokenizer(Fixed(), n_clusters=16)
    with pytest.raises(RuntimeError, match="not fitted"):
        tok.encode(torch.randn(1, 16))
    with pytest.raises(ValueError, match="cannot be split into 16 clusters"):
        tok.fit([torch.randn(10, 8)])
    with pytest.raises(ValueError, match="dims"):
        tok.fit([torch.randn(100, 3)])


# -------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def mfcc_tok():
    torch.manual_seed(0)
    tok = KMeansTokenizer(n_clusters=32, seed=0)
    wav = torch.randn(4, 16000) * torch.linspace(0.1, 1.0, 16000)
    tok.fit([tok.feature_frames(wav)])
    return tok


def test_encode_contract(mfcc_tok):
    assert isinstance(mfcc_tok, AudioTokenizer)
    assert (mfcc_tok.vocab_size, mfcc_tok.num_codebooks) == (32, 1)
    assert (mfcc_tok.sample_rate, mfcc_tok.frame_rate) == (16000, 50.0)
    wav = torch.randn(2, 16000)
    tokens, lens = mfcc_tok.encode(wav, torch.tensor([1.0, 0.5]))
    assert tokens.shape == (2, 51, 1) and tokens.dtype == torch.long
    assert 0 <= int(tokens.min()) and int(tokens.max()) < 32
    # Centred STFT: 8000 // 320 + 1 = 26 of 16000 // 320 + 1 = 51 frames.
    assert lens.tolist() == pytest.approx([1.0, 26 / 51])
    # a padded item gets the tokens it gets alone (frames away from its end)
    alone, _ = mfcc_tok.encode(wav[1:, :8000])
    assert torch.equal(tokens[1, :23], alone[0, :23])
    # other sample rates are resampled at the boundary
    tokens8k, _ = mfcc_tok.encode(torch.randn(1, 8000), sample_rate=8000)
    assert tokens8k.shape == (1, 51, 1)


def test_decode_raises(mfcc_tok):
    tokens, lens = mfcc_tok.encode(torch.randn(1, 3200))
    with pytest.raises(NotImplementedError, match="not invertible"):
        mfcc_tok.decode(tokens, lens)


def test_save_load_round_trip(mfcc_tok, tmp_path):
    path = str(tmp_path / "kmeans.pt")
    mfcc_tok.save(path)
    assert os.path.getsize(path) < 50_000  # centroids + config, no pickled model
    again = KMeansTokenizer.load(path)
    wav = torch.randn(3, 12000)
    lens = torch.tensor([1.0, 0.7, 0.2])
    assert torch.equal(again.encode(wav, lens)[0], mfcc_tok.encode(wav, lens)[0])
    assert again.features.config() == mfcc_tok.features.config()
    with pytest.raises(FileNotFoundError):
        KMeansTokenizer.load(str(tmp_path / "nope.pt"))


def test_spectral_features_and_usage():
    fb = build_features({"name": "spectral", "kind": "fbank", "n_mels": 40})
    assert fb(torch.randn(1, 3200)).shape == (1, 11, 40)
    with pytest.raises(ValueError):
        SpectralFeatures("cqt")
    usage = cluster_usage(torch.tensor([0, 0, 1, 1]), 1024, frame_rate=50)
    assert usage["used"] == 2 and usage["entropy_bits"] == 1.0
    assert usage["bits_per_s"] == 500.0 and usage["entropy_bits_per_s"] == 50.0

# The recipe itself runs with --debug from tests/recipes/LibriSpeech-noisy.csv.


# ------------------------------------------------------------- Whisper features


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    """A tiny random Whisper, converted from a CTranslate2 folder like the real one."""
    from speechbrain_gense.whisper import convert_ct2_whisper, write_tiny_ct2_folder

    root = tmp_path_factory.mktemp("tiny_whisper")
    convert_ct2_whisper(write_tiny_ct2_folder(str(root / "ct2")), str(root / "hf"))
    return str(root / "hf")


def test_whisper_features_skip_the_padding(whisper_dir):
    feats = WhisperFeatures(whisper_dir, layer=2)
    assert (feats.dim, feats.frame_rate, feats.sample_rate) == (16, 50.0, 16000)
    gen = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(2, 24000, generator=gen)
    out = feats(wav, torch.tensor([1.0, 0.5]))
    assert out.shape == (2, feats.num_frames(24000), 16) == (2, 75, 16)
    # Batch-invariant: the short item alone gives the same frames; its padding is zeros.
    alone = feats(wav[1:, :12000])
    assert torch.allclose(out[1, :38], alone[0], atol=1e-5)
    assert torch.all(out[1, 38:] == 0)
    # The padded 30 s computation gives the same number of frames, other values.
    feats.pad = True
    padded = feats(wav[:1])
    feats.pad = False
    assert padded.shape == (1, 75, 16) and not torch.allclose(padded, out[:1], atol=1e-3)
    assert feats.config() == {"name": "whisper", "source": whisper_dir, "layer": 2,
                              "pad": False, "chunk_seconds": 30.0}
    with pytest.raises(ValueError, match=r"layer must be in \[1, 2\]"):
        WhisperFeatures(whisper_dir, layer=3)


def test_whisper_features_long_input_in_windows(whisper_dir):
    feats = WhisperFeatures(whisper_dir, layer=1, chunk_seconds=1.0)
    out = feats(0.1 * torch.randn(1, 40000))  # 2.5 s: windows of 1 s, 1 s, 0.5 s
    assert out.shape == (1, 125, 16) and torch.all(out.abs().sum(-1) > 0)


def test_whisper_features_bf16_close_to_fp32(whisper_dir, monkeypatch):
    import speechbrain_gense.utils as utils
    from speechbrain_gense.tokenizers.semantic import build_features
    from speechbrain_gense.utils import resolve_bf16

    wav = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(3))
    lens = torch.tensor([1.0, 0.5])
    ref = WhisperFeatures(whisper_dir, layer=2)(wav, lens)
    feats = WhisperFeatures(whisper_dir, layer=2, precision="bf16")
    out = feats(wav, lens)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    err = float((out - ref).norm() / ref.norm())
    assert 0 < err < 0.05  # bf16 rounding: close, not equal
    assert torch.all(out[1, 38:] == 0)  # padding frames stay zeros
    # The config names a non-default precision (and rebuilds it); fp32 stays unlisted.
    assert feats.config()["precision"] == "bf16"
    assert build_features(feats.config()).precision == "bf16"
    assert "precision" not in WhisperFeatures(whisper_dir, layer=2).config()
    # "auto" follows the device's native bf16 support.
    monkeypatch.setattr(utils, "native_bf16", lambda device: False)
    assert resolve_bf16("auto", torch.device("cpu")) == "fp32"
    auto = WhisperFeatures(whisper_dir, layer=2, precision="auto")
    assert auto.dtype == "fp32" and torch.allclose(auto(wav, lens), ref, atol=1e-6)
    monkeypatch.setattr(utils, "native_bf16", lambda device: True)
    assert auto.dtype == "bf16" and torch.allclose(auto(wav, lens), out, atol=1e-6)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto"):
        WhisperFeatures(whisper_dir, layer=2, precision="fp16")


def test_whisper_features_onnx_backend_equals_torch(whisper_dir):
    import os

    wav = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(4))
    lens = torch.tensor([1.0, 0.5])
    ref = WhisperFeatures(whisper_dir, layer=2)(wav, lens)
    feats = WhisperFeatures(whisper_dir, layer=2, backend="onnx")
    if os.path.exists(feats.onnx_path()):
        os.remove(feats.onnx_path())
    out = feats(wav, lens)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=1e-4) and torch.all(out[1, 38:] == 0)
    # the graph is exported once, then reused (a dynamic number of frames)
    stamp = os.path.getmtime(feats.onnx_path())
    again = WhisperFeatures(whisper_dir, layer=2, backend="onnx")
    short = WhisperFeatures(whisper_dir, layer=2)(wav[:1, :9000])  # another length
    assert torch.allclose(again(wav[:1, :9000]), short, atol=1e-4)
    assert os.path.getmtime(again.onnx_path()) == stamp
    assert feats.config()["backend"] == "onnx" and "backend" not in \
        WhisperFeatures(whisper_dir, layer=2).config()
    with pytest.raises(ValueError, match="float32 only"):
        WhisperFeatures(whisper_dir, layer=2, backend="onnx", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of torch, onnx"):
        WhisperFeatures(whisper_dir, layer=2, backend="tensorrt")


def test_whisper_kmeans_tokenizer_save_load(whisper_dir, tmp_path):
    tok = KMeansTokenizer(WhisperFeatures(whisper_dir, layer=2), n_clusters=8, seed=0)
    wavs = 0.1 * torch.randn(4, 16000, generator=torch.Generator().manual_seed(1))
    tok.fit(tok.feature_frames(wavs, torch.ones(4)))
    tokens, lens = tok.encode(wavs[:2], torch.tensor([1.0, 0.5]))
    assert tokens.shape == (2, 50, 1) and tokens.max() < 8
    assert lens.tolist() == pytest.approx([1.0, 0.5])
    tok.save(str(tmp_path / "k.pt"))
    back = KMeansTokenizer.load(str(tmp_path / "k.pt"))
    assert isinstance(back.features, WhisperFeatures) and back.features.layer == 2
    assert torch.equal(back.encode(wavs[:2], torch.tensor([1.0, 0.5]))[0], tokens)
