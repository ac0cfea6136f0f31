"""SPEC §4: BaGMar's adjusted logits and gradient statistics."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bagmar.method.loss import GradientStatistics, adjusted_logits, bagmar_loss

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from reference import ReferenceStatistics, reference_adjusted_logits  # noqa: E402 (SPEC §4 written out literally)


def test_vectorised_statistics_equal_the_naive_per_sample_spec():
    c, batch = 7, 12
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    stats, naive = GradientStatistics(c), ReferenceStatistics(c, "cpu")
    for step in range(60):
        # repeated labels always; classes 5 and 6 absent from every other batch
        labels = rng.integers(0, c if step % 2 else 5, size=batch)
        logits = torch.randn(batch, c) * 3
        y = torch.as_tensor(labels)
        adjusted = adjusted_logits(logits, y, stats, 1.2, 0.9)
        assert np.allclose(adjusted.numpy(), reference_adjusted_logits(logits.numpy(), labels, naive, 1.2, 0.9),
                           atol=1e-4)
        _, grad = bagmar_loss(logits, y, stats, 1.2, 0.9)
        stats.update(grad, y)
        naive.update(grad, y)
        for name in ("F", "theta", "phi"):
            assert torch.allclose(getattr(stats, name), getattr(naive, name), rtol=1e-12, atol=1e-12), name
    assert stats.theta.dtype == stats.phi.dtype == torch.float64
    assert bool((naive.theta > 0).all() and (naive.phi > 0).all())


def test_o_c_statistics_equal_the_matrix_statistics_over_many_steps():
    """Theta and phi from two C-vectors are SPEC's three-matrix numbers, with absent classes and
    repeated labels, for a set that keeps F and one that does not (the same theta and phi bit for bit)."""
    c, batch = 11, 24
    rng = np.random.default_rng(3)
    with_f, without_f, naive = GradientStatistics(c, keep_matrix=True), GradientStatistics(c, keep_matrix=False), \
        ReferenceStatistics(c, "cpu")
    for step in range(300):
        present = c if step % 3 else rng.integers(1, c)  # some steps see only the first few classes
        labels = torch.as_tensor(rng.choice(rng.integers(0, present, size=4), size=batch))  # heavy repeats
        _, grad = bagmar_loss(torch.as_tensor(rng.normal(size=(batch, c)) * 3, dtype=torch.float32), labels,
                              without_f, 1.0, 1.0)
        for stats in (with_f, without_f, naive):
            stats.update(grad, labels)
        assert torch.equal(with_f.theta, without_f.theta) and torch.equal(with_f.phi, without_f.phi)
        for name in ("theta", "phi"):
            torch.testing.assert_close(getattr(without_f, name), getattr(naive, name), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(with_f.F, naive.F, rtol=1e-12, atol=1e-12)
    assert "F" not in without_f.state_dict()
    with pytest.raises(AttributeError, match="statistics_matrix_max_classes"):
        without_f.F


def test_statistics_at_inaturalists_8142_classes_are_o_c():
    """The default keeps no C x C matrix past 1,000 classes: at 8,142 the set is four C-vectors (260 kB)."""
    c = 8142
    stats = GradientStatistics(c)
    assert not stats.keeps_matrix
    labels = torch.randint(0, c, (64,))
    stats.update(torch.rand(64, c), labels)
    held = sum(t.numel() for t in stats.state_dict().values())
    assert held == 4 * c
    assert bool((stats.theta[labels] > 0).all())
    assert GradientStatistics(1000).keeps_matrix


def test_gradient_for_the_statistics_is_the_autograd_gradient():
    torch.manual_seed(1)
    stats = GradientStatistics(5)
    stats.update(torch.rand(8, 5), torch.randint(0, 5, (8,)))
    logits = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    adjusted = adjusted_logits(logits, y, stats, 1.0, 1.0)
    adjusted.retain_grad()
    loss = F.cross_entropy(adjusted, y)
    loss.backward()
    _, grad = bagmar_loss(logits.detach(), y, stats, 1.0, 1.0)
    assert torch.allclose(grad, adjusted.grad.abs(), atol=1e-7)


def test_lambda2_changes_neither_loss_nor_any_gradient():
    torch.manual_seed(2)
    stats = GradientStatistics(6)
    for _ in range(5):
        stats.update(torch.rand(10, 6), torch.randint(0, 6, (10,)))
    features = torch.randn(10, 4)
    y = torch.randint(0, 6, (10,))
    results = []
    for lambda2 in (0.0, 0.9, 5.0):
        torch.manual_seed(7)  # the same layer for every lambda2
        layer = torch.nn.Linear(4, 6)
        loss, grad = bagmar_loss(layer(features), y, stats, 1.2, lambda2)
        loss.backward()
        results.append((loss.item(), layer.weight.grad.clone(), layer.bias.grad.clone(), grad))
    for loss, weight_grad, bias_grad, grad in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-6)
        assert torch.allclose(weight_grad, results[0][1], atol=1e-6)
        assert torch.allclose(bias_grad, results[0][2], atol=1e-6)
        assert torch.allclose(grad, results[0][3], atol=1e-6)


def test_lambda1_does_change_the_loss():
    stats = GradientStatistics(3)
    stats.update(torch.tensor([[0.5, 0.1, 0.0]]), torch.tensor([0]))
    logits, y = torch.zeros(2, 3), torch.tensor([0, 1])
    assert bagmar_loss(logits, y, stats, 1.0, 0.0)[0] != bagmar_loss(logits, y, stats, 0.0, 0.0)[0]


def test_cross_entropy_is_the_special_case_lambda_zero():
    torch.manual_seed(3)
    stats = GradientStatistics(4)
    stats.update(torch.rand(6, 4), torch.randint(0, 4, (6,)))
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    loss, _ = bagmar_loss(logits, y, stats, 0.0, 0.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


@pytest.mark.parametrize("keep_matrix", [True, False])
def test_statistics_round_trip_through_a_state_dict(keep_matrix):
    stats = GradientStatistics(3, keep_matrix=keep_matrix)
    stats.update(torch.rand(4, 3), torch.tensor([0, 0, 2, 1]))
    other = GradientStatistics(3, keep_matrix=keep_matrix)
    other.load_state_dict(stats.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(stats.state_dict().values(), other.state_dict().values()))
    labels = torch.tensor([1, 2])
    grad = torch.rand(2, 3)
    stats.update(grad, labels)
    other.update(grad, labels)  # the running sums came back too: the next step continues alike
    assert all(torch.equal(a, b) for a, b in zip(stats.state_dict().values(), other.state_dict().values()))
    with pytest.raises(ValueError, match="cannot be loaded"):
        GradientStatistics(3, keep_matrix=not keep_matrix).load_state_dict(stats.state_dict())


def test_with_cross_entropy_theta_equals_phi():
    """SPEC §4's fact: a sample's negative gradients sum to its positive one (|p_y - 1| = sum_{j != y} p_j),
    so every class's accumulated positive gradient equals the negative gradient its samples received."""
    torch.manual_seed(2)
    stats = GradientStatistics(6)
    for _ in range(20):
        labels = torch.randint(0, 6, (16,))
        _, grad = bagmar_loss(torch.randn(16, 6) * 4, labels, stats, 0.0, 0.0)
        stats.update(grad, labels)
    # equal up to the float32 rounding of the gradients (softmax in float32); it holds for any softmax
    # cross-entropy, BaGMar's adjusted logits included
    torch.testing.assert_close(stats.theta, stats.phi, rtol=1e-6, atol=1e-9)
    assert bool((stats.theta > 0).all())
