#!/usr/bin/env python3
"""Trains GenSE (N2S + S2S token language models) on the DNS Challenge data.

Data preparation is ``../dns_prepare.py`` (the DNS-Challenge ``datasets``
folder with ``--data_folder``, otherwise the embedded TTS corpus). The
training steps (token cache, datasets, ``TokenModelBrain`` fit, test, export)
are those of ``recipes/LibriSpeech-noisy/gense/train.py`` (``train_gense``),
read from there so that both recipes run the same code. See README.md.

Usage::

    python train.py hparams/gense.yaml --data_folder /data/DNS-Challenge
    python train.py hparams/gense.yaml --debug
    torchrun --nproc_per_node=2 train.py hparams/gense.yaml --distributed_backend gloo

Authors
 * speechbrain-gense contributors
"""

import importlib.util
import os
import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_gense.training import load_recipe_hparams

HERE = os.path.dirname(os.path.abspath(__file__))


def _librispeech_recipe():
    """The LibriSpeech-noisy GenSE recipe module (``train_gense``, ``DEBUG_OVERRIDES``)."""
    path = os.path.join(HERE, "..", "..", "LibriSpeech-noisy", "gense", "train.py")
    spec = importlib.util.spec_from_file_location("gense_librispeech_recipe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prepare_data(hparams):
    """DNS manifests (``train``, ``valid``, ``test``, ``noise_train``, ``rir_train``)."""
    sys.path.insert(0, os.path.dirname(HERE))
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
    recipe = _librispeech_recipe()
    _, run_opts, hparams, _ = load_recipe_hparams(argv, recipe.DEBUG_OVERRIDES)
    recipe.train_gense(hparams, run_opts, prepare_data(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
