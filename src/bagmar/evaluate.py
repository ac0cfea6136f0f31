"""Evaluation from saved logits: top-1, shot groups, per-class accuracy, and PN (SPEC §5).

All accuracies are percentages. A shot group with no classes (few-shot at IF 10) is NaN —
"not applicable" — never 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


PN_HEADLINE_TAU = 1.0  # the paper's "tau = 1" column
# Shot groups (SPEC §1) are an evaluation matter: the data and training jobs never use them, so
# changing them replans the evaluations and what follows only.
SHOT_GROUPS = ("many", "medium", "few")
MANY_SHOT_ABOVE = 100  # many-shot: more than 100 training images
FEW_SHOT_BELOW = 20  # few-shot: fewer than 20 training images


def shot_groups(train_counts: np.ndarray) -> np.ndarray:
    """Per-class group name by training count (SPEC §1): many > 100, few < 20, medium otherwise."""
    counts = np.asarray(train_counts)
    return np.where(counts > MANY_SHOT_ABOVE, "many", np.where(counts < FEW_SHOT_BELOW, "few", "medium"))


def headline_tau(evaluation: str) -> float:
    """Plain evaluation is PN with tau = 0; PN variants are reported at tau = 1 first."""
    return PN_HEADLINE_TAU if evaluation == "pn" else 0.0


def tau_grid(start: float, stop: float, step: float) -> list[float]:
    """Inclusive grid, rounded so that 0.1-steps give 1.0 exactly (PN's headline tau)."""
    n = int(round((stop - start) / step))
    return [round(start + i * step, 10) for i in range(n + 1)]


def pn_predictions(logits: np.ndarray, taus: list[float]) -> np.ndarray:
    """Predictions for every tau: (T, N) class indices.

    PN divides each softmax probability by its column mass m[j] = sum_i p[i, j] raised to tau
    and takes the argmax; in log space that is argmax_j log p[i, j] - tau * log m[j], which is
    exact where p underflows. tau = 0 is the plain argmax. NumPy, not torch: evaluation jobs
    read saved logits and need no accelerator, so they skip torch's import cost.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    peak = log_p.max(axis=0)
    log_mass = peak + np.log(np.exp(log_p - peak).sum(axis=0))  # log m[j], overflow-safe
    return np.stack([(log_p - tau * log_mass).argmax(axis=1) for tau in taus])


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Percent correct per class; NaN for a class absent from the evaluation set."""
    totals = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[predictions == labels], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100.0 * hits / np.maximum(totals, 1), np.nan)


def group_accuracies(predictions: np.ndarray, labels: np.ndarray, train_counts: np.ndarray) -> dict[str, float]:
    """Top-1 over all samples and over the samples of each shot group's classes."""
    correct = predictions == labels
    group_of_sample = shot_groups(train_counts)[labels]
    out = {"top1": 100.0 * float(correct.mean())}
    for group in SHOT_GROUPS:
        members = group_of_sample == group
        out[group] = 100.0 * float(correct[members].mean()) if members.any() else float("nan")
    return out


def tau_sweep(logits: np.ndarray, labels: np.ndarray, train_counts: np.ndarray, taus: list[float]) -> pd.DataFrame:
    """One row per tau: tau, top1, many, medium, few."""
    predictions = pn_predictions(logits, taus)
    return pd.DataFrame([{"tau": tau, **group_accuracies(p, labels, train_counts)} for tau, p in zip(taus, predictions)])


def per_class_table(logits: np.ndarray, labels: np.ndarray, train_counts: np.ndarray, tau: float) -> pd.DataFrame:
    """Per-class accuracy at one tau, beside each class's training count and shot group."""
    predictions = pn_predictions(logits, [tau])[0]
    num_classes = len(train_counts)
    return pd.DataFrame(
        {
            "class": np.arange(num_classes),
            "train_count": train_counts,
            "group": shot_groups(train_counts),
            "accuracy": per_class_accuracy(predictions, labels, num_classes),
        }
    )


def label_free_tau(logits: np.ndarray, taus: list[float]) -> float:
    """A tau chosen without test labels: the one whose predicted-label histogram on the evaluation
    inputs is closest to uniform (total variation distance; ties go to the smaller tau).

    PN already reads the test inputs, and the test prior is known to be uniform (SPEC §7); a
    validation split cannot come from unused training images (class 0 keeps all of its images).
    """
    predictions = pn_predictions(logits, taus)
    num_classes = logits.shape[1]
    histograms = np.stack([np.bincount(p, minlength=num_classes) for p in predictions]) / predictions.shape[1]
    distance = 0.5 * np.abs(histograms - 1.0 / num_classes).sum(axis=1)
    return float(taus[int(np.argmin(distance))])


def evaluate_training(logits: dict[str, np.ndarray], labels: np.ndarray, train_counts: np.ndarray,
                      taus: list[float], evaluation: str) -> pd.DataFrame:
    """One variant's evaluation of one training, from its saved test logits (see TrainResult.save).

    Rows with model = "final": the final-epoch model at every tau. Rows with model =
    "best_epoch": the epoch with the best test accuracy (selected on the test labels, as the
    released code did; plain or PN tau = 1 accuracy by the variant's evaluation) at the headline
    tau. ``label_free_tau`` is the final model's tau chosen without labels (PN variants only).
    """
    final = tau_sweep(logits["logits"], labels, train_counts, taus)
    final.insert(0, "epoch", int(logits["final_epoch"]))
    final.insert(0, "model", "final")
    best = tau_sweep(logits[f"best_{evaluation}_logits"], labels, train_counts, [headline_tau(evaluation)])
    best.insert(0, "epoch", int(logits[f"best_{evaluation}_epoch"]))
    best.insert(0, "model", "best_epoch")
    out = pd.concat([final, best], ignore_index=True)
    out["label_free_tau"] = label_free_tau(logits["logits"], taus) if evaluation == "pn" else float("nan")
    return out
