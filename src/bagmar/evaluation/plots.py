"""Figures for the report (matplotlib, PNG). Presentation code: reads result files, never trains.

Each function returns its Figure, so tests can inspect titles, axis labels, series and legends.

Readability rules every figure keeps (tests/test_plots.py checks them):

* one visual identity per training/variant name, the same in every figure (``_style``): a colour
  and a marker, so no two series of one panel look alike, also in greyscale or to a colour-blind
  reader; with more names than colours the line style and marker change too;
* small multiples, one panel per imbalance factor, instead of crowding many factors into one
  panel (12 lines in one panel cannot be told apart, whatever the palette);
* a legend naming every series, outside the data area (``_legend_below``: one legend for the figure,
  below its panels), so that no legend hides a point; the figure grows to hold it;
* one y scale per loss where the losses' scales differ (``_scale_groups``): a loss of 7 to 17 drawn with
  losses of 1 to 3 flattens them into one line;
* series that coincide are drawn so that each still shows (``theta_per_class``: widening stripes and
  staggered markers), and the figure says why they coincide;
* log axes print plain numbers at 1-2-5 steps when they span few decades (``_readable_log_axis``),
  because matplotlib's default labels a narrow log range with overlapping minor labels such as
  "2×10² 3×10² 4×10²".
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node

import math  # noqa: E402
import textwrap  # noqa: E402

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
    fig.suptitle(textwrap.fill(title, width=int(4.2 * columns * 11)))  # one panel's width holds ~46 characters
    return fig, axes


def _order(label: str) -> tuple:
    """Legend order: the names in KNOWN_NAMES' order, then every other label (other names, reference lines) sorted."""
    if label in KNOWN_NAMES:
        return 0, KNOWN_NAMES.index(label), ""
    return 1, 0, label


def _legend_below(fig: Figure, axes: np.ndarray, title: str | None = None) -> None:
    """One legend for the whole figure, below its panels, where it hides no data: every label drawn in any panel,
    once, in a fixed order, in as many columns as the figure's width holds. The figure grows by the legend's
    height (constrained layout puts it there), so the panels keep theirs; ``title``, a note above the entries,
    is wrapped to the figure's width."""
    handles: dict[str, object] = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if not handles:
        return
    width, height = fig.get_size_inches()
    labels = sorted(handles, key=_order)
    ncols = min(len(labels), max(1, int(width // 1.6)))
    if title:
        title = "\n".join(textwrap.fill(line, width=int(width * 14)) for line in title.splitlines())
    lines = math.ceil(len(labels) / ncols) + (title.count("\n") + 1 if title else 0)
    fig.set_size_inches(width, height + 0.3 + 0.24 * lines)
    fig.legend([handles[label] for label in labels], labels, loc="outside lower center", ncols=ncols,
               fontsize="small", title=title, title_fontsize="small")


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
    over seeds), one panel per imbalance factor; the paper's fine-tuned PN tau as a vertical line (its value in
    the panel's title); where the data set has a validation list, a star on each curve at each seed's
    val-selected tau (that seed's test top-1 there). The legend is below the panels, so no curve's peak hides
    behind it."""
    pn = evaluations[(evaluations["evaluation"] != "plain") & (evaluations["model"] == "final")]
    factors = _factors(pn)
    names = pn["variant"].unique()
    paper = {float(k): v for k, v in (paper or {}).items()}
    fig, axes = _grid(1, len(factors), "Post-hoc rules: test top-1 vs τ (final-epoch model)")
    star = dict(linestyle="none", marker="*", markersize=11, markeredgecolor="black", markeredgewidth=0.5)
    for ax, factor in zip(axes[0], factors):
        starred = False
        for variant, rows in pn[pn["imbalance_factor"] == factor].groupby("variant", sort=False):
            curve = rows.groupby("tau")["top1"].mean()
            (line,) = ax.plot(curve.index, curve.values, markersize=3.5, markevery=_markevery(len(curve)),
                              label=variant, **_style(variant, names))
            if "val_selected_tau" in rows and rows["val_selected_tau"].notna().any():
                chosen = rows[np.isclose(rows["tau"], rows["val_selected_tau"])]
                ax.plot(chosen["tau"], chosen["top1"], color=line.get_color(), label="_nolegend_", **star)
                starred = True
        if starred:  # one legend entry for the stars, in no variant's colour
            ax.plot([], [], color="white", label="val-selected τ (a seed's test top-1 there)", **star)
        title = f"IF {factor:g}"
        if factor in paper:
            ax.axvline(paper[factor]["tau"], color="grey", linestyle="--", label="paper's fine-tuned τ")
            title += f" (paper τ = {paper[factor]['tau']:g})"
        ax.set(title=title, xlabel="τ", ylabel="top-1 accuracy (%)")
    _legend_below(fig, axes)
    return fig


# per_class_accuracy's rows: the variants by their evaluation rule (bagmar.evaluation.evaluate), PN's beside
# each other; the other post-hoc rules share a row
_RULE_ROWS = {"plain": "plain argmax", "pn": "PN, τ = 1"}
_OTHER_RULES = "other post-hoc rules, τ = 1"


def per_class_accuracy(per_class: pd.DataFrame) -> Figure:
    """Per-class test accuracy against the class's training count, one column per imbalance factor and, where
    the frame says each variant's evaluation, one row per evaluation rule (plain argmax, PN, the other post-hoc
    rules), so that a panel holds a few series rather than ten. Each variant's points are joined, faintly, in
    order of the class count, so that a series can be followed through the others.

    The count axis is logarithmic; at small imbalance factors it spans about one decade, hence
    ``_readable_log_axis``.
    """
    factors = _factors(per_class)
    names = per_class["variant"].unique()
    if "evaluation" in per_class:
        kind = per_class["evaluation"].map(lambda e: _RULE_ROWS.get(e, _OTHER_RULES)).to_numpy()
    else:  # a frame without the evaluation column: one row
        kind = np.full(len(per_class), "")
    rows_of = [k for k in (*_RULE_ROWS.values(), _OTHER_RULES, "") if (kind == k).any()]
    fig, axes = _grid(len(rows_of), len(factors),
                      "Per-class test accuracy vs training images (final model, headline τ)", height=3.0)
    for rule, row in zip(rows_of, axes):
        for ax, factor in zip(row, factors):
            rows = per_class[(kind == rule) & (per_class["imbalance_factor"] == factor)]
            for variant, v in rows.groupby("variant", sort=False):
                mean = v.groupby("train_count")["accuracy"].mean()
                style = _style(variant, names)
                faint, solid = (*style["color"][:3], 0.35), (*style["color"][:3], 0.9)  # the line faint, its points not
                ax.plot(mean.index, mean.values, label=variant, linewidth=0.8, markersize=4.5, color=faint,
                        marker=style["marker"], linestyle=style["linestyle"], markerfacecolor=solid,
                        markeredgecolor=solid, markeredgewidth=0.5)
            title = f"IF {factor:g}" + (f": {rule}" if len(rows_of) > 1 else "")
            ax.set(title=title, xlabel="training images of the class", ylabel="test accuracy (%)", xscale="log",
                   ylim=(-5, 105))
            _readable_log_axis(ax.xaxis)
    _legend_below(fig, axes)
    return fig


def headline_per_class(per_class: pd.DataFrame, headline: str, baseline: str = "ce") -> Figure:
    """The long tail at a glance: per-class test accuracy of the baseline (cross-entropy, argmax) and the headline
    variant, as bars side by side, classes from the most to the fewest training images, one panel per imbalance
    factor (the mean over seeds). Says so, on an empty figure, when the run lacks either variant."""
    title = f"Per-class test accuracy: {baseline} vs {headline} (final model)"
    missing = [v for v in (baseline, headline) if v not in set(per_class["variant"])]
    if missing:
        return nothing_to_draw(title, f"the run has no variant named {_names(missing)}")
    factors = _factors(per_class)
    fig, axes = _grid(1, len(factors), title, height=3.4)
    for ax, factor in zip(axes[0], factors):
        rows = per_class[per_class["imbalance_factor"] == factor]
        by_class = {v: rows[rows["variant"] == v].groupby("class").agg(count=("train_count", "first"),
                                                                          accuracy=("accuracy", "mean"))
                    for v in (baseline, headline)}
        order = by_class[baseline].sort_values("count", ascending=False, kind="stable").index
        x = np.arange(len(order))
        width = 0.4
        for offset, variant in ((-width / 2, baseline), (width / 2, headline)):
            style = _style(variant, [baseline, headline])
            ax.bar(x + offset, by_class[variant].loc[order, "accuracy"], width, label=variant,
                   color=style["color"])
        counts = by_class[baseline].loc[order, "count"].to_numpy()
        ticks = []  # at most 10, each count once
        for i in range(0, len(order), max(1, math.ceil(len(order) / 10))):
            if not ticks or counts[ticks[-1]] != counts[i]:
                ticks.append(i)
        ax.set_xticks(x[ticks], [f"{counts[i]:g}" for i in ticks], rotation=45)
        ax.set(title=f"IF {factor:g}", xlabel="classes, by training images (count shown)", ylabel="test accuracy (%)",
               ylim=(0, 100))
    _legend_below(fig, axes)
    return fig


def _scale_groups(curves: dict[str, np.ndarray], squash: float = 3.0) -> list[list[str]]:
    """The names whose values can share one y axis: names sorted by their median, each joining the group
    before it unless the group's joint range would be more than ``squash`` times a member's own range (then
    that member would be flattened into a near-straight line). A range is at least a tenth of its median's size,
    so that a flat or one-point curve does not stand alone for that alone."""
    def extent(values: np.ndarray) -> float:
        return max(float(np.ptp(values)), 0.1 * abs(float(np.median(values))), 1e-12)

    groups: list[list[str]] = []
    for name in sorted(curves, key=lambda n: (float(np.median(curves[n])), _order(n))):
        if groups:
            joint = np.concatenate([curves[n] for n in (*groups[-1], name)])
            if float(np.ptp(joint)) <= squash * min(extent(curves[n]) for n in (*groups[-1], name)):
                groups[-1].append(name)
                continue
        groups.append([name])
    return groups


def training_curves(metrics: pd.DataFrame) -> Figure:
    """Training loss (top rows) and test accuracy (bottom row) per epoch, seed mean, one column per
    imbalance factor and one line per training.

    Small multiples: one panel with a line per training and imbalance factor held 12 near-identical
    lines that no palette could tell apart. The losses differ in kind (LDAM-DRW's scaled margins run from 7 to
    17, the others from 1 to 3), so each group of losses on a like scale has its own row (``_scale_groups``);
    a row shares its y axis, so the factors compare at a glance, and so does the accuracy row.
    """
    factors = _factors(metrics)
    names = metrics["training"].unique()
    means = metrics.groupby(["training", "imbalance_factor", "epoch"])[["train_loss", "test_acc"]].mean()
    groups = _scale_groups({t: means.loc[t, "train_loss"].to_numpy() for t in names})
    fig, axes = _grid(len(groups) + 1, len(factors), "Training curves (mean over seeds)", height=2.8)
    for row in axes:  # one y scale per row; Axes.sharey keeps every panel's tick labels, unlike subplots(sharey=)
        for ax in row[1:]:
            ax.sharey(row[0])
    for column, factor in enumerate(factors):
        acc_ax = axes[-1, column]
        for group, loss_ax in zip(groups, axes[:-1, column]):
            for training in group:
                if (training, factor) not in means.index.droplevel("epoch"):
                    continue
                curve = means.loc[(training, factor)]
                style = _style(training, names)
                loss_ax.plot(curve.index, curve["train_loss"], label=training, markersize=3.5,
                             markevery=_markevery(len(curve)), **style)
            which = f" of {group[0]}" if len(group) == 1 and len(groups) > 1 else ""
            loss_ax.set(title=f"IF {factor:g}: training loss{which}", xlabel="epoch",
                        ylabel="loss (on adjusted logits)")
        for training in names:
            if (training, factor) not in means.index.droplevel("epoch"):
                continue
            curve = means.loc[(training, factor)]
            acc_ax.plot(curve.index, curve["test_acc"], label=training, markersize=3.5,
                        markevery=_markevery(len(curve)), **_style(training, names))
        acc_ax.set(title=f"IF {factor:g}: test top-1", xlabel="epoch", ylabel="accuracy (%, plain argmax)")
    for ax in axes.ravel():
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # epochs are whole numbers
    _legend_below(fig, axes, title=("losses on unlike scales have rows of their own" if len(groups) > 1 else None))
    return fig


def _coinciding(curves: dict[str, pd.Series], within: float = 0.25) -> list[tuple[list[str], float]]:
    """Groups of names whose curves nearly coincide: each joined to a group holding a name it stays within a
    factor ``1 + within`` of at every point they share (on any panel); with the largest such gap of the group."""
    def gap(a: str, b: str) -> float:
        both = pd.concat([curves[a], curves[b]], axis=1, join="inner").to_numpy()
        both = both[(both > 0).all(axis=1)]
        return float(np.max(np.abs(np.log(both[:, 0] / both[:, 1])))) if len(both) else math.inf

    groups: list[list[str]] = []
    for name in sorted(curves, key=_order):
        near = [g for g in groups if any(gap(name, other) <= math.log1p(within) for other in g)]
        joined = [name]
        for g in near:  # the name joins the groups it is near to into one
            joined.extend(g)
            groups.remove(g)
        groups.append(joined)
    return [(sorted(g, key=_order), max(gap(a, b) for a in g for b in g)) for g in groups if len(g) > 1]


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def theta_per_class(theta: pd.DataFrame) -> Figure:
    """BaGMar's accumulated positive gradient theta per class at the end of training, CE vs BaGMar.

    theta is shown on a log axis; at small imbalance factors it spans about one decade, hence
    ``_readable_log_axis``. θ follows each class's training count whatever the loss, so several trainings'
    curves nearly coincide: each is drawn wider than the one drawn after it (a stack of stripes) and with its
    markers at other classes than theirs, so that every training shows, and the legend's title names the
    trainings that coincide and by how much.
    """
    factors = _factors(theta)
    names = theta["training"].unique()
    means = theta.groupby(["training", "imbalance_factor", "class"])["theta"].mean()
    fig, axes = _grid(1, len(factors), "θ (accumulated positive gradient) per class at the end of training")
    drawn = sorted(names, key=_order)
    for ax, factor in zip(axes[0], factors):
        present = [t for t in drawn if (t, factor) in means.index.droplevel("class")]
        step = max(len(present), _markevery(theta["class"].nunique()))
        widths = np.linspace(5.6, 1.2, len(present)) if len(present) > 1 else [1.5]  # the first drawn, the widest
        for i, (training, width) in enumerate(zip(present, widths)):
            mean = means.loc[(training, factor)]
            ax.plot(mean.index, mean.values, markersize=5.5, markevery=(i % step, step), label=training,
                    linewidth=width, alpha=0.9, solid_capstyle="butt", **_style(training, names))
        ax.set(title=f"IF {factor:g}", xlabel="class (head → tail)", ylabel="θ", yscale="log")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))  # class indices are whole numbers
        _readable_log_axis(ax.yaxis)
    notes = [f"{_names(group)} nearly coincide (at most {math.expm1(gap):.0%} apart at any class)"
             for group, gap in _coinciding({t: means.loc[t] for t in drawn})]
    note = None
    if notes:
        note = ("; ".join(notes) + ": θ follows each class's training count, whatever the loss. "
                "Wider lines are drawn first and the markers are staggered, so that each training shows.")
    _legend_below(fig, axes, title=note)
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
