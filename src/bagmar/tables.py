"""Aggregation of per-evaluation tau sweeps into the tables the paper reports (pandas only).

Presentation code: it reads result files and never imports training code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("top1", "many", "medium", "few")
KEYS = ["variant", "imbalance_factor", "seed"]
PN_HEADLINE_TAU = 1.0  # the paper's "tau = 1" column


def headline_tau(evaluation: str) -> float:
    """Plain evaluation is PN with tau = 0; PN variants are reported at tau = 1 first."""
    return PN_HEADLINE_TAU if evaluation == "pn" else 0.0


def summarize(sweeps: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, imbalance_factor, seed): the headline metrics and the test-best tau.

    ``best_tau`` / ``best_top1`` are chosen on the test labels, as the paper's "fine-tune tau"
    column was; they are labelled so wherever they are shown. Ties go to the smaller tau.
    """
    rows = []
    for (variant, imbalance, seed), sweep in sweeps.groupby(KEYS, sort=True):
        evaluation = sweep["evaluation"].iloc[0]
        at = sweep[np.isclose(sweep["tau"], headline_tau(evaluation))]
        if at.empty:
            raise ValueError(f"{variant} IF {imbalance} seed {seed}: tau = {headline_tau(evaluation)} is not in the sweep")
        best = sweep.sort_values(["top1", "tau"], ascending=[False, True]).iloc[0]
        row = {"variant": variant, "imbalance_factor": imbalance, "seed": seed, "evaluation": evaluation}
        row.update({m: float(at[m].iloc[0]) for m in METRICS})
        row.update(best_tau=float(best["tau"]), best_top1=float(best["top1"]))
        rows.append(row)
    return pd.DataFrame(rows)


def over_seeds(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; NaN for one seed) and seed count per (variant, IF)."""
    values = [*METRICS, "best_tau", "best_top1"]
    grouped = summary.groupby(["variant", "imbalance_factor", "evaluation"], sort=False)[values]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std")).join(grouped.size().rename("n_seeds"))
    return out.reset_index()
