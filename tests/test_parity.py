"""Issue 4: the fast trainer learns what the reference-style loop learns (accuracy does not move).

The reference-style loop is benchmarks/epoch_time.py's (torchvision's per-image PIL AutoAugment in
DataLoader workers, fp32 eager ResNet-32, torch.optim.SGD, the statistics updated by a per-sample
Python loop). Both train the same synthetic long-tailed set (10 classes, IF 50, 16x16, width 4) for
20 epochs with the BaGMar_pn loss, over three seeds; the means must agree within the seed noise.
About 2 to 3.5 minutes on 2 cores, so marked slow: python -m pytest -m slow tests/test_parity.py

Measured when written (2026-11-27, 2 cores, means over seeds 0-2, final epoch): top-1 plain 79.5
(reference) vs 82.4 (fast), PN 84.7 vs 88.5; few-shot plain 46.7 vs 55.0, PN 56.6 vs 68.4; the
seed-to-seed spread of few-shot accuracy was up to 31 points for one loop.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bagmar.data import class_counts, long_tailed_indices, make_synthetic
from bagmar.evaluate import group_accuracies, pn_predictions
from bagmar.train import Recipe, train

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parents[1] / "benchmarks" / "epoch_time.py"
EPOCHS, SEEDS = 20, (0, 1, 2)


@pytest.fixture(scope="module")
def accuracies():
    spec = importlib.util.spec_from_file_location("epoch_time", SCRIPT)
    epoch_time = importlib.util.module_from_spec(spec)
    sys.modules["epoch_time"] = epoch_time
    try:
        spec.loader.exec_module(epoch_time)
        size = epoch_time.Size(num_classes=10, train_per_class=300, test_per_class=100, image_size=16, width=4,
                               imbalance_factor=50)
        images = make_synthetic(size.num_classes, size.train_per_class, size.test_per_class, size.image_size,
                                seed=0, noise=0.4)
        cut = long_tailed_indices(images.train_labels, size.num_classes, size.imbalance_factor, seed=0)
        data = (images.train_images[cut], images.train_labels[cut], images.test_images, images.test_labels)
        counts = class_counts(images.train_labels[cut], size.num_classes)
        torch.set_num_threads(2)
        out = {"reference": [], "fast": []}
        for seed in SEEDS:
            reference = epoch_time.run_reference(data, size, EPOCHS, 0, "cpu", 1, seed, 100, lambda line: None)
            recipe = Recipe(epochs=EPOCHS, width=size.width, padding=size.padding, cutout_size=size.cutout_size,
                            lambda1=epoch_time.LAMBDA1, lambda2=epoch_time.LAMBDA2, seed=seed)
            fast = train(*data, size.num_classes, recipe, progress=lambda line: None)
            for name, logits in (("reference", reference["final_test_logits"]), ("fast", fast.test_logits)):
                plain, pn = pn_predictions(logits, [0.0, 1.0])
                out[name].append({"plain": group_accuracies(plain, images.test_labels, counts),
                                  "pn": group_accuracies(pn, images.test_labels, counts)})
        return out
    finally:
        sys.modules.pop("epoch_time", None)


def mean(runs, evaluation, group):
    return float(np.mean([run[evaluation][group] for run in runs]))


@pytest.mark.parametrize("evaluation", ["plain", "pn"])
def test_both_loops_learn_the_set(accuracies, evaluation):
    for name in ("reference", "fast"):
        assert mean(accuracies[name], evaluation, "top1") > 60.0, name  # chance is 10 %


@pytest.mark.parametrize("evaluation, group, tolerance", [
    ("plain", "top1", 8.0), ("pn", "top1", 8.0),  # seed spread of top-1: up to ~15 points
    ("plain", "few", 20.0), ("pn", "few", 20.0),  # 3 few-shot classes: up to ~31 points
])
def test_the_fast_trainer_agrees_with_the_reference_loop(accuracies, evaluation, group, tolerance):
    reference, fast = mean(accuracies["reference"], evaluation, group), mean(accuracies["fast"], evaluation, group)
    print(f"{evaluation} {group}: reference {reference:.1f}, fast {fast:.1f}")
    assert abs(fast - reference) <= tolerance
