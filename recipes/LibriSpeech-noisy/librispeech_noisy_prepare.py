#!/usr/bin/env python3
"""Prepares LibriSpeech with added noise (and reverberation) for generative enhancement.

Reads the LibriSpeech layout::

    <data_folder>/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <data_folder>/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

(``data_folder`` may also be the ``LibriSpeech`` folder itself), a folder of
noise recordings and optionally a folder of room impulse responses, and writes
to ``save_folder``:

- ``train.json``, ``valid.json``: clean speech for on-the-fly mixing
  (``clean_wav``, ``length``, ``words``, ``speaker``);
- ``noise_train.json``, ``noise_test.json`` (and ``rir_train.json``,
  ``rir_test.json``): ``{id: {wav, length}}``, split so that the test
  mixtures only use noises (and rooms) never seen in training;
- ``<test split>.json`` (e.g. ``test-clean.json``): fixed, seeded test
  mixtures written to ``save_folder/noisy/<split>/<uid>.wav`` (``noisy_wav``,
  ``clean_wav``, ``length``, ``words``, ``speaker``, ``snr``, ``degradation``,
  ``noise``, ``rir``). The same seed gives byte-identical mixtures.

Paths under ``data_folder`` are written as ``{data_root}/...``; nothing is
ever written into ``data_folder``. Without a data folder the embedded TTS
corpus is built (or reused) in ``save_folder/corpus`` and the same manifests
point at it (its fixed test set is written as the first test split).

Usage::

    python librispeech_noisy_prepare.py --data_folder /data --noise_folder /data/noise \\
        --rir_folder /data/rirs --save_folder results/libri
    python librispeech_noisy_prepare.py --save_folder results/libri   # embedded corpus

Authors
 * speechbrain-gense contributors
"""

import argparse
import logging
import os

from speechbrain_gense.data.degrade import Degrader
from speechbrain_gense.data.prepare_utils import (
    check_folder, embedded_corpus, keep_fields, list_audio, measure, prepare_manifests,
    signal_manifest, split_items, write_mixtures,
)

logger = logging.getLogger(__name__)

CLEAN_FIELDS = ("clean_wav", "length", "words", "speaker")
# Test entries have at least these (plus ``gain`` when the mixture was scaled
# down to avoid clipping, and the parameters of any extra effect).
TEST_FIELDS = ("noisy_wav",) + CLEAN_FIELDS + ("snr", "degradation", "noise", "rir")
SIGNALS = ("noise_train", "noise_test", "rir_train", "rir_test")


def prepare_librispeech_noisy(
    data_folder, save_folder, noise_folder=None, rir_folder=None,
    train_splits=("train-clean-100",), valid_splits=("dev-clean",),
    test_splits=("test-clean",), test_noise_ratio=0.2, seed=1234,
    sample_rate=16000, skip_prep=False, degrader_opts=None, corpus_opts=None,
):
    """Writes the LibriSpeech-noisy manifests and test mixtures to ``save_folder``.

    Arguments
    ---------
    data_folder : str or None
        The ``LibriSpeech`` folder or its parent. ``None``: use the embedded
        TTS corpus (built in ``save_folder/corpus``).
    save_folder : str
        Where the manifests and the test mixtures go.
    noise_folder : str
        Noise recordings (any layout, wav/flac); required with a data folder.
    rir_folder : str, optional
        Room impulse responses; without them the test set has no reverberation.
    train_splits, valid_splits, test_splits : list of str
        LibriSpeech splits; one test manifest per test split.
    test_noise_ratio : float
        Share of the noise (and RIR) files kept for the test mixtures only.
    seed : int
        Seed of the noise split and of every test mixture.
    sample_rate : int
        Rate of all signals (LibriSpeech is 16 kHz).
    skip_prep : bool
        Do nothing, return the manifests that exist.
    degrader_opts : dict, optional
        Extra arguments of :class:`~speechbrain_gense.data.degrade.Degrader`
        for the test mixtures (default: noise p=0.8 at U(-5, 20) dB, RIR p=0.5).
    corpus_opts : dict, optional
        Extra arguments of ``build_corpus`` for the embedded corpus.

    Returns
    -------
    dict
        ``{name: manifest path}`` and ``data_root`` (the folder to substitute
        for ``{data_root}``: ``data_folder``, or ``save_folder`` without one).

    Example
    -------
    >>> paths = prepare_librispeech_noisy("/data", "results/libri",
    ...                                   noise_folder="/data/noise")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['data_root', 'noise_test', 'noise_train', 'test-clean', 'train', 'valid']
    """
    train_splits, valid_splits, test_splits = map(list, (train_splits, valid_splits, test_splits))
    options = {"noise_folder": noise_folder and os.path.abspath(noise_folder),
               "rir_folder": rir_folder and os.path.abspath(rir_folder),
               "splits": [train_splits, valid_splits, test_splits],
               "test_noise_ratio": test_noise_ratio, "seed": seed, "sample_rate": sample_rate,
               "degrader_opts": degrader_opts or {}, "corpus_opts": corpus_opts or {}}

    def build():
        if data_folder is None:
            logger.info("No LibriSpeech folder given: using the embedded corpus")
            return _from_corpus(save_folder, test_splits[0], seed, corpus_opts or {})
        return _from_librispeech(data_folder, save_folder, noise_folder, rir_folder,
                                 train_splits, valid_splits, test_splits, test_noise_ratio,
                                 seed, sample_rate, degrader_opts or {})

    names = ["train", "valid", *SIGNALS, *test_splits]
    return prepare_manifests("librispeech_noisy_prepare", data_folder, save_folder,
                             options, names, build, skip_prep)


def read_transcripts(chapter_dir):
    """``{utt_id: WORDS}`` from the ``*.trans.txt`` files of a chapter folder.

    Example
    -------
    >>> read_transcripts("/no/such/chapter")
    {}
    """
    words = {}
    if not os.path.isdir(chapter_dir):
        return words
    for name in sorted(os.listdir(chapter_dir)):
        if name.endswith(".trans.txt"):
            with open(os.path.join(chapter_dir, name), encoding="utf-8") as f:
                for line in f:
                    uid, _, text = line.strip().partition(" ")
                    if uid:
                        words[uid] = text.strip()
    return words


def _libri_dir(data_folder):
    data_folder = check_folder(data_folder, "LibriSpeech data folder")
    inner = os.path.join(data_folder, "LibriSpeech")
    return inner if os.path.isdir(inner) else data_folder


def _split_entries(libri, split, sample_rate):
    """Clean entries of one split; utterances without a transcript are skipped."""
    split_dir = check_folder(os.path.join(libri, split), f"LibriSpeech split {split!r}",
                             f"found: {', '.join(sorted(os.listdir(libri))) or 'nothing'}")
    files = list_audio(split_dir, exts=(".flac", ".wav"))
    lengths = measure(files, sample_rate, desc=split)
    entries, missing, transcripts = {}, [], {}
    for path in lengths:
        folder, uid = os.path.dirname(path), os.path.splitext(os.path.basename(path))[0]
        if folder not in transcripts:
            transcripts[folder] = read_transcripts(folder)
        if uid not in transcripts[folder]:
            missing.append(path)
            continue
        entries[uid] = {"clean_wav": path, "length": lengths[path],
                        "words": transcripts[folder][uid], "speaker": uid.split("-")[0]}
    if missing:
        logger.warning("%s: skipping %d utterance(s) without a transcript, e.g. %s",
                       split, len(missing), ", ".join(missing[:3]))
    if not entries:
        raise FileNotFoundError(f"no transcribed {sample_rate} Hz utterances in {split_dir}")
    return entries


def _signal_split(folder, what, ratio, seed, sample_rate):
    """``(train, test)`` manifests of the noise or RIR files of ``folder``."""
    folder = check_folder(folder, f"{what} folder")
    entries = signal_manifest(list_audio(folder), folder, sample_rate, what)
    if len(entries) < 2:
        raise ValueError(f"{what} folder {folder}: need at least 2 usable files "
                         f"so that test {what}s stay unseen in training, found {len(entries)}")
    train, test = split_items(entries, ratio, seed)
    return {u: entries[u] for u in train}, {u: entries[u] for u in test}


def _from_librispeech(data_folder, save_folder, noise_folder, rir_folder, train_splits,
                      valid_splits, test_splits, ratio, seed, sample_rate, degrader_opts):
    libri = _libri_dir(data_folder)
    if os.path.commonpath([os.path.abspath(save_folder), libri]) == libri:
        raise ValueError(f"save_folder {save_folder} is inside the data folder {libri}: "
                         "choose another one (the data folder is never written to)")
    if noise_folder is None:
        raise ValueError("LibriSpeech-noisy needs noise recordings: pass noise_folder "
                         "(e.g. DNS-Challenge datasets/noise, MUSAN noise or WHAM!)")
    sets = {}
    for name, splits in (("train", train_splits), ("valid", valid_splits)):
        sets[name] = {}
        for split in splits:
            sets[name].update(_split_entries(libri, split, sample_rate))
    sets["noise_train"], sets["noise_test"] = _signal_split(
        noise_folder, "noise", ratio, seed, sample_rate)
    opts = {"sample_rate": sample_rate, "ensure_one": True, **degrader_opts}
    if rir_folder is not None:
        sets["rir_train"], sets["rir_test"] = _signal_split(
            rir_folder, "RIR", ratio, seed, sample_rate)
    else:
        opts["rir_prob"] = 0.0
    degrader = Degrader(noise_files=[e["wav"] for e in sets["noise_test"].values()],
                        rir_files=[e["wav"] for e in sets.get("rir_test", {}).values()],
                        **opts)
    logger.info("Test mixtures: %r", degrader)
    for split in test_splits:
        clean = _split_entries(libri, split, sample_rate)
        sets[split] = write_mixtures(clean, os.path.join(save_folder, "noisy", split),
                                     degrader, seed, sample_rate, desc=f"mixing {split}")
    return sets


def _from_corpus(save_folder, test_name, seed, corpus_opts):
    corpus = embedded_corpus(save_folder, **{"seed": seed, **corpus_opts})
    sets = {"train": keep_fields(corpus["train"], CLEAN_FIELDS),
            "valid": keep_fields(corpus["valid"], CLEAN_FIELDS),
            test_name: corpus["test"]}  # already in the test schema
    for name in SIGNALS:
        if corpus.get(name):
            sets[name] = corpus[name]
    return sets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", default=None,
                        help="LibriSpeech folder or its parent (default: the embedded corpus)")
    parser.add_argument("--save_folder", required=True)
    parser.add_argument("--noise_folder", default=None)
    parser.add_argument("--rir_folder", default=None)
    parser.add_argument("--train_splits", nargs="+", default=["train-clean-100"])
    parser.add_argument("--valid_splits", nargs="+", default=["dev-clean"])
    parser.add_argument("--test_splits", nargs="+", default=["test-clean"])
    parser.add_argument("--test_noise_ratio", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    prepare_librispeech_noisy(
        args.data_folder, args.save_folder, noise_folder=args.noise_folder,
        rir_folder=args.rir_folder, train_splits=args.train_splits,
        valid_splits=args.valid_splits, test_splits=args.test_splits,
        test_noise_ratio=args.test_noise_ratio, seed=args.seed)
