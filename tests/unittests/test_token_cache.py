"""The token cache (tokenizers/cache.py), with DebugTokenizer."""

import json
import logging
import os
import subprocess
import sys
import threading

import pytest
import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset

from speechbrain_gense.audio import load_audio, save_audio
from speechbrain_gense.data.manifest import read_manifest, write_manifest
from speechbrain_gense.data.pipelines import audio_pipeline
from speechbrain_gense.tokenizers import cache as cache_mod
from speechbrain_gense.tokenizers.cache import (
    TokenCache,
    token_pipeline,
    tokenizer_fingerprint,
)
from speechbrain_gense.tokenizers.debug import DebugTokenizer

LENGTHS = {"u0": 16000, "u1": 8000, "u2": 12345, "u3": 400, "u4": 20000}


def signal(num_samples, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(num_samples, generator=gen) * 0.1).clamp(-1, 1)


def counting(tok):
    """Wraps ``tok.encode`` to count its calls (and the items it encodes)."""
    calls = {"calls": 0, "items": 0}
    encode = tok.encode

    def wrapper(wav, *args, **kwargs):
        calls["calls"] += 1
        calls["items"] += wav.shape[0] if wav.dim() == 2 else 1
        return encode(wav, *args, **kwargs)

    tok.encode = wrapper
    return calls


def direct(tok, wav, sample_rate=None):
    return tok.encode(wav.unsqueeze(0), sample_rate=sample_rate)[0][0]


@pytest.fixture
def corpus(tmp_path):
    """Small wavs (PCM_16 at 16 kHz) and their manifest; returns (manifest, signals)."""
    root = tmp_path / "data"
    entries = {}
    for i, (uid, n) in enumerate(LENGTHS.items()):
        path = root / "clean" / f"{uid}.wav"
        save_audio(path, signal(n, seed=i), 16000)
        entries[uid] = {"clean_wav": str(path), "length": n / 16000}
    manifest = root / "train.json"
    write_manifest(manifest, entries, data_root=root)
    signals = {uid: load_audio(e["clean_wav"])[0] for uid, e in entries.items()}
    return str(manifest), signals


def clean_only_dataset(manifest):
    """A dataset over a clean-only manifest with an empty ``noisy_wav`` (for audio_pipeline).

    The key is added before the dataset is made: SpeechBrain fixes the static
    keys of the pipeline at construction.
    """
    entries = read_manifest(manifest)
    for entry in entries.values():
        entry["noisy_wav"] = ""
    return DynamicItemDataset(entries)


# get: hits and misses --------------------------------------------------------


@pytest.mark.parametrize("k", [1, 4])
def test_get_encodes_once_then_hits(tmp_path, k):
    tok = DebugTokenizer(num_codebooks=k)
    calls = counting(tok)
    cache = TokenCache(tmp_path / "tokens", tok)
    wav = signal(8100)
    loads = []

    def loader():
        loads.append(1)
        return wav

    first = cache.get("spk1/utt 1", loader)
    assert first.shape == (41, k) and first.dtype == torch.long
    assert (cache.hits, cache.misses, calls["calls"], len(loads)) == (0, 1, 1, 1)
    second = cache.get("spk1/utt 1", loader)
    assert torch.equal(first, second) and second.dtype == torch.long
    assert (cache.hits, cache.misses, calls["calls"], len(loads)) == (1, 1, 1, 1)
    assert torch.equal(first, direct(DebugTokenizer(num_codebooks=k), wav))
    # A fresh cache over the same folder and an equal tokenizer hits too.
    other = TokenCache(tmp_path / "tokens", DebugTokenizer(num_codebooks=k))
    assert torch.equal(other.get("spk1/utt 1"), first) and other.hits == 1
    assert cache.stats()["hits"] == 1 and "spk1/utt 1" in cache and "nope" not in cache


def test_file_layout_and_storage(tmp_path):
    tok = DebugTokenizer(num_codebooks=2)
    cache = TokenCache(tmp_path, tok)
    cache.get("a", signal(1600))
    fp = tokenizer_fingerprint(tok)
    assert cache.fingerprint == fp and fp.startswith("DebugTokenizer-")
    path = cache.path("a")
    assert path == os.path.join(str(tmp_path), fp, "a.pt") and os.path.isfile(path)
    assert torch.load(path, weights_only=True).dtype == torch.int16  # compact on disk
    assert os.path.isfile(os.path.join(str(tmp_path), fp, "tokenizer.json"))
    # Unsafe ids get safe, distinct names inside the fingerprint folder.
    names = {cache.path(u) for u in ("x/y", "x_y", "x:y", "../z", ".hidden")}
    assert len(names) == 5
    assert all(os.path.dirname(n) == cache.folder for n in names)


def test_get_sources(tmp_path):
    tok = DebugTokenizer()
    cache = TokenCache(tmp_path / "c", tok)
    wav8 = signal(4000)
    # A (wav, rate) pair at another rate is resampled like encode(sample_rate=...).
    from_pair = cache.get("pair", lambda: (wav8, 8000))
    assert torch.equal(from_pair, direct(tok, wav8, sample_rate=8000))
    # A file path, read at its own rate.
    path = str(tmp_path / "f.wav")
    save_audio(path, wav8, 8000)
    expected = direct(tok, load_audio(path)[0], sample_rate=8000)
    assert torch.equal(cache.get("file", path), expected)
    # A signal given directly, with the cache's default rate.
    assert torch.equal(cache.get("sig", wav8.unsqueeze(0)), direct(tok, wav8))
    cache8 = TokenCache(tmp_path / "c8", tok, sample_rate=8000)
    assert torch.equal(cache8.get("sig", wav8), from_pair)
    # No source on a miss.
    with pytest.raises(KeyError, match="not in the token cache"):
        cache.get("missing")
    with pytest.raises(ValueError, match="mono"):
        cache.get("stereo", torch.zeros(2, 1600))


# Invalidation -----------------------------------------------------------------


def test_other_seed_or_config_never_reads_stale_tokens(tmp_path):
    wav = signal(3200)
    base = TokenCache(tmp_path, DebugTokenizer(seed=0))
    tokens = base.get("u", wav)
    for other_tok in (DebugTokenizer(seed=1), DebugTokenizer(vocab_size=32),
                      DebugTokenizer(hop=160), DebugTokenizer(num_codebooks=2)):
        calls = counting(other_tok)
        other = TokenCache(tmp_path, other_tok)
        assert other.fingerprint != base.fingerprint
        assert "u" not in other
        got = other.get("u", wav)
        assert (other.misses, other.hits, calls["calls"]) == (1, 0, 1)
        assert got.shape[1] == other_tok.num_codebooks
    assert torch.equal(base.get("u"), tokens)  # the first tokenizer's file is intact
    assert len([d for d in os.listdir(tmp_path) if d.startswith("DebugTokenizer-")]) == 5


def test_config_only_change_and_refresh(tmp_path):
    # Same tensors, other config (scale feeds the buffers, dim too): other folder.
    a, b = DebugTokenizer(), DebugTokenizer()
    b.seed = 99  # the config differs although the buffers are the same
    assert tokenizer_fingerprint(a) != tokenizer_fingerprint(b)
    # Weights changed in place (e.g. loaded by a Pretrainer after the cache was made).
    tok = DebugTokenizer()
    cache = TokenCache(tmp_path, tok)
    before = cache.fingerprint
    tok.codebooks.mul_(2)
    assert cache.fingerprint == before  # computed once ...
    assert cache.refresh() != before  # ... until refreshed


# Atomic writes ---------------------------------------------------------------


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    cache = TokenCache(tmp_path, DebugTokenizer())
    cache.get("kept", signal(1600))
    kept = cache.load("kept")

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.save("new", torch.zeros(5, 1, dtype=torch.long))
    with pytest.raises(OSError, match="disk full"):
        cache.save("kept", torch.zeros(5, 1, dtype=torch.long))
    monkeypatch.undo()
    assert "new" not in cache
    assert torch.equal(cache.load("kept"), kept)  # not clobbered
    assert sorted(os.listdir(cache.folder)) == ["kept.pt", "tokenizer.json"]  # no temp left


def test_concurrent_writers_and_readers(tmp_path):
    cache = TokenCache(tmp_path, DebugTokenizer(num_codebooks=4, vocab_size=1024))
    tokens = torch.randint(0, 1024, (4000, 4))
    bad, stop = [], threading.Event()

    def writer():
        for _ in range(30):
            cache.save("u", tokens)

    def reader():
        while not stop.is_set():
            if os.path.exists(cache.path("u")):
                got = torch.load(cache.path("u"), weights_only=True)  # raises if partial
                if not torch.equal(got.long(), tokens):
                    bad.append(got)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not bad
    assert [f for f in os.listdir(cache.folder) if f.startswith(".tmp")] == []


def test_unreadable_file_is_recomputed(tmp_path, caplog):
    cache = TokenCache(tmp_path, DebugTokenizer())
    wav = signal(1600)
    tokens = cache.get("u", wav)
    with open(cache.path("u"), "wb") as f:
        f.write(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = cache.get("u", wav)
    assert torch.equal(again, tokens) and cache.misses == 2
    assert "unreadable" in caplog.text
    with pytest.raises(ValueError, match=r"\[T, 1\]"):
        cache.save("v", torch.zeros(3, 2))


# build -----------------------------------------------------------------------


def test_build_manifest(tmp_path, corpus):
    manifest, signals = corpus
    tok = DebugTokenizer(num_codebooks=2)
    calls = counting(tok)
    cache = TokenCache(tmp_path / "tokens", tok)
    stats = cache.build(manifest, batch_size=2, progress=False)
    assert stats == {"total": 5, "cached": 0, "encoded": 5}
    assert calls["calls"] == 3 and calls["items"] == 5  # batched
    ref = DebugTokenizer(num_codebooks=2)
    for uid, wav in signals.items():
        got = cache.get(uid)
        assert got.shape == (ref.num_frames(LENGTHS[uid]), 2)
        assert torch.equal(got, direct(ref, wav))
    assert cache.hits == 5
    # A second build encodes nothing.
    assert cache.build(manifest, progress=False) == {"total": 5, "cached": 5, "encoded": 0}
    assert calls["calls"] == 3


def test_build_dict_and_dataset(tmp_path, corpus):
    manifest, signals = corpus
    entries = read_manifest(manifest)
    del entries["u4"]
    cache = TokenCache(tmp_path / "a", DebugTokenizer())
    assert cache.build(entries, progress=False)["encoded"] == 4
    with pytest.raises(KeyError, match="noisy_wav"):
        cache.build(entries, key="noisy_wav", progress=False)
    # A dataset, by static path field ...
    data = clean_only_dataset(manifest)
    assert cache.build(data, progress=False) == {"total": 5, "cached": 4, "encoded": 1}
    # ... or by a dynamic item giving the signal.
    data.add_dynamic_item(audio_pipeline())
    other = TokenCache(tmp_path / "b", DebugTokenizer())
    assert other.build(data, key="clean_sig", batch_size=3, progress=False)["encoded"] == 5
    for uid in signals:
        assert torch.equal(other.get(uid), cache.get(uid))


def test_build_splits_ids_over_ranks(tmp_path, corpus, monkeypatch):
    manifest, _ = corpus
    barriers = []
    monkeypatch.setattr(cache_mod.torch.distributed, "barrier", lambda: barriers.append(1))
    shares = []
    for rank in range(2):
        monkeypatch.setattr(cache_mod, "_dist", lambda rank=rank: (rank, 2))
        cache = TokenCache(tmp_path, DebugTokenizer())
        before = {uid for uid in LENGTHS if uid in cache}
        stats = cache.build(manifest, progress=False)
        shares.append({uid for uid in LENGTHS if uid in cache} - before)
        assert stats["encoded"] == len(shares[-1])
    assert shares == [{"u0", "u2", "u4"}, {"u1", "u3"}]
    assert len(barriers) == 2


# Dynamic item ----------------------------------------------------------------


def test_token_pipeline_matches_direct_encode(tmp_path, corpus):
    manifest, signals = corpus
    tok = DebugTokenizer(num_codebooks=4)
    cache = TokenCache(tmp_path / "tokens", tok)
    data = DynamicItemDataset.from_json(manifest, replacements={
        "data_root": os.path.dirname(manifest)})
    data.add_dynamic_item(token_pipeline(cache))
    data.set_output_keys(["id", "clean_tokens"])
    items = [data[i] for i in range(len(data))]
    assert cache.misses == 5
    ref = DebugTokenizer(num_codebooks=4)
    for item in items:
        assert torch.equal(item["clean_tokens"], direct(ref, signals[item["id"]]))
    again = [data[i]["clean_tokens"] for i in range(len(data))]
    assert cache.hits == 5 and all(torch.equal(a, b["clean_tokens"])
                                   for a, b in zip(again, items))
    batch = PaddedBatch(items)
    tokens, lens = batch.clean_tokens
    assert tokens.shape == (5, 100, 4) and tokens.dtype == torch.long
    assert lens.tolist() == pytest.approx([80 / 100, 40 / 100, 62 / 100, 2 / 100, 1.0])


def test_token_pipeline_from_signal(tmp_path, corpus):
    manifest, signals = corpus
    cache = TokenCache(tmp_path / "tokens", DebugTokenizer())
    data = clean_only_dataset(manifest)
    data.add_dynamic_item(audio_pipeline())
    data.add_dynamic_item(token_pipeline(cache, takes="clean_sig", provides="tok"))
    data.set_output_keys(["id", "tok"])
    for item in data:
        assert torch.equal(item["tok"], direct(DebugTokenizer(), signals[item["id"]]))


_DDP_WORKER = """
import json, os, sys, torch
from speechbrain_gense.tokenizers.cache import TokenCache
from speechbrain_gense.tokenizers.debug import DebugTokenizer
rank, world, init_file, folder, entries, out = sys.argv[1:]
rank, world = int(rank), int(world)
torch.distributed.init_process_group("gloo", init_method="file://" + init_file,
                                     rank=rank, world_size=world)
entries = json.load(open(entries))
cache = TokenCache(folder, DebugTokenizer())
stats = cache.build(entries, batch_size=2, progress=False)
stats["complete"] = all(uid in cache for uid in entries)  # after the barrier
json.dump(stats, open(os.path.join(out, f"{rank}.json"), "w"))
torch.distributed.destroy_process_group()
"""


def test_build_under_real_ddp(tmp_path, corpus):
    """Two gloo ranks in subprocesses (light imports: a few seconds)."""
    manifest, _ = corpus
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps(read_manifest(manifest)))
    world = 2
    procs = [subprocess.Popen([sys.executable, "-c", _DDP_WORKER, str(rank), str(world),
                               str(tmp_path / "init"), str(tmp_path / "tokens"),
                               str(entries), str(tmp_path)])
             for rank in range(world)]
    try:
        codes = [p.wait(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0] * world
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]
    assert [r["encoded"] for r in results] == [3, 2]
    assert all(r["complete"] for r in results)


def test_an_id_reused_by_another_dataset_is_re_encoded_not_served(tmp_path, caplog):
    tok = DebugTokenizer(num_codebooks=2)
    cache = TokenCache(tmp_path / "tokens", tok)
    first, second = tmp_path / "a" / "speech_0.wav", tmp_path / "b" / "speech_0.wav"
    save_audio(first, signal(8000, seed=1), 16000)
    save_audio(second, signal(12000, seed=2), 16000)
    want = {p: direct(tok, load_audio(p)[0]) for p in (first, second)}
    old = cache.get("speech_0", str(first))
    assert torch.equal(old, want[first])
    # A new manifest with the same id (another output of another dataset): re-encoded.
    calls = counting(tok)
    with caplog.at_level(logging.WARNING):
        new = cache.get("speech_0", str(second))
    assert torch.equal(new, want[second]) and calls["calls"] == 1 and cache.stale == 1
    assert "was encoded from" in caplog.text and "re-encoding" in caplog.text
    assert torch.equal(cache.get("speech_0", str(second)), new) and calls["calls"] == 1
    # build() checks the same way: the first file's manifest encodes again, once.
    write_manifest(tmp_path / "a.json", {"speech_0": {"clean_wav": str(first), "length": 0.5}})
    assert cache.build(str(tmp_path / "a.json"), progress=False)["encoded"] == 1
    assert cache.build(str(tmp_path / "a.json"), progress=False)["encoded"] == 0
    assert torch.equal(cache.load("speech_0"), want[first])
    # Files written before sources were recorded (a bare tensor) are still served.
    torch.save(want[second].to(torch.int16), cache.path("legacy"))
    assert torch.equal(cache.get("legacy", str(second)), want[second])
    # Signals handed over in memory have no source: served by id.
    assert torch.equal(cache.get("speech_0", signal(100)), want[first])
