"""Image sets, the long-tailed cut (SPEC §1) and the synthetic stand-in for CIFAR-100.

Image sets are kept as CIFAR stores them: uint8 arrays of shape (N, H, W, 3) with int64 labels.
They are saved as plain ``.npz`` files (no pickles) so that loading them executes nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..io import DataError, atomic_write, load_arrays



@dataclasses.dataclass(frozen=True)
class ImageSet:
    """A balanced train/test pair before the long-tailed cut."""

    train_images: np.ndarray  # (N, H, W, 3) uint8
    train_labels: np.ndarray  # (N,) int64
    test_images: np.ndarray  # (M, H, W, 3) uint8
    test_labels: np.ndarray  # (M,) int64
    num_classes: int

    def save(self, path: str | Path) -> None:
        with atomic_write(path, "wb") as f:
            np.savez(
                f,
                train_images=self.train_images,
                train_labels=self.train_labels,
                test_images=self.test_images,
                test_labels=self.test_labels,
                num_classes=np.int64(self.num_classes),
            )

    @classmethod
    def load(cls, path: str | Path) -> "ImageSet":
        f = load_arrays(path)
        return cls(
            train_images=f["train_images"],
            train_labels=f["train_labels"].astype(np.int64),
            test_images=f["test_images"],
            test_labels=f["test_labels"].astype(np.int64),
            num_classes=int(f["num_classes"]),
        )


def long_tailed_counts(num_classes: int, max_per_class: int, imbalance_factor: float) -> list[int]:
    """SPEC §1: class c keeps int(max * (1/IF) ** (c / (C-1))) images (truncated, not rounded)."""
    if num_classes < 2:
        raise ValueError(f"a long-tailed split needs at least 2 classes, got num_classes={num_classes}")
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}")
    return [
        int(max_per_class * (1.0 / imbalance_factor) ** (c / (num_classes - 1)))
        for c in range(num_classes)
    ]


def long_tailed_indices(labels: np.ndarray, num_classes: int, imbalance_factor: float, seed: int) -> np.ndarray:
    """Indices into ``labels`` of the long-tailed subset, sorted by class then draw order.

    Each class keeps the first n_c of a seeded random permutation of its own indices; the head
    class's count (the largest class size) sets the scale, as CIFAR's 500 per class does.
    """
    labels = np.asarray(labels)
    per_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    max_per_class = min(len(idx) for idx in per_class)
    if max_per_class == 0:
        empty = [c for c, idx in enumerate(per_class) if len(idx) == 0]
        raise ValueError(f"classes {empty[:10]} have no training images; the data set does not match num_classes={num_classes}")
    counts = long_tailed_counts(num_classes, max_per_class, imbalance_factor)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(idx)[:n] for idx, n in zip(per_class, counts)]
    return np.concatenate(chosen).astype(np.int64)


# SPEC §1: the real data sets' size before the cut, and the cut's totals that a run must reproduce.
REAL_DATASETS = {"cifar100": (100, 500), "cifar10": (10, 5000)}  # name -> (classes, training images per class)
SPEC_TOTALS = {
    "cifar100": {200: 9502, 100: 10847, 50: 12608, 10: 19573},
    "cifar10": {100: 12406},
}


def check_spec_counts(dataset: str, imbalance_factor: float, counts) -> None:
    """Raise unless a real data set's long-tailed cut has SPEC §1's per-class counts and total.

    Synthetic sets pass unchecked. A failure means the training set is not the official one (e.g. an
    unofficial copy with images missing), so the split would not be the paper's.
    """
    if dataset not in REAL_DATASETS:
        return
    num_classes, per_class = REAL_DATASETS[dataset]
    counts = [int(c) for c in counts]
    expected = long_tailed_counts(num_classes, per_class, imbalance_factor)
    total = SPEC_TOTALS[dataset].get(imbalance_factor, sum(expected))
    if counts != expected or sum(counts) != total:
        raise DataError(
            f"{dataset} at imbalance factor {imbalance_factor:g}: the long-tailed cut has {sum(counts)} images over "
            f"{len(counts)} classes (head {counts[0] if counts else '-'}, tail {counts[-1] if counts else '-'}); "
            f"SPEC §1 requires {total} over {num_classes} ({expected[0]} ... {expected[-1]}), from {per_class} "
            "training images per class. The training set is not the official one; see "
            "results/<run_name>/data/provenance.json for where it came from."
        )


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels), minlength=num_classes).astype(np.int64)


# --------------------------------------------------------------------------- synthetic data


def log_prior(train_counts: np.ndarray) -> np.ndarray:
    """log pi_c = log(n_c / sum n), float64 (C,): the training split's class priors, which logit adjustment
    adds (baselines.py) or subtracts (evaluate.py). Every class of a long-tailed split keeps an image."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if (counts < 1).any():
        raise ValueError(f"class counts must be at least 1 for a log prior; got {counts.min():g}")
    return np.log(counts / counts.sum())


def make_synthetic(
    num_classes: int = 100,
    train_per_class: int = 500,
    test_per_class: int = 100,
    image_size: int = 32,
    seed: int = 0,
    noise: float = 0.5,
) -> ImageSet:
    """A learnable, CIFAR-shaped stand-in for CIFAR-100 that needs no download.

    Every class is a smooth random colour pattern (a 4x4 grid of colours, upsampled). A sample
    is its class's pattern blended with the pattern of a random *other* class (a "distractor"),
    shifted by a few pixels, with brightness jitter and pixel noise. The distractor makes
    classes overlap, so a classifier trained on a long-tailed cut learns to resolve ambiguous
    samples towards the head classes — the bias that BaGMar and PN exist to correct — while
    the patterns stay easy enough for a small network to learn in a few CPU epochs.
    ``noise`` (0..1) scales the distractor weight and the pixel noise together.
    """
    rng = np.random.default_rng(seed)
    grid = 4
    prototypes = rng.uniform(0.0, 1.0, size=(num_classes, 3, grid, grid)).astype(np.float32)
    prototypes = _upsample(prototypes, image_size)

    def sample(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(num_classes), per_class)
        n = len(labels)
        distractors = (labels + rng.integers(1, num_classes, size=n)) % num_classes
        weight = noise * rng.uniform(0.2, 0.6, size=(n, 1, 1, 1)).astype(np.float32)
        images = (1.0 - weight) * prototypes[labels] + weight * prototypes[distractors]
        max_shift = max(1, image_size // 8)
        shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
        images = _roll_each(images, shifts)
        brightness = rng.uniform(0.7, 1.3, size=(n, 1, 1, 1)).astype(np.float32)
        images = images * brightness + noise * 0.25 * rng.standard_normal(images.shape).astype(np.float32)
        pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
        return pixels.transpose(0, 2, 3, 1).copy(), labels.astype(np.int64)

    train_images, train_labels = sample(train_per_class)
    test_images, test_labels = sample(test_per_class)
    return ImageSet(train_images, train_labels, test_images, test_labels, num_classes)


def _upsample(patterns: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of (N, 3, g, g) patterns to (N, 3, size, size)."""
    g = patterns.shape[-1]
    coords = (np.arange(size) + 0.5) * g / size - 0.5
    lo = np.clip(np.floor(coords).astype(int), 0, g - 1)
    hi = np.clip(lo + 1, 0, g - 1)
    frac = np.clip(coords - lo, 0.0, 1.0).astype(np.float32)
    rows = patterns[:, :, lo, :] * (1 - frac)[:, None] + patterns[:, :, hi, :] * frac[:, None]
    return rows[:, :, :, lo] * (1 - frac) + rows[:, :, :, hi] * frac


def _roll_each(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Cyclically shift each (3, H, W) image by its own (dy, dx), vectorised via gather indices."""
    n, _, h, w = images.shape
    rows = (np.arange(h)[None, :] - shifts[:, :1]) % h  # (n, h)
    cols = (np.arange(w)[None, :] - shifts[:, 1:]) % w  # (n, w)
    return images[np.arange(n)[:, None, None, None], np.arange(3)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]

