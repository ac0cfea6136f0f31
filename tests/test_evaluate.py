"""SPEC §5 (PN) and the evaluation metrics."""

import math

import numpy as np
import pandas as pd
import pytest

from bagmar.config.run import tau_grid
from bagmar.evaluation.evaluate import evaluate_training, group_accuracies, per_class_table, pn_predictions, tau_sweep
from bagmar.evaluation.tables import summarize
from bagmar.io import load_arrays


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


def _saved(path, logits, labels, bias, norms, *, test=True):
    """A training's saved outputs as TrainResult.save writes them: the test file with its best epochs, or the
    validation file without."""
    arrays = {"logits": np.asarray(logits, np.float32), "labels": np.asarray(labels, np.int64),
              "final_epoch": np.int64(3), "classifier_bias": np.asarray(bias, np.float32),
              "classifier_weight_norm": np.asarray(norms, np.float32)}
    if test:
        for selection in ("plain", "pn"):
            arrays.update({f"best_{selection}_logits": arrays["logits"], f"best_{selection}_epoch": np.int64(3),
                           f"best_{selection}_classifier_bias": arrays["classifier_bias"],
                           f"best_{selection}_classifier_weight_norm": arrays["classifier_weight_norm"]})
    np.savez(path, **arrays)
    return load_arrays(path)


# Hand-made validation and test outputs, one pair a post-hoc rule, where the tau that is best on validation is not
# the one that is best on test (tau grid 0, 0.5, ..., 2). Each case: (counts, bias, norms, validation logits and
# labels, test logits and labels, the val-best tau, the test-best tau, test top-1 at the val-best tau).
P = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.7, 0.1, 0.2], [0.45, 0.35, 0.2]])
HAND_MADE = {
    # PN on test_pn_on_hand_made_logits' rows: tau 0 predicts [0, 0, 0, 0], 1 [1, 2, 0, 1] and 2 [1, 2, 2, 1] (worked
    # there); p / m^tau the same way gives 0.5 [0, 2, 0, 1] and 1.5 [1, 2, 2, 1]. The validation labels are tau 1's
    # (best there, alone), the test labels tau 2's (best from 1.5, the smaller of a tie).
    "pn": ([50, 30, 20], [0, 0, 0], [1, 1, 1], np.log(P), [1, 2, 0, 1], np.log(P), [1, 2, 2, 1], 1.0, 1.5, 75.0),
    # logit adjustment, priors 0.9 and 0.1: class 1 gains tau * log 9 = tau * 2.197. Validation: a class-1 image
    # 0.5 behind (right from tau 0.5) and a class-0 image 1.5 ahead (wrong from tau 1): best at 0.5. Test: 3.0
    # behind (right from 1.5) and 4.0 ahead (wrong from 2): best at 1.5, where 0.5 gets the class-0 image only.
    "logit_adjustment": ([90, 10], [0, 0], [1, 1], [[0.0, -0.5], [1.5, 0.0]], [1, 0],
                         [[3.0, 0.0], [4.0, 0.0]], [1, 0], 0.5, 1.5, 50.0),
    # tau-normalisation, no bias, weight norms 2 and 1: class 0's logit is divided by 2^tau. Validation: [1.5, 1]
    # of class 1 (right from tau 1) and [3, 1] of class 0 (wrong from 2): best at 1 (1.5 ties, the smaller wins).
    # Test: [3.5, 1] of class 1 (right from 2) and [5, 1] of class 0 (right up to 2): best at 2.
    "tau_norm": ([90, 10], [0, 0], [2, 1], [[1.5, 1.0], [3.0, 1.0]], [1, 0],
                 [[3.5, 1.0], [5.0, 1.0]], [1, 0], 1.0, 2.0, 50.0),
}


@pytest.mark.fast
@pytest.mark.parametrize("evaluation", HAND_MADE)
def test_val_selected_tau_is_the_validation_best_even_where_test_prefers_another(evaluation, tmp_path):
    counts, bias, norms, val_z, val_y, test_z, test_y, val_best, test_best, at_val_best = HAND_MADE[evaluation]
    counts = np.asarray(counts)
    test = _saved(tmp_path / "test_logits.npz", test_z, test_y, bias, norms)
    validation = _saved(tmp_path / "val_logits.npz", val_z, val_y, bias, norms, test=False)
    taus = tau_grid(0.0, 2.0, 0.5)
    sweep = evaluate_training(test, test["labels"], counts, taus, evaluation, validation=validation)
    assert (sweep["val_selected_tau"] == val_best).all()
    keys = {"variant": f"v_{evaluation}", "imbalance_factor": 100.0, "seed": 0, "evaluation": evaluation}
    (row,) = summarize(pd.concat([pd.DataFrame(keys, index=sweep.index), sweep], axis=1)).to_dict("records")
    assert (row["val_selected_tau"], row["test_best_tau"]) == (val_best, test_best)
    assert row["val_selected_top1"] == at_val_best < row["test_best_top1"] == 100.0
    # without validation outputs (CIFAR, iNaturalist 2018) no tau is chosen on validation
    without = summarize(pd.concat([pd.DataFrame(keys, index=sweep.index),
                                   evaluate_training(test, test["labels"], counts, taus, evaluation)], axis=1))
    assert without[["val_selected_tau", "val_selected_top1"]].isna().all(axis=None)


@pytest.mark.fast
def test_plain_evaluation_chooses_no_tau_on_validation(tmp_path):
    counts, bias, norms, val_z, val_y, test_z, test_y, *_ = HAND_MADE["logit_adjustment"]
    test = _saved(tmp_path / "test_logits.npz", test_z, test_y, bias, norms)
    validation = _saved(tmp_path / "val_logits.npz", val_z, val_y, bias, norms, test=False)
    sweep = evaluate_training(test, test["labels"], np.asarray(counts), [0.0], "plain", validation=validation)
    assert sweep["val_selected_tau"].isna().all()
