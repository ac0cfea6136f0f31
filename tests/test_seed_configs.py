"""The seed's interface: config/CIFAR100_LT/*.yaml and `python main.py --cfg ...`.

The seed configs (one per variant and imbalance factor) are generated from config/config.yaml (`python main.py --write-seed-configs`);
these tests fail when either changes without the other, check the values against SPEC §3-6, and
run one seed config end to end on the synthetic data set, where the workflow then reuses its jobs.
"""

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from project import copy_project, env, job_counts, spec_recipe
from snakemake.utils import validate

from bagmar.config import problems

ROOT = Path(__file__).parents[1]
SEED_DIR = ROOT / "config" / "CIFAR100_LT"
SCHEMA = ROOT / "src" / "bagmar" / "config" / "schema.yaml"

spec = importlib.util.spec_from_file_location("seed_main", ROOT / "main.py")
main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(main)

PAPER = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
SEEDS = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(SEED_DIR.glob("*.yaml"))}

# SPEC §3 (recipe), §5 (tau grid), §6 (the four variants), §9 (the comparison methods).
SPEC_RECIPE = {**spec_recipe(), "width": 16, "padding": 4, "cutout_size": 16, "autoaugment": "released",
               "precision": "float32"}  # SPEC §3: the paper run should use the released AutoAugment policy
CE = {"name": "ce", "lambda1": 0.0, "lambda2": 0.0}
LA = {"name": "LA", "loss": "logit_adjusted", "tau": 1.0}
LDAM_DRW = {"name": "LDAM_DRW", "loss": "ldam_drw"}  # s, margin, DRW: the schema's defaults (Cao et al.)
SPEC_VARIANTS = {  # variant: (training, evaluation)
    "ce": (CE, "plain"),
    "ce_pn": (CE, "pn"),
    "BaGMar": ({"name": "BaGMar", "lambda1": 1.0, "lambda2": 1.0}, "plain"),
    "BaGMar_pn": ({"name": "BaGMar_pn", "lambda1": 1.2, "lambda2": 0.9}, "pn"),
    "ce_la": (CE, "logit_adjustment"),
    "ce_tau_norm": (CE, "tau_norm"),
    "LA": (LA, "plain"),
    "LA_pn": (LA, "pn"),
    "LDAM_DRW": (LDAM_DRW, "plain"),
    "LDAM_DRW_pn": (LDAM_DRW, "pn"),
    "LDAM_DRW_released": ({"name": "LDAM_DRW_released", "loss": "ldam_drw", "recipe": "ldam_drw_released"}, "plain"),
}


def disagreements(seeds: dict[str, dict], config: dict) -> list[str]:
    """Every value where the seed configs and a workflow configuration differ, one line each."""
    expected = main.seed_configs(config)
    problems = [f"{name}.yaml: no such experiment in the workflow config" for name in seeds.keys() - expected.keys()]
    problems += [f"{name}.yaml: missing (the workflow config runs it)" for name in expected.keys() - seeds.keys()]

    def walk(name, key, ours, theirs):
        if isinstance(ours, dict) and isinstance(theirs, dict):
            for k in ours.keys() | theirs.keys():
                walk(name, f"{key}.{k}" if key else k, ours.get(k, "<absent>"), theirs.get(k, "<absent>"))
        elif ours != theirs or type(ours) is not type(theirs):
            problems.append(f"{name}.yaml: {key} is {ours!r}, the workflow config gives {theirs!r}")

    for name in seeds.keys() & expected.keys():
        walk(name, "", seeds[name], expected[name])
    return sorted(problems)


def test_there_is_a_seed_config_per_variant_and_imbalance_factor():
    names = {f"{v}_imba{f}" for v in SPEC_VARIANTS for f in (200, 100, 50, 10)}
    assert set(SEEDS) == names


def test_seed_configs_agree_with_the_workflow_config():
    problems = disagreements(SEEDS, PAPER)
    assert not problems, "run `python main.py --write-seed-configs` after changing config/config.yaml:\n" + "\n".join(problems)


def test_seed_configs_are_the_generated_files_byte_for_byte(tmp_path):
    """Key order matters too: Snakemake compares a job's parameters by their repr."""
    main.write_seed_configs(ROOT / "config" / "config.yaml", tmp_path)
    for path in SEED_DIR.glob("*.yaml"):
        assert path.read_text() == (tmp_path / path.name).read_text().replace(str(tmp_path), "config/CIFAR100_LT"), \
            f"{path.name} differs from `python main.py --write-seed-configs`"


def test_a_changed_value_is_reported(tmp_path):
    """The agreement check catches a single value changed on either side."""
    tampered = copy.deepcopy(SEEDS)
    tampered["BaGMar_pn_imba50"]["training"]["lambda1"] = 1.3
    assert disagreements(tampered, PAPER) == [
        "BaGMar_pn_imba50.yaml: training.lambda1 is 1.3, the workflow config gives 1.2"]
    changed = copy.deepcopy(PAPER)
    changed["recipe"]["epochs"] = 180
    assert len(disagreements(SEEDS, changed)) == len(SEEDS) == 44


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_each_seed_config_has_the_papers_values(name):
    seed = SEEDS[name]
    training, evaluation = SPEC_VARIANTS[seed["variant"]]
    assert name == f"{seed['variant']}_imba{seed['imbalance_factor']}"
    assert seed["imbalance_factor"] in (200, 100, 50, 10)
    assert seed["training"] == training
    assert seed["evaluation"] == evaluation
    assert seed["recipe"] == SPEC_RECIPE
    assert seed["tau_grid"] == {"start": 0.0, "stop": 2.0, "step": 0.1}
    assert seed["dataset"]["name"] == "cifar100" and seed["run_name"] == PAPER["run_name"]


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_each_seed_config_is_a_valid_workflow_config(name):
    config = main.workflow_config(SEEDS[name])
    assert problems(config) == []  # the configuration layer accepts it, and so does Snakemake's own validator
    validate(config, str(SCHEMA))  # (which fills the schema's defaults into it)
    assert list(config["variants"]) == [SEEDS[name]["variant"]] and len(config["imbalance_factors"]) == 1


def test_the_44_seed_configs_are_the_workflows_24_trainings_and_44_evaluations():
    trainings = {(s["training"]["name"], s["imbalance_factor"]) for s in SEEDS.values()}
    evaluations = {(s["variant"], s["imbalance_factor"]) for s in SEEDS.values()}
    assert len(trainings) == 24 and len(evaluations) == 44
    assert trainings == {(t, f) for t in PAPER["trainings"] for f in PAPER["imbalance_factors"]}
    assert evaluations == {(v, f) for v in PAPER["variants"] for f in PAPER["imbalance_factors"]}
    for f in PAPER["imbalance_factors"]:  # ce and ce_pn are one training, read twice
        assert SEEDS[f"ce_imba{f}"]["training"] == SEEDS[f"ce_pn_imba{f}"]["training"]


def test_the_cifar10_config_differs_from_the_paper_run_only_in_its_data():
    cifar10 = yaml.safe_load((ROOT / "config" / "cifar10_lt.yaml").read_text())
    assert cifar10["dataset"]["name"] == "cifar10"
    for key in PAPER.keys() | cifar10.keys():
        if key not in ("run_name", "dataset", "report"):
            assert cifar10.get(key) == PAPER.get(key), key
    assert cifar10["report"]["headline_variant"] == PAPER["report"]["headline_variant"]


def test_overrides_are_dotted_keys_with_yaml_values():
    seed = SEEDS["BaGMar_imba100"]
    changed = main.override(seed, ["recipe.epochs", "3", "dataset", "{name: synthetic}", "device", "cpu"])
    assert changed["recipe"]["epochs"] == 3 and changed["dataset"] == {"name": "synthetic"} and changed["device"] == "cpu"
    assert list(changed["recipe"]) == list(seed["recipe"])  # order kept
    assert seed["recipe"]["epochs"] == 200  # the loaded config is not modified


# --------------------------------------------------------------------------- the command itself


@pytest.mark.workflow
def test_the_seed_command_plans_one_experiments_jobs(tmp_path):
    workdir = copy_project(tmp_path / "project")
    run = subprocess.run([sys.executable, "main.py", "--cfg", "config/CIFAR100_LT/ce_pn_imba100.yaml", "-n",
                          "--cores", "2"], cwd=workdir, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    # the paper config fuses trainings and seeds: this experiment's seeds train in one GPU job, and are
    # evaluated in one job
    assert PAPER["fusion"] == "trainings_and_seeds"
    assert job_counts(output) == {"cifar100_dataset": 1, "split": 1, "train": 1, "evaluate": 1}
    # one line a job (the profile's logger): the split of IF 100, and the group of its trainings and seeds
    assert re.search(r"^\[[\d:]+\] split \(imbalance=100\): ", output, re.M), output
    for rule in ("train", "evaluate"):
        assert re.search(rf"^\[[\d:]+\] {rule} \(group=imba100\): ", output, re.M), output


# The synthetic stand-in and a tiny network: the same jobs as a CIFAR-100 run, in seconds.
DEMO = ["run_name", "seed_demo",
        "dataset", "{name: synthetic, synthetic: {num_classes: 10, train_per_class: 100, test_per_class: 10, "
                   "image_size: 16}}",
        "seeds", "[0]", "recipe.epochs", "2", "recipe.width", "2", "recipe.batch_size", "32", "recipe.padding", "2",
        "recipe.cutout_size", "8", "threads.train", "1",
        "fusion", "none"]  # one job per training, so that the full workflow can reuse it (a fused group cannot)


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """`python main.py --cfg config/CIFAR100_LT/BaGMar_pn_imba100.yaml <synthetic data>`, in a copy of the project."""
    workdir = copy_project(tmp_path_factory.mktemp("seed") / "project")
    run = subprocess.run([sys.executable, "main.py", "--cfg", "config/CIFAR100_LT/BaGMar_pn_imba100.yaml", "--cores",
                          "2", *DEMO], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return workdir, run


@pytest.mark.workflow
def test_a_seed_config_runs_end_to_end_on_synthetic_data(seed_run):
    workdir, run = seed_run
    results = workdir / "results" / "seed_demo"
    training = results / "train" / "BaGMar_pn" / "imba100" / "seed0"
    assert (training / "model.pt").is_file() and (training / "test_logits.npz").is_file()
    assert (results / "eval" / "BaGMar_pn" / "imba100" / "seed0" / "tau_sweep.csv").is_file()
    assert not (results / "train" / "ce").exists()  # only this experiment's jobs
    # printed progress: the training's epochs as they happen, then the headline numbers
    assert re.search(r"\[train/BaGMar_pn/imba100/seed0\] .*epoch 2/2", run.stdout)
    assert re.search(r"top1\s+\d", run.stdout) and "results: results/seed_demo/eval/BaGMar_pn/imba100/seed0" in run.stdout
    # 10 classes of at most 100 images: no many-shot class, shown as in the tables
    assert re.search(r"many\s+n/a", run.stdout) and "NaN" not in run.stdout
    # the split's counts in the seed's cls_freq form: a JSON list of per-class counts, head first
    counts = json.loads((results / "splits" / "imba100" / "class_counts.json").read_text())
    assert isinstance(counts, list) and len(counts) == 10 and all(isinstance(c, int) for c in counts)
    assert counts[0] == 100 and counts[-1] == 1


@pytest.mark.workflow
def test_the_workflow_reuses_what_a_seed_command_made(seed_run):
    """The full workflow with the same settings plans everything except the seed command's jobs."""
    workdir, _ = seed_run
    config = main.override(PAPER, [*DEMO, "report.readme", "null",
                                   "trainings.LDAM_DRW_released.epochs", "6"])  # its recipe warms up for 5
    (workdir / "config" / "seed_demo.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile",
                          "config/seed_demo.yaml"], cwd=workdir, capture_output=True, text=True, timeout=120,
                         env=env(workdir))
    jobs = job_counts(run.stdout + run.stderr)
    assert "synthetic_dataset" not in jobs
    # 6 trainings x 4 IFs, less the seed command's training and its evaluation job
    assert (jobs["split"], jobs["train"], jobs["evaluate"]) == (3, 23, 23)
