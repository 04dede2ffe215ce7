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

from speechbrain_gense.training import (
    MAGE_DEBUG_OVERRIDES,
    load_recipe_hparams,
    prepare_recipe_data,
    train_mage,
)

logger = logging.getLogger(__name__)


def prepare_data(hparams):
    """Manifest paths (``train``, ``valid``, ``test``, ``noise_train``, ...) and ``data_root``."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy  # noqa: E402

    return prepare_recipe_data(hparams, prepare_librispeech_noisy)


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv, MAGE_DEBUG_OVERRIDES)
    train_mage(hparams, run_opts, prepare_data(hparams))


if __name__ == "__main__":
    main(sys.argv[1:])
