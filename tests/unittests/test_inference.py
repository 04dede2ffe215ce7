"""EnhanceGenerative: loading by from_hparams, chunking, rates, channels and bad inputs."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_gense.audio import AudioError
from speechbrain_gense.inference import (
    INFERENCE_YAML,
    AtomicAudioWriter,
    AudioFileReader,
    EnhanceGenerative,
    equal_power_fades,
    write_inference_yaml,
)
from speechbrain_gense.models.base import GenerativeEnhancer, register_method
from speechbrain_gense.models.debug import CopyNoisyEnhancer, tiny_mage, write_tiny_model
from speechbrain_gense.models.mage import MAGE
from speechbrain_gense.tokenizers.debug import DebugTokenizer


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("model") / "mage model")
    tiny_mage().save(folder)
    write_inference_yaml(folder)
    return folder


@pytest.fixture(scope="module")
def enhancer(model_folder):
    return EnhanceGenerative.from_hparams(source=model_folder, run_opts={"device": "cpu"})


def noise(shape, seed=0, scale=0.1):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def write(path, wav, sample_rate, subtype="PCM_16"):
    """Writes ``wav [C, S]`` with soundfile."""
    path = str(path)
    sf.write(path, np.asarray(wav, dtype=np.float32).T, sample_rate, subtype=subtype)
    return path


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".tmp-")]


# -- loading -----------------------------------------------------------------


def test_from_hparams_loads_a_mage_folder(enhancer, model_folder):
    assert isinstance(enhancer.model, MAGE) and not enhancer.model.training
    assert enhancer.hparams.method == "mage"
    assert enhancer.sample_rate == 16000 and enhancer.hop_length == 200
    assert enhancer.frame_rate == 80.0 and enhancer.max_frames() == 512
    assert enhancer.chunk_seconds == 10.0 and enhancer.overlap_seconds == 1.0
    assert enhancer.carries_context()  # MAGE.supports_prefix
    with open(os.path.join(model_folder, INFERENCE_YAML)) as f:
        text = f.read()
    assert "model_folder: !PLACEHOLDER" in text and "method: mage" in text


def test_overrides_and_decode_opts(model_folder):
    model = EnhanceGenerative.from_hparams(
        source=model_folder, run_opts={"device": "cpu"},
        overrides={"chunk_seconds": 2.0, "decode_opts": {"steps": 1}})
    assert model.chunk_seconds == 2.0 and model.decode_opts == {"steps": 1}


def test_folder_can_move(model_folder, tmp_path):
    import shutil

    moved = shutil.copytree(model_folder, tmp_path / "moved")
    model = EnhanceGenerative.from_hparams(source=str(moved), savedir=str(tmp_path / "saved"),
                                           run_opts={"device": "cpu"})
    assert model.sample_rate == 16000 and os.listdir(tmp_path / "saved") == [INFERENCE_YAML]


def test_loading_errors_are_clear(tmp_path, model_folder):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        EnhanceGenerative.from_hparams(source=str(tmp_path / "nope"))
    bare = str(tmp_path / "bare")
    tiny_mage().save(bare)
    with pytest.raises(FileNotFoundError, match="write_inference_yaml"):
        EnhanceGenerative.from_hparams(source=bare)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_inference_yaml(model_folder)
    with pytest.raises(ValueError, match="unknown option"):
        write_inference_yaml(bare, chunk_size=3)
    with pytest.raises(ValueError, match="unknown method"):
        write_inference_yaml(bare, method="magic")
    with pytest.raises(FileNotFoundError, match="not a model folder of any registered method"):
        write_inference_yaml(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="copy-noisy.json missing"):
        write_inference_yaml(bare, method="copy-noisy")
    write_inference_yaml(bare)
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        EnhanceGenerative.from_hparams(source=bare, overrides={"method": "magic"})
    with pytest.raises(ValueError, match="method 'copy-noisy' needs a CopyNoisyEnhancer model"):
        EnhanceGenerative(modules={"model": tiny_mage()}, hparams={"method": "copy-noisy"})


def test_unknown_decoding_options_raise(enhancer, model_folder):
    with pytest.raises(ValueError, match=r"unknown decoding option 'stpes' \(valid: .*steps"):
        enhancer.enhance_batch(noise((1, 1000)), stpes=4)
    with pytest.raises(ValueError, match="unknown decoding option 'stpes'"):
        EnhanceGenerative.from_hparams(source=model_folder, run_opts={"device": "cpu"},
                                       overrides={"decode_opts": {"stpes": 4}})


def test_steps_reach_the_decoder(enhancer):
    """steps=N runs N decoding steps (+ 1 corrector scoring + corrector_steps), per chunk."""
    noisy = noise((1, 4000))
    enhancer.enhance_batch(noisy, seed=0, steps=1)
    assert enhancer.nfe == 1 + 1 + 1
    enhancer.enhance_batch(noisy, seed=0, steps=5, corrector_steps=2)
    assert enhancer.nfe == 5 + 1 + 2
    enhancer.enhance_batch(noisy, seed=0, steps=5, corrector=False)
    assert enhancer.nfe == 5
    enhancer.enhance_batch(noisy, seed=0)  # the model's own default: 3 + 1 + 1
    assert enhancer.nfe == 5


# -- tensors ---------------------------------------------------------------------


def test_enhance_batch_shapes_lengths_and_seed(enhancer):
    noisy = noise((2, 5000))
    lens = torch.tensor([1.0, 0.5])
    a = enhancer.enhance_batch(noisy, lens, seed=3)
    b = enhancer(noisy, lens, seed=3)  # forward = enhance_batch
    c = enhancer.enhance_batch(noisy, lens, seed=4)
    assert a.shape == noisy.shape and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.all(a[1, 2500:] == 0) and a[1, :2500].abs().sum() > 0
    wav, conf = enhancer.enhance_batch(noisy[0], seed=3, return_confidence=True)
    assert wav.shape == (5000,) and conf.shape == (math.ceil(5000 / 200),)
    assert torch.all((conf >= 0) & (conf <= 1))


def test_enhance_batch_at_another_rate_and_steps(enhancer):
    noisy = noise((1, 4410))
    out = enhancer.enhance_batch(noisy, sample_rate=44100, seed=0, steps=1)
    assert out.shape == noisy.shape and torch.isfinite(out).all()


def test_enhance_batch_bad_tensors(enhancer):
    bad = noise((1, 1000))
    bad[0, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        enhancer.enhance_batch(bad)
    bad[0, 10] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        enhancer.enhance_batch(bad)
    with pytest.raises(ValueError, match=r"\[B, S\]"):
        enhancer.enhance_batch(torch.zeros(1, 2, 3))
    empty = enhancer.enhance_batch(torch.zeros(2, 0))
    assert empty.shape == (2, 0)


def test_silence_stays_silence(enhancer):
    wav, conf = enhancer.enhance_batch(torch.zeros(2, 8000), seed=0, return_confidence=True)
    assert torch.equal(wav, torch.zeros(2, 8000)) and torch.all(conf == 1)


# -- files: formats, rates, channels ------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_rate_in_same_rate_out(enhancer, tmp_path, rate):
    path = write(tmp_path / f"in {rate}.wav", noise((1, int(rate * 1.3))).numpy(), rate)
    out = str(tmp_path / f"out {rate}.wav")
    wav = enhancer.enhance_file(path, out, seed=0)
    info = sf.info(out)
    assert info.samplerate == rate and info.frames == int(rate * 1.3) and info.channels == 1
    assert wav.shape == (1, int(rate * 1.3)) and torch.isfinite(wav).all()
    written = torch.from_numpy(sf.read(out, dtype="float32", always_2d=True)[0].T)
    assert torch.allclose(written, wav.clamp(-1, 1), atol=1 / 32768 + 1e-6)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_enhanced_per_channel(enhancer, tmp_path, channels):
    signal = noise((channels, 16000))
    path = write(tmp_path / "multi.wav", signal.numpy(), 16000)
    out = str(tmp_path / "multi out.wav")
    wav, conf = enhancer.enhance_file(path, out, seed=1, return_confidence=True)
    assert wav.shape == (channels, 16000) and conf.shape == (channels, 80)
    assert sf.info(out).channels == channels and torch.isfinite(wav).all()
    # channels are a batch: one model call per chunk, whatever their number
    assert not torch.equal(wav[0], wav[1])


def test_flac_keeps_flac_and_float_subtype_is_kept(enhancer, tmp_path):
    path = write(tmp_path / "a.flac", noise((1, 8000)).numpy(), 16000)
    enhancer.enhance_file(path, str(tmp_path / "o.flac"), seed=0)
    assert sf.info(str(tmp_path / "o.flac")).format == "FLAC"
    path = write(tmp_path / "f.wav", noise((1, 8000)).numpy(), 16000, subtype="FLOAT")
    enhancer.enhance_file(path, str(tmp_path / "of.wav"), seed=0)
    assert sf.info(str(tmp_path / "of.wav")).subtype == "FLOAT"


def test_seed_gives_identical_audio(enhancer, tmp_path):
    path = write(tmp_path / "s.wav", noise((1, 12000)).numpy(), 16000)
    a, b = enhancer.enhance_file(path, seed=7), enhancer.enhance_file(path, seed=7)
    c = enhancer.enhance_file(path, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_clipped_audio(enhancer, tmp_path):
    t = torch.arange(16000) / 16000
    clipped = (3 * torch.sin(2 * math.pi * 220 * t)).clamp(-1, 1)[None]
    path = write(tmp_path / "clip.wav", clipped.numpy(), 16000)
    out = str(tmp_path / "clip out.wav")
    wav = enhancer.enhance_file(path, out, seed=0)
    assert wav.shape == (1, 16000) and torch.isfinite(wav).all()
    assert np.abs(sf.read(out)[0]).max() <= 1.0


def test_all_silence_file(enhancer, tmp_path):
    path = write(tmp_path / "quiet.wav", np.zeros((2, 24000)), 48000)
    out = str(tmp_path / "quiet out.wav")
    wav = enhancer.enhance_file(path, out, seed=0)
    assert wav.shape == (2, 24000) and torch.isfinite(wav).all() and wav.abs().max() == 0
    assert sf.info(out).frames == 24000


def test_names_with_spaces_and_non_ascii(enhancer, tmp_path):
    folder = tmp_path / "dossier réunion 会議"
    folder.mkdir()
    path = write(folder / "enregistrement n°1 — été.wav", noise((1, 4000)).numpy(), 16000)
    out = folder / "sortie" / "résultat ü.wav"
    enhancer.enhance_file(path, str(out), seed=0)
    assert sf.info(str(out)).frames == 4000


# -- files: long audio, chunks and seams ----------------------------------------------


class Passthrough(GenerativeEnhancer):
    """A stand-in enhancer that returns its input (to check chunking exactly)."""

    method = "passthrough"

    def __init__(self, max_frames=None):
        super().__init__()
        self.tokenizer = DebugTokenizer()
        self.limit = max_frames
        self.calls = []

    @property
    def output_tokenizer(self):
        return self.tokenizer

    def max_frames(self):
        return self.limit

    def enhance(self, wav, lens=None, generator=None, prefix=None, **opts):
        self.decode_options(**opts)
        self.calls.append(tuple(wav.shape))
        B, T = wav.shape[0], self.tokenizer.num_frames(wav.shape[1])
        return {"wav": wav.clone(), "tokens": torch.zeros(B, T, 1, dtype=torch.long),
                "confidence": torch.full((B, T), 0.5), "lens": lens, "nfe": 1}


register_method("passthrough", Passthrough)


def passthrough_enhancer(**options):
    hparams = {"method": "passthrough", "chunk_seconds": 1.0, "overlap_seconds": 0.25,
               "crossfade_seconds": 0.05, **options}
    return EnhanceGenerative(modules={"model": Passthrough(options.pop("max_frames", None))},
                             hparams=hparams, run_opts={"device": "cpu"})


def crossfade_zones(plan, num_samples):
    zone = torch.zeros(num_samples, dtype=torch.bool)
    half = plan["crossfade"] // 2
    for start, *_ in plan["chunks"][1:]:
        zone[start - half:start + half] = True
    return zone


def test_equal_power_fades():
    fade_out, fade_in = equal_power_fades(100)
    assert torch.allclose(fade_out ** 2 + fade_in ** 2, torch.ones(100))
    assert torch.all(fade_out[1:] <= fade_out[:-1]) and torch.all(fade_in[1:] >= fade_in[:-1])


def test_chunks_join_without_seam_at_the_model_rate():
    model = passthrough_enhancer()
    t = torch.arange(56000) / 16000
    x = 0.5 * torch.sin(2 * math.pi * 440 * t)[None]
    y, conf = model.enhance_batch(x, return_confidence=True)
    plan = model.chunk_plan(56000, 16000)
    assert len(plan["chunks"]) == 4 and len(model.model.calls) == 4
    zone = crossfade_zones(plan, 56000)
    assert torch.equal(y[0, ~zone], x[0, ~zone])  # exact away from the borders
    # identical signals on both sides of a join pass through (no equal-power bump)
    gain = (y[0, zone] / x[0, zone])[x[0, zone].abs() > 0.05]
    assert gain.numel() and (gain - 1).abs().max() < 1e-5
    assert conf.shape == (1, 280) and torch.all(conf == 0.5)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_chunks_stay_aligned_across_resampling(rate):
    model = passthrough_enhancer(crossfade_seconds=0.0)
    n = int(rate * 3.2)
    t = torch.arange(n) / rate
    x = 0.5 * torch.sin(2 * math.pi * 440 * t)[None]
    y = model.enhance_batch(x, sample_rate=rate)
    assert y.shape == x.shape
    assert len(model.chunk_plan(n, rate)["chunks"]) == 3
    # a one-sample shift of this sine would give an error of about 0.03
    edge = int(0.01 * rate)
    assert (y - x)[:, edge:-edge].abs().max() < 3e-3


def test_windows_fit_the_model_and_chunks_can_be_batched():
    model = passthrough_enhancer(max_frames=60, chunk_seconds=10.0)
    plan = model.chunk_plan(16000 * 5, 16000)
    for start, stop, ws, we in plan["chunks"]:
        assert math.ceil((we - ws) / 200) <= 60
    x = noise((2, 16000 * 5))
    y = model.enhance_batch(x)
    calls = len(model.model.calls)
    assert calls == len(plan["chunks"]) and calls > 1
    batched = model.enhance_batch(x, batch_size=8)  # 4 chunks x 2 channels per call
    assert torch.equal(y, batched) and len(model.model.calls) - calls == math.ceil(calls / 4)


@pytest.mark.slow
def test_long_file_is_streamed_in_bounded_blocks(enhancer, tmp_path, monkeypatch):
    rate, seconds = 16000, 180
    path = str(tmp_path / "long.wav")
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16") as f:
        for i in range(seconds // 10):
            f.write(noise((10 * rate,), seed=i).numpy())
    reads, writes = [], []
    real_read, real_write = AudioFileReader.read, AtomicAudioWriter.write
    monkeypatch.setattr(AudioFileReader, "read",
                        lambda self, a, b: reads.append(b - a) or real_read(self, a, b))
    monkeypatch.setattr(AtomicAudioWriter, "write",
                        lambda self, block: writes.append(block.shape[-1]) or real_write(self, block))
    out = str(tmp_path / "long out.wav")
    result = enhancer.enhance_file(path, out, seed=0, return_audio=False,
                                   return_confidence=True)
    assert result[0] is None and result[1].shape == (1, seconds * 80)
    assert sf.info(out).frames == seconds * rate
    window = enhancer.max_frames() * enhancer.hop_length  # the longest chunk with context
    assert len(reads) > 30 and max(reads) <= window and max(writes) <= window
    enhanced = sf.read(out, dtype="float32")[0]
    assert np.isfinite(enhanced).all() and np.abs(enhanced).max() > 0


def test_context_is_carried_as_prefix_when_the_model_supports_it(monkeypatch):
    mage = tiny_mage(corrector=False)
    log = []
    real = MAGE.enhance

    def logged(self, wav, lens=None, generator=None, prefix=None, **opts):
        out = real(self, wav, lens, generator=generator, prefix=prefix, **opts)
        log.append((prefix, out["tokens"]))
        return out

    monkeypatch.setattr(MAGE, "enhance", logged)
    model = EnhanceGenerative(
        modules={"model": mage}, run_opts={"device": "cpu"},
        hparams={"method": "mage", "chunk_seconds": 1.0, "overlap_seconds": 0.25})
    assert model.carries_context()
    y = model.enhance_batch(noise((1, 16000 * 3)), seed=0, batch_size=8)
    assert y.shape == (1, 48000) and len(log) == 3  # chunks one by one
    assert log[0][0] is None
    # chunk 1: window frames [60, 180); its prefix is chunk 0's frames [60, 80)
    prefix, tokens = log[1]
    prev = log[0][1]
    assert prefix.shape == (1, 20, 1) and torch.equal(prefix[0], prev[0, 60:80])
    assert torch.equal(tokens[0, :20], prev[0, 60:80])
    mage.supports_prefix = False  # an instance that cannot continue: no carry
    assert not model.carries_context()


def test_a_second_method_plugs_in_through_the_registry(tmp_path):
    """The toy copy-noisy method: from_hparams, decoding options, chunks with prefix."""
    folder = write_tiny_model(str(tmp_path / "copy"), "copy-noisy")
    model = EnhanceGenerative.from_hparams(
        source=folder, run_opts={"device": "cpu"},
        overrides={"chunk_seconds": 1.0, "overlap_seconds": 0.25})
    assert isinstance(model.model, CopyNoisyEnhancer) and model.carries_context()
    x = noise((2, 16000 * 3))
    y, conf = model.enhance_batch(x, return_confidence=True)
    tokens = model.model.tokenizer.encode(x)[0]
    reference = model.model.tokenizer.decode(tokens)[:, :x.shape[1]]
    zone = crossfade_zones(model.chunk_plan(x.shape[1], 16000), x.shape[1])
    assert torch.allclose(y[:, ~zone], reference[:, ~zone], atol=1e-5)
    assert torch.all(conf == 1) and model.nfe == 0
    shifted = model.enhance_batch(x, shift=3)
    assert not torch.allclose(shifted, y)
    with pytest.raises(ValueError, match=r"copy-noisy: unknown decoding option 'steps' \(valid: shift\)"):
        model.enhance_batch(x, steps=2)


# -- bad files --------------------------------------------------------------------------


def test_bad_files_give_one_line_errors(enhancer, tmp_path):
    good = write(tmp_path / "good.wav", noise((1, 4000)).numpy(), 16000)
    raw = Path(good).read_bytes()
    cases = {
        "empty": (b"", "empty file"),
        "header": (raw[:30], "not a readable audio file"),
        "text": (b"this is not audio at all\n" * 10, "not a readable audio file"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.wav"
        path.write_bytes(data)
        with pytest.raises(AudioError, match=message) as err:
            enhancer.enhance_file(str(path), str(tmp_path / f"{name} out.wav"))
        assert len(str(err.value).splitlines()) == 1
        assert not os.path.exists(tmp_path / f"{name} out.wav")
    zero = write(tmp_path / "zero.wav", np.zeros((1, 0)), 16000)
    with pytest.raises(AudioError, match="no audio samples"):
        enhancer.enhance_file(zero)
    with pytest.raises(AudioError, match="no such file"):
        enhancer.enhance_file(str(tmp_path / "missing.wav"))
    with pytest.raises(AudioError, match="is a folder"):
        enhancer.enhance_file(str(tmp_path))
    assert leftovers(tmp_path) == []


def test_truncated_wav_gives_its_readable_part(enhancer, tmp_path):
    good = write(tmp_path / "good.wav", noise((1, 8000)).numpy(), 16000)
    raw = Path(good).read_bytes()
    cut = tmp_path / "cut.wav"
    header = len(raw) - 2 * 8000
    cut.write_bytes(raw[:header + 2 * 5000 + 1])  # header + 5000 samples + half a sample
    wav = enhancer.enhance_file(str(cut), str(tmp_path / "cut out.wav"), seed=0)
    assert wav.shape == (1, 5000) and sf.info(str(tmp_path / "cut out.wav")).frames == 5000


def test_nan_samples_are_an_error_and_leave_no_output(enhancer, tmp_path):
    data = noise((1, 8000)).numpy()
    data[0, 4000] = np.nan
    path = write(tmp_path / "nan.wav", data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf") as err:
        enhancer.enhance_file(path, str(tmp_path / "nan out.wav"))
    assert len(str(err.value).splitlines()) == 1
    assert not os.path.exists(tmp_path / "nan out.wav") and leftovers(tmp_path) == []


def test_unreadable_file(enhancer, tmp_path, monkeypatch):
    path = write(tmp_path / "locked.wav", noise((1, 4000)).numpy(), 16000)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.fspath(p) == path
                        else real_access(p, mode))
    with pytest.raises(AudioError, match="not readable"):
        enhancer.enhance_file(path)


def test_unwritable_output_folder(enhancer, tmp_path, monkeypatch):
    path = write(tmp_path / "in.wav", noise((1, 4000)).numpy(), 16000)
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(AudioError, match="cannot write here"):
        enhancer.enhance_file(path, str(blocker / "out.wav"))
    locked = tmp_path / "locked"
    locked.mkdir()

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(AudioError, match="cannot write here \\(Permission denied\\)"):
        enhancer.enhance_file(path, str(locked / "out.wav"))
    assert os.listdir(locked) == []


def test_never_overwrites_input_or_existing_output(enhancer, tmp_path):
    path = write(tmp_path / "in.wav", noise((1, 4000)).numpy(), 16000)
    before = Path(path).read_bytes()
    with pytest.raises(AudioError, match="is the input file"):
        enhancer.enhance_file(path, path, overwrite=True)
    link = tmp_path / "link.wav"
    link.symlink_to(path)
    with pytest.raises(AudioError, match="is the input file"):
        enhancer.enhance_file(path, str(link), overwrite=True)
    assert Path(path).read_bytes() == before
    out = tmp_path / "out.wav"
    out.write_bytes(b"keep me")
    with pytest.raises(AudioError, match="exists"):
        enhancer.enhance_file(path, str(out))
    assert out.read_bytes() == b"keep me"
    enhancer.enhance_file(path, str(out), overwrite=True, seed=0)
    assert sf.info(str(out)).frames == 4000


def test_failure_midway_leaves_no_partial_output(tmp_path, monkeypatch):
    model = passthrough_enhancer()
    path = write(tmp_path / "in.wav", noise((1, 16000 * 4)).numpy(), 16000)
    calls = []

    def fail_second(wav, lens=None, generator=None, prefix=None, **opts):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return Passthrough.enhance(model.model, wav, lens)

    monkeypatch.setattr(model.model, "enhance", fail_second)
    with pytest.raises(RuntimeError, match="out of memory"):
        model.enhance_file(path, str(tmp_path / "out.wav"))
    assert not os.path.exists(tmp_path / "out.wav") and leftovers(tmp_path) == []


def test_a_folder_whose_codec_changed_is_refused(tmp_path):
    """The saved codec fingerprint must match the tokenizer the folder points at."""
    import json

    from speechbrain_gense.models.debug import CopyNoisyEnhancer
    from speechbrain_gense.tokenizers.registry import load_tokenizer

    folder = CopyNoisyEnhancer(load_tokenizer("debug?vocab_size=32")).save(str(tmp_path / "m"))
    info_path = os.path.join(folder, "copy-noisy.json")
    with open(info_path) as f:
        info = json.load(f)
    assert info["codec_fingerprints"]["tokenizer"].startswith("DebugTokenizer-")
    assert CopyNoisyEnhancer.load(folder).tokenizer.vocab_size == 32
    info["tokenizer_spec"] = "debug?vocab_size=32,seed=7"
    with open(info_path, "w") as f:
        json.dump(info, f)
    with pytest.raises(ValueError, match="trained on DebugTokenizer-"):
        CopyNoisyEnhancer.load(folder)
