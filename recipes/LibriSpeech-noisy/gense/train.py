#!/usr/bin/env python3
"""Trains GenSE (N2S + S2S token language models) on LibriSpeech-noisy.

1. Data: ``../librispeech_noisy_prepare.py`` (LibriSpeech + noise folders, or
   the embedded TTS corpus); noise and rooms are mixed on the fly.
2. Tokens: the clean training speech is tokenized once by the codec into a
   token cache (``token_cache_folder``); training crops ``segment_frames``
   acoustic frames with the matching audio. Semantic tokens (MFCC / SSL
   k-means) and the noisy signal's tokens are computed on the fly.
3. ``TokenModelBrain`` runs the model's own objective
   (``GenSE.compute_objectives``: teacher-forced next-token cross-entropy of
   N2S and S2S on their target parts); each validation epoch also enhances a
   few utterances with ``GenSE.enhance`` (DNSMOS OVRL, PESQ-WB).
4. The best checkpoint is evaluated on the test mixtures and exported to
   ``model_folder`` with its ``inference.yaml`` (``EnhanceGenerative.from_hparams``).

Usage::

    python train.py hparams/gense.yaml
    python train.py hparams/gense.yaml --debug
    python train.py hparams/gense.yaml --init_from pretrained/gense ...  # continue the shipped
        # model, with its tokenizer and hint options (RESULTS.md, "Shipped model")
    torchrun --nproc_per_node=2 train.py hparams/gense.yaml --distributed_backend gloo

Authors
 * speechbrain-gense contributors
"""

import json
import logging
import os
import sys

import speechbrain as sb

from speechbrain_gense.brains.token_model import TokenModelBrain
from speechbrain_gense.inference import write_inference_yaml
from speechbrain_gense.tokenizers.cache import TokenCache
from speechbrain_gense.training import (INIT_FROM_FILE, load_recipe_hparams, mage_datasets,
                                        prepare_recipe_data, warm_start_modules)

logger = logging.getLogger(__name__)

#: ``--debug``: debug tokenizers, tiny LMs, a tiny corpus (command-line overrides win).
DEBUG_OVERRIDES = {
    "corpus_minutes": 0.3, "semantic_spec": "debug?hop=320,vocab_size=16",
    "acoustic_spec": "debug?vocab_size=32", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
    "max_seconds": 0.5, "segment_frames": 40, "n2s_positions": 64, "s2s_positions": 96,
    "inference_overlap_seconds": 0.1, "batch_size": 2, "valid_batch_size": 2,
    "valid_max_files": 2, "valid_decode_utterances": 1,
}


def prepare_data(hparams):
    """Manifest paths (``train``, ``valid``, ``test``, ``noise_train``, ...) and ``data_root``."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy  # noqa: E402

    return prepare_recipe_data(hparams, prepare_librispeech_noisy)


def train_gense(hparams, run_opts, paths):
    """Datasets, fit, test, export (shared by the DNS recipe)."""
    model = hparams["model"]
    if model.sample_rate != hparams["sample_rate"]:
        raise ValueError(f"sample_rate {hparams['sample_rate']} in the YAML differs from the "
                         f"tokenizers' {model.sample_rate} Hz")
    # Clean acoustic tokens are cached (training crops read them); the rest is on the fly.
    cache = TokenCache(hparams["token_cache_folder"], model.acoustic_tokenizer)
    cache.build(paths["train"], data_root=paths.get("data_root"))
    sets = mage_datasets(hparams, paths, cache)
    logger.info("GenSE: %.2f M parameters in the LMs (%s prompt)", model.num_parameters() / 1e6,
                " ; ".join(model.s2s_parts))

    if hparams.get("init_from"):  # no checkpoint yet: start from an exported GenSE folder
        warm_start_modules(hparams["modules"], hparams["init_from"], hparams["checkpointer"],
                           os.path.join(hparams["save_folder"], INIT_FROM_FILE))
    brain = TokenModelBrain(modules=hparams["modules"], opt_class=hparams["opt_class"],
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
        model.save(hparams["model_folder"], dtype=hparams.get("export_dtype"))
        overlap = float(hparams.get("inference_overlap_seconds", 0.25))
        write_inference_yaml(hparams["model_folder"], method="gense", overwrite=True,
                             chunk_seconds=max(model.max_seconds - 2 * overlap, 0.1),
                             overlap_seconds=overlap)
        with open(os.path.join(hparams["output_folder"], "test_stats.json"), "w") as f:
            json.dump({"split": "test" if "test" in sets else "valid (no test set)",
                       **brain.last_stats}, f, indent=2)
    logger.info("GenSE exported to %s; test %s", hparams["model_folder"], brain.last_stats)
    return brain


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv, DEBUG_OVERRIDES)
    train_gense(hparams, run_opts, prepare_data(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
