#!/usr/bin/env python3
"""Trains the RVQ codec: K residual codebooks with quantizer dropout.

1. Data: clean speech from many voices (``build_speech_set``: every espeak-ng
   accent x variant and the flite/festival training voices, none of the
   corpus's valid/test voices), or the manifests given; random crops,
   perturbed on the fly (``VoicePerturbation``: speed/pitch/formants,
   equalisation, level).
2. ``CodecBrain`` fits the codec (multi-scale mel + commitment, then the GAN
   terms from ``adversarial_start_epoch``), checkpointing every epoch and
   every ``ckpt_interval_minutes``; the same command resumes a killed run.
   On a machine without the run's checkpoints, ``init_from`` starts from an
   exported codec instead (e.g. the shipped one; the optimizer restarts);
   what it started from is kept in ``save_folder`` for the run's exports.
3. The best checkpoint (validation loss) is written as a tokenizer to
   ``<codec_folder>/rvqcodec.ckpt`` in fp16 (``RVQTokenizer(codec_folder)``,
   ``load_tokenizer("rvq:<codec_folder>")``), with ``<report_file>``:
   validation losses and PESQ, per-codebook usage and residual norms, and
   ``<codec_folder>/training_history.json``: validation per epoch over every
   run that led to it (``gense-codec-eval --training-log NAME=...json``).

Usage::

    python train.py hparams/rvqcodec.yaml
    python train.py hparams/rvqcodec.yaml --debug
    python train.py hparams/rvqcodec.yaml --export_only True     # export while it trains
    python train.py hparams/rvqcodec.yaml --init_from pretrained/rvqcodec  # continue the shipped codec
    python train.py hparams/rvqcodec.yaml --device cuda --batch_size 32

Authors
 * speechbrain-gense contributors
"""

import json
import logging
import os
import sys
import time

import speechbrain as sb
import torch
from speechbrain.utils.distributed import run_on_main

from speechbrain_gense.audio import load_audio
from speechbrain_gense.brains.codec import (WARM_START_FILE, CodecBrain, read_warm_start,
                                             warm_start)
from speechbrain_gense.codec_eval import training_history
from speechbrain_gense.data.corpus import build_speech_set
from speechbrain_gense.models.simcodec import count_parameters
from speechbrain_gense.tokenizers.rvq import RVQTokenizer
from speechbrain_gense.training import Checkpointer, load_recipe_hparams, prepare_recipe_data

logger = logging.getLogger(__name__)

# --debug: a tiny codec and corpus (command-line overrides still win).
DEBUG_OVERRIDES = {"corpus_minutes": 0.3, "speech_minutes": 0.3, "speech_max_voices": 6,
                   "codebook_size": 16, "num_quantizers": 3, "hop_length": 160,
                   "batch_size": 2, "valid_max_files": 2, "valid_pesq_utterances": 1,
                   "adversarial_start_epoch": 2, "ckpt_interval_minutes": 0}


def prepare_data(hparams):
    """``(train manifest, valid manifest, train root, valid root)``; builds the
    speech set if needed (a root of None: the manifest's folder)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy  # noqa: E402

    given = hparams.get("train_manifest")
    paths = prepare_recipe_data(hparams, prepare_librispeech_noisy)
    root = paths.get("data_root")
    if given or hparams.get("data_folder"):
        return paths["train"], paths.get("valid"), root, root
    # Embedded data: the corpus gives validation; training speech comes from
    # the wider voice pool (valid/test voices and sentences kept out).
    from speechbrain_gense.data.voices import codec_voice_pool

    voices = codec_voice_pool(hparams["seed"], max_voices=hparams["speech_max_voices"])
    avoid = [p for p in (paths.get("valid"), paths.get("test")) if p]
    kwargs = {"minutes": hparams["speech_minutes"], "seed": hparams["seed"],
              "voices": voices, "avoid_manifests": avoid, "progress": False,
              "pseudo_speakers": hparams.get("speech_pseudo_speakers", 0),
              "natural_share": hparams.get("speech_natural_share", 0.25)}
    run_on_main(build_speech_set, args=[hparams["speech_folder"]], kwargs=kwargs)
    train = build_speech_set(hparams["speech_folder"], **kwargs)
    return train, paths.get("valid"), None, root


def dataio_prep(hparams, train_manifest, valid_manifest, train_root=None, valid_root=None):
    """Perturbed random ``segment_seconds`` crops for training; the
    ``valid_max_files`` shortest whole utterances for validation."""
    sr = hparams["sample_rate"]
    segment = int(round(hparams["segment_seconds"] * sr))
    perturb = hparams.get("perturb")

    def dataset(manifest, root=None):
        root = root or os.path.dirname(os.path.abspath(manifest))
        return sb.dataio.dataset.DynamicItemDataset.from_json(
            manifest, replacements={"data_root": root})

    @sb.utils.data_pipeline.takes("clean_wav")
    @sb.utils.data_pipeline.provides("sig")
    def crop_pipeline(path):
        wav = load_audio(path, sample_rate=sr, resample=True)[0]
        # Crop a little more than a segment, perturb (changes the length), crop again.
        span = int(segment * 1.25)
        if wav.shape[0] > span:
            start = int(torch.randint(0, wav.shape[0] - span + 1, ()))
            wav = wav[start:start + span]
        if perturb is not None:
            wav = perturb(wav)
        if wav.shape[0] > segment:
            start = int(torch.randint(0, wav.shape[0] - segment + 1, ()))
            wav = wav[start:start + segment]
        return wav

    @sb.utils.data_pipeline.takes("clean_wav")
    @sb.utils.data_pipeline.provides("sig")
    def full_pipeline(path):
        return load_audio(path, sample_rate=sr, resample=True)[0]

    train = dataset(train_manifest, train_root)
    train.add_dynamic_item(crop_pipeline)
    train.set_output_keys(["id", "sig"])
    valid = dataset(valid_manifest or train_manifest, valid_root if valid_manifest else train_root)
    valid.add_dynamic_item(full_pipeline)
    valid.set_output_keys(["id", "sig"])
    valid = valid.filtered_sorted(sort_key="length", select_n=hparams["valid_max_files"])
    return train, valid


@torch.no_grad()
def export(brain, hparams, valid, trained_seconds):
    """Best checkpoint -> tokenizer folder + report (usage, residual norms, PESQ).

    The codec is rounded to float16 first, so what makes the tokens is stored
    without loss; ``export_dtype`` (``int8``) then applies to the decoder.
    """
    brain.checkpointer.recover_if_possible(min_key="loss")
    brain.evaluate(valid, min_key="loss",
                   test_loader_kwargs={"batch_size": hparams["valid_batch_size"]})
    codec = brain.modules.codec.to("cpu").eval()
    codec.quantizer.reset_usage()  # counts do not belong in a shipped file (fp16 overflow)
    for tensor in list(codec.parameters()) + list(codec.buffers()):
        if tensor.is_floating_point():  # the codec is defined in float16: stored without loss
            tensor.data = tensor.data.half().float()
    loader = sb.dataio.dataloader.make_dataloader(valid, batch_size=hparams["valid_batch_size"])
    usage, norms, frames = None, [], 0
    for batch in loader:
        wav, lens = batch.sig
        codes = codec.valid_codes(wav, lens)
        mask = codec.frame_mask(wav.shape[-1], lens)
        norms.append(codec.quantizer.residual_norms(codec.latent(wav), mask) * codes.shape[0])
        frames += codes.shape[0]
        counts = torch.stack([torch.bincount(codes[:, k], minlength=codec.quantizer.codebook_size)
                              for k in range(codes.shape[1])])
        usage = counts if usage is None else usage + counts
    codec.quantizer.reset_usage()
    path = RVQTokenizer(codec).save(hparams["codec_folder"], dtype=hparams["export_dtype"])
    stage = brain.hparams.epoch_counter.current
    steps = brain.optimizer_step or stage * hparams["steps_per_epoch"]
    # One curve over every run (warm starts included), shipped with the codec.
    init = read_warm_start(os.path.join(hparams["save_folder"], WARM_START_FILE))
    prior = init["history"][-1] if init and init["history"] else {}
    history = training_history(hparams["train_log"], hparams["steps_per_epoch"],
                               init["history"] if init else None) \
        if os.path.exists(hparams["train_log"]) else []
    with open(os.path.join(hparams["codec_folder"], "training_history.json"), "w") as f:
        json.dump(history, f, indent=1)
    from speechbrain_gense.models.simcodec import codebook_stats

    report = {
        "codec": os.path.abspath(path), "config": codec.config,
        "frame_rate": codec.frame_rate, "parameters": count_parameters(codec),
        "file_mb": round(os.path.getsize(path) / 2**20, 2),
        "nominal_bits_per_second": codec.frame_rate * codec.num_codebooks
        * float(torch.log2(torch.tensor(float(codec.quantizer.codebook_size)))),
        "epochs_trained": stage + prior.get("epoch", 0),
        "steps_trained": steps + prior.get("steps", 0), "steps_this_run": steps,
        "train_seconds_this_run": round(trained_seconds, 1),
        "initialised_from": init["source"] if init else None,
        "valid": brain.last_stats,
        "valid_codebook_usage": [codebook_stats(c) for c in usage] if usage is not None else [],
        "valid_residual_norms": [round(float(n), 4) for n in sum(norms) / max(frames, 1)]
        if norms else [],
    }
    with open(hparams["report_file"], "w") as f:
        json.dump(report, f, indent=2, default=float)
    logger.info("Codec saved to %s; validation %s", path, brain.last_stats)
    return report


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv, DEBUG_OVERRIDES)
    train, valid = dataio_prep(hparams, *prepare_data(hparams))

    checkpointer = Checkpointer(
        hparams["save_folder"],
        recoverables={"codec": hparams["codec"], "discriminator": hparams["discriminator"],
                      "counter": hparams["epoch_counter"]})
    brain = CodecBrain(modules=hparams["modules"], hparams=hparams, run_opts=run_opts,
                       checkpointer=checkpointer)
    logger.info("RVQ codec: %.2f M parameters, %d x %d codes at %.0f Hz",
                count_parameters(hparams["codec"]) / 1e6, hparams["num_quantizers"],
                hparams["codebook_size"], hparams["codec"].frame_rate)
    start = time.time()
    if hparams.get("init_from") and not hparams["export_only"]:
        warm_start(hparams["codec"], hparams["init_from"], checkpointer,
                   os.path.join(hparams["save_folder"], WARM_START_FILE))
    if not hparams["export_only"]:
        sampler = sb.dataio.sampler.ReproducibleRandomSampler(
            train, seed=hparams["seed"], replacement=True,
            num_samples=hparams["steps_per_epoch"] * hparams["batch_size"])
        brain.fit(hparams["epoch_counter"], train, valid,
                  train_loader_kwargs={"batch_size": hparams["batch_size"], "sampler": sampler,
                                       "num_workers": hparams["num_workers"]},
                  valid_loader_kwargs={"batch_size": hparams["valid_batch_size"],
                                       "num_workers": hparams["num_workers"]})
    else:
        brain.init_optimizers()
    return export(brain, hparams, valid, time.time() - start)


if __name__ == "__main__":
    main(sys.argv[1:])
