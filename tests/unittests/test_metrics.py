"""Metrics on signals with known answers (speechbrain_gense.metrics)."""

import math
import shutil
import subprocess

import numpy as np
import pytest
import torch

from speechbrain_gense.metrics import (
    ASR,
    BATCH_METRICS,
    DEFAULT_ASR,
    METRICS,
    MetricWarning,
    PocketsphinxASR,
    SpeechBrainASR,
    WhisperTranscriber,
    corpus_wer,
    dwer,
    dwer_batch,
    make_asr,
    dnsmos,
    dnsmos_batch,
    estoi,
    make_metric_stats,
    mcd,
    mel_cepstrum,
    normalize_text,
    pesq_wb,
    secs,
    sisdr,
    wer,
    wer_batch,
    word_errors,
)
from speechbrain_gense.metrics.common import signals
from speechbrain_gense.metrics.evaluate import read_signal

FOX = "The quick brown fox jumps over the lazy dog."


def flite(tmp_path_factory, voice, text):
    """16 kHz speech from the flite TTS."""
    if shutil.which("flite") is None:
        pytest.skip("flite is not installed")
    path = tmp_path_factory.mktemp("tts") / f"{voice}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(path)], check=True)
    return read_signal(path)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return flite(tmp_path_factory, "slt", FOX)  # about 3 s


@pytest.fixture(scope="module")
def other_voice(tmp_path_factory):
    return flite(tmp_path_factory, "kal16", "Please call Stella and ask her to come.")


@pytest.fixture(scope="module")
def noise(speech):
    return torch.randn(len(speech), generator=torch.Generator().manual_seed(0))


def at_snr(clean, noise, snr):
    """``clean + noise`` at ``snr`` dB, the noise made orthogonal to ``clean``."""
    clean = clean.double() - clean.double().mean()
    noise = noise.double() - noise.double().mean()
    noise = noise - (noise @ clean) / (clean @ clean) * clean
    return clean + noise * clean.norm() / noise.norm() * 10 ** (-snr / 20)


def test_registry():
    assert set(METRICS) == {"dnsmos", "pesq", "estoi", "sisdr", "secs", "wer", "dwer", "mcd"}
    assert METRICS["dwer"].needs == "reference" and "dwer" in BATCH_METRICS
    assert METRICS["dnsmos"].columns == ("sig", "bak", "ovrl", "p808")
    assert METRICS["wer"].needs == "words" and METRICS["dnsmos"].needs is None


def test_signal_checks():
    with pytest.raises(ValueError, match="1-D"):
        sisdr(torch.zeros(2, 100), torch.zeros(2, 100))
    for bad in (torch.zeros(0), torch.zeros(100), torch.full((100,), 1e-6)):
        with pytest.warns(MetricWarning, match="X: estimate is"):
            assert signals("X", bad) is None


def test_sisdr(speech, noise):
    assert sisdr(speech, speech) == 100.0  # the bound (max_db)
    assert sisdr(0.5 * speech, speech) == pytest.approx(100.0, abs=1e-3)  # scale-invariant
    assert sisdr(-speech, speech) == pytest.approx(100.0, abs=1e-3)
    assert sisdr(torch.full_like(speech, 0.1), speech) == -100.0  # no target component
    for snr in (-5.0, 0.0, 10.0, 20.0):
        noisy = at_snr(speech, noise, snr)
        assert sisdr(noisy, speech) == pytest.approx(snr, abs=1e-6)
        assert sisdr(3 * noisy, speech) == pytest.approx(snr, abs=1e-6)
    # A longer estimate is trimmed to the reference.
    assert sisdr(torch.cat([speech, noise]), speech) == 100.0
    with pytest.warns(MetricWarning, match="SI-SDR: estimate is silent"):
        assert math.isnan(sisdr(torch.zeros_like(speech), speech))


def test_pesq(speech, noise):
    assert pesq_wb(speech, speech) == pytest.approx(4.64, abs=0.01)
    assert pesq_wb(0.3 * speech, speech) == pytest.approx(4.64, abs=0.01)
    assert pesq_wb(at_snr(speech, noise, 5), speech) < 2
    with pytest.warns(MetricWarning, match="PESQ: reference is silent"):
        assert math.isnan(pesq_wb(speech, torch.zeros_like(speech)))
    with pytest.warns(MetricWarning, match="PESQ: estimate is too short"):
        assert math.isnan(pesq_wb(speech[:1600], speech[:1600]))



def test_pesq_errors_become_nan(speech, monkeypatch):
    import pesq

    def no_utterances(*args):
        raise pesq.NoUtterancesError(b"No utterances detected")

    monkeypatch.setattr(pesq, "pesq", no_utterances)
    with pytest.warns(MetricWarning, match=r"PESQ: cannot score \(No utterances detected\)"):
        assert math.isnan(pesq_wb(speech, speech))


def test_estoi(speech, noise):
    assert estoi(speech, speech) == pytest.approx(1.0, abs=1e-6)
    noisy = at_snr(speech, noise, 0)
    score = estoi(noisy, speech)
    assert 0.2 < score < 0.9
    assert estoi(0.1 * noisy, speech) == pytest.approx(score, abs=1e-6)
    with pytest.warns(MetricWarning, match="ESTOI: fewer than 30"):
        assert math.isnan(estoi(speech[:4000], speech[:4000]))


def test_mcd(speech, noise, other_voice):
    ceps, energy = mel_cepstrum(speech.numpy(), n_ceps=13)
    assert ceps.shape == (len(energy), 14)
    assert mcd(speech, speech) == 0.0
    assert mcd(0.3 * speech, speech) < 0.05  # c0 (gain) is excluded
    noisy = mcd(at_snr(speech, noise, 10), speech)
    assert 1 < noisy < mcd(at_snr(speech, noise, 0), speech)
    with pytest.warns(MetricWarning, match="MCD: estimate is too short"):
        assert math.isnan(mcd(speech[:200], speech[:200]))
    with pytest.warns(MetricWarning, match="MCD: estimate is silent"):
        assert math.isnan(mcd(torch.zeros_like(speech), speech))


def test_secs(speech, other_voice):
    assert secs(speech, speech) == pytest.approx(1.0, abs=1e-4)
    assert secs(other_voice, speech) < 0.8
    with pytest.warns(MetricWarning, match="SECS: estimate is silent"):
        assert math.isnan(secs(torch.zeros_like(speech), speech))
    with pytest.warns(MetricWarning, match="SECS: reference has 0.00 s of speech"):
        assert math.isnan(secs(speech, speech[8000:8800]))


@pytest.fixture(scope="module")
def speech_dnsmos(speech):
    return dnsmos(speech)


def test_dnsmos(speech, noise, speech_dnsmos):
    assert set(speech_dnsmos) == {"sig", "bak", "ovrl", "p808"}
    assert all(1 <= v <= 5 for v in speech_dnsmos.values())
    white = dnsmos(0.1 * noise)
    assert white["ovrl"] < speech_dnsmos["ovrl"] - 0.8
    assert white["bak"] < speech_dnsmos["bak"] - 1.5
    with pytest.warns(MetricWarning, match="DNSMOS: estimate is silent"):
        assert all(math.isnan(v) for v in dnsmos(torch.zeros(16000)).values())
    with pytest.raises(ValueError, match="key"):
        dnsmos_batch(speech[None], key="mos")


def test_dnsmos_short_and_clipped(speech, speech_dnsmos):
    short = dnsmos(speech[8000:16000])  # 0.5 s, looped to 9.01 s
    assert all(1 <= v <= 5 for v in short.values())
    with pytest.warns(MetricWarning, match="clipped"):
        loud = dnsmos(2 * speech)
    assert math.isfinite(loud["ovrl"])


def test_text_and_counts():
    assert normalize_text("  Don't stop -- it's 'OK', right?") == "DON'T STOP IT'S OK RIGHT"
    # Whisper writes numbers in digits; the references spell them.
    assert normalize_text("The 12 birds left at 3:00, 1,500 came at 7:45.") == (
        "THE TWELVE BIRDS LEFT AT THREE O'CLOCK ONE THOUSAND FIVE HUNDRED CAME AT "
        "SEVEN FORTY FIVE")
    assert word_errors("TWENTY ONE CARS", "21 cars.") == (0, 3)
    assert word_errors(FOX, FOX.lower()) == (0, 9)
    assert word_errors("a b c", "a x c d") == (2, 3)
    assert word_errors("", "a") == (1, 0)
    assert corpus_wer(["a b c", "d"], ["a b", "d"]) == pytest.approx(0.25)


@pytest.fixture(scope="module")
def sphinx():
    return PocketsphinxASR()


def test_pocketsphinx_wer(speech, noise, sphinx):
    assert wer(speech, FOX, asr=sphinx) < 0.3  # measured: 0.0 (exact transcript)
    assert wer(0.1 * noise, FOX, asr=sphinx) == pytest.approx(1.0)
    with pytest.warns(MetricWarning, match="empty reference"):
        assert math.isnan(wer(speech, "...", asr=sphinx))
    # Batch form (default ASR): target is the list of transcripts.
    batch = torch.stack([speech, 0.1 * noise])
    assert wer_batch(batch, [FOX, FOX], torch.ones(2)).tolist() == pytest.approx([0.0, 1.0],
                                                                               abs=0.3)


class FakeModel:
    """Stands for a SpeechBrain ASR interface: returns (words, tokens)."""

    def __init__(self, words):
        self.words, self.calls = words, []

    def transcribe_batch(self, wavs, wav_lens):
        self.calls.append((tuple(wavs.shape), wav_lens.tolist()))
        return [self.words], [[1, 2]]


def test_speechbrain_asr_adapter():
    model = FakeModel("THE QUICK BROWN FOX")
    asr = SpeechBrainASR(model)
    assert wer(torch.zeros(8000), FOX, asr=asr, sample_rate=8000) == pytest.approx(5 / 9)
    assert model.calls == [((1, 16000), [1.0])]  # resampled to 16 kHz
    assert SpeechBrainASR(FakeModel(["HELLO", "WORLD"])).transcribe(np.zeros(10), 16000) == (
        "HELLO WORLD")


class ByLength(ASR):
    """Transcribes by signal length: tells signals apart without a model."""

    def __init__(self, texts):
        self.texts, self.calls = texts, 0

    def transcribe(self, wav, sr):
        self.calls += 1
        return self.texts[len(wav)]


def test_dwer_is_against_the_asr_transcript_of_the_reference():
    asr = ByLength({3: "a b c d", 2: "a x c", 1: ""})
    assert dwer(np.ones(2), np.ones(3), asr) == pytest.approx(2 / 4)
    assert dwer(np.ones(3), np.ones(3), asr) == 0.0
    with pytest.warns(MetricWarning, match="hears no word"):
        assert math.isnan(dwer(np.ones(2), np.ones(1), asr))
    assert dwer_batch.__name__ == "dwer_batch"  # the MetricStats form (default ASR)


def test_asr_names_and_default():
    assert DEFAULT_ASR == "whisper"
    assert isinstance(make_asr(), WhisperTranscriber) and make_asr() is make_asr("whisper")
    assert isinstance(make_asr("pocketsphinx:none"), PocketsphinxASR)
    assert make_asr("pocketsphinx:none").config.get("lm") is None
    mine = ByLength({})
    assert make_asr(mine) is mine
    with pytest.raises(ValueError, match="unknown ASR 'kaldi'"):
        make_asr("kaldi")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    from speechbrain_gense.whisper import convert_ct2_whisper, write_tiny_ct2_folder

    root = tmp_path_factory.mktemp("whisper")
    convert_ct2_whisper(write_tiny_ct2_folder(str(root / "ct2")), str(root / "hf"))
    return str(root / "hf")


def test_whisper_transcriber_batches_and_caches(tiny_whisper):
    asr = WhisperTranscriber(tiny_whisper, batch_size=2)
    gen = torch.Generator().manual_seed(0)
    wavs = [0.1 * torch.randn(n, generator=gen) for n in (8000, 12000, 8000)]
    texts = asr.transcribe_many(wavs + [torch.zeros(0)], 16000)
    assert len(texts) == 4 and texts[3] == ""
    calls = []
    decode = asr._decode
    asr._decode = lambda pieces, *a: (calls.append(len(pieces)), decode(pieces, *a))
    assert asr.transcribe(wavs[1], 16000) == texts[1]  # cached: nothing decoded
    assert calls == []
    long = 0.1 * torch.randn(16000 * 31, generator=gen)  # two 30 s windows
    asr.transcribe(long, 16000)
    assert calls == [2]
    assert asr.transcribe(wavs[0].numpy(), 8000) is not None  # resampled


def test_metric_stats(speech, noise):
    half = len(speech) // 2
    predict, target = torch.zeros(2, len(speech)), torch.zeros(2, len(speech))
    predict[0], target[0] = speech, speech
    predict[1, :half] = at_snr(speech[:half], noise[:half], 5).float()
    target[1, :half] = speech[:half]
    lengths = torch.tensor([1.0, 0.5])
    stats = make_metric_stats(["pesq", "estoi", "sisdr", "mcd"])
    for stat in stats.values():
        stat.append(["clean", "noisy"], predict, target, lengths)
    for name, fn in (("pesq", pesq_wb), ("estoi", estoi), ("sisdr", sisdr), ("mcd", mcd)):
        expected = fn(predict[1, :half], target[1, :half])
        assert stats[name].scores[1].item() == pytest.approx(expected, rel=1e-5)
    assert stats["sisdr"].scores[1].item() == pytest.approx(5.0, abs=0.01)
    assert stats["pesq"].summarize("max_id") == "clean"
    with pytest.warns(MetricWarning):
        stats["pesq"].append(["silent"], torch.zeros(1, 8000), torch.zeros(1, 8000))
    summary = stats["pesq"].summarize()
    assert summary["nan_count"] == 1 and summary["min_id"] == "noisy"
    with pytest.raises(ValueError, match="unknown metric"):
        make_metric_stats(["psq"])


def test_whisper_transcriber_scores_are_the_greedy_token_log_probs(tiny_whisper):
    import math

    asr = WhisperTranscriber(tiny_whisper, batch_size=2)
    gen = torch.Generator().manual_seed(1)
    wavs = [0.1 * torch.randn(n, generator=gen) for n in (8000, 12000, 8000)] + [torch.zeros(0)]
    scored = asr.transcribe_scored(wavs, 16000)
    assert [t for t, _ in scored] == asr.transcribe_many(wavs, 16000)
    lps = [lp for _, lp in scored]
    assert all(math.isfinite(lp) and lp <= 0 for lp in lps[:3]) and math.isnan(lps[3])
    # The same signal decoded alone (another batch, another padding) scores the same.
    alone = WhisperTranscriber(tiny_whisper, batch_size=1).transcribe_scored([wavs[1]], 16000)
    assert alone[0] == (scored[1][0], pytest.approx(lps[1], abs=1e-3))
    # The mean log-softmax of each emitted token, recomputed step by step (teacher forcing
    # through the searcher's own step, so with its token suppression).
    from speechbrain_gense.whisper import log_mel

    model = asr.model
    lobe, decoder = model.mods.whisper, model.mods.decoder
    with torch.no_grad():
        states = lobe.forward_encoder(log_mel(wavs[0], lobe._mel_filters)[None])
        decoder.max_decode_ratio = (asr.token_cap(8000) + 0.5) / states.shape[1]
        tokens = decoder(states, torch.ones(1))[0][0]
        n = min(len(tokens), asr.token_cap(8000))
        memory = decoder.reset_mem(1, "cpu")
        inp, enc_lens = torch.tensor([decoder.bos_index]), torch.tensor([states.shape[1]])
        total = 0.0
        for token in tokens[:n]:
            logits, memory, _ = decoder.forward_step(inp, memory, states, enc_lens)
            total += float(torch.log_softmax(logits.float(), -1)[0, token])
            inp = torch.tensor([token])
    assert n > 0 and lps[0] == pytest.approx(total / n, abs=1e-3)
