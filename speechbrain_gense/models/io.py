"""Checkpoints of the project's models, and the one atomic file writer.

- :class:`ConfigCheckpoint` gives a module with a ``config`` dict (its
  constructor's keyword arguments) a :meth:`~ConfigCheckpoint.save` that
  writes config and weights to one file and a :meth:`~ConfigCheckpoint.load`
  that rebuilds the module from it, with ``weights_only`` loading. Weights can
  be stored in half precision to halve shipped files; they are loaded back
  into the module's own (float32) parameters.
- :class:`FolderCheckpoint` is the folder format of every enhancer
  (:class:`~speechbrain_gense.models.base.GenerativeEnhancer`): the method's
  own files plus one JSON ``info_file`` naming the method.
- :func:`atomic_output` / :func:`atomic_write_text`: a file that appears
  complete or not at all.
"""

import contextlib
import json
import os
import tempfile

import torch


@contextlib.contextmanager
def atomic_output(path):
    """Context manager: a temporary path next to ``path``, renamed over it on success.

    The one atomic writer of the project: whatever writes into the temporary
    file (text, a figure, a checkpoint), readers never see a half-written
    ``path``; on an exception the temporary file is removed. The file gets
    the usual permissions (:func:`speechbrain_gense.audio.publish`).

    Example
    -------
    >>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_output(path) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(path).read(), sorted(os.listdir(os.path.dirname(path)))
    ('done', ['a.txt'])
    """
    from ..audio import publish

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    """Writes ``text`` to ``path`` atomically (:func:`atomic_output`).

    Example
    -------
    >>> path = os.path.join(tempfile.mkdtemp(), "a.json")
    >>> atomic_write_text(path, "{}")
    >>> open(path).read()
    '{}'
    """
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


class FolderCheckpoint:
    """Mixin: ``save(folder, dtype=None)`` / ``load(folder, device="cpu")`` of an enhancer.

    A subclass sets ``method`` (and optionally ``info_file``, default
    ``<method>.json``) and implements ``save_parts(folder, dtype, **kwargs)
    -> dict`` (writes its files, returns what goes into the info file) and the
    classmethod ``load_parts(folder, info, device, **kwargs) -> model``.

    Example
    -------
    >>> class Toy(FolderCheckpoint, torch.nn.Module):
    ...     method = "toy"
    ...     def __init__(self, n):
    ...         super().__init__()
    ...         self.n = n
    ...     def save_parts(self, folder, dtype=None):
    ...         return {"n": self.n}
    ...     @classmethod
    ...     def load_parts(cls, folder, info, device="cpu"):
    ...         return cls(info["n"])
    >>> folder = Toy(3).save(tempfile.mkdtemp())
    >>> sorted(os.listdir(folder)), Toy.load(folder).n
    (['toy.json'], 3)
    >>> Toy.load(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    FileNotFoundError: ...: not a toy model folder (toy.json missing)
    """

    method = None
    info_file = None

    @classmethod
    def info_name(cls):
        """File name of the folder's info file."""
        return cls.info_file or f"{cls.method}.json"

    def save_parts(self, folder, dtype=None, **kwargs):  # pragma: no cover - abstract
        """Writes the method's files into ``folder``; returns the info dict."""
        raise NotImplementedError

    @classmethod
    def load_parts(cls, folder, info, device="cpu", **kwargs):  # pragma: no cover - abstract
        """Builds the model from ``folder`` and its ``info`` dict."""
        raise NotImplementedError

    def save(self, folder, dtype=None, **kwargs):
        """Writes the model to ``folder`` (created); returns ``folder``.

        Arguments
        ---------
        folder : str
            Output folder.
        dtype : torch.dtype or str, optional
            Store floating-point weights in this type (e.g. ``"float16"``).
        **kwargs
            Method-specific options of ``save_parts``.
        """
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        info = {"method": self.method, **(self.save_parts(folder, dtype=dtype, **kwargs) or {}),
                **self.info_extras()}
        atomic_write_text(os.path.join(folder, self.info_name()), json.dumps(info, indent=2))
        return folder

    def info_extras(self):
        """More entries of the info file, common to every method (default: none)."""
        return {}

    @classmethod
    def check_loaded(cls, model, info, folder, **kwargs):
        """Checks a model just built by :meth:`load` against its info (default: nothing)."""

    @classmethod
    def load(cls, folder, device="cpu", **kwargs):
        """Rebuilds a model written by :meth:`save`, in eval mode on ``device``."""
        folder = os.fspath(folder)
        path = os.path.join(folder, cls.info_name())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder}: not a {cls.method} model folder "
                                    f"({cls.info_name()} missing)")
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
        if info.get("method", cls.method) != cls.method:
            raise ValueError(f"{folder}: holds a {info['method']!r} model, not {cls.method!r}")
        model = cls.load_parts(folder, info, device=device, **kwargs)
        cls.check_loaded(model, info, folder, **kwargs)
        return model.to(device).eval()


#: Storage types of shipped weights (``ConfigCheckpoint.save(dtype=...)``).
STORAGE_DTYPES = ("float32", "float16", "bfloat16", "int8")
#: Tensors with fewer elements than this are never stored as int8 (biases,
#: norms, small tables): they cost little and their scale would cost as much.
INT8_MIN_NUMEL = 1024


def _dtype_name(dtype):
    if dtype is None:
        return None
    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    if name not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {dtype!r}; use one of {', '.join(STORAGE_DTYPES)}")
    return name


def float_to_int8_rows(weight):
    """Symmetric int8 with one scale per output row (dim 0), for storage.

    (Int8 *arithmetic* at inference is :mod:`speechbrain_gense.models.quantize`;
    this only makes shipped files smaller: weights are float32 again once loaded.)

    Arguments
    ---------
    weight : torch.Tensor
        Floating-point tensor ``[O, ...]``.

    Returns
    -------
    codes : torch.Tensor
        ``int8`` tensor of the same shape.
    scale : torch.Tensor
        ``float32`` scales ``[O]``: ``weight ≈ codes * scale`` row by row.

    Example
    -------
    >>> w = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0]])
    >>> codes, scale = float_to_int8_rows(w)
    >>> codes.tolist(), scale.tolist()
    ([[127, -64, 32], [0, 0, 0]], [0.007874015718698502, 1.0])
    >>> int8_rows_to_float(codes, scale).shape
    torch.Size([2, 3])
    """
    w = weight.detach().float()
    peak = w.reshape(w.shape[0], -1).abs().amax(dim=1)
    scale = torch.where(peak > 0, peak / 127.0, torch.ones_like(peak))
    view = (-1,) + (1,) * (w.dim() - 1)
    codes = torch.round(w / scale.view(view)).clamp_(-127, 127).to(torch.int8)
    return codes, scale


def int8_rows_to_float(codes, scale):
    """Inverse of :func:`float_to_int8_rows`: ``float32`` tensor ``codes * scale``."""
    view = (-1,) + (1,) * (codes.dim() - 1)
    return codes.float() * scale.float().view(view)


def pack_state(state, dtype=None, keep=()):
    """A state dict for storage: floats in ``dtype``, ``keep`` prefixes as they are.

    ``"int8"`` stores every floating tensor of at least :data:`INT8_MIN_NUMEL`
    elements and two or more dimensions as per-row int8 (its scales go in the
    returned ``scales`` dict) and the other floating tensors in float16.
    Tensors whose key starts with one of ``keep`` are stored without loss
    (the parts of a codec that make its tokens: storing them in fewer bits
    would change the tokens, and every model trained on them): in float16
    when every value is exactly a float16 number (a codec exported in
    float16 from the start), else as they are.

    Arguments
    ---------
    state : dict
        ``state_dict()`` of a module.
    dtype : str or torch.dtype, optional
        ``"float32"``, ``"float16"``, ``"bfloat16"`` or ``"int8"``; default:
        as they are.
    keep : tuple of str
        Key prefixes stored unchanged.

    Returns
    -------
    state : dict
        The tensors to store.
    scales : dict
        Key -> per-row scales of the int8 tensors.

    Example
    -------
    >>> state = {"enc.w": torch.randn(64, 32), "dec.w": torch.randn(64, 32), "dec.b": torch.zeros(64)}
    >>> packed, scales = pack_state(state, "int8", keep=("enc.",))
    >>> {k: str(v.dtype) for k, v in packed.items()}
    {'enc.w': 'torch.float32', 'dec.w': 'torch.int8', 'dec.b': 'torch.float16'}
    >>> list(scales)
    ['dec.w']
    >>> halves = {"enc.w": torch.randn(64, 32).half().float()}
    >>> pack_state(halves, "int8", keep=("enc.",))[0]["enc.w"].dtype
    torch.float16
    >>> err = (unpack_state(packed, scales)["dec.w"] - state["dec.w"]).abs().max()
    >>> bool(err <= state["dec.w"].abs().max() / 254 + 1e-6)
    True
    """
    name = _dtype_name(dtype)
    out, scales = {}, {}
    for key, value in state.items():
        if name is None or not value.is_floating_point():
            out[key] = value
        elif key.startswith(tuple(keep)):
            out[key] = _lossless_half(value)
        elif name == "int8" and value.dim() >= 2 and value.numel() >= INT8_MIN_NUMEL:
            out[key], scales[key] = float_to_int8_rows(value)
        else:
            out[key] = value.to(torch.float16 if name == "int8" else getattr(torch, name))
    return out, scales


def _lossless_half(value):
    half = value.to(torch.float16)
    return half if torch.equal(half.to(value.dtype), value) else value


def unpack_state(state, scales=None):
    """Inverse of :func:`pack_state`: int8 tensors with a scale back to float32."""
    scales = scales or {}
    return {k: int8_rows_to_float(v, scales[k]) if k in scales else v for k, v in state.items()}


class ConfigCheckpoint:
    """Mixin: ``save(path, dtype=None)`` / ``load(path)`` of ``config`` + ``state_dict``.

    Example
    -------
    >>> import os, tempfile
    >>> class Lin(ConfigCheckpoint, torch.nn.Linear):
    ...     def __init__(self, n):
    ...         super().__init__(n, n)
    ...         self.config = {"n": n}
    >>> path = os.path.join(tempfile.mkdtemp(), "lin.ckpt")
    >>> Lin(4).save(path, dtype=torch.float16)
    >>> model = Lin.load(path)
    >>> model.weight.dtype, model.weight.shape
    (torch.float32, torch.Size([4, 4]))
    >>> big = Lin(64)
    >>> big.save(path, dtype="int8")
    >>> torch.load(path, weights_only=True)["state_dict"]["weight"].dtype
    torch.int8
    >>> bool((Lin.load(path).weight - big.weight).abs().max() < 1e-3)
    True
    """

    #: State-dict key prefixes always stored as they are, whatever ``dtype``
    #: (a codec's encoder and quantizer: the parts that make its tokens).
    exact_prefixes = ()

    def save(self, path, dtype=None):
        """Writes ``config`` and ``state_dict`` to ``path`` (``torch.save``, atomic).

        Arguments
        ---------
        path : str
            Destination file.
        dtype : torch.dtype or str, optional
            Store floating-point tensors in this type: ``"float16"``,
            ``"bfloat16"``, or ``"int8"`` (per-row int8 for weight matrices,
            float16 for the rest; see :func:`pack_state`); default: as they
            are. Tensors under :attr:`exact_prefixes` are never converted.
        """
        state, scales = pack_state(self.state_dict(), dtype, keep=self.exact_prefixes)
        blob = {"config": dict(self.config), "state_dict": state,
                "storage": {"dtype": _dtype_name(dtype), "kept": list(self.exact_prefixes)}}
        if scales:
            blob["int8_scales"] = scales
        with atomic_output(path) as tmp:
            torch.save(blob, tmp)

    @classmethod
    def load(cls, path, map_location="cpu"):
        """Rebuilds a module saved by :meth:`save` (``weights_only=True``).

        Arguments
        ---------
        path : str
            File written by :meth:`save`.
        map_location : str or torch.device
            Where to load the tensors.

        Returns
        -------
        torch.nn.Module
            The module, with parameters in its default (float32) type.
        """
        blob = torch.load(path, map_location=map_location, weights_only=True)
        model = cls(**blob["config"])
        model.load_state_dict(unpack_state(blob["state_dict"], blob.get("int8_scales")))
        return model
