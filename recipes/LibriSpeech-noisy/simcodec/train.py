#!/usr/bin/env python3
"""Trains SimCodec in two stages: group quantizers, reorganisation, single codebook.

1. Stage 1: the codec with two group quantizers (``CodecBrain``).
2. Reorganisation: usage of each group is counted on training batches, the
   ``top_n`` x ``top_k`` most used codes form one codebook (``to_stage2``);
   usage before and after goes to ``<save_folder>/reorganisation.json``.
3. Stage 2: training continues with the single codebook.
4. The best stage-2 checkpoint (validation loss) is saved as a tokenizer in
   ``<codec_folder>`` (``SimCodecTokenizer(codec_folder)`` loads it), and its
   codebook usage and validation PESQ go to ``<report_file>``.

Every stage resumes from its checkpoints, so a killed run continues with the
same command. Score the result with ``gense-codec-eval --codec <codec_folder>``.

With ``init_from`` (an exported codec, e.g. ``pretrained/simcodec``) stage 1
and the reorganisation are skipped and the exported codec is trained as
stage 2; ``freeze_prefixes: tokens`` trains its decoder alone, so its tokens
and fingerprint stay the same (``same_tokens`` in the report) and the models
trained on them keep working with the new decoder.

Usage::

    python train.py hparams/simcodec.yaml
    python train.py hparams/simcodec.yaml --debug
    python train.py hparams/simcodec.yaml --stage1_epochs 5 --device cuda
    python train.py hparams/simcodec.yaml --init_from pretrained/simcodec \
        --freeze_prefixes tokens --adversarial_start_epoch_stage2 1   # decoder + GAN

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

from speechbrain_gense.audio import load_audio
from speechbrain_gense.brains.codec import CodecBrain
from speechbrain_gense.models.simcodec import SimCodec, to_stage2
from speechbrain_gense.paths import resolve_path
from speechbrain_gense.tokenizers.cache import tokenizer_fingerprint
from speechbrain_gense.tokenizers.simcodec import SimCodecTokenizer
from speechbrain_gense.training import Checkpointer, prepare_recipe_data

logger = logging.getLogger(__name__)

# --debug: a tiny corpus and a small codebook (command-line overrides still win).
DEBUG_OVERRIDES = {"corpus_minutes": 0.3, "top_n": 4, "top_k": 4,
                   "batch_size": 2, "valid_max_files": 2, "valid_pesq_utterances": 1,
                   "usage_batches": 2, "adversarial_start_epoch_stage2": 2}


def prepare_data(hparams):
    """``(train manifest, valid manifest, data_root)`` (data prep runs if needed)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy  # noqa: E402

    paths = prepare_recipe_data(hparams, prepare_librispeech_noisy)
    return paths["train"], paths.get("valid"), paths.get("data_root")


def dataio_prep(hparams, train_manifest, valid_manifest, data_root):
    """Clean-speech datasets: random ``segment_seconds`` crops for training,
    whole utterances (``valid_max_files`` shortest) for validation."""
    sr = hparams["sample_rate"]
    segment = int(round(hparams["segment_seconds"] * sr))

    def dataset(manifest):
        root = data_root or os.path.dirname(os.path.abspath(manifest))
        return sb.dataio.dataset.DynamicItemDataset.from_json(
            manifest, replacements={"data_root": root})

    @sb.utils.data_pipeline.takes("clean_wav")
    @sb.utils.data_pipeline.provides("sig")
    def crop_pipeline(path):
        wav = load_audio(path, sample_rate=sr, resample=True)[0]
        if wav.shape[0] > segment:
            start = int(torch.randint(0, wav.shape[0] - segment + 1, ()))
            wav = wav[start:start + segment]
        return wav

    @sb.utils.data_pipeline.takes("clean_wav")
    @sb.utils.data_pipeline.provides("sig")
    def full_pipeline(path):
        return load_audio(path, sample_rate=sr, resample=True)[0]

    train = dataset(train_manifest)
    train.add_dynamic_item(crop_pipeline)
    train.set_output_keys(["id", "sig"])
    valid = dataset(valid_manifest or train_manifest)
    valid.add_dynamic_item(full_pipeline)
    valid.set_output_keys(["id", "sig"])
    valid = valid.filtered_sorted(sort_key="length", select_n=hparams["valid_max_files"])
    return train, valid


def make_brain(hparams, run_opts, codec, stage):
    """A CodecBrain for ``stage`` (1 or 2) with its own checkpoint folder."""
    counter = hparams[f"epoch_counter_stage{stage}"]
    checkpointer = Checkpointer(
        os.path.join(hparams["save_folder"], f"stage{stage}"),
        recoverables={"codec": codec, "discriminator": hparams["discriminator"],
                      "counter": counter})
    stage_hparams = dict(hparams, epoch_counter=counter,
                         adversarial_start_epoch=hparams[f"adversarial_start_epoch_stage{stage}"])
    return CodecBrain(modules={"codec": codec, "discriminator": hparams["discriminator"]},
                      hparams=stage_hparams, run_opts=run_opts, checkpointer=checkpointer)


def fit(brain, hparams, train, valid):
    sampler = sb.dataio.sampler.ReproducibleRandomSampler(
        train, seed=hparams["seed"], replacement=True,
        num_samples=hparams["steps_per_epoch"] * hparams["batch_size"])
    brain.fit(brain.hparams.epoch_counter, train, valid,
              train_loader_kwargs={"batch_size": hparams["batch_size"], "sampler": sampler,
                                   "num_workers": hparams["num_workers"]},
              valid_loader_kwargs={"batch_size": hparams["valid_batch_size"],
                                   "num_workers": hparams["num_workers"]})


@torch.no_grad()
def usage_batches(brain, train, hparams):
    """Concatenated training crops (``[N, S]``) for measuring codebook usage."""
    loader = sb.dataio.dataloader.make_dataloader(train, batch_size=hparams["batch_size"],
                                                  shuffle=True)
    wavs, lens = [], []
    for i, batch in enumerate(loader):
        if i >= hparams["usage_batches"] or (brain.debug and i >= brain.debug_batches):
            break
        w, l = batch.sig
        wavs.append(torch.nn.functional.pad(w, (0, int(hparams["segment_seconds"]
                                                        * hparams["sample_rate"]) - w.shape[1])))
        lens.append(l * w.shape[1] / wavs[-1].shape[1])
    return torch.cat(wavs).to(brain.device), torch.cat(lens).to(brain.device)


def reorganise(brain1, hparams, train):
    """Stage-1 usage on training crops -> stage-2 codec; writes reorganisation.json."""
    codec = brain1.modules.codec
    brain1.checkpointer.recover_if_possible(min_key="loss")
    codec.eval()
    wav, lens = usage_batches(brain1, train, hparams)
    codec.quantizer.reset_usage()
    for q in codec.quantizer.groups:
        q.track_usage = True
    for i in range(0, wav.shape[0], hparams["batch_size"]):
        codec(wav[i:i + hparams["batch_size"]], lens[i:i + hparams["batch_size"]])
    for q in codec.quantizer.groups:
        q.track_usage = False
    stage2 = to_stage2(codec, hparams["top_n"], hparams["top_k"], wav=wav, lens=lens,
                       reinit_projections=hparams.get("reinit_projections", True),
                       min_kept_share=hparams.get("min_kept_share"))
    info = stage2.reorganization
    report = {"top_n": hparams["top_n"], "top_k": hparams["top_k"],
              **{k: info[k] for k in ("group_sizes", "reinit_projections", "before", "after",
                                      "kept_usage_share", "same_code_share",
                                      "min_kept_share", "meets_min_kept_share") if k in info}}
    with open(os.path.join(hparams["save_folder"], "reorganisation.json"), "w") as f:
        json.dump(report, f, indent=2)
    stage2.save(os.path.join(hparams["save_folder"], "stage2_init.ckpt"))
    logger.info("Reorganisation: %s", json.dumps(report))
    return stage2


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if run_opts.get("debug"):
        user = load_hyperpyyaml(overrides) if overrides else {}
        overrides = {**DEBUG_OVERRIDES, **(user or {})}
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides)
    train_manifest, valid_manifest, data_root = prepare_data(hparams)
    train, valid = dataio_prep(hparams, train_manifest, valid_manifest, data_root)

    if hparams.get("init_from"):
        # Fine-tuning an exported codec: no stage 1, no reorganisation.
        source = SimCodecTokenizer(resolve_path(hparams["init_from"]))
        stage2, reorganisation = source.model.train(), None
        for param in stage2.parameters():
            param.requires_grad_(True)
        before = tokenizer_fingerprint(source)
    else:
        # Stage 1 (skipped once the reorganised codec exists).
        init_path = os.path.join(hparams["save_folder"], "stage2_init.ckpt")
        if os.path.isfile(init_path):
            logger.info("Reorganised codec found (%s): stage 1 is done", init_path)
            stage2 = SimCodec.load(init_path)
        else:
            brain1 = make_brain(hparams, run_opts, hparams["codec"], 1)
            fit(brain1, hparams, train, valid)
            stage2 = reorganise(brain1, hparams, train)
        with open(os.path.join(hparams["save_folder"], "reorganisation.json")) as f:
            reorganisation = json.load(f)

    # Stage 2.
    brain2 = make_brain(hparams, run_opts, stage2, 2)
    fit(brain2, hparams, train, valid)

    # The best stage-2 codec becomes the tokenizer.
    brain2.checkpointer.recover_if_possible(min_key="loss")
    brain2.evaluate(valid, min_key="loss",
                    test_loader_kwargs={"batch_size": hparams["valid_batch_size"]})
    tokenizer = SimCodecTokenizer(brain2.modules.codec.to("cpu"))
    path = tokenizer.save(hparams["codec_folder"], dtype=hparams.get("export_dtype"))
    report = {"codec": os.path.abspath(path), "config": tokenizer.model.config,
              "frame_rate": tokenizer.model.frame_rate, "valid": brain2.last_stats,
              "reorganisation": reorganisation}
    if hparams.get("init_from"):
        after = tokenizer_fingerprint(SimCodecTokenizer(path))
        report.update(initialised_from=hparams["init_from"],
                      frozen=list(brain2.frozen_prefixes), fingerprint_before=before,
                      fingerprint=after, same_tokens=before == after)
    with open(hparams["report_file"], "w") as f:
        json.dump(report, f, indent=2, default=float)
    logger.info("Codec saved to %s; validation %s", path, brain2.last_stats)
    return report

if __name__ == "__main__":
    main(sys.argv[1:])
