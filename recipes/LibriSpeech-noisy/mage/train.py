#!/usr/bin/env python3
"""Trains MAGE (masked generative enhancer) on codec tokens of LibriSpeech-noisy.

1. Data: ``../librispeech_noisy_prepare.py`` (LibriSpeech + noise folders, or
   the embedded TTS corpus); noise and rooms are mixed on the fly.
2. Tokens: the clean training speech is tokenized once into a token cache
   (``token_cache_folder``, one folder per tokenizer fingerprint; DDP ranks
   share the work), and the token-frequency table of scarcity-aware masking
   is counted from it (``token_frequency_file``).
3. ``MaskedEnhancerBrain`` trains the enhancer and the corrector; each
   validation epoch also enhances a few utterances (DNSMOS OVRL, PESQ).
4. The best checkpoint is evaluated on the test mixtures and exported to
   ``model_folder`` (enhancer, corrector, token-frequency table).

Usage::

    python train.py hparams/mage.yaml
    python train.py hparams/mage.yaml --debug
    torchrun --nproc_per_node=2 train.py hparams/mage.yaml      # DDP (gloo on CPU)
    python train.py hparams/mage.yaml --mask_strategy random    # MaskGIT ablation

Authors
 * speechbrain-gense contributors
"""

import json
import logging
import os
import sys

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from speechbrain_gense.brains.masked import MaskedEnhancerBrain
from speechbrain_gense.data.pipelines import build_dataset, token_crop_pipeline
from speechbrain_gense.masking import TokenFrequency
from speechbrain_gense.tokenizers.cache import TokenCache

logger = logging.getLogger(__name__)

# --debug: debug tokenizer, tiny model and corpus (command-line overrides still win).
DEBUG_OVERRIDES = {"corpus_minutes": 0.3, "tokenizer_spec": "debug?vocab_size=64",
                   "vocab_size": 64, "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                   "segment_frames": 40, "batch_size": 2, "valid_batch_size": 2,
                   "valid_max_files": 2, "valid_decode_utterances": 1,
                   "decode_opts": {"steps": 2, "corrector_steps": 1, "remask_ratio": 0.1}}


def prepare_data(hparams):
    """Manifest paths (``train``, ``valid``, ``test``, ``noise_train``, ...) and ``data_root``."""
    if hparams["train_manifest"]:
        return {"train": hparams["train_manifest"], "valid": hparams["valid_manifest"],
                "test": hparams["test_manifest"], "data_root": hparams["data_root"]}
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy  # noqa: E402

    kwargs = dict(noise_folder=hparams["noise_folder"], seed=hparams["seed"],
                  sample_rate=hparams["sample_rate"],
                  corpus_opts={"minutes": hparams["corpus_minutes"], "progress": False})
    run_on_main(prepare_librispeech_noisy,
                args=[hparams["data_folder"], hparams["data_save_folder"]], kwargs=kwargs)
    paths = prepare_librispeech_noisy(hparams["data_folder"], hparams["data_save_folder"],
                                      skip_prep=True, **kwargs)
    paths["test"] = paths.get("test-clean")
    return paths


def token_frequency(cache, manifest, data_root, hparams):
    """Builds the token cache of the clean training speech and counts its tokens."""
    cache.build(manifest, data_root=data_root)  # DDP: each rank its share, then a barrier
    with open(manifest) as f:
        ids = sorted(json.load(f))
    tok = cache.tokenizer
    freq = TokenFrequency.from_tokens((cache.load(uid) for uid in ids), tok.vocab_size,
                                      tok.num_codebooks)
    if sb.utils.distributed.if_main_process():
        os.makedirs(os.path.dirname(hparams["token_frequency_file"]), exist_ok=True)
        freq.save(hparams["token_frequency_file"])
    used = int((freq.counts > 0).sum())
    logger.info("Token frequency table: %d training utterances, %d/%d tokens used",
                len(ids), used, freq.counts.numel())
    return freq


def dataio_prep(hparams, paths, cache):
    """Training set (cached clean tokens, crops, on-the-fly degradation); valid/test sets."""
    root = paths.get("data_root")
    degrader = hparams["degrader"](
        noise_files=paths.get("noise_train"), rir_files=paths.get("rir_train"),
        sample_rate=hparams["sample_rate"], data_root=root)
    train = sb.dataio.dataset.DynamicItemDataset.from_json(
        paths["train"], replacements={"data_root": root or os.path.dirname(
            os.path.abspath(paths["train"]))})
    train.add_dynamic_item(token_crop_pipeline(cache, degrader, hparams["segment_frames"],
                                               hparams["sample_rate"]))
    train.set_output_keys(["id", "clean_tokens", "clean_sig", "noisy_sig"])
    sets = {"train": train}
    for name in ("valid", "test"):
        if paths.get(name):
            data = build_dataset(paths[name], data_root=root, sample_rate=hparams["sample_rate"])
            sets[name] = data.filtered_sorted(sort_key="length",
                                              select_n=hparams["valid_max_files"])
    return sets


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if run_opts.get("debug"):
        user = load_hyperpyyaml(overrides) if overrides else {}
        overrides = {**DEBUG_OVERRIDES, **(user or {})}
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    mage = hparams["mage"]
    if mage.tokenizer.sample_rate != hparams["sample_rate"] or \
            mage.tokenizer.vocab_size != hparams["vocab_size"]:
        raise ValueError("sample_rate / vocab_size in the YAML must match the tokenizer "
                         f"({mage.tokenizer.sample_rate} Hz, {mage.tokenizer.vocab_size} codes)")

    paths = prepare_data(hparams)
    cache = TokenCache(hparams["token_cache_folder"], mage.tokenizer)
    mage.token_frequency = token_frequency(cache, paths["train"], paths.get("data_root"),
                                           hparams)
    sets = dataio_prep(hparams, paths, cache)

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
        mage.save(hparams["model_folder"])
        with open(os.path.join(hparams["output_folder"], "test_stats.json"), "w") as f:
            json.dump(brain.last_stats, f, indent=2)
    logger.info("MAGE exported to %s; test %s", hparams["model_folder"], brain.last_stats)


if __name__ == "__main__":
    main(sys.argv[1:])
