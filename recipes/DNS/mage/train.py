#!/usr/bin/env python3
"""Trains MAGE (masked generative enhancer) on codec tokens of the DNS Challenge data.

Data preparation is ``../dns_prepare.py`` (the DNS-Challenge ``datasets``
folder with ``--data_folder``, otherwise the embedded TTS corpus); the rest
(token cache, token-frequency table, training, test, export) is
``speechbrain_gense.training.train_mage``, shared with the LibriSpeech-noisy
recipe. See README.md.

Usage::

    python train.py hparams/mage.yaml --data_folder /data/DNS-Challenge
    python train.py hparams/mage.yaml --debug
    torchrun --nproc_per_node=2 train.py hparams/mage.yaml --distributed_backend gloo

Authors
 * speechbrain-gense contributors
"""

import os
import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_gense.training import MAGE_DEBUG_OVERRIDES, load_recipe_hparams, train_mage

def prepare_data(hparams):
    """DNS manifests (``train``, ``valid``, ``test``, ``noise_train``, ``rir_train``)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from dns_prepare import prepare_dns  # noqa: E402

    kwargs = dict(seed=hparams["seed"], sample_rate=hparams["sample_rate"],
                  corpus_opts={"minutes": hparams["corpus_minutes"], "progress": False})
    run_on_main(prepare_dns, args=[hparams["data_folder"], hparams["data_save_folder"]],
                kwargs=kwargs)
    paths = prepare_dns(hparams["data_folder"], hparams["data_save_folder"], skip_prep=True,
                        **kwargs)
    paths["test"] = paths.get(f"test_{hparams['test_set']}")
    return paths


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv, MAGE_DEBUG_OVERRIDES)
    train_mage(hparams, run_opts, prepare_data(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
