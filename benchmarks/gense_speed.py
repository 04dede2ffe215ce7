#!/usr/bin/env python3
"""RTF of GenSE (AR, with and without the KV cache) and MAGE (masked) in one run.

Every system enhances the same noisy signal (``--seconds`` of the embedded
corpus's noisy test speech, else a synthetic speech-like signal) through the
path users run, ``EnhanceGenerative.from_hparams(folder).enhance_batch``
(chunking included), ``--runs`` times after one untimed warm-up; the systems
are interleaved run by run so that a change of machine load hits them alike.
Reported: median seconds, RTF (= seconds / audio seconds), the model's own
NFE count, the token-model parameters, and each system's time relative to
the first one (``x first``: ratios measured in one run are what to quote on a
shared machine).

Usage::

    python benchmarks/gense_speed.py --gense pretrained/gense --mage pretrained/mage \\
        --seconds 10 --runs 3 --threads 1 --out results/gense_speed

Writes ``OUT.md`` (the table) and ``OUT.json``.
"""

import argparse
import statistics
import sys
import time

import numpy as np
import torch

import common  # noqa: E402 -- benchmarks/common.py (puts the checkout on sys.path)


def count_parameters(model):
    """Parameters of the trainable token model(s) (frozen tokenizers excluded)."""
    skip = {id(p) for name in ("tokenizer", "semantic_tokenizer", "acoustic_tokenizer",
                               "speaker_encoder")
            for p in (getattr(model, name).parameters() if hasattr(getattr(model, name, None),
                                                                   "parameters") else [])}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def signal(seconds, sample_rate=16000):
    """``seconds`` of noisy speech ``[1, S]`` (the corpus's, else synthetic)."""
    blocks = list(common.speech_blocks(seconds, sample_rate))
    return torch.from_numpy(np.concatenate(blocks))[None, :]


def run(systems, seconds, runs):
    """Times each ``(name, enhancer, opts)``; returns result rows."""
    wav = signal(seconds)
    nfe = {}
    for name, enh, opts in systems:  # warm-up, and the NFE of one call
        counter = {"nfe": 0}
        model = enh.model
        original = model.enhance

        def counting(*args, _orig=original, _c=counter, **kwargs):
            out = _orig(*args, **kwargs)
            _c["nfe"] += int(out.get("nfe", 0) or 0)
            return out

        model.enhance = counting
        try:
            enh.enhance_batch(wav, seed=0, **opts)
        finally:
            model.enhance = original
        nfe[name] = counter["nfe"]
    times = {name: [] for name, _, _ in systems}
    for r in range(runs):
        for name, enh, opts in systems:
            t0 = time.perf_counter()
            enh.enhance_batch(wav, seed=r, **opts)
            times[name].append(time.perf_counter() - t0)
    first = statistics.median(times[systems[0][0]])
    rows = []
    for name, enh, opts in systems:
        med = statistics.median(times[name])
        rows.append({"system": name, "seconds": med, "rtf": med / seconds,
                     "x_first": med / first, "nfe": nfe[name], "runs": times[name],
                     "parameters": count_parameters(enh.model), "opts": opts})
    return rows


def table(rows, seconds, info):
    lines = [f"RTF on {seconds:g} s of audio, {info['threads']} thread(s), {info['cpu']} "
             f"(load {common.format_load(info['load_average'])}); median of "
             f"{len(rows[0]['runs'])} runs", "",
             "| system | token-model parameters (M) | NFE | seconds | RTF | x first |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['parameters'] / 1e6:.2f} | {r['nfe']} | "
                     f"{r['seconds']:.2f} | {r['rtf']:.3f} | {r['x_first']:.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gense", default="pretrained/gense", help="GenSE model folder")
    parser.add_argument("--mage", default="pretrained/mage", help="MAGE model folder ('' : none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio duration (10)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per system (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--no-cache-run", action="store_true",
                        help="skip GenSE without the KV cache (slow)")
    parser.add_argument("--out", default="results/gense_speed", help="output stem")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from speechbrain_gense.inference import EnhanceGenerative

    try:
        gense = EnhanceGenerative.from_hparams(common.resolve_model_folder(args.gense))
        systems = [("gense (KV cache)", gense, {})]
        if not args.no_cache_run:
            systems.append(("gense (no cache)", gense, {"use_cache": False}))
        if args.mage:
            systems.append(("mage", EnhanceGenerative.from_hparams(
                common.resolve_model_folder(args.mage)), {}))
    except common.BenchmarkError as e:
        print(f"gense_speed: {e}", file=sys.stderr)
        return 2
    info = common.machine_info(args.threads)
    rows = run(systems, args.seconds, args.runs)
    md = table(rows, args.seconds, info)
    print(md)
    common.write_results(args.out, md, {"machine": info, "seconds": args.seconds, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
