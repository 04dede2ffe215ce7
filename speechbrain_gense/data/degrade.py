"""Degradations for training and test mixtures.

Five effects, each a plain function on ``[..., S]`` tensors, and one
:class:`Degrader` that draws them at random (seedable) and is configured
from YAML. The same object builds the fixed test mixtures of the corpus and
the on-the-fly training mixtures, so the two never drift apart.

Defaults follow the GenSE protocol (noise with p = 0.8 at SNR ~ U(-5, 20) dB,
room reverberation with p = 0.5); bandwidth limitation, clipping and packet
loss are the extra DAC-SE1 tasks and are off unless their probability is set.

SNR is defined on power over the whole utterance:
``10 log10(sum(speech**2) / sum(noise**2))``, where ``speech`` is the
(possibly reverberant) speech that the noise is added to.
"""

import math
import os

import soundfile as sf
import torch
import torchaudio

from ..audio import load_audio

EPS = 1e-10


def signal_power(wav):
    """Mean power over the last axis.

    Example
    -------
    >>> signal_power(torch.ones(3, 10) * 2)
    tensor([4., 4., 4.])
    """
    return wav.pow(2).mean(dim=-1)


def fit_length(noise, length, offset=0):
    """Crops or tiles ``noise`` (``[S]``) to ``length`` samples from ``offset``.

    Example
    -------
    >>> fit_length(torch.arange(4.), 6, offset=1)
    tensor([1., 2., 3., 0., 1., 2.])
    """
    if noise.shape[-1] == 0:
        raise ValueError("noise signal is empty")
    reps = math.ceil((offset + length) / noise.shape[-1])
    if reps > 1:
        noise = noise.repeat(reps)
    return noise[offset : offset + length]


def mix_at_snr(speech, noise, snr_db):
    """Adds ``noise`` to ``speech`` at exactly ``snr_db`` (power, whole signal).

    Arguments
    ---------
    speech : torch.Tensor
        ``[S]`` or ``[B, S]``.
    noise : torch.Tensor
        Same shape as ``speech``.
    snr_db : float or torch.Tensor
        Target SNR (scalar or ``[B]``).

    Returns
    -------
    noisy : torch.Tensor
        ``speech + scaled_noise``.
    scaled_noise : torch.Tensor
        The noise at the level that was added.

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> s, n = torch.randn(16000, generator=g), torch.randn(16000, generator=g)
    >>> noisy, scaled = mix_at_snr(s, n, 5.0)
    >>> round(float(10 * torch.log10(signal_power(s) / signal_power(scaled))), 3)
    5.0
    """
    snr_db = torch.as_tensor(snr_db, dtype=speech.dtype)
    p_speech = signal_power(speech)
    p_noise = signal_power(noise).clamp_min(EPS)
    gain = torch.sqrt(p_speech / (p_noise * 10 ** (snr_db / 10)))
    scaled = noise * gain.unsqueeze(-1)
    return speech + scaled, scaled


def apply_rir(speech, rir):
    """Convolves ``speech`` (``[S]``) with ``rir`` (``[R]``), aligned and level-kept.

    Linear (not circular) convolution: the output keeps the input's length,
    the direct path of the RIR (its peak) lands on the original time axis so
    the dry signal stays a time-aligned target, the tail past the end is
    dropped, and the mean absolute amplitude of the input is kept.
    (SpeechBrain's ``reverberate`` convolves circularly, which wraps the tail
    of the utterance around to its start, hence this function.)

    Example
    -------
    >>> rir = torch.zeros(100); rir[10] = 1.0
    >>> x = torch.randn(1000)
    >>> torch.allclose(apply_rir(x, rir), x, atol=1e-4)
    True
    """
    direct = int(rir.abs().argmax())
    wet = torchaudio.functional.fftconvolve(speech, rir)
    wet = wet[direct : direct + speech.shape[-1]]
    gain = speech.abs().mean() / wet.abs().mean().clamp_min(EPS)
    return wet * gain


def bandwidth_limit(wav, sample_rate, cutoff_hz):
    """Removes content above ``cutoff_hz`` by resampling to ``2 * cutoff_hz`` and back.

    Example
    -------
    >>> x = torch.randn(16000)
    >>> bandwidth_limit(x, 16000, 4000).shape
    torch.Size([16000])
    """
    low_rate = int(2 * cutoff_hz)
    if low_rate >= sample_rate:
        return wav.clone()
    # A sharp filter (about 50 dB down 5 % above the cutoff), like a codec's.
    sharp = dict(lowpass_filter_width=16, rolloff=0.95)
    low = torchaudio.functional.resample(wav, sample_rate, low_rate, **sharp)
    out = torchaudio.functional.resample(low, low_rate, sample_rate, **sharp)
    return fit_length_end(out, wav.shape[-1])


def fit_length_end(wav, length):
    """Pads with zeros or crops the last axis to ``length``."""
    if wav.shape[-1] >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def clip(wav, ratio):
    """Hard-clips at ``ratio`` times the peak magnitude (``0 < ratio <= 1``).

    Example
    -------
    >>> clip(torch.tensor([-1.0, 0.2, 0.8]), 0.5)
    tensor([-0.5000,  0.2000,  0.5000])
    """
    peak = wav.abs().amax(dim=-1, keepdim=True)
    level = peak * ratio
    return torch.maximum(torch.minimum(wav, level), -level)


def packet_loss(wav, sample_rate, loss_rate, packet_ms=20.0, generator=None):
    """Zeroes whole packets of ``packet_ms`` with probability ``loss_rate``.

    Returns
    -------
    out : torch.Tensor
        The signal with lost packets set to zero.
    lost : torch.Tensor
        Bool ``[P]``, which packets were lost.

    Example
    -------
    >>> out, lost = packet_loss(torch.ones(1600), 16000, 1.0, packet_ms=20)
    >>> float(out.abs().sum()), lost.tolist()
    (0.0, [True, True, True, True, True])
    """
    packet = max(1, int(round(sample_rate * packet_ms / 1000)))
    num = math.ceil(wav.shape[-1] / packet)
    lost = torch.rand(num, generator=generator) < loss_rate
    mask = (~lost).repeat_interleave(packet)[: wav.shape[-1]].to(wav.dtype)
    return wav * mask, lost


def _uniform(low, high, generator):
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _file_list(files, data_root=None):
    """Accepts a list of paths, a JSON manifest, or a folder of wav files."""
    if files is None:
        return []
    if isinstance(files, str):
        if os.path.isdir(files):
            return sorted(
                os.path.join(r, f)
                for r, _, fs in os.walk(files)
                for f in fs
                if f.lower().endswith((".wav", ".flac"))
            )
        if files.endswith(".json"):
            from .manifest import read_manifest

            entries = read_manifest(files, data_root)
            return [e.get("wav") or e.get("noise_wav") or e.get("rir_wav")
                    for e in entries.values()]
        return [files]
    return list(files)


class Degrader:
    """Draws and applies random degradations to clean speech.

    Arguments
    ---------
    noise_files : list, str or None
        Noise signals: a list of paths, a folder, or a JSON manifest with a
        ``wav`` field per entry. Only the segment drawn is read from disk, so
        large noise sets (DNS) need no memory.
    rir_files : list, str or None
        Room impulse responses, in the same forms.
    sample_rate : int
        Rate of the speech, noises and RIRs.
    noise_prob, snr_low, snr_high : float
        Probability of adding noise and the SNR range (dB, uniform).
    rir_prob : float
        Probability of reverberation.
    bandwidth_prob : float
        Probability of a bandwidth limit, cutoff drawn from ``bandwidth_cutoffs``.
    clip_prob, clip_low, clip_high : float
        Probability of clipping and the range of the clip level (ratio of peak).
    packet_loss_prob, loss_low, loss_high, packet_ms : float
        Probability of packet loss, range of the loss rate, packet length.
    ensure_one : bool
        Redraw until at least one degradation applies (for test mixtures).
    noise_signals, rir_signals : list of torch.Tensor, optional
        In-memory signals instead of files.
    data_root : str, optional
        Replaces ``{data_root}`` in JSON manifests (default: their folder).
    rir_cache : int
        Impulse responses kept in memory.

    Example
    -------
    >>> noise = [torch.randn(8000)]
    >>> d = Degrader(noise_signals=noise, noise_prob=1.0, snr_low=5, snr_high=5,
    ...              rir_prob=0.0)
    >>> noisy, info = d(torch.randn(16000), torch.Generator().manual_seed(0))
    >>> noisy.shape, info["snr"], info["degradation"]
    (torch.Size([16000]), 5.0, 'noise')
    """

    def __init__(
        self,
        noise_files=None,
        rir_files=None,
        sample_rate=16000,
        noise_prob=0.8,
        snr_low=-5.0,
        snr_high=20.0,
        rir_prob=0.5,
        bandwidth_prob=0.0,
        bandwidth_cutoffs=(2000, 4000, 5500),
        clip_prob=0.0,
        clip_low=0.05,
        clip_high=0.3,
        packet_loss_prob=0.0,
        loss_low=0.05,
        loss_high=0.3,
        packet_ms=20.0,
        ensure_one=False,
        noise_signals=None,
        rir_signals=None,
        data_root=None,
        rir_cache=256,
    ):
        self.sample_rate = sample_rate
        self.noise_files = _file_list(noise_files, data_root)
        self.rir_files = _file_list(rir_files, data_root)
        self._noises = list(noise_signals) if noise_signals is not None else None
        self._rirs = list(rir_signals) if rir_signals is not None else None
        self._noise_frames = {}
        self._rir_cache = {}
        self.rir_cache = rir_cache
        if noise_prob > 0 and not self.num_noises:
            raise ValueError("noise_prob > 0 but no noise files were given")
        if rir_prob > 0 and not self.num_rirs:
            raise ValueError("rir_prob > 0 but no RIR files were given")
        self.noise_prob = noise_prob
        self.snr_low, self.snr_high = snr_low, snr_high
        self.rir_prob = rir_prob
        self.bandwidth_prob = bandwidth_prob
        self.bandwidth_cutoffs = list(bandwidth_cutoffs)
        self.clip_prob, self.clip_low, self.clip_high = clip_prob, clip_low, clip_high
        self.packet_loss_prob = packet_loss_prob
        self.loss_low, self.loss_high = loss_low, loss_high
        self.packet_ms = packet_ms
        self.ensure_one = ensure_one

    @property
    def num_noises(self):
        return len(self._noises) if self._noises is not None else len(self.noise_files)

    @property
    def num_rirs(self):
        return len(self._rirs) if self._rirs is not None else len(self.rir_files)

    def _load(self, path):
        return load_audio(path, self.sample_rate, channels="mix", resample=True)[0]

    def noise_segment(self, index, length, offset_fraction):
        """``length`` samples of noise ``index`` from ``offset_fraction`` of it, tiled.

        Files are not kept in memory: only the segment needed is read (the
        whole file when it is shorter than ``length`` or at another rate).
        """
        if self._noises is not None:
            noise = self._noises[index]
            return fit_length(noise, length, int(offset_fraction * noise.shape[-1]))
        path = self.noise_files[index]
        if path not in self._noise_frames:
            info = sf.info(path)
            self._noise_frames[path] = (info.frames, info.samplerate)
        frames, rate = self._noise_frames[path]
        offset = int(offset_fraction * frames)
        if rate == self.sample_rate and offset + length <= frames:
            data, _ = sf.read(path, start=offset, frames=length, dtype="float32",
                              always_2d=True)
            return torch.from_numpy(data.mean(axis=1))
        noise = self._load(path)
        return fit_length(noise, length, int(offset_fraction * noise.shape[-1]))

    def rir(self, index):
        """Impulse response ``index`` (files cached, at most ``rir_cache`` of them)."""
        if self._rirs is not None:
            return self._rirs[index]
        if index not in self._rir_cache:
            if len(self._rir_cache) >= self.rir_cache:
                self._rir_cache.pop(next(iter(self._rir_cache)))
            self._rir_cache[index] = self._load(self.rir_files[index])
        return self._rir_cache[index]

    def _name(self, files, index):
        if index < len(files):
            return os.path.splitext(os.path.basename(files[index]))[0]
        return f"signal{index}"

    def draw(self, generator=None):
        """Draws which effects apply; returns a plan (dict) for :meth:`apply`."""
        def coin(p):
            return p > 0 and float(torch.rand(1, generator=generator)) < p

        for _ in range(100):
            plan = {
                "noise": coin(self.noise_prob),
                "rir": coin(self.rir_prob),
                "bandwidth": coin(self.bandwidth_prob),
                "clip": coin(self.clip_prob),
                "packet_loss": coin(self.packet_loss_prob),
            }
            if not self.ensure_one or any(plan.values()):
                break
        if plan["noise"]:
            plan["noise_index"] = int(torch.randint(self.num_noises, (1,), generator=generator))
            plan["snr"] = _uniform(self.snr_low, self.snr_high, generator)
            plan["noise_offset"] = float(torch.rand(1, generator=generator))
        if plan["rir"]:
            plan["rir_index"] = int(torch.randint(self.num_rirs, (1,), generator=generator))
        if plan["bandwidth"]:
            i = int(torch.randint(len(self.bandwidth_cutoffs), (1,), generator=generator))
            plan["cutoff"] = self.bandwidth_cutoffs[i]
        if plan["clip"]:
            plan["clip_ratio"] = _uniform(self.clip_low, self.clip_high, generator)
        if plan["packet_loss"]:
            plan["loss_rate"] = _uniform(self.loss_low, self.loss_high, generator)
        return plan

    def apply(self, clean, plan, generator=None):
        """Applies a plan from :meth:`draw` to ``clean`` (``[S]``)."""
        wav = clean
        info = {"snr": None, "noise": None, "rir": None, "cutoff": None,
                "clip_ratio": None, "loss_rate": None}
        kinds = []
        if plan["rir"]:
            wav = apply_rir(wav, self.rir(plan["rir_index"]))
            info["rir"] = self._name(self.rir_files, plan["rir_index"])
            kinds.append("reverb")
        if plan["noise"]:
            noise = self.noise_segment(plan["noise_index"], wav.shape[-1],
                                       plan["noise_offset"])
            wav, _ = mix_at_snr(wav, noise, plan["snr"])
            info["snr"] = round(plan["snr"], 2)
            info["noise"] = self._name(self.noise_files, plan["noise_index"])
            kinds.insert(0, "noise")
        if plan["bandwidth"]:
            wav = bandwidth_limit(wav, self.sample_rate, plan["cutoff"])
            info["cutoff"] = plan["cutoff"]
            kinds.append("bandwidth")
        if plan["clip"]:
            wav = clip(wav, plan["clip_ratio"])
            info["clip_ratio"] = round(plan["clip_ratio"], 3)
            kinds.append("clip")
        if plan["packet_loss"]:
            wav, _ = packet_loss(wav, self.sample_rate, plan["loss_rate"],
                                 self.packet_ms, generator)
            info["loss_rate"] = round(plan["loss_rate"], 3)
            kinds.append("packet_loss")
        info["degradation"] = "+".join(kinds) if kinds else "none"
        # Keep the result in range without changing the SNR; the gain is
        # reported so that a caller can apply it to the clean target too.
        peak = float(wav.abs().max())
        if peak > 0.99:
            info["gain"] = 0.99 / peak
            wav = wav * info["gain"]
        return wav, info

    def __call__(self, clean, generator=None):
        """Degrades ``clean`` (``[S]``); returns ``(degraded, info)``."""
        return self.apply(clean, self.draw(generator), generator)

    def __repr__(self):
        return (f"Degrader(noises={self.num_noises}, rirs={self.num_rirs}, "
                f"noise_prob={self.noise_prob}, snr=[{self.snr_low}, {self.snr_high}], "
                f"rir_prob={self.rir_prob}, bandwidth_prob={self.bandwidth_prob}, "
                f"clip_prob={self.clip_prob}, packet_loss_prob={self.packet_loss_prob})")
