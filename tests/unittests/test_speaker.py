"""Speaker encoders: batched Resemblyzer against embed_utterance, ECAPA loaded by path."""

import math
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import torch
import torchaudio

from speechbrain_gense.metrics.speaker import speaker_embedding, voice_encoder
from speechbrain_gense.utils import torch_threads
from speechbrain_gense.models.speaker import (
    ECAPASpeakerEncoder,
    ResemblyzerSpeakerEncoder,
    SpeakerWarning,
    build_speaker_encoder,
)

SR = 16000
ESPEAK = shutil.which("espeak-ng")


def synthetic(seconds, f0=130.0, seed=0):
    """Speech-like test signal: a gliding harmonic tone, syllable envelope, noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    phase = 2 * math.pi * torch.cumsum(f0 * (1 + 0.2 * torch.sin(2 * math.pi * 0.7 * t)), 0) / SR
    x = sum(torch.sin(h * phase) / h for h in range(1, 12))
    env = (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t)) ** 2
    return 0.2 * env * x + 0.003 * torch.randn(len(t), generator=g)


def espeak(text, voice, tmp_path):
    """16 kHz speech from espeak-ng (written in tmp_path only)."""
    import soundfile as sf

    path = tmp_path / f"{voice.replace('+', '_')}.wav"
    subprocess.run([ESPEAK, "-v", voice, "-w", str(path), text], check=True,
                   capture_output=True)
    wav, rate = sf.read(str(path), dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(wav), rate, SR)


@pytest.fixture(scope="module")
def encoder():
    return ResemblyzerSpeakerEncoder()


@pytest.fixture(scope="module")
def utterances(tmp_path_factory):
    """Two utterances of different lengths (2.6 s, and 1.0 s: below one 1.6 s partial)."""
    if ESPEAK:
        tmp = tmp_path_factory.mktemp("tts")
        a = espeak("The quick brown fox jumps over the lazy dog near the river bank.",
                   "en-us", tmp)
        b = espeak("Hello there, how are you?", "en+f3", tmp)
        return a[:int(2.6 * SR)], b[:SR]
    return synthetic(2.6, 120.0), synthetic(1.0, 210.0, seed=1)


def pad(*signals):
    S = max(len(x) for x in signals)
    wav = torch.stack([torch.nn.functional.pad(x, (0, S - len(x))) for x in signals])
    return wav, torch.tensor([len(x) / S for x in signals])


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_batch_matches_embed_utterance(encoder, utterances):
    wav, lens = pad(*utterances)
    emb = encoder(wav, lens)
    assert emb.shape == (2, 256) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    for x, e in zip(utterances, emb.numpy()):
        with torch_threads(1):
            ref = voice_encoder().embed_utterance(x.numpy())
        assert cosine(ref, e) > 0.99
    # The two utterances are told apart; padding does not change an embedding.
    assert cosine(emb[0].numpy(), emb[1].numpy()) < 0.99
    alone = encoder(utterances[1][None])
    assert torch.allclose(alone[0], emb[1], atol=1e-5)


def test_bf16_embedding_close_to_fp32(encoder, utterances, monkeypatch):
    import speechbrain_gense.utils as utils

    wav, lens = pad(*utterances)
    ref = encoder(wav, lens)
    half = ResemblyzerSpeakerEncoder(precision="bf16")
    emb = half(wav, lens)
    assert emb.dtype == torch.float32 and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    cos = (emb * ref).sum(1)
    assert bool((cos > 0.995).all()) and not torch.equal(emb, ref)  # bf16 rounding, same voice
    assert half.spec == {"kind": "resemblyzer", "precision": "bf16"}
    assert build_speaker_encoder(**half.spec).precision == "bf16"
    assert encoder.spec == {"kind": "resemblyzer"}  # defaults stay unlisted (saved mage.json)
    monkeypatch.setattr(utils, "native_bf16", lambda device: False)
    assert torch.equal(ResemblyzerSpeakerEncoder(precision="auto")(wav, lens), ref)
    with pytest.raises(ValueError, match="precision must be one of"):
        ResemblyzerSpeakerEncoder(precision="int8")


def test_bf16_without_native_support(encoder, utterances, monkeypatch):
    """On a CPU without AVX-512 BF16 / AMX oneDNN has no autocast bf16 LSTM: the
    encoder runs a bfloat16 copy instead, and its state dict stays float32."""
    import speechbrain_gense.models.speaker as speaker

    monkeypatch.setattr(speaker, "native_bf16", lambda device: False)
    wav, lens = pad(*utterances)
    ref = encoder(wav, lens)
    half = ResemblyzerSpeakerEncoder(precision="bf16")
    emb = half(wav, lens)
    assert emb.dtype == torch.float32 and bool(((emb * ref).sum(1) > 0.995).all())
    assert not torch.equal(emb, ref)
    state = half.state_dict()
    assert state.keys() == encoder.state_dict().keys()
    assert all(v.dtype == torch.float32 for v in state.values())


def test_same_input_same_embedding(encoder, utterances):
    x = utterances[1]
    emb = encoder(torch.stack([x, x]))
    assert torch.equal(emb[0], emb[1])
    assert torch.equal(encoder(torch.stack([x, x])), emb)  # deterministic
    # [S] is a batch of one (another LSTM batch size: equal up to rounding).
    assert torch.allclose(encoder(x), emb[:1], atol=1e-6)


def test_resampling(encoder, utterances):
    x = utterances[1]
    x32 = torchaudio.functional.resample(x, SR, 32000)
    e16, e32 = encoder(x[None]), encoder(x32[None], sample_rate=32000)
    assert cosine(e16[0].numpy(), e32[0].numpy()) > 0.99


def test_frozen(encoder, utterances):
    assert encoder.embedding_dim == 256
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.lstm.training
    out = encoder(utterances[0][None].requires_grad_())
    assert not out.requires_grad
    # A private copy: moving it never moves the metric's cached encoder.
    assert encoder.lstm is not voice_encoder().lstm
    assert encoder.to("cpu").device.type == "cpu"


def test_silence(encoder, utterances):
    x = utterances[0]
    wav = torch.stack([x, torch.zeros_like(x), x])
    lens = torch.tensor([1.0, 1.0, 0.0])
    with pytest.warns(SpeakerWarning, match=r"\[1, 2\]"):
        emb = encoder(wav, lens)
    assert torch.isfinite(emb).all()
    assert (emb[1:] == 0).all() and torch.allclose(emb[0].norm(), torch.tensor(1.0))
    with pytest.warns(SpeakerWarning):
        assert (encoder(torch.zeros(2, 8000)) == 0).all()
    with pytest.warns(SpeakerWarning):
        assert encoder(torch.zeros(1, 0)).shape == (1, 256)


@pytest.mark.skipif(ESPEAK is None, reason="espeak-ng not installed")
def test_full_preprocess_matches_secs_metric(utterances):
    """``preprocess="full"`` gives the embedding the SECS metric uses."""
    full = ResemblyzerSpeakerEncoder(preprocess="full")
    x = utterances[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = speaker_embedding(x.numpy())
    assert cosine(ref, full(x[None])[0].numpy()) > 0.99


# ---------------------------------------------------------------------------
# ECAPA
# ---------------------------------------------------------------------------

N_MELS = 24
ECAPA_ARGS = dict(channels=[16, 16, 16, 16, 48], kernel_sizes=[5, 3, 3, 3, 1],
                  dilations=[1, 2, 3, 4, 1], attention_channels=8, lin_neurons=12)

# The layout of speechbrain/spkrec-ecapa-voxceleb's hyperparams.yaml, tiny;
# pretrained_path names the hub repository as in the released file: loading
# works only because it is redirected to the local directory.
HPARAMS = f"""
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
n_mels: {N_MELS}
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {ECAPA_ARGS["channels"]}
    kernel_sizes: {ECAPA_ARGS["kernel_sizes"]}
    dilations: {ECAPA_ARGS["dilations"]}
    attention_channels: {ECAPA_ARGS["attention_channels"]}
    lin_neurons: {ECAPA_ARGS["lin_neurons"]}
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
"""


@pytest.fixture(scope="module")
def ecapa_dir(tmp_path_factory):
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    torch.manual_seed(0)
    model = ECAPA_TDNN(N_MELS, **ECAPA_ARGS).eval()
    # Non-trivial batch-norm statistics, so that a load that skipped them shows.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("ecapa")
    (path / "hyperparams.yaml").write_text(HPARAMS)
    torch.save(model.state_dict(), path / "embedding_model.ckpt")
    return path, model


def test_ecapa_load_by_path(ecapa_dir, utterances, tmp_path):
    from speechbrain.lobes.features import Fbank
    from speechbrain.processing.features import InputNormalization

    path, model = ecapa_dir
    encoder = build_speaker_encoder("ecapa", source=path)
    assert isinstance(encoder, ECAPASpeakerEncoder) and encoder.embedding_dim == 12
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    wav, lens = pad(*utterances)
    emb = encoder(wav, lens)
    assert emb.shape == (2, 12) and not emb.requires_grad
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    # Same as the saved module run directly on the same Fbank features.
    with torch.no_grad():
        feats = InputNormalization(norm_type="sentence", std_norm=False).eval()(
            Fbank(n_mels=N_MELS)(wav), lens)
        ref = torch.nn.functional.normalize(model(feats, lens)[:, 0], dim=1)
    assert torch.allclose(emb, ref, atol=1e-5)
    # With a savedir, and on silence.
    other = ECAPASpeakerEncoder(path, savedir=tmp_path / "save")
    assert torch.allclose(other(wav, lens), emb, atol=1e-6)
    with pytest.warns(SpeakerWarning):
        out = encoder(torch.stack([wav[0], torch.zeros_like(wav[0])]))
    assert torch.isfinite(out).all() and (out[1] == 0).all() and (out[0] != 0).any()


def test_factory_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        build_speaker_encoder("ecapa", source=tmp_path)
    with pytest.raises(ValueError):
        build_speaker_encoder("ecapa")
    with pytest.raises(ValueError):
        build_speaker_encoder("xvector")
    with pytest.raises(ValueError):
        ResemblyzerSpeakerEncoder(preprocess="loud")
