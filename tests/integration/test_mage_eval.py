"""gense-evaluate (and its old name gense-mage-eval) on three hand-made utterances with two
tiny MAGE folders and the toy copy-noisy method."""

import json

import numpy as np
import pytest
import torch

from speechbrain_gense.audio import load_audio, save_audio
from speechbrain_gense.data.manifest import write_manifest
from speechbrain_gense.evaluation import main
from speechbrain_gense.mage_eval import main as old_main
from speechbrain_gense.models.debug import write_tiny_model

# samples at 16 kHz, SNR, degradation
UTTERANCES = {"u1": (24000, 2.0, "noise"), "u2": (16000, 7.0, "noise+reverb"),
              "u3": (20800, 12.0, "noise")}
METRICS = "pesq,estoi"


def _signal(index, length):
    """Voiced-like test speech: harmonics with a syllabic envelope."""
    t = torch.arange(length) / 16000
    f0 = 120.0 + 40.0 * index
    wav = sum(torch.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))
    return 0.1 * wav * 0.5 * (1 - torch.cos(2 * np.pi * 3 * t))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-utterance manifest and two model folders: full MAGE, and one without
    corrector nor frequency table (a random-mask model)."""
    root = tmp_path_factory.mktemp("mage_eval")
    entries = {}
    for i, (uid, (length, snr, degradation)) in enumerate(UTTERANCES.items(), 1):
        clean = _signal(i, length)
        noise = torch.randn(length, generator=torch.Generator().manual_seed(i))
        noisy = clean + noise * clean.norm() / noise.norm() * 10 ** (-snr / 20)
        save_audio(root / "clean" / f"{uid}.wav", clean, 16000)
        save_audio(root / "noisy" / f"{uid}.wav", noisy, 16000)
        entries[uid] = {"noisy_wav": root / "noisy" / f"{uid}.wav",
                        "clean_wav": root / "clean" / f"{uid}.wav",
                        "length": length / 16000, "words": "HELLO WORLD",
                        "snr": snr, "degradation": degradation}
    manifest = root / "test.json"
    write_manifest(manifest, entries, data_root=root)
    write_tiny_model(str(root / "mage"), "mage", band=True)
    write_tiny_model(str(root / "plain"), "mage", corrector=False, token_frequency=False)
    write_tiny_model(str(root / "copy"), "copy-noisy")
    return root, str(manifest)


@pytest.fixture(scope="module")
def ablation(setup):
    root, manifest = setup
    out = root / "out"
    before = {p: p.read_bytes() for p in sorted((root / "noisy").iterdir())}
    code = main(["--manifest", manifest, "--out", str(out), "--metrics", METRICS, "--quiet",
                 "--model", f"mage={root / 'mage'}", "--model", str(root / "plain"),
                 "--grid", "steps=1,2", "--grid", "corrector=on,off",
                 "--grid", "strategy=ctf,confidence",
                 "--decode-opt", "temperature=0.8", "--baselines", "--codec", "--seed", "7",
                 "--threads", "1"])  # recorded as torch_threads, whatever earlier tests left
    assert before == {p: p.read_bytes() for p in sorted((root / "noisy").iterdir())}
    return code, out, json.loads((out / "results.json").read_text())


def _mage_rows(model, steps, corrector, decode):
    return [f"{model}/steps={s}/corrector={c}/strategy={d}"
            for s in steps for c in corrector for d in decode]


def test_rows_are_the_cross_product(ablation):
    code, _, results = ablation
    assert code == 0
    expected = ["noisy", "clean", "rnnoise", "spectral_gating", "dfn3", "codec",
                *_mage_rows("mage", (1, 2), ("on", "off"), ("ctf", "confidence")),
                *_mage_rows("plain", (1, 2), ("off",), ("confidence",))]
    assert list(results["summary"]) == expected
    # The plain model has no corrector and no frequency table: the model's own reasons.
    assert sorted(results["skipped"]) == sorted(
        set(_mage_rows("plain", (1, 2), ("on", "off"), ("ctf", "confidence")))
        - set(expected))
    reasons = set(results["skipped"].values())
    assert reasons == {"corrector=True: the model has no corrector",
                       'strategy "ctf" needs a TokenFrequency (freq)'}
    assert results["num_utterances"] == 3 and results["metrics"] == ["pesq", "estoi"]
    assert results["seed"] == 7 and results["torch_threads"] == 1


def test_columns_timing_and_settings(ablation):
    _, out, results = ablation
    summary, systems = results["summary"], results["systems"]
    for name, row in summary.items():
        assert row["files"] == 3 and row["failed"] == 0, name
        assert row["pesq"] is not None and row["estoi"] is not None, name
    assert summary["clean"]["pesq"] > 4 and summary["noisy"]["rtf"] is None
    for name in ("rnnoise", "spectral_gating", "dfn3", "codec"):
        assert summary[name]["rtf"] > 0 and summary[name]["nfe"] is None
    assert summary["codec"]["bits_per_s"] == pytest.approx(80 * 5)  # 80 Hz x log2(32)
    for name, system in systems.items():
        if system["kind"] != "model":
            continue
        assert system["method"] == "mage"
        row, settings = summary[name], system["settings"]
        assert row["rtf"] > 0 and system["timing"]["utterances"] == 3
        assert 0 <= row["confidence"] <= 1
        assert settings["temperature"] == 0.8  # --decode-opt reached every row
        steps = int(name.split("steps=")[1].split("/")[0])
        on = "corrector=on" in name
        assert settings["corrector"] is on and settings["steps"] == steps
        assert settings["strategy"] == name.rsplit("strategy=", 1)[1]
        assert row["nfe"] == steps + (1 + 1 if on else 0)  # measured; corrector_steps=1
    header, _, *lines = (out / "table.md").read_text().split("\n\n")[0].splitlines()
    assert header == "| system | files | NFE | RTF | PESQ | ESTOI |"
    assert len(lines) == len(summary)
    assert next(l for l in lines if l.startswith("| mage/steps=2/corrector=on/strategy=ctf |")
                ).split(" | ")[2] == "4"
    table = (out / "table.md").read_text()
    assert "**PESQ by SNR band (dB)**" in table and "**PESQ by degradation**" in table


def test_output_wavs(ablation):
    _, out, results = ablation
    for name in results["summary"]:
        for uid, (length, _, _) in UTTERANCES.items():
            wav, sr = load_audio(out / name / f"{uid}.wav")
            assert sr == 16000 and wav.shape == (length,), (name, uid)
    wav, _ = load_audio(out / "mage/steps=2/corrector=on/strategy=ctf" / "u1.wav")
    assert float(wav.abs().max()) > 0


def test_same_seed_same_wavs_and_default_row(setup, capsys):
    root, manifest = setup

    def run(name, seed):
        out = root / name
        code = main(["--manifest", manifest, "--out", str(out), "--metrics", "sisdr",
                     "--quiet", "--model", f"mage={root / 'mage'}", "--seed", str(seed)])
        assert code == 0
        return out, json.loads((out / "results.json").read_text())

    (a, res), (b, _), (c, _) = run("seed_a", 3), run("seed_b", 3), run("seed_c", 4)
    # Without variant options: one row per model, with its own decoding options.
    assert list(res["summary"]) == ["mage"]
    assert res["summary"]["mage"]["nfe"] == 3 + 1 + 1
    assert "| mage | 3 | 5 |" in capsys.readouterr().out
    for uid in UTTERANCES:
        assert (a / "mage" / f"{uid}.wav").read_bytes() == (b / "mage" / f"{uid}.wav").read_bytes()
    assert any((a / "mage" / f"{uid}.wav").read_bytes() != (c / "mage" / f"{uid}.wav").read_bytes()
               for uid in UTTERANCES)


def test_draws_decode_with_consecutive_seeds_and_report_mean_and_sd(setup, capsys):
    root, manifest = setup
    out = root / "draws"
    code = main(["--manifest", manifest, "--out", str(out), "--metrics", "sisdr,pesq",
                 "--quiet", "--model", f"mage={root / 'mage'}", "--seed", "3", "--draws", "3"])
    assert code == 0
    res = json.loads((out / "results.json").read_text())
    names = ["mage/draw=1", "mage/draw=2", "mage/draw=3"]
    assert list(res["summary"]) == names
    assert [res["systems"][n]["seed"] for n in names] == [3, 4, 5]
    # draw 1 is the single-draw run of the same seed; draw 2 that of seed 4
    for seed, name in ((3, names[0]), (4, names[1])):
        single = root / f"single_{seed}"
        assert main(["--manifest", manifest, "--out", str(single), "--metrics", "sisdr",
                     "--quiet", "--model", f"mage={root / 'mage'}", "--seed", str(seed)]) == 0
        for uid in UTTERANCES:
            assert (out / name / f"{uid}.wav").read_bytes() == \
                (single / "mage" / f"{uid}.wav").read_bytes()
    stats = res["draws"]["mage"]
    assert stats["draws"] == 3 and stats["seeds"] == [3, 4, 5] and stats["files"] == 3
    values = [res["summary"][n]["sisdr"] for n in names]
    assert stats["sisdr"]["values"] == values
    assert stats["sisdr"]["mean"] == pytest.approx(np.mean(values))
    assert stats["sisdr"]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert stats["sisdr"]["sd"] > 0  # other seeds, other samples
    printed = capsys.readouterr().out
    assert "**Mean ± standard deviation over the decoding draws**" in printed
    assert "| mage | 3 | 3–5 |" in printed


def test_bad_model_folder(setup, capsys):
    root, manifest = setup
    for folder in (root / "nonexistent", root / "clean"):
        code = main(["--manifest", manifest, "--out", str(root / "bad"), "--quiet",
                     "--model", f"m={folder}", "--metrics", "sisdr"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("gense-evaluate: error:"), err
        assert len(err.splitlines()) == 1
        assert ("no such model folder" if folder.name == "nonexistent"
                else "inference.yaml: missing") in err
    assert not (root / "bad").exists()  # fails before any work


def test_usage_errors(setup, capsys):
    root, manifest = setup
    model = ["--model", f"mage={root / 'mage'}"]
    common = ["--manifest", manifest, "--out", str(root / "bad"), "--quiet", "--metrics", "sisdr"]
    cases = [
        (model + ["--grid", "steps"], "--grid: expected NAME=VALUE, got 'steps'"),
        (model + ["--grid", "steps=1,1"], "a value is repeated"),
        (model + ["--grid", "steps=1", "--grid", "steps=2"], "axis 'steps' given twice"),
        (model + ["--decode-opt", "steps"], "--decode-opt: expected NAME=VALUE"),
        (model + ["--metrics", "pesq,nope"], "unknown metric 'nope'"),
        (model + ["--draws", "0"], "--draws must be >= 1"),
        (model + ["--model", f"mage={root / 'plain'}"], "two models named 'mage'"),
        (["--model", f"clean={root / 'mage'}", "--baselines"], "'clean' is taken"),
        (["--codec", "--baselines"], "give a --model"),
        (model + ["--baselines", "noisy,rnoise"], "unknown baseline 'rnoise'"),
        ([], "nothing to evaluate"),
        (["--training-log", "run"], "--training-log takes NAME=TRAIN_LOG"),
        (["--training-log", f"run={root / 'no_log.txt'}"], "no such training log"),
    ]
    for extra, message in cases:
        code = main(common + extra)
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (extra, err)
    assert not (root / "bad").exists()
    code = main(["--manifest", str(root / "nope.json"), *model])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "nope.json" in err and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--grid" in capsys.readouterr().out


def test_chosen_baselines_only(setup):
    """``--baselines clean,noisy``: just those rows, in table order (no RNNoise, no DFN3)."""
    root, manifest = setup
    out = root / "two_baselines"
    assert main(["--manifest", manifest, "--out", str(out), "--quiet", "--metrics", "sisdr",
                 "--baselines", "clean,noisy"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["systems"]) == ["noisy", "clean"]
    assert results["summary"]["clean"]["sisdr"] > 90 > results["summary"]["noisy"]["sisdr"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["clean", "noisy"]


def test_every_row_skipped_is_a_one_line_error(setup, capsys):
    root, manifest = setup
    code = main(["--manifest", manifest, "--out", str(root / "typo"), "--quiet",
                 "--metrics", "sisdr", "--model", f"mage={root / 'mage'}",
                 "--grid", "stpes=1,2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "unknown decoding option 'stpes'" in err, err


def test_a_toy_method_plugs_into_the_evaluation(setup):
    """copy-noisy: one module + one registry entry, nothing in the evaluation knows it."""
    root, manifest = setup
    out = root / "toy"
    code = main(["--manifest", manifest, "--out", str(out), "--quiet", "--metrics", "sisdr",
                 "--model", f"copy={root / 'copy'}", "--grid", "shift=0,1", "--codec"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    summary, systems = results["summary"], results["systems"]
    assert list(summary) == ["codec", "copy/shift=0", "copy/shift=1"]
    assert systems["copy/shift=0"]["method"] == "copy-noisy"
    assert summary["copy/shift=0"]["nfe"] == 0 and summary["copy/shift=0"]["confidence"] == 1
    # shift=0 re-synthesises the noisy tokens; shift=1 moves every code: other audio
    a = load_audio(out / "copy" / "shift=0" / "u1.wav")[0]
    b = load_audio(out / "copy" / "shift=1" / "u1.wav")[0]
    assert not torch.allclose(a, b)


def test_old_name_and_options_still_work(setup):
    root, manifest = setup
    out = root / "old"
    code = old_main(["--manifest", manifest, "--out", str(out), "--quiet", "--metrics",
                     "sisdr", "--model", f"mage={root / 'mage'}", "--steps", "1",
                     "--corrector", "off", "--decode=confidence"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["summary"]) == ["mage/steps=1/corrector=off/strategy=confidence"]


def test_training_log_alone_plots_every_run_and_keeps_the_points(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("epoch: 1, lr: 5.00e-04 - train loss: 7.0 - valid loss: 6.5, valid acc: 0.02, "
                 "valid ovrl: 1.6\nepoch: 2, lr: 5.00e-04 - train loss: 6.6 - valid loss: 6.2, "
                 "valid acc: 0.04, valid ovrl: 1.8\n")
    b.write_text("epoch: 1, lr: 5.00e-04 - train loss: 7.1 - valid loss: 6.4, valid acc: 0.03\n")
    out = tmp_path / "out"
    assert main(["--training-log", f"plain={a}", "--training-log", f"whisper={b}",
                 "--out", str(out)]) == 0
    assert (out / "training_curves.png").stat().st_size > 0
    import json

    points = json.loads((out / "training_curves.json").read_text())
    assert [p["valid_acc"] for p in points["plain"]] == [0.02, 0.04]
    assert points["whisper"][0]["valid_loss"] == 6.4
    empty = tmp_path / "empty.txt"
    empty.write_text("not a log\n")
    assert main(["--training-log", f"x={empty}", "--out", str(tmp_path / "o2")]) == 2
    assert "no epoch lines" in capsys.readouterr().err
