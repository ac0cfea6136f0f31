"""Workflow runs shared by several test modules, each run once per session.

An end-to-end run is the suite's most expensive step (the README demo takes about 2 minutes on 2 cores), so
the modules that need a finished run share these; a test that changes anything works on a copy
(`shutil.copytree` keeps the time stamps and Snakemake's records, so the copy is up to date too).

The seeds run starts in the background as soon as the suite is collected (when a collected test needs it): the
unit tests before it leave one of two cores mostly idle, and it is done by the time the reporting tests read it.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from project import SEEDS_RUN, copy_project, edit_config, env, planned_jobs, snakemake

_SEEDS_RUN = {}  # the background run: its project, process and log


def _start_seeds_run(directory: Path) -> None:
    workdir = copy_project(directory)
    edit_config(workdir / "config" / "demo.yaml", lambda c: (
        c.update({key: SEEDS_RUN[key] for key in ("imbalance_factors", "seeds", "fusion")}),
        c["recipe"].update(epochs=SEEDS_RUN["epochs"])))
    log = open(directory.parent / f"{directory.name}.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/demo.yaml"],
                               cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env(workdir))
    _SEEDS_RUN.update(workdir=workdir, process=process, log=log)


def pytest_collection_finish(session):
    if any("seeds_run" in getattr(item, "fixturenames", ()) for item in session.items):
        _start_seeds_run(session.config._tmp_path_factory.mktemp("seeds"))


def pytest_sessionfinish(session):
    if _SEEDS_RUN and _SEEDS_RUN["process"].poll() is None:  # a run cut short (-x, Ctrl-C): stop it too
        _SEEDS_RUN["process"].kill()
        _SEEDS_RUN["process"].wait()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The README's demo command (config/demo.yaml as committed), run to the end in a fresh copy of the project."""
    workdir = copy_project(tmp_path_factory.mktemp("demo"))
    run = snakemake(workdir, "--configfile", "config/demo.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    return workdir


@pytest.fixture(scope="session")
def seeds_run() -> Path:
    """The demo config changed to SEEDS_RUN, run to the end (started at collection, see the module docstring)."""
    workdir, process, log = _SEEDS_RUN["workdir"], _SEEDS_RUN["process"], _SEEDS_RUN["log"]
    returncode = process.wait(timeout=900)
    log.close()
    assert returncode == 0, Path(log.name).read_text()
    assert planned_jobs(workdir, "--configfile", "config/demo.yaml") == {}  # complete
    assert len(list((workdir / "results" / "demo" / "logs" / "train").glob("*.log"))) == \
        len(SEEDS_RUN["imbalance_factors"])  # one fused job per imbalance factor
    return workdir
