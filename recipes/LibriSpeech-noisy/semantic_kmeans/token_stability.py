#!/usr/bin/env python3
"""Semantic-token table: codebook usage and stability under noise, one row per tokenizer.

For each fitted ``KMeansTokenizer`` (MFCC, Whisper, ...) on the clean test
utterances of a manifest:

- **codes used** (of ``n_clusters``), entropy and perplexity, tokens/s;
- **token agreement** between the clean utterance and the same utterance with
  additive noise at each SNR (0/5/10/20 dB by default): the share of frames
  whose token is unchanged, pooled over utterances. Noise files come from the
  corpus's ``noise_test.json`` (unseen in training), one seeded file and offset
  per utterance, the same for every tokenizer; no reverberation, so frames stay
  aligned. This is the property GenSE's N2S model relies on;
- **encode RTF** (features + nearest centroid, one thread unless ``--threads``);
  for Whisper features also the RTF with Whisper's 30 s padding computed
  (``--pad-cost``), the cost the unpadded encoder avoids.

Usage (from the repository root)::

    python recipes/LibriSpeech-noisy/semantic_kmeans/token_stability.py \\
        --tokenizer mfcc=pretrained/semantic_kmeans/kmeans.pt \\
        --tokenizer whisper=pretrained/semantic_whisper_kmeans/kmeans.pt \\
        --corpus corpus --pad-cost --out results/semantic_tokens/table

Writes ``table.md`` and ``results.json`` in ``--out``.
"""

import argparse
import json
import os
import random
import sys
import time

import torch

from speechbrain_gense.audio import load_audio
from speechbrain_gense.data.degrade import fit_length, mix_at_snr
from speechbrain_gense.data.manifest import read_manifest
from speechbrain_gense.tokenizers.semantic import KMeansTokenizer, cluster_usage


def load_items(corpus, manifest=None, noise_manifest=None, max_files=None):
    """Clean test signals and the noise signals to mix them with."""
    manifest = manifest or os.path.join(corpus, "test.json")
    noise_manifest = noise_manifest or os.path.join(corpus, "noise_test.json")
    for path in (manifest, noise_manifest):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such manifest (build the corpus with "
                                    "gense-corpus --out corpus --minutes 20)")
    entries = read_manifest(manifest)
    uids = sorted(entries)[:max_files] if max_files else sorted(entries)
    clean = {uid: load_audio(entries[uid]["clean_wav"], sample_rate=16000)[0] for uid in uids}
    noises = [load_audio(n["wav"], sample_rate=16000)[0]
              for _, n in sorted(read_manifest(noise_manifest).items())]
    return clean, noises


def noisy_versions(clean, noises, snrs, seed=0):
    """``{snr: {uid: noisy}}``: one noise file and offset per utterance (seeded)."""
    rng = random.Random(seed)
    picks = {}
    for uid, wav in clean.items():
        noise = noises[rng.randrange(len(noises))]
        offset = rng.randrange(max(1, noise.shape[0] - wav.shape[0]))
        picks[uid] = fit_length(noise, wav.shape[0], offset)
    return {snr: {uid: mix_at_snr(wav, picks[uid], float(snr))[0] for uid, wav in clean.items()}
            for snr in snrs}


def encode_all(tokenizer, signals):
    """``{uid: LongTensor[T]}`` one utterance at a time, and the seconds it took."""
    out, start = {}, time.perf_counter()
    for uid, wav in signals.items():
        tokens, _ = tokenizer.encode(wav[None], torch.ones(1))
        out[uid] = tokens[0, :, 0]
    return out, time.perf_counter() - start


def evaluate_tokenizer(tokenizer, clean, noisy, pad_cost=False):
    """Usage, agreement at each SNR and timings of one tokenizer."""
    clean_tokens, seconds = encode_all(tokenizer, clean)
    audio = sum(w.shape[0] for w in clean.values()) / 16000
    row = cluster_usage(torch.cat(list(clean_tokens.values())), tokenizer.n_clusters,
                        tokenizer.frame_rate)
    row.update(features=tokenizer.features.config(), audio_s=round(audio, 2),
               encode_rtf=seconds / audio, agreement={})
    for snr, signals in noisy.items():
        tokens, _ = encode_all(tokenizer, signals)
        same = sum(int((tokens[u] == clean_tokens[u]).sum()) for u in clean)
        total = sum(clean_tokens[u].numel() for u in clean)
        row["agreement"][str(snr)] = same / total
    if pad_cost and row["features"].get("name") == "whisper":
        features = tokenizer.features
        features.pad = True
        try:
            padded_tokens, padded_seconds = encode_all(tokenizer, clean)
        finally:
            features.pad = False
        row["encode_rtf_padded_30s"] = padded_seconds / audio
        same = sum(int((padded_tokens[u] == clean_tokens[u]).sum()) for u in clean)
        row["padded_vs_unpadded_agreement"] = same / sum(t.numel() for t in clean_tokens.values())
    return row


def format_table(rows, snrs):
    """Markdown: one row per tokenizer."""
    header = ["tokenizer", "features", "codes used", "perplexity", "tokens/s",
              *(f"agreement {s} dB" for s in snrs), "encode RTF"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for name, row in rows.items():
        feats = row["features"]
        desc = {"spectral": lambda f: f"{f['kind'].upper()}",
                "whisper": lambda f: f"Whisper tiny.en encoder, layer {f['layer']}",
                "ssl": lambda f: f"{f.get('model_type', 'SSL')} layer {f['layer']}"}.get(
                    feats.get("name"), lambda f: str(f.get("name")))(feats)
        rtf = f"{row['encode_rtf']:.4f}"
        if "encode_rtf_padded_30s" in row:
            rtf += f" (30 s padded: {row['encode_rtf_padded_30s']:.4f})"
        lines.append("| " + " | ".join([
            name, desc, f"{row['used']}/{row['n_clusters']}", f"{row['perplexity']:.0f}",
            f"{row['tokens_per_s']:.0f}",
            *(f"{100 * row['agreement'][str(s)]:.1f} %" for s in snrs), rtf]) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", action="append", required=True, metavar="NAME=PATH",
                        help="a fitted KMeansTokenizer file (repeat)")
    parser.add_argument("--corpus", default="corpus", help="embedded corpus folder")
    parser.add_argument("--manifest", help="clean test manifest (default CORPUS/test.json)")
    parser.add_argument("--noise-manifest", help="noise manifest (default CORPUS/noise_test.json)")
    parser.add_argument("--snrs", default="0,5,10,20", help="comma-separated SNRs in dB")
    parser.add_argument("--max-files", type=int, help="use the first N utterances")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pad-cost", action="store_true",
                        help="also time Whisper features with the 30 s padding computed")
    parser.add_argument("--out", default="results/semantic_tokens/table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    snrs = [float(s) if "." in s else int(s) for s in args.snrs.split(",")]
    try:
        specs = dict(t.split("=", 1) for t in args.tokenizer)
    except ValueError:
        parser.error("--tokenizer takes NAME=PATH")
    try:
        tokenizers = {name: KMeansTokenizer.load(path) for name, path in specs.items()}
        clean, noises = load_items(args.corpus, args.manifest, args.noise_manifest,
                                   args.max_files)
    except (FileNotFoundError, ValueError) as e:
        print(f"token_stability: error: {e}", file=sys.stderr)
        return 2
    noisy = noisy_versions(clean, noises, snrs, args.seed)
    rows = {name: evaluate_tokenizer(tok, clean, noisy, args.pad_cost)
            for name, tok in tokenizers.items()}
    for name, row in rows.items():
        row["file"] = os.path.abspath(specs[name])
    table = format_table(rows, snrs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"utterances": len(clean), "snrs": snrs, "threads": args.threads,
                   "tokenizers": rows}, f, indent=2)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    print(f"{len(clean)} clean test utterances, additive noise at {args.snrs} dB:\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
