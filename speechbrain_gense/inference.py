"""Pretrained interface of the generative enhancers: :class:`EnhanceGenerative`.

A model folder (e.g. one written by :meth:`~speechbrain_gense.models.mage.MAGE.save`)
becomes a SpeechBrain pretrained model once it holds an ``inference.yaml``
(:func:`write_inference_yaml` writes one)::

    enhancer = EnhanceGenerative.from_hparams(source="pretrained/mage",
                                              run_opts={"device": "cpu"})
    enhanced = enhancer.enhance_file("noisy.wav", "enhanced.wav", seed=0)  # [C, S]
    enhanced = enhancer.enhance_batch(noisy, lengths)  # [B, S] at enhancer.sample_rate

Nothing is fetched from a network: ``source`` is a local folder.

``inference.yaml``
------------------
A HyperPyYAML file with these keys (``modules`` and ``pretrainer`` are what
SpeechBrain's ``from_hparams`` expects)::

    model_folder: !PLACEHOLDER       # set by from_hparams: the folder of this file
    method: mage                     # registry name of the method (models.base)
    model: !apply:speechbrain_gense.models.base.load_enhancer
        folder: !ref <model_folder>  # built from the folder's own files
        method: !ref <method>
    modules:
        model: !ref <model>
    chunk_seconds: 10.0              # long input: chunks of this length ...
    overlap_seconds: 1.0             # ... with this much context on each side ...
    crossfade_seconds: 0.05          # ... joined by an equal-power crossfade
    carry_context: true              # continue from the previous chunk's tokens (supports_prefix)
    silence_threshold: 0.0001        # chunks no louder than this pass through
    decode_opts: {}                  # e.g. {steps: 8}: overrides the model's decoding
    pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer

The model module is a :class:`~speechbrain_gense.models.base.GenerativeEnhancer`
of the registered ``method`` (:func:`~speechbrain_gense.models.base.get_method`);
this interface knows nothing else of it: the sample rate, hop and codebooks
of its ``output_tokenizer``, ``max_frames()``, ``supports_prefix``, its
declared decoding options (an unknown one in ``decode_opts`` or in a call
raises ``ValueError``) and ``enhance(wav, lens, generator, prefix, **opts)``.
Another method plugs in with one module and one registry entry.

How audio goes through
----------------------
- Any sample rate in, the same rate out: audio is resampled to the
  tokenizer's rate at the boundary and back; the output has exactly the
  input's length and channels (channels are enhanced as a batch).
- Long audio is cut at token-frame boundaries into chunks of
  ``chunk_seconds`` (shortened when the model's maximum sequence length
  requires it) with ``overlap_seconds`` of context on each side; each chunk
  is enhanced on its own and consecutive chunks are joined by an equal-power
  crossfade of ``crossfade_seconds`` centred on their border, normalised by
  the correlation of the two sides (:func:`crossfade`: identical sides pass
  through unchanged, no +3 dB bump). When the
  model ``supports_prefix`` (and ``carry_context`` is on), the tokens the
  previous chunk generated for the left overlap are given as its ``prefix``,
  so the next chunk continues them. Files are read and written in blocks of one chunk: memory does not
  grow with the duration.
- Chunks whose peak is at most ``silence_threshold`` are passed through
  unchanged (a generative model would otherwise make sound out of silence);
  their confidence is 1.
- NaN or Inf samples are an error (:class:`~speechbrain_gense.audio.AudioError`
  for files, ``ValueError`` for tensors), not silently replaced: such a file
  is corrupt, and a guess would hide it.
- Outputs are written atomically (temporary file, then rename), never over
  the input, and never over an existing file unless ``overwrite=True``.
- The result is seeded: the same ``seed`` (and the same chunking and batch
  size) gives the same audio.
"""

import logging
import math
import os

import numpy as np
import soundfile as sf
import torch
import torchaudio
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.fetching import FetchConfig, LocalStrategy
from tqdm import tqdm

from speechbrain_gense.audio import AudioError, check_readable
from speechbrain_gense.data.degrade import fit_length_end
from speechbrain_gense.guard import check_thresholds, make_guard
from speechbrain_gense.selection import make_selector
from speechbrain_gense.models.base import (
    GenerativeEnhancer,
    available_methods,
    get_method,
    method_of_folder,
)
from speechbrain_gense.models.io import atomic_output, atomic_write_text
from speechbrain_gense.utils import first_line

logger = logging.getLogger(__name__)

#: Name of the hyperparameter file of a model folder.
INFERENCE_YAML = "inference.yaml"

#: Defaults of the interface options (keys of ``inference.yaml``).
DEFAULT_OPTIONS = {
    "chunk_seconds": 10.0,
    "overlap_seconds": 1.0,
    "crossfade_seconds": 0.05,
    "carry_context": True,
    "silence_threshold": 1e-4,
    "candidates": 1,
}

# Extra input read around a chunk so that resampling has real signal at the
# chunk's edges (the sinc kernel is a few milliseconds long).
_RESAMPLE_MARGIN_SECONDS = 0.02

_YAML_TEMPLATE = """\
# ############################################################################
# Inference hyperparameters of a speechbrain_gense model folder, read by
#   speechbrain_gense.inference.EnhanceGenerative.from_hparams(source=<this folder>)
# Written by speechbrain_gense.inference.write_inference_yaml.
# ############################################################################

# The folder holding this file (set by EnhanceGenerative.from_hparams, so the
# folder can be moved or copied as a whole).
model_folder: !PLACEHOLDER

# Method of the folder: its name in speechbrain_gense.models.base's registry.
method: {method}

# The model, built from the folder's own files (checkpoints + {info_file}).
model: !apply:speechbrain_gense.models.base.load_enhancer
    folder: !ref <model_folder>
    method: !ref <method>

modules:
    model: !ref <model>

# Long inputs: chunks of chunk_seconds with overlap_seconds of context on each
# side, joined by an equal-power crossfade of crossfade_seconds.
chunk_seconds: {chunk_seconds}
overlap_seconds: {overlap_seconds}
crossfade_seconds: {crossfade_seconds}
# Give the previous chunk's tokens in the overlap as the next chunk's prefix
# (when the method supports_prefix).
carry_context: {carry_context}
# Chunks whose peak is at most this level are passed through unchanged.
silence_threshold: {silence_threshold}
# Best of N (speechbrain_gense.selection): decode this many outputs per chunk and
# keep the one whose transcript the others and the input agree with most
# (N times the decoding plus N + 1 transcriptions); 1: off.
candidates: {candidates}
# Decoding options overriding the model's own (e.g. steps: 8); empty: the model's.
decode_opts: {decode_opts}
# Content and voice guard thresholds for this model (speechbrain_gense.guard.Guard
# arguments, chosen by `python -m speechbrain_gense.guard calibrate` on a validation
# split); empty: the Guard's defaults. Used when a guard is asked for by name.
guard_thresholds: {guard_thresholds}

# Nothing to fetch: the model loads its files from model_folder itself.
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
"""

def write_inference_yaml(model_folder, method=None, overwrite=False, decode_opts=None,
                         guard_thresholds=None, **options):
    """Writes the ``inference.yaml`` that makes a model folder loadable.

    After it, ``EnhanceGenerative.from_hparams(source=model_folder)`` works.

    Arguments
    ---------
    model_folder : str
        A folder written by the method's ``save`` (MAGE: ``mage.json`` and
        checkpoints).
    method : str, optional
        Registry name of the method (default: found from the folder's info
        file, e.g. ``mage.json``).
    overwrite : bool
        Replace an existing ``inference.yaml``.
    decode_opts : dict, optional
        Decoding options overriding the model's own (e.g. ``{"steps": 8}``).
    guard_thresholds : dict, optional
        The model's content and voice guard thresholds (keys of
        :data:`~speechbrain_gense.guard.THRESHOLD_KEYS`), e.g. the output of
        ``python -m speechbrain_gense.guard calibrate``.
    **options
        Interface options (keys of :data:`DEFAULT_OPTIONS`).

    Returns
    -------
    str
        Path of the file written.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "mage.json"), "w").close()
    >>> path = write_inference_yaml(folder, chunk_seconds=5.0)
    >>> [line for line in open(path) if line.startswith(("method", "chunk"))]
    ['method: mage\\n', 'chunk_seconds: 5.0\\n']
    """
    import yaml

    model_folder = os.fspath(model_folder)
    if method is None:
        method = method_of_folder(model_folder)
        if method is None:
            raise FileNotFoundError(f"{model_folder}: not a model folder of any registered "
                                    f"method ({', '.join(available_methods())})")
    info_file = get_method(method).info_name()
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} "
                         f"(expected: {', '.join(DEFAULT_OPTIONS)})")
    if not os.path.isfile(os.path.join(model_folder, info_file)):
        raise FileNotFoundError(f"{model_folder}: not a {method} model folder ({info_file} missing)")
    path = os.path.join(model_folder, INFERENCE_YAML)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: exists (use overwrite=True to replace it)")
    values = {**DEFAULT_OPTIONS, **options}
    guard_thresholds = check_thresholds(guard_thresholds)

    def flow(value):
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")

    text = _YAML_TEMPLATE.format(
        method=method, info_file=info_file, decode_opts=flow(dict(decode_opts or {})),
        guard_thresholds=flow(guard_thresholds),
        **{k: flow(v) for k, v in values.items()})
    atomic_write_text(path, text)
    return path


def equal_power_fades(length, dtype=torch.float32):
    """Fade-out and fade-in gains of an equal-power crossfade.

    ``fade_out[n] = cos(pi/2 * (n + 0.5) / length)`` and
    ``fade_in[n] = sin(...)``: their squares sum to 1, so two uncorrelated
    signals keep their power through the join.

    Example
    -------
    >>> fade_out, fade_in = equal_power_fades(4)
    >>> torch.allclose(fade_out ** 2 + fade_in ** 2, torch.ones(4))
    True
    >>> bool(fade_out[0] > 0.9 and fade_in[0] < 0.2)
    True
    """
    phase = (torch.arange(length, dtype=torch.float64) + 0.5) / max(1, length) * (math.pi / 2)
    return torch.cos(phase).to(dtype), torch.sin(phase).to(dtype)


def crossfade(tail, head, fade_out, fade_in):
    """Joins ``tail`` (end of one chunk) and ``head`` (start of the next), ``[R, X]`` each.

    The equal-power fades (:func:`equal_power_fades`) keep the power of
    uncorrelated signals but add up to +3 dB where the two sides are the
    same signal (two chunks that both fell back to the input, silent
    pass-through rows). So each row's gains are divided by
    ``sqrt(fade_out**2 + fade_in**2 + 2 rho fade_out fade_in)``, ``rho`` the
    row's normalised correlation of the two sides (clipped to [0, 1]): power
    is kept for uncorrelated sides (``rho`` 0: the plain equal-power fade)
    and identical sides (``rho`` 1: the gains sum to 1). A row whose two
    sides are equal is passed through unchanged, bit for bit.

    Example
    -------
    >>> fade_out, fade_in = equal_power_fades(4)
    >>> x = torch.tensor([[0.5, -0.25, 1.0, 0.75]])
    >>> torch.equal(crossfade(x, x.clone(), fade_out, fade_in), x)
    True
    >>> (x * fade_out + x * fade_in).max().item() > 1.0  # the plain fade's bump
    True
    >>> crossfade(x, -x, fade_out, fade_in).allclose(x * fade_out - x * fade_in)
    True
    """
    num = (tail * head).sum(-1)
    den = (tail.pow(2).sum(-1) * head.pow(2).sum(-1)).sqrt()
    rho = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)).clamp(0, 1)
    norm = (fade_out ** 2 + fade_in ** 2 + 2 * rho[:, None] * fade_out * fade_in).sqrt()
    out = (tail * fade_out + head * fade_in) / norm
    same = (tail == head).all(-1)
    return torch.where(same[:, None], head, out)


class AudioFileReader:
    """Reads an audio file in blocks, with one-line :class:`AudioError` messages.

    The file is checked when opened (missing, a folder, unreadable, empty,
    not audio, no samples) and, for floating-point files, scanned for NaN or
    Inf samples. A WAV file cut short is read up to where its data ends.

    Arguments
    ---------
    path : str
        The file.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> sf.write(path, np.zeros((800, 2), dtype="float32"), 8000)
    >>> with AudioFileReader(path) as reader:
    ...     reader.frames, reader.sample_rate, reader.channels, reader.read(100, 300).shape
    (800, 8000, 2, torch.Size([2, 200]))
    """

    BLOCK = 1 << 18

    def __init__(self, path):
        path = check_readable(path)
        self.path = path
        try:
            self.file = sf.SoundFile(path)
        except Exception as e:  # noqa: BLE001 -- soundfile raises several types
            raise AudioError(f"{path}: not a readable audio file ({first_line(e)})") from None
        self.frames, self.sample_rate = int(self.file.frames), int(self.file.samplerate)
        self.channels, self.subtype = int(self.file.channels), self.file.subtype
        self.format = self.file.format
        if self.frames <= 0:
            self.close()
            raise AudioError(f"{path}: contains no audio samples")
        if self.subtype in ("FLOAT", "DOUBLE"):
            for start in range(0, self.frames, self.BLOCK):
                self.read(start, min(self.frames, start + self.BLOCK))

    def read(self, start, stop):
        """Samples ``[start, stop)`` as a float32 tensor ``[C, stop - start]``."""
        try:
            self.file.seek(start)
            data = self.file.read(stop - start, dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 -- any libsndfile failure: one line
            raise AudioError(f"{self.path}: cannot read samples {start}-{stop} "
                             f"({first_line(e)})") from None
        if data.shape[0] < stop - start:  # a file shorter than its header says
            data = np.pad(data, ((0, stop - start - data.shape[0]), (0, 0)))
        if not np.isfinite(data).all():
            raise AudioError(f"{self.path}: contains NaN or Inf samples")
        return torch.from_numpy(np.ascontiguousarray(data.T))

    def close(self):
        """Closes the file."""
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AtomicAudioWriter:
    """Writes an audio file block by block; it appears only once complete.

    Blocks go to a temporary file next to ``path``, renamed over ``path``
    by :meth:`commit`; :meth:`abort` (or leaving a ``with`` block by an
    exception) removes it. An existing ``path`` is refused unless
    ``overwrite``.

    Arguments
    ---------
    path : str
        Output file; the format comes from its extension (``.wav``,
        ``.flac``, ... as libsndfile knows them).
    sample_rate : int
        Sample rate.
    channels : int
        Number of channels.
    subtype : str, optional
        libsndfile subtype (default: the format's default); integer subtypes
        are clipped to [-1, 1].
    overwrite : bool
        Replace an existing file.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "out.flac")
    >>> with AtomicAudioWriter(path, 16000, 1) as writer:
    ...     writer.write(torch.zeros(1, 800))
    ...     writer.write(torch.zeros(1, 800))
    >>> sf.info(path).frames, sf.info(path).format
    (1600, 'FLAC')
    """

    def __init__(self, path, sample_rate, channels, subtype=None, overwrite=False):
        path = os.fspath(path)
        self.path = path
        if os.path.exists(path) and not overwrite:
            raise AudioError(f"{path}: exists (use overwrite to replace it)")
        ext = os.path.splitext(path)[1].lstrip(".").upper()
        fmt = {"OGA": "OGG", "AIF": "AIFF"}.get(ext, ext)
        if fmt not in sf.available_formats():
            raise AudioError(f"{path}: unknown output format {ext!r} (use .wav or .flac)")
        if subtype is None or not sf.check_format(fmt, subtype):
            subtype = sf.default_subtype(fmt)
        self.clip = subtype not in ("FLOAT", "DOUBLE", "VORBIS", "OPUS")
        folder = os.path.dirname(os.path.abspath(path))
        self._output = atomic_output(path)  # the one atomic writer: temporary file, rename
        self._open = False
        try:
            os.makedirs(folder, exist_ok=True)
            self.tmp = self._output.__enter__()
            self._open = True
        except OSError as e:
            raise AudioError(f"{path}: cannot write here ({e.strerror or first_line(e)})") from None
        try:
            self.file = sf.SoundFile(self.tmp, "w", int(sample_rate), int(channels),
                                     subtype=subtype, format=fmt)
        except Exception as e:  # noqa: BLE001 -- any libsndfile failure: one line
            self._drop()
            raise AudioError(f"{path}: cannot write ({first_line(e)})") from None
        self.frames = 0

    def write(self, block):
        """Appends ``block`` ``[C, n]`` (tensor or array)."""
        if isinstance(block, torch.Tensor):
            block = block.detach().cpu().float().numpy()
        block = np.asarray(block, dtype=np.float32).T
        if self.clip:
            block = np.clip(block, -1.0, 1.0)
        try:
            self.file.write(block)
        except Exception as e:  # noqa: BLE001 -- any libsndfile failure: one line
            raise AudioError(f"{self.path}: cannot write ({first_line(e)})") from None
        self.frames += block.shape[0]

    def commit(self):
        """Closes the file and moves it to its final name."""
        try:
            self.file.close()
            self._open = False
            self._output.__exit__(None, None, None)  # renames the temporary file
        except Exception as e:  # noqa: BLE001 -- any libsndfile failure: one line
            self.abort()
            raise AudioError(f"{self.path}: cannot write ({first_line(e)})") from None

    def _drop(self):
        if self._open:
            self._open = False
            self._output.__exit__(AudioError, AudioError("aborted"), None)  # removes it
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)

    def abort(self):
        """Drops what was written."""
        if not self.file.closed:
            self.file.close()
        self._drop()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _same_file(a, b):
    """Whether two paths name the same file (links and hard links included)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class EnhanceGenerative(Pretrained):
    """A ready-to-use generative speech enhancer, of any registered method.

    Built by :meth:`from_hparams` from a local model folder holding an
    ``inference.yaml`` (see the module documentation and
    :func:`write_inference_yaml`).

    Arguments
    ---------
    See ``Pretrained``. ``hparams`` must hold ``method`` (a registered
    method, :func:`~speechbrain_gense.models.base.get_method`) and
    ``modules.model`` (a :class:`~speechbrain_gense.models.base.GenerativeEnhancer`
    of that method); the other options (:data:`DEFAULT_OPTIONS`,
    ``decode_opts``) are optional.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.models.debug import tiny_mage
    >>> folder = tiny_mage(decode_opts={"steps": 2}).save(tempfile.mkdtemp())
    >>> _ = write_inference_yaml(folder)
    >>> enhancer = EnhanceGenerative.from_hparams(source=folder, run_opts={"device": "cpu"})
    >>> enhancer.sample_rate, enhancer.enhance_batch(torch.randn(2, 3000)).shape
    (16000, torch.Size([2, 3000]))
    >>> enhancer.enhance_batch(torch.randn(2, 3000), stpes=4)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: mage: unknown decoding option 'stpes' (valid: corrector, corrector_steps, ...)
    """

    HPARAMS_NEEDED = ["method"]  # noqa: RUF012 -- SpeechBrain's Pretrained convention
    MODULES_NEEDED = ["model"]  # noqa: RUF012

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        method = self.hparams.method
        cls = get_method(method)  # an unknown method: one-line ValueError
        for name in self.MODULES_NEEDED:
            if name not in self.mods:
                raise ValueError(f"inference.yaml: modules has no {name!r}")
        if not isinstance(self.model, cls):
            raise ValueError(f"inference.yaml: method {method!r} needs a {cls.__name__} model, "
                             f"got {type(self.model).__name__}")
        for key, default in DEFAULT_OPTIONS.items():
            setattr(self, key, getattr(self.hparams, key, default))
        self.decode_opts = dict(getattr(self.hparams, "decode_opts", None) or {})
        #: Thresholds of a guard asked for by name (``inference.yaml``'s ``guard_thresholds``).
        self.guard_thresholds = check_thresholds(getattr(self.hparams, "guard_thresholds",
                                                               None))
        self.model.decode_options(**self.decode_opts)  # unknown names: ValueError now
        try:
            make_selector(self.candidates)  # a bad candidates value: ValueError now
        except ValueError as err:
            raise ValueError(f"inference.yaml: {err}") from None
        if self.chunk_seconds <= 0 or self.overlap_seconds < 0 or self.crossfade_seconds < 0:
            raise ValueError("chunk_seconds must be > 0, overlap_seconds and "
                             "crossfade_seconds >= 0")
        self._shrink_logged = False
        #: Network function evaluations (token-model calls) of the last
        #: ``enhance_batch`` / ``enhance_file`` call, all chunks together.
        self.nfe = 0
        #: Per-chunk rows of the content and voice guard of the last call
        #: (``None`` when it ran without a guard); see :mod:`speechbrain_gense.guard`.
        self.guard_report = None

    @classmethod
    def from_hparams(cls, source, hparams_file=INFERENCE_YAML, overrides=None, savedir=None,
                     **kwargs):
        """Loads a model folder (a local path; nothing is downloaded).

        Arguments
        ---------
        source : str
            The model folder (holding ``inference.yaml``); a relative path
            that does not exist from the working directory is looked up in
            the project checkout (``"pretrained/mage"`` works from anywhere).
        hparams_file : str
            Name of the hyperparameter file in ``source``.
        overrides : dict, optional
            Overrides of ``inference.yaml`` keys (e.g. ``{"chunk_seconds": 5.0}``).
        savedir : str, optional
            Where SpeechBrain links the fetched files (default: none).
        **kwargs
            Passed on to SpeechBrain's ``from_hparams`` (e.g. ``run_opts``).

        Returns
        -------
        EnhanceGenerative
        """
        from .tokenizers.registry import resolve_path

        folder = os.path.abspath(resolve_path(os.fspath(source)))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{source}: no such model folder")
        yaml_path = os.path.join(folder, hparams_file)
        if not os.path.isfile(yaml_path):
            hint = ""
            method = method_of_folder(folder)
            if method is not None:
                hint = (f"; a {method} folder: add it with speechbrain_gense.inference."
                        f"write_inference_yaml({os.fspath(source)!r})")
            raise FileNotFoundError(f"{yaml_path}: missing{hint}")
        overrides = {"model_folder": folder, **(overrides or {})}
        kwargs.setdefault("fetch_config", FetchConfig(allow_network=False))
        kwargs.setdefault("local_strategy",
                          LocalStrategy.NO_LINK if savedir is None else LocalStrategy.SYMLINK)
        return super().from_hparams(source=folder, hparams_file=hparams_file,
                                    overrides=overrides, savedir=savedir, **kwargs)

    # -- model facts -------------------------------------------------------

    @property
    def model(self):
        """The enhancer module (``modules.model`` of ``inference.yaml``)."""
        return self.mods["model"]

    @property
    def sample_rate(self):
        """Rate the model works at (audio at other rates is resampled)."""
        return int(self.model.sample_rate)

    @property
    def hop_length(self):
        """Samples per output-token frame at :attr:`sample_rate`."""
        return int(self.model.hop_length)

    @property
    def frame_rate(self):
        """Token frames (confidence values) per second."""
        return self.sample_rate / self.hop_length

    def max_frames(self):
        """Longest chunk, in output-token frames, the model takes (``None``: no limit)."""
        limit = self.model.max_frames()
        return None if limit is None else int(limit)

    def carries_context(self):
        """Whether chunks continue from the previous chunk's tokens (as ``prefix``).

        True when ``carry_context`` is on, chunks overlap and the model
        ``supports_prefix``.
        """
        return bool(self.carry_context and self.overlap_seconds > 0
                    and self.model.supports_prefix)

    # -- chunk plan --------------------------------------------------------

    def chunk_plan(self, num_samples, sample_rate):
        """Cuts ``num_samples`` at ``sample_rate`` into chunks.

        Borders fall on token frames and on samples where the input and
        model rates line up, so chunks resampled one by one line up sample
        for sample with the whole signal (and their tokens with its frames).
        The chunk length is shortened when a window (chunk + context) would
        exceed :meth:`max_frames`; a last piece shorter than the overlap is
        joined to the chunk before it.

        Returns
        -------
        dict
            ``chunks``: list of ``(start, stop, window_start, window_stop)``
            in input samples (``start, stop``: the chunk's own part;
            ``window_*``: with its context); ``crossfade``: samples of each
            crossfade; ``unit``: input samples per alignment unit.

        Example
        -------
        >>> from speechbrain_gense.models.debug import CopyNoisyEnhancer
        >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
        >>> enhancer = EnhanceGenerative(
        ...     modules={"model": CopyNoisyEnhancer(DebugTokenizer())}, run_opts={"device": "cpu"},
        ...     hparams={"method": "copy-noisy", "chunk_seconds": 1.0, "overlap_seconds": 0.25})
        >>> plan = enhancer.chunk_plan(44100 * 3 + 50, 44100)
        >>> plan["chunks"]
        [(0, 44100, 0, 55125), (44100, 88200, 33075, 99225), (88200, 132350, 77175, 132350)]
        """
        tsr, hop = self.sample_rate, self.hop_length
        g = math.gcd(int(sample_rate), tsr)
        unit_tok = math.lcm(hop, tsr // g)  # tokenizer samples per unit
        unit = unit_tok * int(sample_rate) // tsr  # input samples per unit
        core_units = max(1, round(self.chunk_seconds * tsr / unit_tok))
        ov_units = math.ceil(self.overlap_seconds * tsr / unit_tok - 1e-9) \
            if self.overlap_seconds > 0 else 0
        limit = self.max_frames()
        if limit is not None:
            limit_units = limit * hop // unit_tok
            if limit_units < 1:
                raise ValueError(f"the model takes at most {limit} frames: too few to chunk "
                                 f"{sample_rate} Hz audio")
            if core_units + 2 * ov_units > limit_units:
                ov_units = min(ov_units, (limit_units - 1) // 2)
                core_units = limit_units - 2 * ov_units
                if not self._shrink_logged:
                    logger.info("chunks shortened to %.2f s (+%.2f s context each side): the "
                                "model takes at most %d frames", core_units * unit / sample_rate,
                                ov_units * unit / sample_rate, limit)
                    self._shrink_logged = True
        core, overlap = core_units * unit, ov_units * unit
        borders = [0]
        while borders[-1] + core < num_samples and num_samples - (borders[-1] + core) >= max(1, overlap):
            borders.append(borders[-1] + core)
        chunks = []
        for i, start in enumerate(borders):
            stop = borders[i + 1] if i + 1 < len(borders) else num_samples
            chunks.append((start, stop, max(0, start - overlap), min(num_samples, stop + overlap)))
        crossfade = min(round(self.crossfade_seconds * sample_rate), overlap, core)
        return {"chunks": chunks, "crossfade": crossfade - crossfade % 2, "unit": unit}

    # -- the enhancement loop ------------------------------------------------

    def _to_model_rate(self, wav, sample_rate):
        if sample_rate == self.sample_rate:
            return wav
        return torchaudio.functional.resample(wav, sample_rate, self.sample_rate)

    def _from_model_rate(self, wav, sample_rate):
        if sample_rate == self.sample_rate:
            return wav
        return torchaudio.functional.resample(wav, self.sample_rate, sample_rate)

    def _run_model(self, jobs, generator, decode_opts, batch_size, selector=None):
        """Enhances ``jobs`` (dicts with ``wav`` [L], ``init``), ``batch_size`` at a time.

        Jobs with an ``init`` (the carried tokens ``[P, K]``) are run with it
        as ``prefix``; jobs are grouped by prefix length, since a call takes
        one ``[B, P, K]`` prefix. Sets ``out`` [L], ``tokens`` [T, K] and
        ``confidence`` [T] on each job, and adds the calls' ``nfe`` to
        :attr:`nfe`. With a ``selector`` (:mod:`speechbrain_gense.selection`)
        each job is decoded ``selector.candidates`` times in the same call and
        the chosen candidate is kept (``batch_size`` counts jobs, not candidates).
        """
        by_prefix = {}
        for job in jobs:
            init = job.get("init")
            by_prefix.setdefault(None if init is None else int(init.shape[0]), []).append(job)
        for jobs_p in by_prefix.values():
            step = batch_size or len(jobs_p)
            for first in range(0, len(jobs_p), step):
                self._run_group(jobs_p[first:first + step], generator, decode_opts, selector)

    def _run_group(self, group, generator, decode_opts, selector=None):
        n = selector.candidates if selector is not None else 1
        rows = [job for job in group for _ in range(n)]  # each job's candidates side by side
        longest = max(job["wav"].shape[0] for job in group)
        wav = torch.stack([torch.nn.functional.pad(job["wav"], (0, longest - job["wav"].shape[0]))
                           for job in rows]).to(self.device)
        lens = torch.tensor([job["valid"] / longest for job in rows], device=self.device)
        prefix = None
        if group[0].get("init") is not None:
            prefix = torch.stack([job["init"] for job in rows]).long().to(self.device)
        with self.inference_ctx:
            out = self.model.enhance(wav, lens, generator=generator, prefix=prefix, **decode_opts)
        self.nfe += int(out.get("nfe", 0))
        for j, job in enumerate(group):
            i = j * n
            if selector is not None:
                valid = int(job["valid"])
                i += selector.select(out["wav"][i:i + n, :valid].float().cpu(),
                                     job["wav"][:valid], self.sample_rate)[0]
            length = job["wav"].shape[0]
            frames = self.model.num_frames(length)
            job["out"] = out["wav"][i, :length].float().cpu()
            job["tokens"] = out["tokens"][i, :frames].cpu()
            job["confidence"] = fit_length_end(out["confidence"][i, :frames].float().cpu(),
                                               frames)

    @torch.no_grad()
    def _enhance_stream(self, read, num_samples, sample_rate, num_rows, write, lengths=None,
                        generator=None, batch_size=None, with_confidence=False, progress=False,
                        desc=None, decode_opts=None, guard=None, name=None, selector=None):
        """Enhances a signal read by blocks, writing the output by blocks.

        Arguments
        ---------
        read : callable
            ``read(start, stop) -> [num_rows, stop - start]`` float32 at
            ``sample_rate`` (rows: channels or batch items).
        num_samples : int
            Length of the signal.
        sample_rate : int
            Its rate (the output's too).
        num_rows : int
            Rows of each block.
        write : callable
            ``write(block [num_rows, n])``, called with consecutive blocks that
            add up to ``num_samples``.
        lengths : torch.Tensor, optional
            ``[num_rows]`` valid samples of each row (default: all).
        generator, batch_size, with_confidence, progress, desc, decode_opts
            See :meth:`enhance_file`.
        guard : speechbrain_gense.guard.Guard, optional
            Scores each chunk (and, in ``fallback`` mode, replaces flagged
            ones) before it is written; rows go to :attr:`guard_report`.
        name : str, optional
            The ``file`` column of the guard's rows.
        selector : speechbrain_gense.selection.ConsensusSelector, optional
            Decodes several candidates per chunk and keeps one (best of N).

        Returns
        -------
        torch.Tensor or None
            ``[num_rows, T]`` per-frame confidence with ``with_confidence``.
        """
        opts = self.model.decode_options(**{**self.decode_opts, **(decode_opts or {})})
        self.nfe = 0
        self.guard_report = [] if guard is not None else None
        plan = self.chunk_plan(num_samples, sample_rate)
        chunks, X = plan["chunks"], plan["crossfade"]
        margin = 0
        if sample_rate != self.sample_rate:
            margin = plan["unit"] * math.ceil(_RESAMPLE_MARGIN_SECONDS * sample_rate / plan["unit"])
        if lengths is None:
            lengths = torch.full((num_rows,), num_samples, dtype=torch.long)
        lengths = lengths.long().cpu()
        tsr, hop = self.sample_rate, self.hop_length
        carry = self.carries_context() and len(chunks) > 1
        per_call = 1
        if not carry and batch_size and batch_size > num_rows:
            per_call = batch_size // num_rows  # independent chunks batched together
        fade_out, fade_in = equal_power_fades(X)
        tail, prev_tokens, confidence, pending = None, None, [], []

        def emit(k, y, conf, frames_ws, frames):
            nonlocal tail
            start, stop, ws, we = chunks[k]
            if k > 0 and X > 0:
                mid = y[:, start - X // 2 - ws:start + X // 2 - ws]
                write(crossfade(tail, mid, fade_out, fade_in))
            head = start + X // 2 if k > 0 else 0
            last = k == len(chunks) - 1
            end = num_samples if last else stop - X // 2
            write(y[:, head - ws:end - ws])
            if not last and X > 0:
                tail = y[:, stop - X // 2 - ws:stop + X // 2 - ws].clone()
            if with_confidence:
                a = start * tsr // sample_rate // hop - frames_ws
                b = frames if last else stop * tsr // sample_rate // hop - frames_ws
                confidence.append(conf[:, a:b])

        def flush():
            self._guard_chunks(guard, pending, chunks, sample_rate, name)
            for item in pending:
                emit(*item[:5])
            pending.clear()
        bar = tqdm(total=len(chunks), desc=desc, unit="chunk", leave=False,
                   disable=not progress or len(chunks) < 2)
        for first in range(0, len(chunks), per_call):
            group = []
            for k in range(first, min(len(chunks), first + per_call)):
                start, stop, ws, we = chunks[k]
                r0, r1 = max(0, ws - margin), min(num_samples, we + margin)
                block = read(r0, r1)
                x_in = block[:, ws - r0:we - r0]
                x_tok = self._to_model_rate(block, sample_rate)
                offset = (ws - r0) * tsr // sample_rate
                x_tok = x_tok[:, offset:offset + math.ceil((we - ws) * tsr / sample_rate)]
                valid = (lengths - ws).clamp(0, we - ws)
                valid_tok = [math.ceil(int(v) * tsr / sample_rate) for v in valid]
                jobs = []
                for row in range(num_rows):
                    if valid[row] <= 0:
                        continue
                    peak = float(x_in[row, :int(valid[row])].abs().max())
                    if peak <= self.silence_threshold:
                        continue
                    init = None
                    if carry and prev_tokens is not None and row in prev_tokens:
                        prev_ws_frame, tokens = prev_tokens[row]
                        a = ws * tsr // sample_rate // hop - prev_ws_frame
                        b = start * tsr // sample_rate // hop - prev_ws_frame
                        init = tokens[a:b]
                    jobs.append({"chunk": k, "row": row, "wav": x_tok[row],
                                 "valid": valid_tok[row], "init": init})
                group.append((k, x_in, valid, jobs))
            jobs = [job for *_, chunk_jobs in group for job in chunk_jobs]
            if jobs:
                self._run_model(jobs, generator, opts, batch_size, selector)
            for k, x_in, valid, chunk_jobs in group:
                start, stop, ws, we = chunks[k]
                y = x_in.clone()  # silent rows pass through
                for row in range(num_rows):
                    y[row, int(valid[row]):] = 0.0
                frames_ws = ws * tsr // sample_rate // hop
                frames = self.model.num_frames(math.ceil((we - ws) * tsr / sample_rate))
                conf = torch.ones(num_rows, frames)
                conf[valid <= 0] = 0.0
                for job in chunk_jobs:
                    out = self._from_model_rate(job["out"][None], sample_rate)[0]
                    y[job["row"]] = torch.nn.functional.pad(out, (0, we - ws))[:we - ws]
                    y[job["row"], int(valid[job["row"]]):] = 0.0
                    conf[job["row"]] = job["confidence"]
                if carry:
                    prev_tokens = {job["row"]: (frames_ws, job["tokens"]) for job in chunk_jobs}
                if guard is None:
                    emit(k, y, conf, frames_ws, frames)
                else:  # scored (and maybe replaced) in batches of chunks, then written
                    pending.append((k, y, conf, frames_ws, frames, x_in, valid,
                                    {job["row"] for job in chunk_jobs}))
                    if len(pending) >= guard.batch_chunks:
                        flush()
                bar.update(1)
        if pending:
            flush()
        bar.close()
        return torch.cat(confidence, dim=1) if with_confidence else None

    def _guard_chunks(self, guard, pending, chunks, sample_rate, name):
        """Scores the ``pending`` chunks with ``guard``; replaces flagged ones in fallback mode.

        Each item is ``(k, y, conf, frames_ws, frames, x_in, valid, enhanced_rows)``;
        ``y`` (the chunk's window ``[rows, we - ws]``) is replaced in place by
        the guard's conservative output of ``x_in`` for a flagged row. Rows
        silent in the chunk (passed through) are reported, not scored.
        """
        tsr, hop = self.sample_rate, self.hop_length
        todo, noisy, enhanced, conf_means = [], [], [], []
        for k, y, conf, frames_ws, _, x_in, valid, rows in pending:
            start, stop, ws, _ = chunks[k]
            a = start * tsr // sample_rate // hop - frames_ws
            b = max(a + 1, stop * tsr // sample_rate // hop - frames_ws)
            for row in range(y.shape[0]):
                end = min(stop, ws + int(valid[row]))
                entry = {"file": name, "channel": row, "start_s": start / sample_rate,
                         "end_s": max(start, end) / sample_rate}
                if row not in rows or end <= start:
                    self.guard_report.append({**entry, "snr_db": math.nan,
                                              "transcript_wer": math.nan, "max_wer": math.nan,
                                              "secs": math.nan, "confidence": math.nan,
                                              "flagged": False, "reason": "silent: passed through"})
                    continue
                todo.append((entry, y, x_in, valid, row))
                noisy.append(x_in[row, start - ws:end - ws])
                enhanced.append(y[row, start - ws:end - ws])
                conf_means.append(float(conf[row, a:b].float().mean()))
        if not todo:
            return
        scores = guard.score(noisy, enhanced, conf_means, sample_rate)
        for (entry, y, x_in, valid, row), score in zip(todo, scores):
            self.guard_report.append({**entry, **score})
            if score["flagged"] and guard.mode == "fallback":
                n = int(valid[row])
                y[row, :n] = guard.conservative(x_in[row, :n], sample_rate)
                y[row, n:] = 0.0

    def candidate_selector(self, candidates=None):
        """The best-of-N selector of a call (:func:`~speechbrain_gense.selection.make_selector`)
        for ``candidates``, or for the folder's ``candidates`` when None; None for 1."""
        return make_selector(self.candidates if candidates is None else candidates)

    # -- public API ----------------------------------------------------------

    def enhance_batch(self, noisy, lengths=None, sample_rate=None, seed=None, generator=None,
                      batch_size=None, return_confidence=False, guard=None, guard_fallback=None,
                      candidates=None, **decode_opts):
        """Enhances a batch of noisy waveforms.

        Arguments
        ---------
        noisy : torch.Tensor
            ``[B, S]`` (or ``[S]``) waveforms.
        lengths : torch.Tensor, optional
            ``[B]`` relative lengths (SpeechBrain's convention); samples past
            an item's length are 0 in the output.
        sample_rate : int, optional
            Rate of ``noisy`` (default: :attr:`sample_rate`); the output has
            the same rate.
        seed : int, optional
            Seed of the sampling (same seed, same output).
        generator : torch.Generator, optional
            Random number generator to use instead of ``seed``.
        batch_size : int, optional
            At most this many signals per model call (default: the batch).
        return_confidence : bool
            Also return the per-frame confidence ``[B, T]`` (token frames at
            :attr:`frame_rate`).
        guard : str or speechbrain_gense.guard.Guard, optional
            Content and voice guard (default: off): ``"report"`` scores every
            chunk of every row, ``"fallback"`` also replaces flagged chunks
            (:mod:`speechbrain_gense.guard`); the rows are left in
            :attr:`guard_report` (``channel`` is the batch row).
        guard_fallback : str, optional
            ``"input"`` (default) or ``"dfn3"``: the replacement of a flagged
            chunk.
        candidates : int or speechbrain_gense.selection.ConsensusSelector, optional
            Best of N (default: the folder's ``candidates``, 1): decode this
            many outputs of every chunk and keep the one whose transcript
            (Whisper tiny.en) the others and the input agree with most
            (:mod:`speechbrain_gense.selection`); N times the decoding cost.
        **decode_opts
            Decoding options of the model (e.g. ``steps``).

        Returns
        -------
        torch.Tensor
            ``[B, S]`` (``[S]`` for a ``[S]`` input), on the input's device;
            with ``return_confidence``, ``(wav, confidence)``.
        """
        squeeze = noisy.dim() == 1
        if squeeze:
            noisy = noisy.unsqueeze(0)
        if noisy.dim() != 2:
            raise ValueError(f"expected noisy [B, S] or [S], got shape {tuple(noisy.shape)}")
        if not torch.isfinite(noisy).all():
            raise ValueError("noisy contains NaN or Inf samples (clean them first, e.g. with "
                             "torch.nan_to_num)")
        sample_rate = int(sample_rate or self.sample_rate)
        B, S = noisy.shape
        if lengths is None:
            valid = torch.full((B,), S, dtype=torch.long)
        else:
            valid = (torch.as_tensor(lengths).float().cpu() * S).round().long().clamp(0, S)
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        guard = make_guard(guard, guard_fallback, self.guard_thresholds)
        selector = self.candidate_selector(candidates)
        source = noisy.detach().float().cpu()
        blocks = []
        confidence = None
        if S > 0:
            confidence = self._enhance_stream(
                lambda a, b: source[:, a:b], S, sample_rate, B, blocks.append, lengths=valid,
                generator=generator, batch_size=batch_size, with_confidence=return_confidence,
                decode_opts=decode_opts, guard=guard, selector=selector)
        wav = torch.cat(blocks, dim=1) if blocks else source.clone()
        wav = wav.to(device=noisy.device)
        if squeeze:
            wav = wav[0]
            confidence = None if confidence is None else confidence[0]
        if return_confidence:
            if confidence is None:
                confidence = torch.zeros((B, 0)) if not squeeze else torch.zeros(0)
            return wav, confidence
        return wav

    def forward(self, noisy, lengths=None, **kwargs):
        """Runs :meth:`enhance_batch`."""
        return self.enhance_batch(noisy, lengths, **kwargs)

    def enhance_file(self, path, output_filename=None, seed=None, overwrite=False,
                     return_confidence=False, return_audio=True, batch_size=None,
                     progress=False, guard=None, guard_fallback=None, candidates=None,
                     **decode_opts):
        """Enhances an audio file (any rate, any number of channels, any length).

        The file is read and, with ``output_filename``, written one chunk at a
        time, so memory does not grow with its duration (unless the audio is
        also returned).

        Arguments
        ---------
        path : str
            Input file (wav, flac, ...).
        output_filename : str, optional
            Writes the enhanced audio there (same rate and channels; format
            from its extension; the input's sample format when that format
            has it). Never the input file itself; an existing file only with
            ``overwrite``. Written atomically: on any error no file is left.
        seed : int, optional
            Seed of the sampling: the same seed gives the same audio.
        overwrite : bool
            Replace an existing ``output_filename``.
        return_confidence : bool
            Also return the per-frame confidence ``[C, T]`` (frame ``t``
            starts at ``t / frame_rate`` seconds).
        return_audio : bool
            Return the enhanced audio (set False for long files written to
            ``output_filename``: nothing is then kept in memory).
        batch_size : int, optional
            At most this many signals (channels x chunks) per model call
            (default: the channels of one chunk).
        progress : bool
            Show a progress bar over the chunks.
        guard : str or speechbrain_gense.guard.Guard, optional
            Content and voice guard (default: off; see :meth:`enhance_batch`);
            its per-chunk rows (``file`` is ``path``) are left in
            :attr:`guard_report`, to write with
            :func:`speechbrain_gense.guard.write_report_csv`.
        guard_fallback : str, optional
            ``"input"`` (default) or ``"dfn3"``.
        candidates : int, optional
            Best of N per chunk (see :meth:`enhance_batch`).
        **decode_opts
            Decoding options of the model (e.g. ``steps``).

        Returns
        -------
        torch.Tensor or None
            ``[C, S]`` enhanced audio at the file's rate (None without
            ``return_audio``); with ``return_confidence``, ``(wav, confidence)``.

        Raises
        ------
        AudioError
            One-line message for a file that cannot be read or written.
        """
        path = os.fspath(path)
        guard = make_guard(guard, guard_fallback, self.guard_thresholds)
        selector = self.candidate_selector(candidates)
        with AudioFileReader(path) as reader:
            writer = None
            if output_filename is not None:
                output_filename = os.fspath(output_filename)
                if os.path.exists(output_filename) and _same_file(output_filename, path):
                    raise AudioError(f"{output_filename}: is the input file; choose another output")
                writer = AtomicAudioWriter(output_filename, reader.sample_rate, reader.channels,
                                           subtype=reader.subtype, overwrite=overwrite)
            blocks = []

            def write(block):
                if writer is not None:
                    writer.write(block)
                if return_audio:
                    blocks.append(block)

            generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            try:
                confidence = self._enhance_stream(
                    reader.read, reader.frames, reader.sample_rate, reader.channels, write,
                    generator=generator, batch_size=batch_size,
                    with_confidence=return_confidence, progress=progress,
                    desc=os.path.basename(path), decode_opts=decode_opts, guard=guard,
                    name=path, selector=selector)
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            if writer is not None:
                writer.commit()
        wav = torch.cat(blocks, dim=1) if return_audio else None
        return (wav, confidence) if return_confidence else wav


__all__ = [
    "DEFAULT_OPTIONS",
    "INFERENCE_YAML",
    "AtomicAudioWriter",
    "AudioFileReader",
    "EnhanceGenerative",
    "crossfade",
    "equal_power_fades",
    "write_inference_yaml",
]
