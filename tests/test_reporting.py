"""Statistics over seeds, honest selection, plots and the Snakemake HTML report."""

import json
import re
import runpy
import shutil
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from project import SEEDS_RUN, snakemake
from test_plots import check_readable

from bagmar.evaluation import plots
from bagmar.config.run import tau_grid
from bagmar.evaluation.evaluate import evaluate_training, label_free_tau
from bagmar.evaluation.tables import round_percent

SEEDS = SEEDS_RUN["seeds"]


@pytest.fixture
def two_seeds(seeds_run):
    """The demo with 2 seeds (tests/conftest.py, SEEDS_RUN), run to the end once per session; never written to."""
    return seeds_run, seeds_run / "results" / "demo"


def test_table_cells_are_mean_and_std_over_the_per_seed_results(two_seeds):
    _, results = two_seeds
    table = pd.read_csv(results / "tables" / "results.csv").set_index(["variant", "imbalance_factor"])
    checked = 0
    for sweep_file in results.glob("eval/*/imba*/seed0/tau_sweep.csv"):
        files = [pd.read_csv(str(sweep_file).replace("seed0", f"seed{s}")) for s in SEEDS]
        for variant in files[0]["variant"].unique():
            per_seed = [f[f["variant"] == variant] for f in files]
            evaluation = per_seed[0]["evaluation"].iloc[0]
            headline = 0.0 if evaluation == "plain" else 1.0
            row = table.loc[(variant, per_seed[0]["imbalance_factor"].iloc[0])]
            assert row["n_seeds"] == len(SEEDS)
            for group in ("top1", "many", "medium", "few"):
                values = [s[(s["model"] == "final") & (s["tau"] == headline)][group].item() for s in per_seed]
                if np.isnan(values).all():
                    assert np.isnan(row[group])
                    continue
                assert row[group] == round_percent(np.mean(values))  # rounded once, as the paper reports them
                assert row[f"{group}_std"] == round_percent(np.std(values, ddof=1))
            best = [s[s["model"] == "final"]["top1"].max() for s in per_seed]
            assert row["test_best_top1"] == round_percent(np.mean(best))
            checked += 1
    variants = yaml.safe_load((two_seeds[0] / "config" / "demo.yaml").read_text())["variants"]
    assert checked == len(variants) * len(SEEDS_RUN["imbalance_factors"])
    readme = (two_seeds[0] / "docs" / "demo.md").read_text()
    assert "mean ± std over 2 seeds" in readme


def test_every_cell_of_the_methods_table_is_recomputed_from_the_per_seed_files(two_seeds):
    """tables/methods.csv and its rendered table: each variant's final-epoch top-1, shot groups and
    test-selected best epoch, mean and std over the seeds, from the evaluation files alone."""
    from bagmar.evaluation.render import cell
    workdir, results = two_seeds
    config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    methods = pd.read_csv(results / "tables" / "methods.csv").set_index(["variant", "imbalance_factor"])
    sweeps = pd.concat([pd.read_csv(path) for path in results.glob("eval/*/imba*/seed*/tau_sweep.csv")])
    rendered = (results / "tables" / "results.md").read_text()
    assert len(methods) == len(config["variants"]) * len(SEEDS_RUN["imbalance_factors"])
    for variant, spec in config["variants"].items():
        cells = []
        for factor in SEEDS_RUN["imbalance_factors"]:
            rows = sweeps[(sweeps["variant"] == variant) & (sweeps["imbalance_factor"] == factor)]
            final = rows[(rows["model"] == "final") & (rows["tau"] == (0.0 if spec["evaluation"] == "plain" else 1.0))]
            best = rows[rows["model"] == "best_epoch"]
            assert sorted(final["seed"]) == sorted(best["seed"]) == SEEDS  # one row per seed each
            row = methods.loc[(variant, float(factor))]
            assert row["training"] == spec["training"] and row["evaluation"] == spec["evaluation"]
            for column, values in [*((g, final[g]) for g in ("top1", "many", "medium", "few")),
                                   ("best_epoch_top1", best["top1"])]:
                if values.isna().all():
                    assert np.isnan(row[column])
                    continue
                assert row[column] == round_percent(values.mean()), (variant, factor, column)
                assert row[f"{column}_std"] == round_percent(values.std(ddof=1)), (variant, factor, column)
            cells.append(cell(round_percent(final["top1"].mean()), round_percent(final["top1"].std(ddof=1)),
                              len(SEEDS)))
        rule = {"plain": "plain", "pn": "PN τ=1", "logit_adjustment": "post-hoc LA τ=1", "tau_norm": "τ-norm τ=1"}
        recipe = config["trainings"][spec["training"]].get("recipe", "shared")  # the run has two: a Recipe column
        assert row["recipe"] == recipe
        line = (f"| {variant} | {spec['training']} | {rule[spec['evaluation']]} | {recipe} | " + " | ".join(cells)
                + " |")
        assert line in rendered.splitlines(), line


def test_label_free_tau_never_reads_the_labels(two_seeds):
    _, results = two_seeds
    with np.load(results / "train" / "ce" / "imba100" / "seed0" / "test_logits.npz") as f:
        logits = dict(f)
    counts = np.array(json.loads((results / "splits" / "imba100" / "class_counts.json").read_text()))
    taus = tau_grid(0.0, 2.0, 0.1)
    shuffled = np.random.default_rng(0).permutation(logits["labels"])
    a = evaluate_training(logits, logits["labels"], counts, taus, "pn")
    b = evaluate_training(logits, shuffled, counts, taus, "pn")
    assert a["label_free_tau"].iloc[0] == b["label_free_tau"].iloc[0] == label_free_tau(logits["logits"], taus)
    assert not a["top1"].equals(b["top1"])  # the labels did matter to the accuracies


def test_label_free_tau_is_in_the_grid_and_reported_beside_the_test_best(two_seeds):
    workdir, results = two_seeds
    grid = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())["tau_grid"]
    summary = pd.read_csv(results / "tables" / "summary.csv")
    pn = summary[summary["evaluation"] == "pn"]
    assert pn["label_free_tau"].between(grid["start"], grid["stop"]).all()
    assert pn["label_free_top1"].notna().all() and pn["test_best_top1"].notna().all()
    assert (pn["label_free_top1"] <= pn["test_best_top1"] + 1e-9).all()  # the test-best is an upper bound
    assert "Label-free τ (top-1)" in (results / "tables" / "results.md").read_text()


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_plots_are_written(two_seeds):
    _, results = two_seeds
    for name in ("tau_sweep", "per_class", "training_curves", "theta", "methods", "headline_per_class"):
        width, height = png_size(results / "plots" / f"{name}.png")
        assert width > 300 and height > 200


def test_the_demo_figures_are_readable(two_seeds, tmp_path):
    """scripts/plots.py itself, on the 2-seed demo's files: no two series of a panel look alike, legends, ticks."""
    workdir, results = two_seeds
    inputs = {"evaluations": str(results / "tables" / "evaluations.csv"),
              "methods": str(results / "tables" / "methods.csv"),
              "per_class": sorted(map(str, results.glob("eval/*/imba*/seed*/per_class.csv"))),
              "metrics": sorted(map(str, results.glob("train/*/imba*/seed*/metrics.csv"))),
              "statistics": sorted(map(str, results.glob("train/*/imba*/seed*/statistics.npz")))}
    names = ("tau_sweep", "per_class", "curves", "theta", "methods", "headline_per_class")
    def keys(paths, name):  # the keys the workflow hands the script beside each file
        return [{name: Path(p).parts[-4], "imbalance_factor": float(Path(p).parts[-3].removeprefix("imba")),
                 "seed": int(Path(p).parts[-2].removeprefix("seed"))} for p in paths]

    params = SimpleNamespace(paper=None, headline_variant="BaGMar_pn", metrics_keys=keys(inputs["metrics"], "training"),
                             statistics_keys=keys(inputs["statistics"], "training"))
    job = SimpleNamespace(input=SimpleNamespace(**inputs), params=params,
                          output=SimpleNamespace(**{name: str(tmp_path / f"{name}.png") for name in names}),
                          log=[str(tmp_path / "plots.log")])
    figures = runpy.run_path(str(workdir / "scripts" / "plots.py"), init_globals={"snakemake": job})["figures"]
    assert set(figures) == set(names)
    for name, figure in figures.items():
        assert check_readable(figure) == [], name


def test_every_figure_has_a_title_and_axis_labels():
    evaluations = pd.DataFrame({
        "variant": ["ce_pn"] * 3, "evaluation": "pn", "model": "final", "imbalance_factor": 100.0,
        "tau": [0.0, 1.0, 2.0], "top1": [30.0, 40.0, 35.0],
    })
    per_class = pd.DataFrame({"variant": "ce", "imbalance_factor": 100.0, "train_count": [500, 50, 5],
                              "accuracy": [90.0, 50.0, 0.0]})
    metrics = pd.DataFrame({"training": "ce", "imbalance_factor": 100.0, "epoch": [1, 2],
                            "train_loss": [3.0, 2.0], "test_acc": [10.0, 20.0]})
    theta = pd.DataFrame({"training": "ce", "imbalance_factor": 100.0, "class": [0, 1, 2], "theta": [9.0, 3.0, 1.0]})
    figures = [plots.tau_sweep(evaluations, {100: {"tau": 1.5}}), plots.per_class_accuracy(per_class),
               plots.training_curves(metrics), plots.theta_per_class(theta)]
    for figure in figures:
        assert figure.get_suptitle()
        for ax in figure.axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
            assert ax.lines or ax.collections


def test_html_report_holds_the_tables_and_figures(two_seeds, tmp_path):
    workdir = shutil.copytree(two_seeds[0], tmp_path / "copy")  # the report is written into the project
    run = snakemake(workdir, "--configfile", "config/demo.yaml", "--report", "report.html")
    assert run.returncode == 0, run.stdout + run.stderr
    text = (workdir / "report.html").read_text()
    # Snakemake embeds each result as a JSON entry: "path": {"name", "filename", "labels", "size", "caption", ...}
    entry = re.compile(r'"(results/[^"]+)": \{"name": "[^"]*", "filename": "[^"]*", "labels": (?:null|\{[^}]*\}), '
                       r'"size": "[^"]*", "caption": ("(?:[^"\\]|\\.)*")')
    captions = {path: json.loads(caption) for path, caption in entry.findall(text)}
    expected = {
        "plots/tau_sweep.png": "Test top-1 of every post-hoc variant (PN, post-hoc logit adjustment",
        "plots/per_class.png": "Per-class test accuracy against",
        "plots/theta.png": "θ, the accumulated positive gradient",
        "plots/training_curves.png": "Training loss (on BaGMar's adjusted logits",
        "tables/paper_table.csv": "The paper-format table of the headline variant",
        "tables/results.csv": "Every variant at every imbalance factor",
        "tables/methods.csv": "The standard long-tailed methods beside BaGMar",
        "plots/methods.png": "Final-epoch top-1 (%) of every variant",
        "plots/headline_per_class.png": "Per-class test accuracy of plain cross-entropy (ce) and of the headline",
    }
    cards = {path for path in captions if path.endswith("/model.json")}  # every trained model's card
    assert cards == {str(p.relative_to(workdir)) for p in workdir.glob("results/demo/train/*/imba*/seed*/model.json")}
    assert len(cards) == 6 * len(SEEDS_RUN["seeds"]) * len(SEEDS_RUN["imbalance_factors"])
    assert all("model.safetensors, whose sha256 it records" in captions[path] for path in cards)
    assert sorted(set(captions) - cards) == sorted(f"results/demo/{path}" for path in expected)
    for path, caption in expected.items():
        assert caption in captions[f"results/demo/{path}"]
    embedded = set(re.findall(r"data:image/png;[^,]*filename=([\w.]+);base64,", text))
    assert embedded == {"tau_sweep.png", "per_class.png", "training_curves.png", "theta.png", "methods.png",
                        "headline_per_class.png"}
