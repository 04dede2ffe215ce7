"""Speed of autoregressive decoding with and without the KV cache.

:func:`speechbrain_gense.decoding.ar_generate` (``transformers`` ``generate``)
with a random GPT-2 (``--layers`` 4, ``--width`` 256, ``--heads`` 4,
``--vocab`` 2048 by default) generating ``--new`` tokens (500) after a
``--prompt``-token prompt (500), batch ``--batch`` (1), ``--threads`` (1)
torch threads. Each repeat runs ``use_cache=True`` and ``use_cache=False``
one after the other with the same seed (interleaved, so both see the same
machine load); the table gives the medians over ``--repeats`` (3) and the
median of the per-repeat ratios, and checks that both give the same tokens.

Usage::

    python benchmarks/ar_generate_speed.py --out results/ar_generate_speed
"""

import argparse
import statistics
import sys
import time

from common import machine_info, write_results  # noqa: E402 (adds the repo to sys.path)


def build_model(layers, width, heads, vocab, positions, seed=0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=width,
                        n_layer=layers, n_head=heads, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def run_once(model, prompt, lens, new, use_cache, seed, temperature):
    from speechbrain_gense.decoding import ar_generate

    start = time.perf_counter()
    out = ar_generate(model, prompt, lens, new, temperature=temperature, seed=seed,
                      use_cache=use_cache)
    return time.perf_counter() - start, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--prompt", type=int, default=500, help="prompt tokens")
    parser.add_argument("--new", type=int, default=500, help="generated tokens")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/ar_generate_speed")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    model = build_model(args.layers, args.width, args.heads, args.vocab,
                        args.prompt + args.new + 1)
    g = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, args.vocab, (args.batch, args.prompt), generator=g)
    lens = torch.full((args.batch,), args.prompt)
    times = {True: [], False: []}
    same, nfe = True, {}
    with torch.inference_mode():
        for r in range(args.repeats):
            outs = {}
            for use_cache in (True, False):
                seconds, outs[use_cache] = run_once(model, prompt, lens, args.new, use_cache,
                                                    args.seed + r, args.temperature)
                times[use_cache].append(seconds)
                nfe[use_cache] = outs[use_cache]["nfe"]
                print(f"repeat {r + 1}/{args.repeats} use_cache={use_cache}: {seconds:.2f} s",
                      file=sys.stderr)
            same = same and torch.equal(outs[True]["tokens"], outs[False]["tokens"])
    tokens = args.batch * args.new
    ratios = [n / c for c, n in zip(times[True], times[False])]
    rows = []
    for use_cache in (True, False):
        med = statistics.median(times[use_cache])
        rows.append({"use_cache": use_cache, "seconds": med, "tokens_per_s": tokens / med,
                     "nfe": nfe[use_cache], "runs": times[use_cache]})
    info = machine_info(args.threads)
    md = [f"AR generation, GPT-2 {args.layers} layers x {args.width} "
          f"({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, vocab "
          f"{args.vocab}), batch {args.batch}, {args.prompt}-token prompt, {args.new} new tokens, "
          f"temperature {args.temperature}, {args.threads} thread(s), median of "
          f"{args.repeats}; {info['cpu']}, load {'/'.join(f'{x:.2f}' for x in info['load_average'] or [])}",
          "", "| KV cache | s | tokens/s | NFE |", "|---|---:|---:|---:|"]
    for row in rows:
        md.append(f"| {'on' if row['use_cache'] else 'off'} | {row['seconds']:.2f} | "
                  f"{row['tokens_per_s']:.1f} | {row['nfe']} |")
    md += ["", f"Speed-up of the cache (median of per-repeat ratios): "
           f"{statistics.median(ratios):.2f}x; same tokens with and without cache: {same}."]
    markdown = "\n".join(md)
    write_results(args.out, markdown, {"args": vars(args), "machine": info, "rows": rows,
                                       "speedup": statistics.median(ratios),
                                       "same_tokens": same})
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
