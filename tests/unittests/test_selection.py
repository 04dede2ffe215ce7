"""Best of N (speechbrain_gense.selection) through the interface."""

import pytest
import torch

from speechbrain_gense.inference import EnhanceGenerative
from speechbrain_gense.models.debug import write_tiny_mage
from speechbrain_gense.selection import ConsensusSelector, consensus_scores, make_selector


class PickRow(ConsensusSelector):
    """Chooses a fixed row and keeps what it was offered."""

    def __init__(self, candidates, row):
        super().__init__(candidates, asr=object())
        self.row, self.offered, self.inputs = row, [], []

    def select(self, candidates, noisy, sample_rate):
        self.offered.append(candidates.clone())
        self.inputs.append(noisy.clone())
        return self.row, [0.0] * len(candidates)


class Texts:
    """An ASR that reads its transcripts from a list, in call order."""

    def __init__(self, texts):
        self.texts = list(texts)

    def transcribe_many(self, wavs, sr):
        out, self.texts = self.texts[:len(wavs)], self.texts[len(wavs):]
        return out


@pytest.fixture(scope="module")
def enhancer(tmp_path_factory):
    folder = write_tiny_mage(str(tmp_path_factory.mktemp("tiny_mage")))
    return EnhanceGenerative.from_hparams(source=folder)


def noisy_signal(enhancer, seconds=0.5):
    g = torch.Generator().manual_seed(3)
    return 0.3 * torch.randn(int(enhancer.sample_rate * seconds), generator=g)


def test_consensus_scores_and_ties():
    texts = ["the cat sat", "the cat sat down", "a dog ran off"]
    assert consensus_scores(texts) == [1.0 + 4.0, 1.0 + 4.0, 8.0]
    # the input's vote breaks the tie; it is never a candidate itself
    assert consensus_scores(texts, "the cat sat down") == [6.0, 5.0, 12.0]
    assert consensus_scores(texts, "the cat sat down", input_weight=0) == [5.0, 5.0, 8.0]
    selector = ConsensusSelector(3, asr=Texts(texts + ["the cat sat down"]))
    assert selector.select(torch.zeros(3, 8), torch.zeros(8), 16000) == (1, [6.0, 5.0, 12.0])
    tie = ConsensusSelector(2, asr=Texts(["a b", "a c", "a d"]))
    assert tie.select(torch.zeros(2, 8), torch.zeros(8), 16000)[0] == 0  # the first wins ties


def test_output_is_the_chosen_candidate(enhancer):
    noisy = noisy_signal(enhancer)
    outputs = []
    for row in range(3):
        selector = PickRow(3, row)
        y = enhancer.enhance_batch(noisy, seed=0, candidates=selector)
        (offered,), (given,) = selector.offered, selector.inputs
        assert offered.shape == (3, noisy.shape[0]) and torch.equal(given, noisy)
        assert torch.equal(y, offered[row])
        outputs.append(offered)
    # the same seed offers the same candidates, and they differ (sampled)
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[1], outputs[2])
    assert not torch.equal(outputs[0][0], outputs[0][1])


def test_one_candidate_is_no_selection(enhancer):
    noisy = noisy_signal(enhancer)
    base = enhancer.enhance_batch(noisy, seed=5)
    assert torch.equal(enhancer.enhance_batch(noisy, seed=5, candidates=1), base)
    assert enhancer.candidate_selector() is None  # the folder's default: 1


def test_chunks_with_carried_context_and_batches(enhancer):
    """Every chunk of every row gets its own candidates; the kept tokens are carried."""
    enhancer.chunk_seconds, enhancer.overlap_seconds = 0.25, 0.05
    try:
        noisy = torch.stack([noisy_signal(enhancer, 0.7), noisy_signal(enhancer, 0.7).flip(0)])
        selector = PickRow(2, 1)
        y = enhancer.enhance_batch(noisy, seed=1, candidates=selector)
        chunks = len(enhancer.chunk_plan(noisy.shape[1], enhancer.sample_rate)["chunks"])
        assert chunks >= 3 and y.shape == noisy.shape
        assert sum(len(c) for c in selector.offered) == 2 * 2 * chunks  # 2 rows x 2 candidates
    finally:
        enhancer.chunk_seconds, enhancer.overlap_seconds = 10.0, 1.0


def test_bad_candidates():
    for bad in (0, -2, 2.5, "two", True):
        with pytest.raises(ValueError, match="candidates must be a whole number >= 1"):
            make_selector(bad)
    with pytest.raises(ValueError, match="at least 2 candidates"):
        ConsensusSelector(1)
    assert make_selector("4").candidates == 4 and make_selector(1) is None


def test_evaluation_grid_axis_candidates(enhancer):
    from speechbrain_gense.evaluation import InterfaceMethod, split_guard_options

    assert split_guard_options({"steps": 2, "candidates": 3}) == ({"steps": 2}, {"candidates": 3})
    method = InterfaceMethod(enhancer, "m", seed=0, candidates=3,
                             candidate_asr="pocketsphinx:none")
    assert method.selector.candidates == 3 and "pocketsphinx" in repr(method.selector.asr)
    assert "candidates" not in method.opts


def test_cli_rejects_zero_candidates(capsys):
    from speechbrain_gense.cli import main

    assert main(["x.wav", "-o", "out", "--candidates", "0"]) == 2
    assert "--candidates must be >= 1" in capsys.readouterr().err


def test_folder_candidates(tmp_path):
    """``candidates`` of inference.yaml is the default of every call; a bad one fails at load."""
    from speechbrain_gense.inference import write_inference_yaml

    folder = write_tiny_mage(str(tmp_path / "m"))
    assert "candidates: 1\n" in open(f"{folder}/inference.yaml").read()
    assert EnhanceGenerative.from_hparams(source=folder).candidate_selector() is None
    write_inference_yaml(folder, overwrite=True, candidates=3)
    loaded = EnhanceGenerative.from_hparams(source=folder)
    assert loaded.candidate_selector().candidates == 3
    assert loaded.candidate_selector(1) is None  # a call's own value wins
    write_inference_yaml(folder, overwrite=True, candidates=0)
    with pytest.raises(ValueError, match="inference.yaml: candidates must be a whole number"):
        EnhanceGenerative.from_hparams(source=folder)
