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
``--guard-rules`` turns the kept candidates into guard rows (transcript WER against the
noisy transcript, blind SNR, Whisper's log-probabilities) and runs the guard's own
calibration on them (``docs/guard.md``).

Usage::

    python benchmarks/best_of_n.py --manifest results/corpus100/valid.json --candidates 4 \\
        --out results/bon_v223_0.json --shard 0 --shards 2      # and --shard 1 beside it
    python benchmarks/best_of_n.py --summary results/bon_v223_0.json results/bon_v223_1.json
    python benchmarks/best_of_n.py --guard-rules VALID*.json --apply-to TEST*.json [--first]
"""

import argparse
import json
import os

import numpy as np
import torch

from speechbrain_gense.audio import load_audio
from speechbrain_gense.guard import estimate_snr
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
                                generator=torch.Generator().manual_seed(args.seed + i))
            feats = torch.nn.functional.normalize(
                model.content_encoder(torch.cat([noisy, res["wav"]]), None), dim=-1)
        scored = asr.transcribe_scored(list(res["wav"]) + [clean[0], noisy[0]], sr)
        texts = [t for t, _ in scored[:n]]
        (ref, _), (noisy_text, noisy_lp) = scored[n:]
        words = max(word_errors(ref, texts[0])[1], 1)
        tok, fn, fo = res["tokens"], feats[:1], feats[1:]
        rows[key] = dict(
            snr=item.get("snr"), snr_est=estimate_snr(noisy[0], sr), texts=texts,
            noisy_text=noisy_text, ref_text=ref, lp=[lp for _, lp in scored[:n]],
            noisy_lp=noisy_lp, dwer=[word_errors(ref, t)[0] / words for t in texts],
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


def _load(paths):
    rows = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows.update(json.load(f))
    return rows


def guard_features(row, first=False):
    """Content scores of the candidate ``--candidates`` keeps (consensus + input vote),
    or of the first candidate (one plain draw) with ``first``."""
    from speechbrain_gense.guard import transcript_wer

    texts, n = row["texts"], len(row["texts"])
    c = 0 if first else int(np.argmin(row["cons_input"]))
    words = max(len(texts[c].split()), 1)
    input_score = sum(word_distance(row["noisy_text"], t) for t in texts)
    return {"kept": c, "dwer": row["dwer"][c], "noisy_dwer": row["noisy_dwer"],
            "twer": transcript_wer(row["noisy_text"], texts[c]),
            "disp": row["cons"][c] / (n - 1) / words,
            "dlp": row["noisy_lp"] - row["lp"][c],
            "input_wins": float(input_score <= row["cons_input"][c])}


def guard_rows(paths, first=False):
    """Guard rows (:mod:`speechbrain_gense.guard`) of the kept candidates and the per-file
    dWER of the kept candidate and of the input; each path's decodes count separately."""
    rows, ours, noisy, extra = [], {}, {}, {}
    for path in paths:
        for uid, row in _load([path]).items():
            f, key = guard_features(row, first), f"{path}#{uid}"
            rows.append({"file": key, "snr_db": row["snr_est"], "transcript_wer": f["twer"],
                         "secs": float("nan"), "confidence": float("nan"),
                         "noisy_logprob": row["noisy_lp"],
                         "enhanced_logprob": row["lp"][f["kept"]]})
            ours[key], noisy[key], extra[key] = f["dwer"], f["noisy_dwer"], f
    return rows, ours, noisy, extra


#: Rules that are not guard checks, tried beside them: name -> flag(features).
OTHER_RULES = {"candidate disagreement > 0.5": lambda f: f["disp"] > 0.5,
               "input wins the consensus": lambda f: f["input_wins"] > 0}


def guard_rules(valid_paths, test_paths, first=False, shipped=None):
    """Guard thresholds chosen on the valid decodes by ``guard.calibrate`` (fewest files
    worse than the input, then fewest flags), with and without the ASR-confidence check,
    and applied to the test decodes; with the shipped thresholds and two other rules."""
    from speechbrain_gense.guard import apply_thresholds, calibrate

    valid, test = guard_rows(valid_paths, first), guard_rows(test_paths, first)
    print(f"{len(valid[0])} valid / {len(test[0])} test decodes; noisy "
          f"{100 * np.mean(list(valid[2].values())):.1f} / "
          f"{100 * np.mean(list(test[2].values())):.1f}")
    sets = {"no guard": {"wer_at_high_snr": 1e9, "wer_at_low_snr": 1e9, "min_secs": None}}
    if shipped:
        sets["shipped thresholds"] = shipped
    sets["calibrated, words only"] = calibrate(*valid[:3], grid={"max_logprob_drop": [None]})[
        "thresholds"]
    sets["calibrated, words + ASR confidence"] = calibrate(*valid[:3])["thresholds"]
    print("| rule | thresholds (high / low / drop) | valid flagged | valid worse | valid dWER "
          "| test flagged | test worse | test dWER |\n|---|---|---:|---:|---:|---:|---:|---:|")
    table = {}
    for name, t in sets.items():
        v, te = (apply_thresholds(*split[:3], t) for split in (valid, test))
        shown = f"{t['wer_at_high_snr']:g} / {t['wer_at_low_snr']:g} / {t.get('max_logprob_drop')}"
        table[name] = (t, v, te)
        print(f"| {name} | {shown} | {v['flagged']} | {v['worse']} | {100 * v['mean']:.1f} | "
              f"{te['flagged']} | {te['worse']} | {100 * te['mean']:.1f} |")
    for name, flag in OTHER_RULES.items():
        out = []
        for split in (valid, test):
            after = [(split[2][k] if flag(f) else split[1][k], split[2][k], flag(f))
                     for k, f in split[3].items()]
            out.append((sum(a[2] for a in after), sum(a[0] > a[1] + 1e-9 for a in after),
                        100 * np.mean([a[0] for a in after])))
        table[name] = out
        print(f"| {name} | – | {out[0][0]} | {out[0][1]} | {out[0][2]:.1f} | {out[1][0]} | "
              f"{out[1][1]} | {out[1][2]:.1f} |")
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest")
    parser.add_argument("--model", default="pretrained/mage")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--out", default="results/best_of_n.json")
    parser.add_argument("--seed", type=int, default=1000,
                        help="utterance i is decoded with seed SEED + i")
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--summary", nargs="+", metavar="JSON",
                        help="merge these outputs and print the table (no decoding)")
    parser.add_argument("--guard-rules", nargs="+", metavar="JSON",
                        help="choose each guard rule's threshold on these outputs (valid) ...")
    parser.add_argument("--apply-to", nargs="+", metavar="JSON", default=[],
                        help="... and apply it to these (test)")
    parser.add_argument("--first", action="store_true",
                        help="guard rules on the first candidate (no best of N)")
    args = parser.parse_args()
    if args.guard_rules:
        import yaml

        with open(os.path.join(args.model, "inference.yaml"), encoding="utf-8") as f:
            line = [t for t in f if t.startswith("guard_thresholds:")]  # a plain YAML line
        shipped = yaml.safe_load(line[0])["guard_thresholds"] if line else None
        guard_rules(args.guard_rules, args.apply_to, args.first, shipped)
    elif args.summary:
        summarise(args.summary)
    elif not args.manifest:
        parser.error("--manifest is needed (or --summary)")
    else:
        measure(args)


if __name__ == "__main__":
    main()
