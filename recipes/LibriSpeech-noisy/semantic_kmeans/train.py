#!/usr/bin/env python3
"""Fits GenSE's semantic tokenizer: k-means over frame features of clean speech.

Reads the clean training utterances (``clean_wav`` of ``train.json``),
extracts features (MFCC by default, or a layer of a local SSL model), fits
``n_clusters`` centroids, saves the tokenizer to ``<output_folder>/kmeans.pt``
and reports how the codebook is used (clusters used, entropy, perplexity) and
the token rate (tokens/s, bits/s) in ``kmeans_report.json``.

Usage::

    python train.py hparams/mfcc_kmeans.yaml
    python train.py hparams/mfcc_kmeans.yaml --debug          # few files, 16 clusters
    python train.py hparams/mfcc_kmeans.yaml --train_manifest results/libri/data/train.json

Without ``--train_manifest`` the LibriSpeech-noisy data preparation runs
(``--data_folder``/``--noise_folder``, or the embedded TTS corpus).

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
from hyperpyyaml import load_hyperpyyaml

from speechbrain_gense.audio import load_audio
from speechbrain_gense.tokenizers.semantic import cluster_usage
from speechbrain_gense.training import prepare_recipe_data

logger = logging.getLogger(__name__)

# --debug: a quick run on a handful of files (command-line overrides still win).
DEBUG_OVERRIDES = {"n_clusters": 16, "max_files": 8, "corpus_minutes": 0.3}


def prepare_data(hparams):
    """``(train manifest, valid manifest or None, data_root)``."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy  # noqa: E402

    paths = prepare_recipe_data(hparams, prepare_librispeech_noisy)
    return paths["train"], paths.get("valid"), paths.get("data_root")


def dataloader(manifest, data_root, hparams):
    """Padded batches of ``sig`` (clean speech), shortest first."""
    root = data_root or os.path.dirname(os.path.abspath(manifest))
    data = sb.dataio.dataset.DynamicItemDataset.from_json(
        manifest, replacements={"data_root": root})

    @sb.utils.data_pipeline.takes("clean_wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(path):
        return load_audio(path, sample_rate=hparams["sample_rate"], resample=True)[0]

    data.add_dynamic_item(audio_pipeline)
    data.set_output_keys(["id", "sig"])
    data = data.filtered_sorted(sort_key="length", select_n=hparams["max_files"])
    return sb.dataio.dataloader.make_dataloader(
        data, batch_size=hparams["batch_size"], num_workers=hparams["num_workers"])


def encode_split(tokenizer, loader):
    """Tokens of every valid frame of a split, audio seconds, compute seconds."""
    tokens, seconds, start = [], 0.0, time.time()
    for batch in loader:
        wavs, lens = batch.sig
        toks, tok_lens = tokenizer.encode(wavs, lens)
        keep = torch.round(tok_lens * toks.shape[1]).long()
        tokens.extend(t[:n, 0] for t, n in zip(toks, keep))
        seconds += float((lens * wavs.shape[1]).sum()) / tokenizer.sample_rate
    return torch.cat(tokens), seconds, time.time() - start


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    if run_opts.get("debug"):
        user = load_hyperpyyaml(overrides) if overrides else {}
        overrides = {**DEBUG_OVERRIDES, **(user or {})}
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(hparams["output_folder"], hyperparams_to_save=hparams_file,
                                   overrides=overrides, save_env_desc=False)
    device = run_opts.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = hparams["tokenizer"].to(device)
    logger.info("Tokenizer: %s", tokenizer)

    train_manifest, valid_manifest, data_root = prepare_data(hparams)
    train_loader = dataloader(train_manifest, data_root, hparams)

    # 1. Features of the training set, 2. k-means.
    start = time.time()
    frames = [tokenizer.feature_frames(*batch.sig) for batch in train_loader]
    feature_seconds = time.time() - start
    info = tokenizer.fit(frames, max_frames=hparams["max_frames"])
    logger.info("Fitted %d clusters on %d frames in %.1f s (features %.1f s)",
                tokenizer.n_clusters, info["frames"], info["seconds"], feature_seconds)
    tokenizer.save(hparams["tokenizer_file"])

    # 3. Cluster usage on train (and valid: unseen speakers).
    report = {"tokenizer_file": os.path.abspath(hparams["tokenizer_file"]),
              "features": tokenizer.features.config(), "fit": info,
              "timings_s": {"features": round(feature_seconds, 2), "fit": info["seconds"]}}
    splits = {"train": train_loader}
    if valid_manifest and os.path.isfile(valid_manifest):
        splits["valid"] = dataloader(valid_manifest, data_root, hparams)
    for name, loader in splits.items():
        tokens, audio_s, compute_s = encode_split(tokenizer, loader)
        usage = cluster_usage(tokens, tokenizer.n_clusters, tokenizer.frame_rate)
        usage["audio_s"] = round(audio_s, 2)
        usage["encode_rtf"] = round(compute_s / max(audio_s, 1e-9), 5)
        report[name] = usage
        logger.info("%s: %d/%d clusters used, entropy %.2f bits, perplexity %.1f; "
                    "%.0f tokens/s, %.0f bits/s nominal, %.0f bits/s entropy; "
                    "encoding %.4f x real time", name, usage["used"], usage["n_clusters"],
                    usage["entropy_bits"], usage["perplexity"], usage["tokens_per_s"],
                    usage["bits_per_s"], usage["entropy_bits_per_s"], usage["encode_rtf"])
    with open(hparams["report_file"], "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: report[k] for k in splits}, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
