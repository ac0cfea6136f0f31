"""Figures for the report (matplotlib, PNG). Presentation code: reads result files, never trains.

Each function returns its Figure, so tests can inspect titles and axis labels.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def _grid(n: int, title: str) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False, constrained_layout=True)
    fig.suptitle(title)
    return fig, axes[0]


def tau_sweep(evaluations: pd.DataFrame, paper: dict | None = None) -> Figure:
    """Top-1 vs tau of every PN variant's final model (mean over seeds), one panel per imbalance factor."""
    pn = evaluations[(evaluations["evaluation"] == "pn") & (evaluations["model"] == "final")]
    factors = sorted(pn["imbalance_factor"].unique(), reverse=True)
    paper = {float(k): v for k, v in (paper or {}).items()}
    fig, axes = _grid(len(factors), "PN: test top-1 vs τ (final-epoch model)")
    for ax, factor in zip(axes, factors):
        for variant, rows in pn[pn["imbalance_factor"] == factor].groupby("variant", sort=False):
            curve = rows.groupby("tau")["top1"].mean()
            ax.plot(curve.index, curve.values, marker=".", label=variant)
        if factor in paper:
            ax.axvline(paper[factor]["tau"], color="grey", linestyle="--", label=f"paper τ = {paper[factor]['tau']:g}")
        ax.set(title=f"IF {factor:g}", xlabel="τ", ylabel="top-1 accuracy (%)")
        ax.legend(fontsize="small")
    return fig


def per_class_accuracy(per_class: pd.DataFrame) -> Figure:
    """Per-class test accuracy against the class's training count, one panel per imbalance factor."""
    factors = sorted(per_class["imbalance_factor"].unique(), reverse=True)
    fig, axes = _grid(len(factors), "Per-class test accuracy vs training images (final model, headline τ)")
    for ax, factor in zip(axes, factors):
        rows = per_class[per_class["imbalance_factor"] == factor]
        for variant, v in rows.groupby("variant", sort=False):
            mean = v.groupby("train_count")["accuracy"].mean()
            ax.scatter(mean.index, mean.values, s=10, alpha=0.7, label=variant)
        ax.set(title=f"IF {factor:g}", xlabel="training images of the class", ylabel="test accuracy (%)", xscale="log")
        ax.legend(fontsize="small")
    return fig


def training_curves(metrics: pd.DataFrame) -> Figure:
    """Training loss and test accuracy per epoch, one line per training and imbalance factor (seed mean)."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    fig.suptitle("Training curves (mean over seeds)")
    for (training, factor), rows in metrics.groupby(["training", "imbalance_factor"], sort=False):
        curve = rows.groupby("epoch")[["train_loss", "test_acc"]].mean()
        label = f"{training}, IF {factor:g}"
        loss_ax.plot(curve.index, curve["train_loss"], label=label)
        acc_ax.plot(curve.index, curve["test_acc"], label=label)
    loss_ax.set(title="training loss (on adjusted logits)", xlabel="epoch", ylabel="loss")
    acc_ax.set(title="test top-1 (plain argmax)", xlabel="epoch", ylabel="accuracy (%)")
    acc_ax.legend(fontsize="x-small", ncol=2)
    return fig


def theta_per_class(theta: pd.DataFrame) -> Figure:
    """BaGMar's accumulated positive gradient theta per class at the end of training, CE vs BaGMar."""
    factors = sorted(theta["imbalance_factor"].unique(), reverse=True)
    fig, axes = _grid(len(factors), "θ (accumulated positive gradient) per class at the end of training")
    for ax, factor in zip(axes, factors):
        for training, rows in theta[theta["imbalance_factor"] == factor].groupby("training", sort=False):
            mean = rows.groupby("class")["theta"].mean()
            ax.plot(mean.index, mean.values, label=training)
        ax.set(title=f"IF {factor:g}", xlabel="class (head → tail)", ylabel="θ", yscale="log")
        ax.legend(fontsize="small")
    return fig
