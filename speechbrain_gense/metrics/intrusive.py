"""Intrusive metrics (need the clean reference): PESQ-WB, ESTOI, SI-SDR, MCD.

All take ``(estimate[S], reference[S])`` at 16 kHz, time-aligned; signals of
different lengths are trimmed to the shorter one. A silent or too short
signal gives NaN with a :class:`~.common.MetricWarning`.
"""

import math
import warnings
from functools import lru_cache

import numpy as np
import torch

from .common import SAMPLE_RATE, batchify, signals, warn


def pesq_wb(estimate, reference):
    """Wide-band PESQ (ITU-T P.862.2) with the ``pesq`` package.

    Arguments
    ---------
    estimate : array-like
        ``[S]`` degraded or enhanced signal, 16 kHz.
    reference : array-like
        ``[S]`` clean reference, 16 kHz.

    Returns
    -------
    float
        MOS-LQO, about 1.04 to 4.64; NaN (with a warning) when PESQ cannot
        score the pair (no utterance found, shorter than 0.25 s, silence).

    Example
    -------
    >>> x = torch.sin(torch.arange(16000) * 0.05) * torch.rand(16000)
    >>> round(pesq_wb(x, x), 2)
    4.64
    """
    from pesq import PesqError, pesq

    checked = signals("PESQ", estimate, reference, min_samples=SAMPLE_RATE // 4)
    if checked is None:
        return math.nan
    x, ref = checked
    try:
        return float(pesq(SAMPLE_RATE, ref, x, "wb"))
    except (PesqError, ValueError) as e:  # ValueError: NaN inside the C code
        reason = e.args[0].decode() if isinstance(e.args[0], bytes) else str(e)
        warn(f"PESQ: cannot score ({reason}); score is NaN")
        return math.nan


def estoi(estimate, reference):
    """Extended STOI (Jensen & Taal, 2016) with ``pystoi``.

    Arguments
    ---------
    estimate : array-like
        ``[S]`` signal, 16 kHz.
    reference : array-like
        ``[S]`` clean reference, 16 kHz.

    Returns
    -------
    float
        Intelligibility in about [0, 1] (1 for identical signals); invariant
        to the gain of the estimate. NaN (with a warning) when the signal has
        fewer than 30 speech frames (about 0.4 s) after pystoi's silence
        removal.

    Example
    -------
    >>> x = torch.randn(16000)
    >>> round(estoi(0.5 * x, x), 3)
    1.0
    """
    from pystoi import stoi

    checked = signals("ESTOI", estimate, reference)
    if checked is None:
        return math.nan
    x, ref = checked
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(stoi(ref, x, SAMPLE_RATE, extended=True))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        warn("ESTOI: fewer than 30 speech frames (about 0.4 s); score is NaN")
        return math.nan
    return score


def sisdr(estimate, reference, max_db=100.0):
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019).

    Both signals are made zero-mean; with ``a = <x, s> / ||s||^2`` the
    target is ``t = a s``, the error ``e = x - t`` and
    ``SI-SDR = 10 log10(||t||^2 / (||e||^2 + 10^(-max_db / 10) ||t||^2))``,
    clipped to ``[-max_db, max_db]``: identical signals score exactly
    ``max_db`` (not infinity), whatever their level.

    Arguments
    ---------
    estimate : array-like
        ``[S]`` signal.
    reference : array-like
        ``[S]`` reference.
    max_db : float
        Bound of the score.

    Returns
    -------
    float
        SI-SDR in dB (NaN with a warning for a silent signal).

    Example
    -------
    >>> s = torch.randn(16000)
    >>> n = torch.randn(16000)
    >>> n = n - (n @ s) / (s @ s) * s  # orthogonal to s
    >>> x = s + n * (s.norm() / n.norm()) * 10 ** (-5 / 20)  # 5 dB
    >>> round(sisdr(x, s), 1), round(sisdr(3 * x, s), 1), sisdr(s, s)
    (5.0, 5.0, 100.0)
    """
    checked = signals("SI-SDR", estimate, reference)
    if checked is None:
        return math.nan
    x, ref = (v - v.mean() for v in checked)
    target = (x @ ref) / (ref @ ref) * ref
    error = x - target
    floor, energy = 10 ** (-max_db / 10), target @ target
    ratio = energy / (error @ error + floor * energy) if energy > 0 else 0.0
    return float(10 * np.log10(max(ratio, floor)))


@lru_cache(maxsize=4)
def _mel_basis(n_fft, n_mels):
    import torchaudio

    return torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE,
        norm="slaney", mel_scale="slaney",
    ).double()  # [F, M]


def mel_cepstrum(wav, n_ceps=24, n_mels=80, win_length=400, hop_length=160, n_fft=512):
    """Mel-cepstral coefficients ``c_0 .. c_{n_ceps}`` and frame energies.

    Frames: Hann windows of ``win_length`` samples (25 ms), hop
    ``hop_length`` (10 ms), FFT size ``n_fft``, no padding. The power
    spectrum goes through ``n_mels`` Slaney mel filters (0 to 8 kHz); the
    mel amplitude ``A_m`` (square root of the mel power, floored at 1e-5)
    gives ``c_d = (1/M) sum_m ln(A_m) cos(pi d (m + 1/2) / M)``, i.e. the
    cosine expansion ``ln A_m = c_0 + 2 sum_d c_d cos(...)``.

    Arguments
    ---------
    wav : numpy.ndarray
        ``[S]`` signal at 16 kHz (at least ``win_length`` samples).
    n_ceps, n_mels, win_length, hop_length, n_fft : int
        Analysis settings (see above).

    Returns
    -------
    ceps : torch.Tensor
        ``[T, n_ceps + 1]`` (float64).
    energy : torch.Tensor
        ``[T]`` energy of each windowed frame.

    Example
    -------
    >>> ceps, energy = mel_cepstrum(np.random.randn(16000))
    >>> ceps.shape, energy.shape
    (torch.Size([98, 25]), torch.Size([98]))
    """
    wav = torch.as_tensor(wav, dtype=torch.float64)
    window = torch.hann_window(win_length, dtype=torch.float64)
    frames = wav.unfold(0, win_length, hop_length) * window  # [T, W]
    power = torch.fft.rfft(frames, n=n_fft).abs() ** 2  # [T, F]
    log_amp = 0.5 * torch.log(torch.clamp(power @ _mel_basis(n_fft, n_mels), min=1e-10))
    m = torch.arange(n_mels, dtype=torch.float64) + 0.5
    d = torch.arange(n_ceps + 1, dtype=torch.float64)
    cosines = torch.cos(math.pi * d[:, None] * m[None, :] / n_mels)  # [D, M]
    return log_amp @ cosines.T / n_mels, (frames**2).sum(dim=1)


def mcd(estimate, reference, n_ceps=24, silence_db=40.0):
    """Mel-cepstral distortion in dB between time-aligned signals (no DTW).

    ``MCD = mean_t (10 / ln 10) sqrt(2 sum_{d=1}^{n_ceps} (c_{t,d} - c'_{t,d})^2)``
    with the mel cepstra of :func:`mel_cepstrum` (80 mel bands, 25 ms
    frames, 10 ms hop, natural-log amplitude). ``c_0`` (frame energy) is
    excluded, so MCD ignores the gain. Frames where the **reference** is
    silent -- energy more than ``silence_db`` below its loudest frame -- are
    **excluded** from the mean. Meant for codec resynthesis of a clean
    signal (no alignment is done: the signals must be in sync).

    Arguments
    ---------
    estimate : array-like
        ``[S]`` signal (e.g. codec resynthesis).
    reference : array-like
        ``[S]`` reference.
    n_ceps : int
        Number of coefficients compared (``c_1 .. c_{n_ceps}``).
    silence_db : float
        Frames of the reference this far below its loudest are skipped.

    Returns
    -------
    float
        MCD in dB (0 for identical signals; NaN with a warning when a
        signal is silent or shorter than one 25 ms frame).

    Example
    -------
    >>> white = torch.randn(16000)
    >>> brown = white.cumsum(0) / 100  # same signal, other spectral tilt
    >>> mcd(white, white), mcd(0.1 * white, white) < 1e-6, mcd(brown, white) > 3
    (0.0, True, True)
    """
    checked = signals("MCD", estimate, reference, min_samples=400)
    if checked is None:
        return math.nan
    (c_est, _), (c_ref, energy) = (mel_cepstrum(v, n_ceps) for v in checked)
    keep = 10 * torch.log10(energy / energy.max()) > -silence_db
    diff = (c_est - c_ref)[keep, 1:]
    frame_mcd = 10 / math.log(10) * torch.sqrt(2 * (diff**2).sum(dim=1))
    return float(frame_mcd.mean())


pesq_batch = batchify(pesq_wb)
estoi_batch = batchify(estoi)
sisdr_batch = batchify(sisdr)
mcd_batch = batchify(mcd)
