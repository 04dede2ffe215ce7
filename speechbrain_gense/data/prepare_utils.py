"""Helpers shared by the dataset preparation scripts (``recipes/*/*_prepare.py``).

Each preparation script only knows its dataset's layout; listing audio,
measuring lengths, splitting deterministically, deciding whether a previous
run can be reused, reading the embedded corpus and writing fixed test
mixtures live here, once.
"""

import hashlib
import json
import logging
import os
import random

import soundfile as sf
import torch
from tqdm import tqdm

from ..audio import load_audio, save_audio
from ..utils import first_line, torch_threads
from .manifest import read_manifest, write_manifest

logger = logging.getLogger(__name__)

AUDIO_EXTS = (".wav", ".flac")
MIXTURE_FIELDS = ("snr", "degradation", "noise", "rir")


def check_folder(path, what, hint=""):
    """Returns ``path`` made absolute, or raises a one-line ``FileNotFoundError``.

    Example
    -------
    >>> check_folder("/no/such/folder", "DNS data folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: DNS data folder not found: /no/such/folder
    """
    if path is None or not os.path.isdir(path):
        raise FileNotFoundError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    return os.path.abspath(path)


def list_audio(folder, exts=AUDIO_EXTS, exclude=()):
    """Sorted absolute paths of the audio files under ``folder`` (recursive).

    Arguments
    ---------
    folder : str
        Folder to walk.
    exts : tuple
        File endings to keep (case-insensitive).
    exclude : tuple
        Files whose path under ``folder`` contains any of these substrings
        are left out.

    Example
    -------
    >>> import tempfile
    >>> list_audio(tempfile.mkdtemp())
    []
    """
    out = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in files:
            path = os.path.abspath(os.path.join(root, name))
            rel = os.path.relpath(path, folder)
            if name.lower().endswith(exts) and not any(x in rel for x in exclude):
                out.append(path)
    return sorted(out)


def measure(files, sample_rate=None, desc=None):
    """Lengths in seconds of readable files at ``sample_rate``; warns about and skips the others.

    Reads only the headers (``soundfile.info``), never the samples.

    Returns
    -------
    dict
        ``{path: length_in_seconds}`` in the order of ``files``.

    Example
    -------
    >>> measure(["/no/such.wav"])
    {}
    """
    lengths, bad = {}, []
    for path in tqdm(files, desc=desc, disable=desc is None or len(files) < 1000):
        try:
            info = sf.info(path)
        except Exception as e:  # soundfile raises several types
            bad.append(f"{path} (unreadable: {first_line(e)})")
            continue
        if sample_rate is not None and info.samplerate != sample_rate:
            bad.append(f"{path} ({info.samplerate} Hz, expected {sample_rate} Hz)")
        elif info.frames == 0:
            bad.append(f"{path} (no samples)")
        else:
            lengths[path] = round(info.frames / info.samplerate, 4)
    if bad:
        logger.warning("Skipping %d unusable audio file(s), e.g. %s", len(bad), "; ".join(bad[:3]))
    return lengths


def file_ids(files, root):
    """Ids for ``files``: the file stem, or the path under ``root`` when stems collide.

    Example
    -------
    >>> file_ids(["/r/a/x.wav", "/r/b/x.wav", "/r/b/y.wav"], "/r")
    {'a_x': '/r/a/x.wav', 'b_x': '/r/b/x.wav', 'y': '/r/b/y.wav'}
    """
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    ids = {}
    for path, stem in zip(files, stems):
        if stems.count(stem) > 1:
            stem = os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "_")
        ids[stem] = path
    return ids


def signal_manifest(files, root, sample_rate=None, desc=None):
    """``{id: {"wav", "length"}}`` entries for noise or RIR files (see :func:`file_ids`)."""
    lengths = measure(files, sample_rate, desc)
    return {uid: {"wav": path, "length": lengths[path]}
            for uid, path in file_ids(list(lengths), root).items()}


def split_items(items, ratio, seed):
    """Splits ``items`` deterministically into ``(kept, held_out)``, both sorted.

    ``round(ratio * n)`` items are held out, and at least one when
    ``ratio > 0`` and there are two items or more.

    Example
    -------
    >>> split_items(["a", "b", "c", "d"], 0.25, seed=1)
    (['a', 'b', 'c'], ['d'])
    """
    items = sorted(items)
    n_out = int(round(ratio * len(items)))
    if ratio > 0 and len(items) >= 2:
        n_out = min(max(n_out, 1), len(items) - 1)
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    return sorted(shuffled[n_out:]), sorted(shuffled[:n_out])


def utterance_seed(seed, uid):
    """A 63-bit seed from ``(seed, uid)``, stable across processes and machines.

    (Python's ``hash`` of a string changes from one process to the next.)

    Example
    -------
    >>> utterance_seed(1234, "utt1") == utterance_seed(1234, "utt1")
    True
    >>> utterance_seed(1234, "utt1") == utterance_seed(1235, "utt1")
    False
    """
    digest = hashlib.sha256(f"{seed}:{uid}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def keep_fields(entries, fields):
    """Copies ``entries`` keeping only ``fields`` (those an entry has).

    Example
    -------
    >>> keep_fields({"u": {"clean_wav": "c.wav", "snr": 3.0}}, ["clean_wav", "length"])
    {'u': {'clean_wav': 'c.wav'}}
    """
    return {uid: {k: e[k] for k in fields if k in e} for uid, e in entries.items()}


def write_mixtures(entries, out_dir, degrader, seed, sample_rate=16000, desc=None):
    """Writes one fixed, seeded degraded version of each entry's ``clean_wav``.

    Utterance ``uid`` is degraded with a generator seeded by
    ``utterance_seed(seed, uid)``, so a mixture depends only on the seed, the
    utterance and the degrader settings (not on the order or the number of
    utterances), and the same seed writes the same bytes: the mixing runs on
    one torch thread whatever the caller's setting (multi-threaded reductions
    round differently, by one LSB in a few samples).

    Arguments
    ---------
    entries : dict
        ``{uid: {"clean_wav": path, ...}}`` (absolute paths).
    out_dir : str
        Mixtures are written to ``out_dir/<uid>.wav`` (16-bit PCM).
    degrader : speechbrain_gense.data.degrade.Degrader
        Draws and applies the degradations.
    seed : int
        Base seed.
    sample_rate : int
        Rate of the clean speech and of the mixtures.
    desc : str, optional
        Label of the progress bar.

    Returns
    -------
    dict
        The entries with ``noisy_wav`` and the degradation info: always
        ``snr``, ``degradation``, ``noise``, ``rir`` (``None`` when not
        applied); ``gain`` when the mixture was scaled down to avoid clipping
        (multiply the clean target by it to keep the pair level-matched), and
        the parameters of any other effect applied.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.data.degrade import Degrader
    >>> tmp = tempfile.mkdtemp()
    >>> save_audio(os.path.join(tmp, "c.wav"), torch.randn(1600) * 0.1, 16000)
    >>> d = Degrader(noise_signals=[torch.randn(800)], rir_prob=0.0, ensure_one=True)
    >>> out = write_mixtures({"u": {"clean_wav": os.path.join(tmp, "c.wav")}},
    ...                      os.path.join(tmp, "noisy"), d, seed=1)
    >>> sorted(out["u"])
    ['clean_wav', 'degradation', 'noise', 'noisy_wav', 'rir', 'snr']
    """
    out = {}
    for uid in tqdm(sorted(entries), desc=desc, disable=desc is None):
        entry = entries[uid]
        clean, _ = load_audio(entry["clean_wav"], sample_rate, channels="mix")
        generator = torch.Generator().manual_seed(utterance_seed(seed, uid))
        with torch_threads(1):
            noisy, info = degrader(clean, generator)
        path = os.path.join(out_dir, f"{uid}.wav")
        save_audio(path, noisy, sample_rate, overwrite=True)
        extra = {k: v for k, v in info.items() if k not in MIXTURE_FIELDS and v is not None}
        out[uid] = {"noisy_wav": path, **entry,
                    **{k: info.get(k) for k in MIXTURE_FIELDS}, **extra}
    return out


def embedded_corpus(save_folder, **corpus_opts):
    """Builds (or reuses) the embedded TTS corpus in ``save_folder/corpus``.

    Returns
    -------
    dict
        ``{name: entries}`` for every manifest of the corpus (``train``,
        ``valid``, ``test``, ``noise_train`` ...), with absolute paths; the
        corpus writes its mixtures with :func:`write_mixtures`.
    """
    from speechbrain_gense.data.corpus import build_corpus

    paths = build_corpus(os.path.join(save_folder, "corpus"), **corpus_opts)
    return {name: read_manifest(path) for name, path in paths.items()
            if path.endswith(".json")}


def prepare_manifests(name, data_folder, save_folder, options, names, build, skip_prep=False):
    """The flow every preparation script shares: skip, or build and write the manifests.

    Arguments
    ---------
    name : str
        Script name; its options are kept in ``save_folder/<name>_options.json``.
    data_folder : str or None
        The dataset folder, which ``{data_root}`` stands for; ``None`` (the
        embedded corpus in ``save_folder/corpus``): ``save_folder`` is the root.
    save_folder : str
        Where the manifests go.
    options : dict
        JSON-able arguments of the run; a run with other options prepares again.
    names : list
        Names of the manifests the script may write (for ``skip_prep``).
    build : callable
        ``build() -> {name: entries}``, called only when preparing.
    skip_prep : bool
        Return the existing manifests without checking anything.

    Returns
    -------
    dict
        ``{name: path}`` of the manifests, and ``data_root``.
    """
    data_root = os.path.abspath(data_folder if data_folder is not None else save_folder)
    options = {"data_folder": data_root if data_folder is not None else None, **options}
    if skip_prep:
        return {**existing_manifests(save_folder, names), "data_root": data_root}
    if already_prepared(save_folder, name, options):
        logger.info("%s: manifests in %s are up to date, skipping", name, save_folder)
        return {**existing_manifests(save_folder, names), "data_root": data_root}
    paths = {}
    for set_name, entries in build().items():
        paths[set_name] = os.path.join(save_folder, f"{set_name}.json")
        write_manifest(paths[set_name], entries, data_root=data_root)
        logger.info("Wrote %s (%d entries)", paths[set_name], len(entries))
    mark_prepared(save_folder, name, options, paths.values())
    return {**paths, "data_root": data_root}


def _options_file(save_folder, name):
    return os.path.join(save_folder, f"{name}_options.json")


def already_prepared(save_folder, name, options):
    """Whether a run of ``name`` with the same ``options`` wrote all its manifests.

    Example
    -------
    >>> import tempfile
    >>> tmp = tempfile.mkdtemp()
    >>> already_prepared(tmp, "x", {"seed": 1})
    False
    >>> mark_prepared(tmp, "x", {"seed": 1}, [])
    >>> already_prepared(tmp, "x", {"seed": 1}), already_prepared(tmp, "x", {"seed": 2})
    (True, False)
    """
    path = _options_file(save_folder, name)
    if not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    if saved.get("options") != json.loads(json.dumps(options)):
        return False
    return all(os.path.isfile(os.path.join(save_folder, m)) for m in saved.get("manifests", []))


def mark_prepared(save_folder, name, options, manifests):
    """Records the options and the manifest files of a finished run."""
    os.makedirs(save_folder, exist_ok=True)
    with open(_options_file(save_folder, name), "w", encoding="utf-8") as f:
        json.dump({"options": options,
                   "manifests": sorted(os.path.basename(m) for m in manifests)}, f, indent=2)


def existing_manifests(save_folder, names):
    """``{name: path}`` for the ``save_folder/<name>.json`` files that exist."""
    paths = {n: os.path.join(save_folder, f"{n}.json") for n in names}
    return {n: p for n, p in paths.items() if os.path.isfile(p)}
