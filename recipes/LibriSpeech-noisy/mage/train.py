#!/usr/bin/env python3
"""Trains MAGE (masked generative enhancer) on codec tokens of LibriSpeech-noisy.

1. Data: ``../librispeech_noisy_prepare.py`` (LibriSpeech + noise folders, or
   the embedded TTS corpus); noise and rooms are mixed on the fly.
2. Tokens: the clean training speech is tokenized once into a token cache
   (``token_cache_folder``, one folder per tokenizer fingerprint; DDP ranks
   share the work), and the token-frequency table of scarcity-aware masking
   is counted from it (``token_frequency_file``).
   (steps 2 to 4: ``speechbrain_gense.training.train_mage``, shared with
   the DNS recipe)
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

import logging
import os
import sys

from speechbrain.utils.distributed import run_on_main

from speechbrain_gense.training import MAGE_DEBUG_OVERRIDES, load_recipe_hparams, train_mage

logger = logging.getLogger(__name__)

def prepare_data(hparams):
    """Manifest paths (``train``, ``valid``, ``test``, ``noise_train``, ...) and ``data_root``."""
    if hparams["train_manifest"]:  # noise_train.json / rir_train.json next to it
        folder = os.path.dirname(os.path.abspath(hparams["train_manifest"]))
        return {"train": hparams["train_manifest"], "valid": hparams["valid_manifest"],
                "test": hparams["test_manifest"], "data_root": hparams["data_root"],
                **{k: os.path.join(folder, f"{k}.json") for k in ("noise_train", "rir_train")
                   if os.path.isfile(os.path.join(folder, f"{k}.json"))}}
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


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv, MAGE_DEBUG_OVERRIDES)
    train_mage(hparams, run_opts, prepare_data(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
