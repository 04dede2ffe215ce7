"""Noise and room impulse responses synthesised for the embedded corpus.

Six noise families, each drawn from a ``numpy.random.Generator`` so that a
seed fixes every file: ``white``, ``pink`` (1/f), ``brown`` (1/f^2),
``babble`` (several TTS talkers at once, built by the corpus from voices never
used as targets), ``hum`` (mains hum with random harmonics and wobble), ``bursts``
(non-stationary: decaying noise bursts, clicks and knocks separated by gaps)
and ``tonal`` (music-like note sequences with harmonics and envelopes, plus
siren sweeps). Room impulse responses come from pyroomacoustics' image-source
shoebox model with RT60 drawn uniformly.
"""

import numpy as np

NOISE_FAMILIES = ("white", "pink", "brown", "babble", "hum", "bursts", "tonal")


def _normalize(x, rms=0.1):
    x = x - x.mean()
    return (x * (rms / (np.sqrt(np.mean(x**2)) + 1e-12))).astype(np.float32)


def colored_noise(rng, length, exponent):
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown).

    Example
    -------
    >>> x = colored_noise(np.random.default_rng(0), 16000, 1.0)
    >>> x.shape, x.dtype
    ((16000,), dtype('float32'))
    """
    spec = np.fft.rfft(rng.standard_normal(length))
    freqs = np.fft.rfftfreq(length)
    freqs[0] = freqs[1]
    spec = spec / freqs ** (exponent / 2.0)
    return _normalize(np.fft.irfft(spec, n=length))


def hum(rng, length, sample_rate):
    """Mains hum: a 50/60 Hz (or doubled) fundamental, random harmonics, slow wobble."""
    t = np.arange(length) / sample_rate
    f0 = rng.choice([50.0, 60.0, 100.0, 120.0])
    wobble = 1 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t)
    x = np.zeros(length)
    for h in range(1, int(rng.integers(4, 12))):
        amp = rng.uniform(0.2, 1.0) / h ** rng.uniform(0.5, 1.5)
        x += amp * np.sin(2 * np.pi * f0 * h * wobble * t + rng.uniform(0, 2 * np.pi))
    x += 0.02 * rng.standard_normal(length)
    return _normalize(x)


def bursts(rng, length, sample_rate):
    """Non-stationary events: decaying filtered-noise bursts, clicks and knocks."""
    x = 0.01 * rng.standard_normal(length)
    pos = int(rng.uniform(0, 0.3) * sample_rate)
    while pos < length:
        kind = rng.integers(3)
        dur = int(rng.uniform(0.02, 0.6) * sample_rate)
        seg = rng.standard_normal(dur)
        if kind == 0:  # low knock
            seg = np.convolve(seg, np.ones(16) / 16, mode="same")
        elif kind == 1:  # click train
            seg = seg * (rng.random(dur) < 0.01) * 5
        env = np.exp(-np.arange(dur) / (rng.uniform(0.01, 0.2) * sample_rate))
        end = min(length, pos + dur)
        x[pos:end] += rng.uniform(0.3, 3.0) * (seg * env)[: end - pos]
        pos = end + int(rng.uniform(0.05, 1.0) * sample_rate)
    return _normalize(x)


def tonal(rng, length, sample_rate):
    """Music-like sequence of notes and chords with harmonics, or a siren sweep."""
    t = np.arange(length) / sample_rate
    if rng.random() < 0.25:  # siren
        f = 700 + 400 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t)
        return _normalize(np.sin(2 * np.pi * np.cumsum(f) / sample_rate))
    x = np.zeros(length)
    scale = 220.0 * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16]) / 12)
    pos = 0
    while pos < length:
        dur = int(rng.uniform(0.15, 0.8) * sample_rate)
        end = min(length, pos + dur)
        n = end - pos
        tt = np.arange(n) / sample_rate
        env = np.minimum(1.0, tt / 0.02) * np.exp(-tt / rng.uniform(0.1, 0.6))
        for f in rng.choice(scale, size=int(rng.integers(1, 4)), replace=False):
            for h in range(1, 5):
                x[pos:end] += env * np.sin(2 * np.pi * f * h * tt) / h**1.5
        pos = end
    return _normalize(x)


def babble(rng, talkers, length):
    """Sums several talkers' signals (list of float arrays) at random offsets and gains."""
    x = np.zeros(length)
    for wav in talkers:
        wav = np.tile(wav, int(np.ceil(length / len(wav))) + 1)
        start = int(rng.integers(0, len(wav) - length + 1))
        seg = wav[start : start + length]
        x += rng.uniform(0.5, 1.0) * seg / (np.sqrt(np.mean(seg**2)) + 1e-12)
    return _normalize(x)


def synth_noise(family, rng, length, sample_rate, talkers=None):
    """One noise signal of ``family`` (see :data:`NOISE_FAMILIES`).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> [synth_noise(f, rng, 8000, 16000).shape for f in ("white", "hum", "tonal")]
    [(8000,), (8000,), (8000,)]
    """
    if family == "white":
        return colored_noise(rng, length, 0.0)
    if family == "pink":
        return colored_noise(rng, length, 1.0)
    if family == "brown":
        return colored_noise(rng, length, 2.0)
    if family == "hum":
        return hum(rng, length, sample_rate)
    if family == "bursts":
        return bursts(rng, length, sample_rate)
    if family == "tonal":
        return tonal(rng, length, sample_rate)
    if family == "babble":
        if not talkers:
            raise ValueError("babble needs talker signals")
        return babble(rng, talkers, length)
    raise ValueError(f"unknown noise family {family!r}; choose from {NOISE_FAMILIES}")


def room_impulse_response(rng, sample_rate=16000, rt60_range=(0.2, 0.9)):
    """A shoebox-room RIR from pyroomacoustics.

    Returns
    -------
    rir : numpy.ndarray
        Float32, peak-normalised.
    info : dict
        ``rt60`` (target, s), ``room`` (dimensions, m), ``distance`` (m).

    Example
    -------
    >>> rir, info = room_impulse_response(np.random.default_rng(0))
    >>> rir.ndim, 0.2 <= info["rt60"] <= 0.9
    (1, True)
    """
    import pyroomacoustics as pra

    rt60 = float(rng.uniform(*rt60_range))
    dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.5, 4)])
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption),
                       max_order=min(int(max_order), 60))
    src = rng.uniform(0.5, dims - 0.5)
    mic = rng.uniform(0.5, dims - 0.5)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float32)
    # pyroomacoustics' zero-phase high-pass leaves a slow ramp before the
    # direct path; start 2.5 ms (its fractional-delay half-width) before it.
    start = max(0, int(np.abs(rir).argmax()) - int(0.0025 * sample_rate))
    rir = rir[start:]
    rir = rir / (np.abs(rir).max() + 1e-12)
    info = {"rt60": round(rt60, 3), "room": [round(float(d), 2) for d in dims],
            "distance": round(float(np.linalg.norm(src - mic)), 2)}
    return rir, info
