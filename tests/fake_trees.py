"""Tiny fake copies of real dataset layouts, for testing the preparation scripts.

Every tree mirrors the real file and folder names (DNS-Challenge repository,
LibriSpeech, the embedded corpus) with 0.3 s signals, so that a preparation
script runs on it in well under a second.
"""

import importlib.util
import json
import os

import numpy as np
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000


def load_script(relpath, name=None):
    """Imports a recipe script (recipe folders are not packages) from its repo path.

    Example
    -------
    >>> dns = load_script("recipes/DNS/dns_prepare.py")  # doctest: +SKIP
    """
    path = os.path.join(REPO, relpath)
    name = name or os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_signal(path, seconds=0.3, sample_rate=SR, seed=0, kind="tone", channels=1):
    """Writes a short wav/flac (format from the extension): a tone, noise or an RIR."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    if kind == "tone":
        x = 0.3 * np.sin(2 * np.pi * (200 + 50 * (seed % 10)) * t) + 0.01 * rng.standard_normal(n)
    elif kind == "noise":
        x = 0.2 * rng.standard_normal(n)
    elif kind == "rir":
        x = rng.standard_normal(n) * np.exp(-t / 0.03) * 0.1
        x[int(0.002 * sample_rate)] = 1.0
    else:
        raise ValueError(kind)
    x = np.stack([x] * channels, axis=1) if channels > 1 else x
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, x.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def make_dns_tree(root):
    """A DNS-Challenge repository: ``root/datasets/{clean,noise,impulse_responses,test_set}``.

    Returns a dict describing what the tree holds (for assertions).
    """
    d = os.path.join(root, "datasets")
    clean = [f"book_{b:05d}_chp_{c:04d}_reader_{r:05d}_{i}.wav"
             for b, c, r in ((0, 9, 6709), (2, 5, 11980)) for i in range(5)]
    for i, name in enumerate(clean):
        write_signal(os.path.join(d, "clean", name), seed=i)
    # ICASSP 2021 puts more speech in sub folders.
    crema = os.path.join(d, "clean", "emotional_speech", "crema_d")
    write_signal(os.path.join(crema, "1001_DFA_ANG_XX.wav"), seed=30)
    write_signal(os.path.join(d, "clean", "resampled_48k.wav"), sample_rate=48000, seed=31)
    noises = ["--9VR_F7CtY.wav", "Door_Knock_1.wav", "AirConditioner_3.wav"]
    for i, name in enumerate(noises):
        write_signal(os.path.join(d, "noise", name), seed=40 + i, kind="noise")
    ir = os.path.join(d, "impulse_responses")
    rirs = [os.path.join("SLR26", "simulated_rirs_16k", room, "Room001", "Room001-00001.wav")
            for room in ("largeroom", "smallroom")]
    rirs.append(os.path.join("SLR28", "RIRS_NOISES", "real_rirs_isotropic_noises",
                             "RVB2014_type1_rir_largeroom1_far_angla.wav"))
    for i, rel in enumerate(rirs):
        write_signal(os.path.join(ir, rel), seconds=0.1, seed=50 + i, kind="rir")
    not_rirs = [os.path.join("SLR28", "RIRS_NOISES", "real_rirs_isotropic_noises",
                             "RVB2014_type1_noise_largeroom1_1.wav"),
                os.path.join("SLR28", "RIRS_NOISES", "pointsource_noises",
                             "noise-free-sound-0001.wav")]
    for i, rel in enumerate(not_rirs):
        write_signal(os.path.join(ir, rel), seed=60 + i, kind="noise")
    syn = os.path.join(d, "test_set", "synthetic")
    tests = {
        "no_reverb": {0: "clnsp126_3Wjw0nadnM4_snr15_tl-22_fileid_0.wav",
                      12: "clnsp1_train_69005_1_snr5_tl-21_fileid_12.wav",
                      158: "clnsp44_wind_97396_2_snr-5_tl-26_fileid_158.wav"},
        "with_reverb": {3: "clnsp238_washer_389769_1_snr11_tl-20_fileid_3.wav",
                        20: "clnsp461_bus_84241_6_snr0_tl-24_fileid_20.wav"},
    }
    for cond, files in tests.items():
        for fid, name in files.items():
            write_signal(os.path.join(syn, cond, "noisy", name), seed=fid, kind="noise")
            write_signal(os.path.join(syn, cond, "clean", f"clean_fileid_{fid}.wav"), seed=fid)
    # Unpaired: a noisy file without its clean reference and a lone clean file.
    write_signal(os.path.join(syn, "no_reverb", "noisy", "clnsp9_bus_1_snr7_tl-20_fileid_99.wav"))
    write_signal(os.path.join(syn, "with_reverb", "clean", "clean_fileid_77.wav"))
    real = ["audioset_realrec_babycry_2x43exdQ5bo.wav", "ms_realrec_headset_cafe_spk2_3.wav"]
    for i, name in enumerate(real):
        write_signal(os.path.join(d, "test_set", "real_recordings", name),
                     seed=70 + i, kind="noise")
    return {"clean": clean, "noises": noises, "rirs": rirs, "tests": tests, "real": real,
            "unpaired": ["no_reverb/99", "with_reverb/77"]}


LIBRI_SPLITS = {  # split: {speaker: {chapter: number of utterances}}
    "train-clean-100": {"103": {"1240": 3}, "1034": {"121119": 2}},
    "dev-clean": {"84": {"121123": 2}},
    "test-clean": {"1089": {"134686": 3}, "121": {"121726": 2}},
}


def make_librispeech_tree(root, splits=LIBRI_SPLITS, orphan=True):
    """``root/LibriSpeech/<split>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` + ``.trans.txt``.

    With ``orphan``, one extra flac of the first split has no transcript line.
    Returns ``{split: {utt_id: words}}``.
    """
    libri = os.path.join(root, "LibriSpeech")
    out = {}
    for s, (split, speakers) in enumerate(splits.items()):
        out[split] = {}
        for spk, chapters in speakers.items():
            for chap, n in chapters.items():
                folder = os.path.join(libri, split, spk, chap)
                lines = []
                for u in range(n):
                    uid = f"{spk}-{chap}-{u:04d}"
                    words = f"WORD{u} OF SPEAKER {spk} IN {split.upper()}"
                    write_signal(os.path.join(folder, f"{uid}.flac"),
                                 seconds=0.3 + 0.05 * u, seed=100 * s + u)
                    lines.append(f"{uid} {words}")
                    out[split][uid] = words
                with open(os.path.join(folder, f"{spk}-{chap}.trans.txt"), "w") as f:
                    f.write("\n".join(lines) + "\n")
    if orphan:
        split, speakers = next(iter(splits.items()))
        spk, chapters = next(iter(speakers.items()))
        chap = next(iter(chapters))
        write_signal(os.path.join(libri, split, spk, chap, f"{spk}-{chap}-9999.flac"))
    with open(os.path.join(libri, "SPEAKERS.TXT"), "w") as f:
        f.write(";ID  |SEX| SUBSET           |MINUTES| NAME\n")
    return out


def make_signal_folder(root, n, kind="noise", prefix="noise"):
    """``n`` short noise (or RIR) files in ``root`` (one in a sub folder)."""
    paths = []
    for i in range(n):
        sub = "sub" if i == n - 1 else ""
        paths.append(write_signal(os.path.join(root, sub, f"{prefix}_{i:02d}.wav"),
                                  seconds=0.1 if kind == "rir" else 0.5, seed=200 + i, kind=kind))
    return paths


def fake_build_corpus(out_dir, minutes=5.0, seed=1234, **kwargs):
    """Stands in for ``speechbrain_gense.data.corpus.build_corpus`` (same layout and return).

    Writes ``clean/{train,valid,test}``, ``noisy/{valid,test}``,
    ``noise/{split}``, ``rir/{split}`` and the manifests, with ``{data_root}``
    standing for ``out_dir``; half of the valid/test entries carry a RIR
    (the others have ``rir: null``, as in the real corpus).
    """
    from speechbrain_gense.data.manifest import write_manifest

    fake_build_corpus.calls = getattr(fake_build_corpus, "calls", 0) + 1
    paths, n_utts = {}, {"train": 4, "valid": 2, "test": 4}
    for split in ("train", "valid", "test"):
        for kind in ("noise", "rir"):
            entries = {}
            for i in range(2):
                uid = f"{kind}_{split}_{i}"
                wav = write_signal(os.path.join(out_dir, kind, split, f"{uid}.wav"),
                                   seconds=0.1 if kind == "rir" else 0.5, seed=seed + i, kind=kind)
                entries[uid] = {"wav": wav, "length": 0.1 if kind == "rir" else 0.5}
            paths[f"{kind}_{split}"] = os.path.join(out_dir, f"{kind}_{split}.json")
            write_manifest(paths[f"{kind}_{split}"], entries, data_root=out_dir)
        entries = {}
        for i in range(n_utts[split]):
            uid = f"{split}_{i:03d}"
            voice = ["flite_kal16", "espeak_en"][i % 2]
            e = {"clean_wav": write_signal(os.path.join(out_dir, "clean", split, f"{uid}.wav"),
                                           seed=seed + i),
                 "length": 0.3, "words": f"HELLO {split.upper()} NUMBER {i}", "speaker": voice}
            if split != "train":
                reverb = i % 2 == 1
                e = {"noisy_wav": write_signal(os.path.join(out_dir, "noisy", split, f"{uid}.wav"),
                                               seed=seed + 50 + i, kind="noise"), **e,
                     "snr": 5.0 + i, "degradation": "noise+reverb" if reverb else "noise",
                     "noise": f"noise_{split}_0", "rir": f"rir_{split}_1" if reverb else None}
            entries[uid] = e
        paths[split] = os.path.join(out_dir, f"{split}.json")
        write_manifest(paths[split], entries, data_root=out_dir)
    with open(os.path.join(out_dir, "corpus_options.json"), "w") as f:
        json.dump({"minutes": minutes, "seed": seed, **kwargs}, f)
    return paths


def snapshot(folder):
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            st = os.stat(path)
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
    return out
