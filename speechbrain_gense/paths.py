"""Where the shipped models (``pretrained/``) are found, whatever the install.

A path such as ``pretrained/mage`` (in a spec, ``--model``, ``from_hparams``)
is looked up, in this order:

1. as given, when it exists (relative to the working directory, or absolute);
2. under each folder of the ``GENSE_PRETRAINED`` environment variable
   (``os.pathsep``-separated folders that hold model folders such as ``mage/``);
3. in the project checkout holding this package (``<checkout>/pretrained``:
   a clone, or an editable ``pip install -e .``);
4. in the package's own data (``speechbrain_gense/pretrained``: a wheel or a
   non-editable ``pip install .`` ships the models there).

:func:`find_pretrained` raises a one-line error naming every folder searched.
"""

import os

#: Environment variable: extra folders holding shipped model folders.
PRETRAINED_ENV = "GENSE_PRETRAINED"

#: First path component that names a shipped model.
PRETRAINED_PREFIX = "pretrained"

#: The folder above the package: the project checkout in a clone or editable install.
CHECKOUT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Shipped models inside an installed package (copied there when a wheel is built).
PACKAGE_PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), PRETRAINED_PREFIX)


def pretrained_roots():
    """Folders searched for shipped models, in order (existing ones only).

    Returns
    -------
    list of str
        ``$GENSE_PRETRAINED`` folders, then the checkout's ``pretrained/``,
        then the package's ``pretrained/``.

    Example
    -------
    >>> roots = pretrained_roots()
    >>> all(os.path.isdir(root) for root in roots)
    True
    """
    candidates = [p for p in os.environ.get(PRETRAINED_ENV, "").split(os.pathsep) if p]
    candidates += [os.path.join(CHECKOUT_ROOT, PRETRAINED_PREFIX), PACKAGE_PRETRAINED]
    roots = []
    for folder in candidates:
        folder = os.path.abspath(os.path.expanduser(folder))
        if os.path.isdir(folder) and folder not in roots:
            roots.append(folder)
    return roots


def _searched():
    candidates = [p for p in os.environ.get(PRETRAINED_ENV, "").split(os.pathsep) if p]
    candidates += [os.path.join(CHECKOUT_ROOT, PRETRAINED_PREFIX), PACKAGE_PRETRAINED]
    return ", ".join(dict.fromkeys(os.path.abspath(os.path.expanduser(p)) for p in candidates))


def _shipped_part(path):
    """``"mage/x"`` for ``"pretrained/mage/x"``, else ``None``."""
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) > 1 and parts[0] == PRETRAINED_PREFIX:
        return os.path.join(*parts[1:])
    return None


def relative_to_folder(path, folder):
    """A path stored relative to a model ``folder``, made usable again.

    ``folder/path`` when it exists; else, for a path that runs through a
    ``pretrained/`` folder (``../../pretrained/rvqcodec``: a model trained in
    ``results/`` on a shipped codec, then copied elsewhere), its
    ``pretrained/<name>`` part, which :func:`resolve_path` finds wherever the
    shipped models are; else None.

    Example
    -------
    >>> import tempfile
    >>> relative_to_folder("../../pretrained/rvqcodec", tempfile.mkdtemp())
    'pretrained/rvqcodec'
    >>> relative_to_folder("../codec", tempfile.mkdtemp()) is None
    True
    """
    local = os.path.normpath(os.path.join(folder, path))
    if os.path.exists(local):
        return local
    parts = os.path.normpath(path).split(os.sep)
    if PRETRAINED_PREFIX in parts[:-1]:
        return os.path.join(*parts[parts.index(PRETRAINED_PREFIX):])
    return None


def resolve_path(path):
    """A path as given when it exists, else where a shipped model lives.

    Arguments
    ---------
    path : str
        A path from a spec, ``--model`` or ``source`` (may be empty).

    Returns
    -------
    str
        ``path`` itself when it exists, is absolute or empty; for
        ``pretrained/<name>...`` the first match under
        :func:`pretrained_roots`; for another relative path the same path in
        the checkout when it exists there; otherwise ``path`` unchanged (the
        caller reports it missing).

    Example
    -------
    >>> os.path.isdir(resolve_path("pretrained/simcodec"))
    True
    >>> resolve_path("/no/such/file")
    '/no/such/file'
    """
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    rest = _shipped_part(path)
    if rest is not None:
        for root in pretrained_roots():
            candidate = os.path.join(root, rest)
            if os.path.exists(candidate):
                return candidate
        return path
    candidate = os.path.join(CHECKOUT_ROOT, path)
    return candidate if os.path.exists(candidate) else path


def find_pretrained(name):
    """The folder of a shipped model, or a one-line error naming where it looked.

    Arguments
    ---------
    name : str
        ``"mage"``, or ``"pretrained/mage"``, or any path.

    Returns
    -------
    str
        An existing path.

    Raises
    ------
    FileNotFoundError
        When it is nowhere (the message names every folder searched and
        ``GENSE_PRETRAINED``).

    Example
    -------
    >>> os.path.basename(find_pretrained("mage"))
    'mage'
    >>> find_pretrained("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: shipped model 'no-such-model' not found; searched ...
    """
    path = name if _shipped_part(name) is not None or os.sep in name or os.path.exists(name) \
        else os.path.join(PRETRAINED_PREFIX, name)
    found = resolve_path(path)
    if os.path.exists(found):
        return found
    raise FileNotFoundError(
        f"shipped model {name!r} not found; searched the working directory and {_searched()} "
        f"(set {PRETRAINED_ENV} to the folder that holds it)")


__all__ = ["CHECKOUT_ROOT", "PACKAGE_PRETRAINED", "PRETRAINED_ENV", "find_pretrained",
           "pretrained_roots", "resolve_path"]
