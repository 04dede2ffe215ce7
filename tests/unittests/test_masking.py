"""Masking schedules, token frequencies, training masks and re-masking (masking.py)."""

import math

import pytest
import torch

from speechbrain_gense.masking import (
    SCHEDULES,
    TokenFrequency,
    apply_mask,
    mask_ratio,
    sample_training_mask,
    select_remask,
    valid_frames,
    valid_mask,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------
# lengths and schedules
# --------------------------------------------------------------------------


def test_valid_mask_uses_rounded_relative_lengths():
    lens = torch.tensor([1.0, 0.5, 0.3, 0.0, 0.49])
    assert valid_frames(lens, 10).tolist() == [10, 5, 3, 0, 5]
    valid = valid_mask(lens, 10, K=3)
    assert valid.shape == (5, 10, 3) and valid.dtype == torch.bool
    assert valid.sum((1, 2)).tolist() == [30, 15, 9, 0, 15]
    # valid frames are a prefix, the same for every codebook
    assert valid[2, :3].all() and not valid[2, 3:].any()


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_schedule_endpoints_and_monotonic(schedule):
    assert mask_ratio(0.0, schedule) == 1.0
    assert mask_ratio(1.0, schedule) == 0.0
    t = torch.linspace(0, 1, 101)
    r = mask_ratio(t, schedule)
    assert isinstance(r, torch.Tensor) and r.shape == t.shape and r.dtype == t.dtype
    assert r[0] == 1.0 and r[-1] == 0.0
    assert (r[1:] <= r[:-1]).all() and ((r >= 0) & (r <= 1)).all()


def test_schedule_values():
    assert mask_ratio(0.5, "cosine") == pytest.approx(math.cos(math.pi / 4))
    assert mask_ratio(1 / 3, "cosine") == pytest.approx(math.cos(math.pi / 6))
    assert mask_ratio(0.25, "linear") == pytest.approx(0.75)
    assert mask_ratio(0.5, "square") == pytest.approx(0.75)
    # clamped outside [0, 1]
    assert mask_ratio(-0.5) == 1.0 and mask_ratio(1.5, "linear") == 0.0
    with pytest.raises(ValueError, match="unknown schedule"):
        mask_ratio(0.5, "exp")


# --------------------------------------------------------------------------
# token frequencies
# --------------------------------------------------------------------------


def test_rarity_ranks_hand_made_table():
    # smoothed counts 11, 1, 6, 6, 2 -> order 0, 2, 3 (tie: lower id first), 4, 1
    freq = TokenFrequency(torch.tensor([10, 0, 5, 5, 1]))
    assert len(freq) == 5 and freq.vocab_size == 5 and freq.num_codebooks == 1
    expected = [0.0, 1.0, 0.25, 0.5, 0.75]
    assert freq.rarity(torch.arange(5)).tolist() == expected
    assert freq.rarity_table().tolist() == expected
    # any shape, same device and shape out
    tokens = torch.tensor([[[1], [0]], [[4], [2]]])
    rar = freq.rarity(tokens)
    assert rar.shape == tokens.shape and rar.dtype == torch.float32
    assert rar[..., 0].tolist() == [[1.0, 0.0], [0.75, 0.25]]
    assert freq.probs().tolist() == pytest.approx([11 / 26, 1 / 26, 6 / 26, 6 / 26, 2 / 26])


def test_rarity_per_codebook():
    counts = torch.tensor([[0, 5, 9], [7, 7, 1]])
    freq = TokenFrequency(counts)
    assert freq.num_codebooks == 2 and freq.vocab_size == 3
    # codebook 0: order 2, 1, 0; codebook 1: order 0, 1 (tie), 2
    assert freq.rarity_table().tolist() == [[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]]
    tokens = torch.tensor([[[0, 0], [2, 2], [1, 1]]])  # [B=1, T=3, K=2]
    assert freq.rarity(tokens).tolist() == [[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]]
    with pytest.raises(ValueError, match="shape"):
        freq.rarity(torch.zeros(1, 3, 3, dtype=torch.long))


def test_rarity_rejects_out_of_range_and_single_token_vocab():
    freq = TokenFrequency(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="token ids"):
        freq.rarity(torch.tensor([3]))
    with pytest.raises(ValueError, match="non-negative"):
        TokenFrequency(torch.tensor([1, -1]))
    assert TokenFrequency(torch.tensor([4])).rarity(torch.tensor([0, 0])).tolist() == [0.0, 0.0]


def test_from_tokens_counts_valid_frames_only():
    tokens = torch.tensor([
        [[0, 1], [2, 1], [2, 0], [3, 3]],
        [[1, 1], [3, 3], [3, 3], [3, 3]],  # only the first frame is valid
    ])
    lens = torch.tensor([1.0, 0.25])
    extra = torch.tensor([[0, 2], [0, 2]])  # [N, K], unpadded
    freq = TokenFrequency.from_tokens([(tokens, lens), extra], vocab_size=4, num_codebooks=2)
    assert freq.counts.tolist() == [[3, 1, 2, 1], [1, 3, 2, 1]]
    single = TokenFrequency.from_tokens([torch.tensor([3, 3, 1]), torch.tensor([3])], 4)
    assert single.counts.tolist() == [[0, 1, 0, 3]]
    assert single.rarity(torch.tensor([3, 1, 0, 2])).tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="token ids"):
        TokenFrequency.from_tokens([torch.tensor([4])], 4)
    with pytest.raises(ValueError, match="codebooks"):
        TokenFrequency.from_tokens([extra], 4, num_codebooks=1)


def test_save_load_roundtrip(tmp_path):
    freq = TokenFrequency(torch.tensor([[3, 0, 8], [1, 1, 0]]))
    path = str(tmp_path / "freq.pt")
    freq.save(path)
    loaded = TokenFrequency.load(path)
    assert torch.equal(loaded.counts, freq.counts)
    assert torch.equal(loaded.rarity_table(), freq.rarity_table())
    assert torch.equal(torch.load(path)["counts"], freq.counts)


# --------------------------------------------------------------------------
# training masks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "ctf"])
def test_padded_positions_never_masked(strategy):
    B, T, K = 64, 12, 2
    tokens = torch.randint(0, 6, (B, T, K), generator=gen(1))
    lens = torch.rand(B, generator=gen(2))
    lens[0], lens[1] = 0.0, 1.0
    freq = TokenFrequency(torch.arange(6) * 3)
    mask, ratio = sample_training_mask(tokens, lens, strategy, freq=freq, generator=gen(3))
    valid = valid_mask(lens, T, K)
    assert mask.shape == (B, T, K) and mask.dtype == torch.bool
    assert not (mask & ~valid).any()
    assert mask[0].sum() == 0  # empty utterance
    n_valid = valid.sum((1, 2))
    expected = torch.ceil(ratio.double() * n_valid - 1e-6).long().clamp(min=1)
    expected = torch.minimum(expected, n_valid)
    expected[n_valid == 0] = 0
    assert mask.sum((1, 2)).tolist() == expected.tolist()


def test_exact_count_for_given_ratio():
    tokens = torch.zeros(4, 10, 2, dtype=torch.long)
    lens = torch.tensor([1.0, 0.7, 0.1, 1.0])  # 20, 14, 2, 20 valid positions
    mask, ratio = sample_training_mask(tokens, lens, ratio=0.3, generator=gen())
    # ceil(6) = 6, ceil(4.2) = 5, ceil(0.6) = 1, 6
    assert mask.sum((1, 2)).tolist() == [6, 5, 1, 6]
    assert ratio.tolist() == pytest.approx([0.3] * 4)
    mask, _ = sample_training_mask(tokens, lens, ratio=torch.tensor([0.0, 1.0, 0.5, 0.05]))
    assert mask.sum((1, 2)).tolist() == [1, 14, 1, 1]
    assert (mask[1] == valid_mask(lens, 10, 2)[1]).all()
    with pytest.raises(ValueError):
        sample_training_mask(tokens, lens, ratio=1.5)


def test_random_ratio_follows_schedule():
    B = 4000
    tokens = torch.zeros(B, 8, 1, dtype=torch.long)
    _, ratio = sample_training_mask(tokens, None, schedule="cosine", generator=gen(5))
    assert ((ratio >= 0) & (ratio <= 1)).all()
    # E[cos(pi/2 u)] = 2/pi, E[1 - u] = 1/2, E[1 - u^2] = 2/3
    assert ratio.mean().item() == pytest.approx(2 / math.pi, abs=0.02)
    _, ratio = sample_training_mask(tokens, None, schedule="linear", generator=gen(5))
    assert ratio.mean().item() == pytest.approx(0.5, abs=0.02)
    _, ratio = sample_training_mask(tokens, None, schedule="square", generator=gen(5))
    assert ratio.mean().item() == pytest.approx(2 / 3, abs=0.02)


def test_ctf_without_noise_masks_exactly_the_rarest_tokens():
    # rarity of token v: counts decrease with v, so token 7 is the rarest
    freq = TokenFrequency(torch.tensor([80, 70, 60, 50, 40, 30, 20, 10]))
    tokens = torch.tensor([[[3, 0], [7, 1], [2, 6], [5, 4], [0, 0]]])  # [1, 5, 2]
    lens = torch.tensor([0.8])  # frame 4 is padding
    mask, _ = sample_training_mask(tokens, lens, "ctf", freq=freq, ratio=0.5, noise=0.0)
    # 8 valid positions -> 4 masked: tokens 7, 6, 5, 4, jointly over codebooks
    assert mask.sum() == 4
    assert sorted(tokens[mask].tolist()) == [4, 5, 6, 7]
    # ties by lower position index: three 5s, two masked -> the first two
    tokens = torch.tensor([[[5], [1], [5], [0], [5]]])
    mask, _ = sample_training_mask(tokens, None, "ctf", freq=freq, ratio=0.4, noise=0.0)
    assert mask[0, :, 0].tolist() == [True, False, True, False, False]


def test_ctf_with_noise_prefers_rare_tokens():
    freq = TokenFrequency(torch.tensor([100, 50, 10, 1]))
    B, T = 500, 8
    tokens = torch.arange(4).repeat(2)[None, :, None].expand(B, T, 1)
    mask, _ = sample_training_mask(tokens, None, "ctf", freq=freq, ratio=0.5, noise=0.5,
                                   generator=gen(7))
    per_token = [mask[tokens == v].float().mean().item() for v in range(4)]
    assert per_token[0] < per_token[1] < per_token[2] < per_token[3]
    assert per_token[3] == 1.0 and per_token[0] == 0.0  # rarity gap 1 > noise 0.5
    with pytest.raises(ValueError, match="freq"):
        sample_training_mask(tokens, None, "ctf")


def test_random_masking_is_uniform_over_positions():
    B, T, K = 4000, 10, 2
    tokens = torch.zeros(B, T, K, dtype=torch.long)
    mask, _ = sample_training_mask(tokens, None, "random", ratio=0.25, generator=gen(11))
    assert (mask.sum((1, 2)) == 5).all()
    counts = mask.sum(0).flatten().float()  # expected 1000 per position, std ~27
    assert counts.min() > 880 and counts.max() < 1120
    # pairs are not correlated: P(both of two positions masked) = 5/20 * 4/19
    both = (mask[:, 0, 0] & mask[:, 3, 1]).float().mean().item()
    assert both == pytest.approx(5 / 20 * 4 / 19, abs=0.02)


def test_masks_are_reproducible_with_a_generator():
    tokens = torch.zeros(8, 16, 1, dtype=torch.long)
    m1, r1 = sample_training_mask(tokens, None, generator=gen(3))
    m2, r2 = sample_training_mask(tokens, None, generator=gen(3))
    m3, _ = sample_training_mask(tokens, None, generator=gen(4))
    assert torch.equal(m1, m2) and torch.equal(r1, r2)
    assert not torch.equal(m1, m3)


def test_apply_mask():
    tokens = torch.tensor([[[1, 2], [3, 4]]])
    mask = torch.tensor([[[True, False], [False, True]]])
    out = apply_mask(tokens, mask, 99)
    assert out.tolist() == [[[99, 2], [3, 99]]]
    assert tokens.tolist() == [[[1, 2], [3, 4]]]  # not in place
    assert apply_mask(tokens, torch.tensor([[False, True]]), 99).tolist() == [[[1, 2], [99, 99]]]


# --------------------------------------------------------------------------
# corrector re-masking
# --------------------------------------------------------------------------


def test_select_remask_ratio_picks_lowest_confidence():
    conf = torch.rand(6, 20, generator=gen(9))
    lens = torch.tensor([1.0, 0.5, 0.75, 0.0, 0.1, 1.0])
    remask = select_remask(conf, lens, ratio=0.3)
    n_valid = valid_frames(lens, 20)
    for b in range(6):
        n = math.floor(0.3 * n_valid[b])
        expected = torch.zeros(20, dtype=torch.bool)
        expected[conf[b, : n_valid[b]].argsort()[:n]] = True
        assert remask[b].tolist() == expected.tolist()
        assert remask[b].sum() == n


def test_select_remask_joint_over_codebooks_ties_and_padding():
    conf = torch.tensor([[[0.5, 0.1], [0.1, 0.9], [0.0, 0.0]]])  # frame 2 padded
    lens = torch.tensor([2 / 3])
    remask = select_remask(conf, lens, ratio=0.5)  # 4 valid -> 2
    assert remask.tolist() == [[[False, True], [True, False], [False, False]]]
    remask = select_remask(conf, lens, ratio=0.25)  # 1: tie 0.1 -> lower index (0, 1)
    assert remask.tolist() == [[[False, True], [False, False], [False, False]]]
    remask = select_remask(conf, lens, threshold=0.6)
    assert remask.tolist() == [[[True, True], [True, False], [False, False]]]
    # both: at most floor(ratio * n) positions, only those under the threshold
    remask = select_remask(conf, lens, ratio=0.75, threshold=0.3)
    assert remask.tolist() == [[[False, True], [True, False], [False, False]]]
    with pytest.raises(ValueError, match="ratio or a threshold"):
        select_remask(conf, lens)
