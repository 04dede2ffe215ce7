"""Tokenizers by name: ``load_tokenizer("simcodec:pretrained/simcodec")``.

A *spec* names a tokenizer kind, a local path and options (see
:func:`load_tokenizer`); recipes (``!apply:...load_tokenizer``), the codec
evaluation command and the inference interface build tokenizers from it.
"""

import os

from speechbrain_gense.paths import CHECKOUT_ROOT, relative_to_folder, resolve_path
from speechbrain_gense.utils import first_line

#: Tokenizer kinds of a spec (see :func:`load_tokenizer`).
KINDS = ("simcodec", "rvq", "dac", "bigcodec", "kmeans", "debug")


class SpecError(ValueError):
    """A codec spec or name that cannot be used (one-line message)."""


#: The project checkout (parent of the package), home of the shipped ``pretrained/`` models
#: in a clone; see :mod:`speechbrain_gense.paths` for the other places searched.
PROJECT_ROOT = CHECKOUT_ROOT


def format_spec(kind, path, options):
    """Inverse of :func:`parse_spec`.

    Arguments
    ---------
    kind : str or None
        Tokenizer kind.
    path : str
        Path (may be empty).
    options : dict
        Options.

    Returns
    -------
    str
        The spec.

    Example
    -------
    >>> format_spec("dac", "w.pth", {"num_codebooks": 4})
    'dac:w.pth?num_codebooks=4'
    >>> format_spec(*parse_spec("debug?vocab_size=32"))
    'debug?vocab_size=32'
    """
    spec = (f"{kind}:" if kind and path else kind or "") + (path or "")
    if options:
        spec += "?" + ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                               for k, v in options.items())
    return spec


# ---------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------


def _value(text):
    """``"8000"`` -> 8000, ``"0.5"`` -> 0.5, ``"true"`` -> True, else the text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_spec(spec):
    """Splits a spec into ``(kind, path, options)``.

    Grammar (see :func:`load_tokenizer`)::

        SPEC := KIND [":" PATH] ["?" KEY=VALUE ("," KEY=VALUE)*]  |  PATH

    A bare ``PATH`` has kind ``None`` (guessed from the files by
    :func:`load_tokenizer`).

    Example
    -------
    >>> parse_spec("debug?num_codebooks=2,sample_rate=8000")
    ('debug', None, {'num_codebooks': 2, 'sample_rate': 8000})
    >>> parse_spec("dac:/models/dac_16khz.pth?num_codebooks=4")
    ('dac', '/models/dac_16khz.pth', {'num_codebooks': 4})
    >>> parse_spec("pretrained/simcodec")
    (None, 'pretrained/simcodec', {})
    >>> parse_spec("magic:x")
    Traceback (most recent call last):
    ...
    speechbrain_gense.tokenizers.registry.SpecError: unknown codec kind 'magic' in 'magic:x' (choose from simcodec, rvq, dac, bigcodec, kmeans, debug)
    """
    spec = spec.strip()
    if not spec:
        raise SpecError("empty codec spec")
    body, _, opts = spec.partition("?")
    options = {}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            hint = ""
            if " " in item.strip():  # what SpeechBrain's command line makes of KEY=VALUE
                hint = ("; a recipe's command line drops '=' inside values, so give the "
                        "options as the recipe's options key, e.g. --tokenizer_options (MAGE) or "
                        "--acoustic_options (GenSE) \"{num_codebooks: 2}\"")
            raise SpecError(f"bad option {item!r} in {spec!r} (expected KEY=VALUE){hint}")
        options[key.strip()] = _value(value.strip())
    kind, colon, path = body.partition(":")
    if not colon:
        if body.lower() in KINDS:
            return body.lower(), None, options
        if options:
            raise SpecError(f"options need a codec kind: write KIND:PATH?... in {spec!r}")
        return None, body, {}
    if kind.lower() not in KINDS:
        raise SpecError(f"unknown codec kind {kind!r} in {spec!r} "
                        f"(choose from {', '.join(KINDS)})")
    return kind.lower(), path or None, options


def guess_kind(path):
    """The tokenizer kind of a bare path, from the files it holds (``None``: unknown).

    A folder with ``simcodec.ckpt`` or a ``.ckpt`` file is SimCodec; a folder
    with DAC's (``dac.pth``, ``weights.pth``, ``dac/weights.pth``) or
    BigCodec's (``bigcodec.pt`` ...) checkpoint names is that codec.

    Example
    -------
    >>> guess_kind("model.ckpt"), guess_kind("/nonexistent")
    ('simcodec', None)
    """
    from .bigcodec import CHECKPOINT_NAMES as BIGCODEC_NAMES
    from .dac import CHECKPOINT_NAMES as DAC_NAMES
    from .rvq import CHECKPOINT_NAME as RVQ_NAME
    from .simcodec import CHECKPOINT_NAME as SIMCODEC_NAME

    if os.path.basename(path) == RVQ_NAME:
        return "rvq"
    if path.endswith(".ckpt"):
        return "simcodec"
    if os.path.isdir(path):
        for kind, names in (("simcodec", (SIMCODEC_NAME,)), ("rvq", (RVQ_NAME,)),
                            ("dac", DAC_NAMES),
                            ("bigcodec", BIGCODEC_NAMES)):
            if any(os.path.isfile(os.path.join(path, n)) for n in names):
                return kind
    return None


def relative_spec(spec, folder):
    """``spec`` with its existing local path made relative to a model ``folder``.

    What a saved model stores, so that a model folder and its codec can move
    together (:func:`absolute_spec` reads it back).

    Example
    -------
    >>> import tempfile
    >>> folder = os.path.join(tempfile.mkdtemp(), "results", "model")
    >>> spec = relative_spec(f"rvq:{resolve_path('pretrained/rvqcodec')}?num_codebooks=4", folder)
    >>> spec.endswith("pretrained/rvqcodec?num_codebooks=4"), spec.startswith("rvq:../")
    (True, True)
    >>> relative_spec("debug?vocab_size=8", folder)
    'debug?vocab_size=8'
    """
    kind, path, options = parse_spec(spec)
    resolved = resolve_path(path) if path else path
    if resolved and os.path.exists(resolved):
        path = os.path.relpath(os.path.abspath(resolved), os.path.abspath(folder))
        return format_spec(kind, path, options)
    return spec


def absolute_spec(spec, folder):
    """Inverse of :func:`relative_spec`, for a model folder that may have moved.

    A relative path is taken from ``folder`` when it exists there; one that
    runs through a ``pretrained/`` folder and no longer does (a model trained
    in ``results/`` on a shipped codec, then copied elsewhere) becomes that
    shipped codec's name, found wherever shipped models are
    (:func:`~speechbrain_gense.paths.relative_to_folder`); other specs are
    returned unchanged.

    Example
    -------
    >>> import tempfile
    >>> absolute_spec("rvq:../../../pretrained/rvqcodec?num_codebooks=4", tempfile.mkdtemp())
    'rvq:pretrained/rvqcodec?num_codebooks=4'
    """
    kind, path, options = parse_spec(spec)
    if path and not os.path.isabs(path):
        local = relative_to_folder(path, folder)
        if local is not None:
            return format_spec(kind, local, options)
    return spec


def load_tokenizer(spec, device="cpu", options=None):
    """Builds a tokenizer from a spec string.

    Grammar::

        SPEC := KIND [":" PATH] ["?" KEY=VALUE ("," KEY=VALUE)*]  |  PATH

    - ``simcodec:PATH``: :class:`~.tokenizers.simcodec.SimCodecTokenizer`
      (a ``.ckpt`` file or a folder with ``simcodec.ckpt``); option
      ``flatten``;
    - ``rvq:PATH``: :class:`~.tokenizers.rvq.RVQTokenizer` (a ``.ckpt`` file
      or a folder with ``rvqcodec.ckpt``); option ``num_codebooks`` (the
      first ``k`` codebooks);
    - ``dac:PATH``: :class:`~.tokenizers.dac.DACTokenizer` (a weights file,
      a folder holding one, or a released name in the local DAC cache);
      options ``num_codebooks``, ``backend``;
    - ``bigcodec:PATH``: :class:`~.tokenizers.bigcodec.BigCodecTokenizer`;
    - ``kmeans:PATH``: a fitted
      :class:`~.tokenizers.semantic.KMeansTokenizer` file (no decoder);
      options replace stored feature arguments (e.g. ``source=``);
    - ``debug``: :class:`~.tokenizers.debug.DebugTokenizer`; options are its
      arguments (``sample_rate``, ``hop``, ``num_codebooks``, ``vocab_size``,
      ``dim``, ``seed``, ``scale``);
    - a relative ``PATH`` that does not exist from the working directory is
      looked up in the project checkout (:func:`resolve_path`), so
      ``simcodec:pretrained/simcodec`` works from anywhere;
    - a bare ``PATH``: the kind is guessed from its files (:func:`guess_kind`;
      a folder with ``simcodec.ckpt`` is SimCodec).

    Option values are read as int, float, ``true``/``false``, else text.
    Nothing is downloaded.

    Arguments
    ---------
    spec : str
        The spec.
    device : str
        Device to put the tokenizer on.
    options : dict, optional
        More options, over those of the spec (a recipe's ``tokenizer_options``:
        SpeechBrain's command line splits overrides at ``=``, so
        ``--tokenizer_spec "rvq:PATH?num_codebooks=4"`` cannot be given there,
        ``--tokenizer_options "{num_codebooks: 4}"`` can).

    Returns
    -------
    AudioTokenizer
        Frozen, in eval mode, on ``device``, with the spec as ``spec``.

    Raises
    ------
    SpecError
        For a spec that does not parse, a missing path or an unknown option.

    Example
    -------
    >>> tok = load_tokenizer("debug?num_codebooks=2,vocab_size=256")
    >>> tok.spec, tok.num_codebooks, tok.vocab_size, tok.frame_rate
    ('debug?num_codebooks=2,vocab_size=256', 2, 256, 80.0)
    >>> load_tokenizer("debug?vocab_size=256", options={"num_codebooks": 3}).num_codebooks
    3
    >>> load_tokenizer("simcodec:/nonexistent")
    Traceback (most recent call last):
    ...
    speechbrain_gense.tokenizers.registry.SpecError: simcodec:/nonexistent: no such file or folder
    """
    kind, path, spec_options = parse_spec(spec)
    options = {**spec_options, **(options or {})}
    if options != spec_options:
        spec = format_spec(kind, path, options)
    path = resolve_path(path)
    if kind is None:
        if not os.path.exists(path):
            raise SpecError(f"{spec}: no such file or folder (or write KIND:PATH, KIND in "
                            f"{', '.join(KINDS)})")
        kind = guess_kind(path)
        if kind is None:
            raise SpecError(f"{spec}: cannot tell which codec it holds; write KIND:PATH "
                            f"with KIND in {', '.join(k for k in KINDS if k != 'debug')}")
    if kind == "debug":
        if path:
            raise SpecError(f"{spec}: the debug tokenizer takes no path (write debug?KEY=VALUE)")
    elif not path:
        raise SpecError(f"{spec}: {kind} needs a path ({kind}:PATH)")
    elif kind != "dac" and not os.path.exists(path):
        # (dac also accepts a released name found in its local cache)
        raise SpecError(f"{spec}: no such file or folder")
    try:
        if kind == "debug":
            from .debug import DebugTokenizer

            tok = DebugTokenizer(**options)
        elif kind == "simcodec":
            from .simcodec import SimCodecTokenizer

            tok = SimCodecTokenizer(path, map_location="cpu", **options)
        elif kind == "rvq":
            from .rvq import RVQTokenizer

            tok = RVQTokenizer(path, map_location="cpu", **options)
        elif kind == "dac":
            from .dac import DACTokenizer

            tok = DACTokenizer(path=path, **options)
        elif kind == "bigcodec":
            from .bigcodec import BigCodecTokenizer

            if options:
                raise TypeError(f"unexpected options {sorted(options)}")
            tok = BigCodecTokenizer(path=path)
        else:
            from .semantic import KMeansTokenizer

            tok = KMeansTokenizer.load(path, **options)
    except TypeError as e:  # an option the constructor does not take
        raise SpecError(f"{spec}: bad option ({first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 -- any loading failure is a bad spec here
        raise SpecError(f"{spec}: cannot load {kind} ({first_line(e)})") from None
    tok = tok.to(device).freeze()
    tok.spec = format_spec(kind, path, options) if path else spec
    return tok


__all__ = ["KINDS", "PROJECT_ROOT", "SpecError", "format_spec", "guess_kind", "load_tokenizer",
           "parse_spec", "resolve_path"]
