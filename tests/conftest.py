"""Workflow runs shared by several test modules, each run once per session.

An end-to-end run is the suite's most expensive step (the demo takes about a minute on 2 cores), so
the modules that need a finished run share these; a test that changes anything works on a copy
(`shutil.copytree` keeps the time stamps and Snakemake's records, so the copy is up to date too).
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from project import SEEDS_RUN, copy_project, edit_config, planned_jobs, snakemake


# The test tiers (docs/demo.md, "The tests"; markers in pyproject.toml). Every test is in exactly one: its own marker, else its
# module's tier here, else fast. `python -m pytest -m fast` is the tier to run on every change (under a minute on 2
# cores); `python -m pytest` runs them all but the tests marked slow.
TIERS = ("fast", "workflow", "processes", "learning", "slurm", "benchmark")
MODULE_TIERS = {
    "test_workflow": "workflow", "test_image_workflow": "workflow", "test_reporting": "workflow",
    "test_front_door": "workflow", "test_lint": "workflow",
    "test_distributed": "processes", "test_cpu_capabilities": "processes",
    "test_learning": "learning",
    "test_slurm": "slurm",
    "test_benchmark": "benchmark", "test_gpu_acceptance": "benchmark", "test_parity": "benchmark",
}


def pytest_collection_modifyitems(items):
    """Each test gets its tier's marker. tests/test_slurm.py runs first: its run through the test cluster mostly
    waits on the SLURM executor's status checks, and the shared runs below (which it requests while it waits) fill
    that time instead of adding to it."""
    for item in items:
        if not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(getattr(pytest.mark, MODULE_TIERS.get(item.module.__name__, "fast")))
    items.sort(key=lambda item: item.module.__name__ != "test_slurm")  # stable: the rest keep their order


def committed_run(tmp_path_factory, name: str) -> Path:
    """config/<name>.yaml as committed, run to the end in a fresh copy of the project."""
    workdir = copy_project(tmp_path_factory.mktemp(name))
    run = snakemake(workdir, "--configfile", f"config/{name}.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    return workdir


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The README's demo command."""
    return committed_run(tmp_path_factory, "demo")


@pytest.fixture(scope="session")
def seeds_run(tmp_path_factory) -> Path:
    """The demo config changed to SEEDS_RUN, run to the end in a fresh copy of the project: its trainings fused,
    and one more, LDAM-DRW under its released recipe, which trains alone."""
    workdir = copy_project(tmp_path_factory.mktemp("seeds"))
    edit_config(workdir / "config" / "demo.yaml", lambda c: (
        c.update({key: SEEDS_RUN[key] for key in ("imbalance_factors", "seeds", "fusion")}),
        c["recipe"].update(epochs=SEEDS_RUN["epochs"]),
        c["trainings"].update(LDAM_DRW_released=SEEDS_RUN["alone"]),
        c["variants"].update(LDAM_DRW_released={"training": "LDAM_DRW_released", "evaluation": "plain"})))
    planned = planned_jobs(workdir, "--configfile", "config/demo.yaml")
    assert planned["train"] == len(SEEDS_RUN["imbalance_factors"])
    assert planned["train_alone"] == len(SEEDS_RUN["imbalance_factors"]) * len(SEEDS_RUN["seeds"])
    run = snakemake(workdir, "--configfile", "config/demo.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    return workdir


@pytest.fixture(scope="session")
def miniature_run(tmp_path_factory) -> Path:
    """The image-list demo."""
    return committed_run(tmp_path_factory, "miniature")


@pytest.fixture(scope="session")
def miniature_places_run(tmp_path_factory) -> Path:
    """The Places-like image-list demo: a partially frozen stage 1, then stage 2."""
    return committed_run(tmp_path_factory, "miniature_places")


@pytest.fixture(scope="session")
def learning_trainings():
    """tests/test_learning.py's trainings, started in the background at the lowest CPU priority (nice 19), one
    process and one thread each: tests/test_slurm.py starts them once its local runs are done, so that they use the
    cores its SLURM jobs leave idle while that run ends, and the modules in between keep their share; the learning
    tests wait for the results. Fresh (spawned) processes: nothing inherited, the numbers as measured."""
    from test_learning import TRAININGS, single_threaded_run

    pool = ProcessPoolExecutor(min(len(TRAININGS), len(os.sched_getaffinity(0))),
                               mp_context=multiprocessing.get_context("spawn"), initializer=os.nice, initargs=(19,))
    futures = {name: pool.submit(single_threaded_run, settings) for name, settings in TRAININGS.items()}
    yield futures
    pool.shutdown(cancel_futures=True)
