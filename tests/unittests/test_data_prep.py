"""Tests of the dataset preparation scripts (recipes/DNS, recipes/LibriSpeech-noisy).

They run on tiny fake trees (tests/fake_trees.py) that mirror the real
layouts. The embedded-corpus path (no data folder) runs against
``fake_build_corpus``, a stand-in with the documented ``build_corpus``
interface, injected with monkeypatch: these tests do not build the real
TTS corpus.
"""

import json
import logging
import os
import subprocess
import sys
import types

import pytest
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fake_trees  # noqa: E402

from speechbrain_gense.data import prepare_utils  # noqa: E402
from speechbrain_gense.data.manifest import read_manifest  # noqa: E402

dns = fake_trees.load_script("recipes/DNS/dns_prepare.py")
libri = fake_trees.load_script("recipes/LibriSpeech-noisy/librispeech_noisy_prepare.py")


keep = prepare_utils.keep_fields


def raw(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def dns_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("DNS-Challenge"))
    return root, fake_trees.make_dns_tree(root)


@pytest.fixture(scope="module")
def libri_tree(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    words = fake_trees.make_librispeech_tree(root)
    noise = fake_trees.make_signal_folder(os.path.join(root, "noise"), 5)
    rirs = fake_trees.make_signal_folder(os.path.join(root, "rirs"), 3, kind="rir", prefix="rir")
    return {"root": root, "words": words, "noise": os.path.dirname(noise[0]),
            "rir": os.path.dirname(rirs[0])}


@pytest.fixture(scope="module")
def libri_prepared(libri_tree, tmp_path_factory):
    before = fake_trees.snapshot(libri_tree["root"])
    save = str(tmp_path_factory.mktemp("libri_save"))
    paths = libri.prepare_librispeech_noisy(
        libri_tree["root"], save, noise_folder=libri_tree["noise"],
        rir_folder=libri_tree["rir"], seed=7)
    assert fake_trees.snapshot(libri_tree["root"]) == before, "data_folder was written to"
    return save, paths


@pytest.fixture
def fake_corpus(monkeypatch):
    """Stands in for speechbrain_gense.data.corpus (clearly fake: tests/fake_trees.py)."""
    module = types.ModuleType("speechbrain_gense.data.corpus")
    module.build_corpus = fake_trees.fake_build_corpus
    monkeypatch.setitem(sys.modules, "speechbrain_gense.data.corpus", module)
    fake_trees.fake_build_corpus.calls = 0
    return module


# ---------------------------------------------------------------- shared helpers


def test_split_items_is_deterministic_and_disjoint():
    items = [f"n{i}" for i in range(20)]
    kept, held = prepare_utils.split_items(items, 0.2, seed=3)
    assert (kept, held) == prepare_utils.split_items(reversed(items), 0.2, seed=3)
    assert len(held) == 4 and not set(kept) & set(held) and sorted(kept + held) == sorted(items)
    assert prepare_utils.split_items(items, 0.2, seed=4) != (kept, held)
    assert len(prepare_utils.split_items(["a", "b"], 0.01, seed=0)[1]) == 1


def test_utterance_seed_is_stable_across_processes():
    code = ("from speechbrain_gense.data.prepare_utils import utterance_seed;"
            "print(utterance_seed(1234, '1089-134686-0000'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=fake_trees.REPO, env={**os.environ, "PYTHONHASHSEED": "99"})
    assert int(out.stdout) == prepare_utils.utterance_seed(1234, "1089-134686-0000")


# ---------------------------------------------------------------- DNS


def test_dns_manifests(dns_tree, tmp_path, caplog):
    root, tree = dns_tree
    before = fake_trees.snapshot(root)
    with caplog.at_level(logging.WARNING):
        paths = dns.prepare_dns(root, str(tmp_path), valid_ratio=0.2, seed=1)
    assert fake_trees.snapshot(root) == before, "data_folder was written to"
    assert paths["data_root"] == os.path.abspath(root)
    assert set(paths) == {"data_root", "train", "valid", "noise_train", "rir_train",
                          "test_no_reverb", "test_with_reverb", "test_real"}
    # {data_root} placeholders in the files, filled back by read_manifest.
    assert all(e["clean_wav"].startswith("{data_root}/datasets/clean/")
               for e in raw(paths["train"]).values())
    train, valid = (read_manifest(paths[n], data_root=root) for n in ("train", "valid"))

    # Clean speech: the 48 kHz file is skipped, the crema_d one kept; 11 files, 2 held out.
    stems = {os.path.splitext(n)[0] for n in tree["clean"]} | {"1001_DFA_ANG_XX"}
    assert set(train) | set(valid) == stems and not set(train) & set(valid)
    assert len(valid) == 2
    assert "resampled_48k" in caplog.text
    for uid, e in {**train, **valid}.items():
        assert set(e) == {"clean_wav", "length", "speaker"}
        assert os.path.isfile(e["clean_wav"]) and e["length"] == pytest.approx(0.3)
    both = {**train, **valid}
    assert both["book_00000_chp_0009_reader_06709_3"]["speaker"] == "reader_06709"
    assert both["1001_DFA_ANG_XX"]["speaker"] == "unknown"

    noise = read_manifest(paths["noise_train"], data_root=root)
    assert sorted(noise) == sorted(os.path.splitext(n)[0] for n in tree["noises"])
    assert all(e["length"] == pytest.approx(0.3) for e in noise.values())
    rir = read_manifest(paths["rir_train"], data_root=root)
    assert len(rir) == 3 and all("noise" not in os.path.basename(e["wav"]) for e in rir.values())
    assert "SLR26_simulated_rirs_16k_largeroom_Room001_Room001-00001" in rir  # stems collide

    for cond, degradation in (("no_reverb", "noise"), ("with_reverb", "noise+reverb")):
        test = read_manifest(paths[f"test_{cond}"], data_root=root)
        assert sorted(test) == sorted(f"{cond}_fileid_{i}" for i in tree["tests"][cond])
        for fid, name in tree["tests"][cond].items():
            e = test[f"{cond}_fileid_{fid}"]
            assert os.path.basename(e["noisy_wav"]) == name
            assert os.path.basename(e["clean_wav"]) == f"clean_fileid_{fid}.wav"
            assert e["degradation"] == degradation and e["length"] == pytest.approx(0.3)
    assert read_manifest(paths["test_no_reverb"], root)["no_reverb_fileid_12"]["snr"] == 5.0
    assert read_manifest(paths["test_no_reverb"], root)["no_reverb_fileid_158"]["snr"] == -5.0
    assert "fileid_99" in caplog.text and "clean_fileid_77" in caplog.text  # unpaired

    real = read_manifest(paths["test_real"], data_root=root)
    assert sorted(real) == sorted("real_" + os.path.splitext(n)[0] for n in tree["real"])
    assert all(set(e) == {"noisy_wav", "length"} for e in real.values())


def test_dns_accepts_datasets_folder_and_skips(dns_tree, tmp_path, monkeypatch):
    root, _ = dns_tree
    save = str(tmp_path)
    paths = dns.prepare_dns(os.path.join(root, "datasets"), save)
    assert raw(paths["train"])
    stamp = fake_trees.snapshot(save)

    def fail(*args, **kwargs):
        raise AssertionError("manifests were rewritten")

    monkeypatch.setattr(prepare_utils, "write_manifest", fail)
    again = dns.prepare_dns(os.path.join(root, "datasets"), save)  # same options: skipped
    assert again == paths and fake_trees.snapshot(save) == stamp
    assert dns.prepare_dns(None, save, skip_prep=True)["train"] == paths["train"]
    with pytest.raises(AssertionError, match="rewritten"):  # other options: prepared again
        dns.prepare_dns(os.path.join(root, "datasets"), save, seed=99)


def test_dns_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="DNS data folder not found"):
        dns.prepare_dns(str(tmp_path / "nope"), str(tmp_path / "save"))
    (tmp_path / "empty" / "datasets").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="datasets/clean"):
        dns.prepare_dns(str(tmp_path / "empty"), str(tmp_path / "save"))


def test_dns_embedded_corpus(fake_corpus, tmp_path):
    save = str(tmp_path)
    paths = dns.prepare_dns(None, save, seed=5, corpus_opts={"minutes": 0.5})
    assert paths["data_root"] == os.path.abspath(save)
    corpus = raw(os.path.join(save, "corpus", "corpus_options.json"))
    assert corpus == {"minutes": 0.5, "seed": 5}
    train = raw(paths["train"])
    assert len(train) == 4 and all(
        e["clean_wav"].startswith("{data_root}/corpus/clean/train/") for e in train.values())
    assert set(read_manifest(paths["valid"])["valid_000"]) == {"clean_wav", "length", "speaker"}
    no_rev, rev = read_manifest(paths["test_no_reverb"]), read_manifest(paths["test_with_reverb"])
    assert sorted(no_rev) == ["test_000", "test_002"] and sorted(rev) == ["test_001", "test_003"]
    assert {e["degradation"] for e in rev.values()} == {"noise+reverb"}
    assert all(os.path.isfile(e["noisy_wav"]) for e in rev.values())
    assert len(read_manifest(paths["noise_train"])) == 2 and "test_real" not in paths
    dns.prepare_dns(None, save, seed=5, corpus_opts={"minutes": 0.5})
    assert fake_trees.fake_build_corpus.calls == 1  # second run skipped


def test_dns_cli(dns_tree, tmp_path):
    root, _ = dns_tree
    script = os.path.join(fake_trees.REPO, "recipes", "DNS", "dns_prepare.py")
    env = {**os.environ, "PYTHONPATH": fake_trees.REPO}
    out = subprocess.run([sys.executable, script, "--data_folder", root,
                          "--save_folder", str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert os.path.isfile(tmp_path / "test_with_reverb.json") and "Wrote" in out.stderr


# ---------------------------------------------------------------- LibriSpeech


def test_libri_clean_manifests(libri_tree, libri_prepared):
    save, paths = libri_prepared
    root = libri_tree["root"]
    assert paths["data_root"] == os.path.abspath(root)
    assert all(e["clean_wav"].startswith("{data_root}/LibriSpeech/train-clean-100/")
               for e in raw(paths["train"]).values())
    train = read_manifest(paths["train"], data_root=root)
    assert sorted(train) == sorted(libri_tree["words"]["train-clean-100"])
    for uid, e in train.items():
        assert set(e) == {"clean_wav", "length", "words", "speaker"}
        assert e["words"] == libri_tree["words"]["train-clean-100"][uid]
        assert e["speaker"] == uid.split("-")[0] and os.path.isfile(e["clean_wav"])
    assert train["103-1240-0002"]["length"] == pytest.approx(0.4)
    valid = read_manifest(paths["valid"], data_root=root)
    assert sorted(valid) == sorted(libri_tree["words"]["dev-clean"])


def test_libri_noise_split_and_test_mixtures(libri_tree, libri_prepared):
    save, paths = libri_prepared
    noise_train, noise_test = (read_manifest(paths[n]) for n in ("noise_train", "noise_test"))
    assert len(noise_train) == 4 and len(noise_test) == 1
    assert not set(noise_train) & set(noise_test)
    assert not {e["wav"] for e in noise_train.values()} & {e["wav"] for e in noise_test.values()}
    rir_train, rir_test = (read_manifest(paths[n]) for n in ("rir_train", "rir_test"))
    assert len(rir_train) == 2 and len(rir_test) == 1 and not set(rir_train) & set(rir_test)

    test = read_manifest(paths["test-clean"], data_root=libri_tree["root"])
    assert sorted(test) == sorted(libri_tree["words"]["test-clean"])
    raw_test = raw(paths["test-clean"])
    for uid, e in test.items():
        assert set(libri.TEST_FIELDS) <= set(e) <= set(libri.TEST_FIELDS) | {"gain"}
        assert e["noisy_wav"] == os.path.join(save, "noisy", "test-clean", f"{uid}.wav")
        assert raw_test[uid]["clean_wav"].startswith("{data_root}/LibriSpeech/test-clean/")
        assert e["words"] == libri_tree["words"]["test-clean"][uid]
        info, clean = sf.info(e["noisy_wav"]), sf.info(e["clean_wav"])
        assert info.samplerate == 16000 and info.frames == clean.frames
        assert e["degradation"] in ("noise", "reverb", "noise+reverb")
        if e["noise"] is not None:
            assert e["noise"] in noise_test and -5 <= e["snr"] <= 20
        if e["rir"] is not None:
            assert e["rir"] in rir_test


def test_libri_mixtures_are_deterministic(libri_tree, libri_prepared, tmp_path):
    save, paths = libri_prepared
    args = dict(noise_folder=libri_tree["noise"], rir_folder=libri_tree["rir"],
                train_splits=["dev-clean"])
    same = libri.prepare_librispeech_noisy(
        os.path.join(libri_tree["root"], "LibriSpeech"), str(tmp_path / "a"), seed=7, **args)
    other = libri.prepare_librispeech_noisy(libri_tree["root"], str(tmp_path / "b"), seed=8, **args)
    folder = lambda s: os.path.join(s, "noisy", "test-clean")  # noqa: E731
    names = sorted(os.listdir(folder(save)))
    assert names == sorted(os.listdir(folder(str(tmp_path / "a")))) and len(names) == 5

    def read(s, n):
        with open(os.path.join(folder(s), n), "rb") as f:
            return f.read()

    assert all(read(save, n) == read(str(tmp_path / "a"), n) for n in names)
    assert any(read(save, n) != read(str(tmp_path / "b"), n) for n in names)
    fields = ("snr", "degradation", "noise", "rir", "length", "words")
    assert keep(raw(same["test-clean"]), fields) == keep(raw(paths["test-clean"]), fields)
    assert keep(raw(other["test-clean"]), fields) != keep(raw(paths["test-clean"]), fields)


def test_libri_skips_and_rewrites(libri_tree, libri_prepared, monkeypatch):
    save, paths = libri_prepared
    stamp = fake_trees.snapshot(save)
    monkeypatch.setattr(libri, "write_mixtures", lambda *a, **k: pytest.fail("mixed again"))
    again = libri.prepare_librispeech_noisy(
        libri_tree["root"], save, noise_folder=libri_tree["noise"],
        rir_folder=libri_tree["rir"], seed=7)
    assert again == paths and fake_trees.snapshot(save) == stamp
    assert libri.prepare_librispeech_noisy(libri_tree["root"], save, skip_prep=True) == paths


def test_libri_warnings_and_errors(libri_tree, tmp_path, caplog):
    root, noise = libri_tree["root"], libri_tree["noise"]
    with caplog.at_level(logging.WARNING):
        entries = libri._split_entries(os.path.join(root, "LibriSpeech"), "train-clean-100", 16000)
    assert "103-1240-9999" not in entries and "103-1240-9999.flac" in caplog.text
    with pytest.raises(FileNotFoundError, match="LibriSpeech data folder not found"):
        libri.prepare_librispeech_noisy(str(tmp_path / "nope"), str(tmp_path / "s"), noise)
    with pytest.raises(FileNotFoundError, match="'train-other-500'.*found: .*dev-clean"):
        libri.prepare_librispeech_noisy(root, str(tmp_path / "s"), noise,
                                        train_splits=["train-other-500"])
    with pytest.raises(ValueError, match="needs noise"):
        libri.prepare_librispeech_noisy(root, str(tmp_path / "s"))
    one = fake_trees.make_signal_folder(str(tmp_path / "one"), 1)
    with pytest.raises(ValueError, match="at least 2"):
        libri.prepare_librispeech_noisy(root, str(tmp_path / "s"), os.path.dirname(one[0]))
    with pytest.raises(ValueError, match="inside the data folder"):
        libri.prepare_librispeech_noisy(root, os.path.join(root, "LibriSpeech", "out"), noise)


def test_libri_embedded_corpus(fake_corpus, tmp_path):
    save = str(tmp_path)
    paths = libri.prepare_librispeech_noisy(None, save, seed=3)
    assert set(paths) == {"data_root", "train", "valid", "test-clean", "noise_train",
                          "noise_test", "rir_train", "rir_test"}
    train = read_manifest(paths["train"])
    assert train["train_001"]["words"] == "HELLO TRAIN NUMBER 1"
    assert train["train_001"]["speaker"] == "espeak_en"
    test = read_manifest(paths["test-clean"])
    assert set(libri.TEST_FIELDS) <= set(test["test_001"])
    assert test["test_001"]["rir"] == "rir_test_1" and test["test_000"]["rir"] is None
    assert os.path.isfile(test["test_001"]["noisy_wav"])
    noise_test = raw(paths["noise_test"])["noise_test_0"]["wav"]
    assert noise_test.startswith("{data_root}/corpus/noise/test/")


# ---------------------------------------------------------------- real embedded corpus


def _have_tts():
    from speechbrain_gense.data.voices import VOICES, check_engines

    try:
        check_engines(list(VOICES.values()))
        return True
    except RuntimeError:
        return False


@pytest.mark.skipif(not _have_tts(), reason="Debian TTS voices not installed (make setup)")
def test_real_embedded_corpus(tmp_path):
    opts = {"minutes": 0.3, "progress": False}
    d = dns.prepare_dns(None, str(tmp_path / "dns"), corpus_opts=opts)
    test = {**read_manifest(d["test_no_reverb"]), **read_manifest(d["test_with_reverb"])}
    assert test and all(os.path.isfile(e["noisy_wav"]) for e in test.values())
    assert all(bool(e["rir"]) for e in read_manifest(d["test_with_reverb"]).values())
    assert read_manifest(d["noise_train"]) and read_manifest(d["rir_train"])
    lp = libri.prepare_librispeech_noisy(None, str(tmp_path / "libri"), corpus_opts=opts)
    train = read_manifest(lp["train"])
    assert train and all(set(e) == set(libri.CLEAN_FIELDS) and e["words"] for e in train.values())
    test = read_manifest(lp["test-clean"])
    assert test and all(set(libri.TEST_FIELDS) <= set(e) for e in test.values())
    assert not set(read_manifest(lp["noise_train"])) & set(read_manifest(lp["noise_test"]))


def test_mixtures_are_made_on_one_torch_thread(tmp_path):
    """Multi-threaded reductions round differently: mixing runs on one thread
    whatever the caller's setting (and the setting is restored)."""
    import torch

    from speechbrain_gense.audio import save_audio
    from speechbrain_gense.data.prepare_utils import write_mixtures

    seen = []

    class Recorder:
        def __call__(self, clean, generator):
            seen.append(torch.get_num_threads())
            return clean * 0.5, {"snr": None, "degradation": "none", "noise": None,
                                 "rir": None}

    save_audio(str(tmp_path / "c.wav"), torch.randn(1600) * 0.1, 16000)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        write_mixtures({"u": {"clean_wav": str(tmp_path / "c.wav")}}, str(tmp_path / "n"),
                       Recorder(), seed=1)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
