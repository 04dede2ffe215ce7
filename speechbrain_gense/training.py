"""Recipe steps shared by the recipes of every method (``recipes/*/*/train.py``).

A recipe's ``train.py`` shows its own steps (datasets, Brain, fit, export,
as in SpeechBrain's templates); these are the pieces several recipes share:

- :func:`load_recipe_hparams`: SpeechBrain's argument parsing, the ``--debug``
  settings of ``hparams/debug.yaml`` (next to the recipe's YAML; the
  command line still wins), DDP set-up and the experiment folder;
- :func:`prepare_recipe_data`: the manifests given in the YAML, or those the
  dataset's own ``prepare`` writes;
- :func:`build_token_frequency`: the token cache of the clean training speech
  and its token-frequency table;
- :func:`token_datasets`: cached clean-token crops with on-the-fly
  degradation for training, fixed (or degraded) mixtures for valid / test;
- :func:`export_enhancer`: the model folder (``save`` + ``inference.yaml``)
  and ``test_stats.json``, on the main process;
- :func:`warm_start_modules`: ``init_from``, the trained modules of an
  exported model folder (e.g. ``pretrained/mage``) copied into a new run that
  has no checkpoint to resume;
- :class:`Checkpointer`: SpeechBrain's checkpointer, made safe against a run
  killed while it saves.
"""

import json
import logging
import os
import pathlib
import zipfile

import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import METAFNAME, PARAMFILE_EXT
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from .data.pipelines import build_dataset, token_crop_pipeline
from .inference import write_inference_yaml
from .masking import TokenFrequency
from .models.debug import write_tiny_mage  # noqa: F401 -- moved; kept importable from here

logger = logging.getLogger(__name__)

#: File of ``--debug`` settings next to a recipe's hparams file.
DEBUG_YAML = "debug.yaml"


def debug_overrides_file(hparams_file):
    """The ``debug.yaml`` next to ``hparams_file`` (or None when there is none).

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> debug_overrides_file(os.path.join(folder, "mage.yaml")) is None
    True
    >>> open(os.path.join(folder, "debug.yaml"), "w").close()
    >>> os.path.basename(debug_overrides_file(os.path.join(folder, "mage.yaml")))
    'debug.yaml'
    """
    path = os.path.join(os.path.dirname(hparams_file), DEBUG_YAML)
    return path if os.path.isfile(path) else None


def load_recipe_hparams(argv, debug_overrides=None):
    """``sb.parse_arguments`` + the ``--debug`` settings + DDP init + YAML.

    Under ``--debug`` the settings of ``hparams/debug.yaml`` (next to the
    hparams file; for recipes without one, ``debug_overrides``) are applied
    below the command-line overrides: e.g. a debug tokenizer and a tiny
    model, on top of SpeechBrain's 2 batches x 2 epochs.

    Returns
    -------
    hparams_file, run_opts, hparams, overrides
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    debug_file = debug_overrides_file(hparams_file)
    if run_opts.get("debug") and debug_file:
        with open(debug_file) as f:
            debug_overrides = load_hyperpyyaml(f)
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
    set in ``hparams`` those manifests are used as they are (the training noise
    and rooms: ``noise_manifest`` / ``rir_manifest`` when given, else
    ``noise_train.json`` / ``rir_train.json`` next to the training manifest;
    each manifest's ``{data_root}`` is its own folder unless ``data_root`` is set);
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
    >>> paths = prepare_recipe_data({"train_manifest": "speech/train.json",
    ...                              "noise_manifest": "corpus/noise_train.json"}, prepare=None)
    >>> paths["noise_train"], "rir_train" in paths
    ('corpus/noise_train.json', False)
    """
    given = {k: hparams.get(f"{k}_manifest") for k in ("train", "valid", "test")}
    if given["train"] or given["test"]:
        paths = {**given, "data_root": hparams.get("data_root")}
        if given["train"]:
            folder = os.path.dirname(os.path.abspath(given["train"]))
            paths.update({k: os.path.join(folder, f"{k}.json") for k in ("noise_train", "rir_train")
                          if os.path.isfile(os.path.join(folder, f"{k}.json"))})
            for key, name in (("noise_train", "noise_manifest"), ("rir_train", "rir_manifest")):
                if hparams.get(name):
                    paths[key] = hparams[name]
        return paths
    kwargs = {"seed": hparams.get("seed", 1234), "sample_rate": hparams.get("sample_rate", 16000),
              "corpus_opts": {"minutes": hparams.get("corpus_minutes", 60.0), "progress": False}}
    if "noise_folder" in hparams:  # datasets with their own noise (DNS) have no such option
        kwargs["noise_folder"] = hparams["noise_folder"]
    args = [hparams.get("data_folder"), hparams["data_save_folder"]]
    run_on_main(prepare, args=args, kwargs=kwargs)
    paths = prepare(*args, skip_prep=True, **kwargs)
    paths["test"] = paths.get(test_split)
    return paths


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


def token_datasets(hparams, paths, cache):
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


def export_enhancer(model, hparams, brain=None, split="test"):
    """Writes the trained enhancer's folder and its test statistics (main process only).

    ``model.save(hparams["model_folder"], dtype=hparams["export_dtype"])``,
    its ``inference.yaml`` (so that ``EnhanceGenerative.from_hparams`` loads
    it) and ``<output_folder>/test_stats.json`` (``brain.last_stats``).

    Returns
    -------
    str
        The model folder.
    """
    folder = hparams["model_folder"]
    if sb.utils.distributed.if_main_process():
        model.save(folder, dtype=hparams.get("export_dtype"))
        write_inference_yaml(folder, method=model.method, overwrite=True)
        stats = dict(brain.last_stats) if brain is not None else {}
        with open(os.path.join(hparams["output_folder"], "test_stats.json"), "w") as f:
            json.dump({"split": split, **stats}, f, indent=2)
    logger.info("%s exported to %s; %s %s", model.method, folder, split,
                brain.last_stats if brain is not None else {})
    return folder


#: Where :func:`warm_start_modules` records what a run started from (in its ``save_folder``).
INIT_FROM_FILE = "init_from.json"


def warm_start_modules(modules, source, checkpointer=None, record_file=None):
    """``init_from``: copies an exported model's trained modules into ``modules``.

    A run with a checkpoint in its ``save_folder`` resumes from it (the
    checkpointer wins, nothing is copied). Otherwise the model folder
    ``source`` (written by a recipe's export, e.g. ``pretrained/mage``, or
    by ``save``) is loaded with :func:`~speechbrain_gense.models.base.load_enhancer`
    and each module of ``modules`` (the recipe's ``modules``: ``enhancer``,
    ``corrector`` for MAGE; ``n2s``, ``s2s`` for GenSE) takes the weights of
    the model's attribute of the same name, so training continues from
    shipped weights on a machine without the run's checkpoints, or fine-tunes
    them on new data (the optimizer and the learning-rate schedule start
    afresh; int8 or float16 exports come back as float32). Names or shapes
    that differ are one ``ValueError`` line before any training.

    Arguments
    ---------
    modules : dict of str -> torch.nn.Module
        The modules to initialise.
    source : str
        An exported model folder (shipped paths resolve from anywhere).
    checkpointer : speechbrain.utils.checkpoints.Checkpointer, optional
        When it has a checkpoint, nothing is copied.
    record_file : str, optional
        Where to write ``{"source", "modules"}`` (e.g. ``<save_folder>/init_from.json``).

    Returns
    -------
    list of str or None
        The names of the modules copied, or ``None`` when a checkpoint wins.

    Example
    -------
    >>> import tempfile, torch
    >>> from speechbrain_gense.models.debug import write_tiny_mage
    >>> from speechbrain_gense.models.mage import MAGE
    >>> folder = write_tiny_mage(tempfile.mkdtemp())
    >>> fresh = MAGE.load(folder)
    >>> _ = [torch.nn.init.zeros_(p) for p in fresh.enhancer.parameters()]
    >>> warm_start_modules({"enhancer": fresh.enhancer, "corrector": fresh.corrector}, folder)
    ['corrector', 'enhancer']
    >>> trained = MAGE.load(folder).enhancer.state_dict()
    >>> all(torch.equal(v, trained[k]) for k, v in fresh.enhancer.state_dict().items())
    True
    >>> warm_start_modules({"decoder": fresh.enhancer}, folder)
    Traceback (most recent call last):
    ...
    ValueError: init_from: ... has no module 'decoder' (a mage model)
    """
    from .models.base import load_enhancer
    from .paths import resolve_path

    if checkpointer is not None and checkpointer.find_checkpoint() is not None:
        logger.info("init_from %s ignored: the run resumes from its checkpoint", source)
        return None
    path = resolve_path(str(source))
    if not os.path.isdir(path):
        raise ValueError(f"init_from: no exported model folder at {source}")
    try:
        model = load_enhancer(path)
    except (FileNotFoundError, KeyError) as e:
        raise ValueError(f"init_from: {source} is not a model folder ({e})") from None
    loaded = {}
    for name in sorted(modules):
        theirs = getattr(model, name, None)
        if not isinstance(theirs, torch.nn.Module):
            raise ValueError(f"init_from: {source} has no module {name!r} (a {model.method} "
                             "model)")
        ours, state = modules[name].state_dict(), theirs.state_dict()
        differ = sorted(k for k in set(ours) | set(state)
                        if k not in ours or k not in state or ours[k].shape != state[k].shape)
        if differ:
            shown = ", ".join(differ[:3]) + (f" (+{len(differ) - 3} more)" if len(differ) > 3
                                             else "")
            raise ValueError(f"init_from: {source}'s {name} differs from this run's in "
                             f"{shown}: give the recipe the model's sizes")
        loaded[name] = state
    for name, state in loaded.items():
        modules[name].load_state_dict(state)
    logger.info("Initialised %s from %s (no checkpoint to resume)", ", ".join(loaded), source)
    if record_file and sb.utils.distributed.if_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(record_file)), exist_ok=True)
        with open(record_file, "w") as f:
            json.dump({"source": str(source), "modules": sorted(loaded)}, f)
    return sorted(loaded)


class Checkpointer(sb.utils.checkpoints.Checkpointer):
    """SpeechBrain's :class:`~speechbrain.utils.checkpoints.Checkpointer`, safe
    against a run killed while it saves.

    SpeechBrain writes a checkpoint's ``CKPT.yaml`` first and its parameter
    files after, so a run killed in between leaves a folder that looks like a
    checkpoint and cannot be loaded: the next run crashes where it should
    resume. Here ``CKPT.yaml`` is written last (as ``CKPT.yaml.part``, renamed
    once every file is on disk), and a checkpoint folder that misses a
    recoverable's file, or holds a truncated torch file, is left out (with a
    warning) and left on disk as it is. Everything else is SpeechBrain's.

    Example
    -------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> layer = torch.nn.Linear(2, 2)
    >>> ckpt = Checkpointer(folder, recoverables={"layer": layer})
    >>> _ = ckpt.save_checkpoint()
    >>> sorted(p.name for p in ckpt.find_checkpoint().path.iterdir())
    ['CKPT.yaml', 'layer.ckpt']
    >>> ckpt.add_recoverable("other", torch.nn.Linear(2, 2))
    >>> ckpt.find_checkpoint() is None  # no file for "other": not loadable
    True
    """

    _META_PART = METAFNAME + ".part"

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):
        # Called by SpeechBrain's save_checkpoint before the parameter files:
        # written under another name, renamed by save_checkpoint at the end.
        fpath = pathlib.Path(fpath)
        return super()._save_checkpoint_metafile(fpath.with_name(self._META_PART),
                                                 meta_to_include, end_of_epoch)

    def save_checkpoint(self, *args, **kwargs):
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if checkpoint is not None:  # main process: every file is written
            os.replace(checkpoint.path / self._META_PART, checkpoint.path / METAFNAME)
        return checkpoint

    def _incomplete(self, ckpt_dir):
        """Why ``ckpt_dir`` cannot be loaded (None when it can)."""
        for name in self.recoverables:
            path = ckpt_dir / f"{name}{PARAMFILE_EXT}"
            if not path.exists():
                return f"no {path.name}"
            with open(path, "rb") as f:
                torch_file = f.read(4) == b"PK\x03\x04"  # torch.save's zip format
            if torch_file and not zipfile.is_zipfile(path):
                return f"{path.name} is truncated"
        return None

    def _list_checkpoint_dirs(self):
        for part in self.checkpoints_dir.glob(f"*/{self._META_PART}"):
            if not (part.parent / METAFNAME).exists():
                logger.warning("Skipping the incomplete checkpoint %s (killed while saving)",
                               part.parent)
        dirs = []
        for ckpt_dir in super()._list_checkpoint_dirs():
            why = self._incomplete(ckpt_dir)
            if why is None:
                dirs.append(ckpt_dir)
            else:
                logger.warning("Skipping the incomplete checkpoint %s (%s; the run was "
                               "probably killed while saving it)", ckpt_dir, why)
        return dirs


#: Old name of :func:`token_datasets` (kept while recipes move over).
mage_datasets = token_datasets

__all__ = ["Checkpointer", "DEBUG_YAML", "INIT_FROM_FILE", "build_token_frequency",
           "debug_overrides_file", "export_enhancer", "load_recipe_hparams",
           "prepare_recipe_data", "token_datasets", "warm_start_modules"]
