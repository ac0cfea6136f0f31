"""Figures a reader can trust at a glance.

No two series of one panel look alike, every panel with more than one series has a legend naming
them all, and tick labels neither repeat nor overlap (the narrow log axis of IF 10 used to read
"2×10² 3×10² 4×10²" on top of each other). ``check_readable`` is the check; the figures here come from
synthetic frames shaped like the 2-seed demo's result files (the columns scripts/plots.py passes),
so no pipeline runs.
"""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from matplotlib.colors import to_hex

from bagmar.evaluation import plots
from bagmar.data.long_tail import long_tailed_counts

FACTORS = [200.0, 100.0, 50.0, 10.0]
TRAININGS = ["ce", "BaGMar", "BaGMar_pn"]
VARIANTS = {"ce": ("ce", "plain"), "ce_pn": ("ce", "pn"), "BaGMar": ("BaGMar", "plain"),
            "BaGMar_pn": ("BaGMar_pn", "pn")}
SEEDS = [0, 1]
NUM_CLASSES, TRAIN_PER_CLASS, EPOCHS = 20, 500, 5  # config/demo.yaml's synthetic data set and recipe
TAUS = [round(0.1 * i, 1) for i in range(21)]  # config/demo.yaml's tau grid
PAPER = {200: {"tau": 1.5}, 100: {"tau": 1.5}, 50: {"tau": 0.9}, 10: {"tau": 1.1}}
MAX_TICK_LABELS = 12


def demo_frames(max_per_class: int = TRAIN_PER_CLASS) -> dict[str, pd.DataFrame]:
    """The four inputs of scripts/plots.py for the demo's shape: 4 imbalance factors, 3 trainings,
    4 variants, 2 seeds, 20 long-tailed classes. The values are made up; the shapes are the demo's."""
    rng = np.random.default_rng(0)
    evaluations, per_class, metrics, theta = [], [], [], []
    for factor in FACTORS:
        counts = long_tailed_counts(NUM_CLASSES, max_per_class, factor)
        for seed in SEEDS:
            for variant, (_, evaluation) in VARIANTS.items():
                common = {"variant": variant, "imbalance_factor": factor, "seed": seed, "evaluation": evaluation}
                lf_tau = 1.0 if evaluation == "pn" else float("nan")
                for tau in TAUS if evaluation == "pn" else [0.0]:
                    top1 = 40 - 8 * np.log10(factor) + 10 * tau - 4 * tau**2 + rng.normal(0, 1)
                    evaluations.append({**common, "model": "final", "epoch": EPOCHS, "tau": tau, "top1": top1,
                                        "many": 60.0, "medium": 40.0, "few": 10.0, "label_free_tau": lf_tau})
                evaluations.append({**common, "model": "best_epoch", "epoch": EPOCHS - 1,
                                    "tau": 1.0 if evaluation == "pn" else 0.0, "top1": 40.0, "many": 60.0,
                                    "medium": 40.0, "few": 10.0, "label_free_tau": float("nan")})
                for c, n in enumerate(counts):
                    accuracy = float(np.clip(20 * np.log10(n) + rng.normal(0, 8), 0, 100))
                    per_class.append({"class": c, "train_count": n, "group": "many", "accuracy": accuracy,
                                      "variant": variant, "imbalance_factor": factor, "seed": seed})
            for training in TRAININGS:
                for epoch in range(1, EPOCHS + 1):
                    metrics.append({"epoch": epoch, "lr": 0.1, "train_loss": 3 / epoch + rng.normal(0, 0.05),
                                    "train_acc": 50.0, "test_acc": 10 * epoch + rng.normal(0, 1),
                                    "test_acc_pn": 10 * epoch, "seconds": 1.0,
                                    "training": training, "imbalance_factor": factor, "seed": seed})
                for c, n in enumerate(counts):
                    theta.append({"class": c, "theta": n * (1 + rng.random()), "training": training,
                                  "imbalance_factor": factor, "seed": seed})
    return {"evaluations": pd.DataFrame(evaluations), "per_class": pd.DataFrame(per_class),
            "metrics": pd.DataFrame(metrics), "theta": pd.DataFrame(theta)}


def demo_figures(frames: dict[str, pd.DataFrame], paper: dict | None = None) -> dict[str, plt.Figure]:
    """The four figures as scripts/plots.py makes them (same names as its PNGs)."""
    return {"tau_sweep": plots.tau_sweep(frames["evaluations"], paper),
            "per_class": plots.per_class_accuracy(frames["per_class"]),
            "training_curves": plots.training_curves(frames["metrics"]),
            "theta": plots.theta_per_class(frames["theta"]),
            "methods": plots.methods(methods_frame(frames["evaluations"]))}


def methods_frame(evaluations: pd.DataFrame) -> pd.DataFrame:
    """The methods table's columns that plots.methods reads, from the made-up evaluations, with a
    published figure for one variant."""
    final = evaluations[evaluations["model"] == "final"]
    headline = final[np.isclose(final["tau"], np.where(final["evaluation"] == "pn", 1.0, 0.0))]
    grouped = headline.groupby(["variant", "imbalance_factor"], sort=False)["top1"]
    frame = grouped.mean().to_frame().join(grouped.std().rename("top1_std")).join(grouped.size().rename("n_seeds"))
    frame = frame.reset_index()
    frame["published_top1"] = np.where(frame["variant"] == "ce", 41.0, np.nan)
    return frame


def _look(artist) -> tuple:
    """What tells a series apart on the page: colour, line style and marker."""
    if hasattr(artist, "get_linestyle") and hasattr(artist, "get_marker"):  # Line2D
        return to_hex(artist.get_color()), artist.get_linestyle(), artist.get_marker()
    if not len(artist.get_facecolor()):  # a LineCollection (ranges drawn with hlines): its colour and style
        return to_hex(artist.get_edgecolor()[0]), "lines", str(artist.get_linestyle())
    # a scatter's PathCollection: its colour and the shape of its marker
    shape = tuple(np.round(artist.get_paths()[0].vertices, 3).ravel()) if artist.get_paths() else ()
    return to_hex(artist.get_facecolor()[0]), "scatter", shape


def _tick_labels(axis) -> list:
    """The tick labels actually drawn on one axis (major and minor): inside the view and not blank."""
    low, high = sorted(axis.get_view_interval())
    span = high - low
    drawn = []
    for locs, labels in [(axis.get_majorticklocs(), axis.get_majorticklabels()),
                         (axis.get_minorticklocs(), axis.get_minorticklabels())]:
        for loc, label in zip(locs, labels):
            inside = low - 1e-9 * span <= loc <= high + 1e-9 * span
            if inside and label.get_visible() and label.get_text().strip():
                drawn.append(label)
    return drawn


def check_readable(figure: plt.Figure) -> list[str]:
    """Everything unreadable about a figure, as sentences (an empty list: none).

    Per axes: no two series (lines and scatters) share colour, line style and marker; more than one
    series means a legend (the axes' own, or a figure legend) that names each series once (marks on a series
    in its colour, labelled "_nolegend_", are part of it, e.g. tau_sweep's val-selected stars), and no legend
    lies over any panel (legends go outside the data area); the drawn tick labels of each axis are unique,
    2 to MAX_TICK_LABELS of them, and do not overlap.
    """
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    problems = []
    for ax in figure.axes:
        where = f"{figure.get_suptitle()!r} / {ax.get_title()!r}"
        series = [a for a in [*ax.get_lines(), *ax.collections] if a.get_label() != "_nolegend_"]
        looks = [_look(a) for a in series]
        for a, b in combinations(range(len(series)), 2):
            if looks[a] == looks[b]:
                problems.append(f"{where}: {series[a].get_label()!r} and {series[b].get_label()!r} look the same "
                                f"{looks[a][:2]}")
        if len(series) > 1:
            legends = [legend for legend in [ax.get_legend(), *figure.legends] if legend is not None]
            if not legends:
                problems.append(f"{where}: {len(series)} series and no legend")
            else:
                texts = [t.get_text() for legend in legends for t in legend.get_texts()]
                labels = [a.get_label() for a in series]
                if len(set(texts)) != len(texts):
                    problems.append(f"{where}: the legend repeats an entry: {texts}")
                missing = [label for label in labels if label not in texts]
                if missing or len(set(labels)) != len(labels):
                    problems.append(f"{where}: the legend does not name every series once: {labels} vs {texts}")
        for legend in [ax.get_legend(), *figure.legends]:
            if legend is not None and any(legend.get_window_extent(renderer).overlaps(other.bbox)
                                          for other in figure.axes):
                problems.append(f"{where}: a legend lies over a panel's data area")
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = _tick_labels(axis)
            texts = [label.get_text() for label in labels]
            if len(set(texts)) != len(texts):
                problems.append(f"{where}: {name} tick labels repeat: {texts}")
            if not 2 <= len(texts) <= MAX_TICK_LABELS:
                problems.append(f"{where}: {len(texts)} {name} tick labels: {texts}")
            boxes = [label.get_window_extent(renderer) for label in labels]
            for a, b in combinations(range(len(labels)), 2):
                if boxes[a].overlaps(boxes[b]):
                    problems.append(f"{where}: {name} tick labels {texts[a]!r} and {texts[b]!r} overlap")
    return problems


@pytest.fixture(scope="module")
def figures():
    made = demo_figures(demo_frames(), PAPER)
    yield made
    for figure in made.values():
        plt.close(figure)


@pytest.mark.parametrize("name", ["tau_sweep", "per_class", "training_curves", "theta"])
def test_demo_figures_are_readable(figures, name):
    assert check_readable(figures[name]) == []


def test_figures_without_paper_taus_are_readable():
    figure = plots.tau_sweep(demo_frames()["evaluations"])
    assert check_readable(figure) == []
    plt.close(figure)


def test_the_tau_sweep_stars_each_seeds_val_selected_tau_where_there_is_one():
    """A data set with a validation list: one star per post-hoc variant and seed, at its val-selected tau and that
    seed's test top-1 there, in the variant's colour, and one legend entry for them all; none without one."""
    evaluations = demo_frames()["evaluations"]
    chosen = {seed: 0.6 + 0.2 * i for i, seed in enumerate(SEEDS)}
    with_val = evaluations.assign(val_selected_tau=np.where(evaluations["evaluation"] == "pn",
                                                            evaluations["seed"].map(chosen), np.nan))
    figure = plots.tau_sweep(with_val)
    assert check_readable(figure) == []
    pn_variants = [v for v, (_, evaluation) in VARIANTS.items() if evaluation == "pn"]
    for ax, factor in zip(figure.axes, FACTORS):
        stars = [line for line in ax.lines if line.get_marker() == "*" and len(line.get_xdata())]
        assert len(stars) == len(pn_variants)
        for star, variant in zip(stars, pn_variants):
            rows = with_val[(with_val["variant"] == variant) & (with_val["imbalance_factor"] == factor)
                            & (with_val["model"] == "final")]
            expected = rows[np.isclose(rows["tau"], rows["val_selected_tau"])].sort_values("seed")
            assert sorted(zip(star.get_xdata(), star.get_ydata())) == sorted(zip(expected["tau"], expected["top1"]))
    labels = figure.legends[0].get_texts()
    assert sum("val-selected τ" in label.get_text() for label in labels) == 1
    plt.close(figure)
    without = plots.tau_sweep(evaluations)
    assert not any(line.get_marker() == "*" for ax in without.axes for line in ax.lines)
    plt.close(without)


@pytest.mark.parametrize("max_per_class", [200, 5000])  # a narrower range still; CIFAR's head class
def test_narrow_and_wide_log_axes_have_plain_unique_labels(max_per_class):
    frames = demo_frames(max_per_class)
    for figure in (plots.per_class_accuracy(frames["per_class"]), plots.theta_per_class(frames["theta"])):
        assert check_readable(figure) == []
        plt.close(figure)


def test_the_if_10_count_axis_reads_as_plain_numbers(figures):
    """The panel of class counts: counts 50..500 on a log axis, labelled 50 100 200 500, no 10^n."""
    figures["per_class"].canvas.draw()
    ax = next(ax for ax in figures["per_class"].axes if ax.get_title() == "IF 10")
    texts = [label.get_text() for label in _tick_labels(ax.xaxis)]
    assert texts == ["50", "100", "200", "500"]


def test_one_name_keeps_its_look_in_every_figure(figures):
    looks = {}
    for figure in figures.values():
        for ax in figure.axes:
            for artist in [*ax.get_lines(), *ax.collections]:
                looks.setdefault(artist.get_label(), set()).add(_look(artist)[0])  # the colour
    assert all(len(colours) == 1 for colours in looks.values()), looks


def test_the_check_catches_lookalikes_missing_legends_and_crowded_ticks():
    figure, (same, crowded) = plt.subplots(1, 2, figsize=(4, 3))
    same.plot([1, 2], [1, 2], color="C0", label="a")
    same.plot([1, 2], [2, 1], color="C0", label="b")
    crowded.scatter([1, 2], [1, 2], label="a")
    crowded.scatter([1, 2], [2, 1], label="b")
    crowded.set_xticks(np.linspace(1, 2, 40), [f"{v:.4f}" for v in np.linspace(1, 2, 40)])
    problems = check_readable(figure)
    plt.close(figure)
    assert any("look the same" in p for p in problems)
    assert sum("no legend" in p for p in problems) == 2
    assert any("overlap" in p for p in problems) and any("40 x tick labels" in p for p in problems)


def test_the_check_catches_a_legend_over_the_data():
    figure, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2], [1, 2], label="a")
    ax.plot([1, 2], [2, 1], label="b")
    ax.legend(loc="center")
    assert any("legend lies over" in p for p in check_readable(figure))
    plt.close(figure)


@pytest.mark.parametrize("name", ["tau_sweep", "per_class", "training_curves", "theta", "methods"])
def test_one_legend_below_the_panels(figures, name):
    """The demo user's complaint: legends covered tail-class points and a curve's peak. Now each figure has one
    legend, below every panel (check_readable checks that it overlaps none)."""
    figure = figures[name]
    figure.canvas.draw()
    assert all(ax.get_legend() is None for ax in figure.axes)
    (legend,) = figure.legends
    box = legend.get_window_extent(figure.canvas.get_renderer())
    assert box.y1 <= min(ax.get_window_extent().y0 for ax in figure.axes)


def test_the_paper_tau_is_named_in_each_panel_and_once_in_the_legend(figures):
    figure = figures["tau_sweep"]
    assert [ax.get_title() for ax in figure.axes] == [f"IF {f:g} (paper τ = {PAPER[f]['tau']:g})" for f in FACTORS]
    texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert texts.count("paper's fine-tuned τ") == 1


def test_per_class_panels_hold_one_evaluation_rule_each():
    """Ten variants in one panel could not be told apart: one row per rule (plain, PN, the other post-hoc rules)."""
    frames = demo_frames()
    evaluation = frames["per_class"]["variant"].map({v: e for v, (_, e) in VARIANTS.items()})
    per_class = frames["per_class"].assign(evaluation=evaluation)
    extra = per_class[per_class["variant"] == "ce_pn"].assign(variant="ce_la", evaluation="logit_adjustment")
    figure = plots.per_class_accuracy(pd.concat([per_class, extra], ignore_index=True))
    assert check_readable(figure) == []
    axes = np.array(figure.axes).reshape(3, len(FACTORS))
    rows = [{line.get_label() for ax in row for line in ax.get_lines()} for row in axes]
    assert rows == [{"ce", "BaGMar"}, {"ce_pn", "BaGMar_pn"}, {"ce_la"}]
    assert axes[1, 0].get_title() == "IF 200: PN, τ = 1"
    plt.close(figure)


def test_a_loss_on_another_scale_gets_its_own_row():
    """LDAM-DRW's loss (7 to 17) flattened the others (1 to 3) into one line: losses on unlike scales get rows of
    their own, losses on like scales share one, and the accuracies (one unit) share the last row."""
    metrics = demo_frames()["metrics"]
    ldam = metrics[metrics["training"] == "ce"].assign(training="LDAM_DRW",
                                                       train_loss=lambda f: 5 * f["train_loss"] + 7)
    figure = plots.training_curves(pd.concat([metrics, ldam], ignore_index=True))
    assert check_readable(figure) == []
    axes = np.array(figure.axes).reshape(3, len(FACTORS))
    labels = [{line.get_label() for line in ax.get_lines()} for ax in axes[:, 0]]
    assert labels == [set(TRAININGS), {"LDAM_DRW"}, {*TRAININGS, "LDAM_DRW"}]
    low, high = axes[0, 0].get_ylim()
    lines = [line.get_ydata() for line in axes[0, 0].get_lines()]
    assert all(np.ptp(y) > 0.3 * (high - low) for y in lines)  # no line flattened
    assert axes[1, 0].get_title() == "IF 200: training loss of LDAM_DRW"
    plt.close(figure)


def test_losses_on_one_scale_share_a_row(figures):
    axes = np.array(figures["training_curves"].axes).reshape(2, len(FACTORS))
    assert {line.get_label() for line in axes[0, 0].get_lines()} == set(TRAININGS)


def test_coinciding_theta_curves_each_show_and_the_figure_says_why():
    """Trainings with near-identical θ drew one line over another: each is now wider than the next drawn and has
    its markers at classes of its own, and the legend's note names the ones that coincide."""
    theta = demo_frames()["theta"]
    theta = theta[theta["training"] == "ce"]
    twins = [theta.assign(training=name, theta=theta["theta"] * (1 + 0.01 * i))
             for i, name in enumerate(["ce", "BaGMar", "BaGMar_pn", "LA"])]
    apart = theta.assign(training="LDAM_DRW", theta=theta["theta"] * 3)
    figure = plots.theta_per_class(pd.concat([*twins, apart], ignore_index=True))
    assert check_readable(figure) == []
    lines = figure.axes[0].get_lines()
    assert len({line.get_linewidth() for line in lines}) == len(lines)
    marked = [set(np.arange(NUM_CLASSES)[line.get_markevery()[0]::line.get_markevery()[1]]) for line in lines]
    assert all(not a & b for a, b in combinations(marked, 2))
    note = figure.legends[0].get_title().get_text().replace("\n", " ")
    assert "ce, BaGMar, BaGMar_pn and LA nearly coincide (at most 3% apart at any class)" in note
    assert "LDAM_DRW" not in note
    plt.close(figure)


def test_distinct_theta_curves_carry_no_note(figures):
    assert figures["theta"].legends[0].get_title().get_text() == ""


def test_figures_are_deterministic(tmp_path):
    """The same frames give the same PNG bytes (the workflow's outputs are compared by checksum)."""
    frames = demo_frames()
    written = []
    for attempt in range(2):
        figure = plots.training_curves(frames["metrics"])
        path = tmp_path / f"{attempt}.png"
        figure.savefig(path, format="png", dpi=110)
        plt.close(figure)
        written.append(path.read_bytes())
    assert written[0] == written[1]
