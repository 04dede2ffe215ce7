"""gense-codec-eval on three hand-made utterances: debug codecs, a tiny SimCodec, a k-means file."""

import json
import math

import numpy as np
import pytest
import torch

from speechbrain_gense.audio import load_audio, save_audio
from speechbrain_gense.codec_eval import load_tokenizer, main
from speechbrain_gense.data.manifest import write_manifest
from speechbrain_gense.models.simcodec import TINY_CONFIG, SimCodec
from speechbrain_gense.tokenizers.semantic import KMeansTokenizer
from speechbrain_gense.tokenizers.simcodec import SimCodecTokenizer

LENGTHS = {"u1": 24000, "u2": 16000, "u3": 20800}  # samples at 16 kHz
METRICS = "pesq,estoi,sisdr,mcd"


def _signal(uid, length):
    """A voiced-like test signal: harmonics with a syllabic envelope, plus a little noise."""
    gen = torch.Generator().manual_seed(int(uid[1:]))
    t = torch.arange(length) / 16000
    f0 = 120.0 + 40.0 * int(uid[1:])
    wav = sum(torch.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    envelope = 0.5 * (1 - torch.cos(2 * np.pi * 3 * t))
    return 0.1 * wav * envelope + 0.003 * torch.randn(length, generator=gen)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-utterance manifest, a tiny SimCodec folder and a tiny k-means file."""
    root = tmp_path_factory.mktemp("codec")
    torch.manual_seed(0)
    entries = {}
    wavs = []
    for uid, length in LENGTHS.items():
        wav = _signal(uid, length)
        wavs.append(wav)
        save_audio(root / "clean" / f"{uid}.wav", wav, 16000)
        entries[uid] = {"clean_wav": root / "clean" / f"{uid}.wav",
                        "noisy_wav": root / "clean" / f"{uid}.wav",  # unused here
                        "length": length / 16000, "words": "HELLO WORLD",
                        "snr": 5.0, "degradation": "noise"}
    manifest = root / "test.json"
    write_manifest(manifest, entries, data_root=root)
    SimCodecTokenizer(SimCodec(**TINY_CONFIG)).save(root / "simcodec")
    kmeans = KMeansTokenizer(n_clusters=8, seed=0)
    kmeans.fit([kmeans.feature_frames(w.unsqueeze(0)) for w in wavs])
    kmeans.save(str(root / "kmeans.pt"))
    return root, str(manifest)


@pytest.fixture(scope="module")
def run(setup):
    root, manifest = setup
    out = root / "out"
    argv = ["--manifest", manifest, "--out", str(out), "--metrics", METRICS, "--quiet",
            "--codec", "debug",
            "--codec", "debug8k=debug?sample_rate=8000,num_codebooks=2,vocab_size=256",
            "--codec", str(root / "simcodec"),
            "--semantic", str(root / "kmeans.pt")]
    before = {uid: (root / "clean" / f"{uid}.wav").read_bytes() for uid in LENGTHS}
    code = main(argv)
    after = {uid: (root / "clean" / f"{uid}.wav").read_bytes() for uid in LENGTHS}
    assert before == after  # inputs untouched
    return code, out, json.loads((out / "codec_results.json").read_text())


def test_rows_columns_and_table(run, capsys):
    code, out, results = run
    assert code == 0
    summary = results["summary"]
    assert list(summary) == ["clean", "debug", "debug8k", "simcodec", "kmeans"]
    assert [summary[n]["kind"] for n in summary] == [
        "reference", "codec", "codec", "codec", "semantic"]
    assert results["num_utterances"] == 3 and results["metrics"] == METRICS.split(",")
    for name, row in summary.items():
        assert row["files"] == 3 and row["failed"] == 0
    # The reference row: clean against itself, no rates.
    assert summary["clean"]["pesq"] > 4
    assert summary["clean"]["bits_per_s"] is None and summary["clean"]["encode_rtf"] is None
    for name in ("debug", "debug8k", "simcodec"):
        row = summary[name]
        for column in ("pesq", "estoi", "sisdr", "mcd"):
            assert row[column] is None or math.isfinite(row[column])
        assert row["pesq"] is not None and row["estoi"] is not None
        assert row["encode_rtf"] > 0 and row["decode_rtf"] > 0
    # Semantic: rate and encode speed, no quality.
    semantic = summary["kmeans"]
    assert semantic["encode_rtf"] > 0 and semantic["decode_rtf"] is None
    assert "pesq" not in semantic and results["systems"]["kmeans"]["quality"] is None
    table = (out / "codec_table.md").read_text()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| system | files | frames/s | K | vocab | tokens/s | bits/s |")
    assert "| PESQ |" in lines[0] and "| MCD (dB) |" in lines[0]
    assert len(lines) == 2 + 5
    kmeans_line = next(l for l in lines if l.startswith("| kmeans |"))
    assert kmeans_line.endswith("| – | – | – | – |")  # quality columns blank


def test_bitrate_arithmetic(run):
    _, _, results = run
    summary, systems = results["summary"], results["systems"]
    expected = {  # name: (frame rate, K, vocab)
        "debug": (80.0, 1, 64),
        "debug8k": (40.0, 2, 256),
        "simcodec": (1000.0, 1, 64),  # tiny config: hop 16 at 16 kHz, 8 x 8 flattened
        "kmeans": (50.0, 1, 8),
    }
    for name, (frame_rate, k, vocab) in expected.items():
        row = summary[name]
        assert (row["frame_rate"], row["num_codebooks"], row["vocab_size"]) == (
            frame_rate, k, vocab)
        assert row["tokens_per_s"] == pytest.approx(frame_rate * k)
        assert row["bits_per_s"] == pytest.approx(frame_rate * k * math.log2(vocab))
        rate = systems[name]["rate"]
        entropy = sum(c["entropy_bits"] for c in rate["per_codebook"])
        assert row["entropy_bits_per_s"] == pytest.approx(frame_rate * entropy)
        assert 0 < row["entropy_bits_per_s"] <= row["bits_per_s"] + 1e-6
        assert row["codes_total"] == k * vocab and 1 <= row["codes_used"] <= k * vocab
        assert row["usage"] == pytest.approx(row["codes_used"] / (k * vocab))
    assert summary["debug"]["bits_per_s"] == pytest.approx(480.0)  # 80 tokens/s * 6 bits


def test_entropy_matches_the_tokens(run, setup):
    _, _, results = run
    # Re-encode with the same debug tokenizer and count.
    tok = load_tokenizer("debug")
    counts = torch.zeros(64)
    for uid in LENGTHS:
        wav, sr = load_audio(setup[0] / "clean" / f"{uid}.wav")
        tokens, _ = tok.encode(wav.unsqueeze(0), sample_rate=sr)
        counts += torch.bincount(tokens.reshape(-1), minlength=64)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * torch.log2(p)).sum())
    rate = results["systems"]["debug"]["rate"]
    assert rate["frames"] == int(counts.sum())
    assert rate["codes_used"] == int((counts > 0).sum())
    assert rate["entropy_bits_per_s"] == pytest.approx(80 * entropy, abs=0.01)


def test_output_wavs(run):
    _, out, _ = run
    for name in ("clean", "debug", "debug8k", "simcodec"):
        for uid, length in LENGTHS.items():
            wav, sr = load_audio(out / name / f"{uid}.wav")
            assert sr == 16000 and wav.shape == (length,), (name, uid)
    assert not (out / "kmeans").exists()
    # The 8 kHz codec's output was resampled back to 16 kHz and is not silent.
    wav, _ = load_audio(out / "debug8k" / "u1.wav")
    assert float(wav.abs().max()) > 0


@pytest.mark.parametrize("spec, message", [
    ("magic:x", "unknown codec kind 'magic'"),
    ("simcodec:/nonexistent/simcodec", "no such file or folder"),
    ("debug?bogus=1", "bad option"),
    ("/nonexistent/folder", "no such file or folder"),
])
def test_bad_spec(setup, spec, message, capsys):
    root, manifest = setup
    code = main(["--manifest", manifest, "--out", str(root / "bad"), "--codec", spec,
                 "--metrics", "sisdr", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("gense-codec-eval: error:") and message in err
    assert len(err.splitlines()) == 1
    assert not (root / "bad").exists()  # fails before any work


def test_usage_errors(setup, capsys):
    root, manifest = setup
    common = ["--manifest", manifest, "--out", str(root / "bad"), "--quiet"]
    cases = [
        (["--codec", "debug", "--codec", "debug?seed=1"], "two systems named 'debug'"),
        (["--codec", "clean=debug"], "'clean' is taken"),
        (["--codec", f"kmeans:{root / 'kmeans.pt'}"], "no decoder"),
        (["--codec", "debug", "--metrics", "pesq,nope"], "unknown metric 'nope'"),
        ([], "nothing to evaluate"),
    ]
    for extra, message in cases:
        code = main(common + extra)
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (extra, err)
    code = main(["--manifest", str(root / "nope.json"), "--codec", "debug"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope.json" in err and len(err.splitlines()) == 1


def test_max_utts_and_help(setup, capsys):
    root, manifest = setup
    out = root / "few"
    assert main(["--manifest", manifest, "--out", str(out), "--codec", "debug",
                 "--metrics", "sisdr", "--max-utts", "2", "--quiet"]) == 0
    results = json.loads((out / "codec_results.json").read_text())
    assert results["num_utterances"] == 2
    assert results["summary"]["debug"]["files"] == 2
    assert len(json.loads((out / "codec_input.json").read_text())) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "KIND[:PATH][?KEY=VALUE,...]" in capsys.readouterr().out


def test_rvq_codec_one_row_per_first_k_codebooks(setup, capsys):
    """--rvq-codebooks 1,4: one row per k, bitrate k * 1000 * log2(8), codes used <= k * 8."""
    from speechbrain_gense.models.rvq_codec import TINY_RVQ_CONFIG, RVQCodec
    from speechbrain_gense.tokenizers.rvq import RVQTokenizer

    root, manifest = setup
    torch.manual_seed(0)
    RVQTokenizer(RVQCodec(**TINY_RVQ_CONFIG)).save(str(root / "rvq"), dtype="float16")
    out = root / "out_rvq"
    code = main(["--manifest", manifest, "--out", str(out), "--metrics", "pesq,mcd", "--quiet",
                 "--codec", f"tiny=rvq:{root / 'rvq'}", "--rvq-codebooks", "1,4"])
    assert code == 0
    summary = json.loads((out / "codec_results.json").read_text())["summary"]
    assert list(summary) == ["clean", "tiny-k1", "tiny-k4"]
    for k in (1, 4):
        row = summary[f"tiny-k{k}"]
        assert row["num_codebooks"] == k and row["vocab_size"] == 8
        assert row["bits_per_s"] == pytest.approx(1000.0 * k * 3)
        assert 1 <= row["codes_used"] <= k * 8 and row["codes_total"] == k * 8
        assert row["files"] == 3 and math.isfinite(row["pesq"])
    for uid, length in LENGTHS.items():
        wav, sr = load_audio(out / "tiny-k1" / f"{uid}.wav")
        assert sr == 16000 and wav.shape[-1] == length
    table = capsys.readouterr().out
    assert "| tiny-k1 | 3 | 1000 | 1 | 8 |" in table
    # More codebooks than the codec has, or a bad list: one-line usage errors.
    assert main(["--manifest", manifest, "--out", str(out), "--codec", f"rvq:{root / 'rvq'}",
                 "--rvq-codebooks", "9"]) == 2
    assert "num_codebooks must be in [1, 4]" in capsys.readouterr().err
    assert main(["--manifest", manifest, "--out", str(out), "--codec", f"rvq:{root / 'rvq'}",
                 "--rvq-codebooks", "one"]) == 2
    assert "--rvq-codebooks takes numbers" in capsys.readouterr().err


def test_training_curves_from_a_recipe_log(tmp_path, capsys):
    log = tmp_path / "train_log.txt"
    log.write_text(
        "epoch: 1, lr: 5.00e-04, adversarial: False - train loss: 1.16e+02, train G_recon_loss: "
        "2.58 - valid loss: 84.11, valid G_recon_loss: 1.87, valid pesq: 1.12\n"
        "epoch: 2, lr: 5.00e-04, adversarial: True - train loss: 90.0, train G_recon_loss: 2.0, "
        "train D_loss: 0.5 - valid loss: 70.0, valid G_recon_loss: 1.5, valid pesq: 1.30\n"
        "Epoch loaded: 2 - test loss: 70.0\n")
    out = tmp_path / "out"
    assert main(["--training-log", f"rvq={log}@250", "--out", str(out)]) == 0
    points = json.loads((out / "training_curves_rvq.json").read_text())
    assert [p["steps"] for p in points] == [250, 500]
    assert [p["valid_pesq"] for p in points] == [1.12, 1.30]
    assert points[1]["adversarial"] and points[1]["train_D_loss"] == 0.5
    assert (out / "training_curves_rvq.png").stat().st_size > 1000
    assert main(["--training-log", f"rvq={tmp_path / 'none.txt'}", "--out", str(out)]) == 2
    assert "no such training log" in capsys.readouterr().err
