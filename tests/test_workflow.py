"""The Snakemake workflow: the DAG it plans, the demo end to end, and what a change reruns.

Each test works in a copy of the project under tmp_path, so the checkout is never touched.
"""

import re
import shutil
import time

import pandas as pd
import pytest
import yaml
from project import copy_project, edit_config, planned_jobs, snakemake

DEMO_BUDGET_S = 180  # issue 2: the demo DAG on 2 CPU cores in at most 3 minutes


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The README's demo command, run once in a fresh copy of the project."""
    workdir = copy_project(tmp_path_factory.mktemp("demo"))
    started = time.perf_counter()
    run = snakemake(workdir, "--configfile", "config/demo.yaml")
    seconds = time.perf_counter() - started
    assert run.returncode == 0, run.stdout + run.stderr
    print(f"demo DAG: {seconds:.0f} s")
    return workdir, seconds


def test_paper_config_plans_the_paper_dag(tmp_path):
    workdir = copy_project(tmp_path)
    seeds = len(yaml.safe_load((workdir / "config" / "config.yaml").read_text())["seeds"])
    assert seeds == 3
    once = {"cifar100_dataset": 1, "split": 4, "aggregate": 1, "render": 1, "plots": 1, "all": 1}
    assert planned_jobs(workdir) == {**once, "train": 12 * seeds, "evaluate": 16 * seeds}
    # per seed: 3 trainings per imbalance factor (ce and ce_pn share one) and 4 evaluations
    edit_config(workdir / "config" / "config.yaml", lambda c: c.update(seeds=[0]))
    assert planned_jobs(workdir, "--configfile", "config/config.yaml") == {**once, "train": 12, "evaluate": 16}


def test_demo_runs_the_whole_dag_and_fills_the_readme(demo):
    workdir, seconds = demo
    assert seconds <= DEMO_BUDGET_S
    results = workdir / "results" / "demo"
    assert len(list((results / "train").glob("*/imba*/seed0/model.pt"))) == 12
    assert len(list((results / "eval").glob("*/imba*/seed0/tau_sweep.csv"))) == 16
    for rule in ("split", "train", "evaluate"):
        assert list((results / "logs" / rule).glob("*.log")) and list((results / "benchmarks" / rule).glob("*.tsv"))
    metrics = pd.read_csv(results / "train" / "BaGMar_pn" / "imba100" / "seed0" / "metrics.csv")
    assert list(metrics.columns[:5]) == ["epoch", "lr", "train_loss", "train_acc", "test_acc"]
    assert len(metrics) == yaml.safe_load((workdir / "config" / "demo.yaml").read_text())["recipe"]["epochs"]

    assert (results / "tables" / "results.md").read_text().startswith("### Results: `demo` (synthetic)")
    readme = (workdir / "README.md").read_text()
    section = readme[readme.index("<!-- BEGIN results: demo -->"):readme.index("<!-- END results: demo -->")]
    assert "### Results: `demo` (synthetic)" in section
    links = re.findall(r"\]\(([^)]+)\)", section)
    assert len(links) == 8 and all((workdir / link).is_file() for link in links)  # each IF's log and model
    # the README shows this run's numbers, not a stale or made-up table
    table = pd.read_csv(results / "tables" / "results.csv")
    for row in table[table["variant"] == "BaGMar_pn"].itertuples():
        assert f"| {row.imbalance_factor:g} | {row.top1:.1f} | {row.test_best_top1:.1f} (τ={row.test_best_tau:g}) |" in section


def rerun_plan(demo, tmp_path, change) -> dict[str, int]:
    """Copy the finished demo (time stamps and Snakemake's metadata too), apply a change, dry-run."""
    workdir = tmp_path / "copy"
    shutil.copytree(demo[0], workdir)
    assert planned_jobs(workdir, "--configfile", "config/demo.yaml") == {}
    time.sleep(0.01)
    change(workdir)
    return planned_jobs(workdir, "--configfile", "config/demo.yaml")


def test_changing_the_loss_code_reruns_trainings_not_splits(demo, tmp_path):
    def change(workdir):
        with open(workdir / "src" / "bagmar" / "loss.py", "a") as f:
            f.write("\n# an edit\n")

    assert rerun_plan(demo, tmp_path, change) == {"train": 12, "evaluate": 16, "aggregate": 1, "render": 1,
                                                  "plots": 1, "all": 1}


def test_changing_the_tau_grid_reruns_pn_evaluations_only(demo, tmp_path):
    def change(workdir):
        edit_config(workdir / "config" / "demo.yaml", lambda c: c["tau_grid"].update(stop=3.0))

    assert rerun_plan(demo, tmp_path, change) == {"evaluate": 8, "aggregate": 1, "render": 1, "plots": 1, "all": 1}


def test_changing_lambda1_of_one_variant_reruns_only_its_trainings(demo, tmp_path):
    def change(workdir):
        edit_config(workdir / "config" / "demo.yaml", lambda c: c["trainings"]["BaGMar_pn"].update(lambda1=1.3))

    assert rerun_plan(demo, tmp_path, change) == {"train": 4, "evaluate": 4, "aggregate": 1, "render": 1,
                                                  "plots": 1, "all": 1}


def test_a_cosmetic_template_change_reruns_only_the_rendering(demo, tmp_path):
    def change(workdir):
        with open(workdir / "templates" / "results.md.j2", "a") as f:
            f.write("\n")

    assert rerun_plan(demo, tmp_path, change) == {"render": 1, "all": 1}


def test_a_plotting_change_reruns_only_the_plots(demo, tmp_path):
    def change(workdir):
        with open(workdir / "src" / "bagmar" / "plots.py", "a") as f:
            f.write("\n# another colour\n")

    assert rerun_plan(demo, tmp_path, change) == {"plots": 1, "all": 1}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["recipe"].update(epochs=-1), "epochs"),
        (lambda c: c.update(imbalance_factors=[0.5]), "imbalance_factors"),
        (lambda c: c.update(colour="red"), "'colour' was unexpected); allowed keys: run_name"),
        (lambda c: c["variants"]["ce_pn"].update(training="nope"), "variants.ce_pn.training"),
        (lambda c: c.update(tau_grid={"start": 0.0, "stop": 2.0, "step": 0.3}), "tau = 1.0"),
        (lambda c: c.update(tau_grid={"start": 2.0, "stop": 1.0, "step": 0.1}), "tau_grid.stop"),
        (lambda c: c["trainings"]["BaGMar"].update(lambda1=float("nan")), "trainings.BaGMar.lambda1 = nan"),
        (lambda c: c["recipe"].update(batch_size="64"), "recipe.batch_size: '64' is not of type 'integer'"),
        (lambda c: c["dataset"].update(name="imagenet"), "dataset.name: 'imagenet' is not one of"),
        (lambda c: c["recipe"].update(batch_size=5000), "recipe.batch_size (5000) is larger than the smallest"),
        (lambda c: c["recipe"].update(warmup_epochs=50), "recipe.warmup_epochs (50) exceeds recipe.epochs"),
    ],
)
def test_invalid_config_is_refused_before_any_job(tmp_path, edit, message):
    workdir = copy_project(tmp_path)
    edit_config(workdir / "config" / "demo.yaml", edit)
    run = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    assert run.returncode != 0
    assert message in run.stdout + run.stderr
    assert not (workdir / "results").exists()
