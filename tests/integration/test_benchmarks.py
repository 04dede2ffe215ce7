"""benchmarks/long_audio.py and benchmarks/seams.py: tiny runs and the JSON they write."""

import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocess runs / shipped models: minutes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(REPO, "benchmarks")


def load_script(name):
    """Imports a benchmark script as a module (it puts benchmarks/ on sys.path itself)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCHMARKS,
                                                                                 f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_outputs(stem):
    with open(f"{stem}.json", encoding="utf-8") as f:
        result = json.load(f)
    with open(f"{stem}.md", encoding="utf-8") as f:
        markdown = f.read()
    return result, markdown


def finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_long_audio_tiny_quick(tmp_path, capsys):
    # the parent runs here; each measurement is a subprocess (about 8 s each: imports + load)
    stem = tmp_path / "out" / "long_audio"
    code = load_script("long_audio").main([
        "--tiny", "--quick", "--durations", "2s", "--threads", "1", "--out", str(stem),
        "--workdir", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    result, markdown = read_outputs(stem)
    assert result["table"] == markdown.rstrip("\n")
    assert "| load only |" in markdown and "| 2 s |" in markdown
    assert {"cpu", "cpu_count", "torch", "threads"} <= set(result["machine"])
    load = result["load_only"]
    assert load["peak_rss_mib"] > 0 and load["load_s"] > 0
    rows = result["rows"]
    assert [row["duration"] for row in rows] == ["2 s"]
    for row, seconds in zip(rows, (2.0,), strict=True):
        assert row["audio_s"] == pytest.approx(seconds)
        assert row["rtf"] > 0 and row["enhance_s"] > 0 and row["cpu_rtf"] >= 0
        assert row["peak_rss_mib"] > 0 and row["peak_rss_mib"] >= row["peak_rss_after_load_mib"]
        assert finite(row["growth_over_load_only_mib"]) and row["chunks"] >= 1
        assert row["output_frames"] == row["input_frames"] == int(seconds * 16000)
        assert row["threads"] == 1 and row["rss_timeline"]
    assert set(result["summary"]) >= {"peak_rss_shortest_mib", "peak_rss_longest_mib",
                                      "peak_rss_change_mib"}
    # the temporary audio files are gone
    assert not [name for name in os.listdir(tmp_path) if name.startswith("long_audio-")]


def test_seams_tiny_quick(tmp_path, capsys):
    stem = tmp_path / "seams"
    code = load_script("seams").main(["--tiny", "--quick", "--threads", "1", "--out", str(stem),
                                      "--quiet"])
    assert code == 0, capsys.readouterr().err
    result, markdown = read_outputs(stem)
    assert "(a) Discontinuity" in markdown and "(b) Distances" in markdown
    assert result["input"]["seconds"] == pytest.approx(4.0)
    assert result["chunked"]["chunks"] == 4 and result["one_pass"]["chunks"] == 1
    assert result["borders_s"] == pytest.approx([1.0, 2.0, 3.0])
    d = result["discontinuity"]
    for measure in ("diff_energy", "spectral_flux"):
        for name in ("noisy", "one_pass", "chunked", "chunked_minus_one_pass"):
            stats = d[measure][name]
            assert len(stats["borders"]) == 3
            for key in ("border_mean", "elsewhere_median", "border_re_elsewhere_db_mean"):
                assert finite(stats[key]), (measure, name, key)
            assert 0 <= stats["border_percentile_mean"] <= 100
    for comparison in result["distances"].values():
        for region in ("overall", "near", "away"):
            assert finite(comparison[region]["lsd_db"]) and comparison[region]["lsd_db"] >= 0
            assert finite(comparison[region]["si_sdr_db"])


def test_seam_measures_find_clicks_and_jumps_at_the_borders():
    seams = load_script("seams")
    rng = np.random.default_rng(0)
    rate, borders = 16000, [16000, 32000, 48000]
    t = np.arange(4 * rate) / rate
    one_pass = 0.1 * np.sin(2 * np.pi * 200 * t) + 0.01 * rng.standard_normal(t.shape[0])
    chunked = one_pass.copy()
    for b in borders:
        chunked[b:b + 3] += 0.5  # a click at each border
    d = seams.discontinuity({"noisy": one_pass, "one_pass": one_pass, "chunked": chunked},
                            borders, rate)
    assert d["diff_energy"]["chunked"]["border_percentile_mean"] == 100
    assert d["diff_energy"]["one_pass"]["border_percentile_mean"] < 100
    assert d["diff_energy"]["chunked_minus_one_pass"]["border_mean"] > 10
    assert d["diff_energy"]["chunked_minus_one_pass"]["elsewhere_median"] == pytest.approx(0)
    # a jump of level from one chunk to the next: spectral flux
    gain = np.ones_like(one_pass)
    gain[borders[0]:borders[1]] = gain[borders[2]:] = 0.25
    d = seams.discontinuity({"noisy": one_pass, "one_pass": one_pass,
                             "chunked": one_pass * gain}, borders, rate)
    assert d["spectral_flux"]["chunked"]["border_percentile_mean"] == 100
    assert d["spectral_flux"]["chunked_minus_one_pass"]["border_mean"] > 5
    dist = seams.distances(chunked, one_pass, borders, rate)
    assert dist["near"]["si_sdr_db"] < dist["away"]["si_sdr_db"]
    assert dist["away"]["lsd_db"] == pytest.approx(0, abs=1e-6)
    assert dist["near"]["lsd_db"] > 0.1


def test_durations_and_missing_model(capsys):
    long_audio = load_script("long_audio")
    common = sys.modules["common"]
    assert [common.parse_duration(d) for d in ("5", "30s", "1.5m", "10min", "1h")] == \
        [5.0, 30.0, 90.0, 600.0, 3600.0]
    assert long_audio.main(["--durations", "ten"]) == 2
    assert "not a duration" in capsys.readouterr().err
    for script in (long_audio, load_script("seams")):
        assert script.main(["--model", "/no/such/model", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "/no/such/model: no such model folder" in err


@pytest.mark.parametrize("hint", [False, True])
def test_gense_speed_tiny(tmp_path, capsys, hint):
    """Every row of the GenSE/MAGE speed table, on tiny random models (code paths only),
    with and without hinted LMs (the shipped GenSE has them)."""
    gense_speed = load_script("gense_speed")
    common = sys.modules["common"]
    gense = common.build_tiny_gense_folder(str(tmp_path / "gense"), hint=hint)
    mage = common.build_tiny_model_folder(str(tmp_path / "mage"))
    stem = tmp_path / "out" / "gense_speed"
    code = gense_speed.main(["--gense", gense, "--mage", mage, "--seconds", "1.5", "--runs", "2",
                             "--threads", "1", "--out", str(stem)])
    assert code == 0, capsys.readouterr().err
    result, markdown = read_outputs(stem)
    rows = {row["system"]: row for row in result["rows"]}
    assert list(rows) == ["gense, no cache", "gense, KV cache", "gense, KV cache, int8",
                          "gense, KV cache, batched chunks",
                          "gense, KV cache, batched chunks, int8", "mage", "mage, int8"]
    assert len(rows["gense, no cache"]["runs"]) == 1 and len(rows["mage"]["runs"]) == 2
    assert "gense, no cache (1 run)" in markdown and "| x mage |" in markdown
    # 1.5 s in 0.5 s chunks: 3 calls one after the other, or one batched call
    assert rows["gense, KV cache"]["calls"] == 3 and rows["gense, KV cache"]["carry_context"]
    batched = rows["gense, KV cache, batched chunks"]
    assert batched["calls"] == 1 and not batched["carry_context"]
    assert batched["nfe"] < rows["gense, KV cache"]["nfe"]
    # the same tokens are generated, only fewer forward calls: the no-cache NFE is equal
    assert rows["gense, no cache"]["nfe"] == rows["gense, KV cache"]["nfe"]
    assert rows["mage"]["x_mage"] == pytest.approx(1.0)
    for row in rows.values():
        assert row["seconds"] > 0 and row["rtf"] == pytest.approx(row["seconds"] / 1.5)
        assert row["output_tok_s"] == pytest.approx(1.5 * 80 / row["seconds"])
        assert row["generated_tokens"] > 0 and finite(row["generated_tok_s"])


def test_gense_streaming_latency_tiny(tmp_path, capsys):
    """The streaming table on the tiny GenSE: the latency arithmetic and one row per lookahead."""
    streaming = load_script("gense_streaming")
    common = sys.modules["common"]
    gense = common.build_tiny_gense_folder(str(tmp_path / "gense"), hint=True)  # as shipped
    stem = tmp_path / "out" / "streaming"
    code = streaming.main(["--gense", gense, "--lookahead", "0,2", "--seconds", "0.5",
                           "--runs", "1", "--out", str(stem)])
    assert code == 0, capsys.readouterr().err
    result, markdown = read_outputs(stem)
    chunked, *rows = result["rows"]
    # the tiny model's inference.yaml: 0.5 s chunks with 0.1 s of context
    assert chunked["waits_ms"] == pytest.approx(600.0) and chunked["lookahead"] is None
    assert [r["lookahead"] for r in rows] == [0, 2]
    for r in rows:  # 50 Hz semantic and 80 Hz acoustic debug tokens: blocks of 100 ms
        assert r["block_ms"] == pytest.approx(100.0)
        assert r["waits_ms"] == pytest.approx(100.0 * (r["lookahead"] + 1))
        assert r["first_output_ms"] == pytest.approx(r["waits_ms"] + r["first_block_ms"])
        assert r["first_block_ms"] > 0 and r["per_block_ms"] > 0
        assert r["rtf"] == pytest.approx(r["per_block_ms"] * 5 / 500.0)  # 5 blocks in 0.5 s
    assert "| gense, interleaved, lookahead 2 |" in markdown
    mage = common.build_tiny_model_folder(str(tmp_path / "mage"))
    assert streaming.main(["--gense", mage, "--out", str(tmp_path / "no")]) == 2
    assert "is not a GenSE model" in capsys.readouterr().err
    assert streaming.main(["--lookahead", "-1"]) == 2


def test_long_audio_runs_a_gense_folder(tmp_path, capsys):
    """long_audio.py takes any method folder, with inference.yaml overrides, decoding
    options and batched chunks."""
    long_audio = load_script("long_audio")
    common = sys.modules["common"]
    gense = common.build_tiny_gense_folder(str(tmp_path / "gense"))
    stem = tmp_path / "out" / "long_audio"
    code = long_audio.main(["--model", gense, "--durations", "2s", "--threads", "1",
                            "--override", "carry_context=false", "--batch-size", "8",
                            "--decode-opt", "precision=int8", "--out", str(stem),
                            "--workdir", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    result, markdown = read_outputs(stem)
    assert result["load_only"]["method"] == "gense" and "(method gense)" in markdown
    assert result["overrides"] == {"carry_context": False} and result["batch_size"] == 8
    assert result["decode_opts"] == {"precision": "int8"}
    (row,) = result["rows"]
    assert row["chunks"] == 4 and row["carry_context"] is False and row["batch_size"] == 8
    assert row["output_frames"] == row["input_frames"] == 32000
    assert long_audio.main(["--model", gense, "--decode-opt", "precision", "--quiet"]) == 2
    assert "--decode-opt expects NAME=VALUE" in capsys.readouterr().err


def test_mage_speed_budget_variants(tmp_path, capsys):
    mage_speed = load_script("mage_speed")
    v = mage_speed.parse_variant("sdpa+masked-head+int8+cdf+steps3+csteps0")
    assert v == {"attention": "sdpa", "masked_head": True, "precision": "int8",
                 "sampler": "cdf", "steps": 3, "corrector_steps": 0,
                 "content_precision": None, "speaker_precision": None,
                 "content_backend": None}
    assert mage_speed.parse_variant("unoptimised")["corrector_steps"] is None
    assert mage_speed.parse_variant("sdpa+steps4+content-bf16")["content_precision"] == "bf16"
    assert mage_speed.parse_variant("sdpa+content-onnx+steps4")["content_backend"] == "onnx"
    for bad in ("int8", "sdpa+steps0", "sdpa+stepsx"):
        with pytest.raises(ValueError):
            mage_speed.parse_variant(bad)
    assert mage_speed.main(["--variants", "sdpa+fast"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sdpa+fast" in err
    # a tiny model: the budget variants change the number of enhancer calls
    folder = tmp_path / "tiny"
    sys.modules["common"].build_tiny_model_folder(str(folder))
    out = tmp_path / "speed.json"
    code = mage_speed.main(["--model", str(folder), "--quick", "--seconds", "1",
                            "--thread-counts", "1", "--threads", "1", "--out", str(out),
                            "--variants", "sdpa+masked-head+steps2+csteps0,"
                            "sdpa+masked-head+steps3+csteps1"])
    assert code == 0, capsys.readouterr().err
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["sdpa+masked-head+steps2+csteps0"]["model_calls"] == 2
    # 3 steps, the enhancer pass the corrector scores, 1 re-generation step
    assert rows["sdpa+masked-head+steps3+csteps1"]["model_calls"] == 3 + 1 + 1
    # the tiny model has no Whisper content features: a one-line error, no run
    assert mage_speed.main(["--model", str(folder), "--quick", "--thread-counts", "1",
                            "--out", str(tmp_path / "no.json"),
                            "--variants", "sdpa+content-bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no Whisper content features" in err
    assert not (tmp_path / "no.json").exists()


def test_gense_copy_probe_tiny(tmp_path, capsys):
    """The copy task's targets are the noisy tokens but for the flipped fraction; a tiny
    run writes one held-out accuracy curve per configuration."""
    import torch

    probe = load_script("gense_copy_probe")
    from speechbrain_gense.models.gense import GenSEVocab

    vocab = GenSEVocab(8, 1000, 2)
    gen = torch.Generator().manual_seed(0)
    _, _, noisy, target = probe.make_batch(vocab, 4, 3, 50, 0.0, gen)
    assert noisy.shape == (4, 50, 2) and torch.equal(noisy, target)
    _, _, noisy, target = probe.make_batch(vocab, 4, 3, 50, 1.0, gen)
    assert (noisy == target).float().mean() < 0.01  # all redrawn: agreement by chance only
    out = str(tmp_path / "probe.json")
    results = probe.main(["--steps", "2", "--every", "1", "--sem-frames", "3", "--ac-frames",
                          "4", "--vocab", "16", "--hidden-size", "32", "--num-layers", "1",
                          "--num-heads", "2", "--configs", "gpt2:default", "llama:1",
                          "gpt2:1:hint", "--out", out])
    with open(out, encoding="utf-8") as f:
        saved = json.load(f)
    assert set(saved["curves"]) == {"gpt2:default", "llama:1", "gpt2:1:hint"} == set(results)
    with pytest.raises(SystemExit):
        probe.main(["--steps", "1", "--configs", "gpt2:1:copy"])
    for curve in saved["curves"].values():
        assert [c["step"] for c in curve] == [1, 2]
        assert all(0.0 <= c["valid_acc"] <= 1.0 and finite(c["train_loss"]) for c in curve)
    assert "| llama:1 |" in capsys.readouterr().out


def test_best_of_n_guard_rules_calibrate_on_valid_and_apply_to_test(tmp_path, capsys):
    bon = load_script("best_of_n")

    def row(texts, dwer, noisy_dwer, lp, noisy_lp=-0.8, noisy_text="a b c d"):
        n = len(texts)
        return {"snr": 20.0, "snr_est": 25.0, "texts": texts, "noisy_text": noisy_text,
                "ref_text": "a b c e", "lp": lp, "noisy_lp": noisy_lp, "dwer": dwer,
                "noisy_dwer": noisy_dwer,
                "cons": bon.consensus_scores(texts),
                "cons_input": bon.consensus_scores(texts, noisy_text)}

    # Reference "a b c e", noisy transcript "a b c d" (dWER 0.25). u1 / t1: the kept
    # candidate recovers the word, and Whisper hears it surely; u2 / t2: it loses another
    # word and is heard less surely. Both differ from the noisy transcript by one word.
    valid = {"u1": row(["a b c e"] * 2, [0.0, 0.0], 0.25, [-0.3, -0.3]),
             "u2": row(["a b x d"] * 2, [0.5, 0.5], 0.25, [-1.5, -1.5])}
    test = {"t1": row(["a b c e"] * 2, [0.0, 0.0], 0.25, [-0.2, -0.2]),
            "t2": row(["a b x d"] * 2, [0.5, 0.5], 0.25, [-1.6, -1.6])}
    for name, rows in (("v", valid), ("t", test)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    rows, ours, noisy, feats = bon.guard_rows([str(tmp_path / "v.json")])
    assert [r["transcript_wer"] for r in rows] == [0.25, 0.25]
    assert feats[f"{tmp_path / 'v.json'}#u1"]["dlp"] == pytest.approx(-0.5)
    table = bon.guard_rules([str(tmp_path / "v.json")], [str(tmp_path / "t.json")],
                            shipped={"wer_at_high_snr": 0.1, "wer_at_low_snr": 0.1})
    # Words alone must flag both to keep u2 no worse: the input everywhere.
    words = table["calibrated, words only"]
    assert words[1]["flagged"] == 2 and words[2]["mean"] == pytest.approx(0.25)
    # Whisper's confidence keeps u1 / t1 and flags u2 / t2: no file worse, dWER lower.
    both = table["calibrated, words + ASR confidence"]
    assert both[0]["max_logprob_drop"] is not None
    assert (both[1]["flagged"], both[1]["worse"]) == (1, 0)
    assert (both[2]["flagged"], both[2]["worse"], both[2]["mean"]) == (1, 0, 0.125)
    assert table["no guard"][2]["worse_ids"] == [f"{tmp_path / 't.json'}#t2"]
    assert "| shipped thresholds | 0.1 / 0.1 / None | 2 | 0 |" in capsys.readouterr().out
