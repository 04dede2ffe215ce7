"""DAC (Descript Audio Codec) as an :class:`AudioTokenizer`.

Wraps the DAC architecture (Kumar et al., 2023: a residual-VQ waveform codec at
16, 24 or 44.1 kHz). Two implementations of the same architecture exist and
both are accepted:

- ``dac.DAC`` from the ``descript-audio-codec`` package (``backend="descript"``);
- ``speechbrain.lobes.models.discrete.dac.DAC``, SpeechBrain's pure-torch port
  (``backend="speechbrain"``), always installed with SpeechBrain.

They share the checkpoint format, a ``torch.save`` of
``{"state_dict": ..., "metadata": {"kwargs": <constructor arguments>}}``
(what ``dac.DAC.save(path, package=False)`` writes, what
``dac.utils.load_model(load_path=...)`` / ``DAC(load_path=..., load_pretrained=True)``
read, and the layout of the released ``weights*.pth`` files). They only differ
in how weight norm is stored (``weight_g``/``weight_v`` for descript,
``parametrizations.weight.original0/1`` for SpeechBrain); this module converts
between the two, loads strictly, and saves in the descript layout, so a file
written by :meth:`DACTokenizer.save_pretrained` loads with either
implementation and the released weights load into both.

``descript-audio-codec`` is optional: its dependency ``descript-audiotools``
pins ``protobuf<3.20``, which conflicts with ``onnxruntime>=1.27`` (needs
``protobuf>=4.25.8``), so it is not a requirement of this package; to use it,
``pip install descript-audio-codec && pip install "protobuf>=4.25.8"`` (dac
imports and runs with the newer protobuf). With ``backend="auto"`` the descript model is used when
the package imports and SpeechBrain's port otherwise; the tokens are the same.

No weights are downloaded here: pass a local checkpoint path.
"""

import os
from pathlib import Path

import torch

from speechbrain_gense.tokenizers.base import AudioTokenizer

#: Constructor arguments shared by both DAC implementations.
DAC_CONFIG_KEYS = (
    "encoder_dim",
    "encoder_rates",
    "latent_dim",
    "decoder_dim",
    "decoder_rates",
    "n_codebooks",
    "codebook_size",
    "codebook_dim",
    "quantizer_dropout",
    "sample_rate",
)

#: File names looked for, in order, when ``path`` is a directory
#: (``dac/weights.pth`` is the layout of audiotools' ``save_to_folder``).
CHECKPOINT_NAMES = ("dac.pth", "weights.pth", os.path.join("dac", "weights.pth"), "model.pth")

#: Where descript-audio-codec and SpeechBrain cache the released weights.
DESCRIPT_CACHE = Path.home() / ".cache" / "descript" / "dac"

_WN_SUFFIXES = (
    (".weight_g", ".parametrizations.weight.original0"),
    (".weight_v", ".parametrizations.weight.original1"),
)


def _dac_class(backend="auto"):
    """The DAC class of ``backend`` ("auto", "descript" or "speechbrain")."""
    if backend not in ("auto", "descript", "speechbrain"):
        raise ValueError(f"backend must be 'auto', 'descript' or 'speechbrain', got {backend!r}")
    if backend in ("auto", "descript"):
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import dac

            return dac.DAC
        except ImportError:
            if backend == "descript":
                raise ImportError(
                    "backend='descript' needs the descript-audio-codec package: "
                    "pip install descript-audio-codec && pip install 'protobuf>=4.25.8' "
                    "(it pins protobuf<3.20, which breaks onnxruntime; dac runs fine with "
                    "the newer protobuf). backend='speechbrain' needs nothing more"
                )
    from speechbrain.lobes.models.discrete.dac import DAC

    return DAC


def _plain(value):
    """Python scalars/lists for a ``weights_only`` checkpoint."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def dac_config(model):
    """Constructor arguments of a DAC model (either implementation)."""
    defaults = {"quantizer_dropout": False, "latent_dim": None}
    return {k: _plain(getattr(model, k, defaults.get(k))) for k in DAC_CONFIG_KEYS}


def convert_weight_norm_keys(state_dict, target_keys):
    """Renames weight-norm entries of ``state_dict`` to the naming of ``target_keys``.

    Old-style ``weight_g``/``weight_v`` and parametrization-style
    ``parametrizations.weight.original0/1`` are mapped onto each other where
    ``target_keys`` asks for the other one; other keys are left alone.

    Example
    -------
    >>> sd = {"conv.weight_g": 1, "conv.bias": 2}
    >>> sorted(convert_weight_norm_keys(sd, ["conv.parametrizations.weight.original0", "conv.bias"]))
    ['conv.bias', 'conv.parametrizations.weight.original0']
    """
    target_keys = set(target_keys)
    out = {}
    for key, value in state_dict.items():
        if key not in target_keys:
            for old, new in _WN_SUFFIXES:
                for a, b in ((old, new), (new, old)):
                    if key.endswith(a) and key[: -len(a)] + b in target_keys:
                        key = key[: -len(a)] + b
                        break
        out[key] = value
    return out


def resolve_dac_checkpoint(path):
    """The checkpoint file for ``path`` (a file, a directory, or a released model name).

    A directory is searched for :data:`CHECKPOINT_NAMES`, then for a single
    ``*.pth``/``*.pt`` file. A name such as ``"44khz"``, ``"16khz_8kbps"`` or
    ``"44khz_16kbps_1.0.0"`` is looked up in the cache where descript-audio-codec
    and SpeechBrain keep the released weights (``~/.cache/descript/dac``).
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        for name in CHECKPOINT_NAMES:
            if (p / name).is_file():
                return p / name
        found = sorted(list(p.glob("*.pth")) + list(p.glob("*.pt")))
        if len(found) == 1:
            return found[0]
        raise FileNotFoundError(
            f"no DAC checkpoint in directory {p} (looked for {', '.join(CHECKPOINT_NAMES)} "
            f"or a single *.pth/*.pt; found {[f.name for f in found]})"
        )
    parts = str(path).lower().split("_")
    if parts[0] in ("16khz", "24khz", "44khz") and len(parts) <= 3:
        pattern = f"weights_{parts[0]}_{parts[1] if len(parts) > 1 else '*'}_" \
                  f"{parts[2] if len(parts) > 2 else '*'}.pth"
        found = sorted(DESCRIPT_CACHE.glob(pattern))
        if found:
            return found[-1]
    raise FileNotFoundError(
        f"no DAC checkpoint at {path}; weights cannot be downloaded here, pass a local path "
        f"(a weights .pth file as released by descript-audio-codec, a directory holding one, "
        f"or a file written by DACTokenizer.save_pretrained)"
    )


def load_dac(path, backend="auto"):
    """Builds a DAC model from a local checkpoint and loads its weights strictly.

    Arguments
    ---------
    path : str or Path
        See :func:`resolve_dac_checkpoint`.
    backend : str
        "auto", "descript" or "speechbrain".

    Returns
    -------
    model : torch.nn.Module
        The DAC model, in eval mode.
    metadata : dict
        The checkpoint's metadata (``kwargs`` and anything saved with it).
    """
    file = resolve_dac_checkpoint(path)
    ckpt = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(
            f"{file} is not a DAC weights file (expected a dict with 'state_dict' and "
            f"'metadata'; torch.package files from DAC.save(package=True) are not supported)"
        )
    metadata = dict(ckpt.get("metadata") or {})
    kwargs = {k: v for k, v in (metadata.get("kwargs") or {}).items() if k in DAC_CONFIG_KEYS}
    model = _dac_class(backend)(**kwargs)
    state = convert_weight_norm_keys(ckpt["state_dict"], model.state_dict().keys())
    model.load_state_dict(state, strict=True)
    model.metadata = metadata
    return model.eval(), metadata


class DACTokenizer(AudioTokenizer):
    """DAC codes as ``tokens[B, T, K]`` (the first ``K`` codebooks of the RVQ).

    ``sample_rate`` comes from the model (16, 24 or 44.1 kHz for the released
    ones), ``frame_rate = sample_rate / hop_length`` (hop = product of the
    encoder strides: 320, 320, 512), ``vocab_size`` is the codebook size.
    Audio is right-padded to a multiple of the hop, so ``T = ceil(S / hop)``;
    decoding returns ``T * hop`` samples.

    Arguments
    ---------
    model : torch.nn.Module, optional
        A ready DAC model (``dac.DAC`` or SpeechBrain's ``DAC``).
    path : str or Path, optional
        A local checkpoint: a ``weights*.pth`` file as released by
        descript-audio-codec (also what SpeechBrain's DAC reads), a directory
        holding one (``dac.pth``, ``weights.pth`` or ``dac/weights.pth``), or a
        released name ("44khz", "16khz_8kbps", ...) found in
        ``~/.cache/descript/dac``. Nothing is downloaded.
    num_codebooks : int, optional
        ``K`` codebooks to use (the first ``K`` of the RVQ); default all.
    backend : str
        Which implementation to build: "auto" (descript-audio-codec when it
        imports, else SpeechBrain's port), "descript" or "speechbrain".
    **dac_config
        Constructor arguments of a new (random) model when neither ``model``
        nor ``path`` is given: ``encoder_dim``, ``encoder_rates``,
        ``latent_dim``, ``decoder_dim``, ``decoder_rates``, ``n_codebooks``,
        ``codebook_size``, ``codebook_dim``, ``sample_rate``.

    Example
    -------
    >>> tok = DACTokenizer(encoder_dim=4, encoder_rates=[2, 4], decoder_dim=8,
    ...                    decoder_rates=[4, 2], n_codebooks=4, codebook_size=32,
    ...                    codebook_dim=4, sample_rate=16000, num_codebooks=2)
    >>> tok.frame_rate, tok.hop_length, tok.num_codebooks, tok.vocab_size
    (2000.0, 8, 2, 32)
    >>> wav = torch.randn(2, 100)
    >>> tokens, lens = tok.encode(wav, torch.tensor([1.0, 0.5]))
    >>> tokens.shape, lens.tolist()
    (torch.Size([2, 13, 2]), [1.0, 0.5384615659713745])
    >>> tok.decode(tokens, lens).shape
    torch.Size([2, 104])
    """

    def __init__(self, model=None, path=None, num_codebooks=None, backend="auto", **dac_config):
        if model is not None and path is not None:
            raise ValueError("pass either model or path, not both")
        if (model is not None or path is not None) and dac_config:
            raise ValueError(f"config arguments {sorted(dac_config)} only apply to a new model")
        unknown = set(dac_config) - set(DAC_CONFIG_KEYS)
        if unknown:
            raise TypeError(f"unknown DAC config arguments {sorted(unknown)}; "
                            f"expected some of {DAC_CONFIG_KEYS}")
        metadata = {}
        if path is not None:
            model, metadata = load_dac(path, backend=backend)
        elif model is None:
            model = _dac_class(backend)(**dac_config)
        n_total = int(model.n_codebooks)
        if num_codebooks is None:
            num_codebooks = metadata.get("gense", {}).get("num_codebooks", n_total)
        if not 1 <= int(num_codebooks) <= n_total:
            raise ValueError(f"num_codebooks must be in [1, {n_total}], got {num_codebooks}")
        hop = int(model.hop_length)
        sample_rate = int(model.sample_rate)
        super().__init__(
            sample_rate=sample_rate,
            frame_rate=sample_rate / hop,
            num_codebooks=int(num_codebooks),
            vocab_size=int(model.codebook_size),
        )
        self.model = model
        self.freeze()

    def _encode(self, wav):
        x = self.pad_to_frames(wav).unsqueeze(1)
        codes = self.model.encode(x, n_quantizers=self.num_codebooks)[1]
        return codes[:, : self.num_codebooks].transpose(1, 2)

    def _decode(self, tokens):
        z = self.model.quantizer.from_codes(tokens.transpose(1, 2))[0]
        # Odd strides (the 16/24 kHz models) make the decoder a few samples short.
        return self.fit_to_frames(self.model.decode(z)[:, 0], tokens.shape[1])

    def save_pretrained(self, path):
        """Writes the model as a DAC weights file (descript layout) and returns its path.

        ``path`` is a directory (the file is ``path/dac.pth``) or a file name
        ending in ``.pth``/``.pt``. The file loads back with
        ``DACTokenizer(path=...)``, ``dac.DAC.load`` and SpeechBrain's
        ``DAC(load_path=..., load_pretrained=True)``.
        """
        path = Path(path)
        if path.suffix not in (".pth", ".pt"):
            path.mkdir(parents=True, exist_ok=True)
            path = path / "dac.pth"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        legacy = set()
        for key in state:
            for old, new in _WN_SUFFIXES:
                if key.endswith(new):
                    legacy.add(key[: -len(new)] + old)
        legacy.update(k for k in state if not k.endswith(tuple(n for _, n in _WN_SUFFIXES)))
        state = convert_weight_norm_keys(state, legacy)
        metadata = {"kwargs": dac_config(self.model),
                    "gense": {"num_codebooks": self.num_codebooks}}
        torch.save({"state_dict": state, "metadata": metadata}, path)
        return path
