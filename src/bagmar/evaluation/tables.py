"""Aggregation of per-evaluation tau sweeps into the tables the paper reports (pandas only).

Presentation code: it reads result files and never imports training code. Accuracies are in
percent. Every selection that looked at test labels is named so ("test_best", "best_epoch").

Numbers as written: the tables over seeds (``over_seeds``, ``paper_comparison``, ``methods_table``; the CSVs
results.csv, paper_table.csv and methods.csv) hold every percentage rounded once, the way the paper reports it
(``round_percent``: one decimal, halves away from zero), so a CSV reads 40.4 and 47.6, never 40.400000000000006,
and a rendered table shows the same digits as its CSV. The per-seed summary (``summarize``, summary.csv) is the
input of the means, so it keeps every digit and loses only the float noise (``_exact``): rounding it too would
round the means twice. Other numbers (τ, epochs) lose only their float noise; the published figures the tables
quote (paper_*, published_top1) are written as their sources give them.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd

from .evaluate import best_row, headline_tau

GROUPS = ("top1", "many", "medium", "few")
KEYS = ["variant", "imbalance_factor", "seed"]
# the columns that hold our accuracies (percent), besides their "_std" and the "diff_" columns beside the paper's
PERCENT = (*GROUPS, "best_epoch_top1", "test_best_top1", "label_free_top1", "val_selected_top1")
SIGNIFICANT = 12  # digits a float keeps once its noise is gone: 26.450000000000003 -> 26.45


def _exact(value: float) -> float:
    """The decimal number a float stands for, without the noise of binary arithmetic (SIGNIFICANT digits):
    26.450000000000003 -> 26.45, 0.7000000000000001 -> 0.7. NaN and infinities as they are."""
    value = float(value)
    return float(f"{value:.{SIGNIFICANT}g}") if math.isfinite(value) else value


def round_percent(value: float) -> float:
    """A percentage as the paper reports it: one decimal, a half rounded away from zero, on the decimal value
    rather than on its binary approximation (Python's round and "%.1f" give 47.5 for 47.55, whose float is a little
    under it, and 84.7 for 84.65): 47.55 -> 47.6, 84.65 -> 84.7, 40.400000000000006 -> 40.4, 0.05 -> 0.1,
    -0.05 -> -0.1; NaN (a shot group without classes) stays NaN. The float noise goes first (``_exact``), so a
    mean that comes out as 47.549999999999997 is 47.55 and rounds up too."""
    value = float(value)
    if not math.isfinite(value):
        return value
    rounded = Decimal(repr(_exact(value))).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return float(rounded) + 0.0  # + 0.0: -0.0 (from -0.04) is written 0.0


def percent_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of a table that hold our accuracies in percent: PERCENT, their standard deviations over
    seeds, and our differences from the paper (diff_*)."""
    return [c for c in frame.columns
            if c in PERCENT or (c.endswith("_std") and c.removesuffix("_std") in PERCENT) or c.startswith("diff_")]


def as_written(frame: pd.DataFrame, percent: bool = True) -> pd.DataFrame:
    """A table's numbers as its CSV holds them: every percentage column rounded by ``round_percent`` (with
    ``percent``), every other float column without its float noise (``_exact``); nothing else changes."""
    out = frame.copy()
    rounded = percent_columns(out) if percent else []
    for column in out.columns:
        if column in rounded:
            out[column] = out[column].map(round_percent).astype(float)
        elif pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(_exact).astype(float)
    return out


def summarize(sweeps: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, imbalance_factor, seed), every column a selection rule of SPEC §7:

    - top1, many, medium, few: final-epoch model at the headline tau (plain: 0, PN: 1);
    - best_epoch, best_epoch_top1: the epoch with the best test accuracy (chosen on test labels);
    - test_best_tau, test_best_top1: the final model's best tau on the test labels ("fine-tune tau");
    - label_free_tau, label_free_top1: the tau chosen without labels (PN variants; NaN for plain);
    - val_selected_tau, val_selected_top1: the tau chosen on the validation split, and the test top-1 at it
      (post-hoc variants of a data set with a validation split; NaN otherwise, e.g. CIFAR, which has none).
    Ties in test_best_tau go to the smaller tau.
    """
    rows = []
    for (variant, imbalance, seed), sweep in sweeps.groupby(KEYS, sort=True):
        evaluation = sweep["evaluation"].iloc[0]
        final, best_epoch = sweep[sweep["model"] == "final"], sweep[sweep["model"] == "best_epoch"]
        at = final[np.isclose(final["tau"], headline_tau(evaluation))]
        if at.empty:
            raise ValueError(f"{variant} IF {imbalance} seed {seed}: tau = {headline_tau(evaluation)} is not in the sweep")
        test_best = best_row(final)
        free_tau = sweep["label_free_tau"].iloc[0]
        free = final[np.isclose(final["tau"], free_tau)]
        val_tau = float(sweep["val_selected_tau"].iloc[0]) if "val_selected_tau" in sweep else float("nan")
        at_val = final[np.isclose(final["tau"], val_tau)]
        row = {"variant": variant, "imbalance_factor": imbalance, "seed": seed, "evaluation": evaluation}
        row.update({g: float(at[g].iloc[0]) for g in GROUPS})
        row.update(
            best_epoch=int(best_epoch["epoch"].iloc[0]),
            best_epoch_top1=float(best_epoch["top1"].iloc[0]),
            test_best_tau=float(test_best["tau"]),
            test_best_top1=float(test_best["top1"]),
            label_free_tau=float(free_tau),
            label_free_top1=float(free["top1"].iloc[0]) if len(free) else float("nan"),
            val_selected_tau=val_tau,
            val_selected_top1=float(at_val["top1"].iloc[0]) if len(at_val) else float("nan"),
        )
        rows.append(row)
    return as_written(pd.DataFrame(rows), percent=False)  # every digit: the means over seeds are taken from these


def over_seeds(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; NaN for one seed) and seed count per (variant, IF), taken from the
    per-seed values' every digit; the percentages then rounded once, as the paper reports them (``as_written``)."""
    values = [c for c in summary.columns if c not in (*KEYS, "evaluation")]
    grouped = summary.groupby(["variant", "imbalance_factor", "evaluation"], sort=False)[values]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).join(grouped.size().rename("n_seeds"))
    return as_written(out.reset_index())


def paper_comparison(table: pd.DataFrame, variant: str, paper: dict | None) -> pd.DataFrame:
    """The paper-format rows of one variant, with the paper's numbers and our difference from them (ours as
    ``table`` gives them, rounded by ``over_seeds``, so that a difference is that of the numbers shown)."""
    rows = table[table["variant"] == variant].sort_values("imbalance_factor", ascending=False).copy()
    paper = {float(k): v for k, v in (paper or {}).items()}
    for ours, theirs in [("top1", "tau1"), ("test_best_top1", "finetuned"), (None, "tau")]:
        rows[f"paper_{theirs}"] = [paper.get(f, {}).get(theirs, np.nan) for f in rows["imbalance_factor"]]  # tau1 may be absent
        if ours:
            rows[f"diff_{theirs}"] = rows[ours] - rows[f"paper_{theirs}"]
    # the paper's tuned-tau figure beside ours with tau chosen on validation (NaN without a validation split)
    rows["diff_val_selected"] = rows["val_selected_top1"] - rows["paper_finetuned"]
    return as_written(rows.reset_index(drop=True))


def methods_table(table: pd.DataFrame, variants: dict[str, dict], losses: dict[str, str], published: dict | None,
                  headline_variant: str, paper: dict | None, recipes: dict[str, str] | None = None) -> pd.DataFrame:
    """The comparison of methods: every variant (a training's loss under an evaluation rule) at every
    imbalance factor, with every column of ``table`` (final-epoch top-1 and shot groups, mean ± std over
    seeds; the test-selected best epoch), and the method's published figure where a source gives one.

    ``recipes`` maps a training to the recipe it trained under (bagmar.config.recipe.named_recipe; "shared", the
    run's own, for a training not in it), the ``recipe`` column.

    ``published`` maps variant -> imbalance factor -> {top1, source, note}; the headline variant's
    published figure is the paper's tau = 1 number (``paper``), so that it is written in one place.
    """
    rows = table.copy()
    rows.insert(1, "training", rows["variant"].map(lambda v: variants[v]["training"]))
    rows.insert(2, "loss", rows["training"].map(losses))
    rows.insert(3, "recipe", rows["training"].map(lambda t: (recipes or {}).get(t, "shared")))
    published = {v: {float(f): entry for f, entry in by_factor.items()} for v, by_factor in (published or {}).items()}
    for factor, numbers in (paper or {}).items():
        if "tau1" not in numbers:  # a paper that gives only its tuned-tau figure for this data set
            continue
        published.setdefault(headline_variant, {}).setdefault(float(factor), {
            "top1": numbers["tau1"], "source": "the paper's table (report.paper, SPEC §8), τ = 1"})
    found = [published.get(v, {}).get(f, {}) for v, f in zip(rows["variant"], rows["imbalance_factor"])]
    rows["published_top1"] = [entry.get("top1", np.nan) for entry in found]
    rows["published_source"] = [entry.get("source", "") for entry in found]
    rows["published_note"] = [entry.get("note", "") for entry in found]
    order = {v: i for i, v in enumerate(variants)}
    rows = rows.assign(_order=rows["variant"].map(order)).sort_values(["imbalance_factor", "_order"],
                                                                      ascending=[False, True])
    return as_written(rows.drop(columns="_order").reset_index(drop=True))
