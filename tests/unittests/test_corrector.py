"""MAGE corrector: shapes, padding, loss, learnability, persistence."""

import pytest
import torch
import torch.nn.functional as F

from speechbrain_gense.models.corrector import Corrector, frame_mask

KINDS = ["blstm", "transformer"]


def batch(B=3, T=12, H=16, V=20, K=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g)
    tokens = torch.randint(0, V, (B, T, K), generator=g)
    return hidden, tokens


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("K", [1, 2])
def test_shapes(kind, K):
    model = Corrector(16, 20, num_codebooks=K, dim=16, num_layers=2, kind=kind).eval()
    hidden, tokens = batch(K=K)
    lens = torch.tensor([1.0, 0.5, 0.25])
    assert model(hidden, tokens, lens).shape == (3, 12, K)
    assert model(hidden, tokens).shape == (3, 12, K)
    probs = model.confidence(hidden, tokens, lens)
    assert probs.shape == (3, 12, K) and not probs.requires_grad
    assert ((probs >= 0) & (probs <= 1)).all()
    with pytest.raises(ValueError):
        model(hidden, tokens[..., :1].repeat(1, 1, K + 1))


@pytest.mark.parametrize("kind", KINDS)
def test_padding(kind):
    """Padded frames: confidence 0, and their content cannot change valid outputs."""
    model = Corrector(16, 20, dim=16, kind=kind).eval()
    hidden, tokens = batch()
    lens = torch.tensor([1.0, 0.5, 0.0])
    probs = model.confidence(hidden, tokens, lens)
    mask = frame_mask(lens, 12)
    assert (probs[~mask] == 0).all() and (probs[mask] > 0).all()
    assert torch.isfinite(model(hidden, tokens, lens)).all()
    # Garbage (even out-of-vocabulary ids) past the lengths changes nothing.
    hidden2, tokens2 = hidden.clone(), tokens.clone()
    hidden2[~mask] = 100.0
    tokens2[~mask] = -1
    assert torch.allclose(model.confidence(hidden2, tokens2, lens), probs, atol=1e-5)


def test_loss_matches_manual_bce():
    model = Corrector(16, 5, num_codebooks=2, dim=8)
    hidden, predicted = batch(V=5, K=2)
    target = torch.randint(0, 5, predicted.shape, generator=torch.Generator().manual_seed(1))
    target[0, :6] = predicted[0, :6]
    logits = model(hidden, predicted)
    mask = torch.rand(predicted.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    out = model.loss(logits, predicted, target, mask)
    labels = (predicted == target).float()
    ref = F.binary_cross_entropy_with_logits(logits[mask], labels[mask])
    assert torch.allclose(out["loss"], ref)
    assert out["n"].item() == mask.sum().item()
    assert out["pos_rate"].item() == pytest.approx(labels[mask].mean().item())
    assert out["acc"].item() == pytest.approx(((logits[mask] > 0).float() == labels[mask])
                                              .float().mean().item())
    out["loss"].backward()
    assert model.head.weight.grad is not None

    weighted = Corrector(16, 5, num_codebooks=2, dim=8, pos_weight=0.3)
    ref = F.binary_cross_entropy_with_logits(logits[mask], labels[mask],
                                             pos_weight=torch.tensor(0.3))
    assert torch.allclose(weighted.loss(logits, predicted, target, mask)["loss"], ref)
    # [B, T] masks broadcast over codebooks; an empty mask gives a zero loss.
    frame = mask[..., 0]
    ref = F.binary_cross_entropy_with_logits(logits[frame], labels[frame])
    assert torch.allclose(model.loss(logits, predicted, target, frame)["loss"], ref)
    empty = model.loss(logits, predicted, target, torch.zeros_like(mask))
    assert empty["loss"].item() == 0.0 and empty["n"].item() == 0 and empty["loss"].requires_grad


@pytest.mark.parametrize("kind", KINDS)
def test_learns_toy_problem(kind):
    """A token is "correct" iff its id is even: > 90% accuracy in a few hundred steps."""
    torch.manual_seed(0)
    V, steps = 16, 200
    model = Corrector(8, V, dim=16, kind=kind)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps + 1):
        hidden, predicted = batch(B=8, T=16, H=8, V=V, seed=step)
        target = torch.where(predicted % 2 == 0, predicted, (predicted + 1) % V)
        lens = torch.rand(8) * 0.5 + 0.5
        mask = frame_mask(lens, 16)[..., None]
        if step < steps:
            opt.zero_grad()
            out = model.loss(model(hidden, predicted, lens), predicted, target, mask)
            out["loss"].backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        out = model.loss(model(hidden, predicted, lens), predicted, target, mask)
    assert out["acc"].item() > 0.9, out


@pytest.mark.parametrize("kind", KINDS)
def test_save_load(kind, tmp_path):
    model = Corrector(16, 20, num_codebooks=2, dim=16, kind=kind, pos_weight=0.5,
                      dropout=0.1).eval()
    hidden, tokens = batch(K=2)
    lens = torch.tensor([1.0, 0.7, 0.3])
    model.save(tmp_path / "corrector.ckpt")
    loaded = Corrector.load(tmp_path / "corrector.ckpt").eval()
    assert loaded.config == model.config
    assert torch.equal(loaded(hidden, tokens, lens), model(hidden, tokens, lens))
    assert torch.equal(loaded.confidence(hidden, tokens, lens),
                       model.confidence(hidden, tokens, lens))


def test_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        Corrector(8, 8, kind="gru")
