#!/usr/bin/env python3
"""Trains MAGE (masked generative enhancer) on codec tokens of the DNS Challenge data.

Data preparation is ``../dns_prepare.py`` (the DNS-Challenge ``datasets``
folder with ``--data_folder``, otherwise the embedded TTS corpus), through
the shared :func:`~speechbrain_gense.training.prepare_recipe_data`; test is
the synthetic ``test_set`` (``no_reverb`` or ``with_reverb``). The training
steps (token cache and frequency table, datasets, ``TokenModelBrain`` fit,
test, export) are those of the LibriSpeech-noisy MAGE recipe's ``train``
(``../../LibriSpeech-noisy/mage/train.py``). See README.md.

Usage::

    python train.py hparams/mage.yaml --data_folder /data/DNS-Challenge
    python train.py hparams/mage.yaml --debug                  # hparams/debug.yaml
    torchrun --nproc_per_node=2 train.py hparams/mage.yaml --distributed_backend gloo

Authors
 * speechbrain-gense contributors
"""

import importlib.util
import os
import sys

from speechbrain_gense.training import load_recipe_hparams, prepare_recipe_data

HERE = os.path.dirname(os.path.abspath(__file__))


def _librispeech_recipe():
    """The LibriSpeech-noisy MAGE recipe module (its ``train``)."""
    path = os.path.join(HERE, "..", "..", "LibriSpeech-noisy", "mage", "train.py")
    spec = importlib.util.spec_from_file_location("mage_librispeech_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_data(hparams):
    """DNS manifests (``train``, ``valid``, ``test``, ``noise_train``, ``rir_train``)."""
    sys.path.insert(0, os.path.dirname(HERE))
    from dns_prepare import prepare_dns  # noqa: E402

    return prepare_recipe_data(hparams, prepare_dns, test_split=f"test_{hparams['test_set']}")


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv)
    _librispeech_recipe().train(hparams, run_opts, prepare_data(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
