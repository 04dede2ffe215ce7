"""Best of N on a split: which way of choosing among N sampled candidates keeps the words?

For every utterance of a manifest, the MAGE folder decodes N candidates in one batch
(seed 1000 + utterance index); Whisper tiny.en transcribes them, the noisy input and
the clean reference; the per-file dWER of each candidate is kept with the scores of
each way of choosing one: the model's mean confidence, transcript consensus
(:func:`speechbrain_gense.selection.consensus_scores`, without and with the input's
vote: what ``--candidates N`` does), closeness to the noisy transcript, token-space
consensus (all codebooks / the first), Whisper-feature distance to the input and
feature consensus. ``--summary`` merges the JSON of several shards and prints the mean
per-file dWER of each rule (and the noisy input's, one candidate's and the oracle's).

Usage::

    python benchmarks/best_of_n.py --manifest results/corpus100/valid.json --candidates 4 \\
        --out results/bon_v223_0.json --shard 0 --shards 2      # and --shard 1 beside it
    python benchmarks/best_of_n.py --summary results/bon_v223_0.json results/bon_v223_1.json
"""

import argparse
import json
import os

import numpy as np
import torch

from speechbrain_gense.audio import load_audio
from speechbrain_gense.metrics.wer import WhisperTranscriber, word_errors
from speechbrain_gense.models.mage import MAGE
from speechbrain_gense.selection import consensus_scores, word_distance

#: Rule name -> (stored field, larger is better).
RULES = {"max confidence": ("conf", True), "token consensus": ("tcons", False),
         "token consensus, codebook 0": ("tcons0", False),
         "feature distance to the input": ("fnoisy", False), "feature consensus": ("fcons", False),
         "closest to the noisy transcript": ("to_noisy", False),
         "transcript consensus": ("cons", False),
         "transcript consensus + input vote (--candidates)": ("cons_input", False)}


def measure(args):
    torch.set_num_threads(1)
    root = os.path.dirname(os.path.abspath(args.manifest))
    model = MAGE.load(args.model)
    model.eval()
    asr = WhisperTranscriber()
    with open(args.manifest, encoding="utf-8") as f:
        manifest = json.load(f)
    sr, n, rows = model.sample_rate, args.candidates, {}

    def read(item, key):
        return load_audio(item[key].replace("{data_root}", root), sr, resample=True)[0].reshape(1, -1)

    for i, (key, item) in enumerate(sorted(manifest.items())):
        if i % args.shards != args.shard:
            continue
        noisy, clean = read(item, "noisy_wav"), read(item, "clean_wav")
        with torch.no_grad():
            res = model.enhance(noisy.expand(n, -1).contiguous(),
                                generator=torch.Generator().manual_seed(1000 + i))
            feats = torch.nn.functional.normalize(
                model.content_encoder(torch.cat([noisy, res["wav"]]), None), dim=-1)
        texts = asr.transcribe_many(list(res["wav"]), sr)
        ref, noisy_text = asr.transcribe_many([clean[0], noisy[0]], sr)
        words = max(word_errors(ref, texts[0])[1], 1)
        tok, fn, fo = res["tokens"], feats[:1], feats[1:]
        rows[key] = dict(
            snr=item.get("snr"), dwer=[word_errors(ref, t)[0] / words for t in texts],
            noisy_dwer=word_errors(ref, noisy_text)[0] / words,
            conf=res["confidence"].mean(1).tolist(),
            cons=consensus_scores(texts), cons_input=consensus_scores(texts, noisy_text),
            to_noisy=[word_distance(t, noisy_text) for t in texts],
            tcons=[float((tok[j] != tok).sum()) for j in range(n)],
            tcons0=[float((tok[j, :, 0] != tok[:, :, 0]).sum()) for j in range(n)],
            fnoisy=(1 - (fo * fn).sum(-1)).mean(1).tolist(),
            fcons=[float((1 - (fo[j:j + 1] * fo).sum(-1)).mean()) for j in range(n)])
        print(f"{len(rows)} files", flush=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(rows, f)
    summarise([args.out])


def summarise(paths):
    rows = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows.update(json.load(f))
    dwer = np.array([r["dwer"] for r in rows.values()])
    every = np.arange(len(dwer))
    table = {"noisy input": np.mean([r["noisy_dwer"] for r in rows.values()]),
             "one candidate (mean of the N)": dwer.mean()}
    for name, (field, larger) in RULES.items():
        if all(field in r for r in rows.values()):
            score = np.array([r[field] for r in rows.values()])
            table[name] = dwer[every, (score.argmax(1) if larger else score.argmin(1))].mean()
    table["oracle"] = dwer.min(1).mean()
    print(f"{len(dwer)} files, {dwer.shape[1]} candidates: mean per-file dWER (%)")
    for name, value in table.items():
        print(f"| {name} | {100 * value:.1f} |")
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest")
    parser.add_argument("--model", default="pretrained/mage")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--out", default="results/best_of_n.json")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--summary", nargs="+", metavar="JSON",
                        help="merge these outputs and print the table (no decoding)")
    args = parser.parse_args()
    if args.summary:
        summarise(args.summary)
    elif not args.manifest:
        parser.error("--manifest is needed (or --summary)")
    else:
        measure(args)


if __name__ == "__main__":
    main()
