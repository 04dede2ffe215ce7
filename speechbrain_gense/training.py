"""Recipe steps shared by the datasets' MAGE recipes (``recipes/*/mage/train.py``).

A recipe parses its arguments, prepares its dataset (its own
``*_prepare.py``) and hands the manifests to :func:`train_mage`, which does
the rest: token cache and token-frequency table, datasets, the
:class:`~speechbrain_gense.brains.masked.MaskedEnhancerBrain` fit, the test
evaluation and the export of the model folder.
"""

import json
import logging
import os

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from .brains.masked import MaskedEnhancerBrain
from .data.pipelines import build_dataset, token_crop_pipeline
from .inference import write_inference_yaml
from .masking import TokenFrequency
from .tokenizers.cache import TokenCache

logger = logging.getLogger(__name__)

#: ``--debug`` settings of the MAGE recipes: debug tokenizer, tiny model and
#: corpus, 2-step decoding (command-line overrides still win).
MAGE_DEBUG_OVERRIDES = {
    "corpus_minutes": 0.3, "tokenizer_spec": "debug?vocab_size=64", "vocab_size": 64,
    "hidden_size": 32, "num_layers": 2, "num_heads": 2, "segment_frames": 40,
    "batch_size": 2, "valid_batch_size": 2, "valid_max_files": 2,
    "valid_decode_utterances": 1,
    "decode_opts": {"steps": 2, "corrector_steps": 1, "remask_ratio": 0.1}}


def load_recipe_hparams(argv, debug_overrides=None):
    """``sb.parse_arguments`` + ``debug_overrides`` under ``--debug`` + DDP init + YAML.

    Returns
    -------
    hparams_file, run_opts, hparams, overrides
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if run_opts.get("debug") and debug_overrides:
        user = load_hyperpyyaml(overrides) if overrides else {}
        overrides = {**debug_overrides, **(user or {})}
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    return hparams_file, run_opts, hparams, overrides


def prepare_recipe_data(hparams, prepare, test_split="test-clean"):
    """Manifests of a recipe: the YAML's own, or those its dataset's ``prepare`` writes.

    With ``train_manifest`` (or, for evaluation-only recipes, ``test_manifest``)
    set in ``hparams`` those manifests are used as they are (``noise_train.json``
    and ``rir_train.json`` next to the training manifest are picked up);
    otherwise ``prepare(data_folder, data_save_folder, ...)`` runs on the main
    process (e.g. ``prepare_librispeech_noisy``: LibriSpeech with
    ``data_folder``, or the embedded TTS corpus of ``corpus_minutes``).

    Arguments
    ---------
    hparams : dict
        Recipe hparams: ``train_manifest``/``valid_manifest``/``test_manifest``,
        ``data_root``, ``data_folder``, ``noise_folder``, ``data_save_folder``,
        ``seed``, ``sample_rate``, ``corpus_minutes`` (missing keys: None).
    prepare : callable
        The dataset's preparation function.
    test_split : str
        The prepared manifest used as ``test``.

    Returns
    -------
    dict
        ``train``, ``valid``, ``test`` (paths or None), ``data_root`` and,
        when they exist, ``noise_train``/``rir_train``.

    Example
    -------
    >>> paths = prepare_recipe_data({"test_manifest": "t.json"}, prepare=None)
    >>> paths["test"], paths["train"]
    ('t.json', None)
    """
    given = {k: hparams.get(f"{k}_manifest") for k in ("train", "valid", "test")}
    if given["train"] or given["test"]:
        paths = {**given, "data_root": hparams.get("data_root")}
        if given["train"]:
            folder = os.path.dirname(os.path.abspath(given["train"]))
            paths.update({k: os.path.join(folder, f"{k}.json") for k in ("noise_train", "rir_train")
                          if os.path.isfile(os.path.join(folder, f"{k}.json"))})
        return paths
    kwargs = {"noise_folder": hparams.get("noise_folder"), "seed": hparams.get("seed", 1234),
              "sample_rate": hparams.get("sample_rate", 16000),
              "corpus_opts": {"minutes": hparams.get("corpus_minutes", 60.0), "progress": False}}
    args = [hparams.get("data_folder"), hparams["data_save_folder"]]
    run_on_main(prepare, args=args, kwargs=kwargs)
    paths = prepare(*args, skip_prep=True, **kwargs)
    paths["test"] = paths.get(test_split)
    return paths


def write_tiny_mage(folder, vocab_size=32, seed=0, max_position=None):
    """Writes a tiny, randomly initialised MAGE model folder with its ``inference.yaml``.

    For tests and ``--debug`` runs of recipes that need an enhancer:
    ``EnhanceGenerative.from_hparams(source=folder)`` loads it (debug
    tokenizer, 2-layer enhancer, corrector, 3 decoding steps).

    Arguments
    ---------
    folder : str
        Output folder.
    vocab_size : int
        Codebook size of the debug tokenizer.
    seed : int
        Seed of the weights.
    max_position : int, optional
        Longest sequence of the enhancer in token frames (default: that of
        ``TINY_CONFIG``).

    Returns
    -------
    str
        ``folder``.

    Example
    -------
    >>> import tempfile
    >>> folder = write_tiny_mage(os.path.join(tempfile.mkdtemp(), "mage"))
    >>> all(os.path.isfile(os.path.join(folder, f)) for f in ("inference.yaml", "mage.json"))
    True
    """
    from .models.corrector import Corrector
    from .models.mage import MAGE
    from .models.masked_enhancer import TINY_CONFIG, MaskedEnhancer
    from .tokenizers.registry import load_tokenizer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(f"debug?vocab_size={vocab_size}")
    config = dict(TINY_CONFIG, **({"max_position": int(max_position)} if max_position else {}))
    mage = MAGE(tokenizer, MaskedEnhancer(vocab_size, **config),
                corrector=Corrector(TINY_CONFIG["hidden_size"], vocab_size, dim=16),
                token_frequency=TokenFrequency(torch.arange(vocab_size, 0, -1)),
                decode_opts={"steps": 3, "corrector_steps": 1, "remask_ratio": 0.2})
    mage.save(folder)
    write_inference_yaml(folder, overwrite=True)
    return folder


def build_token_frequency(cache, manifest, data_root=None, out_file=None):
    """Tokenizes the clean speech of ``manifest`` into ``cache`` and counts the tokens.

    Under DDP each rank tokenizes its share, then all meet at a barrier.

    Returns
    -------
    TokenFrequency
    """
    cache.build(manifest, data_root=data_root)
    with open(manifest) as f:
        ids = sorted(json.load(f))
    tok = cache.tokenizer
    freq = TokenFrequency.from_tokens((cache.load(uid) for uid in ids), tok.vocab_size,
                                      tok.num_codebooks)
    if out_file and sb.utils.distributed.if_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(out_file)), exist_ok=True)
        freq.save(out_file)
    logger.info("Token frequency table: %d training utterances, %d/%d tokens used",
                len(ids), int((freq.counts > 0).sum()), freq.counts.numel())
    return freq


def mage_datasets(hparams, paths, cache):
    """Training set (cached clean tokens, aligned crops, on-the-fly degradation)
    and, when their manifests exist, ``valid`` / ``test`` sets.

    Valid/test entries with a fixed mixture (``noisy_wav``) are read as they
    are; clean-only ones are degraded on the fly as in training.
    """
    root = paths.get("data_root")
    degrader = hparams["degrader"](
        noise_files=paths.get("noise_train"), rir_files=paths.get("rir_train"),
        sample_rate=hparams["sample_rate"], data_root=root)
    train_root = root or os.path.dirname(os.path.abspath(paths["train"]))
    train = sb.dataio.dataset.DynamicItemDataset.from_json(
        paths["train"], replacements={"data_root": train_root})
    train.add_dynamic_item(token_crop_pipeline(cache, degrader, hparams["segment_frames"],
                                               hparams["sample_rate"]))
    train.set_output_keys(["id", "clean_tokens", "clean_sig", "noisy_sig"])
    sets = {"train": train}
    for name in ("valid", "test"):
        manifest = paths.get(name)
        if not manifest or not os.path.isfile(manifest):
            continue
        with open(manifest) as f:
            entries = json.load(f)
        if not entries:
            logger.warning("%s manifest %s is empty: no %s set", name, manifest, name)
            continue
        fixed = all(e.get("noisy_wav") for e in entries.values())
        data = build_dataset(manifest, degrader=None if fixed else degrader, data_root=root,
                             sample_rate=hparams["sample_rate"])
        sets[name] = data.filtered_sorted(sort_key="length", select_n=hparams["valid_max_files"])
    return sets


def train_mage(hparams, run_opts, paths):
    """Token cache + frequency table, fit, test evaluation, export of the model folder.

    Arguments
    ---------
    hparams : dict
        The loaded recipe YAML (``mage``, ``modules``, ``opt_class``,
        ``checkpointer``, ``epoch_counter``, ...).
    run_opts : dict
        SpeechBrain run options.
    paths : dict
        Manifests: ``train`` (clean, for on-the-fly mixing), optional
        ``valid``/``test``, ``noise_train``/``rir_train`` and ``data_root``.

    Returns
    -------
    MaskedEnhancerBrain
        The trained Brain (``last_stats``: the test statistics).
    """
    mage = hparams["mage"]
    if mage.tokenizer.sample_rate != hparams["sample_rate"] or \
            mage.tokenizer.vocab_size != hparams["vocab_size"]:
        raise ValueError("sample_rate / vocab_size in the YAML must match the tokenizer "
                         f"({mage.tokenizer.sample_rate} Hz, {mage.tokenizer.vocab_size} codes)")
    cache = TokenCache(hparams["token_cache_folder"], mage.tokenizer)
    mage.token_frequency = build_token_frequency(cache, paths["train"], paths.get("data_root"),
                                                 hparams["token_frequency_file"])
    sets = mage_datasets(hparams, paths, cache)

    brain = MaskedEnhancerBrain(modules=hparams["modules"], opt_class=hparams["opt_class"],
                                hparams=hparams, run_opts=run_opts,
                                checkpointer=hparams["checkpointer"])
    brain.fit(hparams["epoch_counter"], sets["train"], sets.get("valid"),
              train_loader_kwargs={"batch_size": hparams["batch_size"], "shuffle": True,
                                   "num_workers": hparams["num_workers"]},
              valid_loader_kwargs={"batch_size": hparams["valid_batch_size"]})
    if "test" in sets:
        brain.evaluate(sets["test"], min_key="loss",
                       test_loader_kwargs={"batch_size": hparams["valid_batch_size"]})
    else:
        brain.checkpointer.recover_if_possible(min_key="loss")
    if sb.utils.distributed.if_main_process():
        mage.save(hparams["model_folder"], dtype=hparams.get("export_dtype"))
        write_inference_yaml(hparams["model_folder"])
        with open(os.path.join(hparams["output_folder"], "test_stats.json"), "w") as f:
            json.dump({"split": "test" if "test" in sets else "valid (no test set)",
                       **brain.last_stats}, f, indent=2)
    logger.info("MAGE exported to %s; test %s", hparams["model_folder"], brain.last_stats)
    return brain


__all__ = ["MAGE_DEBUG_OVERRIDES", "build_token_frequency", "load_recipe_hparams", "mage_datasets",
           "prepare_recipe_data", "train_mage", "write_tiny_mage"]
