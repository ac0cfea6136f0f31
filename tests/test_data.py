"""SPEC §1: the long-tailed cut, shot groups, and the synthetic stand-in for CIFAR-100."""

import inspect
import io

import numpy as np
import pytest

from bagmar.data.long_tail import ImageSet, class_counts, long_tailed_counts, long_tailed_indices, make_synthetic
from bagmar.evaluation.evaluate import shot_groups

CIFAR_LABELS = np.repeat(np.arange(100), 500)  # CIFAR-100's training labels: 500 per class


@pytest.mark.parametrize(
    "imbalance_factor, total, last",
    [(200, 9502, 2), (100, 10847, 5), (50, 12608, 10), (10, 19573, 50)],
)
def test_long_tailed_totals_match_spec(imbalance_factor, total, last):
    counts = long_tailed_counts(100, 500, imbalance_factor)
    assert sum(counts) == total
    assert counts[0] == 500 and counts[-1] == last
    assert counts == sorted(counts, reverse=True)


def test_counts_truncate_rather_than_round():
    counts = long_tailed_counts(100, 500, 100)
    assert counts[:3] == [500, 477, 455] and counts[-3:] == [5, 5, 5]
    # 500 * 0.01 ** (1/99) = 477.4...; 500 * 0.01 ** (2/99) = 455.8... (rounding would give 456)
    assert 500 * 0.01 ** (2 / 99) > 455.5


def test_split_takes_the_spec_counts_of_each_class():
    indices = long_tailed_indices(CIFAR_LABELS, 100, 100, seed=0)
    assert len(indices) == 10847 and len(np.unique(indices)) == len(indices)
    assert class_counts(CIFAR_LABELS[indices], 100).tolist() == long_tailed_counts(100, 500, 100)


def test_same_seed_gives_a_byte_identical_split():
    def saved(seed):
        buffer = io.BytesIO()
        np.save(buffer, long_tailed_indices(CIFAR_LABELS, 100, 50, seed=seed))
        return buffer.getvalue()

    assert saved(3) == saved(3)
    assert saved(3) != saved(4)


def test_other_seed_draws_other_images_with_the_same_counts():
    a = long_tailed_indices(CIFAR_LABELS, 100, 200, seed=0)
    b = long_tailed_indices(CIFAR_LABELS, 100, 200, seed=1)
    assert set(a) != set(b)
    assert class_counts(CIFAR_LABELS[a], 100).tolist() == class_counts(CIFAR_LABELS[b], 100).tolist()


def test_shot_groups_at_if_100_are_35_35_30():
    groups = shot_groups(np.array(long_tailed_counts(100, 500, 100)))
    assert [int((groups == g).sum()) for g in ("many", "medium", "few")] == [35, 35, 30]


def test_few_shot_group_is_empty_at_if_10():
    groups = shot_groups(np.array(long_tailed_counts(100, 500, 10)))
    assert not (groups == "few").any()


def test_bad_imbalance_factor_is_refused():
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tailed_counts(100, 500, 0.5)


def test_synthetic_set_is_cifar_shaped_and_deterministic(tmp_path):
    a = make_synthetic(num_classes=5, train_per_class=20, test_per_class=4, image_size=8, seed=7)
    assert a.train_images.shape == (100, 8, 8, 3) and a.train_images.dtype == np.uint8
    assert a.test_images.shape == (20, 8, 8, 3)
    assert class_counts(a.train_labels, 5).tolist() == [20] * 5
    b = make_synthetic(num_classes=5, train_per_class=20, test_per_class=4, image_size=8, seed=7)
    assert np.array_equal(a.train_images, b.train_images) and np.array_equal(a.test_images, b.test_images)
    c = make_synthetic(num_classes=5, train_per_class=20, test_per_class=4, image_size=8, seed=8)
    assert not np.array_equal(a.train_images, c.train_images)
    a.save(tmp_path / "images.npz")
    loaded = ImageSet.load(tmp_path / "images.npz")
    assert np.array_equal(loaded.train_images, a.train_images) and loaded.num_classes == 5


def test_default_synthetic_set_matches_cifar100_sizes():
    assert inspect.signature(make_synthetic).parameters["image_size"].default == 32
    images = make_synthetic(seed=0, image_size=8)  # every other default; 8x8 pixels keep the test fast
    assert images.train_images.shape == (50000, 8, 8, 3) and images.test_images.shape == (10000, 8, 8, 3)
    assert len(long_tailed_indices(images.train_labels, 100, 100, seed=0)) == 10847
