"""A disk cache of tokens, so that a dataset is tokenized once per tokenizer.

:class:`TokenCache` stores one ``.pt`` file (a ``[T, K]`` integer tensor) per
utterance id under ``<folder>/<fingerprint>/``, where the fingerprint names
the tokenizer: its class, its configuration and a hash of every tensor of its
``state_dict``. A different tokenizer, or the same one with other weights or
settings, writes to another subfolder and never reads stale tokens.

Files are written atomically (a temporary file in the same folder, then
``os.replace``), so concurrent writers (DDP ranks, DataLoader workers) never
read a half-written file; two writers of the same id write the same tokens.

Typical use in a recipe::

    token_cache: !new:speechbrain_gense.tokenizers.cache.TokenCache
        folder: !ref <save_folder>/tokens
        tokenizer: !ref <tokenizer>

    # train.py (after the tokenizer's weights are loaded)
    hparams["token_cache"].build(train_data, key="clean_wav")   # every rank
    train_data.add_dynamic_item(token_pipeline(hparams["token_cache"]))

Only deterministic signals should be cached (clean speech, fixed valid/test
mixtures): a mixture drawn on the fly changes at every epoch.

Tokens of an audio *file* also record which file they came from (absolute
path and size): when another dataset reuses an id in the same cache folder
(e.g. a new training manifest in an old output folder), the stale tokens are
re-encoded, not served. Tokens of signals handed over in memory carry no
such record.
"""

import hashlib
import json
import logging
import os
import re

import torch
import torchaudio

from ..audio import load_audio

logger = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def source_key(source):
    """What identifies an audio file for the cache (``"<abspath>|<bytes>"``), or None.

    Only paths have a key; signals and loader functions have none.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.wav")
    >>> _ = open(path, "wb").write(b"1234")
    >>> source_key(path).endswith("a.wav|4"), source_key(torch.zeros(3))
    (True, None)
    """
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = os.path.abspath(os.fspath(source))
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    return f"{path}|{size}"


def tokenizer_fingerprint(tokenizer):
    """A short name for a tokenizer and its weights: ``<Class>-<12 hex digits>``.

    The hash covers the class (module and name), the configuration (the
    tokenizer's ``config`` dict when it has one, else its contract
    attributes and ``repr``) and the name, dtype, shape and bytes of every
    tensor of its ``state_dict`` that makes tokens: for a codec whose model
    names ``exact_prefixes`` (its encoder and codebooks), only those, less
    the counters it names ``token_statistics`` (codebook usage, which
    validation updates); the decoder can be re-stored in fewer bits or
    fine-tuned without changing the fingerprint, since the tokens do not
    change. Shipped models record it
    (:meth:`~speechbrain_gense.models.base.GenerativeEnhancer.codec_fingerprints`).

    Example
    -------
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> tokenizer_fingerprint(DebugTokenizer()) == tokenizer_fingerprint(DebugTokenizer())
    True
    >>> tokenizer_fingerprint(DebugTokenizer()) == tokenizer_fingerprint(DebugTokenizer(seed=1))
    False
    >>> tokenizer_fingerprint(DebugTokenizer()).startswith("DebugTokenizer-")
    True
    """
    cls = type(tokenizer)
    digest = hashlib.sha1()
    digest.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    digest.update(json.dumps(_config(tokenizer), sort_keys=True, default=str).encode())
    model = getattr(tokenizer, "model", None)
    exact = tuple("model." + p for p in getattr(model, "exact_prefixes", ()))
    counters = set(getattr(model, "token_statistics", ()))
    for name, tensor in tokenizer.state_dict().items():
        if exact and not name.startswith(exact) or name.rsplit(".", 1)[-1] in counters:
            continue
        if not isinstance(tensor, torch.Tensor):
            digest.update(f"\n{name}={tensor!r}".encode())
            continue
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"\n{name}:{t.dtype}:{tuple(tensor.shape)}\n".encode())
        if t.numel():
            digest.update(t.view(torch.uint8).numpy().tobytes())
    return f"{cls.__name__}-{digest.hexdigest()[:12]}"


def _config(tokenizer):
    config = getattr(tokenizer, "config", None)
    if isinstance(config, dict):
        return config
    return {name: getattr(tokenizer, name, None)
            for name in ("sample_rate", "frame_rate", "num_codebooks", "vocab_size")} \
        | {"repr": repr(tokenizer)}


def _dist():
    """``(rank, world_size)``; ``(0, 1)`` outside DDP."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TokenCache:
    """Tokens of a dataset on disk, one file per utterance id.

    Arguments
    ---------
    folder : str
        Root of the cache; tokens go to ``folder/<fingerprint>/<id>.pt``.
    tokenizer : AudioTokenizer
        The tokenizer whose tokens are cached.
    sample_rate : int, optional
        Rate of signals handed over without one (default: the tokenizer's).
        Audio files are read at their own rate; everything is resampled to
        the tokenizer's rate, item by item, before encoding.
    fingerprint : str, optional
        Name of the subfolder, instead of :func:`tokenizer_fingerprint`.
        It is otherwise computed at first use (so after a Pretrainer has
        loaded the tokenizer's weights); call :meth:`refresh` after changing
        the tokenizer in place.

    Attributes
    ----------
    hits, misses : int
        Lookups served from disk / encoded, in this process (each DataLoader
        worker and DDP rank counts its own).

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> cache = TokenCache(tempfile.mkdtemp(), DebugTokenizer(num_codebooks=2))
    >>> wav = torch.randn(8000) * 0.1
    >>> cache.get("utt1", lambda: wav).shape
    torch.Size([40, 2])
    >>> cache.get("utt1", lambda: wav).dtype, cache.hits, cache.misses
    (torch.int64, 1, 1)
    """

    def __init__(self, folder, tokenizer, sample_rate=None, fingerprint=None):
        self.root = os.fspath(folder)
        self.tokenizer = tokenizer
        self.sample_rate = int(sample_rate or tokenizer.sample_rate)
        self._fingerprint = fingerprint
        self.hits = 0
        self.misses = 0
        #: Cached files found stale (made from another audio file) and re-encoded.
        self.stale = 0
        self._stale_logged = False

    # Layout ---------------------------------------------------------------

    @property
    def fingerprint(self):
        """Name of this tokenizer's subfolder."""
        if self._fingerprint is None:
            self._fingerprint = tokenizer_fingerprint(self.tokenizer)
        return self._fingerprint

    def refresh(self):
        """Recomputes the fingerprint (after the tokenizer changed in place)."""
        self._fingerprint = None
        return self.fingerprint

    @property
    def folder(self):
        """``folder/<fingerprint>``, created with a ``tokenizer.json`` on first use."""
        path = os.path.join(self.root, self.fingerprint)
        info = os.path.join(path, "tokenizer.json")
        if not os.path.exists(info):
            os.makedirs(path, exist_ok=True)
            text = json.dumps({"class": f"{type(self.tokenizer).__module__}."
                                        f"{type(self.tokenizer).__qualname__}",
                               "config": _config(self.tokenizer),
                               "fingerprint": self.fingerprint},
                              indent=2, sort_keys=True, default=str)
            self._atomic_write(info, lambda f: f.write(text.encode()))
        return path

    def path(self, uid):
        """File of utterance ``uid`` (ids are made file-name safe)."""
        uid = str(uid)
        name = _SAFE.sub("_", uid)
        if name != uid or name.startswith("."):
            # Keep distinct ids distinct after the substitution.
            name = f"{name}-{hashlib.sha1(uid.encode()).hexdigest()[:8]}"
        return os.path.join(self.folder, name + ".pt")

    def __contains__(self, uid):
        return os.path.exists(self.path(uid))

    # Reading and writing --------------------------------------------------

    def load(self, uid, source=None):
        """Cached ``LongTensor[T, K]`` of ``uid``, or None (counts no hit/miss).

        With ``source`` (a :func:`source_key`), tokens recorded as made from
        another file are stale: None, and a warning (once per cache).
        """
        path = self.path(uid)
        if not os.path.exists(path):
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 -- an unreadable file is recomputed
            logger.warning("token cache: %s unreadable (%s); recomputing", path, e)
            return None
        if isinstance(stored, dict):
            made_from = stored.get("source")
            if source is not None and made_from is not None and made_from != source:
                if not self._stale_logged:
                    self._stale_logged = True
                    logger.warning("token cache %s: %r was encoded from %s, not %s; "
                                   "re-encoding (and any other stale id)", self.folder, uid,
                                   made_from.rsplit("|", 1)[0], source.rsplit("|", 1)[0])
                self.stale += 1
                return None
            stored = stored["tokens"]
        return stored.long()

    def save(self, uid, tokens, source=None):
        """Stores ``tokens[T, K]`` for ``uid`` atomically (with ``source``: its :func:`source_key`)."""
        tokens = torch.as_tensor(tokens).detach().cpu()
        if tokens.dim() != 2 or tokens.shape[1] != self.tokenizer.num_codebooks:
            raise ValueError(f"tokens of {uid!r} must be [T, {self.tokenizer.num_codebooks}], "
                             f"got {tuple(tokens.shape)}")
        vocab = self.tokenizer.vocab_size
        dtype = torch.int16 if vocab <= 2 ** 15 else torch.int32 if vocab <= 2 ** 31 \
            else torch.int64
        tokens = tokens.to(dtype).contiguous().clone()
        stored = tokens if source is None else {"tokens": tokens, "source": str(source)}
        self._atomic_write(self.path(uid), lambda f: torch.save(stored, f))

    @staticmethod
    def _atomic_write(path, write):
        from ..models.io import atomic_output

        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            write(f)

    # Lookups --------------------------------------------------------------

    def get(self, uid, wav_loader=None):
        """Tokens of ``uid``: from disk, or encoded, stored and returned.

        Arguments
        ---------
        uid : str
            Utterance id.
        wav_loader : callable, str or torch.Tensor, optional
            Where the audio comes from on a miss: a function returning
            ``wav[S]`` (or ``(wav, sample_rate)``), an audio file path, or
            the signal itself. Only used on a miss, so a function or a path
            avoids reading the audio on hits. None raises ``KeyError`` on a
            miss.

        Returns
        -------
        torch.LongTensor
            ``[T, K]``, on the CPU.
        """
        key = source_key(wav_loader)
        tokens = self.load(uid, key)
        if tokens is not None:
            self.hits += 1
            return tokens
        if wav_loader is None:
            raise KeyError(f"{uid!r} is not in the token cache {self.folder}")
        self.misses += 1
        tokens = self.encode_batch([self._read(wav_loader)])[0]
        self.save(uid, tokens, key)
        return tokens

    def _read(self, source):
        if callable(source):
            source = source()
        if isinstance(source, (tuple, list)) and len(source) == 2:
            wav, sample_rate = source
        elif isinstance(source, (str, os.PathLike)):
            wav, sample_rate = load_audio(source, channels="mix")
        else:
            wav, sample_rate = source, self.sample_rate
        wav = torch.as_tensor(wav)
        if wav.dim() == 2 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.dim() != 1:
            raise ValueError(f"expected a mono signal [S], got shape {tuple(wav.shape)}")
        wav = wav.float()
        if int(sample_rate) != self.tokenizer.sample_rate:
            # Each item alone, so that padding never enters the resampling.
            wav = torchaudio.functional.resample(wav, int(sample_rate),
                                                 self.tokenizer.sample_rate)
        return wav

    def encode_batch(self, wavs):
        """Encodes signals ``[S_i]`` in one padded batch -> list of ``LongTensor[T_i, K]``.

        The signals are at the tokenizer's rate. Each item's tokens are cut to
        its own frame length, ``min(T, tokenizer.num_frames(S_i))`` (what
        :meth:`AudioTokenizer.encode` gives as lengths). Codecs whose
        receptive field crosses the padding may give slightly different last
        frames than an unbatched encode (use ``batch_size=1`` in :meth:`build`
        when that matters).
        """
        sizes = [int(w.shape[-1]) for w in wavs]
        longest = max(sizes)
        batch = torch.zeros(len(wavs), longest)
        for i, w in enumerate(wavs):
            batch[i, :sizes[i]] = w
        lens = torch.tensor([s / max(1, longest) for s in sizes])
        tokens, _ = self.tokenizer.encode(batch, lens)
        tokens = tokens.cpu()
        frames = [min(tokens.shape[1], self.tokenizer.num_frames(s)) for s in sizes]
        return [tokens[i, :n] for i, n in enumerate(frames)]

    # Precomputation -------------------------------------------------------

    def build(self, data, key="clean_wav", batch_size=8, progress=True, data_root=None):
        """Tokenizes every entry of ``data`` that is not cached yet.

        Under DDP (``torch.distributed`` initialised) each rank encodes its
        share (sorted ids, ``ids[rank::world_size]``) and all ranks meet at a
        ``barrier`` before returning, so that every file exists afterwards.

        Arguments
        ---------
        data : str, dict or DynamicItemDataset
            A JSON manifest path, a manifest dict ``{id: {key: path}}``, or a
            dataset whose ``key`` is a static path field or a dynamic item
            giving a signal.
        key : str
            Field holding the audio (path or signal).
        batch_size : int
            Signals encoded together (sorted by length to limit padding).
        progress : bool
            Show a tqdm progress bar (on rank 0 only).
        data_root : str, optional
            Replaces ``{data_root}`` when ``data`` is a manifest path.

        Returns
        -------
        dict
            ``{"total", "cached", "encoded"}`` for this rank's share.
        """
        from tqdm import tqdm

        rank, world = _dist()
        ids, fetch, length, path_of = self._source(data, key, data_root)
        mine = sorted(ids)[rank::world]
        keys = {uid: source_key(path_of(uid)) for uid in mine}
        todo = [uid for uid in mine if uid not in self
                or (keys[uid] is not None and self.load(uid, keys[uid]) is None)]
        todo.sort(key=length)
        stats = {"total": len(mine), "cached": len(mine) - len(todo), "encoded": 0}
        bar = tqdm(total=len(todo), desc=f"tokens ({self.fingerprint})",
                   disable=not progress or rank != 0, leave=False)
        try:
            for start in range(0, len(todo), max(1, int(batch_size))):
                chunk = todo[start:start + max(1, int(batch_size))]
                tokens = self.encode_batch([self._read(fetch(uid)) for uid in chunk])
                for uid, t in zip(chunk, tokens):
                    self.save(uid, t, keys[uid])
                self.misses += len(chunk)
                stats["encoded"] += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
        if world > 1:
            torch.distributed.barrier()
        return stats

    def _source(self, data, key, data_root):
        """``(ids, fetch(uid) -> path or signal, sort key, path_of(uid) -> path or None)``."""
        if isinstance(data, (str, os.PathLike)):
            from ..data.manifest import read_manifest

            data = read_manifest(os.fspath(data), data_root=data_root)
        if isinstance(data, dict):
            missing = [uid for uid, entry in data.items() if key not in entry]
            if missing:
                raise KeyError(f"{len(missing)} entries have no {key!r} (e.g. {missing[0]!r})")
            return list(data), lambda uid: data[uid][key], \
                lambda uid: (-float(data[uid].get("length", 0) or 0), uid), \
                lambda uid: data[uid][key]
        # A SpeechBrain DynamicItemDataset.
        entries, index = data.data, {uid: i for i, uid in enumerate(data.data_ids)}
        static = all(key in entries[uid] for uid in index)
        if static:
            def fetch(uid):
                return entries[uid][key]
        else:
            def fetch(uid):
                with data.output_keys_as([key]):
                    return data[index[uid]][key]
        return list(index), fetch, \
            lambda uid: (-float(entries[uid].get("length", 0) or 0), uid), \
            fetch if static else (lambda uid: None)

    def stats(self):
        """``{"hits", "misses", "folder"}``."""
        return {"hits": self.hits, "misses": self.misses, "folder": self.folder}

    def __repr__(self):
        return f"TokenCache({self.root!r}, fingerprint={self._fingerprint!r}, " \
               f"hits={self.hits}, misses={self.misses})"


def token_pipeline(cache, takes="clean_wav", provides="clean_tokens"):
    """A dynamic item giving cached tokens ``LongTensor[T, K]`` per utterance.

    It takes the utterance ``id`` and ``takes`` (an audio path, read only on
    a miss, or a signal such as ``clean_sig``). Batched by ``PaddedBatch``,
    the item becomes ``[B, T, K]`` with relative lengths.

    Arguments
    ---------
    cache : TokenCache
        The cache to read (and fill on misses).
    takes : str
        Key of the audio path or signal.
    provides : str
        Key of the tokens.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain_gense.tokenizers.debug import DebugTokenizer
    >>> pipe = token_pipeline(TokenCache(tempfile.mkdtemp(), DebugTokenizer()))
    >>> pipe.takes, pipe.provides
    (('id', 'clean_wav'), ('clean_tokens',))
    """
    from speechbrain.utils.data_pipeline import provides as _provides
    from speechbrain.utils.data_pipeline import takes as _takes

    @_takes("id", takes)
    @_provides(provides)
    def pipeline(uid, source):
        return cache.get(uid, source)

    return pipeline
