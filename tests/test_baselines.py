"""The comparison methods as their papers write them: logit-adjusted cross-entropy, LDAM-DRW, and the post-hoc
rules beside PN (post-hoc logit adjustment, tau-normalisation). Each is checked against a direct transcription
of its formula, written here, and against numbers worked out by hand."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bagmar.method import baselines
from bagmar.training.engine import LossTerms, group_loss, StackedStatistics
from bagmar.evaluation.evaluate import Outputs, label_free_tau, predictions, tau_sweep
from bagmar.method.model import CosineClassifier, ResNet32
from bagmar.training.train import Recipe

COUNTS = np.array([500, 100, 20, 5])


def random_batch(seed=0, batch=16, classes=4):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, generator=generator) * 3
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return logits, labels


# -- logit-adjusted cross-entropy (Menon et al., ICLR 2021, eq. 10: CE on f_y + tau log pi_y) ------------------

def test_logit_adjusted_loss_and_gradient_are_the_formula_and_its_autograd():
    logits, labels = random_batch()
    log_prior = torch.tensor(np.log(COUNTS / COUNTS.sum()))
    z = logits.clone().requires_grad_()
    by_hand = -(z + 1.5 * log_prior.float()).log_softmax(-1).gather(1, labels[:, None]).mean()
    by_hand.backward()
    loss, grad = baselines.logit_adjusted_loss(logits, labels, log_prior, 1.5)
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    # z' = z + tau log pi is a shift, so dL/dz' = dL/dz; the statistics take its magnitude
    torch.testing.assert_close(grad, z.grad.abs(), rtol=1e-5, atol=1e-7)


def test_with_uniform_priors_logit_adjustment_is_cross_entropy_exactly():
    """log pi = -log C for every class: a constant shift, which softmax cancels (up to the rounding of z + c)."""
    from bagmar.method.loss import GradientStatistics, bagmar_loss

    logits, labels = random_batch(1)
    uniform = torch.full((4,), math.log(0.25), dtype=torch.float64)
    ce, ce_grad = bagmar_loss(logits, labels, GradientStatistics(4), 0.0, 0.0)  # the trainings' cross-entropy
    assert ce.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    for tau in (0.5, 1.0, 2.0):
        assert torch.equal(baselines.logit_adjusted_logits(logits, uniform, tau).argmax(-1), logits.argmax(-1))
        loss, grad = baselines.logit_adjusted_loss(logits, labels, uniform, tau)
        assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
        torch.testing.assert_close(grad, ce_grad, rtol=1e-5, atol=1e-7)
    loss, grad = baselines.logit_adjusted_loss(logits, labels, uniform, 0.0)
    assert torch.equal(loss, ce) and torch.equal(grad, ce_grad)  # no shift at all: bit for bit


def test_at_tau_one_it_is_balanced_softmax():
    """Ren et al. train on z + log n_c; log pi_c = log n_c - log N differs by a constant: the same loss."""
    logits, labels = random_batch(2)
    balanced_softmax = F.cross_entropy(logits + torch.tensor(np.log(COUNTS)).float(), labels)
    loss, _ = baselines.logit_adjusted_loss(logits, labels, torch.tensor(baselines.log_prior(COUNTS)), 1.0)
    assert loss.item() == pytest.approx(balanced_softmax.item(), rel=1e-6)


# -- LDAM-DRW (Cao et al., NeurIPS 2019) ------------------------------------------------------------------------

def test_ldam_margins_are_proportional_to_n_to_the_minus_quarter_and_the_largest_is_max_margin():
    margins = baselines.ldam_margins(np.array([16, 81, 625, 1]), 0.5)
    # n^(-1/4) = 1/2, 1/3, 1/5, 1; scaled so that the largest (n = 1) is 0.5
    np.testing.assert_allclose(margins, [0.25, 0.5 / 3, 0.1, 0.5], rtol=1e-12)


def test_drw_weights_are_class_balanced_and_sum_to_the_number_of_classes():
    weights = baselines.class_balanced_weights(np.array([1, 2]), 0.5)
    # (1 - b) / (1 - b^n): 0.5 / 0.5 = 1 and 0.5 / 0.75 = 2/3; normalised to sum 2: 6/5 and 4/5
    np.testing.assert_allclose(weights, [1.2, 0.8], rtol=1e-12)
    weights = baselines.class_balanced_weights(COUNTS, 0.9999)
    assert weights.sum() == pytest.approx(4) and (np.diff(weights) > 0).all()  # rarer classes weigh more


def direct_ldam(cosines, labels, counts, s, max_margin, weights):
    """The paper's loss as written: -w_y log( e^{s(cos_y - m_y)} / (e^{s(cos_y - m_y)} + sum_{j != y} e^{s cos_j}) ),
    m_j = C / n_j^(1/4) with the largest margin max_margin; batch mean weighted by w_y (torch's convention)."""
    m = [1 / n ** 0.25 for n in counts]
    m = [v * max_margin / max(m) for v in m]
    total, weight_sum = 0.0, 0.0
    for row, y in zip(cosines.tolist(), labels.tolist()):
        target = math.exp(s * (row[y] - m[y]))
        others = sum(math.exp(s * c) for j, c in enumerate(row) if j != y)
        total += -weights[y] * math.log(target / (target + others))
        weight_sum += weights[y]
    return total / weight_sum


@pytest.mark.parametrize("drw", [False, True])
def test_ldam_loss_is_the_papers_formula(drw):
    generator = torch.Generator().manual_seed(3)
    cosines = torch.rand(12, 4, generator=generator, dtype=torch.float64) * 2 - 1
    labels = torch.randint(0, 4, (12,), generator=generator)
    weights = baselines.class_balanced_weights(COUNTS, 0.9999) if drw else np.ones(4)
    margins = torch.tensor(baselines.ldam_margins(COUNTS, 0.5))
    loss, grad = baselines.ldam_drw_loss(30 * cosines.float(), labels, margins, 30.0,
                                         torch.tensor(weights).float() if drw else None)
    assert loss.item() == pytest.approx(direct_ldam(cosines, labels, COUNTS, 30.0, 0.5, weights), rel=1e-5)
    z = (30 * cosines.float()).requires_grad_()
    again, _ = baselines.ldam_drw_loss(z, labels, margins, 30.0, torch.tensor(weights).float() if drw else None)
    again.backward()
    torch.testing.assert_close(grad, z.grad.abs(), rtol=1e-5, atol=1e-7)


def test_the_cosine_classifier_is_scale_times_cosine_with_unit_initial_weights():
    torch.manual_seed(0)
    classifier = CosineClassifier(8, 3, 30.0)
    torch.testing.assert_close(classifier.weight.norm(dim=1), torch.ones(3))
    features = torch.randn(5, 8)
    expected = 30 * F.cosine_similarity(features[:, None, :], classifier.weight[None], dim=-1)
    torch.testing.assert_close(classifier(features), expected, rtol=1e-5, atol=1e-5)
    assert ResNet32(3, 4, cosine_scale=30.0).classifier_terms()[1].tolist() == [30.0] * 3


def test_drw_switches_on_at_the_configured_epoch_and_not_before():
    recipes = [Recipe(loss="ldam_drw", epochs=200), Recipe(loss="bagmar", epochs=200)]
    terms = LossTerms(recipes, COUNTS, "cpu")
    # float64, as computed; each loss rounds them to the dtype it computes in
    balanced = torch.tensor(baselines.class_balanced_weights(COUNTS, 0.9999), dtype=torch.float64)
    ones = torch.ones(4, dtype=torch.float64)
    for epoch in (1, 159, 160):
        terms.start_epoch(epoch)
        assert torch.equal(terms.class_weights, ones.expand(2, 4)), epoch
    for epoch in (161, 200):  # the released code's epoch // 160 == 1 for its 0-based epochs 160..199
        terms.start_epoch(epoch)
        assert torch.equal(terms.class_weights[0], balanced) and torch.equal(terms.class_weights[1], ones)
    assert [baselines.drw_active(e, 10, 0.8) for e in (8, 9)] == [False, True]


def test_a_group_of_mixed_losses_gives_each_member_its_own_methods_numbers():
    """The engine's one formula (LossTerms) with zeros and ones where a method has no term is each method."""
    logits, labels = random_batch(4, batch=8)
    recipes = [Recipe(lambda1=1.2, lambda2=0.9), Recipe(loss="logit_adjusted", tau=1.0),
               Recipe(loss="ldam_drw", epochs=10)]
    terms = LossTerms(recipes, COUNTS, "cpu")
    terms.start_epoch(10)  # DRW on
    stats = StackedStatistics(4, "cpu", 3)
    stats.update(torch.rand(3, 8, 4, generator=torch.Generator().manual_seed(5)), labels.expand(3, 8))
    loss, grad = group_loss(logits.expand(3, 8, 4), labels.expand(3, 8), stats, terms)
    from bagmar.method.loss import GradientStatistics, bagmar_loss
    single = GradientStatistics(4)
    single.load_state_dict(stats.member(0))
    expected = [
        bagmar_loss(logits, labels, single, 1.2, 0.9),
        baselines.logit_adjusted_loss(logits, labels, torch.tensor(baselines.log_prior(COUNTS)), 1.0),
        baselines.ldam_drw_loss(logits, labels, torch.tensor(baselines.ldam_margins(COUNTS, 0.5)), 30.0,
                                torch.tensor(baselines.class_balanced_weights(COUNTS, 0.9999)).float()),
    ]
    for k, (member_loss, member_grad) in enumerate(expected):
        assert loss[k].item() == pytest.approx(member_loss.item(), rel=1e-6), k
        torch.testing.assert_close(grad[k], member_grad, rtol=1e-5, atol=1e-7)


def test_a_loss_setting_of_another_loss_is_refused():
    with pytest.raises(ValueError, match="lambda1 set for loss 'logit_adjusted'"):
        Recipe(loss="logit_adjusted", lambda1=1.0)
    with pytest.raises(ValueError, match="loss 'focal' is not one of"):
        Recipe(loss="focal")


# -- post-hoc rules ---------------------------------------------------------------------------------------------

def test_post_hoc_logit_adjustment_is_hand_computed():
    logits = np.array([[2.0, 1.5, 0.0], [0.1, 0.0, -0.2]])
    counts = np.array([80, 15, 5])  # log pi = log 0.8, log 0.15, log 0.05 = -0.223, -1.897, -2.996
    made = predictions("logit_adjustment", Outputs(logits, None, None), counts, [0.0, 0.5, 1.0])
    # tau 0.5: row 0: 2.112, 2.449, 1.498 -> 1; row 1: 0.212, 0.949, 1.298 -> 2
    # tau 1:   row 0: 2.223, 3.397, 2.996 -> 1; row 1: 0.323, 1.897, 2.796 -> 2
    assert made.tolist() == [[0, 0], [1, 2], [1, 2]]


def test_tau_normalisation_is_hand_computed():
    logits = np.array([[5.0, 3.0], [1.0, 2.0]])
    bias = np.array([1.0, 0.0])
    norms = np.array([4.0, 1.0])  # class 0's weight vector is 4x as long
    # Kang et al.'s form (the default): z(tau) = (z - b) / n^tau; row 0: tau 0: 4 vs 3 -> 0; tau 0.5: 2 vs 3 -> 1;
    # tau 1: 1 vs 3 -> 1. row 1: tau 0: 0 vs 2 -> 1, and stays 1
    made = predictions("tau_norm", Outputs(logits, bias, norms), None, [0.0, 0.5, 1.0])
    assert made.tolist() == [[0, 1], [1, 1], [1, 1]]
    # keeping the bias: z(tau) = b + (z - b) / n^tau; row 0: tau 0.5: 1 + 4/2 = 3 vs 3 -> tie, argmax takes 0
    kept = predictions("tau_norm", Outputs(logits, bias, norms, keep_bias=True), None, [0.0, 0.5, 1.0])
    assert kept.tolist() == [[0, 1], [0, 1], [1, 1]]


@pytest.mark.parametrize("evaluation", ["logit_adjustment", "tau_norm", "pn"])
def test_tau_zero_is_the_plain_prediction(evaluation):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 6)).astype(np.float32) * 4
    # tau_norm in its bias-keeping form; Kang et al.'s form at tau = 0 is argmax(z - b)
    outputs = Outputs(logits, rng.normal(size=6).astype(np.float32), rng.uniform(0.5, 3, size=6).astype(np.float32),
                      keep_bias=True)
    counts = np.array([400, 200, 80, 30, 10, 3])
    assert np.array_equal(predictions(evaluation, outputs, counts, [0.0])[0], logits.argmax(1))
    assert not np.array_equal(predictions(evaluation, outputs, counts, [2.0])[0], logits.argmax(1))


def test_every_post_hoc_rule_gets_a_sweep_and_a_label_free_tau():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 25)
    logits = rng.normal(size=(100, 4)) + np.eye(4)[labels] * 2 + np.array([3.0, 1.0, 0.0, -1.0])
    outputs = Outputs(logits, np.array([1.0, 0.3, 0.0, -0.5]), np.array([3.0, 2.0, 1.2, 1.0]))
    taus = [0.0, 0.5, 1.0, 1.5, 2.0]
    for evaluation in ("logit_adjustment", "tau_norm"):
        sweep = tau_sweep(outputs, labels, COUNTS, taus, evaluation)
        assert sweep["few"].max() > sweep.loc[0, "few"]  # the head bias is reduced somewhere on the grid
        assert label_free_tau(outputs, taus, evaluation, COUNTS) in taus


def test_a_class_without_training_images_is_refused_with_its_index():
    with pytest.raises(ValueError, match=r"LDAM's margin .* class\(es\) 2 have none"):
        baselines.ldam_margins(np.array([10, 3, 0]), 0.5)
    with pytest.raises(ValueError, match=r"class-balanced weight .* class\(es\) 0 have none"):
        baselines.class_balanced_weights(np.array([0, 3, 1]), 0.9999)
