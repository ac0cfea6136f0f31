"""Evaluation from saved outputs: top-1, shot groups, per-class accuracy, PN (SPEC §5) and the other post-hoc rules.

All accuracies are percentages. A shot group with no classes (few-shot at IF 10) is NaN —
"not applicable" — never 0.

The post-hoc rules re-balance a trained model's predictions without retraining, each with an exponent tau
(tau = 0 is the plain argmax for all of them but tau_norm in Kang et al.'s form, whose tau = 0 is argmax(z - b)):
- pn: PN, the paper's prediction re-balancing (SPEC §5);
- logit_adjustment: argmax_j z_j - tau log pi_j, pi the training split's class priors (Menon et al.,
  ICLR 2021, post-hoc form);
- tau_norm: tau-normalisation (Kang et al., ICLR 2020): each class's weight vector w_j divided by
  ||w_j||^tau and the bias dropped, as Kang et al.'s tau_norm.py computes it (the released copy in the paper's
  code: `dotproduct_similarity(feat, pnorm(weights, p))`, no bias), so z_j(tau) = (z_j - b_j) / ||w_j||^tau from
  the saved logits, bias and norms. ``Outputs.keep_bias`` (config tau_norm_bias: keep) keeps the bias instead,
  b_j + (z_j - b_j) / ||w_j||^tau, which makes tau = 0 the trained model itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ..data.long_tail import log_prior


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


POST_HOC = ("pn", "logit_adjustment", "tau_norm")
EVALUATIONS = ("plain", *POST_HOC)


class Outputs(NamedTuple):
    """What a training saved of one model for the test set (see TrainResult.save)."""

    logits: np.ndarray  # (N, C) plain logits
    bias: np.ndarray  # (C,) the classifier's bias (0 for a cosine classifier)
    weight_norm: np.ndarray  # (C,) each class's weight-vector norm (s for a cosine classifier)
    keep_bias: bool = False  # tau_norm: b + (z - b) / ||w||^tau instead of Kang et al.'s (z - b) / ||w||^tau

    @classmethod
    def from_saved(cls, saved: dict, model: str = "final", selection: str = "plain",
                   keep_bias: bool = False) -> "Outputs":
        """The final model's outputs, or (model="best_epoch") those of the epoch selected by ``selection``."""
        prefix = "" if model == "final" else f"best_{selection}_"
        return cls(saved[f"{prefix}logits"], saved[f"{prefix}classifier_bias"], saved[f"{prefix}classifier_weight_norm"],
                   keep_bias)


def headline_tau(evaluation: str) -> float:
    """Plain evaluation is any post-hoc rule at tau = 0; the post-hoc rules are reported at tau = 1 first."""
    return PN_HEADLINE_TAU if evaluation in POST_HOC else 0.0


def predictions(evaluation: str, outputs: Outputs, train_counts: np.ndarray, taus: list[float]) -> np.ndarray:
    """(T, N) predicted classes of one evaluation rule at every tau (module docstring)."""
    if evaluation in ("plain", "pn"):
        return pn_predictions(outputs.logits, taus if evaluation == "pn" else [0.0] * len(taus))
    z = np.asarray(outputs.logits, dtype=np.float64)
    if evaluation == "logit_adjustment":
        prior = log_prior(train_counts)
        return np.stack([(z - tau * prior).argmax(axis=1) for tau in taus])
    if evaluation == "tau_norm":
        bias, log_norm = np.asarray(outputs.bias, np.float64), np.log(np.asarray(outputs.weight_norm, np.float64))
        kept = bias if outputs.keep_bias else 0.0
        return np.stack([(kept + (z - bias) * np.exp(-tau * log_norm)).argmax(axis=1) for tau in taus])
    raise ValueError(f"evaluation '{evaluation}' is not one of {', '.join(EVALUATIONS)}")


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


def _outputs(outputs: Outputs | np.ndarray) -> Outputs:
    """Bare logits serve the rules that need nothing else (plain, PN, logit adjustment)."""
    return outputs if isinstance(outputs, Outputs) else Outputs(outputs, None, None)


def tau_sweep(outputs: Outputs | np.ndarray, labels: np.ndarray, train_counts: np.ndarray, taus: list[float],
              evaluation: str = "pn") -> pd.DataFrame:
    """One row per tau: tau, top1, many, medium, few."""
    made = predictions(evaluation, _outputs(outputs), train_counts, taus)
    return pd.DataFrame([{"tau": tau, **group_accuracies(p, labels, train_counts)} for tau, p in zip(taus, made)])


def per_class_table(outputs: Outputs | np.ndarray, labels: np.ndarray, train_counts: np.ndarray,
                    evaluation: str) -> pd.DataFrame:
    """Per-class accuracy of one evaluation at its headline tau, beside each class's training count and shot group."""
    predicted = predictions(evaluation, _outputs(outputs), train_counts, [headline_tau(evaluation)])[0]
    num_classes = len(train_counts)
    return pd.DataFrame(
        {
            "class": np.arange(num_classes),
            "train_count": train_counts,
            "group": shot_groups(train_counts),
            "accuracy": per_class_accuracy(predicted, labels, num_classes),
        }
    )


def label_free_tau(outputs: Outputs | np.ndarray, taus: list[float], evaluation: str = "pn",
                   train_counts: np.ndarray | None = None) -> float:
    """A tau chosen without test labels: the one whose predicted-label histogram on the evaluation
    inputs is closest to uniform (total variation distance; ties go to the smaller tau).

    The post-hoc rules already read the test inputs, and the test prior is known to be uniform (SPEC §7);
    a validation split cannot come from unused training images (class 0 keeps all of its images).
    """
    outputs = _outputs(outputs)
    made = predictions(evaluation, outputs, train_counts, taus)
    num_classes = outputs.logits.shape[1]
    histograms = np.stack([np.bincount(p, minlength=num_classes) for p in made]) / made.shape[1]
    distance = 0.5 * np.abs(histograms - 1.0 / num_classes).sum(axis=1)
    return float(taus[int(np.argmin(distance))])


def best_row(sweep: pd.DataFrame) -> pd.Series:
    """The row of a tau sweep with the best top-1; a tie goes to the smaller tau (test-best's and val-selected's
    rule)."""
    return sweep.sort_values(["top1", "tau"], ascending=[False, True]).iloc[0]


def val_selected_tau(validation: Outputs | np.ndarray, labels: np.ndarray, train_counts: np.ndarray,
                     taus: list[float], evaluation: str = "pn") -> float:
    """The tau chosen on a validation split: the one whose top-1 on the validation images is best (ties go to the
    smaller tau, as test-best's do). The test set is then read at that tau only: the field's practice (Kang et
    al.'s and Ren et al.'s code choose on "val" and report "test"), where "test-best" is optimistic.

    ``validation``: the final model's outputs on the validation images (val_logits.npz, ImageListResult.save); PN's
    column masses are the validation set's own, as they are the test set's when PN reads the test inputs.
    """
    return float(best_row(tau_sweep(validation, labels, train_counts, taus, evaluation))["tau"])


def evaluate_training(saved: dict[str, np.ndarray], labels: np.ndarray, train_counts: np.ndarray,
                      taus: list[float], evaluation: str, keep_bias: bool = False,
                      validation: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """One variant's evaluation of one training, from its saved test outputs (see TrainResult.save).

    Rows with model = "final": the final-epoch model at every tau. Rows with model =
    "best_epoch": the epoch with the best test accuracy (selected on the test labels, as the
    released code did: by PN tau = 1 accuracy for PN, by plain accuracy otherwise) at the headline
    tau. ``label_free_tau`` is the final model's tau chosen without labels (post-hoc rules only);
    ``val_selected_tau`` the tau chosen on ``validation`` (the saved validation outputs, where the data set has a
    validation split; NaN without one, and for plain evaluation).
    """
    final_outputs = Outputs.from_saved(saved, keep_bias=keep_bias)
    final = tau_sweep(final_outputs, labels, train_counts, taus, evaluation)
    final.insert(0, "epoch", int(saved["final_epoch"]))
    final.insert(0, "model", "final")
    selection = "pn" if evaluation == "pn" else "plain"
    best = tau_sweep(Outputs.from_saved(saved, "best_epoch", selection, keep_bias), labels, train_counts,
                     [headline_tau(evaluation)], evaluation)
    best.insert(0, "epoch", int(saved[f"best_{selection}_epoch"]))
    best.insert(0, "model", "best_epoch")
    out = pd.concat([final, best], ignore_index=True)
    out["label_free_tau"] = (label_free_tau(final_outputs, taus, evaluation, train_counts)
                             if evaluation in POST_HOC else float("nan"))
    out["val_selected_tau"] = (
        val_selected_tau(Outputs.from_saved(validation, keep_bias=keep_bias), validation["labels"], train_counts,
                         taus, evaluation)
        if validation is not None and evaluation in POST_HOC else float("nan"))
    return out
