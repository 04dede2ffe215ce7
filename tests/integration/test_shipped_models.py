"""The models shipped under pretrained/ load from the checkout and work end to end."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from speechbrain_gense.asr import load_asr
from speechbrain_gense.cli import main as enhance_main
from speechbrain_gense.inference import EnhanceGenerative
from speechbrain_gense.tokenizers.registry import PROJECT_ROOT

pytestmark = pytest.mark.slow  # the shipped models, end to end

EXAMPLES = os.path.join(PROJECT_ROOT, "pretrained", "examples")
EXAMPLE = "test_espeak_us_f2_00021.wav"


def test_demo_model_from_hparams_matches_the_cli(tmp_path):
    """The acceptance check of the interface: from_hparams on the shipped
    demo model, and enhance_file and gense-enhance give the same audio for
    the same seed."""
    noisy = os.path.join(EXAMPLES, "noisy", EXAMPLE)
    enhancer = EnhanceGenerative.from_hparams(source=os.path.join(PROJECT_ROOT, "pretrained/mage"),
                                              run_opts={"device": "cpu"})
    assert enhancer.sample_rate == 16000
    api = enhancer.enhance_file(noisy, str(tmp_path / "api.wav"), seed=3)
    assert api.shape[-1] == sf.info(noisy).frames and torch.isfinite(api).all()
    assert api.abs().max() > 1e-3  # speech-level output, not silence
    code = enhance_main([noisy, "-o", str(tmp_path / "cli"), "--seed", "3", "--quiet"])
    assert code == 0  # the CLI's default model is pretrained/mage
    from_cli, rate = sf.read(tmp_path / "cli" / EXAMPLE, dtype="float32")
    from_api, _ = sf.read(tmp_path / "api.wav", dtype="float32")
    assert rate == 16000 and np.array_equal(from_cli, from_api)


def test_gense_demo_model_from_hparams_matches_the_cli(tmp_path, monkeypatch):
    """pretrained/gense through the interface and ``gense-enhance --model``, from another folder."""
    monkeypatch.chdir(tmp_path)
    noisy = os.path.join(EXAMPLES, "noisy", EXAMPLE)
    enhancer = EnhanceGenerative.from_hparams(source="pretrained/gense")
    assert enhancer.sample_rate == 16000 and enhancer.model.method == "gense"
    api = enhancer.enhance_file(noisy, str(tmp_path / "api.wav"), seed=5)
    assert api.shape[-1] == sf.info(noisy).frames and torch.isfinite(api).all()
    assert api.abs().max() > 1e-3
    code = enhance_main([noisy, "-o", str(tmp_path / "cli"), "--model", "pretrained/gense",
                         "--seed", "5", "--quiet"])
    assert code == 0
    from_cli, _ = sf.read(tmp_path / "cli" / EXAMPLE, dtype="float32")
    from_api, _ = sf.read(tmp_path / "api.wav", dtype="float32")
    assert np.array_equal(from_cli, from_api)


def test_shipped_model_path_works_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "pretrained/mage" does not exist here
    enhancer = EnhanceGenerative.from_hparams(source="pretrained/mage")
    assert enhancer.sample_rate == 16000


def test_shipped_asr_transcribes_the_clean_examples():
    """WER of pretrained/asr_ctc on the 4 clean examples against examples.json's words.

    Measured 71.8 % (28 of 39 words wrong: a small character CTC model trained
    on CPU); empty or random transcripts give 100 %. The bound leaves room for
    thread-count rounding, not for a broken model.
    """
    import json

    import jiwer

    asr = load_asr("pretrained/asr_ctc")
    with open(os.path.join(EXAMPLES, "examples.json")) as f:
        examples = json.load(f)
    refs, hyps = [], []
    for uid, entry in sorted(examples.items()):
        text = asr.transcribe_file(os.path.join(EXAMPLES, "clean", f"{uid}.wav"))
        assert isinstance(text, str) and text == text.upper()
        refs.append(entry["words"])
        hyps.append(text)
    error = jiwer.wer(refs, hyps)
    assert len(refs) == 4 and error < 0.8, (error, hyps)
    # a sanity floor for the measure itself: transcripts of the wrong files score worse
    assert jiwer.wer(refs, hyps[1:] + hyps[:1]) > error


def _shipped_model_folders():
    root = os.path.join(PROJECT_ROOT, "pretrained")
    return sorted(os.path.join(root, d) for d in os.listdir(root)
                  if os.path.isfile(os.path.join(root, d, "inference.yaml")))


def test_every_shipped_model_records_the_codec_it_was_trained_on():
    """Each shipped enhancer names its tokenizers' fingerprints, and they match.

    ``load_enhancer`` raises ``ValueError`` on a mismatch (a codec retrained
    or re-pointed under a model trained on another one).
    """
    import json

    from speechbrain_gense.models.base import load_enhancer, method_of_folder
    from speechbrain_gense.tokenizers.cache import tokenizer_fingerprint

    folders = _shipped_model_folders()
    assert folders
    for folder in folders:
        model = load_enhancer(folder)
        info_path = os.path.join(folder, type(model).info_name())
        with open(info_path) as f:
            stored = json.load(f).get("codec_fingerprints")
        assert stored, f"{info_path}: no codec_fingerprints ({method_of_folder(folder)})"
        tokenizers = {n: m for n, m in model.named_children() if n in stored}
        assert set(tokenizers) == set(stored)
        for name, tok in tokenizers.items():
            assert tokenizer_fingerprint(tok) == stored[name], (folder, name)


def test_shipped_rvq_codec_decodes_with_any_first_k_and_improves_with_k():
    """pretrained/rvqcodec on the 4 clean examples: ESTOI of the resynthesis rises with k.

    Measured (mean ESTOI): k=1 0.59, k=2 0.69, k=8 0.77; a broken or
    untrained codec gives about 0.1. The bounds leave room for rounding across
    machines, not for a broken model.
    """
    import glob

    from pystoi import stoi

    from speechbrain_gense.tokenizers.registry import load_tokenizer

    files = sorted(glob.glob(os.path.join(EXAMPLES, "clean", "*.wav")))
    assert len(files) == 4
    scores = {}
    for k in (1, 2, 8):
        tok = load_tokenizer(f"rvq:pretrained/rvqcodec?num_codebooks={k}")
        assert (tok.num_codebooks, tok.vocab_size, tok.frame_rate) == (k, 1024, 50.0)
        values = []
        for path in files:
            wav, rate = sf.read(path, dtype="float32")
            tokens, lens = tok.encode(torch.from_numpy(wav)[None])
            assert tokens.shape[-1] == k
            out = tok.decode(tokens, lens)[0, :wav.shape[0]].numpy()
            values.append(stoi(wav, out, rate, extended=True))
        scores[k] = float(np.mean(values))
    assert scores[1] > 0.5 and scores[8] > 0.72
    assert scores[1] < scores[2] < scores[8]
