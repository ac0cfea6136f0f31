"""Figures for the report (matplotlib, PNG). Presentation code: reads result files, never trains.

Each function returns its Figure, so tests can inspect titles, axis labels, series and legends.

Readability rules every figure keeps (tests/test_plots.py checks them):

* one visual identity per training/variant name, the same in every figure (``_style``): a colour
  and a marker, so no two series of one panel look alike, also in greyscale or to a colour-blind
  reader; with more names than colours the line style and marker change too;
* small multiples, one panel per imbalance factor, instead of crowding many factors into one
  panel (12 lines in one panel cannot be told apart, whatever the palette);
* a legend on every panel with more than one series;
* log axes print plain numbers at 1-2-5 steps when they span few decades (``_readable_log_axis``),
  because matplotlib's default labels a narrow log range with overlapping minor labels such as
  "2×10² 3×10² 4×10²".
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node

import math  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# The names of the paper's variants and trainings, in a fixed order, so that a name keeps its colour
# in every figure (the BaGMar_pn training and the BaGMar_pn variant look the same). Names from other
# configs follow, in sorted order. The order puts the panels' usual companions far apart in colour:
# the trainings ce/BaGMar/BaGMar_pn are blue/orange/green, and ce_pn (beside BaGMar_pn in the tau
# sweep) is purple rather than tab10's red next to green. The comparison methods follow (their own colours).
KNOWN_NAMES = ("ce", "BaGMar", "BaGMar_pn", "ce_pn", "LA", "LDAM_DRW", "ce_la", "ce_tau_norm", "LA_pn",
               "LDAM_DRW_pn")
_COLOURS = tuple(plt.get_cmap("tab10").colors[i] for i in (0, 1, 2, 4, 3, 5, 6, 7, 8, 9))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", "-.", ":")


def _style(name: str, names) -> dict:
    """Colour, marker and line style of one training/variant name, among all names of the figure.

    The index is the name's place in KNOWN_NAMES, else after them in sorted order; the colour cycles
    through tab10, and every full cycle changes the line style, so the (colour, line style, marker)
    triple is distinct for up to 40 names.
    """
    unknown = sorted(n for n in set(names) if n not in KNOWN_NAMES)
    index = KNOWN_NAMES.index(name) if name in KNOWN_NAMES else len(KNOWN_NAMES) + unknown.index(name)
    cycle = index // len(_COLOURS)
    return {"color": _COLOURS[index % len(_COLOURS)], "marker": _MARKERS[(index + cycle) % len(_MARKERS)],
            "linestyle": _LINESTYLES[cycle % len(_LINESTYLES)]}


def _markevery(points: int) -> int:
    """Every how many points a line gets a marker: every point up to 25 (the tau grid's 21 points
    all show), else about 25 in all, so 200 epochs or 100 classes stay a line, not a row of beads."""
    return max(1, math.ceil(points / 25))


def _readable_log_axis(axis: Axis) -> None:
    """Tick labels of a log axis that neither repeat nor overlap, for the axis's current limits.

    Over three decades or fewer, the labels are plain numbers ("50 100 200 500") at 1-2-5 steps, with
    1-2-3-5 steps when the range is under one decade so it still gets a few labels; over wider ranges,
    matplotlib's decades (10^n). Minor ticks are never labelled. Call it after plotting, so that the
    limits are the data's.
    """
    low, high = sorted(abs(v) for v in axis.get_view_interval())
    decades = math.log10(high / low) if low > 0 else math.inf
    if decades <= 3:
        subs = (1.0, 2.0, 3.0, 5.0) if decades < 1 else (1.0, 2.0, 5.0)
        axis.set_major_locator(ticker.LogLocator(base=10, subs=subs))
        axis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    else:
        axis.set_major_locator(ticker.LogLocator(base=10))
        axis.set_major_formatter(ticker.LogFormatterSciNotation(base=10))
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=np.arange(2, 10)))
    axis.set_minor_formatter(ticker.NullFormatter())


def _grid(rows: int, columns: int, title: str, height: float = 3.6) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, height * rows), squeeze=False,
                             constrained_layout=True)
    fig.suptitle(title)
    return fig, axes


def nothing_to_draw(title: str, why: str) -> Figure:
    """A figure that says why it is empty (a run of released checkpoints only has no training curves)."""
    fig, axes = _grid(1, 1, title, height=1.6)
    axes[0, 0].axis("off")
    axes[0, 0].text(0.5, 0.5, why, ha="center", va="center", wrap=True)
    return fig


def _factors(frame: pd.DataFrame) -> list[float]:
    return sorted(frame["imbalance_factor"].unique(), reverse=True)


def tau_sweep(evaluations: pd.DataFrame, paper: dict | None = None) -> Figure:
    """Top-1 vs tau of every post-hoc variant's final model (PN, logit adjustment, tau-normalisation; mean
    over seeds), one panel per imbalance factor; the paper's fine-tuned PN tau as a vertical line."""
    pn = evaluations[(evaluations["evaluation"] != "plain") & (evaluations["model"] == "final")]
    factors = _factors(pn)
    names = pn["variant"].unique()
    paper = {float(k): v for k, v in (paper or {}).items()}
    fig, axes = _grid(1, len(factors), "Post-hoc rules: test top-1 vs τ (final-epoch model)")
    for ax, factor in zip(axes[0], factors):
        for variant, rows in pn[pn["imbalance_factor"] == factor].groupby("variant", sort=False):
            curve = rows.groupby("tau")["top1"].mean()
            ax.plot(curve.index, curve.values, markersize=3.5, markevery=_markevery(len(curve)), label=variant,
                    **_style(variant, names))
        if factor in paper:
            ax.axvline(paper[factor]["tau"], color="grey", linestyle="--", label=f"paper τ = {paper[factor]['tau']:g}")
        ax.set(title=f"IF {factor:g}", xlabel="τ", ylabel="top-1 accuracy (%)")
        ax.legend(fontsize="small")
    return fig


def per_class_accuracy(per_class: pd.DataFrame) -> Figure:
    """Per-class test accuracy against the class's training count, one panel per imbalance factor.

    The count axis is logarithmic; at small imbalance factors it spans about one decade, hence
    ``_readable_log_axis``.
    """
    factors = _factors(per_class)
    names = per_class["variant"].unique()
    fig, axes = _grid(1, len(factors), "Per-class test accuracy vs training images (final model, headline τ)")
    for ax, factor in zip(axes[0], factors):
        rows = per_class[per_class["imbalance_factor"] == factor]
        for variant, v in rows.groupby("variant", sort=False):
            mean = v.groupby("train_count")["accuracy"].mean()
            style = _style(variant, names)
            ax.scatter(mean.index, mean.values, s=16, alpha=0.75, label=variant, color=style["color"],
                       marker=style["marker"])
        ax.set(title=f"IF {factor:g}", xlabel="training images of the class", ylabel="test accuracy (%)", xscale="log")
        _readable_log_axis(ax.xaxis)
        ax.legend(fontsize="small")
    return fig


def training_curves(metrics: pd.DataFrame) -> Figure:
    """Training loss (top row) and test accuracy (bottom row) per epoch, seed mean, one column per
    imbalance factor and one line per training.

    Small multiples: one panel with a line per training and imbalance factor held 12 near-identical
    lines that no palette could tell apart. Rows share their y axis so the factors compare at a glance.
    """
    factors = _factors(metrics)
    names = metrics["training"].unique()
    fig, axes = _grid(2, len(factors), "Training curves (mean over seeds)", height=3.2)
    for row in axes:  # one y scale per row; Axes.sharey keeps every panel's tick labels, unlike subplots(sharey=)
        for ax in row[1:]:
            ax.sharey(row[0])
    for column, factor in enumerate(factors):
        loss_ax, acc_ax = axes[0, column], axes[1, column]
        for training, rows in metrics[metrics["imbalance_factor"] == factor].groupby("training", sort=False):
            curve = rows.groupby("epoch")[["train_loss", "test_acc"]].mean()
            style = _style(training, names)
            marks = {"markersize": 3.5, "markevery": _markevery(len(curve))}
            loss_ax.plot(curve.index, curve["train_loss"], label=training, **marks, **style)
            acc_ax.plot(curve.index, curve["test_acc"], label=training, **marks, **style)
        loss_ax.set(title=f"IF {factor:g}: training loss", xlabel="epoch", ylabel="loss (on adjusted logits)")
        acc_ax.set(title=f"IF {factor:g}: test top-1", xlabel="epoch", ylabel="accuracy (%, plain argmax)")
        for ax in (loss_ax, acc_ax):
            ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # epochs are whole numbers
            ax.legend(fontsize="small")
    return fig


def theta_per_class(theta: pd.DataFrame) -> Figure:
    """BaGMar's accumulated positive gradient theta per class at the end of training, CE vs BaGMar.

    theta is shown on a log axis; at small imbalance factors it spans about one decade, hence
    ``_readable_log_axis``.
    """
    factors = _factors(theta)
    names = theta["training"].unique()
    fig, axes = _grid(1, len(factors), "θ (accumulated positive gradient) per class at the end of training")
    for ax, factor in zip(axes[0], factors):
        for training, rows in theta[theta["imbalance_factor"] == factor].groupby("training", sort=False):
            mean = rows.groupby("class")["theta"].mean()
            ax.plot(mean.index, mean.values, markersize=3.5, markevery=_markevery(len(mean)), label=training,
                    **_style(training, names))
        ax.set(title=f"IF {factor:g}", xlabel="class (head → tail)", ylabel="θ", yscale="log")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # class indices are whole numbers
        _readable_log_axis(ax.yaxis)
        ax.legend(fontsize="small")
    return fig


def methods(table: pd.DataFrame) -> Figure:
    """Final-epoch top-1 of every variant, one panel per imbalance factor: a bar per variant (mean over
    seeds, in its own colour) with ± one standard deviation as a black range, and a cross at the
    published figure where a source gives one (bagmar.evaluation.tables.methods_table)."""
    factors = _factors(table)
    names = list(dict.fromkeys(table["variant"]))
    seeds = int(table["n_seeds"].max())
    fig, axes = _grid(1, len(factors), "Top-1 of every method (final epoch"
                      + (f", mean ± std over {seeds} seeds)" if seeds > 1 else ", one seed)"),
                      height=0.32 * len(names) + 1.6)
    for ax, factor in zip(axes[0], factors):
        rows = table[table["imbalance_factor"] == factor].set_index("variant").reindex(names)
        where = np.arange(len(names))
        ax.barh(where, rows["top1"], height=0.7, color=[_style(name, names)["color"] for name in names])
        if seeds > 1:
            spread = rows["top1_std"].fillna(0.0)
            ax.hlines(where, rows["top1"] - spread, rows["top1"] + spread, color="black", linewidth=1.5,
                      label=f"± std over {seeds} seeds")
        if rows["published_top1"].notna().any():
            ax.scatter(rows["published_top1"], where, marker="x", s=40, color="black", zorder=3, label="published")
        ax.set_yticks(where, names)
        ax.invert_yaxis()  # the config's order, top down
        ax.set(title=f"IF {factor:g}", xlabel="top-1 accuracy (%)", ylabel="variant")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:  # one legend for all panels, below them, where it hides no bar
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), fontsize="small")
    return fig
