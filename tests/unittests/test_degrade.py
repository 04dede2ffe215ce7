"""Degradations: exact SNR, RIR alignment and tail, bandwidth, clipping, packet loss."""

import numpy as np
import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain_gense.data import degrade as D
from speechbrain_gense.data.noise import colored_noise, room_impulse_response

SR = 16000


def speechlike(seed, seconds=1.0):
    """Amplitude-modulated harmonic signal with pauses (speech-like power profile)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(SR * seconds)) / SR
    env = (torch.sin(2 * np.pi * 3 * t) > 0).float() * torch.rand(1, generator=g)
    x = sum(torch.sin(2 * np.pi * 150 * h * t) / h for h in range(1, 8))
    return env * x + 0.01 * torch.randn(len(t), generator=g)


def snr_db(speech, noise):
    return float(10 * torch.log10(D.signal_power(speech) / D.signal_power(noise)))


@pytest.mark.parametrize("target", [-5.0, -0.3, 0.0, 7.25, 20.0])
def test_mix_at_snr_is_exact(target):
    speech = speechlike(1)
    noise = torch.from_numpy(colored_noise(np.random.default_rng(2), len(speech), 1.0))
    noisy, scaled = D.mix_at_snr(speech, noise, target)
    assert abs(snr_db(speech, scaled) - target) < 0.01
    assert torch.allclose(noisy - speech, scaled, atol=1e-6)


def test_mix_at_snr_batched():
    speech = torch.stack([speechlike(i) for i in range(3)])
    noise = torch.randn_like(speech)
    _, scaled = D.mix_at_snr(speech, noise, torch.tensor([0.0, 5.0, 10.0]))
    got = 10 * torch.log10(D.signal_power(speech) / D.signal_power(scaled))
    assert torch.allclose(got, torch.tensor([0.0, 5.0, 10.0]), atol=0.01)


def test_degrader_snr_accurate_with_short_tiled_noise():
    """Noise shorter than the speech is tiled; the SNR still holds to 0.1 dB."""
    speech = speechlike(3, seconds=2.0)
    noise = torch.randn(5000)
    deg = D.Degrader(noise_signals=[noise], rir_prob=0.0, noise_prob=1.0)
    for seed in range(10):
        plan = deg.draw(torch.Generator().manual_seed(seed))
        offset = int(plan["noise_offset"] * len(noise))
        added = D.fit_length(noise, len(speech), offset)
        noisy, info = deg.apply(speech, plan)
        # Undo the output peak limiter (a pure gain) before measuring.
        _, ref = D.mix_at_snr(speech, added, plan["snr"])
        gain = float((noisy @ (speech + ref)) / ((speech + ref) @ (speech + ref)))
        measured = snr_db(speech, noisy / gain - speech)
        assert abs(measured - plan["snr"]) < 0.1
        assert -5.0 <= plan["snr"] <= 20.0
        assert info["snr"] == round(plan["snr"], 2)


def test_degrader_probabilities_and_determinism():
    deg = D.Degrader(noise_signals=[torch.randn(1000)], rir_signals=[torch.eye(1)[0]],
                     noise_prob=0.8, rir_prob=0.5)
    g = torch.Generator().manual_seed(0)
    plans = [deg.draw(g) for _ in range(2000)]
    assert abs(np.mean([p["noise"] for p in plans]) - 0.8) < 0.03
    assert abs(np.mean([p["rir"] for p in plans]) - 0.5) < 0.03
    x = speechlike(4)
    a, ia = deg(x, torch.Generator().manual_seed(7))
    b, ib = deg(x, torch.Generator().manual_seed(7))
    c, _ = deg(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and ia == ib
    assert not torch.equal(a, c)


def test_ensure_one_never_returns_clean():
    deg = D.Degrader(noise_signals=[torch.randn(1000)], rir_signals=[torch.ones(1)],
                     noise_prob=0.1, rir_prob=0.1, ensure_one=True)
    g = torch.Generator().manual_seed(0)
    plans = [deg.draw(g) for _ in range(200)]
    assert all(p["noise"] or p["rir"] for p in plans)


def test_degrader_requires_files_for_its_probabilities():
    with pytest.raises(ValueError, match="noise"):
        D.Degrader(noise_prob=0.5, rir_prob=0.0)
    with pytest.raises(ValueError, match="RIR"):
        D.Degrader(noise_prob=0.0, rir_prob=0.5)


def test_rir_keeps_alignment_and_adds_a_tail():
    rir, info = room_impulse_response(np.random.default_rng(3), SR, rt60_range=(0.6, 0.6))
    x = torch.zeros(SR)
    x[1600:1700] = torch.hann_window(100)  # short blip at 0.1 s
    y = D.apply_rir(x, torch.from_numpy(rir))
    assert y.shape == x.shape
    # The direct path lands where the dry blip was: nothing before it.
    onset = int(torch.nonzero(y.abs() > 0.05 * y.abs().max())[0])
    assert 1600 - 50 <= onset <= 1700
    # Energy in 0.2-0.5 s (dry signal silent there) is reverberant tail, and it decays.
    early, late = y[3200:5600].pow(2).sum(), y[5600:8000].pow(2).sum()
    assert early > 1e-4 * y.pow(2).sum()
    assert late < early
    # The tail is absent without reverberation.
    assert x[3200:8000].abs().max() == 0


def band_energy(x, lo, hi):
    spec = torch.fft.rfft(x).abs().pow(2)
    freqs = torch.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


@pytest.mark.parametrize("cutoff", [2000, 4000, 5500])
def test_bandwidth_limit_removes_the_top_band(cutoff):
    x = torch.randn(SR, generator=torch.Generator().manual_seed(0))
    y = D.bandwidth_limit(x, SR, cutoff)
    assert y.shape == x.shape
    above = band_energy(y, cutoff * 1.05, SR / 2) / band_energy(x, cutoff * 1.05, SR / 2)
    below = band_energy(y, 100, cutoff * 0.8) / band_energy(x, 100, cutoff * 0.8)
    assert above < 1e-4  # more than 40 dB down
    assert 0.99 < below < 1.01


def test_clip_levels():
    x = torch.sin(torch.linspace(0, 20, 4000)) * 0.8
    y = D.clip(x, 0.25)
    assert torch.isclose(y.abs().max(), torch.tensor(0.2))
    small = x.abs() < 0.2
    assert torch.equal(y[small], x[small])
    assert (y.abs() >= 0.2 - 1e-6).sum() == (x.abs() >= 0.2).sum()


def test_packet_loss_zeroes_whole_packets_at_the_rate():
    x = torch.ones(SR * 10)
    y, lost = D.packet_loss(x, SR, 0.2, packet_ms=20, generator=torch.Generator().manual_seed(0))
    packets = y.reshape(-1, 320)
    whole = (packets == 0).all(dim=1) | (packets == 1).all(dim=1)
    assert whole.all()
    assert torch.equal((packets == 0).all(dim=1), lost)
    assert abs(float(lost.float().mean()) - 0.2) < 0.04


def test_degrader_all_tasks_and_info():
    deg = D.Degrader(noise_signals=[torch.randn(4000)], rir_signals=[torch.ones(1)],
                     noise_prob=1, rir_prob=1, bandwidth_prob=1, clip_prob=1,
                     packet_loss_prob=1)
    y, info = deg(speechlike(5), torch.Generator().manual_seed(1))
    assert info["degradation"] == "noise+reverb+bandwidth+clip+packet_loss"
    assert info["cutoff"] in (2000, 4000, 5500)
    assert 0.05 <= info["clip_ratio"] <= 0.3 and 0.05 <= info["loss_rate"] <= 0.3
    assert y.abs().max() <= 0.99 + 1e-6 and torch.isfinite(y).all()


def test_degrader_from_yaml(tmp_path):
    from speechbrain_gense.audio import save_audio

    for i in range(2):
        save_audio(tmp_path / f"n{i}.wav", torch.randn(8000) * 0.1, SR)
    yaml = f"""
degrader: !new:speechbrain_gense.data.degrade.Degrader
    noise_files: {tmp_path}
    noise_prob: 1.0
    snr_low: 0.
    snr_high: 0.
    rir_prob: 0.0
"""
    deg = load_hyperpyyaml(yaml)["degrader"]
    assert len(deg.noise_files) == 2
    x = speechlike(6)
    y, info = deg(x, torch.Generator().manual_seed(0))
    assert info["snr"] == 0.0 and info["noise"] in ("n0", "n1")
    y = y / info.get("gain", 1.0)
    assert abs(snr_db(x, y - x) - 0.0) < 0.01


def test_noise_files_are_read_by_segment_like_in_memory(tmp_path):
    """Reading only the drawn segment from disk gives the in-memory result."""
    from speechbrain_gense.audio import load_audio, save_audio

    paths = []
    for i, n in enumerate([3000, 40000]):  # shorter and longer than the speech
        paths.append(str(tmp_path / f"n{i}.wav"))
        save_audio(paths[-1], torch.randn(n) * 0.1, SR)
    signals = [load_audio(p, SR)[0] for p in paths]
    from_files = D.Degrader(noise_files=paths, rir_prob=0.0, noise_prob=1.0)
    in_memory = D.Degrader(noise_signals=signals, rir_prob=0.0, noise_prob=1.0)
    x = speechlike(9)
    for seed in range(8):
        a, ia = from_files(x, torch.Generator().manual_seed(seed))
        b, _ = in_memory(x, torch.Generator().manual_seed(seed))
        assert torch.allclose(a, b, atol=1e-6)
    assert {ia["noise"]} <= {"n0", "n1"}


def test_restoration_preset_draws_only_restoration_effects():
    """The corpus's ``restoration`` preset: band limit, clipping, packet loss; no noise, no room."""
    from speechbrain_gense.data.corpus import DEGRADATION_PRESETS

    deg = D.Degrader(sample_rate=SR, ensure_one=True, **DEGRADATION_PRESETS["restoration"])
    kinds = set()
    x = speechlike(4)
    for seed in range(40):
        y, info = deg(x, torch.Generator().manual_seed(seed))
        parts = info["degradation"].split("+")
        assert parts and set(parts) <= {"bandwidth", "clip", "packet_loss"}
        assert info["snr"] is None and info["rir"] is None and y.shape == x.shape
        kinds.update(parts)
    assert kinds == {"bandwidth", "clip", "packet_loss"}
