"""The AudioTokenizer contract (tokenizers/base.py), exercised with DebugTokenizer."""

import pytest
import torch
import torchaudio
from hyperpyyaml import load_hyperpyyaml

from speechbrain_gense.tokenizers.base import AudioTokenizer
from speechbrain_gense.tokenizers.debug import DebugTokenizer

SR, HOP = 16000, 200


def signal(num_samples, seed=0, batch=None):
    gen = torch.Generator().manual_seed(seed)
    shape = (num_samples,) if batch is None else (batch, num_samples)
    return torch.randn(*shape, generator=gen) * 0.1


@pytest.fixture(params=[1, 4], ids=["K1", "K4"])
def tok(request):
    return DebugTokenizer(num_codebooks=request.param, vocab_size=64, seed=0)


# Shapes, dtypes, ranges ------------------------------------------------------


def test_attributes(tok):
    assert isinstance(tok, AudioTokenizer)
    assert tok.sample_rate == SR and tok.frame_rate == 80.0
    assert tok.hop_length == HOP and tok.vocab_size == 64
    assert tok.num_frames(16000) == 80 and tok.num_frames(16001) == 81


def test_encode_shapes_dtype_range(tok):
    wav = signal(16000, batch=3)
    tokens, lens = tok.encode(wav)
    assert tokens.shape == (3, 80, tok.num_codebooks)
    assert tokens.dtype == torch.long
    assert int(tokens.min()) >= 0 and int(tokens.max()) < tok.vocab_size
    assert lens.tolist() == [1.0, 1.0, 1.0]
    # A 1-D signal is a batch of one.
    one, one_lens = tok.encode(wav[0])
    assert one.shape == (1, 80, tok.num_codebooks) and torch.equal(one[0], tokens[0])
    assert one_lens.tolist() == [1.0]
    # Real use of the vocabulary, not a constant.
    assert tokens[..., 0].unique().numel() > 10


def test_partial_frame_is_a_frame(tok):
    tokens, _ = tok.encode(signal(16001, batch=1))
    assert tokens.shape[1] == 81
    tokens, _ = tok.encode(signal(150, batch=1))
    assert tokens.shape[1] == 1


def test_relative_lengths_padded_batch(tok):
    full, half, odd = signal(16000, 1), signal(8000, 2), signal(8100, 3)
    wav = torch.zeros(3, 16000)
    wav[0], wav[1, :8000], wav[2, :8100] = full, half, odd
    tokens, lens = tok.encode(wav, torch.tensor([1.0, 0.5, 8100 / 16000]))
    assert tokens.shape == (3, 80, tok.num_codebooks)
    assert lens.tolist() == pytest.approx([1.0, 0.5, 41 / 80])
    # The valid frames of a padded item are those of the item alone.
    alone, _ = tok.encode(half)
    assert alone.shape[1] == 40 and torch.equal(tokens[1, :40], alone[0])
    alone, _ = tok.encode(odd)
    assert alone.shape[1] == 41 and torch.equal(tokens[2, :41], alone[0])
    # Batching never changes an item's tokens.
    assert torch.equal(tokens[0], tok.encode(full)[0][0])


def test_relative_lengths_follow_longest_item(tok):
    # base.py: frame lengths are relative to the longest *item* of the batch.
    wav = signal(16000, batch=2)
    _, lens = tok.encode(wav, torch.tensor([1.0, 0.25]))
    assert lens.tolist() == [1.0, 0.25]


def test_relative_lengths_when_no_item_is_full(tok):
    wav = signal(16000, batch=2)
    tokens, lens = tok.encode(wav, torch.tensor([0.5, 0.25]))
    assert tokens.shape[1] == 80
    assert lens.tolist() == [0.5, 0.25]


# Decoding ----------------------------------------------------------------------


def test_decode_length_and_determinism(tok):
    tokens, _ = tok.encode(signal(16000 + 37, batch=2))
    assert tokens.shape[1] == 81
    wav = tok.decode(tokens)
    assert wav.shape == (2, 81 * HOP) and wav.dtype == torch.float32
    assert torch.equal(wav, tok.decode(tokens.clone()))
    # A function of the tokens: other tokens, other audio.
    other = (tokens + 1) % tok.vocab_size
    assert not torch.allclose(tok.decode(other), wav)
    # The decoded audio resembles the input (a coarse codec, but a codec).
    wav_in = signal(16000, batch=1)
    out = tok.decode(tok.encode(wav_in)[0])
    assert torch.nn.functional.cosine_similarity(out, wav_in).item() > 0.1


def test_decode_masks_past_length_and_ignores_padding_tokens(tok):
    wav = torch.zeros(2, 16000)
    wav[0], wav[1, :8000] = signal(16000, 1), signal(8000, 2)
    tokens, lens = tok.encode(wav, torch.tensor([1.0, 0.5]))
    out = tok.decode(tokens, lens)
    assert out.shape == (2, 16000)
    assert out[1, 8000:].abs().max() == 0  # base.py zeroes samples past the length
    assert out[1, :8000].abs().max() > 0
    # Padding frames (past the length) do not change the valid region.
    scrambled = tokens.clone()
    scrambled[1, 40:] = torch.randint(0, tok.vocab_size, scrambled[1, 40:].shape)
    again = tok.decode(scrambled, lens)
    assert torch.equal(again, out)
    # ... even without the lengths (frames are decoded independently).
    assert torch.equal(tok.decode(scrambled)[1, :8000], tok.decode(tokens)[1, :8000])


def test_more_codebooks_reconstruct_better():
    wav = signal(16000, batch=1)
    errors = []
    for k in (1, 4):
        t = DebugTokenizer(num_codebooks=k)
        target = (wav.reshape(1, -1, HOP) @ t.proj @ t.proj.T).reshape(1, -1)
        out = t.decode(t.encode(wav)[0])
        errors.append(float(((out - target) ** 2).mean()))
    assert errors[1] < errors[0]


# Resampling at the boundary --------------------------------------------------


def test_encode_resamples_input(tok):
    wav8 = signal(8000, batch=2)
    tokens8, lens8 = tok.encode(wav8, sample_rate=8000)
    tokens16, lens16 = tok.encode(torchaudio.functional.resample(wav8, 8000, SR))
    assert tokens8.shape == (2, 80, tok.num_codebooks)
    assert torch.equal(tokens8, tokens16) and torch.equal(lens8, lens16)
    # Relative lengths survive resampling.
    _, lens = tok.encode(wav8, torch.tensor([1.0, 0.5]), sample_rate=8000)
    assert lens.tolist() == [1.0, 0.5]


def test_decode_resamples_output(tok):
    tokens, _ = tok.encode(signal(16000, batch=1))
    out = tok.decode(tokens, sample_rate=8000)
    assert out.shape == (1, 8000)
    ref = torchaudio.functional.resample(tok.decode(tokens), SR, 8000)
    assert torch.allclose(out, ref)


# Determinism, seeds, configuration -------------------------------------------


def test_same_seed_same_tokenizer_other_seed_other():
    wav = signal(16000, batch=2)
    a, b, c = DebugTokenizer(seed=3), DebugTokenizer(seed=3), DebugTokenizer(seed=4)
    for name, buf in a.state_dict().items():
        assert torch.equal(buf, b.state_dict()[name])
    assert torch.equal(a.encode(wav)[0], b.encode(wav)[0])
    assert not torch.equal(a.encode(wav)[0], c.encode(wav)[0])
    tokens = a.encode(wav)[0]
    assert torch.equal(a.decode(tokens), b.decode(tokens))
    assert not torch.allclose(a.decode(tokens), c.decode(tokens))


def test_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    DebugTokenizer(seed=9, num_codebooks=2)
    assert torch.equal(torch.rand(3), expected)


def test_other_hop_and_rate():
    t = DebugTokenizer(sample_rate=24000, hop=320, num_codebooks=8, vocab_size=1024, dim=32)
    assert t.frame_rate == 75.0 and t.hop_length == 320
    tokens, _ = t.encode(signal(24000, batch=1))
    assert tokens.shape == (1, 75, 8) and int(tokens.max()) < 1024
    assert t.decode(tokens).shape == (1, 24000)
    assert t.config["vocab_size"] == 1024 and "hop=320" in repr(t)


def test_yaml_construction():
    hparams = load_hyperpyyaml("""
tokenizer: !new:speechbrain_gense.tokenizers.debug.DebugTokenizer
    hop: 160
    num_codebooks: 4
    vocab_size: 32
    seed: 7
""")
    t = hparams["tokenizer"]
    assert isinstance(t, DebugTokenizer)
    assert (t.hop_length, t.frame_rate, t.num_codebooks, t.vocab_size, t.seed) == \
        (160, 100.0, 4, 32, 7)
    ref = DebugTokenizer(hop=160, num_codebooks=4, vocab_size=32, seed=7)
    wav = signal(1600, batch=1)
    assert torch.equal(t.encode(wav)[0], ref.encode(wav)[0])


# Frozen -----------------------------------------------------------------------


def test_frozen_eval_mode(tok):
    assert list(tok.parameters()) == []
    assert len(list(tok.buffers())) == 2
    assert all(not b.requires_grad for b in tok.buffers())
    assert not tok.training
    tok.train()
    assert not tok.training
    # Also inside a parent module put in training mode (as inside a Brain).
    parent = torch.nn.ModuleDict({"tok": tok, "lin": torch.nn.Linear(2, 2)}).train()
    assert parent.training and parent["lin"].training and not tok.training
    wav = signal(1600, batch=1).requires_grad_()
    tokens, _ = tok.encode(wav)
    out = tok.decode(tokens)
    assert not out.requires_grad


def test_state_dict_roundtrip():
    a, b = DebugTokenizer(seed=1), DebugTokenizer(seed=2)
    b.load_state_dict(a.state_dict())
    wav = signal(3200, batch=1)
    assert torch.equal(a.encode(wav)[0], b.encode(wav)[0])


# Errors -----------------------------------------------------------------------


def test_bad_shapes_and_values(tok):
    with pytest.raises(ValueError, match=r"wav \[B, S\]"):
        tok.encode(torch.zeros(2, 1, 1600))
    with pytest.raises(ValueError, match="decode expects tokens"):
        tok.decode(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="decode expects tokens"):
        tok.decode(torch.zeros(2, 10, tok.num_codebooks + 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tok.decode(torch.full((1, 5, tok.num_codebooks), 64))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tok.decode(torch.full((1, 5, tok.num_codebooks), -1))


@pytest.mark.parametrize("kwargs", [{"hop": 0}, {"dim": 0}, {"hop": 8, "dim": 16},
                                    {"num_codebooks": 0}, {"vocab_size": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DebugTokenizer(**kwargs)


def test_encode_checks_subclass_output():
    class Bad(AudioTokenizer):
        def __init__(self):
            super().__init__(sample_rate=100, frame_rate=10, num_codebooks=2, vocab_size=4)

        def _encode(self, wav):
            return torch.zeros(wav.shape[0], 3, 1)

    with pytest.raises(RuntimeError, match=r"expected \[B, T, 2\]"):
        Bad().encode(torch.zeros(1, 30))
    with pytest.raises(NotImplementedError):
        Bad().decode(torch.zeros(1, 3, 2, dtype=torch.long))


def test_spec_option_without_equals_names_the_command_line_fix():
    """SpeechBrain's command line turns ``KEY=VALUE`` inside a value into ``KEY VALUE``."""
    from speechbrain_gense.tokenizers.registry import SpecError, parse_spec

    with pytest.raises(SpecError, match="--tokenizer_options .MAGE. or --acoustic_options"):
        parse_spec("rvq:pretrained/rvqcodec?num_codebooks 2")
    with pytest.raises(SpecError, match=r"expected KEY=VALUE\)$"):
        parse_spec("rvq:pretrained/rvqcodec?num_codebooks")
