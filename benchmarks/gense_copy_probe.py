"""Can the S2S LM learn to copy its prompt's noisy acoustic tokens? A probe of position ids.

S2S reads ``[noisy_sem ; clean_sem ; BOS ; noisy_ac]`` and writes the clean
acoustic tokens. At low noise most clean tokens equal the noisy ones at the
same frame (on the embedded corpus, copying the noisy RVQ tokens is right for
19 % / 7 % of codebooks 1 / 2, far above chance, 0.1 %), so the first thing S2S
has to learn is to attend to the noisy token of the frame it writes. This
probe trains S2S (:class:`~speechbrain_gense.models.gense.TokenLM`, the
recipe's sizes) on random token sequences whose targets are the noisy acoustic
tokens with a fraction ``--flip`` replaced by random ones, through the recipe's
layout (:func:`~speechbrain_gense.models.gense.s2s_layout`) and loss, and
reports held-out teacher-forced accuracy (the best possible is about
``1 - flip``; chance ``1 / vocab``) for each position scheme and architecture:

- ``gpt2`` / ``llama``: learned absolute position table / RoPE;
- ``offset``: the first generated token's position id (default: after the noisy
  tokens, GenSE's layout; ``1``: aligned with the noisy token of the frame);
- a third field ``hint`` (``gpt2:default:hint``): the LM built with ``hint=True``
  (each target's input also holds the noisy token of its frame, not in GenSE).

Example (one CPU thread; the table in ``recipes/LibriSpeech-noisy/gense/RESULTS.md``)::

    OMP_NUM_THREADS=1 python benchmarks/gense_copy_probe.py --steps 300 \\
        --configs gpt2:default gpt2:1 llama:default llama:1 --out results/copy_probe.json
"""

import argparse
import json
import os
import time

import torch

from speechbrain_gense.models.gense import GenSEVocab, TokenLM, s2s_layout


def make_batch(vocab, batch, sem_frames, ac_frames, flip, generator):
    """Random prompts and copy targets; returns (noisy_sem, clean_sem, noisy_ac, clean_ac)."""
    K = vocab.num_codebooks
    noisy_sem = torch.randint(vocab.num_semantic, (batch, sem_frames), generator=generator)
    clean_sem = torch.randint(vocab.num_semantic, (batch, sem_frames), generator=generator)
    noisy_ac = torch.randint(vocab.num_acoustic, (batch, ac_frames, K), generator=generator)
    random_ac = torch.randint(vocab.num_acoustic, (batch, ac_frames, K), generator=generator)
    keep = torch.rand(batch, ac_frames, K, generator=generator) >= flip
    return noisy_sem, clean_sem, noisy_ac, torch.where(keep, noisy_ac, random_ac)


def run(arch, offset, args, hint=False):
    """Trains one S2S on the copy task; returns its accuracy curve."""
    torch.manual_seed(args.seed)
    vocab = GenSEVocab(args.vocab, args.vocab, args.codebooks)
    ac_tokens = args.ac_frames * args.codebooks
    target_offset = ac_tokens if offset == "default" else int(offset)
    lm = TokenLM(vocab.size, hidden_size=args.hidden_size, num_layers=args.num_layers,
                 num_heads=args.num_heads, max_positions=target_offset + ac_tokens + 1,
                 arch=arch, hint=hint)
    opt = torch.optim.AdamW(lm.parameters(), lr=args.lr)
    frames = torch.full((args.batch_size,), args.sem_frames)
    ac_frames = torch.full((args.batch_size,), args.ac_frames)

    def loss_of(batch):
        noisy_sem, clean_sem, noisy_ac, clean_ac = batch
        layout = s2s_layout(vocab, noisy_sem, clean_sem, frames, noisy_ac, ac_frames,
                            target_offset)
        return lm.loss(layout, vocab.ac(clean_ac))

    held_out = torch.Generator().manual_seed(10_000 + args.seed)
    valid = [make_batch(vocab, args.batch_size, args.sem_frames, args.ac_frames, args.flip,
                        held_out) for _ in range(args.valid_batches)]
    gen = torch.Generator().manual_seed(args.seed)
    curve, start = [], time.time()
    for step in range(1, args.steps + 1):
        lm.train()
        res = loss_of(make_batch(vocab, args.batch_size, args.sem_frames, args.ac_frames,
                                 args.flip, gen))
        opt.zero_grad()
        res["loss"].backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            lm.eval()
            with torch.no_grad():
                acc = sum(float(loss_of(b)["acc"]) for b in valid) / len(valid)
            curve.append({"step": step, "valid_acc": acc, "train_loss": float(res["loss"].detach()),
                          "seconds": time.time() - start})
            print(f"{arch}:{offset}{':hint' if hint else ''} step {step}: held-out acc {100 * acc:.1f} %", flush=True)
    return curve


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["gpt2:default", "gpt2:1"],
                   help="ARCH:OFFSET[:hint] (ARCH gpt2 or llama; OFFSET 'default' or an int)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--valid-batches", type=int, default=4)
    p.add_argument("--sem-frames", type=int, default=100, help="2 s at 50 Hz")
    p.add_argument("--ac-frames", type=int, default=100, help="2 s at 50 Hz")
    p.add_argument("--codebooks", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--flip", type=float, default=0.2, help="fraction of targets not copied")
    p.add_argument("--hidden-size", type=int, default=224)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON file for the curves")
    args = p.parse_args(argv)
    results = {}
    for cfg in args.configs:
        arch, _, rest = cfg.partition(":")
        offset, _, extra = rest.partition(":")
        if extra not in ("", "hint"):
            p.error(f"config {cfg!r}: the third field can only be 'hint'")
        results[cfg] = run(arch, offset or "default", args, hint=extra == "hint")
    print("\n| config | " + " | ".join(f"step {c['step']}" for c in next(iter(results.values())))
          + " |")
    print("|---|" + "---:|" * len(next(iter(results.values()))))
    for cfg, curve in results.items():
        print(f"| {cfg} | " + " | ".join(f"{100 * c['valid_acc']:.1f}" for c in curve) + " |")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "curves": results}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
