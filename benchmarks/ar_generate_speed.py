"""Speed of autoregressive decoding: no cache, dynamic / static KV cache, int8.

:func:`speechbrain_gense.decoding.ar_generate` (``transformers`` ``generate``)
with a random GPT-2 (``--layers`` 4, ``--width`` 224, ``--heads`` 4,
``--vocab`` 9219 by default: the size of the GenSE demo LMs) generating
``--new`` tokens (160: 2 s of 80 Hz acoustic tokens) after a ``--prompt``-token
prompt (363: GenSE's S2S prompt of a 2 s window), batch ``--batch`` (1),
``--threads`` (1) torch threads. Each repeat runs every ``--variants`` entry
one after the other with the same seed (interleaved, so all see the same
machine load):

- ``no-cache``: every token re-runs the whole sequence;
- ``dynamic``: ``transformers``' ``DynamicCache`` (grown by concatenation);
- ``static``: ``StaticCache`` (preallocated, written in place; the default of
  ``ar_generate``);
- ``static+int8``: the same on the int8 copy of the model
  (:func:`speechbrain_gense.models.quantize.quantize_int8`).

The table gives the medians over ``--repeats`` (3), each variant's time
relative to the first, and whether it gave the first variant's tokens
(int8 may differ: it changes the logits slightly).

Usage::

    python benchmarks/ar_generate_speed.py --batch 7 --threads 1 --out results/ar_generate_speed
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import format_load, machine_info, write_results  # noqa: E402 (adds the repo to sys.path)


def build_model(layers, width, heads, vocab, positions, seed=0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=width,
                        n_layer=layers, n_head=heads, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


VARIANTS = {"no-cache": (False, "static", False), "dynamic": (True, "dynamic", False),
            "static": (True, "static", False), "static+int8": (True, "static", True)}


def run_once(model, prompt, lens, new, use_cache, cache, seed, temperature):
    from speechbrain_gense.decoding import ar_generate

    start = time.perf_counter()
    out = ar_generate(model, prompt, lens, new, temperature=temperature, seed=seed,
                      use_cache=use_cache, cache_implementation=cache)
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=9219)
    parser.add_argument("--prompt", type=int, default=363, help="prompt tokens")
    parser.add_argument("--new", type=int, default=160, help="generated tokens")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", default="no-cache,dynamic,static,static+int8",
                        help=f"comma-separated, among {', '.join(VARIANTS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/ar_generate_speed")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        print(f"ar_generate_speed: unknown variant(s) {bad}; choose among "
              f"{', '.join(VARIANTS)}", file=sys.stderr)
        return 2

    import torch

    from speechbrain_gense.models.quantize import quantize_int8

    torch.set_num_threads(args.threads)
    model = build_model(args.layers, args.width, args.heads, args.vocab,
                        args.prompt + args.new + 1)
    int8 = quantize_int8(model) if any(VARIANTS[v][2] for v in variants) else None
    g = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, args.vocab, (args.batch, args.prompt), generator=g)
    lens = torch.full((args.batch,), args.prompt)
    times = {v: [] for v in variants}
    same = {v: True for v in variants}
    nfe = {}
    with torch.inference_mode():
        for r in range(args.repeats):
            outs = {}
            for v in variants:
                use_cache, cache, quantised = VARIANTS[v]
                seconds, outs[v] = run_once(int8 if quantised else model, prompt, lens,
                                            args.new, use_cache, cache, args.seed + r,
                                            args.temperature)
                times[v].append(seconds)
                nfe[v] = outs[v]["nfe"]
                same[v] = same[v] and torch.equal(outs[v]["tokens"], outs[variants[0]]["tokens"])
                print(f"repeat {r + 1}/{args.repeats} {v}: {seconds:.2f} s", file=sys.stderr)
    tokens = args.batch * args.new
    first = statistics.median(times[variants[0]])
    rows = []
    for v in variants:
        med = statistics.median(times[v])
        rows.append({"variant": v, "seconds": med, "tokens_per_s": tokens / med,
                     "x_first": med / first, "nfe": nfe[v], "runs": times[v],
                     "same_tokens_as_first": same[v]})
    info = machine_info(args.threads)
    md = [f"AR generation, GPT-2 {args.layers} layers x {args.width} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, vocab "
          f"{args.vocab}), batch {args.batch}, {args.prompt}-token prompt, {args.new} new tokens, "
          f"temperature {args.temperature}, {args.threads} thread(s), median of "
          f"{args.repeats}; {info['cpu']}, load {format_load(info['load_average'])}",
          "", f"| variant | s | tokens/s | NFE | x {variants[0]} | same tokens as {variants[0]} |",
          "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        md.append(f"| {row['variant']} | {row['seconds']:.2f} | {row['tokens_per_s']:.1f} | "
                  f"{row['nfe']} | {row['x_first']:.2f} | {row['same_tokens_as_first']} |")
    markdown = "\n".join(md)
    write_results(args.out, markdown, {"args": vars(args), "machine": info, "rows": rows})
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
