#!/usr/bin/env python3
"""Prepares the DNS Challenge data (Interspeech 2020 / ICASSP 2021) for generative enhancement.

Reads the layout of the ``microsoft/DNS-Challenge`` repository::

    <data_folder>/datasets/clean/**/*.wav        (book_00000_chp_0009_reader_06709_0.wav ...)
    <data_folder>/datasets/noise/**/*.wav
    <data_folder>/datasets/impulse_responses/**/*.wav    (optional, ICASSP 2021)
    <data_folder>/datasets/test_set/synthetic/{no_reverb,with_reverb}/{clean,noisy}/*.wav
    <data_folder>/datasets/test_set/real_recordings/*.wav

and writes SpeechBrain JSON manifests to ``save_folder`` (paths under the data
folder as ``{data_root}/...``):

- ``train.json``, ``valid.json``: clean speech only, for on-the-fly mixing
  (``clean_wav``, ``length``, ``speaker``);
- ``noise_train.json`` and, when RIRs exist, ``rir_train.json`` (``wav``, ``length``);
- ``test_no_reverb.json``, ``test_with_reverb.json``: the synthetic pairs
  (``noisy_wav``, ``clean_wav``, ``length``, ``snr``, ``degradation``);
- ``test_real.json``: the real recordings (``noisy_wav``, ``length``).

Without a data folder the embedded TTS corpus is built (or reused) in
``save_folder/corpus`` and the same manifests point at it.

Usage::

    python dns_prepare.py --data_folder /data/DNS-Challenge --save_folder results/dns
    python dns_prepare.py --save_folder results/dns          # embedded corpus

Authors
 * speechbrain-gense contributors
"""

import argparse
import logging
import os
import re

from speechbrain_gense.data.prepare_utils import (
    check_folder, embedded_corpus, file_ids, keep_fields, list_audio, measure,
    prepare_manifests, signal_manifest, split_items,
)

logger = logging.getLogger(__name__)

MANIFESTS = ("train", "valid", "noise_train", "rir_train",
             "test_no_reverb", "test_with_reverb", "test_real")
CLEAN_FIELDS = ("clean_wav", "length", "speaker")
CONDITIONS = {"no_reverb": "noise", "with_reverb": "noise+reverb"}
FILEID = re.compile(r"fileid_(\d+)$")
SNR = re.compile(r"(?:^|_)snr(-?\d+(?:\.\d+)?)(?=_|$)")
READER = re.compile(r"reader_(\d+)")


def prepare_dns(data_folder, save_folder, valid_ratio=0.05, seed=1234,
                sample_rate=16000, skip_prep=False, corpus_opts=None):
    """Writes the DNS manifests to ``save_folder``; skips when they are up to date.

    Arguments
    ---------
    data_folder : str or None
        The DNS-Challenge repository (holding ``datasets/``) or its
        ``datasets`` folder. ``None``: use the embedded TTS corpus.
    save_folder : str
        Where the manifests go (and the embedded corpus, in ``corpus/``).
    valid_ratio : float
        Share of the clean files held out for validation.
    seed : int
        Seed of the train/valid split (and of the embedded corpus).
    sample_rate : int
        Files at another rate are skipped with a warning.
    skip_prep : bool
        Do nothing, return the manifests that exist.
    corpus_opts : dict, optional
        Extra arguments of ``build_corpus`` (e.g. ``{"minutes": 5.0}``).

    Returns
    -------
    dict
        ``{name: manifest path}`` for the manifests written, and ``data_root``:
        the folder to substitute for ``{data_root}`` (``data_folder``, or
        ``save_folder`` for the embedded corpus).

    Example
    -------
    >>> paths = prepare_dns(dns_folder, save_folder)        # doctest: +SKIP
    >>> read_manifest(paths["train"], data_root=paths["data_root"])  # doctest: +SKIP
    """
    options = {"valid_ratio": valid_ratio, "seed": seed, "sample_rate": sample_rate,
               "corpus_opts": corpus_opts or {}}

    def build():
        if data_folder is None:
            logger.info("No DNS data folder given: using the embedded corpus")
            return _from_corpus(save_folder, seed, corpus_opts or {})
        return _from_dns(data_folder, valid_ratio, seed, sample_rate)

    return prepare_manifests("dns_prepare", data_folder, save_folder, options,
                             MANIFESTS, build, skip_prep)


def speaker_of(path):
    """The DNS reader id in a file name, else ``"unknown"``.

    Example
    -------
    >>> speaker_of("book_00000_chp_0009_reader_06709_0.wav"), speaker_of("x.wav")
    ('reader_06709', 'unknown')
    """
    match = READER.search(os.path.basename(path))
    return f"reader_{match.group(1)}" if match else "unknown"


def snr_of(path):
    """The SNR written as ``snrX`` in a DNS file name, else ``None``.

    Example
    -------
    >>> snr_of("clnsp1_train_69005_1_snr15_tl-21_fileid_158.wav"), snr_of("a_snr-5_fileid_1.wav")
    (15.0, -5.0)
    """
    matches = SNR.findall(os.path.splitext(os.path.basename(path))[0])
    return float(matches[-1]) if matches else None


def _datasets_dir(data_folder):
    data_folder = check_folder(data_folder, "DNS data folder")
    root = os.path.join(data_folder, "datasets")
    root = root if os.path.isdir(root) else data_folder
    check_folder(os.path.join(root, "clean"), "DNS clean speech folder",
                 "expected <data_folder>/datasets/clean, as in the DNS-Challenge repository")
    return root


def _from_dns(data_folder, valid_ratio, seed, sample_rate):
    root = _datasets_dir(data_folder)
    clean_dir = os.path.join(root, "clean")
    lengths = measure(list_audio(clean_dir), sample_rate, desc="clean speech")
    if not lengths:
        raise FileNotFoundError(f"no usable {sample_rate} Hz audio under {clean_dir}")
    ids = file_ids(list(lengths), clean_dir)
    train, valid = split_items(ids, valid_ratio, seed)
    sets = {name: {uid: {"clean_wav": ids[uid], "length": lengths[ids[uid]],
                         "speaker": speaker_of(ids[uid])} for uid in split}
            for name, split in (("train", train), ("valid", valid))}
    noise_dir = check_folder(os.path.join(root, "noise"), "DNS noise folder",
                             "expected <data_folder>/datasets/noise")
    sets["noise_train"] = signal_manifest(list_audio(noise_dir), noise_dir, sample_rate, "noise")
    rir_dir = os.path.join(root, "impulse_responses")
    if os.path.isdir(rir_dir):
        # SLR28 (RIRS_NOISES) keeps noises next to its RIRs: pointsource_noises/
        # and real_rirs_isotropic_noises/*_noise_*.wav are not impulse responses.
        rirs = [p for p in list_audio(rir_dir, exclude=("pointsource_noises",))
                if "noise" not in os.path.basename(p).lower()]
        sets["rir_train"] = signal_manifest(rirs, rir_dir, sample_rate, "RIRs")
    test_dir = os.path.join(root, "test_set")
    for cond, degradation in CONDITIONS.items():
        folder = os.path.join(test_dir, "synthetic", cond)
        if os.path.isdir(folder):
            sets[f"test_{cond}"] = _pairs(folder, cond, degradation, sample_rate)
        else:
            logger.warning("No DNS test set in %s: test_%s.json not written", folder, cond)
    real_dir = os.path.join(test_dir, "real_recordings")
    if os.path.isdir(real_dir):
        real = measure(list_audio(real_dir), sample_rate)
        sets["test_real"] = {f"real_{uid}": {"noisy_wav": p, "length": real[p]}
                             for uid, p in file_ids(list(real), real_dir).items()}
    return sets


def _by_fileid(folder):
    """``{fileid: path}`` of the files of ``folder`` named ``..._fileid_N``."""
    out = {}
    for path in list_audio(folder):
        match = FILEID.search(os.path.splitext(os.path.basename(path))[0])
        if not match:
            logger.warning("Skipping %s: no fileid_N in its name", path)
        elif match.group(1) in out:
            logger.warning("Skipping %s: fileid %s seen twice", path, match.group(1))
        else:
            out[match.group(1)] = path
    return out


def _pairs(folder, cond, degradation, sample_rate):
    """Pairs ``noisy/*_fileid_N.wav`` with ``clean/clean_fileid_N.wav``."""
    noisy = _by_fileid(os.path.join(folder, "noisy"))
    clean = _by_fileid(os.path.join(folder, "clean"))
    unpaired = sorted(set(noisy) ^ set(clean), key=int)
    if unpaired:
        logger.warning("%s: skipping %d unpaired file(s): %s", folder, len(unpaired),
                       ", ".join((noisy.get(i) or clean[i]) for i in unpaired[:5]))
    paired = sorted(set(noisy) & set(clean), key=int)
    lengths = measure([noisy[i] for i in paired] + [clean[i] for i in paired], sample_rate)
    entries = {}
    for i in paired:
        if noisy[i] in lengths and clean[i] in lengths:
            entries[f"{cond}_fileid_{i}"] = {
                "noisy_wav": noisy[i], "clean_wav": clean[i], "length": lengths[noisy[i]],
                "snr": snr_of(noisy[i]), "degradation": degradation}
    return entries


def _from_corpus(save_folder, seed, corpus_opts):
    corpus = embedded_corpus(save_folder, **{"seed": seed, **corpus_opts})
    sets = {"train": keep_fields(corpus["train"], CLEAN_FIELDS),
            "valid": keep_fields(corpus["valid"], CLEAN_FIELDS),
            "noise_train": corpus["noise_train"]}
    if corpus.get("rir_train"):
        sets["rir_train"] = corpus["rir_train"]
    # Test entries keep all their fields (words, speaker, noise, rir, gain ...).
    test = corpus["test"]
    sets["test_no_reverb"] = {u: e for u, e in test.items() if not e.get("rir")}
    sets["test_with_reverb"] = {u: e for u, e in test.items() if e.get("rir")}
    return sets


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_folder", default=None,
                        help="DNS-Challenge repository (default: the embedded corpus)")
    parser.add_argument("--save_folder", required=True, help="where the manifests go")
    parser.add_argument("--valid_ratio", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--sample_rate", type=int, default=16000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    prepare_dns(args.data_folder, args.save_folder, valid_ratio=args.valid_ratio,
                seed=args.seed, sample_rate=args.sample_rate)
