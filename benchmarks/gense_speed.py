#!/usr/bin/env python3
"""GenSE (AR) against MAGE (masked) on the same signal in one run: RTF and tokens/s.

Every system enhances the same noisy signal (``--seconds`` of the embedded
corpus's noisy test speech, else a synthetic speech-like signal) through the
path users run, ``EnhanceGenerative.from_hparams(folder).enhance_batch``
(chunking included), ``--runs`` times after one untimed warm-up (which also
builds the int8 copies; the no-cache row, the same model as the next one,
has none); the systems are interleaved run by run so that a
change of machine load hits them alike. The systems:

- ``gense, no cache``: every token re-runs the whole sequence
  (``use_cache=False``; ``--no-cache-runs`` timed runs, it is slow);
- ``gense, KV cache``: the shipped decoding (chunks one after the other,
  each continuing the previous one's tokens: ``carry_context``);
- ``gense, KV cache, int8``: both LMs with int8 linear layers
  (``precision="int8"``);
- ``gense, KV cache, batched chunks`` (and ``+ int8``): ``carry_context:
  false`` (chunks are independent: no carried prefix) and ``batch_size``
  ``--batch``: all chunks of the signal in one batched ``generate`` per LM;
- ``mage`` and ``mage, int8`` (``--mage``; its default decoding).

Reported per system: median seconds, RTF (= seconds / audio seconds), the
LM forward calls (NFE) of one enhancement, the token-model parameters,
output tokens/s (codec tokens of the output audio per wall second: the same
count for every system) and generated tokens/s (tokens the token model
sampled, per wall second: GenSE's N2S + S2S tokens including each chunk's
context; MAGE's predicted positions, each decoded once), and each system's
time relative to the first (``x first``) and to MAGE (``x mage``): ratios
measured in one run are what to quote on a shared machine.

Usage::

    python benchmarks/gense_speed.py --gense pretrained/gense --mage pretrained/mage \\
        --seconds 10 --runs 2 --threads 1 --out results/gense_speed

Writes ``OUT.md`` (the table) and ``OUT.json``.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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


def generated_tokens(out):
    """Tokens a model call sampled: GenSE's ``generated``, else the valid output positions."""
    if out.get("generated") is not None:
        return int(out["generated"])
    tokens = out["tokens"]
    T, K = tokens.shape[1], tokens.shape[2] if tokens.dim() > 2 else 1
    lens = out.get("lens")
    if lens is None:
        return int(tokens.shape[0] * T * K)
    return int(torch.round(lens.float().cpu() * T).sum()) * K


def one_call(enhancer, wav, seed, opts):
    """One timed ``enhance_batch``; returns seconds and the model calls' NFE / tokens."""
    model = enhancer.model
    counts = {"nfe": 0, "generated": 0, "calls": 0}
    original = model.enhance

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        counts["nfe"] += int(out.get("nfe", 0) or 0)
        counts["generated"] += generated_tokens(out)
        counts["calls"] += 1
        return out

    model.enhance = counting
    try:
        t0 = time.perf_counter()
        enhancer.enhance_batch(wav, seed=seed, **opts)
        seconds = time.perf_counter() - t0
    finally:
        model.enhance = original
    return seconds, counts


def run(systems, seconds, runs, no_cache_runs=1):
    """Times each ``(name, enhancer, opts)`` (interleaved); returns result rows."""
    wav = signal(seconds)
    counts = {}
    for name, enh, opts in systems:  # warm-up (int8 copies built here), NFE, tokens
        if opts.get("use_cache") is not False:  # no cache: same model, counted when timed
            counts[name] = one_call(enh, wav, 0, opts)[1]
    times = {name: [] for name, _, _ in systems}
    for r in range(runs):
        for name, enh, opts in systems:
            if opts.get("use_cache") is False and r >= no_cache_runs:
                continue
            seconds_r, counts_r = one_call(enh, wav, r, opts)
            times[name].append(seconds_r)
            counts.setdefault(name, counts_r)
    first = statistics.median(times[systems[0][0]])
    mage = next((statistics.median(times[n]) for n, _, o in systems
                 if n == "mage"), None)
    rows = []
    for name, enh, opts in systems:
        med = statistics.median(times[name])
        model = enh.model
        out_tokens = seconds * model.output_tokenizer.frame_rate * \
            model.output_tokenizer.num_codebooks
        rows.append({"system": name, "seconds": med, "rtf": med / seconds,
                     "x_first": med / first, "x_mage": None if mage is None else med / mage,
                     "nfe": counts[name]["nfe"], "calls": counts[name]["calls"],
                     "generated_tokens": counts[name]["generated"],
                     "generated_tok_s": counts[name]["generated"] / med,
                     "output_tok_s": out_tokens / med, "runs": times[name],
                     "parameters": count_parameters(model), "method": model.method,
                     "opts": {k: v for k, v in opts.items()},
                     "carry_context": enh.carries_context()})
    return rows


def table(rows, seconds, info, command):
    runs = max(len(r["runs"]) for r in rows)
    lines = [f"RTF on {seconds:g} s of audio, {info['threads']} thread(s), {info['cpu']} "
             f"(load {common.format_load(info['load_average'])} at start, "
             f"{common.format_load(info.get('load_average_end'))} at end); median of "
             f"{runs} runs (rows with fewer say so)", "",
             f"`{command}`", "",
             "| system | token-model parameters (M) | model calls | NFE | seconds | RTF | "
             "output tokens/s | generated tokens/s | x first | x mage |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["system"] + (f" ({len(r['runs'])} run)" if len(r["runs"]) < runs else "")
        x_mage = "–" if r["x_mage"] is None else f"{r['x_mage']:.2f}"
        lines.append(f"| {name} | {r['parameters'] / 1e6:.2f} | {r['calls']} | {r['nfe']} | "
                     f"{r['seconds']:.2f} | {r['rtf']:.3f} | {r['output_tok_s']:.0f} | "
                     f"{r['generated_tok_s']:.0f} | {r['x_first']:.2f} | {x_mage} |")
    return "\n".join(lines)


def build_systems(args):
    """The ``(name, enhancer, opts)`` of the run (see the module doc)."""
    from speechbrain_gense.inference import EnhanceGenerative

    folder = common.resolve_model_folder(args.gense)
    gense = EnhanceGenerative.from_hparams(folder)
    batched = EnhanceGenerative.from_hparams(folder, overrides={"carry_context": False})
    systems = []
    if not args.no_cache_run:
        systems.append(("gense, no cache", gense, {"use_cache": False}))
    systems += [("gense, KV cache", gense, {}),
                ("gense, KV cache, int8", gense, {"precision": "int8"}),
                ("gense, KV cache, batched chunks", batched, {"batch_size": args.batch}),
                ("gense, KV cache, batched chunks, int8", batched,
                 {"batch_size": args.batch, "precision": "int8"})]
    if args.mage:
        mage = EnhanceGenerative.from_hparams(common.resolve_model_folder(args.mage))
        systems += [("mage", mage, {}), ("mage, int8", mage, {"precision": "int8"})]
    return systems


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gense", default="pretrained/gense", help="GenSE model folder")
    parser.add_argument("--mage", default="pretrained/mage", help="MAGE model folder ('' : none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio duration (10)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per system (3)")
    parser.add_argument("--no-cache-runs", type=int, default=1,
                        help="timed runs of GenSE without the KV cache (1: it is slow)")
    parser.add_argument("--batch", type=int, default=16,
                        help="batch_size of the batched-chunk rows (16: every chunk of 10 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--no-cache-run", action="store_true",
                        help="skip GenSE without the KV cache (slow)")
    parser.add_argument("--out", default="results/gense_speed", help="output stem")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.no_cache_runs < 1 or args.batch < 1:
        print("gense_speed: --runs, --no-cache-runs and --batch must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        systems = build_systems(args)
    except (common.BenchmarkError, OSError, ValueError) as e:
        print(f"gense_speed: {e}", file=sys.stderr)
        return 2
    info = common.machine_info(args.threads)
    rows = run(systems, args.seconds, args.runs, args.no_cache_runs)
    info["load_average_end"] = common.machine_info(args.threads)["load_average"]
    command = common.command_line("gense_speed.py", argv)
    md = table(rows, args.seconds, info, command)
    print(md)
    common.write_results(args.out, md, {"machine": info, "seconds": args.seconds,
                                        "command": command, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
