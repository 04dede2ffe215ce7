"""Speed of MAGE on this machine: real-time factor of the whole chain, and GFLOP/s.

The chain is what :meth:`~speechbrain_gense.models.mage.MAGE.enhance` runs on
one utterance: codec encoding of the noisy signal, speaker embedding (when
the model has a speaker encoder), iterative decoding (``steps`` enhancer
passes, plus the corrector's pass and its re-generation steps) and codec
decoding. Each part is timed with ``time.perf_counter`` on ``--seconds`` of
audio for each number of steps; a timing is the median of ``--runs`` runs,
after one untimed warm-up of the whole chain, with ``--threads`` torch threads,
for each ``--precision`` of the enhancer (``fp32``, or ``bf16`` autocast).
RTF = compute seconds / audio seconds.

Next to it: the FLOPs of one enhancer forward on that input, counted with
:class:`torch.utils.flop_counter.FlopCounterMode` (the CPU fused attention
kernel, which it does not know, is counted with its ``sdpa`` formula), the
GFLOP/s the enhancer achieves (one forward alone, and over the decoding
loop, where sampling and the corrector also take time), and the machine's
float32 GEMM rate: a large ``torch.matmul`` with the same threads.

The speed does not depend on training: without ``--model`` (and when
``pretrained/mage`` is absent) the model is the recipe's default size,
freshly initialised: ``recipes/LibriSpeech-noisy/mage/hparams/mage.yaml``
(hidden 256, 6 layers, 4 heads, vocab 8192, band-aware encoder, Resemblyzer
speaker embedding, BLSTM corrector) with a stage-2 SimCodec of the default
configuration (``DEFAULT_CONFIG``, 64 x 128 = 8192 codes) as its tokenizer,
and a uniform token-frequency table so that decoding takes the ``ctf`` path
of a trained model.

Not part of the test run. Usage::

    python benchmarks/mage_speed.py                      # steps 1,4,8,16, 5 runs, 2 threads
    python benchmarks/mage_speed.py --quick              # 1 run each
    python benchmarks/mage_speed.py --precision fp32,bf16 --steps 8
    python benchmarks/mage_speed.py --model results/mage/1234/model --threads 1 \\
        --out results/mage_speed.json
"""

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine_info  # noqa: E402 (after the path set-up)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from speechbrain_gense.commands import sync  # noqa: E402 (run from a checkout too)
from speechbrain_gense.utils import first_line  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_HPARAMS = os.path.join(REPO, "recipes", "LibriSpeech-noisy", "mage", "hparams",
                              "mage.yaml")
DEFAULT_MODEL = os.path.join(REPO, "pretrained", "mage")
#: Stage-2 SimCodec codebook of the codec recipe: top_n x top_k codes.
SIMCODEC_TOP_N, SIMCODEC_TOP_K = 64, 128


def build_recipe_mage(hparams=RECIPE_HPARAMS):
    """The MAGE of the recipe, freshly initialised, with a fresh default SimCodec.

    The codec (:data:`~speechbrain_gense.models.simcodec.DEFAULT_CONFIG`,
    reorganised to one ``64 x 128`` codebook) is written to a temporary
    folder that the recipe's ``tokenizer_spec`` points to; everything else
    comes from ``hparams`` as written (``output_folder`` is moved to the
    temporary folder too, so nothing is written in the repository).

    Returns
    -------
    MAGE
        In eval mode, with a uniform token-frequency table.
    """
    from hyperpyyaml import load_hyperpyyaml

    from speechbrain_gense.masking import TokenFrequency
    from speechbrain_gense.models.simcodec import DEFAULT_CONFIG, SimCodec, to_stage2
    from speechbrain_gense.tokenizers.simcodec import SimCodecTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        codec = to_stage2(SimCodec(**DEFAULT_CONFIG), SIMCODEC_TOP_N, SIMCODEC_TOP_K)
        SimCodecTokenizer(codec).save(os.path.join(tmp, "simcodec"))
        with open(hparams, encoding="utf-8") as f:
            hp = load_hyperpyyaml(f, overrides={
                "tokenizer_spec": f"simcodec:{os.path.join(tmp, 'simcodec')}",
                "output_folder": os.path.join(tmp, "out")})
        mage = hp["model"]
    mage.token_frequency = TokenFrequency(torch.ones(mage.tokenizer.vocab_size))
    return mage.eval()


def speech_signal(seconds, sample_rate, seed=0):
    """A speech-like test signal: harmonics with a syllabic envelope, in noise.

    Example
    -------
    >>> speech_signal(0.5, 16000).shape
    torch.Size([1, 8000])
    """
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140.0 + 20.0 * torch.sin(2 * torch.pi * 0.5 * t)
    phase = 2 * torch.pi * torch.cumsum(f0, 0) / sample_rate
    voiced = sum(torch.sin(h * phase) / h for h in range(1, 8))
    envelope = 0.5 * (1 - torch.cos(2 * torch.pi * 3 * t))
    noise = torch.randn(t.shape[0], generator=gen)
    return (0.1 * voiced * envelope + 0.02 * noise).unsqueeze(0)


def _median_time(fn, runs, device):
    times = []
    for _ in range(runs):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(size=2048, runs=5, device="cpu", dtype=torch.float32):
    """``size x size`` matmul rate (GFLOP/s) in ``dtype``, median of ``runs`` after a warm-up.

    Example
    -------
    >>> gemm_gflops(64, runs=1) > 0
    True
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    torch.matmul(a, b)
    seconds = _median_time(lambda: torch.matmul(a, b), runs, device)
    return 2 * size**3 / seconds / 1e9


def enhancer_flops(mage, cond):
    """FLOPs of one enhancer forward (all frames masked) given ``cond``.

    Counted by ``FlopCounterMode``; the CPU fused attention kernel
    (``aten._scaled_dot_product_flash_attention_for_cpu``), which it does not
    know, is counted with its formula for the other ``sdpa`` kernels.
    """
    from torch.utils import flop_counter

    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    custom = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        custom[op] = cpu_sdpa
    tokens = _masked(mage, cond)
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=custom)
    with counter, torch.no_grad():
        mage.predict(tokens, cond)
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), by_op


def _masked(mage, cond):
    frames, k = cond["num_frames"], mage.enhancer.config["num_codebooks"]
    return torch.full((1, frames, k), mage.enhancer.mask_id, dtype=torch.long,
                      device=mage.device)


def _autocast(mage, precision):
    from contextlib import nullcontext

    dtype = mage.PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(mage.device.type, dtype=dtype)


def time_chain(mage, wav, steps, runs, use_corrector=True, seed=0, precision="fp32"):
    """Median seconds of each part of the chain on ``wav[1, S]`` for ``steps`` steps.

    Returns
    -------
    dict
        ``encode``, ``speaker``, ``decoding``, ``codec_decode``, ``total``
        (the median of the per-run totals) and ``model_calls``.
    """
    device = mage.device
    parts = {"encode": [], "speaker": [], "decoding": [], "codec_decode": [], "total": []}
    calls = None
    lens = torch.ones(1, device=device)
    for run in range(runs):
        generator = torch.Generator().manual_seed(seed + run)
        sync(device)
        t0 = time.perf_counter()
        tokens, tok_lens = mage.tokenize(wav, lens)
        sync(device)
        t1 = time.perf_counter()
        cond = mage.condition(wav, tok_lens, noisy_tokens=tokens)  # + speaker embedding
        sync(device)
        t2 = time.perf_counter()
        out = mage.generate(cond, generator=generator, steps=steps, corrector=use_corrector,
                            precision=precision)
        sync(device)
        t3 = time.perf_counter()
        mage.tokenizer.decode(out["tokens"], cond["lens"])
        sync(device)
        t4 = time.perf_counter()
        calls = out["steps"]
        for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)):
            parts[key].append(seconds)
    return {**{k: statistics.median(v) for k, v in parts.items()}, "model_calls": calls}


def _load(load):
    return "n/a" if load is None else "/".join(f"{x:.2f}" for x in load)


def format_table(result):
    """The markdown table of a :func:`run` result, and notes."""
    audio, f, gemm = result["audio_s"], result["forward"], result["gemm"]
    machine = result["machine"]
    lines = [("| precision | steps | NFE | encode (s) | conditioning: speaker + content (s) "
              "| decoding (s) | codec decode (s) | total (s) | RTF | enhancer GFLOP/s in decoding |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(
            f"| {row['precision']} | {row['steps']} | {row['model_calls']} | {row['encode']:.3f} | "
            f"{row['speaker']:.3f} | {row['decoding']:.3f} | {row['codec_decode']:.3f} | "
            f"{row['total']:.3f} | {row['total'] / audio:.3f} | "
            f"{row['decoding_gflops']:.1f} |")
    lines += [
        "",
        (f"- audio: {audio:g} s ({result['frames']} token frames); torch threads "
         f"{result['threads']}; device {result['device']}; {result['runs']} run(s), median"),
        (f"- model: {result['model']} (enhancer {result['enhancer_params'] / 1e6:.2f} M "
         f"parameters, corrector {result['corrector']})"),
    ]
    for precision, fw in f.items():
        peak = gemm[precision]["gflops"]
        lines.append(
            f"- one enhancer forward, {precision}: {fw['gflop']:.2f} GFLOP in "
            f"{fw['seconds'] * 1e3:.0f} ms = {fw['gflops']:.1f} GFLOP/s, "
            f"{100 * fw['gflops'] / peak:.0f}% of the {precision} GEMM rate "
            f"({gemm[precision]['size']}^3 matmul: {peak:.1f} GFLOP/s)")
    lines += [
        (f"- machine: {machine['cpu']}, {machine['cpu_count']} CPUs; load average "
         f"(1/5/15 min) {_load(machine['load_average'])} at start, "
         f"{_load(result['load_average_end'])} at end"),
    ]
    return "\n".join(lines)


GEMM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def run(mage, model_name, steps=(1, 4, 8, 16), seconds=10.0, runs=5, use_corrector=True,
        gemm_size=2048, gemm_runs=5, progress=True, precisions=("fp32",)):
    """Times the chain for each number of steps; FLOPs and the GEMM rate.

    Returns
    -------
    dict
        Everything :func:`format_table` prints (and ``flops_by_op``).
    """
    from tqdm import tqdm

    machine = machine_info()
    device = mage.device
    wav = speech_signal(seconds, mage.tokenizer.sample_rate).to(device)
    use_corrector = use_corrector and mage.corrector is not None
    # Warm-up of the whole chain (allocator, kernels, lazily built state).
    time_chain(mage, wav, steps[0], 1, use_corrector)
    tokens, tok_lens = mage.tokenize(wav)
    cond = mage.condition(wav, tok_lens, noisy_tokens=tokens)
    flops, by_op = enhancer_flops(mage, cond)
    masked = _masked(mage, cond)
    forward, gemm, rows = {}, {}, []
    for precision in precisions:
        with torch.no_grad(), _autocast(mage, precision):
            mage.predict(masked, cond)  # warm-up (autocast weight casts)
            forward_s = _median_time(lambda: mage.predict(masked, cond), runs, device)
        forward[precision] = {"gflop": flops / 1e9, "seconds": forward_s,
                              "gflops": flops / forward_s / 1e9}
        gemm[precision] = {"size": gemm_size, "gflops": gemm_gflops(
            gemm_size, gemm_runs, device, GEMM_DTYPES[precision])}
        time_chain(mage, wav, steps[0], 1, use_corrector, precision=precision)
        for s in tqdm(steps, desc=f"steps ({precision})", disable=not progress):
            timing = time_chain(mage, wav, s, runs, use_corrector, precision=precision)
            timing.update(steps=s, precision=precision)
            timing["decoding_gflops"] = timing["model_calls"] * flops / timing["decoding"] / 1e9
            rows.append(timing)
    return {
        "model": model_name, "device": str(device), "threads": torch.get_num_threads(),
        "audio_s": seconds, "frames": cond["num_frames"], "runs": runs,
        "use_corrector": use_corrector,
        "corrector": (f"{mage.corrector.config['kind']}, used" if use_corrector else "not used")
        if mage.corrector is not None else "none",
        "speaker_encoder": type(mage.speaker_encoder).__name__
        if mage.speaker_encoder is not None else None,
        "enhancer_params": sum(p.numel() for p in mage.enhancer.parameters()),
        "enhancer_config": mage.enhancer.config,
        "decode_opts": mage.decode_opts,
        "forward": forward,
        "flops_by_op": by_op,
        "gemm": gemm,
        "rows": rows,
        "machine": machine,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# -- optimisation variants, per stage and per pass, against the baselines ----------

#: Named variants of the enhancer path.
#: Variant name -> (attention kernel, heads on masked positions only, precision, sampler).
VARIANTS = {
    "unoptimised": ("eager", False, "fp32", "gumbel"),
    "sdpa": ("sdpa", False, "fp32", "gumbel"),
    "sdpa+masked-head": ("sdpa", True, "fp32", "gumbel"),
    "sdpa+masked-head+int8": ("sdpa", True, "int8", "gumbel"),
    "sdpa+masked-head+bf16": ("sdpa", True, "bf16", "gumbel"),
    "sdpa+masked-head+cdf": ("sdpa", True, "fp32", "cdf"),
    "sdpa+masked-head+int8+cdf": ("sdpa", True, "int8", "cdf"),
    "sdpa+masked-head+bf16+cdf": ("sdpa", True, "bf16", "cdf"),
}
DEFAULT_VARIANTS = ("unoptimised", "sdpa", "sdpa+masked-head", "sdpa+masked-head+int8",
                    "sdpa+masked-head+cdf", "sdpa+masked-head+int8+cdf")
_BUDGET = re.compile(r"^(steps|csteps)(\d+)$")
_ENCODER = re.compile(r"^(content|speaker)-(fp32|bf16|auto)$")
_BACKEND = re.compile(r"^content-(torch|onnx)$")


def parse_variant(name):
    """Settings of a variant name: a named variant, optionally with decoding budgets.

    ``+stepsN`` sets the decoding steps (default: the run's ``--steps``),
    ``+cstepsN`` the corrector's re-generation steps (``csteps0``: no
    corrector; default: the model's ``corrector_steps``), ``+content-PREC``
    and ``+speaker-PREC`` (``fp32``, ``bf16``, ``auto``) the precision of the
    Whisper content features and of the speaker encoder, ``+content-onnx`` /
    ``+content-torch`` the backend of the content features (default: the
    model's own, ``mage.json``).

    Example
    -------
    >>> parse_variant("sdpa+masked-head+int8+cdf+steps5+csteps1")
    {'attention': 'sdpa', 'masked_head': True, 'precision': 'int8', 'sampler': 'cdf', 'steps': 5, 'corrector_steps': 1, 'content_precision': None, 'speaker_precision': None, 'content_backend': None}
    >>> parse_variant("sdpa")["steps"] is None
    True
    >>> v = parse_variant("sdpa+masked-head+int8+steps4+content-bf16+speaker-bf16")
    >>> v["content_precision"], v["speaker_precision"]
    ('bf16', 'bf16')
    >>> parse_variant("sdpa+steps0")
    Traceback (most recent call last):
    ...
    ValueError: variant 'sdpa+steps0': steps must be >= 1
    """
    parts = name.split("+")
    budgets = {"steps": None, "csteps": None}
    encoders = {"content": None, "speaker": None}
    backend = None
    while parts and (_BUDGET.match(parts[-1]) or _ENCODER.match(parts[-1])
                     or _BACKEND.match(parts[-1])):
        part = parts.pop()
        if _BACKEND.match(part):
            backend = _BACKEND.match(part).group(1)
            continue
        if _ENCODER.match(part):
            which, precision = _ENCODER.match(part).groups()
            encoders[which] = precision
            continue
        key, value = _BUDGET.match(part).groups()
        budgets[key] = int(value)
    base = "+".join(parts)
    if base not in VARIANTS:
        raise ValueError(f"variant {name!r}: expected one of {', '.join(VARIANTS)}, "
                         "optionally followed by +stepsN, +cstepsN, +content-PREC and/or "
                         "+speaker-PREC")
    if budgets["steps"] is not None and budgets["steps"] < 1:
        raise ValueError(f"variant {name!r}: steps must be >= 1")
    attention, masked_head, precision, sampler = VARIANTS[base]
    return {"attention": attention, "masked_head": masked_head, "precision": precision,
            "sampler": sampler, "steps": budgets["steps"], "corrector_steps": budgets["csteps"],
            "content_precision": encoders["content"],
            "speaker_precision": encoders["speaker"], "content_backend": backend}


def variant_decoding(variant, steps, use_corrector):
    """``(steps, corrector, decoding options)`` of a :func:`parse_variant` result.

    Example
    -------
    >>> variant_decoding(parse_variant("sdpa+masked-head+int8+steps4+csteps0"), 8, True)[:2]
    (4, False)
    >>> variant_decoding(parse_variant("sdpa+masked-head+csteps1"), 8, True)[2]["corrector_steps"]
    1
    """
    corrector = use_corrector and variant["corrector_steps"] != 0
    opts = dict(masked_head=variant["masked_head"], precision=variant["precision"],
                sampler=variant["sampler"])
    if corrector and variant["corrector_steps"] is not None:
        opts["corrector_steps"] = variant["corrector_steps"]
    return variant["steps"] or steps, corrector, opts


@contextlib.contextmanager
def encoder_setting(mage, name, attribute, value):
    """Runs the block with ``mage.<name>.<attribute> = value`` (None: unchanged)."""
    encoder = getattr(mage, name, None)
    if value is None:
        yield
        return
    if encoder is None or not hasattr(encoder, attribute):
        raise ValueError(f"{name} {attribute} {value!r}: the model has no such encoder "
                         f"with a {attribute}")
    before = getattr(encoder, attribute)
    setattr(encoder, attribute, value)
    try:
        yield
    finally:
        setattr(encoder, attribute, before)


def set_attention(mage, implementation):
    """Switches the enhancer's attention kernel (``"sdpa"`` or ``"eager"``) in place."""
    mage.enhancer.qwen_config._attn_implementation = implementation
    mage.enhancer.config["attn_implementation"] = implementation


def _backbone_and_head_flops(mage, cond):
    """``(backbone FLOPs, head FLOPs per masked position)`` of one enhancer forward."""
    from torch.utils import flop_counter

    custom = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        def count(q, k, v, *a, out_shape=None, **kw):
            # grouped-query attention: every query head attends to its group's key / value
            b, h = q[0], q[1]
            return flop_counter.sdpa_flop_count(q, (b, h, *k[2:]), (b, h, *v[2:]))

        custom[op] = count
    tokens = _masked(mage, cond)
    none = torch.zeros(tokens.shape, dtype=torch.bool)
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=custom)
    with counter, torch.no_grad():
        mage.predict(tokens, cond, logits_mask=none)
    cfg = mage.enhancer.config
    return counter.get_total_flops(), 2 * cfg["hidden_size"] * cfg["vocab_size"]


def time_stages(mage, wav, steps, runs, use_corrector=True, seed=0, **opts):
    """Median wall time of each stage of the chain, and of each enhancer call.

    The enhancer calls (``predict``) and the corrector are timed inside
    :meth:`MAGE.generate` by wrapping them; ``sampling`` is the rest of the
    decoding loop (sampling, ranking, bookkeeping).

    Returns
    -------
    dict
        ``encode``, ``speaker``, ``passes`` (list of median seconds per
        enhancer call, in call order), ``masked`` (masked positions fed to
        each call), ``corrector``, ``sampling``, ``decoding``, ``codec_decode``,
        ``total``, ``model_calls``.
    """
    device = mage.device
    keys = ("encode", "speaker", "corrector", "sampling", "decoding", "codec_decode", "total")
    parts = {k: [] for k in keys}
    per_call, masked = [], []
    lens = torch.ones(1, device=device)
    predict, confidence = mage.predict, mage.corrector.confidence if mage.corrector else None
    for run in range(runs):
        calls, corr = [], []
        n_masked = []

        def timed_predict(tokens, cond, *args, **kwargs):
            start = time.perf_counter()
            out = predict(tokens, cond, *args, **kwargs)
            calls.append(time.perf_counter() - start)
            n_masked.append(int((tokens == mage.enhancer.mask_id).sum()))
            return out

        def timed_confidence(*args, **kwargs):
            start = time.perf_counter()
            out = confidence(*args, **kwargs)
            corr.append(time.perf_counter() - start)
            return out

        mage.predict = timed_predict
        if confidence is not None:
            mage.corrector.confidence = timed_confidence
        try:
            generator = torch.Generator().manual_seed(seed + run)
            t0 = time.perf_counter()
            tokens, tok_lens = mage.tokenize(wav, lens)
            t1 = time.perf_counter()
            cond = mage.condition(wav, tok_lens, noisy_tokens=tokens)
            t2 = time.perf_counter()
            out = mage.generate(cond, generator=generator, steps=steps,
                                corrector=use_corrector, **opts)
            t3 = time.perf_counter()
            mage.tokenizer.decode(out["tokens"], cond["lens"])
            t4 = time.perf_counter()
        finally:
            del mage.predict
            if confidence is not None:
                del mage.corrector.confidence
        for k, v in zip(keys, (t1 - t0, t2 - t1, sum(corr), t3 - t2 - sum(calls) - sum(corr),
                               t3 - t2, t4 - t3, t4 - t0)):
            parts[k].append(float(v))
        per_call.append(calls)
        masked = n_masked
    result = {k: statistics.median(v) for k, v in parts.items()}
    result["passes"] = [statistics.median(c) for c in zip(*per_call)]
    result["masked"] = masked
    result["model_calls"] = len(masked)
    return result


def median_stages(results):
    """Per-stage medians of several :func:`time_stages` results (one run each).

    Example
    -------
    >>> one = {"encode": 1.0, "total": 3.0, "passes": [1.0, 2.0], "masked": [8, 4],
    ...        "model_calls": 2}
    >>> m = median_stages([one, {**one, "encode": 2.0, "passes": [3.0, 2.0]}, one])
    >>> m["encode"], m["passes"], m["totals"]
    (1.0, [1.0, 2.0], [3.0, 3.0, 3.0])
    """
    out = {k: statistics.median(r[k] for r in results) for k, v in results[0].items()
           if isinstance(v, float)}
    out["passes"] = [statistics.median(c) for c in zip(*(r["passes"] for r in results))]
    out["masked"], out["model_calls"] = results[-1]["masked"], results[-1]["model_calls"]
    out["totals"] = [r["total"] for r in results]
    return out


def profile_decoding(mage, variant, steps=8, seconds=10.0, use_corrector=True, rows=12):
    """``torch.profiler`` of one :meth:`MAGE.generate` of ``variant`` on the test signal.

    Returns
    -------
    dict
        ``total_s`` (self CPU seconds of all operators) and ``ops``: the
        ``rows`` operators of largest self CPU time, each ``name``,
        ``self_s``, ``share`` (of ``total_s``) and ``calls``.
    """
    from torch.profiler import ProfilerActivity, profile

    v = parse_variant(variant)
    set_attention(mage, v["attention"])
    steps, corrector, opts = variant_decoding(v, steps, use_corrector and mage.corrector is not None)
    opts.update(corrector=corrector, steps=steps)
    wav = speech_signal(seconds, mage.tokenizer.sample_rate).to(mage.device)
    tokens, tok_lens = mage.tokenize(wav)
    cond = mage.condition(wav, tok_lens, noisy_tokens=tokens)
    mage.generate(cond, generator=torch.Generator().manual_seed(0), **opts)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        mage.generate(cond, generator=torch.Generator().manual_seed(0), **opts)
    set_attention(mage, "sdpa")
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    ops = [{"name": e.key, "self_s": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / 1e6 / total, "calls": e.count}
           for e in events[:rows]]
    return {"variant": variant, "total_s": total, "ops": ops}


def format_profile(result):
    """Markdown table of a :func:`profile_decoding` result.

    Example
    -------
    >>> print(format_profile({"variant": "v", "total_s": 2.0,
    ...                       "ops": [{"name": "aten::mm", "self_s": 1.0, "share": 0.5, "calls": 3}]}))
    profile of one decode, v: 2.000 s self CPU time
    <BLANKLINE>
    | operator | self CPU (s) | share | calls |
    |---|---:|---:|---:|
    | aten::mm | 1.000 | 50% | 3 |
    """
    lines = [f"profile of one decode, {result['variant']}: {result['total_s']:.3f} s self CPU time",
             "", "| operator | self CPU (s) | share | calls |", "|---|---:|---:|---:|"]
    lines += [f"| {o['name']} | {o['self_s']:.3f} | {100 * o['share']:.0f}% | {o['calls']} |"
              for o in result["ops"]]
    return "\n".join(lines)


def baseline_rtf(wav, sample_rate, runs):
    """Median RTF of RNNoise and DFN3 (``speechbrain_gense.baselines``) on ``wav[1, S]``.

    A baseline that cannot run here is reported with its reason.
    """
    from speechbrain_gense import baselines

    seconds = wav.shape[-1] / sample_rate
    out = {}
    for name, fn in (("rnnoise", baselines.rnnoise), ("dfn3", baselines.dfn3)):
        x = wav[0].cpu()
        try:
            fn(x, sample_rate)  # warm-up (library load, model load)
            out[name] = {"rtf": _median_time(lambda f=fn: f(x, sample_rate), runs, "cpu")
                         / seconds}
        except Exception as e:  # noqa: BLE001 -- report on one line
            out[name] = {"rtf": None, "error": first_line(e)}
    return out


def run_variants(mage, model_name, variants=DEFAULT_VARIANTS, steps=8, seconds=10.0, runs=5,
                 threads=(2, 1), use_corrector=True, gemm_size=2048, gemm_runs=5):
    """One run: each variant at each thread count, the GEMM peak and the baselines' RTF.

    Returns
    -------
    dict
        ``rows`` (one per variant and thread count: stages, passes, RTF,
        GFLOP/s), ``gemm`` (GFLOP/s per thread count), ``baselines``,
        ``machine``, ``uptime_start`` / ``uptime_end``.
    """
    import subprocess

    def uptime():
        try:
            return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        except OSError:
            return "n/a"

    start_uptime, machine = uptime(), machine_info()
    sr = mage.tokenizer.sample_rate
    wav = speech_signal(seconds, sr).to(mage.device)
    use_corrector = use_corrector and mage.corrector is not None
    tokens, tok_lens = mage.tokenize(wav)
    cond = mage.condition(wav, tok_lens, noisy_tokens=tokens)
    backbone, head = _backbone_and_head_flops(mage, cond)
    frames, K = cond["num_frames"], mage.enhancer.config["num_codebooks"]
    rows, gemm = [], {}
    for n in threads:
        torch.set_num_threads(n)
        gemm[n] = gemm_gflops(gemm_size, gemm_runs)
        def timed(name, run):
            v = parse_variant(name)
            set_attention(mage, v["attention"])
            n_steps, corrector, opts = variant_decoding(v, steps, use_corrector)
            with encoder_setting(mage, "content_encoder", "precision", v["content_precision"]), \
                    encoder_setting(mage, "speaker_encoder", "precision",
                                    v["speaker_precision"]), \
                    encoder_setting(mage, "content_encoder", "backend", v["content_backend"]):
                return time_stages(mage, wav, n_steps, 1, corrector, seed=run, **opts)

        for name in variants:
            timed(name, 0)  # warm-up
        # the variants take turns within each run: a load that drifts during the
        # benchmark reaches every variant alike, and the ratios stay comparable
        per_run = {name: [] for name in variants}
        for run in range(runs):
            for name in variants:
                per_run[name].append(timed(name, run))
        for name in variants:
            t = median_stages(per_run[name])
            masked_head = parse_variant(name)["masked_head"]
            flops = [backbone + head * (m if masked_head else frames * K) for m in t["masked"]]
            t.update(variant=name, threads=n, rtf=t["total"] / seconds,
                     pass_gflops=[f / s / 1e9 for f, s in zip(flops, t["passes"])],
                     decoding_gflop=sum(flops) / 1e9)
            rows.append(t)
    set_attention(mage, "sdpa")
    torch.set_num_threads(threads[0])
    base = baseline_rtf(wav, sr, runs)
    return {"model": model_name, "audio_s": seconds, "frames": frames, "steps": steps,
            "runs": runs, "use_corrector": use_corrector, "gemm_size": gemm_size,
            "gemm": gemm, "backbone_gflop": backbone / 1e9,
            "head_gflop_per_position": head / 1e9, "rows": rows, "baselines": base,
            "machine": machine, "uptime_start": start_uptime, "uptime_end": uptime()}


def format_variants(result):
    """Markdown tables of a :func:`run_variants` result."""
    audio = result["audio_s"]
    base = result["baselines"]
    ref = {(r["threads"]): r["total"] for r in result["rows"] if r["variant"] == "unoptimised"}
    lines = ["| variant | threads | encode (s) | conditioning: speaker + content (s) "
             "| enhancer passes (s) | corrector (s) | sampling (s) | codec decode (s) | total (s) "
             "| RTF | speed-up | enhancer GFLOP/s (% of GEMM peak) | RTF / RNNoise | RTF / DFN3 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        peak = result["gemm"][r["threads"]]
        passes = sum(r["passes"])
        gf = r["decoding_gflop"] / passes if passes else 0.0
        ratios = []
        for b in ("rnnoise", "dfn3"):
            rtf = base[b]["rtf"]
            ratios.append(f"{r['rtf'] / rtf:.1f}" if rtf else "n/a")
        speed = f"{ref[r['threads']] / r['total']:.2f}x" if r["threads"] in ref else "–"
        lines.append(
            f"| {r['variant']} | {r['threads']} | {r['encode']:.3f} | {r['speaker']:.3f} | "
            f"{passes:.3f} | {r['corrector']:.3f} | {r['sampling']:.3f} | "
            f"{r['codec_decode']:.3f} | {r['total']:.3f} | {r['rtf']:.3f} | {speed} | "
            f"{gf:.1f} ({100 * gf / peak:.0f}%) | {ratios[0]} | {ratios[1]} |")
    lines += ["", "Each enhancer pass (seconds / GFLOP/s), first row per thread count and "
              "variant; the last calls are the corrector's scoring pass and its re-generation:", ""]
    for r in result["rows"]:
        cells = ", ".join(f"{s:.3f}/{g:.0f}" for s, g in zip(r["passes"], r["pass_gflops"]))
        lines.append(f"- {r['variant']}, {r['threads']} thread(s): {cells}")
    gemm = ", ".join(f"{n} thread(s) {g:.1f} GFLOP/s" for n, g in result["gemm"].items())
    brtf = ", ".join(f"{b} RTF {v['rtf']:.4f}" if v["rtf"] else f"{b}: {v.get('error')}"
                     for b, v in base.items())
    lines += [
        "",
        (f"- audio: {audio:g} s ({result['frames']} token frames), {result['steps']} steps"
         f"{' + corrector' if result['use_corrector'] else ''} (a variant's +stepsN / "
         f"+cstepsN replace them); median of {result['runs']} runs "
         f"after a warm-up, the variants taking turns within each run; model: "
         f"{result['model']}"),
        (f"- one enhancer forward: {result['backbone_gflop']:.2f} GFLOP without the heads + "
         f"{1e3 * result['head_gflop_per_position']:.2f} MFLOP per position with a head "
         "(int8 rows: the same count, float-equivalent GFLOP/s)"),
        f"- float32 GEMM peak ({result['gemm_size']}^3 matmul, this run): {gemm}",
        f"- baselines on the same audio, this run (1 thread, their C runtimes): {brtf}",
        f"- machine: {result['machine']['cpu']}, {result['machine']['cpu_count']} CPUs",
        f"- uptime at start: `{result['uptime_start']}`",
        f"- uptime at end: `{result['uptime_end']}`",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Real-time factor of the MAGE chain (codec encode, decoding steps, "
        "corrector, codec decode) on this machine, the enhancer's GFLOP/s and the "
        "machine's float32 GEMM rate. Prints a markdown table and writes JSON.")
    parser.add_argument("--model", help="MAGE model folder (default: pretrained/mage if "
                        "present, else the recipe's default size, freshly initialised)")
    parser.add_argument("--steps", default=None, help="comma-separated decoding steps "
                        "(default: 8 for the variant table, 1,4,8,16 with --sweep)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="audio length in seconds (default 10)")
    parser.add_argument("--runs", type=int, default=5,
                        help="timed runs per setting, median reported (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--precision", default="fp32", help="comma-separated enhancer "
                        "precisions from fp32, bf16, fp16 (default fp32)")
    parser.add_argument("--no-corrector", action="store_true",
                        help="decode without the corrector pass")
    parser.add_argument("--gemm-size", type=int, default=2048,
                        help="matrix size of the GEMM rate (default 2048)")
    parser.add_argument("--device", default="cpu", help="device (default cpu)")
    parser.add_argument("--sweep", action="store_true",
                        help="the older table: RTF per number of steps and precision "
                        "(default: the optimisation variants per stage and per pass, "
                        "at --steps' first value, against RNNoise and DFN3)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated variants from {', '.join(VARIANTS)}, each "
                        "optionally followed by +stepsN (decoding steps) and +cstepsN "
                        "(corrector re-generation steps, 0: no corrector) "
                        f"(default {','.join(DEFAULT_VARIANTS)})")
    parser.add_argument("--thread-counts", default=None,
                        help="comma-separated thread counts of the variant table "
                        "(default: --threads, then 1 if different)")
    parser.add_argument("--quick", action="store_true",
                        help="one run per setting and two GEMM runs")
    parser.add_argument("--profile", default=None, metavar="VARIANT",
                        help="also profile one decode of this variant (torch.profiler: the "
                        "operators of largest self CPU time)")
    parser.add_argument("--out", default=os.path.join("results", "mage_speed.json"),
                        help="JSON output (default results/mage_speed.json)")
    args = parser.parse_args(argv)

    def error(message):
        print(f"mage_speed: error: {message}", file=sys.stderr)
        return 2

    try:
        steps = [int(s) for s in (args.steps or ("1,4,8,16" if args.sweep else "8")).split(",")
                 if s.strip()]
    except ValueError:
        return error(f"--steps: expected integers, got {args.steps!r}")
    if not steps or min(steps) < 1:
        return error(f"--steps: expected integers >= 1, got {args.steps!r}")
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - set(GEMM_DTYPES):
        return error(f"--precision: expected some of {', '.join(GEMM_DTYPES)}, "
                     f"got {args.precision!r}")
    if args.runs < 1 or args.threads < 1 or args.seconds <= 0 or args.gemm_size < 1:
        return error("--runs, --threads, --seconds and --gemm-size must be positive")
    runs, gemm_runs = (1, 2) if args.quick else (args.runs, 5)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants:
        return error("--variants: expected at least one variant")
    try:
        for v in variants + ([args.profile] if args.profile is not None else []):
            parse_variant(v)
    except ValueError as e:
        return error(f"--variants / --profile: {e}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    sys.path.insert(0, REPO)  # run from a checkout without installing
    from speechbrain_gense.models.mage import MAGE

    folder = args.model or (DEFAULT_MODEL if os.path.isdir(DEFAULT_MODEL) else None)
    try:
        if folder:
            mage, name = MAGE.load(folder, device=str(device)), folder
        else:
            mage = build_recipe_mage()
            name = "recipe default size, freshly initialised (mage.yaml + SimCodec DEFAULT_CONFIG)"
        mage = mage.to(device).eval()
    except Exception as e:  # noqa: BLE001 -- report on one line
        return error(first_line(e))
    for v in variants:
        parsed = parse_variant(v)
        for key, attr, what in (
                ("content_precision", "content_encoder", "Whisper content features"),
                ("content_backend", "content_encoder", "Whisper content features"),
                ("speaker_precision", "speaker_encoder", "Resemblyzer speaker encoder")):
            if parsed[key] and not hasattr(getattr(mage, attr, None), "precision"):
                return error(f"--variants: {v!r} sets the precision of the {what}, but "
                             f"{name} has no {what}")
    if args.sweep:
        result = run(mage, name, steps, args.seconds, runs, not args.no_corrector,
                     args.gemm_size, gemm_runs, precisions=precisions)
        table = format_table(result)
    else:
        try:
            counts = [int(n) for n in (args.thread_counts or "").split(",") if n.strip()]
        except ValueError:
            return error(f"--thread-counts: expected integers, got {args.thread_counts!r}")
        counts = counts or ([args.threads] + ([1] if args.threads != 1 else []))
        if min(counts) < 1:
            return error("--thread-counts must be positive")
        result = run_variants(mage, name, variants, steps[0], args.seconds, runs, counts,
                              not args.no_corrector, args.gemm_size, gemm_runs)
        table = f"`{' '.join(['python benchmarks/mage_speed.py', *(argv or sys.argv[1:])])}`"
        table += "\n\n" + format_variants(result)
        if args.profile:
            result["profile"] = profile_decoding(mage, args.profile, steps[0], args.seconds,
                                                 not args.no_corrector)
            table += "\n\n" + format_profile(result["profile"])
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({**result, "table": table}, f, indent=2)
        print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
