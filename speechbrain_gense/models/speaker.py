"""Speaker encoders for speaker conditioning: frozen, batched, L2-normalised.

Two lobes with one interface, ``forward(wav[B, S], lens=None, sample_rate=16000)
-> FloatTensor[B, D]`` (one unit-norm embedding per utterance, ``D`` in
:attr:`embedding_dim`):

- :class:`ResemblyzerSpeakerEncoder`: Resemblyzer's GE2E ``VoiceEncoder``
  (``D = 256``; weights ship with the ``resemblyzer`` package, the same
  encoder as the SECS metric of :mod:`speechbrain_gense.metrics.speaker`);
- :class:`ECAPASpeakerEncoder`: a SpeechBrain ECAPA-TDNN ``EncoderClassifier``
  loaded from a local directory (the layout of
  ``speechbrain/spkrec-ecapa-voxceleb``; ``D = 192`` for that model).

Silent items (empty, or peak below :data:`~speechbrain_gense.metrics.common.SILENCE_PEAK`)
carry no speaker information: both encoders return a zero embedding for them,
with a :class:`SpeakerWarning`, never NaN. A zero vector is also the natural
"no speaker" input of a conditioned model.

Both are frozen (``eval`` mode whatever :meth:`~torch.nn.Module.train` is
called with, no parameter requires gradients, outputs carry no graph) and
follow ``.to(device)``. Nothing is downloaded.

Example
-------
>>> encoder = build_speaker_encoder("resemblyzer")
>>> encoder(torch.randn(2, 16000) * 0.1, torch.tensor([1.0, 0.6])).shape
torch.Size([2, 256])
"""

import copy
import os
import re
import warnings

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from speechbrain.dataio.dataio import length_to_mask
from torch import nn

from speechbrain_gense.metrics.common import SILENCE_PEAK
from speechbrain_gense.metrics.speaker import voice_encoder
from speechbrain_gense.utils import native_bf16, resolve_bf16, torch_threads

SAMPLE_RATE = 16000


class SpeakerWarning(UserWarning):
    """An utterance had no usable audio; its embedding is zeros."""


def _prepare(wav, lens, sample_rate, target_rate=SAMPLE_RATE):
    """Checks a batch, resamples it and finds its silent items.

    Returns
    -------
    wav : torch.Tensor
        ``[B, S']`` float32 at ``target_rate``.
    lens : torch.Tensor
        ``[B]`` relative lengths (float32, on ``wav``'s device).
    silent : torch.BoolTensor
        ``[B]`` items that are empty or below :data:`SILENCE_PEAK` (CPU).
    """
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2:
        raise ValueError(f"expected wav [B, S], got shape {tuple(wav.shape)}")
    if lens is None:
        lens = torch.ones(wav.shape[0])
    if lens.shape != (wav.shape[0],):
        raise ValueError(f"lens must have shape [{wav.shape[0]}], got {tuple(lens.shape)}")
    wav = wav.float()
    if sample_rate != target_rate and wav.shape[1] > 0:
        wav = torchaudio.functional.resample(wav, sample_rate, target_rate)
    lens = lens.to(wav.device, torch.float32)
    num = torch.round(lens * wav.shape[1]).long().clamp(0, wav.shape[1])
    valid = length_to_mask(num, wav.shape[1], dtype=torch.bool, device=wav.device)
    peak = (wav.abs() * valid).amax(dim=1) if wav.shape[1] else torch.zeros(len(wav))
    silent = (peak < SILENCE_PEAK).cpu()
    if silent.any():
        items = silent.nonzero()[:, 0].tolist()
        warnings.warn(f"speaker encoder: item(s) {items} are empty or silent (peak < "
                      f"{SILENCE_PEAK:.0e}); their embedding is zeros", SpeakerWarning,
                      stacklevel=3)
    return wav, lens, silent


class _Frozen(nn.Module):
    """A module that stays in eval mode with frozen parameters."""

    def freeze(self):
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode=True):
        """Ignores ``mode``: the encoder always runs in eval mode."""
        return super().train(False)


class ResemblyzerSpeakerEncoder(_Frozen):
    """Frozen, batched Resemblyzer GE2E speaker encoder.

    Reproduces ``VoiceEncoder.embed_utterance`` for a padded batch: each
    utterance's mel frames come from Resemblyzer's
    ``audio.wav_to_mel_spectrogram`` (librosa, CPU, per utterance), its
    1.6 s partial utterances from ``VoiceEncoder.compute_partial_slices``
    (an utterance shorter than one partial is zero-padded to one); the
    partials of the whole batch then go through the 3-layer LSTM at once
    (on the module's device) and the normalised partial embeddings are
    averaged per utterance and re-normalised.

    The weights are a private copy of the metric's cached encoder
    (:func:`speechbrain_gense.metrics.speaker.voice_encoder`), so moving this
    module to a device never touches the metric's.

    Arguments
    ---------
    rate : float
        Partial utterances per second (Resemblyzer's default 1.3).
    min_coverage : float
        Shortest fraction of a partial kept at the end (Resemblyzer's 0.75).
    preprocess : str
        ``"none"`` (default: the signal as given, like ``embed_utterance``),
        ``"volume"`` (Resemblyzer's volume normalisation to -30 dBFS, raising
        only) or ``"full"`` (``preprocess_wav``: volume and removal of long
        silences by VAD, as the SECS metric does; an item with no speech left
        gets a zero embedding and a warning).
    precision : str
        ``"fp32"`` (default), ``"bf16"`` (the LSTM and its projection under
        ``torch.autocast`` in bfloat16; on a CPU without AVX-512 BF16 / AMX,
        where oneDNN has no such LSTM, a bfloat16 copy of them, emulated and
        slower than fp32) or ``"auto"`` (bf16 where the device
        computes it natively, :func:`~speechbrain_gense.utils.resolve_bf16`).
        On 10 s of noisy speech, one loaded thread of an AMD EPYC with
        AVX-512 BF16: 0.051 s in bf16 against 0.085 s in fp32, cosine
        0.99996 between the two embeddings (0.998 for a 1 s utterance, one
        partial).

    Example
    -------
    >>> encoder = ResemblyzerSpeakerEncoder()
    >>> wav = torch.randn(3, 24000) * 0.1
    >>> emb = encoder(wav, torch.tensor([1.0, 0.5, 0.1]))
    >>> emb.shape, encoder.embedding_dim, [round(n, 4) for n in emb.norm(dim=1).tolist()]
    (torch.Size([3, 256]), 256, [1.0, 1.0, 1.0])
    """

    embedding_dim = 256
    sample_rate = SAMPLE_RATE

    #: Defaults of the options :attr:`spec` lists when they differ.
    DEFAULTS = {"rate": 1.3, "min_coverage": 0.75, "preprocess": "none", "precision": "fp32"}

    def __init__(self, rate=1.3, min_coverage=0.75, preprocess="none", precision="fp32"):
        super().__init__()
        if preprocess not in ("none", "volume", "full"):
            raise ValueError(f"preprocess must be 'none', 'volume' or 'full', got {preprocess!r}")
        resolve_bf16(precision, "cpu")  # checks the name
        self.rate, self.min_coverage, self.preprocess = rate, min_coverage, preprocess
        self.precision = precision
        encoder = copy.deepcopy(voice_encoder())
        self.lstm, self.linear = encoder.lstm, encoder.linear
        self.freeze()

    @property
    def device(self):
        return self.linear.weight.device

    def _bf16_copy(self):
        """A bfloat16 copy of the LSTM and projection (made once per device; not
        registered as submodules, so the state dict stays the float32 one)."""
        cached = self.__dict__.get("_bf16_parts")
        if cached is None or cached[1].weight.device != self.device:
            cached = (copy.deepcopy(self.lstm).to(torch.bfloat16),
                      copy.deepcopy(self.linear).to(torch.bfloat16))
            self.__dict__["_bf16_parts"] = cached
        return cached

    @property
    def spec(self):
        """``build_speaker_encoder`` arguments that rebuild this encoder (``mage.json``).

        Example
        -------
        >>> ResemblyzerSpeakerEncoder(precision="bf16").spec
        {'kind': 'resemblyzer', 'precision': 'bf16'}
        """
        out = {"kind": "resemblyzer"}
        for key, default in self.DEFAULTS.items():
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        return out

    def _partials(self, wav):
        """``wav`` (numpy float32, 16 kHz) -> ``[P, 160, 40]`` mel partials, or None."""
        from resemblyzer import VoiceEncoder, audio, hparams, preprocess_wav

        if self.preprocess == "full":
            wav = preprocess_wav(wav)
        elif self.preprocess == "volume":
            wav = audio.normalize_volume(wav, hparams.audio_norm_target_dBFS,
                                         increase_only=True)
        if len(wav) == 0:
            return None
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(
            len(wav), self.rate, self.min_coverage)
        if wav_slices[-1].stop >= len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = audio.wav_to_mel_spectrogram(wav.astype(np.float32))
        return np.stack([mel[s] for s in mel_slices])

    def embed_partials(self, mels):
        """GE2E embeddings of mel partials ``[P, 160, 40] -> [P, 256]`` (unit norm, or 0)."""
        if resolve_bf16(self.precision, self.device) == "bf16":
            if native_bf16(self.device):
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    _, (hidden, _) = self.lstm(mels)
                    embeds = F.relu(self.linear(hidden[-1]))
            else:
                # oneDNN has no autocast bf16 LSTM without AVX-512 BF16 / AMX ("could
                # not create a primitive descriptor"): a bfloat16 copy runs (emulated)
                lstm, linear = self._bf16_copy()
                _, (hidden, _) = lstm(mels.to(torch.bfloat16))
                embeds = F.relu(linear(hidden[-1]))
            return F.normalize(embeds.float(), dim=1)
        _, (hidden, _) = self.lstm(mels)
        embeds = F.relu(self.linear(hidden[-1]))
        return F.normalize(embeds, dim=1)

    @torch.no_grad()
    def forward(self, wav, lens=None, sample_rate=SAMPLE_RATE):
        """Embeds a padded batch.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, S]`` (or ``[S]``) audio at ``sample_rate``.
        lens : torch.Tensor, optional
            ``[B]`` relative lengths (default: all 1).
        sample_rate : int
            Rate of ``wav``; resampled to 16 kHz when different.

        Returns
        -------
        torch.Tensor
            ``[B, 256]`` unit-norm embeddings on the module's device; zeros
            (with a :class:`SpeakerWarning`) for silent or empty items.
        """
        wav, lens, silent = _prepare(wav, lens, sample_rate)
        num = torch.round(lens * wav.shape[1]).long().clamp(0, wav.shape[1]).tolist()
        signals = wav.detach().cpu().numpy()
        partials, owner = [], []
        for i, (x, n) in enumerate(zip(signals, num)):
            if silent[i]:
                continue
            mels = self._partials(x[:n])
            if mels is None:
                warnings.warn(f"speaker encoder: item {i} has no speech after preprocessing;"
                              " its embedding is zeros", SpeakerWarning, stacklevel=2)
                continue
            partials.append(mels)
            owner += [i] * len(mels)
        out = torch.zeros(len(signals), self.embedding_dim, device=self.device)
        if not partials:
            return out
        mels = torch.from_numpy(np.concatenate(partials)).to(self.device)
        if self.device.type == "cpu":
            with torch_threads(1):
                embeds = self.embed_partials(mels)
        else:
            embeds = self.embed_partials(mels)
        out.index_add_(0, torch.tensor(owner, device=self.device), embeds)
        return F.normalize(out, dim=1)


class ECAPASpeakerEncoder(_Frozen):
    """Frozen SpeechBrain speaker encoder (ECAPA-TDNN) loaded from a local directory.

    ``source`` holds a ``hyperparams.yaml`` and the files its ``pretrainer``
    lists (a copy of ``speechbrain/spkrec-ecapa-voxceleb``: ``embedding_model.ckpt``,
    and ``classifier.ckpt``, ``label_encoder.txt`` ... when the yaml asks for
    them). It is loaded with
    :meth:`speechbrain.inference.speaker.EncoderClassifier.from_hparams`
    with network access disabled; a ``pretrained_path`` key in the yaml (the
    hub repository in the released file) is overridden with ``source``.
    Embeddings are ``encode_batch``'s (``compute_features`` ->
    ``mean_var_norm`` -> ``embedding_model``), L2-normalised.

    Arguments
    ---------
    source : str or os.PathLike
        Local model directory.
    savedir : str or os.PathLike, optional
        Where SpeechBrain links the files (default: used in place).
    hparams_file : str
        Name of the hyperparameter file in ``source``.
    device : str
        Device to load on.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, source, savedir=None, hparams_file="hyperparams.yaml", device="cpu"):
        super().__init__()
        from speechbrain.inference.speaker import EncoderClassifier
        from speechbrain.utils.fetching import FetchConfig

        source = os.fspath(source)
        yaml_path = os.path.join(source, hparams_file)
        if not os.path.isfile(yaml_path):
            raise FileNotFoundError(f"no {hparams_file} in {source!r}: ECAPASpeakerEncoder "
                                    "loads a local model directory only (nothing is downloaded)")
        with open(yaml_path, encoding="utf-8") as f:
            has_path = re.search(r"^pretrained_path\s*:", f.read(), re.MULTILINE) is not None
        overrides = {"pretrained_path": os.path.abspath(source)} if has_path else {}
        self.model = EncoderClassifier.from_hparams(
            source=os.path.abspath(source), hparams_file=hparams_file, overrides=overrides,
            savedir=None if savedir is None else os.fspath(savedir),
            fetch_config=FetchConfig(allow_network=False), run_opts={"device": str(device)})
        self.freeze()
        self.embedding_dim = self._embedding_dim()

    def _embedding_dim(self):
        fc = getattr(getattr(self.model.mods.embedding_model, "fc", None), "conv", None)
        if isinstance(fc, nn.Conv1d):
            return fc.out_channels
        probe = 0.1 * torch.randn(1, SAMPLE_RATE, generator=torch.Generator().manual_seed(0))
        return self.forward(probe).shape[-1]

    @property
    def device(self):
        return next(self.model.mods.embedding_model.parameters()).device

    @torch.no_grad()
    def forward(self, wav, lens=None, sample_rate=SAMPLE_RATE):
        """Embeds a padded batch.

        Arguments
        ---------
        wav : torch.Tensor
            ``[B, S]`` (or ``[S]``) audio at ``sample_rate``.
        lens : torch.Tensor, optional
            ``[B]`` relative lengths (default: all 1).
        sample_rate : int
            Rate of ``wav``; resampled to 16 kHz when different.

        Returns
        -------
        torch.Tensor
            ``[B, D]`` unit-norm embeddings on the module's device; zeros
            (with a :class:`SpeakerWarning`) for silent or empty items.
        """
        wav, lens, silent = _prepare(wav.to(self.device), lens, sample_rate)
        # Pretrained keeps a device string of its own: follow .to(device).
        self.model.device = str(self.device)
        # Silent items are replaced by a full-length dummy and zeroed afterwards.
        keep = (~silent).to(self.device)
        lens = torch.where(keep, lens, torch.ones_like(lens))
        if wav.shape[1] == 0 or not keep.any():
            return torch.zeros(len(wav), self.embedding_dim, device=self.device)
        emb = self.model.encode_batch(wav, lens).reshape(len(wav), -1)
        return F.normalize(emb, dim=1) * keep[:, None]


def build_speaker_encoder(kind="resemblyzer", source=None, **kwargs):
    """Builds a frozen speaker encoder.

    Arguments
    ---------
    kind : str
        ``"resemblyzer"`` (no ``source`` needed) or ``"ecapa"`` (``source``:
        local model directory).
    source : str or os.PathLike, optional
        Model directory for ``"ecapa"``.
    **kwargs
        Passed to the encoder's constructor.

    Returns
    -------
    ResemblyzerSpeakerEncoder or ECAPASpeakerEncoder

    Example
    -------
    >>> build_speaker_encoder("resemblyzer").embedding_dim
    256
    """
    if kind == "resemblyzer":
        if source is not None:
            raise ValueError("the Resemblyzer encoder takes no source (its weights ship "
                             "with the package)")
        return ResemblyzerSpeakerEncoder(**kwargs)
    if kind == "ecapa":
        if source is None:
            raise ValueError("the ECAPA encoder needs source= a local model directory")
        return ECAPASpeakerEncoder(source, **kwargs)
    raise ValueError(f"kind must be 'resemblyzer' or 'ecapa', got {kind!r}")
