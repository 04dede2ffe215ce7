#!/usr/bin/env python3
"""Trains a small character CTC ASR on the clean speech of LibriSpeech-noisy.

The recogniser of the SE → ASR chain (``../se_asr``): Fbank → CRDNN → CTC over
characters, trained on clean speech (``--train_noise True`` adds light noise
on the fly), with speed perturbation and time/frequency masking.

1. Data: ``../librispeech_noisy_prepare.py`` (LibriSpeech + noise folders, or
   the embedded TTS corpus); ``words`` are the targets.
2. ``CTCASRBrain`` trains it; the learning rate follows NewBob on the
   validation WER (clean speech), the best checkpoint is kept.
3. The best checkpoint is scored on the test set, clean and noisy
   (``test_wer.json``, ``wer_test_{clean,noisy}.txt``), and exported to
   ``model_folder``, which SpeechBrain loads as it is::

       EncoderASR.from_hparams(source=<model_folder>, savedir=<model_folder>)

Usage::

    python train.py hparams/ctc.yaml
    python train.py hparams/ctc.yaml --debug
    python train.py hparams/ctc.yaml --data_save_folder results/libri_data --noprogressbar

Authors
 * speechbrain-gense contributors
"""

import json
import logging
import os
import sys

import speechbrain as sb
import torch

from speechbrain_gense.asr import make_label_encoder, text_to_chars, write_asr_folder
from speechbrain_gense.data.pipelines import build_dataset
from speechbrain_gense.training import load_recipe_hparams, prepare_recipe_data

logger = logging.getLogger(__name__)

# --debug: tiny corpus and network, one epoch of 2 batches (command-line overrides still win).
DEBUG_OVERRIDES = {"corpus_minutes": 0.3, "batch_size": 2, "valid_batch_size": 2,
                   "number_of_epochs": 1, "cnn_blocks": 1, "cnn_channels": [4],
                   "rnn_layers": 1, "rnn_neurons": 16, "dnn_neurons": 16}


class CTCASRBrain(sb.Brain):
    """Character CTC ASR: features → normalisation → CRDNN → CTC.

    Trains on ``noisy_sig`` (the clean signal unless a degrader is set),
    validates on ``clean_sig`` and tests on :attr:`test_key`.
    """

    test_key = "clean_sig"

    def compute_forward(self, batch, stage):
        """Log-probabilities ``[B, T, C]`` of the characters."""
        batch = batch.to(self.device)
        key = {sb.Stage.TRAIN: "noisy_sig", sb.Stage.VALID: "clean_sig"}.get(stage, self.test_key)
        wavs, wav_lens = getattr(batch, key)
        if stage == sb.Stage.TRAIN:
            wavs, wav_lens = self.hparams.wav_augment(wavs, wav_lens)
        feats = self.hparams.compute_features(wavs)
        feats = self.modules.normalize(feats, wav_lens, epoch=self.hparams.epoch_counter.current)
        if stage == sb.Stage.TRAIN:
            feats, _ = self.hparams.fea_augment(feats, wav_lens)
        logits = self.modules.ctc_lin(self.modules.model(feats))
        return {"p_ctc": self.hparams.log_softmax(logits), "wav_lens": wav_lens}

    def compute_objectives(self, predictions, batch, stage):
        """CTC loss; greedy decoding and WER/CER outside training."""
        p_ctc, wav_lens = predictions["p_ctc"], predictions["wav_lens"]
        tokens, token_lens = batch.tokens
        if stage == sb.Stage.TRAIN:
            tokens = self.hparams.wav_augment.replicate_labels(tokens)
            token_lens = self.hparams.wav_augment.replicate_labels(token_lens)
        loss = self.hparams.ctc_cost(p_ctc, tokens, wav_lens, token_lens)
        if stage != sb.Stage.TRAIN:
            seqs = sb.decoders.ctc_greedy_decode(p_ctc, wav_lens,
                                                 blank_id=self.hparams.blank_index)
            hyps = ["".join(self.label_encoder.decode_ndim(s)).split() for s in seqs]
            refs = [text.split() for text in batch.text]
            self.wer_metric.append(batch.id, hyps, refs)
            self.cer_metric.append(batch.id, hyps, refs)
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Fresh WER/CER statistics outside training."""
        if stage != sb.Stage.TRAIN:
            self.wer_metric = self.hparams.error_stats()
            self.cer_metric = self.hparams.cer_stats()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rate on valid WER, keeps the best checkpoint."""
        stats = {"loss": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            return
        stats["WER"] = self.wer_metric.summarize("error_rate")
        stats["CER"] = self.cer_metric.summarize("error_rate")
        if stage == sb.Stage.VALID:
            old_lr, new_lr = self.hparams.lr_annealing(stats["WER"])
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
                train_stats=self.train_stats, valid_stats=stats)
            self.checkpointer.save_and_keep_only(
                meta={"WER": stats["WER"]}, min_keys=["WER"],
                num_to_keep=self.hparams.keep_checkpoints)
        else:
            name = self.test_key.replace("_sig", "")
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current,
                            "test input": name}, test_stats=stats)
            if sb.utils.distributed.if_main_process():
                with open(os.path.join(self.hparams.output_folder,
                                       f"wer_test_{name}.txt"), "w") as w:
                    self.wer_metric.write_stats(w)
            self.test_stats = {**stats, "num_utterances": len(self.wer_metric.scores)}


def dataio_prepare(hparams, paths, label_encoder):
    """Datasets with ``clean_sig``/``noisy_sig``, ``text`` (normalised words) and ``tokens``."""
    root = paths.get("data_root")
    sr = hparams["sample_rate"]
    degrader = None
    if hparams["train_noise"]:
        degrader = hparams["degrader"](
            noise_files=paths.get("noise_train"), rir_files=paths.get("rir_train"),
            sample_rate=sr, data_root=root)

    @sb.utils.data_pipeline.takes("words")
    @sb.utils.data_pipeline.provides("text", "tokens")
    def text_pipeline(words):
        chars = text_to_chars(words)
        yield "".join(chars)
        yield torch.LongTensor(label_encoder.encode_sequence(chars))

    keys = ["id", "clean_sig", "noisy_sig", "text", "tokens"]
    sets = {}
    for name in ("train", "valid", "test"):
        manifest = paths.get(name)
        if not manifest or not os.path.isfile(manifest):
            if name == "train":
                raise FileNotFoundError(f"training manifest {manifest}: not found")
            logger.warning("no %s manifest: no %s set", name, name)
            continue
        data = build_dataset(manifest, degrader if name == "train" else None, root, sr)
        data.add_dynamic_item(text_pipeline)
        data.set_output_keys(keys)
        sets[name] = data
    if hparams["sorting"] in ("ascending", "descending"):
        sets["train"] = sets["train"].filtered_sorted(
            sort_key="length", reverse=hparams["sorting"] == "descending")
    elif hparams["sorting"] != "random":
        raise ValueError(f"sorting {hparams['sorting']!r}: use random, ascending or descending")
    for name in ("valid", "test"):
        if name in sets:
            sets[name] = sets[name].filtered_sorted(sort_key="length")
    return sets


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv, DEBUG_OVERRIDES)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy

    paths = prepare_recipe_data(hparams, prepare_librispeech_noisy)
    label_encoder = make_label_encoder(blank_index=hparams["blank_index"])
    if len(label_encoder) != hparams["output_neurons"]:
        raise ValueError(f"output_neurons is {hparams['output_neurons']} but the characters "
                         f"and the blank make {len(label_encoder)}")
    sets = dataio_prepare(hparams, paths, label_encoder)

    brain = CTCASRBrain(modules=hparams["modules"], opt_class=hparams["opt_class"],
                        hparams=hparams, run_opts=run_opts,
                        checkpointer=hparams["checkpointer"])
    brain.label_encoder = label_encoder
    params = sum(p.numel() for p in brain.modules.parameters())
    logger.info("CTC ASR: %.2f M parameters", params / 1e6)
    shuffle = hparams["sorting"] == "random"
    brain.fit(hparams["epoch_counter"], sets["train"], sets.get("valid"),
              train_loader_kwargs={"batch_size": hparams["batch_size"], "shuffle": shuffle,
                                   "num_workers": hparams["num_workers"]},
              valid_loader_kwargs={"batch_size": hparams["valid_batch_size"]})

    results = {"parameters": params}
    loader = {"batch_size": hparams["valid_batch_size"]}
    key = "WER" if "valid" in sets else None
    if "test" in sets:
        for name in ("clean", "noisy"):
            brain.test_key = f"{name}_sig"
            brain.evaluate(sets["test"], min_key=key, test_loader_kwargs=loader)
            results[name] = brain.test_stats
    else:
        brain.checkpointer.recover_if_possible(min_key=key)
    if sb.utils.distributed.if_main_process():
        write_asr_folder(hparams["model_folder"], hparams, hparams["normalize"],
                         hparams["model"], hparams["ctc_lin"], label_encoder)
        with open(hparams["test_wer_file"], "w") as f:
            json.dump(results, f, indent=2)
    logger.info("ASR exported to %s; test %s", hparams["model_folder"], results)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
