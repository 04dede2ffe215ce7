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
        info = {"method": self.method, **(self.save_parts(folder, dtype=dtype, **kwargs) or {})}
        atomic_write_text(os.path.join(folder, self.info_name()), json.dumps(info, indent=2))
        return folder

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
        return model.to(device).eval()


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
    """

    def save(self, path, dtype=None):
        """Writes ``config`` and ``state_dict`` to ``path`` (``torch.save``).

        Arguments
        ---------
        path : str
            Destination file.
        dtype : torch.dtype or str, optional
            Store floating-point tensors in this type (e.g. ``torch.float16``
            or ``"float16"``); default: as they are.
        """
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        state = self.state_dict()
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
        torch.save({"config": dict(self.config), "state_dict": state}, path)

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
        model.load_state_dict(blob["state_dict"])
        return model
