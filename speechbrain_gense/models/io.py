"""One-file checkpoints of models that rebuild from their ``config``.

:class:`ConfigCheckpoint` gives a module with a ``config`` dict (its
constructor's keyword arguments) a :meth:`~ConfigCheckpoint.save` that writes
config and weights to one file and a :meth:`~ConfigCheckpoint.load` that
rebuilds the module from it, with ``weights_only`` loading. Weights can be
stored in half precision to halve shipped files; they are loaded back into
the module's own (float32) parameters.
"""

import torch


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
