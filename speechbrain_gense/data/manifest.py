"""SpeechBrain JSON manifests.

A manifest maps an utterance id to its fields::

    {"utt1": {"noisy_wav": "{data_root}/noisy/test/utt1.wav",
              "clean_wav": "{data_root}/clean/test/utt1.wav",
              "length": 3.2, "words": "HELLO WORLD", "speaker": "flite_rms",
              "snr": 4.7, "degradation": "noise+reverb"}}

Paths under the data folder are written with the ``{data_root}`` placeholder so
that a corpus can be moved; :func:`read_manifest` (and SpeechBrain's
``DynamicItemDataset.from_json(..., replacements={"data_root": ...})``) put
the folder back.
"""

import json
import os

from speechbrain.dataio.dataio import load_data_json

PATH_KEYS = ("noisy_wav", "clean_wav", "wav", "noise_wav", "rir_wav")


def write_manifest(path, entries, data_root=None):
    """Writes ``entries`` to ``path``, with paths relative to ``data_root``.

    Arguments
    ---------
    path : str
        JSON file to write (its folder is created).
    entries : dict
        ``{id: {field: value}}``.
    data_root : str, optional
        Paths under this folder are written as ``{data_root}/...``.

    Example
    -------
    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> m = os.path.join(root, "m.json")
    >>> write_manifest(m, {"a": {"clean_wav": os.path.join(root, "a.wav"),
    ...                          "length": 1.0}}, data_root=root)
    >>> open(m).read().count("{data_root}")
    1
    >>> read_manifest(m)["a"]["clean_wav"] == os.path.join(root, "a.wav")
    True
    """
    path = os.fspath(path)
    out = {}
    root = os.path.abspath(data_root) if data_root else None
    for uid, fields in entries.items():
        fields = dict(fields)
        for key in PATH_KEYS:
            value = fields.get(key)
            if isinstance(value, os.PathLike):
                value = fields[key] = os.fspath(value)
            if root and isinstance(value, str):
                absval = os.path.abspath(value)
                if absval == root or absval.startswith(root + os.sep):
                    rel = os.path.relpath(absval, root)
                    fields[key] = "{data_root}/" + rel.replace(os.sep, "/")
        out[uid] = fields
    from ..models.io import atomic_write_text

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=2, ensure_ascii=False))


def read_manifest(path, data_root=None):
    """Reads a manifest, filling ``{data_root}`` (default: the manifest's folder).

    Arguments
    ---------
    path : str
        JSON manifest.
    data_root : str, optional
        Folder that replaces ``{data_root}``.

    Returns
    -------
    dict
        ``{id: {field: value}}``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such manifest")
    if data_root is None:
        data_root = os.path.dirname(os.path.abspath(path))
    return load_data_json(path, replacements={"data_root": data_root})


def subset_manifest(manifest, path, key, max_utts=None, seed=1234, transform=None):
    """Writes the entries of ``manifest`` that have a ``key`` path to ``path``.

    Arguments
    ---------
    manifest : str
        Source manifest (never overwritten: ``path`` must differ).
    path : str
        Manifest to write.
    key : str
        Field every kept entry must hold (e.g. ``noisy_wav``).
    max_utts : int, optional
        Keep this many entries, drawn at random (``seed``), in manifest order.
    seed : int
        Seed of the draw.
    transform : callable, optional
        ``fields -> fields`` applied to each kept entry before writing.

    Returns
    -------
    dict
        The entries written.

    Example
    -------
    >>> import os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> write_manifest(os.path.join(root, "m.json"),
    ...                {"a": {"noisy_wav": "a.wav"}, "b": {}, "c": {"noisy_wav": "c.wav"}})
    >>> sorted(subset_manifest(os.path.join(root, "m.json"), os.path.join(root, "o.json"),
    ...                        "noisy_wav"))
    ['a', 'c']
    """
    import logging
    import random

    entries = read_manifest(manifest)
    if os.path.realpath(path) == os.path.realpath(manifest):
        raise ValueError(f"{manifest}: would be overwritten; choose another output folder")
    usable = [uid for uid, f in entries.items() if isinstance(f.get(key), str)]
    if not usable:
        raise ValueError(f"{manifest}: no entry has a {key}")
    if len(usable) < len(entries):
        logging.getLogger(__name__).warning("%s: %d entries without %s left out", manifest,
                                            len(entries) - len(usable), key)
    if max_utts is not None and max_utts < len(usable):
        keep = set(random.Random(seed).sample(usable, max_utts))
        usable = [uid for uid in usable if uid in keep]
    out = {uid: transform(entries[uid]) if transform else entries[uid] for uid in usable}
    write_manifest(path, out)
    return out

