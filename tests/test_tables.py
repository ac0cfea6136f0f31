"""Aggregation (pandas) and rendering (Jinja2) of evaluation results."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bagmar.render import cell, render_results, splice_readme
from bagmar.tables import over_seeds, summarize

TEMPLATE = Path(__file__).parents[1] / "templates" / "results.md.j2"


def sweeps():
    rows = []
    for seed, shift in [(0, 0.0), (1, 2.0)]:
        for imbalance in (100.0, 10.0):
            few = float("nan") if imbalance == 10.0 else 10.0 + shift
            rows.append(dict(variant="ce", imbalance_factor=imbalance, seed=seed, evaluation="plain", tau=0.0,
                             top1=40.0 + shift, many=70.0, medium=30.0, few=few))
            for tau, top1 in [(0.0, 40.0), (0.5, 44.0), (1.0, 45.0), (1.5, 46.0), (2.0, 43.0)]:
                rows.append(dict(variant="ce_pn", imbalance_factor=imbalance, seed=seed, evaluation="pn", tau=tau,
                                 top1=top1 + shift, many=60.0, medium=40.0, few=few))
    return pd.DataFrame(rows)


def test_summary_takes_headline_tau_and_test_best_tau():
    summary = summarize(sweeps()).set_index(["variant", "imbalance_factor", "seed"])
    pn = summary.loc[("ce_pn", 100.0, 1)]
    assert pn["top1"] == 47.0 and pn["best_tau"] == 1.5 and pn["best_top1"] == 48.0
    plain = summary.loc[("ce", 100.0, 0)]
    assert plain["top1"] == 40.0 and plain["best_tau"] == 0.0


def test_mean_and_std_over_seeds_match_a_recomputation():
    summary = summarize(sweeps())
    table = over_seeds(summary).set_index(["variant", "imbalance_factor"])
    for (variant, imbalance), group in summary.groupby(["variant", "imbalance_factor"]):
        row = table.loc[(variant, imbalance)]
        assert row["n_seeds"] == 2
        assert row["top1"] == pytest.approx(np.mean(group["top1"]))
        assert row["top1_std"] == pytest.approx(np.std(group["top1"], ddof=1))
    assert math.isnan(table.loc[("ce", 10.0), "few"])


def test_missing_headline_tau_is_an_error():
    broken = sweeps().query("not (variant == 'ce_pn' and tau == 1.0)")
    with pytest.raises(ValueError, match="tau = 1.0 is not in the sweep"):
        summarize(broken)


def test_cells():
    assert cell(51.04) == "51.0"
    assert cell(51.04, 0.31, 3) == "51.0 ± 0.3"
    assert cell(float("nan")) == "n/a"


def test_rendered_section_has_the_paper_format_and_every_variant():
    table = over_seeds(summarize(sweeps()))
    paper = {100: {"tau1": 50.9, "finetuned": 51.0, "tau": 1.5}}
    text = render_results(table, TEMPLATE, run_name="t", dataset="synthetic", headline_variant="ce_pn",
                          variants=["ce", "ce_pn"], paper=paper)
    assert "| Imbalance Factor | Top-1 Accuracy (τ=1) | Top-1 Accuracy (fine-tune τ) | Paper (τ=1)" in text
    assert "| 100 | 46.0 ± 1.4 | 47.0 ± 1.4 (τ=1.5) | 50.9 | 51.0 (τ=1.5) |" in text
    assert "| 10 | ce | plain | 41.0 ± 1.4 | 70.0 ± 0.0 | 30.0 ± 0.0 | n/a | – |" in text
    assert "mean ± std over 2 seeds" in text


def test_readme_changes_only_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN results: a -->\nold\n<!-- END results: a -->\noutro\n")
    splice_readme(readme, "a", "new table\n")
    assert readme.read_text() == "intro\n<!-- BEGIN results: a -->\nnew table\n<!-- END results: a -->\noutro\n"
    with pytest.raises(ValueError, match="BEGIN results: b"):
        splice_readme(readme, "b", "x")
    assert "new table" in readme.read_text()
