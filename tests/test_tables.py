"""Aggregation (pandas) and rendering (Jinja2) of evaluation results."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bagmar.data.image_lists import no_validation_split, validation_split
from bagmar.io import UserError
from bagmar.evaluation.render import cell, methods_rows, render_results, splice_readme
from bagmar.evaluation.tables import (as_written, methods_table, over_seeds, paper_comparison, percent_columns,
                                     round_percent, summarize)

TEMPLATE = Path(__file__).parents[1] / "templates" / "results.md.j2"


def sweeps():
    rows = []
    for seed, shift in [(0, 0.0), (1, 2.0)]:
        for imbalance in (100.0, 10.0):
            few = float("nan") if imbalance == 10.0 else 10.0 + shift
            common = dict(imbalance_factor=imbalance, seed=seed, many=70.0, medium=30.0, few=few)
            rows.append(dict(variant="ce", evaluation="plain", model="final", epoch=10, tau=0.0, top1=40.0 + shift,
                             label_free_tau=float("nan"), **common))
            rows.append(dict(variant="ce", evaluation="plain", model="best_epoch", epoch=7 + seed, tau=0.0,
                             top1=41.0 + shift, label_free_tau=float("nan"), **common))
            for tau, top1 in [(0.0, 40.0), (0.5, 44.0), (1.0, 45.0), (1.5, 46.0), (2.0, 43.0)]:
                rows.append(dict(variant="ce_pn", evaluation="pn", model="final", epoch=10, tau=tau, top1=top1 + shift,
                                 label_free_tau=0.5, **common))
            rows.append(dict(variant="ce_pn", evaluation="pn", model="best_epoch", epoch=9, tau=1.0, top1=47.5 + shift,
                             label_free_tau=0.5, **common))
    return pd.DataFrame(rows)


def test_summary_takes_every_selection_rule():
    summary = summarize(sweeps()).set_index(["variant", "imbalance_factor", "seed"])
    pn = summary.loc[("ce_pn", 100.0, 1)]
    assert pn["top1"] == 47.0  # final model, tau = 1
    assert pn["test_best_tau"] == 1.5 and pn["test_best_top1"] == 48.0
    assert pn["label_free_tau"] == 0.5 and pn["label_free_top1"] == 46.0
    assert pn["best_epoch"] == 9 and pn["best_epoch_top1"] == 49.5
    plain = summary.loc[("ce", 100.0, 0)]
    assert plain["top1"] == 40.0 and plain["test_best_tau"] == 0.0 and math.isnan(plain["label_free_top1"])
    assert plain["best_epoch"] == 7 and plain["best_epoch_top1"] == 41.0


def test_mean_and_std_over_seeds_match_a_recomputation():
    """Taken from the per-seed values, then rounded once, as the paper reports them."""
    summary = summarize(sweeps())
    table = over_seeds(summary).set_index(["variant", "imbalance_factor"])
    for (variant, imbalance), group in summary.groupby(["variant", "imbalance_factor"]):
        row = table.loc[(variant, imbalance)]
        assert row["n_seeds"] == 2
        assert row["top1"] == round_percent(np.mean(group["top1"]))
        assert row["top1_std"] == round_percent(np.std(group["top1"], ddof=1)) == 1.4
    assert math.isnan(table.loc[("ce", 10.0), "few"])


def test_missing_headline_tau_is_an_error():
    broken = sweeps().query("not (variant == 'ce_pn' and tau == 1.0 and model == 'final')")
    with pytest.raises(ValueError, match="tau = 1.0 is not in the sweep"):
        summarize(broken)


def test_cells():
    assert cell(51.04) == "51.0"
    assert cell(51.04, 0.31, 3) == "51.0 ± 0.3"
    assert cell(float("nan")) == "n/a"


def test_paper_comparison_takes_differences():
    table = over_seeds(summarize(sweeps()))
    comparison = paper_comparison(table, "ce_pn", {100: {"tau1": 50.9, "finetuned": 51.0, "tau": 1.5}})
    row = comparison.set_index("imbalance_factor").loc[100.0]
    assert row["diff_tau1"] == pytest.approx(46.0 - 50.9) and row["diff_finetuned"] == pytest.approx(47.0 - 51.0)
    assert math.isnan(comparison.set_index("imbalance_factor").loc[10.0, "paper_tau1"])


def test_rendered_section_has_the_paper_format_and_every_variant():
    table = over_seeds(summarize(sweeps()))
    comparison = paper_comparison(table, "ce_pn", {100: {"tau1": 50.9, "finetuned": 51.0, "tau": 1.5}})
    links = {f: [{"seed": s, "log": f"results/t/logs/{f:g}_{s}.log", "model": f"results/t/m{f:g}_{s}.pt"}
                 for s in (0, 1)] for f in (100.0, 10.0)}
    methods = methods_table(table, VARIANTS, LOSSES, None, "ce_pn", None)
    text = render_results(table, comparison, methods, TEMPLATE, run_name="t", dataset="synthetic", headline_variant="ce_pn",
                          variants=["ce", "ce_pn"], links=links, link_base="results/t")
    assert "| Imbalance Factor | Top-1 Accuracy (τ=1) | Top-1 Accuracy (fine-tune τ) | Log | Model |" in text
    assert ("| 100 | 46.0 ± 1.4 | 47.0 ± 1.4 (τ=1.5) | [seed 0](logs/100_0.log) [seed 1](logs/100_1.log) | "
            "[seed 0](m100_0.pt) [seed 1](m100_1.pt) |") in text
    assert "| 100 | 46.0 ± 1.4 | 50.9 | -4.9 | 47.0 ± 1.4 (τ=1.5) | 51.0 (τ=1.5) | -4.0 |" in text
    assert "| 10 | ce | plain | 41.0 ± 1.4 | 70.0 ± 0.0 | 30.0 ± 0.0 | n/a | 7.5 (42.0 ± 1.4) | – | – |" in text
    assert "| 10 | ce_pn | PN τ=1 | 46.0 ± 1.4 |" in text and "| 0.5 (45.0 ± 1.4) |" in text
    assert "mean ± std over 2 seeds" in text
    assert "Data:" not in text
    flagged = render_results(table, comparison, methods, TEMPLATE, run_name="t", dataset="cifar100", headline_variant="ce_pn",
                             variants=["ce", "ce_pn"], links=links, data_note="CIFAR-100 from /x: UNOFFICIAL COPY")
    assert "(cifar100)\n\nData: CIFAR-100 from /x: UNOFFICIAL COPY\n\nce_pn, top-1" in flagged


VARIANTS = {"ce": {"training": "ce", "evaluation": "plain"}, "ce_pn": {"training": "ce", "evaluation": "pn"}}
LOSSES = {"ce": "bagmar"}
PUBLISHED = {"ce": {100: {"top1": 39.87, "source": "Menon et al., code README", "note": "0.3987"},
                    10: {"top1": 55.0, "source": "Another, table 2"}},
             "ce_pn": {100: {"top1": 40.5, "source": "Menon et al., code README"}}}


def test_methods_table_carries_every_variant_and_its_published_figure():
    table = over_seeds(summarize(sweeps()))
    methods = methods_table(table, VARIANTS, LOSSES, PUBLISHED, "ce_pn", {10: {"tau1": 60.0, "finetuned": 61.0,
                                                                               "tau": 1.2}})
    assert list(methods[["variant", "imbalance_factor"]].itertuples(index=False, name=None)) == [
        ("ce", 100.0), ("ce_pn", 100.0), ("ce", 10.0), ("ce_pn", 10.0)]  # IF descending, config order
    row = methods.set_index(["variant", "imbalance_factor"]).loc[("ce", 100.0)]
    assert (row["training"], row["loss"], row["published_top1"], row["published_note"]) == ("ce", "bagmar", 39.87,
                                                                                             "0.3987")
    assert row["top1"] == table.set_index(["variant", "imbalance_factor"]).loc[("ce", 100.0), "top1"]
    # the headline variant's figure comes from report.paper where report.published has none
    headline = methods.set_index(["variant", "imbalance_factor"]).loc[("ce_pn", 10.0)]
    assert headline["published_top1"] == 60.0 and "report.paper" in headline["published_source"]
    assert methods.set_index(["variant", "imbalance_factor"]).loc[("ce_pn", 100.0), "published_top1"] == 40.5


def test_rendered_methods_table_numbers_its_sources():
    table = over_seeds(summarize(sweeps()))
    links = {f: [] for f in (100.0, 10.0)}
    comparison = paper_comparison(table, "ce_pn", None)
    methods = methods_table(table, VARIANTS, LOSSES, PUBLISHED, "ce_pn", None)
    text = render_results(table, comparison, methods, TEMPLATE, run_name="t", dataset="cifar100",
                          headline_variant="ce_pn", variants=["ce", "ce_pn"], links=links)
    assert "| Variant | Training | Rule | IF 100 | Published | IF 10 | Published |" in text
    assert "| ce | ce | plain | 41.0 ± 1.4 | 39.87 [1] | 41.0 ± 1.4 | 55 [2] |" in text
    assert "| ce_pn | ce | PN τ=1 | 46.0 ± 1.4 | 40.5 [1] | 46.0 ± 1.4 | – |" in text
    assert "1. Menon et al., code README (ce, IF 100: 0.3987)\n2. Another, table 2\n" in text
    # without any published figure (the demo), no Published columns and no sources
    bare = render_results(table, comparison, methods_table(table, VARIANTS, LOSSES, None, "ce_pn", None), TEMPLATE,
                          run_name="t", dataset="synthetic", headline_variant="ce_pn", variants=["ce", "ce_pn"],
                          links=links)
    assert "| Variant | Training | Rule | IF 100 | IF 10 |" in bare and "Sources" not in bare


def test_the_paper_configs_published_figures_render_with_numbered_sources():
    """config/config.yaml's report.published and report.paper, on a made-up table of every variant."""
    import yaml
    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    rows = [dict(variant=v, imbalance_factor=float(f), evaluation=spec["evaluation"], top1=50.0, top1_std=0.5, n_seeds=3)
            for f in config["imbalance_factors"] for v, spec in config["variants"].items()]
    table = pd.DataFrame(rows)
    losses = {t: spec.get("loss", "bagmar") for t, spec in config["trainings"].items()}
    methods = methods_table(table, config["variants"], losses, config["report"]["published"], "BaGMar_pn",
                            config["report"]["paper"])
    _, method_rows, sources = methods_rows(methods)
    assert len(sources) == 5  # Ren et al., Menon et al., Cao et al., Zhang et al., and the paper
    published = methods.dropna(subset=["published_top1"])
    assert len(published) == 9 + 4  # the sourced figures of the other methods, and the paper's four
    by_variant = {row["variant"]: row["cells"] for row in method_rows}
    factors = sorted(config["imbalance_factors"], reverse=True)
    for variant, by_factor in config["report"]["published"].items():
        for factor, entry in by_factor.items():
            cell = by_variant[variant][factors.index(factor)]
            number = next(s["number"] for s in sources if s["source"] == " ".join(entry["source"].split()))
            assert cell["published"] == f"{entry['top1']:g} [{number}]", (variant, factor)
    assert by_variant["BaGMar_pn"][factors.index(100)]["published"].startswith("50.9 [")
    assert by_variant["BaGMar"][0]["published"] == "–"  # no source given: no number


@pytest.mark.parametrize("name", ["places_lt", "inat2018", "imagenet_lt"])
def test_the_large_benchmarks_paper_figures_render_beside_ours(name):
    """Their configs give the paper's PN figure at its tuned tau (no tau = 1 figure) and the BaGMar loss's
    figure without PN; both render beside ours, and the missing one shows as n/a, never as a number. Where the data
    set has a validation split, the paper's tuned figure also sits beside ours at the val-selected tau."""
    import yaml
    config = yaml.safe_load((Path(__file__).parents[1] / "config" / f"{name}.yaml").read_text())
    (factor,) = config["imbalance_factors"]
    paper = config["report"]["paper"]
    validation = validation_split(name)
    rows = [dict(variant=v, imbalance_factor=float(factor), evaluation=spec["evaluation"], top1=40.0, top1_std=np.nan,
                 n_seeds=1, test_best_top1=41.0, test_best_top1_std=np.nan, test_best_tau=1.2,
                 val_selected_top1=40.5 if validation else np.nan, val_selected_top1_std=np.nan,
                 val_selected_tau=1.1 if validation else np.nan)
            for v, spec in config["variants"].items()]
    table = pd.DataFrame(rows)
    comparison = paper_comparison(table, "BaGMar_pn", paper)
    losses = {t: spec.get("loss", "bagmar") for t, spec in config["trainings"].items()}
    methods = methods_table(table, config["variants"], losses, config["report"]["published"], "BaGMar_pn", paper)
    _, method_rows, sources = methods_rows(methods)
    finetuned, tau = paper[factor]["finetuned"], paper[factor]["tau"]
    text = render_template_section(table, comparison, methods, validation, no_validation_split(name))
    ours = f"| {factor} | 40.0 | n/a | – | 41.0 (τ=1.2) | {finetuned} (τ={tau:g}) | {41.0 - finetuned:+.1f} |"
    if validation:
        assert f"{ours} 40.5 (τ=1.1) | {40.5 - finetuned:+.1f} |" in text
        assert "Val-selected τ (top-1)" in text and "| 1.1 (40.5) |" in text
    else:
        assert f"{ours}\n" in text and "Val-selected" not in text
        assert "No val-selected τ: iNaturalist 2018's only validation list is the literature's test set." in text
    by_variant = {row["variant"]: row["cells"] for row in method_rows}
    entry = config["report"]["published"]["BaGMar"][factor]
    number = next(s["number"] for s in sources if s["source"] == " ".join(entry["source"].split()))
    assert by_variant["BaGMar"][0]["published"] == f"{entry['top1']:g} [{number}]"
    assert by_variant["BaGMar_pn"][0]["published"] == "–"


def render_template_section(table, comparison, methods, validation=None, no_validation="d has none"):
    factors = sorted(set(table["imbalance_factor"]))
    links = {f: [{"seed": 0, "log": "l.log", "model": "m.pt"}] for f in factors}
    full = table.assign(**{c: np.nan for c in ("many", "medium", "few", "best_epoch_top1", "label_free_top1")},
                        many_std=np.nan, medium_std=np.nan, few_std=np.nan, best_epoch=1, best_epoch_top1_std=np.nan,
                        label_free_tau=1.0, label_free_top1_std=np.nan)
    return render_results(full, comparison, methods, TEMPLATE, run_name="t", dataset="d", headline_variant="BaGMar_pn",
                          variants=list(table["variant"]), links=links, validation=validation,
                          no_validation=no_validation or "")


def test_readme_changes_only_between_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- BEGIN results: a -->\nold\n<!-- END results: a -->\noutro\n")
    assert splice_readme(readme, "a", "new table\n")
    spliced = "intro\n<!-- BEGIN results: a -->\nnew table\n<!-- END results: a -->\noutro\n"
    assert readme.read_text() == spliced
    assert not splice_readme(readme, "b", "x")  # no markers for run b: the README is left alone
    assert readme.read_text() == spliced
    readme.write_text(spliced + "<!-- BEGIN results: a -->\n<!-- END results: a -->\n")
    with pytest.raises(UserError, match="2 pairs of the markers <!-- BEGIN results: a -->"):
        splice_readme(readme, "a", "x")


@pytest.mark.parametrize("value, expected", [
    (47.55, 47.6), (84.65, 84.7),  # Python's round and "%.1f" disagree on these two (47.5, 84.7)
    (40.400000000000006, 40.4), (0.05, 0.1), (-0.05, -0.1), (47.549999999999997, 47.6), (100.0, 100.0),
    (-0.04, 0.0), (26.450000000000003, 26.5),
])
def test_percentages_round_as_the_paper_reports_them(value, expected):
    rounded = round_percent(value)
    assert rounded == expected and repr(rounded) == repr(expected)  # also no -0.0


def test_a_missing_percentage_stays_missing():
    assert math.isnan(round_percent(float("nan")))


def noisy_sweeps():
    """Per-seed accuracies as the evaluation computes them (k / n * 100), with their float noise and halves."""
    frame = sweeps()
    noisy = {40.0: 40.45, 42.0: 202 / 500 * 100, 45.0: 84.65, 47.0: 0.1 + 0.2, 46.0: 1 / 3 * 100}
    frame["top1"] = frame["top1"].map(lambda v: noisy.get(v, v))
    frame["many"] = 89.21428571428571
    return frame


def test_table_csvs_hold_percentages_with_one_decimal_and_no_float_noise(tmp_path):
    """results.csv, paper_table.csv and methods.csv as scripts/aggregate.py writes them (DataFrame.to_csv)."""
    table = over_seeds(summarize(noisy_sweeps()))
    frames = {"results": table,
              "paper_table": paper_comparison(table, "ce_pn", {100: {"tau1": 50.9, "finetuned": 51.0, "tau": 1.5}}),
              "methods": methods_table(table, VARIANTS, LOSSES, PUBLISHED, "ce_pn", None)}
    for name, frame in frames.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
        written = pd.read_csv(tmp_path / f"{name}.csv", dtype=str, keep_default_na=False)
        columns = percent_columns(written)
        assert {"top1", "top1_std", "many", "few"} <= set(columns), name
        for column in columns:
            for text in written[column]:
                assert text == "" or re.fullmatch(r"-?\d+\.\d", text), (name, column, text)
        text = (tmp_path / f"{name}.csv").read_text()
        assert not re.search(r"\d\.\d*(0000|9999)\d", text), (name, text)  # no float noise in any column
    results = pd.read_csv(tmp_path / "results.csv").set_index(["variant", "imbalance_factor", "evaluation"])
    # seeds 40.45 and 40.400000000000006: their mean 40.425 rounds to 40.4 (rounding each first would give 40.5)
    assert results.loc[("ce", 100.0, "plain"), "top1"] == 40.4
    methods = pd.read_csv(tmp_path / "methods.csv").set_index(["variant", "imbalance_factor"])
    assert methods.loc[("ce", 100.0), "published_top1"] == 39.87  # a source's figure, as the source gives it
    paper = pd.read_csv(tmp_path / "paper_table.csv").set_index("imbalance_factor")
    assert paper.loc[100.0, "diff_tau1"] == round_percent(paper.loc[100.0, "top1"] - 50.9)  # Δ of the shown numbers


def test_the_per_seed_summary_keeps_every_digit_but_the_noise():
    """summary.csv is the input of the means: rounding it would round them twice."""
    summary = summarize(noisy_sweeps()).set_index(["variant", "imbalance_factor", "seed"])
    assert summary.loc[("ce", 100.0, 0), "top1"] == 40.45
    assert summary.loc[("ce", 100.0, 1), "top1"] == 40.4  # 40.400000000000006
    assert summary.loc[("ce", 100.0, 0), "many"] == 89.2142857143


def test_as_written_leaves_text_and_counts_alone():
    frame = pd.DataFrame({"variant": ["a"], "n_seeds": [3], "top1": [47.55], "test_best_tau": [0.1 + 0.2],
                          "published_top1": [39.87]})
    written = as_written(frame)
    assert written.to_dict("records") == [{"variant": "a", "n_seeds": 3, "top1": 47.6, "test_best_tau": 0.3,
                                           "published_top1": 39.87}]
