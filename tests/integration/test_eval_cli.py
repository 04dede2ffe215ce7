"""``gense-eval`` and the evaluation API on a tiny TTS corpus with bad files."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_gense.audio import load_audio, save_audio
from speechbrain_gense.data.manifest import write_manifest
from speechbrain_gense.metrics.evaluate import (
    evaluate_folders,
    evaluate_manifest,
    format_markdown,
    main,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SENTENCES = {  # uid: (voice, text, snr, degradation)
    "u1": ("slt", "The quick brown fox jumps over the lazy dog.", -2.0, "noise"),
    "u2": ("kal16", "Open the door.", 7.0, "noise"),
    "u3": ("slt", "Call me tomorrow.", None, "none"),
}
BAD = ("empty", "text", "stereo", "missing")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """clean/, noisy/ (also the 'enhanced' folder), bad/ and two manifests."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed")
    root = tmp_path_factory.mktemp("corpus")
    gen = torch.Generator().manual_seed(0)
    entries = {}
    for uid, (voice, text, snr, degradation) in SENTENCES.items():
        clean_path = root / "clean" / f"{uid}.wav"
        clean_path.parent.mkdir(exist_ok=True)
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(clean_path)], check=True)
        clean, _ = load_audio(clean_path, sample_rate=16000)
        noisy = clean
        if snr is not None:
            noise = torch.randn(len(clean), generator=gen)
            noisy = clean + noise * clean.norm() / noise.norm() * 10 ** (-snr / 20)
            noisy = noisy / max(1.0, noisy.abs().max().item())
        save_audio(root / "noisy" / f"{uid}.wav", noisy, 16000)
        entries[uid] = {"clean_wav": str(clean_path), "noisy_wav": str(root / "noisy" / f"{uid}.wav"),
                        "words": text, "snr": snr, "degradation": degradation,
                        "speaker": voice}
    write_manifest(str(root / "test.json"), entries, data_root=str(root))

    # bad/: u1 and u2 as they are, u3 at 8 kHz, and broken files.
    bad = root / "bad"
    shutil.copytree(root / "noisy", bad)
    wav, _ = load_audio(bad / "u3.wav")
    os.remove(bad / "u3.wav")
    save_audio(bad / "u3.wav", wav[::2], 8000)
    (bad / "empty.wav").touch()
    (bad / "text.wav").write_text("not audio\n")
    sf.write(bad / "stereo.wav", np.zeros((16000, 2), dtype=np.float32), 16000)
    with_bad = dict(entries)
    for uid in BAD:
        with_bad[uid] = dict(entries["u1"], degradation="broken")
    write_manifest(str(root / "with_bad.json"), with_bad, data_root=str(root))
    return root


@pytest.fixture(scope="module")
def noisy_results(corpus):
    metrics = ("dnsmos", "pesq", "estoi", "sisdr", "secs", "wer", "mcd")
    return evaluate_manifest(corpus / "noisy", corpus / "test.json", metrics, progress=False)


def test_evaluate_manifest(noisy_results):
    res = noisy_results
    assert res["num_files"] == res["num_scored"] == 3 and res["failed"] == {}
    assert list(res["by_snr"]) == ["<0", "5-10", "none"]
    assert list(res["by_degradation"]) == ["noise", "none"]
    utts = res["utterances"]
    assert set(utts["u1"]) >= {"sig", "bak", "ovrl", "p808", "pesq", "estoi", "sisdr", "secs",
                               "wer", "hyp", "wer_errors", "wer_words", "mcd", "snr"}
    # u3 is the clean signal itself.
    assert utts["u3"]["pesq"] == pytest.approx(4.64, abs=0.01)
    assert utts["u3"]["mcd"] == 0.0 and utts["u3"]["secs"] == pytest.approx(1, abs=1e-4)
    assert utts["u1"]["sisdr"] == pytest.approx(-2.0, abs=0.3)
    assert utts["u1"]["pesq"] < 2 and utts["u1"]["ovrl"] < utts["u3"]["ovrl"]
    words = sum(u["wer_words"] for u in utts.values())
    assert words == 9 + 3 + 3
    assert res["overall"]["wer"] == pytest.approx(
        sum(u["wer_errors"] for u in utts.values()) / words)
    assert res["by_snr"]["none"]["pesq"] == utts["u3"]["pesq"]
    assert res["overall"]["n"] == 3 and res["by_snr"]["<0"]["n"] == 1
    # by the manifest's speaker: the two slt utterances and kal16's
    assert {k: v["n"] for k, v in res["by_speaker"].items()} == {"kal16": 1, "slt": 2}
    assert res["by_speaker"]["kal16"]["pesq"] == utts["u2"]["pesq"]
    assert res["by_speaker"]["slt"]["sisdr"] == pytest.approx(
        (utts["u1"]["sisdr"] + utts["u3"]["sisdr"]) / 2)
    table = format_markdown({"noisy": res})
    assert "**PESQ by speaker**" in table and "| system | kal16 (n=1) | slt (n=2) |" in table


def test_whisper_wer_and_dwer(corpus, noisy_results):
    """Whisper tiny.en is the default metric ASR; dWER is 0 for the clean references."""
    assert noisy_results["asr"].startswith("Whisper")
    assert noisy_results["utterances"]["u3"]["wer"] == 0.0  # clean flite speech, 3 words
    clean = evaluate_manifest(corpus / "clean", corpus / "test.json", ["wer", "dwer"],
                              progress=False)
    utts = clean["utterances"]
    assert all(u["dwer"] == 0.0 and u["ref_hyp"] == u["hyp"] for u in utts.values())
    noisy = evaluate_manifest(corpus / "noisy", corpus / "test.json", ["dwer"], progress=False)
    words = sum(u["dwer_words"] for u in noisy["utterances"].values())
    assert noisy["overall"]["dwer"] == pytest.approx(
        sum(u["dwer_errors"] for u in noisy["utterances"].values()) / words)
    assert noisy["utterances"]["u3"]["dwer"] == 0.0  # u3 is the clean signal
    assert noisy["utterances"]["u1"]["dwer"] > 0  # -2 dB white noise changes words
    table = format_markdown({"noisy": noisy, "clean": clean})
    assert table.splitlines()[0] == "| system | files | WER (%) | dWER (%) |"


def test_pocketsphinx_option(corpus, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main([str(corpus / "clean"), "--manifest", str(corpus / "test.json"), "--metrics",
                 "wer", "--asr", "pocketsphinx", "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["clean"]["asr"].startswith("pocketsphinx")
    capsys.readouterr()
    assert main([str(corpus / "clean"), "--manifest", str(corpus / "test.json"), "--metrics",
                 "wer", "--asr", "kaldi", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gense-eval: error: unknown ASR 'kaldi'") and "\n" not in err


def test_format_markdown(corpus, noisy_results):
    clean = evaluate_manifest(corpus / "clean", corpus / "test.json", ["pesq", "sisdr"],
                              progress=False)
    table = format_markdown({"noisy": noisy_results, "clean": clean})
    lines = table.splitlines()
    assert lines[0] == ("| system | files | SIG | BAK | OVRL | P.808 | PESQ | ESTOI | "
                        "SI-SDR (dB) | SECS | WER (%) | MCD (dB) |")
    assert lines[1] == "|---|" + "---:|" * 11
    assert lines[2].startswith("| noisy | 3 | ")
    assert lines[3].startswith("| clean | 3 | – | – | – | – | 4.64 | – | ")
    titles = [line for line in lines if line.startswith("**")]
    assert titles == ["**OVRL by SNR band (dB)**", "**PESQ by SNR band (dB)**",
                      "**OVRL by degradation**", "**PESQ by degradation**",
                      "**OVRL by speaker**", "**PESQ by speaker**"]
    i = lines.index("**PESQ by degradation**")
    assert lines[i + 2] == "| system | noise (n=2) | none (n=1) |"
    assert lines[i + 5] == "| clean | 4.64 | 4.64 |"


def test_cli_reports_bad_files(corpus, tmp_path, capsys, caplog):
    out, md = tmp_path / "r.json", tmp_path / "t.md"
    code = main([str(corpus / "bad"), "--manifest", str(corpus / "with_bad.json"),
                 "--metrics", "pesq,sisdr", "--name", "sys", "--out", str(out),
                 "--markdown", str(md), "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    assert "gense-eval: 4 of 7 files failed" in captured.err
    assert captured.out.startswith("| system | files | PESQ | SI-SDR (dB) |")
    assert "| sys | 3 (4 failed) |" in captured.out
    assert md.read_text().strip() == captured.out.strip()
    results = json.loads(out.read_text())["sys"]
    failed = results["failed"]
    assert sorted(failed) == sorted(BAD)
    assert "empty file" in failed["empty"] and "not a readable audio file" in failed["text"]
    assert "2 channels" in failed["stereo"] and "no such file" in failed["missing"]
    assert all("\n" not in message for message in failed.values())
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 4 and all(m.startswith("error: ") for m in errors)
    # The 8 kHz file is resampled and scored, with a warning.
    assert "8000 Hz, resampled to 16000 Hz" in results["warnings"]["u3"][0]
    assert results["utterances"]["u3"]["pesq"] > 3


def test_cli_usage_errors(corpus, capsys):
    cases = [
        ([str(corpus / "noisy"), "--manifest", str(corpus / "nope.json")], "no such manifest"),
        ([str(corpus / "nope"), "--manifest", str(corpus / "test.json")],
         "no such enhanced folder"),
        ([str(corpus / "noisy"), "--clean-dir", str(corpus / "nope")], "no such clean folder"),
        ([str(corpus / "noisy"), "--manifest", str(corpus / "test.json"), "--metrics", "psq"],
         "unknown metric 'psq'"),
    ]
    for argv, message in cases:
        assert main(argv + ["--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("gense-eval: error: ") and message in err and "\n" not in err


def test_cli_folders_with_the_same_name(corpus, tmp_path, capsys):
    """Two folders named alike are two rows (named by their path tails), never one."""
    import shutil

    for run in ("a", "b"):
        shutil.copytree(corpus / "clean", tmp_path / run / "draw=1")
    out = tmp_path / "r.json"
    assert main([str(tmp_path / "a" / "draw=1"), str(tmp_path / "b" / "draw=1"), "--manifest",
                 str(corpus / "test.json"), "--metrics", "sisdr", "--out", str(out),
                 "--quiet"]) == 0
    assert sorted(json.loads(out.read_text())) == ["a/draw=1", "b/draw=1"]
    capsys.readouterr()
    assert main([str(tmp_path / "a" / "draw=1"), str(tmp_path / "b" / "draw=1"), "--manifest",
                 str(corpus / "test.json"), "--metrics", "sisdr", "--name", "x,x",
                 "--quiet"]) == 2
    assert "--name 'x' is given twice" in capsys.readouterr().err


def test_cli_subprocess(corpus):
    """The command, as a user runs it: one line per bad file, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "speechbrain_gense.metrics.evaluate", str(corpus / "bad"),
         "--manifest", str(corpus / "with_bad.json"), "--metrics", "sisdr", "--quiet"],
        check=False, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert sum(line.startswith("error: ") for line in lines) == 4
    assert any(line.startswith("u3: ") and "resampled" in line for line in lines)
    assert "| bad | 3 (4 failed) |" in proc.stdout


def test_evaluate_folders(corpus, tmp_path):
    enhanced = tmp_path / "enhanced"
    shutil.copytree(corpus / "noisy", enhanced)
    os.remove(enhanced / "u2.wav")
    res = evaluate_folders(enhanced, corpus / "clean", corpus / "noisy", ["sisdr"], progress=False)
    assert sorted(res["utterances"]) == ["u1", "u3"] and list(res["failed"]) == ["u2"]
    assert res["utterances"]["u3"]["sisdr"] == 100.0
    # Reference-free folder evaluation (no clean folder): the files present.
    res = evaluate_folders(enhanced, metrics=["sisdr", "pesq"], progress=False)
    assert res["num_scored"] == 2 and res["utterances"]["u1"] == {
        "snr": None, "degradation": None, "speaker": None}
    # The CLI in folder mode, two systems in one table.
    assert main([str(corpus / "noisy"), str(corpus / "clean"), "--clean-dir",
                 str(corpus / "clean"), "--metrics", "sisdr", "--quiet"]) == 0
