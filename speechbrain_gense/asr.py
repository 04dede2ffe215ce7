"""A small character CTC ASR for the SE → ASR chain, as a SpeechBrain ``EncoderASR`` folder.

``recipes/LibriSpeech-noisy/asr_ctc`` trains it (Fbank → CRDNN → CTC over
characters) and :func:`write_asr_folder` exports it to a folder that
SpeechBrain's own interface loads, nothing else needed::

    from speechbrain.inference.ASR import EncoderASR
    asr = EncoderASR.from_hparams(source="pretrained/asr_ctc", savedir="pretrained/asr_ctc")
    asr.transcribe_file("speech.wav")

(:func:`load_asr` does the same without a network, finding ``pretrained/...``
in the project from any working directory.) ``recipes/LibriSpeech-noisy/se_asr``
then measures what enhancement does for this clean-trained recogniser.

The folder holds
- ``hyperparams.yaml``: ``compute_features`` (Fbank), ``normalize``, ``enc``
  (CRDNN), ``ctc_lin``, ``log_softmax`` chained in ``encoder`` (the module
  ``EncoderASR`` runs), ``tokenizer`` (a ``CTCTextEncoder``),
  ``decoding_function`` (greedy CTC) and the ``pretrainer``;
- ``asr.ckpt`` (CRDNN + output layer), ``normalizer.ckpt``, ``tokenizer.ckpt``.
"""

import logging
import os

import torch

logger = logging.getLogger(__name__)

#: Name of the hyperparameter file of an exported ASR folder (SpeechBrain's default).
HPARAMS_FILE = "hyperparams.yaml"

#: Characters of the CTC output (plus the blank); words are upper-cased.
ALPHABET = " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ"

#: Keys of a recipe YAML that define the exported network (see :func:`write_asr_folder`).
ARCH_KEYS = ("sample_rate", "n_fft", "n_mels", "norm_type", "cnn_blocks", "cnn_channels",
             "cnn_kernelsize", "time_pooling", "time_pooling_size", "rnn_class", "rnn_layers",
             "rnn_neurons", "rnn_bidirectional", "dnn_blocks", "dnn_neurons", "dropout",
             "output_neurons", "blank_index")

#: A tiny network (tests and ``--debug`` runs).
TINY_ASR_CONFIG = {
    "sample_rate": 16000, "n_fft": 400, "n_mels": 20, "norm_type": "sentence",
    "cnn_blocks": 1, "cnn_channels": [4], "cnn_kernelsize": [3, 3], "time_pooling": True,
    "time_pooling_size": 2, "rnn_class": "speechbrain.nnet.RNN.LSTM", "rnn_layers": 1,
    "rnn_neurons": 16, "rnn_bidirectional": True, "dnn_blocks": 1, "dnn_neurons": 16,
    "dropout": 0.0, "output_neurons": len(ALPHABET) + 1, "blank_index": 0}

_TEMPLATE = """\
# ############################################################################
# A character CTC ASR: Fbank -> {norm_type} normalisation -> CRDNN -> CTC.
# Load it with
#   speechbrain.inference.ASR.EncoderASR.from_hparams(source=<this folder>,
#                                                     savedir=<this folder>)
# Written by speechbrain_gense.asr.write_asr_folder
# (recipes/LibriSpeech-noisy/asr_ctc/train.py).
# ############################################################################

sample_rate: {sample_rate}
n_fft: {n_fft}
n_mels: {n_mels}
output_neurons: {output_neurons}
blank_index: {blank_index}

compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_fft: !ref <n_fft>
    n_mels: !ref <n_mels>

normalize: !new:speechbrain.processing.features.InputNormalization
    norm_type: {norm_type}

enc: !new:speechbrain.lobes.models.CRDNN.CRDNN
    input_shape: [null, null, !ref <n_mels>]
    activation: !name:torch.nn.LeakyReLU
    dropout: {dropout}
    cnn_blocks: {cnn_blocks}
    cnn_channels: {cnn_channels}
    cnn_kernelsize: {cnn_kernelsize}
    time_pooling: {time_pooling}
    time_pooling_size: {time_pooling_size}
    rnn_class: !name:{rnn_class}
    rnn_layers: {rnn_layers}
    rnn_neurons: {rnn_neurons}
    rnn_bidirectional: {rnn_bidirectional}
    dnn_blocks: {dnn_blocks}
    dnn_neurons: {dnn_neurons}

ctc_lin: !new:speechbrain.nnet.linear.Linear
    input_size: {dnn_neurons}
    n_neurons: !ref <output_neurons>

log_softmax: !new:speechbrain.nnet.activations.Softmax
    apply_log: True

# What EncoderASR runs: waveforms [B, S] + relative lengths -> log-probabilities.
encoder: !new:speechbrain.nnet.containers.LengthsCapableSequential
    compute_features: !ref <compute_features>
    normalize: !ref <normalize>
    enc: !ref <enc>
    ctc_lin: !ref <ctc_lin>
    log_softmax: !ref <log_softmax>

asr_model: !new:torch.nn.ModuleList
    - [!ref <enc>, !ref <ctc_lin>]

tokenizer: !new:speechbrain.dataio.encoder.CTCTextEncoder

decoding_function: !name:speechbrain.decoders.ctc_greedy_decode
    blank_id: !ref <blank_index>

modules:
    encoder: !ref <encoder>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        asr: !ref <asr_model>
        normalizer: !ref <normalize>
        tokenizer: !ref <tokenizer>
"""


def text_to_chars(words, alphabet=ALPHABET):
    """The characters of a transcript the ASR writes: upper case, others dropped.

    Arguments
    ---------
    words : str
        Transcript.
    alphabet : str
        Characters kept.

    Returns
    -------
    list of str

    Example
    -------
    >>> "".join(text_to_chars("It's  fine, thanks!"))
    "IT'S FINE THANKS"
    """
    from .metrics.wer import normalize_text

    return [c for c in normalize_text(words) if c in alphabet]


def make_label_encoder(alphabet=ALPHABET, blank_index=0):
    """A ``CTCTextEncoder`` over ``alphabet`` with the blank at ``blank_index``.

    Example
    -------
    >>> enc = make_label_encoder()
    >>> len(enc), enc.get_blank_index(), enc.encode_sequence(list("AB "))
    (29, 0, [3, 4, 1])
    """
    from speechbrain.dataio.encoder import CTCTextEncoder

    labels = list(alphabet)
    if not 0 <= blank_index <= len(labels):
        raise ValueError(f"blank_index {blank_index} is outside 0..{len(labels)}")
    encoder = CTCTextEncoder()
    for label in labels[:blank_index]:
        encoder.add_label(label)
    encoder.add_blank()
    for label in labels[blank_index:]:
        encoder.add_label(label)
    encoder.expect_len(len(labels) + 1)
    return encoder


def _arch_value(key, value):
    if key == "rnn_class" and not isinstance(value, str):
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def asr_config(hparams):
    """The :data:`ARCH_KEYS` of a recipe's hparams (defaults: :data:`TINY_ASR_CONFIG`'s
    ``n_fft``, ``norm_type`` and ``dropout``), as plain values.

    Example
    -------
    >>> import speechbrain.nnet.RNN
    >>> cfg = asr_config({**TINY_ASR_CONFIG, "rnn_class": speechbrain.nnet.RNN.GRU})
    >>> cfg["rnn_class"], cfg["cnn_channels"]
    ('speechbrain.nnet.RNN.GRU', '[4]')
    """
    defaults = {"n_fft": 400, "norm_type": "sentence", "dropout": 0.15}
    missing = [k for k in ARCH_KEYS if k not in hparams and k not in defaults]
    if missing:
        raise KeyError(f"ASR hyperparameters missing: {', '.join(missing)}")
    return {k: _arch_value(k, hparams.get(k, defaults.get(k))) for k in ARCH_KEYS}


def write_asr_folder(folder, config, normalize, model, ctc_lin, label_encoder, check=True,
                     dtype="float16"):
    """Exports a trained CTC ASR to a folder ``EncoderASR.from_hparams`` loads.

    Arguments
    ---------
    folder : str
        Output folder (created; its files are replaced).
    config : dict
        The network's hyperparameters (:data:`ARCH_KEYS`; see :func:`asr_config`).
    normalize : speechbrain.processing.features.InputNormalization
        The trained feature normalisation.
    model : torch.nn.Module
        The CRDNN.
    ctc_lin : torch.nn.Module
        The output layer.
    label_encoder : speechbrain.dataio.encoder.CTCTextEncoder
        The characters.
    check : bool
        Load the folder back and check that it gives the same log-probabilities
        on a test signal (an error otherwise).
    dtype : str, optional
        Storage type of the network's floating-point weights (``"float16"``
        halves the file; ``EncoderASR`` loads them into its float32
        parameters). ``None`` keeps them as they are.

    Returns
    -------
    str
        ``folder``.

    Example
    -------
    >>> import tempfile
    >>> folder = tiny_asr_folder(os.path.join(tempfile.mkdtemp(), "asr"))
    >>> sorted(os.listdir(folder))
    ['asr.ckpt', 'hyperparams.yaml', 'normalizer.ckpt', 'tokenizer.ckpt']
    """
    config = asr_config(config)
    os.makedirs(folder, exist_ok=True)
    state = torch.nn.ModuleList([model, ctc_lin]).state_dict()
    if dtype is not None:
        state = type(state)((k, v.to(getattr(torch, dtype)) if v.is_floating_point() else v)
                            for k, v in state.items())
    torch.save(state, os.path.join(folder, "asr.ckpt"))
    normalize._save(os.path.join(folder, "normalizer.ckpt"))
    label_encoder.save(os.path.join(folder, "tokenizer.ckpt"))
    with open(os.path.join(folder, HPARAMS_FILE), "w", encoding="utf-8") as f:
        f.write(_TEMPLATE.format(**config))
    if check:
        _check_export(folder, config, normalize, model, ctc_lin,
                      atol=1e-4 if dtype in (None, "float32") else 5e-2)
    return folder


@torch.no_grad()
def _check_export(folder, config, normalize, model, ctc_lin, atol=1e-4):
    """Loads ``folder`` and compares its output with the modules'."""
    from speechbrain.lobes.features import Fbank

    asr = load_asr(folder)
    wav = 0.1 * torch.randn(1, int(config["sample_rate"]),
                            generator=torch.Generator().manual_seed(0))
    lens = torch.ones(1)
    modes = [m.training for m in (normalize, model, ctc_lin)]
    for m in (normalize, model, ctc_lin):
        m.eval()
    try:
        device = next(model.parameters()).device
        feats = Fbank(sample_rate=int(config["sample_rate"]), n_fft=int(config["n_fft"]),
                      n_mels=int(config["n_mels"]))(wav).to(device)
        ref = ctc_lin(model(normalize(feats, lens.to(device)))).log_softmax(-1).cpu()
    finally:
        for m, mode in zip((normalize, model, ctc_lin), modes):
            m.train(mode)
    out = asr.encode_batch(wav, lens).cpu()
    if out.shape != ref.shape or not torch.allclose(out, ref, atol=atol):
        raise RuntimeError(f"{folder}: the exported ASR does not reproduce the trained one")


def tiny_asr_folder(folder, seed=0, config=None):
    """Writes a randomly initialised ASR folder (tests, ``--debug`` runs).

    Arguments
    ---------
    folder : str
        Output folder.
    seed : int
        Seed of the weights.
    config : dict, optional
        Network (default: :data:`TINY_ASR_CONFIG`).

    Returns
    -------
    str
        ``folder``.

    Example
    -------
    >>> import tempfile
    >>> asr = load_asr(tiny_asr_folder(os.path.join(tempfile.mkdtemp(), "asr")))
    >>> words, _ = asr.transcribe_batch(0.1 * torch.randn(2, 8000), torch.tensor([1.0, 0.5]))
    >>> len(words), all(set(w) <= set(ALPHABET) for w in words)
    (2, True)
    """
    from hyperpyyaml import load_hyperpyyaml

    config = asr_config({**TINY_ASR_CONFIG, **(config or {})})
    torch.manual_seed(seed)
    modules = load_hyperpyyaml(_TEMPLATE.format(**config))
    feats = modules["compute_features"](0.1 * torch.randn(1, 1600))
    modules["normalize"](feats, torch.ones(1))  # global stats need one update
    label_encoder = make_label_encoder(blank_index=int(config["blank_index"]))
    return write_asr_folder(folder, config, modules["normalize"], modules["enc"],
                            modules["ctc_lin"], label_encoder, check=False)


def load_asr(source, device="cpu", savedir=None):
    """Loads an exported ASR folder with ``EncoderASR`` (local files only).

    A relative ``source`` not found from the working directory is looked up
    in the project checkout (``pretrained/asr_ctc`` works from anywhere).

    Arguments
    ---------
    source : str
        The folder (holding ``hyperparams.yaml``).
    device : str
        Device of the model.
    savedir : str, optional
        Where SpeechBrain links the files (default: nowhere, read in place).

    Returns
    -------
    speechbrain.inference.ASR.EncoderASR

    Raises
    ------
    FileNotFoundError
        One-line message when the folder or its ``hyperparams.yaml`` is missing.

    Example
    -------
    >>> load_asr("/no/such/asr")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /no/such/asr: no such ASR folder (train one with recipes/LibriSpeech-noisy/asr_ctc/train.py)
    """
    from speechbrain.inference.ASR import EncoderASR
    from speechbrain.utils.fetching import FetchConfig, LocalStrategy

    from .tokenizers.registry import resolve_path

    folder = resolve_path(os.fspath(source))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{source}: no such ASR folder (train one with "
                                "recipes/LibriSpeech-noisy/asr_ctc/train.py)")
    if not os.path.isfile(os.path.join(folder, HPARAMS_FILE)):
        raise FileNotFoundError(f"{source}: not an ASR folder ({HPARAMS_FILE} missing)")
    folder = os.path.abspath(folder)
    asr = EncoderASR.from_hparams(
        source=folder, savedir=savedir, run_opts={"device": device},
        fetch_config=FetchConfig(allow_network=False),
        local_strategy=LocalStrategy.NO_LINK if savedir is None else LocalStrategy.SYMLINK)
    if hasattr(asr.tokenizer, "expect_len"):  # a CTCTextEncoder: the loaded size is the size
        asr.tokenizer.expect_len(len(asr.tokenizer))
    return asr


__all__ = ["ALPHABET", "ARCH_KEYS", "HPARAMS_FILE", "TINY_ASR_CONFIG", "asr_config", "load_asr",
           "make_label_encoder", "text_to_chars", "tiny_asr_folder", "write_asr_folder"]
