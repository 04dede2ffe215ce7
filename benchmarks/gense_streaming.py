#!/usr/bin/env python3
"""Latency of streaming GenSE (the interleaved layout of appendix A.8) against chunked GenSE.

The hierarchical GenSE (N2S then S2S) can only start writing a chunk once
the whole chunk has arrived: its first output comes after a chunk plus its
right context (``chunk_seconds + overlap_seconds`` of the model's
``inference.yaml``) plus the compute of that chunk. The interleaved model
(:func:`speechbrain_gense.models.gense.interleaved_layout`, ``GenSE(...,
interleave_lookahead=L)``) writes clean block ``t`` once noisy block ``t +
L`` has arrived; a block is the shortest time holding whole frames of both
token streams (100 ms for 50 Hz semantic tokens and SimCodec at 80 Hz).

For each lookahead ``L`` this builds an interleaved LM of the size of the
given GenSE's S2S over the same tokenizers (**random weights**: no trained
streaming model is shipped, so the tokens are noise; the times do not
depend on the weights) and measures, on ``--seconds`` of noisy speech:

- ``first block (ms)``: the compute from the moment noisy block ``L`` is in
  to the last token of clean block 0 (the prompt's forward passes and the
  block's tokens; median of ``--runs``);
- ``first output (ms)``: the algorithmic latency ``(L + 1)`` blocks plus
  that compute (codec decoding not included: the SimCodec decoder is not
  causal, so streaming audio out of it would need an overlap scheme that
  is not built);
- ``per block (ms)`` and ``streaming RTF``: the whole utterance's
  generation (:func:`speechbrain_gense.decoding.forced_span_generate`: each
  noisy block fed in one forward pass, each clean token sampled, KV cache)
  per block and per second of audio. Below 1 the model keeps up with the
  input.

The chunked row times one ``GenSE.enhance`` of one chunk with its context
(the shipped decoding) and adds the chunk and right context it waits for.

Usage::

    python benchmarks/gense_streaming.py --gense pretrained/gense --lookahead 0,1,2,4 \\
        --seconds 2 --runs 3 --threads 1 --out results/gense_streaming

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


def streaming_model(gense, lookahead, seconds, seed=0):
    """An interleaved GenSE with ``gense``'s tokenizers and an S2S-sized random LM."""
    from speechbrain_gense.models.gense import GenSE, TokenLM, block_frames

    cfg = dict(gense.s2s.config)
    cfg["hint"] = False  # the interleaved layout has no hints (a hinted S2S is timed without)
    n_sem, n_ac = block_frames(gense.semantic_tokenizer.frame_rate,
                               gense.acoustic_tokenizer.frame_rate)
    frames = gense.acoustic_tokenizer.num_frames(int(round(seconds * gense.sample_rate)))
    blocks = -(-frames // n_ac)
    cfg["max_positions"] = 1 + 2 * blocks * (n_sem + n_ac * gense.vocab.num_codebooks)
    torch.manual_seed(seed)
    return GenSE(gense.semantic_tokenizer, gense.acoustic_tokenizer, None, TokenLM(**cfg),
                 max_seconds=seconds, interleave_lookahead=lookahead).eval()


def first_block_seconds(model, noisy, opts):
    """Compute from noisy block ``L`` in to clean block 0 out (one item)."""
    from speechbrain_gense.decoding import forced_span_generate

    lay = model.interleaved_layout(noisy)
    prompt, forced, lo, hi = model.interleaved_schedule(lay, 0)
    bs = lay["block_size"]  # clean block 0 follows the prompt
    lm = model.generation_lm("s2s", opts["precision"])
    t0 = time.perf_counter()
    forced_span_generate(lm, prompt, forced[:bs], lo[:bs], hi[:bs],
                         temperature=opts["temperature"], seed=0)
    return time.perf_counter() - t0


def measure(gense, inference, wav, lookaheads, seconds, runs):
    """Rows of the table (see the module doc)."""
    rows = []
    opts = gense.decode_options()
    # chunked GenSE: one chunk with its context, the shipped decoding
    sr = gense.sample_rate
    chunk, overlap = float(inference["chunk_seconds"]), float(inference["overlap_seconds"])
    window = wav[:, : int(round(min(chunk + 2 * overlap, gense.max_seconds) * sr))]
    gense.enhance(window, generator=torch.Generator().manual_seed(0))  # warm-up
    times = []
    for run in range(runs):
        t0 = time.perf_counter()
        gense.enhance(window, generator=torch.Generator().manual_seed(run))
        times.append(time.perf_counter() - t0)
    compute = statistics.median(times)
    rows.append({"system": "gense, chunked (shipped)", "lookahead": None,
                 "waits_ms": 1000 * (chunk + overlap), "first_block_ms": 1000 * compute,
                 "first_output_ms": 1000 * (chunk + overlap + compute),
                 "per_block_ms": None, "rtf": compute / (window.shape[-1] / sr)})
    for L in lookaheads:
        model = streaming_model(gense, L, seconds)
        n_sem, _ = model.block
        block_s = n_sem / model.semantic_tokenizer.frame_rate
        noisy = model.tokens(wav)
        o = model.decode_options()
        first_block_seconds(model, noisy, o)  # warm-up
        model._enhance_interleaved(wav, noisy, o, torch.Generator().manual_seed(0))
        first, full = [], []
        for run in range(runs):
            first.append(first_block_seconds(model, noisy, o))
            t0 = time.perf_counter()
            model._enhance_interleaved(wav, noisy, o, torch.Generator().manual_seed(run))
            full.append(time.perf_counter() - t0)
        blocks = int(model.interleaved_layout(noisy)["blocks"][0])
        fb, total = statistics.median(first), statistics.median(full)
        rows.append({"system": f"gense, interleaved, lookahead {L}", "lookahead": L,
                     "block_ms": 1000 * block_s, "waits_ms": 1000 * (L + 1) * block_s,
                     "first_block_ms": 1000 * fb,
                     "first_output_ms": 1000 * ((L + 1) * block_s + fb),
                     "per_block_ms": 1000 * total / blocks, "rtf": total / seconds,
                     "parameters_m": sum(p.numel() for p in model.s2s.parameters()) / 1e6})
    return rows


def table(rows, info, command):
    def cell(v, fmt="{:.0f}"):
        return "–" if v is None else fmt.format(v)

    lines = [f"`{command}`", "",
             "| system | waits for input (ms) | first block compute (ms) | first output (ms) "
             "| compute per block (ms) | RTF |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['system']} | {cell(r['waits_ms'])} | {cell(r['first_block_ms'])} | "
                     f"{cell(r['first_output_ms'])} | {cell(r['per_block_ms'], '{:.1f}')} | "
                     f"{r['rtf']:.3f} |")
    lines += ["", f"- machine: {info['cpu']}, {info['cpu_count']} CPUs, "
              f"{info['threads']} torch thread(s); load average "
              f"{common.format_load(info['load_average'])} at start, "
              f"{common.format_load(info.get('load_average_end'))} at end",
              "- interleaved rows: random weights of the S2S size (latency only); the codec "
              "decoding of the output is not included"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gense", default="pretrained/gense", help="GenSE model folder")
    parser.add_argument("--lookahead", default="0,1,2,4",
                        help="comma-separated lookaheads in blocks (0,1,2,4)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="audio of the streaming rows (2, the recipe's max_seconds)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--out", default="results/gense_streaming", help="output stem")
    args = parser.parse_args(argv)
    try:
        lookaheads = [int(x) for x in args.lookahead.split(",") if x.strip()]
    except ValueError:
        lookaheads = []
    if not lookaheads or min(lookaheads) < 0 or args.runs < 1 or args.seconds <= 0:
        print("gense_streaming: --lookahead needs integers >= 0, --runs >= 1, --seconds > 0",
              file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        from speechbrain_gense.inference import EnhanceGenerative

        enhancer = EnhanceGenerative.from_hparams(common.resolve_model_folder(args.gense))
    except (common.BenchmarkError, OSError, ValueError) as e:
        print(f"gense_streaming: {e}", file=sys.stderr)
        return 2
    gense = enhancer.model
    if getattr(gense, "method", None) != "gense":
        print(f"gense_streaming: {args.gense} is not a GenSE model", file=sys.stderr)
        return 2
    sr = gense.sample_rate
    blocks = list(common.speech_blocks(args.seconds, sr))
    wav = torch.from_numpy(np.concatenate(blocks))[None, : int(round(args.seconds * sr))]
    inference = {"chunk_seconds": enhancer.chunk_seconds,
                 "overlap_seconds": enhancer.overlap_seconds}
    info = common.machine_info(args.threads)
    with torch.no_grad():
        rows = measure(gense, inference, wav, lookaheads, args.seconds, args.runs)
    info["load_average_end"] = common.machine_info(args.threads)["load_average"]
    command = common.command_line("gense_streaming.py", argv)
    result = {"machine": info, "seconds": args.seconds, "lookaheads": lookaheads,
              "command": command, "rows": rows}
    markdown = table(rows, info, command)
    common.write_results(args.out, markdown, result)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
