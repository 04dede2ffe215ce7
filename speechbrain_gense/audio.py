"""Audio reading and writing with clear, one-line errors.

Every command of the project reads and writes audio through these two
functions, so that a missing, empty, corrupt, multi-channel or wrongly sampled
file always gives the same kind of message (an :class:`AudioError`), and no
command ever writes over an existing file unless asked to.
"""

import os
import tempfile

import numpy as np
import soundfile as sf
import torch
import torchaudio
from .utils import first_line


class AudioError(ValueError):
    """A problem with an audio file, with a message that fits on one line."""


def check_readable(path):
    """``path`` as a string if it is a readable, non-empty file; else a one-line AudioError.

    Example
    -------
    >>> check_readable("/no/such.wav")
    Traceback (most recent call last):
    ...
    speechbrain_gense.audio.AudioError: /no/such.wav: no such file
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"{path}: no such file")
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: not readable (permission denied)")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    return path


def load_audio(path, sample_rate=None, channels="mono", resample=False):
    """Reads an audio file into a float32 tensor.

    Arguments
    ---------
    path : str
        File to read (any format libsndfile reads: wav, flac, ogg ...).
    sample_rate : int, optional
        Expected sample rate. With ``resample=False`` a file at another rate
        raises :class:`AudioError`; with ``resample=True`` it is resampled.
    channels : str
        ``"mono"``: a multi-channel file raises :class:`AudioError`;
        ``"mix"``: channels are averaged; ``"keep"``: returns ``[C, S]``.
    resample : bool
        Whether to resample to ``sample_rate`` instead of failing.

    Returns
    -------
    wav : torch.Tensor
        ``[S]`` (``mono``/``mix``) or ``[C, S]`` (``keep``), float32 in [-1, 1].
    sample_rate : int
        The rate of the returned signal.

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> save_audio(path, torch.zeros(1600), 16000)
    >>> wav, sr = load_audio(path, sample_rate=16000)
    >>> wav.shape, sr
    (torch.Size([1600]), 16000)
    """
    path = check_readable(path)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types
        reason = first_line(e)
        raise AudioError(f"{path}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: contains no audio samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or Inf samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, S]
    num_channels = wav.shape[0]
    if channels == "mono":
        if num_channels != 1:
            raise AudioError(
                f"{path}: has {num_channels} channels, expected mono "
                "(downmix it first)"
            )
        wav = wav[0]
    elif channels == "mix":
        wav = wav.mean(dim=0)
    elif channels != "keep":
        raise ValueError(f"channels must be mono, mix or keep, not {channels!r}")
    if sample_rate is not None and sr != sample_rate:
        if not resample:
            raise AudioError(
                f"{path}: sample rate is {sr} Hz, expected {sample_rate} Hz"
            )
        wav = torchaudio.functional.resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, sr


def publish(tmp, path):
    """Moves a finished temporary file (from :func:`tempfile.mkstemp`) to ``path``.

    ``mkstemp`` creates files readable by their owner only; the file gets the
    permissions a plain ``open(path, "w")`` would give (``0666`` less the
    umask) before the atomic rename.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> fd, tmp = tempfile.mkstemp(dir=folder)
    >>> os.close(fd)
    >>> publish(tmp, os.path.join(folder, "out.txt"))
    >>> umask = os.umask(0); _ = os.umask(umask)
    >>> oct(os.stat(os.path.join(folder, "out.txt")).st_mode & 0o777) == oct(0o666 & ~umask)
    True
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def save_audio(path, wav, sample_rate, overwrite=False, subtype="PCM_16"):
    """Writes audio atomically, refusing to replace an existing file.

    The signal is written to a temporary file in the same folder and renamed,
    so an interrupted write never leaves a truncated file behind.

    Arguments
    ---------
    path : str
        Output file; its folder is created when missing.
    wav : torch.Tensor or numpy.ndarray
        ``[S]`` or ``[C, S]``.
    sample_rate : int
        Sample rate to record in the header.
    overwrite : bool
        Replace ``path`` when it exists (default: raise :class:`AudioError`).
    subtype : str
        libsndfile subtype (``PCM_16`` by default; ``PCM_24`` for more precision;
        ``FLOAT`` files carry a time-stamped PEAK chunk, so their bytes differ
        from run to run).

    Example
    -------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "b.wav")
    >>> save_audio(path, torch.zeros(2, 800), 8000)
    >>> save_audio(path, torch.zeros(800), 8000)
    Traceback (most recent call last):
    ...
    speechbrain_gense.audio.AudioError: ...b.wav: exists (use overwrite to replace it)
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise AudioError(f"{path}: exists (use overwrite to replace it)")
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().cpu().float().numpy()
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.T  # soundfile wants [S, C]
    elif wav.ndim != 1:
        raise AudioError(f"{path}: expected a [S] or [C, S] signal, got {wav.shape}")
    if subtype.startswith("PCM"):
        wav = np.clip(wav, -1.0, 1.0)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".wav", dir=folder)
    except OSError as e:
        raise AudioError(f"{path}: cannot write here ({e.strerror})") from None
    os.close(fd)
    try:
        sf.write(tmp, wav, int(sample_rate), subtype=subtype, format="WAV")
        publish(tmp, path)
    except Exception as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise AudioError(f"{path}: cannot write ({e})") from None
