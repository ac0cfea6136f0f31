"""The method works end to end on the synthetic long-tailed set (CPU, ~20 s).

A broken loss, statistics update, PN or augmentation would not meet these margins: with the
class imbalance of IF 50, plain cross-entropy all but never predicts the few-shot classes.
"""

import numpy as np
import pytest
import torch

from bagmar.data import class_counts, long_tailed_indices, make_synthetic
from bagmar.evaluate import tau_sweep
from bagmar.train import Recipe, train

NUM_CLASSES, IMAGE_SIZE, IMBALANCE = 10, 16, 50


@pytest.fixture(scope="module")
def sweeps():
    torch.set_num_threads(1)
    images = make_synthetic(NUM_CLASSES, 500, 100, IMAGE_SIZE, seed=0, noise=0.4)
    subset = long_tailed_indices(images.train_labels, NUM_CLASSES, IMBALANCE, seed=0)
    counts = class_counts(images.train_labels[subset], NUM_CLASSES)
    out = {}
    for name, lambda1, lambda2 in [("ce", 0.0, 0.0), ("bagmar", 1.0, 1.0)]:
        recipe = Recipe(epochs=15, width=4, padding=2, cutout_size=8, lambda1=lambda1, lambda2=lambda2, seed=0)
        result = train(images.train_images[subset], images.train_labels[subset], images.test_images,
                       images.test_labels, NUM_CLASSES, recipe, progress=lambda line: None)
        assert np.isfinite(result.test_logits).all()
        out[name] = tau_sweep(result.test_logits, images.test_labels, counts, [0.0, 1.0]).set_index("tau")
    return out


def test_a_small_network_learns_the_synthetic_set(sweeps):
    assert sweeps["ce"].loc[0.0, "top1"] > 40.0  # chance is 10 %
    assert sweeps["ce"].loc[0.0, "many"] > 90.0


def test_imbalance_hurts_the_tail_under_cross_entropy(sweeps):
    assert sweeps["ce"].loc[0.0, "few"] < 15.0
    assert sweeps["ce"].loc[0.0, "many"] - sweeps["ce"].loc[0.0, "few"] > 70.0


def test_bagmar_beats_cross_entropy_on_few_shot_classes(sweeps):
    assert sweeps["bagmar"].loc[0.0, "few"] > sweeps["ce"].loc[0.0, "few"] + 20.0
    assert sweeps["bagmar"].loc[0.0, "top1"] > sweeps["ce"].loc[0.0, "top1"] + 5.0


def test_pn_beats_plain_argmax_on_few_shot_classes_of_the_ce_model(sweeps):
    assert sweeps["ce"].loc[1.0, "few"] > sweeps["ce"].loc[0.0, "few"] + 20.0
    assert sweeps["ce"].loc[1.0, "top1"] > sweeps["ce"].loc[0.0, "top1"]


def tiny_training(seed):
    images = make_synthetic(4, 40, 10, 8, seed=0)
    recipe = Recipe(epochs=2, batch_size=16, width=2, padding=1, cutout_size=4, lambda1=1.0, lambda2=1.0, seed=seed)
    return train(images.train_images, images.train_labels, images.test_images, images.test_labels, 4, recipe,
                 progress=lambda line: None)


def test_training_is_a_function_of_its_seed():
    a, b, c = tiny_training(0), tiny_training(0), tiny_training(1)
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert np.array_equal(a.test_logits, b.test_logits)
    assert torch.equal(a.stats.theta, b.stats.theta)
    assert not np.array_equal(a.test_logits, c.test_logits)
