#!/usr/bin/env python3
"""Trains MAGE (masked generative enhancer) on codec tokens of LibriSpeech-noisy.

1. Data: ``../librispeech_noisy_prepare.py`` (LibriSpeech + noise folders, or
   the embedded TTS corpus); noise and rooms are mixed on the fly.
2. Tokens: the clean training speech is tokenized once into a token cache
   (``token_cache_folder``, one folder per tokenizer fingerprint; DDP ranks
   share the work), and the token-frequency table of scarcity-aware masking
   is counted from it (``token_frequency_file``).
3. Datasets: crops of ``segment_frames`` cached clean tokens with the aligned
   clean speech, degraded on the fly; valid / test use the fixed mixtures.
4. ``TokenModelBrain`` runs MAGE's own objective
   (:meth:`~speechbrain_gense.models.mage.MAGE.compute_objectives`: masked-token
   cross-entropy + corrector BCE); each validation epoch also enhances a few
   utterances (DNSMOS OVRL, PESQ).
5. The best checkpoint is evaluated on the test mixtures and exported to
   ``model_folder`` (enhancer, corrector, token-frequency table,
   ``inference.yaml``): ``EnhanceGenerative.from_hparams(source=model_folder)``.

Usage::

    python train.py hparams/mage.yaml
    python train.py hparams/mage.yaml --debug                  # hparams/debug.yaml
    python train.py hparams/mage.yaml --mask_strategy random   # MaskGIT ablation
    python train.py hparams/mage.yaml --init_from pretrained/mage  # fine-tune the shipped model
    # DDP, one node (gloo on CPU, nccl on GPU):
    torchrun --nproc_per_node=2 train.py hparams/mage.yaml --distributed_backend gloo
    # DDP, two nodes (run on each, NODE_RANK 0 and 1):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=4 \\
        --master_addr=$MASTER --master_port=29500 train.py hparams/mage.yaml

Authors
 * speechbrain-gense contributors
"""

import logging
import os
import sys

from speechbrain_gense.brains.token_model import TokenModelBrain
from speechbrain_gense.tokenizers.cache import TokenCache
from speechbrain_gense.training import (
    INIT_FROM_FILE,
    build_token_frequency,
    export_enhancer,
    load_recipe_hparams,
    prepare_recipe_data,
    token_datasets,
    warm_start_modules,
)

logger = logging.getLogger(__name__)


def prepare_data(hparams):
    """Manifest paths (``train``, ``valid``, ``test``, ``noise_train``, ...) and ``data_root``."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy  # noqa: E402

    return prepare_recipe_data(hparams, prepare_librispeech_noisy)


def train(hparams, run_opts, paths):
    """Steps 2-5: tokens, datasets, fit, test, export. Returns the Brain."""
    mage = hparams["model"]

    # 2. Token cache of the clean training speech and the token-frequency table.
    cache = TokenCache(hparams["token_cache_folder"], mage.tokenizer)
    mage.token_frequency = build_token_frequency(cache, paths["train"], paths.get("data_root"),
                                                 hparams["token_frequency_file"])

    # 3. Datasets.
    sets = token_datasets(hparams, paths, cache)

    # 4. Training (resumes from the last checkpoint of a killed run; with no checkpoint,
    #    init_from starts from an exported model, e.g. pretrained/mage).
    if hparams.get("init_from"):
        warm_start_modules(hparams["modules"], hparams["init_from"], hparams["checkpointer"],
                           os.path.join(hparams["save_folder"], INIT_FROM_FILE))
    brain = TokenModelBrain(modules=hparams["modules"], opt_class=hparams["opt_class"],
                            hparams=hparams, run_opts=run_opts,
                            checkpointer=hparams["checkpointer"])
    brain.fit(hparams["epoch_counter"], sets["train"], sets.get("valid"),
              train_loader_kwargs={"batch_size": hparams["batch_size"], "shuffle": True,
                                   "num_workers": hparams["num_workers"]},
              valid_loader_kwargs={"batch_size": hparams["valid_batch_size"]})

    # 5. Test with the best checkpoint, then export the model folder.
    if "test" in sets:
        brain.evaluate(sets["test"], min_key="loss",
                       test_loader_kwargs={"batch_size": hparams["valid_batch_size"]})
    else:
        brain.checkpointer.recover_if_possible(min_key="loss")
    export_enhancer(mage, hparams, brain, split="test" if "test" in sets else "valid (no test)")
    return brain


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv)
    train(hparams, run_opts, prepare_data(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
