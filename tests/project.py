"""Helpers for tests that run the workflow in a throw-away copy of the project."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
# The seeds run (tests/conftest.py): the demo at one imbalance factor, 2 seeds of 2 epochs, every
# training and seed of one imbalance factor fused into one job. Reporting (mean ± std over seeds) and fusion are
# both tested on it.
SEEDS_RUN = {"imbalance_factors": [100], "seeds": [0, 1], "epochs": 2, "fusion": "trainings_and_seeds",
             # a training with a named recipe: alone under fusion, its own epochs (the recipe warms up for 5)
             "alone": {"loss": "ldam_drw", "recipe": "ldam_drw_released", "epochs": 6}}
PROJECT_FILES = [".gitignore", "main.py", "Snakefile", "workflow", "scripts", "src", "templates", "config", "profiles", "envs", "docs", "README.md"]


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


def package_path(workdir: Path) -> dict[str, str]:
    """PYTHONPATH for running the workflow in a copy: its jobs import the copy's package (the workflow refuses
    to run with any other), as `pip install -e .` in that copy would make them."""
    return {"PYTHONPATH": str(Path(workdir).resolve() / "src")}


def env(workdir: Path, **extra: str) -> dict[str, str]:
    """This process's environment, with the copy's package path and `extra` variables."""
    return {**os.environ, **package_path(workdir), **extra}


def snakemake(workdir: Path, *args: str, timeout: int = 600, jobs: str = "full") -> subprocess.CompletedProcess:
    """Snakemake in the copy. ``jobs``: how the profile's logger shows each job; "full" is Snakemake's own block
    (input, output, wildcards, resources), which tests read; "short" is what a user sees, one line a job."""
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--logger-bagmar-jobs", jobs, *args],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env(workdir))


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run ({} when there is nothing to do)."""
    run = snakemake(workdir, "-n", *args)
    assert run.returncode == 0, run.stdout + run.stderr
    output = run.stdout + run.stderr
    if "Job stats:" not in output:
        assert "Nothing to be done" in output, output
        return {}
    return job_counts(output)


def job_counts(output: str) -> dict[str, int]:
    """Rule -> job count from the "Job stats" table Snakemake prints."""
    table = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\ntotal", output, re.S)
    assert table is not None, output
    return {rule: int(count) for rule, count in (line.split() for line in table.group(1).splitlines())}


def edit_config(path: Path, edit) -> None:
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def spec_recipe() -> dict:
    """SPEC §3's optimiser and schedule numbers, read from docs/SPEC.md (the oracle the configs are checked
    against; the code reads them from the config schema)."""
    text = (ROOT / "docs" / "SPEC.md").read_text()
    sgd = re.search(r"SGD, momentum ([\d.]+), weight decay ([\d.e-]+) .*?batch (\d+).*?(\d+) epochs\.", text)
    lr = re.search(r"warm-up W = (\d+) epochs, base ([\d.]+), peak ([\d.]+)", text)
    assert sgd and lr, "docs/SPEC.md §3 no longer states the recipe in the expected words"
    return {"epochs": int(sgd.group(4)), "batch_size": int(sgd.group(3)), "base_lr": float(lr.group(2)),
            "peak_lr": float(lr.group(3)), "warmup_epochs": int(lr.group(1)), "momentum": float(sgd.group(1)),
            "weight_decay": float(sgd.group(2))}
