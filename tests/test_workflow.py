"""The Snakemake workflow: the DAG it plans, the demo end to end, and what a change reruns.

Each test works in a copy of the project under tmp_path, so the checkout is never touched.
"""

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from project import ROOT, SEEDS_RUN, copy_project, edit_config, job_counts, planned_jobs, snakemake


@pytest.fixture
def demo(demo_run):
    """The README's demo command, run once per session (tests/conftest.py); never written to."""
    return demo_run


def test_paper_config_plans_the_paper_dag(tmp_path):
    workdir = copy_project(tmp_path)
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    assert len(config["seeds"]) == 3 and config["fusion"] == "trainings_and_seeds"
    once = {"cifar100_dataset": 1, "split": 4, "aggregate": 1, "render": 1, "readme": 1, "plots": 1, "all": 1}
    trainings = len(config["trainings"])
    assert set(config["trainings"]) == {"ce", "BaGMar", "BaGMar_pn", "LA", "LDAM_DRW", "LDAM_DRW_released"}
    # one fused GPU job per imbalance factor: 5 trainings x 3 seeds; one evaluation job per group, evaluating
    # each model under every variant of its training (ce: plain, PN, post-hoc LA, tau-norm); LDAM-DRW under its
    # released recipe trains alone, one job per imbalance factor and seed
    assert planned_jobs(workdir) == {**once, "train": 4, "evaluate": 4, "train_alone": 12, "evaluate_alone": 12,
                                     "export_model": 4, "export_model_alone": 12}  # every model with its card
    edit_config(workdir / "config" / "config.yaml", lambda c: c.update(seeds=[0], fusion="none"))
    assert planned_jobs(workdir, "--configfile", "config/config.yaml") == {**once, "train": trainings * 4,
                                                                           "evaluate": trainings * 4,
                                                                           "export_model": trainings * 4}


def planned_trainings(workdir, *args) -> dict[str, list[str]]:
    """Each planned training job's {group} and its output files, from the dry run's rule blocks."""
    run = snakemake(workdir, "-n", *args)
    assert run.returncode == 0, run.stdout + run.stderr
    jobs = re.findall(r"^rule (\S+):\n((?:[ \t]+\S.*\n)+)", run.stdout + run.stderr, re.M)
    plan = {}
    for rule, body in jobs:
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", body, re.M))
        if "output" in fields and "/train/" in fields["output"] and not rule.startswith("export_model"):
            # the fused (or single) groups; under fusion, a training with a named recipe of its own trains alone
            assert rule == ("train_alone" if "group=LDAM_DRW_released/" in fields["wildcards"] and
                            "fusion=none" not in args else "train"), (rule, fields["wildcards"])
            plan[fields["wildcards"]] = fields["output"].split(", ")
    return plan


def test_one_training_rule_whatever_the_fusion_and_the_same_files(tmp_path):
    """The paper plan: one rule `train` over {group}, 60, 12 or 4 jobs of the five fused trainings; LDAM-DRW under
    its released recipe alone (`train_alone`, 12 jobs) under fusion; every member's files at one path."""
    workdir = copy_project(tmp_path)
    plans = {fusion: planned_trainings(workdir, "--config", f"fusion={fusion}")
             for fusion in ("none", "trainings", "trainings_and_seeds")}
    assert {fusion: len(plan) for fusion, plan in plans.items()} == {"none": 72, "trainings": 12 + 12,
                                                                      "trainings_and_seeds": 4 + 12}
    assert "group=BaGMar_pn/imba100/seed2" in plans["none"] and "group=imba100/seed2" in plans["trainings"]
    assert "group=imba100" in plans["trainings_and_seeds"]
    assert "group=LDAM_DRW_released/imba100/seed2" in plans["trainings_and_seeds"]
    files = {fusion: sorted(f for outputs in plan.values() for f in outputs) for fusion, plan in plans.items()}
    assert len(files["none"]) == 72 * 4 == len(set(files["none"]))
    assert files["none"] == files["trainings"] == files["trainings_and_seeds"]
    assert "results/cifar100_lt/train/ce/imba200/seed1/test_logits.npz" in files["none"]


def test_the_comparison_methods_are_trainings_and_evaluations_of_the_same_dag(tmp_path):
    """Logit adjustment and LDAM-DRW as trainings fused with the paper's (one job per imbalance factor),
    post-hoc logit adjustment and tau-normalisation as evaluations: in the demo and the paper run."""
    workdir = copy_project(tmp_path)
    for configfile, seeds in (("config/demo.yaml", 1), ("config/config.yaml", 3)):
        config = yaml.safe_load((workdir / configfile).read_text())
        rules = {v["evaluation"] for v in config["variants"].values()}
        assert rules == {"plain", "pn", "logit_adjustment", "tau_norm"}
        losses = {t.get("loss", "bagmar") for t in config["trainings"].values()}
        assert losses == {"bagmar", "logit_adjusted", "ldam_drw"}
        plan = planned_trainings(workdir, "--configfile", configfile)
        fused_trainings = {name for name, t in config["trainings"].items() if "recipe" not in t}
        fused = {group: outputs for group, outputs in plan.items() if not group.startswith("group=LDAM_DRW_released")}
        assert sorted(fused) == [f"group=imba{f}" for f in sorted(map(str, config["imbalance_factors"]))]
        for group, outputs in fused.items():
            trained = {path.split("/train/")[1].split("/")[0] for path in outputs}
            assert trained == fused_trainings, group
            assert len(outputs) == 4 * len(fused_trainings) * seeds
        assert len(plan) - len(fused) == (len(config["trainings"]) - len(fused_trainings)) * seeds * len(fused)


def test_demo_runs_the_whole_dag_and_fills_its_page(demo):
    workdir = demo
    results = workdir / "results" / "demo"
    config = yaml.safe_load((workdir / "config" / "demo.yaml").read_text())
    assert len(list((results / "train").glob("*/imba*/seed0/model.pt"))) == 5 * 4 == len(config["trainings"]) * 4
    assert len(list((results / "eval").glob("*/imba*/seed0/tau_sweep.csv"))) == 5 * 4  # one file per model
    assert len(pd.read_csv(results / "tables" / "results.csv")) == len(config["variants"]) * 4
    for rule in ("split", "train", "evaluate"):
        assert list((results / "logs" / rule).rglob("*.log")) and list((results / "benchmarks" / rule).rglob("*.tsv"))
    metrics = pd.read_csv(results / "train" / "BaGMar_pn" / "imba100" / "seed0" / "metrics.csv")
    assert list(metrics.columns[:5]) == ["epoch", "lr", "train_loss", "train_acc", "test_acc"]
    assert len(metrics) == config["recipe"]["epochs"]

    assert (results / "tables" / "results.md").read_text().startswith("### Results: `demo` (synthetic)")
    page = workdir / "docs" / "demo.md"  # report.readme in config/demo.yaml
    text = page.read_text()
    section = text[text.index("<!-- BEGIN results: demo -->"):text.index("<!-- END results: demo -->")]
    assert "### Results: `demo` (synthetic)" in section
    links = re.findall(r"\]\(([^)]+)\)", section)
    assert len(links) == 8 and all((page.parent / link).is_file() for link in links)  # each IF's log and model
    # the page shows this run's numbers, not a stale or made-up table
    table = pd.read_csv(results / "tables" / "results.csv")
    for row in table[table["variant"] == "BaGMar_pn"].itertuples():
        assert f"| {row.imbalance_factor:g} | {row.top1:.1f} | {row.test_best_top1:.1f} (τ={row.test_best_tau:g}) |" in section


def test_the_demo_writes_the_committed_tables_again_on_the_cpu_that_wrote_them(demo):
    """The committed demo tables (docs/demo.md) are the demo's own: on a CPU of the vendor and torch capability
    recorded beside them, the demo writes them again bit for bit (float32 kernels differ between CPUs)."""
    import torch

    committed = (ROOT / "docs" / "demo.md").read_text()
    recorded = re.search(r"\(vendor (\w+), torch CPU capability (\w+)\)", committed)
    assert recorded, "docs/demo.md says on which CPU its tables were written"
    vendor = re.search(r"^vendor_id\s*:\s*(\w+)", Path("/proc/cpuinfo").read_text(), re.M)
    here = (vendor[1] if vendor else "unknown", torch.backends.cpu.get_cpu_capability())
    if here != recorded.groups():
        pytest.skip(f"the committed tables come from a {recorded.groups()} CPU; this one is {here}")
    begin, end = "<!-- BEGIN results: demo -->", "<!-- END results: demo -->"
    page = (demo / "docs" / "demo.md").read_text()
    assert page[page.index(begin):page.index(end)] == committed[committed.index(begin):committed.index(end)]


def rerun_plan(demo, tmp_path, change) -> dict[str, int]:
    """Copy the finished demo (time stamps and Snakemake's metadata too), apply a change, dry-run.

    The copy plans nothing before the change (test_comments_docstrings_and_formatting_plan_nothing shows it
    for the demo itself), so every planned job is the change's.
    """
    workdir = tmp_path / "copy"
    shutil.copytree(demo, workdir)
    time.sleep(0.01)
    change(workdir)
    return planned_jobs(workdir, "--configfile", "config/demo.yaml")


def replace_in(path, old, new):
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))


def test_comments_docstrings_and_formatting_plan_nothing(demo, tmp_path):
    """Every file a job runs or that defines the workflow, edited without changing its meaning."""
    def change(workdir):
        code = [*(workdir / "src" / "bagmar").glob("*.py"), *(workdir / "scripts").glob("*.py"),
                *(workdir / "workflow" / "rules").glob("*.smk"), workdir / "Snakefile"]
        for path in code:
            with open(path, "a") as f:
                f.write("\n# an edit\n")
        replace_in(workdir / "src" / "bagmar" / "method" / "loss.py", '"""z\' of SPEC §4', '"""The adjusted logits z\' of SPEC §4')
        replace_in(workdir / "src" / "bagmar" / "data" / "long_tail.py", "def class_counts(labels: np.ndarray, num_classes: int)",
                   "def class_counts(labels: np.ndarray,\n                 num_classes: int)")  # formatting
        replace_in(workdir / "scripts" / "train.py", "import torch\n", "import torch  # tensors\n")

    assert rerun_plan(demo, tmp_path, change) == {}


def test_changing_the_loss_arithmetic_reruns_trainings_not_data_or_splits(demo, tmp_path):
    def change(workdir):
        replace_in(workdir / "src" / "bagmar" / "method" / "loss.py", "torch.log(stats.theta + EPS)", "torch.log(stats.theta + 2 * EPS)")

    # and every model's card (one export job a training group, as it trained)
    assert rerun_plan(demo, tmp_path, change) == {"train": 4, "evaluate": 4, "export_model": 4, "aggregate": 1,
                                                  "render": 1, "readme": 1, "plots": 1, "all": 1}


def test_changing_the_shot_group_thresholds_reruns_evaluations_and_what_follows(demo, tmp_path):
    def change(workdir):
        replace_in(workdir / "src" / "bagmar" / "evaluation" / "evaluate.py", "FEW_SHOT_BELOW = 20", "FEW_SHOT_BELOW = 25")

    # the cards' figures too (many/medium/few), never a training
    assert rerun_plan(demo, tmp_path, change) == {"evaluate": 4, "export_model": 4, "aggregate": 1, "render": 1,
                                                  "readme": 1, "plots": 1, "all": 1}


def test_the_dry_run_says_which_module_changed(demo, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(demo, workdir)
    replace_in(workdir / "src" / "bagmar" / "evaluation" / "evaluate.py", "FEW_SHOT_BELOW = 20", "FEW_SHOT_BELOW = 25")
    run = snakemake(workdir, "-n", "--configfile", "config/demo.yaml", jobs="short")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    # one param a module: the reason holds the changed module's old and new hash, and nothing else
    reasons = re.findall(r"^\[[\d:]+\] evaluate \(group=imba\d+\): changed before: (.*) now: (.*)$", out, re.M)
    assert len(reasons) == 4, out
    for before, now in reasons:
        assert re.fullmatch(r"'bagmar\.evaluation\.evaluate [0-9a-f]{12}'", before.strip()), before
        assert re.fullmatch(r"'bagmar\.evaluation\.evaluate [0-9a-f]{12}'", now.strip()), now


def test_a_one_value_change_reads_in_one_screen(demo, tmp_path):
    """A dry run after one λ changes: every job on one short line, the training's reason naming the value."""
    workdir = tmp_path / "copy"
    shutil.copytree(demo, workdir)
    edit_config(workdir / "config" / "demo.yaml", lambda c: c["trainings"]["BaGMar_pn"].update(lambda1=1.3))
    run = snakemake(workdir, "-n", "--configfile", "config/demo.yaml", jobs="short")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    lines = out.splitlines()
    assert len(lines) <= 60, out
    assert max(map(len, lines)) <= 200, max(lines, key=len)
    train = [line for line in lines if re.match(r"^\[[\d:]+\] train \(group=imba200\)", line)]
    assert len(train) == 1 and "BaGMar_pn: lambda1=1.2, lambda2=0.9 #" in train[0], out
    assert "BaGMar_pn: lambda1=1.3, lambda2=0.9 #" in train[0], train[0]


def test_changing_the_tau_grid_reruns_post_hoc_evaluations_only(demo, tmp_path):
    def change(workdir):
        edit_config(workdir / "config" / "demo.yaml", lambda c: c["tau_grid"].update(stop=3.0))

    # every group holds trainings with a post-hoc variant (ce: PN, LA, tau-norm; BaGMar_pn, LA, LDAM_DRW: PN), and
    # every card's label-free tau is chosen from the grid
    assert rerun_plan(demo, tmp_path, change) == {"evaluate": 4, "export_model": 4, "aggregate": 1, "render": 1,
                                                  "readme": 1, "plots": 1, "all": 1}


def test_changing_one_variants_rule_reruns_only_the_evaluations_of_its_trainings_groups(demo, tmp_path):
    def change(workdir):
        edit_config(workdir / "config" / "demo.yaml", lambda c: c["variants"]["LA_pn"].update(evaluation="tau_norm"))

    assert rerun_plan(demo, tmp_path, change) == {"evaluate": 4, "aggregate": 1, "render": 1, "readme": 1, "plots": 1,
                                                  "all": 1}


def test_changing_lambda1_of_one_training_reruns_only_the_groups_that_hold_it(demo, tmp_path):
    """The demo fuses every training of an imbalance factor (as the paper run), so all 4 groups hold
    BaGMar_pn and rerun, with every model's evaluations; no data or split job does. Unfused, a training's
    groups hold it alone (tests/test_layout.py), so the same change would rerun its 4 jobs only."""
    def change(workdir):
        edit_config(workdir / "config" / "demo.yaml", lambda c: c["trainings"]["BaGMar_pn"].update(lambda1=1.3))

    assert rerun_plan(demo, tmp_path, change) == {"train": 4, "evaluate": 4, "export_model": 4, "aggregate": 1,
                                                  "render": 1, "readme": 1, "plots": 1, "all": 1}


def test_a_cosmetic_template_change_reruns_only_the_rendering(demo, tmp_path):
    def change(workdir):
        with open(workdir / "templates" / "results.md.j2", "a") as f:
            f.write("\n")

    assert rerun_plan(demo, tmp_path, change) == {"render": 1, "readme": 1, "all": 1}


def test_a_plotting_change_reruns_only_the_plots(demo, tmp_path):
    def change(workdir):
        path = workdir / "src" / "bagmar" / "evaluation" / "plots.py"
        text = path.read_text()
        assert text.count("alpha=0.9,") == 1
        path.write_text(text.replace("alpha=0.9,", "alpha=0.8,"))

    assert rerun_plan(demo, tmp_path, change) == {"plots": 1, "all": 1}


@pytest.mark.parametrize(
    "edit, message",
    [  # a schema problem and a cross-field one; tests/test_config.py checks every rule of bagmar.config
        (lambda c: c.update(colour="red"), "'colour' was unexpected); allowed keys: run_name"),
        (lambda c: c["variants"]["ce_pn"].update(training="nope"), "variants.ce_pn.training"),
    ],
)
def test_invalid_config_is_refused_before_any_job(tmp_path, edit, message):
    workdir = copy_project(tmp_path)
    edit_config(workdir / "config" / "demo.yaml", edit)
    run = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    assert run.returncode != 0
    assert message in run.stderr and run.stderr.count("Error: invalid configuration") == 1
    assert "Traceback" not in run.stderr
    assert not (workdir / "results").exists()


@pytest.fixture
def fused_demo(seeds_run):
    """The demo with every training and seed of an imbalance factor in one job (tests/conftest.py, SEEDS_RUN)."""
    return seeds_run


def test_fused_jobs_write_every_models_own_files(fused_demo):
    workdir = fused_demo
    results = workdir / "results" / "demo"
    factors, seeds = SEEDS_RUN["imbalance_factors"], SEEDS_RUN["seeds"]
    trainings = [name for name in yaml.safe_load((workdir / "config" / "demo.yaml").read_text())["trainings"]
                 if name != "LDAM_DRW_released"]  # trains alone (below)
    models = list((results / "train").glob("*/imba*/seed*/model.pt"))
    assert len(models) == (len(trainings) + 1) * len(factors) * len(seeds)
    logs = sorted(str(p.relative_to(results / "logs" / "train")) for p in (results / "logs" / "train").rglob("*.log"))
    alone = [f"LDAM_DRW_released/imba{f}/seed{s}.log" for f in factors for s in seeds]
    assert logs == sorted([f"imba{f}.log" for f in factors] + alone)  # one per group, named after it
    log = (results / "logs" / "train" / f"imba{factors[0]}.log").read_text()
    for training in trainings:
        for seed in seeds:
            assert f"{training} IF {factors[0]} seed {seed} epoch 2/2" in log
    # each model is saved in ResNet32's own layout
    import torch
    from bagmar.method.model import ResNet32
    member = results / "train" / "BaGMar" / f"imba{factors[-1]}" / f"seed{seeds[1]}" / "model.pt"
    ResNet32(20, 4).load_state_dict(torch.load(member, weights_only=True))
    def losses(training, seed):
        return pd.read_csv(results / "train" / training / f"imba{factors[-1]}" / f"seed{seed}" / "metrics.csv")["train_loss"]
    assert not losses("ce", seeds[0]).equals(losses("BaGMar", seeds[0]))
    assert not losses("ce", seeds[0]).equals(losses("ce", seeds[1]))


def test_fused_a_variant_change_reruns_its_groups_never_the_splits(fused_demo, tmp_path):
    def change(workdir):
        edit_config(workdir / "config" / "demo.yaml", lambda c: c["trainings"]["BaGMar_pn"].update(lambda1=1.3))

    # every group holds BaGMar_pn, so both rerun and with them every model's evaluations; the splits and the
    # data set do not
    groups = len(SEEDS_RUN["imbalance_factors"])  # each evaluated by one job, as it trained
    # the fused groups' cards (the training alone does not rerun)
    assert rerun_plan(fused_demo, tmp_path, change) == {"train": groups, "evaluate": groups, "export_model": groups,
                                                        "aggregate": 1, "render": 1, "readme": 1, "plots": 1, "all": 1}


def test_fused_a_new_imbalance_factor_runs_only_its_split_and_group(fused_demo, tmp_path):
    def change(workdir):
        edit_config(workdir / "config" / "demo.yaml",
                    lambda c: c.update(imbalance_factors=[*SEEDS_RUN["imbalance_factors"], 50]))

    alone = len(SEEDS_RUN["seeds"])  # the training with a named recipe: one job per seed at the new factor
    assert rerun_plan(fused_demo, tmp_path, change) == {"split": 1, "train": 1, "evaluate": 1, "train_alone": alone,
                                                        "evaluate_alone": alone, "export_model": 1,
                                                        "export_model_alone": alone,
                                                        "aggregate": 1, "render": 1, "readme": 1, "plots": 1, "all": 1}


def test_fused_jobs_still_take_the_gpu_one_at_a_time(tmp_path):
    workdir = copy_project(tmp_path)
    edit_config(workdir / "config" / "config.yaml", lambda c: c.update(fusion="trainings_and_seeds"))
    run = snakemake(workdir, "-n", "--configfile", "config/config.yaml", "--resources", "gpu=1", "--printshellcmds")
    assert run.returncode == 0, run.stderr
    assert job_counts(run.stdout + run.stderr)["train"] == 4  # 15 models (5 trainings x 3 seeds) per IF
    assert "gpu=1" in run.stdout + run.stderr


OWN_LOSSES = '''import torch.nn.functional as F


def focal(logits, labels):
    """Focal loss (Lin et al., 2017), gamma = 2."""
    log_p = F.log_softmax(logits, dim=-1).gather(-1, labels[:, None]).squeeze(-1)
    return (-(1 - log_p.exp()) ** 2 * log_p).mean()
'''


def test_a_loss_of_ones_own_plans_trains_and_reruns_when_its_code_changes(tmp_path):
    """trainings.<name>.loss: module:function, a module of the project's own: the demo plans with it, a wrong
    name stops the run before any job in one line, a training runs it, and only a change of its code reruns."""
    workdir = copy_project(tmp_path)
    (workdir / "my_losses.py").write_text(OWN_LOSSES)
    demo = workdir / "config" / "demo.yaml"
    edit_config(demo, lambda c: c["trainings"].update(ce={"loss": "my_losses:focal"}))
    assert planned_jobs(workdir, "--configfile", "config/demo.yaml")["train"] == 4

    edit_config(demo, lambda c: c["trainings"].update(ce={"loss": "my_losses:focall"}))
    run = snakemake(workdir, "-n", "--configfile", "config/demo.yaml")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "trainings.ce.loss 'my_losses:focall': module my_losses" in run.stderr
    assert "has no function focall" in run.stderr

    edit_config(demo, lambda c: (c.update(imbalance_factors=[100]), c["recipe"].update(epochs=1, warmup_epochs=1),
                                 c["trainings"].update(ce={"loss": "my_losses:focal"})))
    run = snakemake(workdir, "--configfile", "config/demo.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    metrics = workdir / "results" / "demo" / "train" / "ce" / "imba100" / "seed0" / "metrics.csv"
    assert metrics.is_file()
    assert planned_jobs(workdir, "--configfile", "config/demo.yaml") == {}

    replace_in(workdir / "my_losses.py", '"""Focal loss (Lin et al., 2017), gamma = 2."""', "# gamma = 2")
    assert planned_jobs(workdir, "--configfile", "config/demo.yaml") == {}  # a comment and a docstring: nothing
    replace_in(workdir / "my_losses.py", "** 2", "** 3")
    plan = planned_jobs(workdir, "--configfile", "config/demo.yaml")
    assert plan["train"] == 1 and "split" not in plan and "synthetic_dataset" not in plan, plan
    model = metrics.with_name("model.pt")
    before = model.read_bytes()
    run = snakemake(workdir, "--configfile", "config/demo.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    # the rerun trains the changed loss: the finished run's checkpoints belong to the old code and are not resumed
    log = (workdir / "results" / "demo" / "logs" / "train" / "imba100.log").read_text()
    rerun = log.split("ce IF 100 seed 0: Recipe(")[-1]
    assert "belongs to other settings or data; not resuming from it" in rerun and "after epoch" not in rerun
    assert model.read_bytes() != before


def test_a_training_with_a_named_recipe_trains_alone_under_it_and_the_methods_table_says_so(fused_demo):
    """LDAM-DRW under its released recipe beside the fused group: its own job per seed, the recipe's learning rate
    every epoch (bagmar.config.recipe.learning_rate), its own batches, and a Recipe column in the tables."""
    from bagmar.config.recipe import Recipe, learning_rate, named_recipe

    results = fused_demo / "results" / "demo"
    epochs = SEEDS_RUN["alone"]["epochs"]
    recipe = Recipe(**{**named_recipe("ldam_drw_released"), "epochs": epochs, "loss": "ldam_drw"})
    for seed in SEEDS_RUN["seeds"]:
        metrics = pd.read_csv(results / "train" / "LDAM_DRW_released" / "imba100" / f"seed{seed}" / "metrics.csv")
        assert metrics["lr"].tolist() == pytest.approx([learning_rate(e, recipe) for e in range(1, epochs + 1)])
        assert metrics["lr"].iloc[0] == pytest.approx(0.02) and metrics["lr"].iloc[-1] == pytest.approx(1e-5)
    methods = pd.read_csv(results / "tables" / "methods.csv")
    assert dict(zip(methods["variant"], methods["recipe"]))["LDAM_DRW_released"] == "ldam_drw_released"
    assert set(methods.loc[methods["variant"] != "LDAM_DRW_released", "recipe"]) == {"shared"}
    rendered = (results / "tables" / "results.md").read_text()
    assert "| Variant | Training | Rule | Recipe |" in rendered
    assert "| LDAM_DRW_released | LDAM_DRW_released | plain | ldam_drw_released |" in rendered


def test_every_training_of_the_demo_is_a_model_file_with_its_card(demo):
    """model.safetensors and model.json beside every model.pt; each card's sha256 is its file's, and
    bagmar.load_model on the test images gives the training's saved test logits."""
    import numpy as np
    import torch

    import bagmar
    from bagmar.data.long_tail import ImageSet
    from bagmar.models.files import prepare_images, sha256

    results = demo / "results" / "demo"
    images = ImageSet.load(results / "data" / "images.npz")
    test_images = torch.as_tensor(images.test_images).permute(0, 3, 1, 2)
    cards = sorted(results.glob("train/*/imba*/seed*/model.json"))
    assert len(cards) == len(list(results.glob("train/*/imba*/seed*/model.pt"))) == 5 * 4
    sweeps = pd.read_csv(results / "tables" / "evaluations.csv")
    for path in cards:
        network, card = bagmar.load_model(path)
        assert card["weights"]["sha256"] == sha256(path.with_name("model.safetensors"))
        assert (card["training"], f"imba{card['imbalance_factor']:g}") == (path.parts[-4], path.parts[-3])
        assert card["input"]["crop"] == 16 and len(card["class_prior"]) == 20 and card["code"]["train.py"]
        with torch.no_grad():
            logits = network(prepare_images(test_images, card)).numpy()
        saved = np.load(path.with_name("test_logits.npz"))
        assert np.allclose(logits, saved["logits"], rtol=1e-4, atol=1e-4), path
        plain = sweeps[(sweeps["model"] == "final") & (sweeps["evaluation"] == "plain")
                       & (sweeps["variant"] == card["training"]) & (sweeps["imbalance_factor"] == card["imbalance_factor"])]
        if len(plain):  # the card's own figures are the evaluation's
            assert card["figures"]["plain"]["top1"] == pytest.approx(plain["top1"].iloc[0])


def test_the_model_files_add_only_their_own_jobs_to_a_finished_run(demo, tmp_path):
    """Removing every model file plans one export job per training group and the final target: nothing
    retrains."""
    def change(workdir):
        for path in [*workdir.glob("results/demo/train/*/imba*/seed*/model.safetensors"),
                     *workdir.glob("results/demo/train/*/imba*/seed*/model.json")]:
            path.unlink()

    assert rerun_plan(demo, tmp_path, change) == {"export_model": 4, "all": 1}
