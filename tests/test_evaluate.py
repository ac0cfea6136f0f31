"""SPEC §5 (PN) and the evaluation metrics."""

import math

import numpy as np
import pytest

from bagmar.config.run import tau_grid
from bagmar.evaluation.evaluate import group_accuracies, per_class_table, pn_predictions, tau_sweep


def test_pn_on_hand_made_logits():
    # Probabilities chosen so every step can be checked by hand (rows sum to 1):
    p = np.array([
        [0.6, 0.3, 0.1],
        [0.5, 0.2, 0.3],
        [0.7, 0.1, 0.2],
        [0.45, 0.35, 0.2],
    ])
    # column mass m = [2.25, 0.95, 0.8]
    # tau=0: argmax p                        -> [0, 0, 0, 0]
    # tau=1: p/m, row 0: [.267, .316, .125]  -> 1; row 1: [.222, .211, .375] -> 2;
    #        row 2: [.311, .105, .25] -> 0;  row 3: [.2, .368, .25] -> 1
    # tau=2: p/m^2, row 0: [.119, .332, .156] -> 1; row 1: [.099, .222, .469] -> 2;
    #        row 2: [.138, .111, .3125] -> 2; row 3: [.089, .388, .3125] -> 1
    predictions = pn_predictions(np.log(p), [0.0, 1.0, 2.0])
    assert predictions.tolist() == [[0, 0, 0, 0], [1, 2, 0, 1], [1, 2, 2, 1]]


def test_pn_is_invariant_to_a_per_sample_shift_of_the_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 8)) * 4
    shifted = logits + rng.normal(size=(50, 1)) * 100
    assert np.array_equal(pn_predictions(logits, [0.0, 0.7, 1.5]), pn_predictions(shifted, [0.0, 0.7, 1.5]))


def test_tau_grid_hits_one_exactly():
    grid = tau_grid(0.0, 2.0, 0.1)
    assert len(grid) == 21 and grid[0] == 0.0 and grid[-1] == 2.0 and 1.0 in grid and 1.5 in grid


def test_group_accuracies_and_not_applicable_groups():
    train_counts = np.array([500, 50, 30])  # many, medium, medium: no few-shot class
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 0, 1, 0, 0, 0])
    acc = group_accuracies(predictions, labels, train_counts)
    assert acc["top1"] == pytest.approx(50.0)
    assert acc["many"] == pytest.approx(100.0)
    assert acc["medium"] == pytest.approx(25.0)
    assert math.isnan(acc["few"])


def test_tau_sweep_and_per_class_table():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 25)
    logits = rng.normal(size=(100, 4)) + np.eye(4)[labels] * 2 + np.array([3.0, 1.0, 0.0, 0.0])
    counts = np.array([300, 60, 10, 5])
    sweep = tau_sweep(logits, labels, counts, [0.0, 1.0])
    assert list(sweep.columns) == ["tau", "top1", "many", "medium", "few"]
    assert sweep.loc[1, "few"] > sweep.loc[0, "few"]  # the head bias is removed
    table = per_class_table(logits, labels, counts, "pn")
    assert table["group"].tolist() == ["many", "medium", "few", "few"]
    assert table["accuracy"].mean() == pytest.approx(sweep.loc[1, "top1"])
