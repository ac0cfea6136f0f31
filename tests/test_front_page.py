"""The front page: a README of at most 150 lines whose every command runs as written, docs and code that speak of
what the project does (not of how it was built), and a real-data table whose cells come from the run's own files."""

import re
import shlex
import subprocess
import sys
import tomllib

import numpy as np
import pandas as pd
import pytest
from project import ROOT, copy_project, env

from bagmar.evaluation.render import markers
from bagmar.evaluation.tables import round_percent

README = ROOT / "README.md"
REAL_RUN = "cifar10_lt_cpu"  # the README's real result (config/cifar10_lt_cpu.yaml)
PRODUCT = [README, *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py"), *(ROOT / "scripts").glob("*.py"),
           *(ROOT / "workflow").rglob("*.smk"), *(ROOT / "workflow").rglob("*.rst"), ROOT / "Snakefile",
           *(ROOT / "templates").glob("*"), ROOT / "config" / "README.md"]


def readme_commands() -> list[str]:
    """Every command of the README: each line of its ```bash blocks split at &&, and each inline `snakemake ...`."""
    text = README.read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    commands += re.findall(r"`(snakemake [^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return commands


@pytest.mark.fast
def test_the_readme_is_a_front_door_of_at_most_150_lines():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150, len(lines)
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[:2] == ["## A real result", "## Set-up"], headings  # the result first, then the two commands


@pytest.mark.fast
def test_the_readme_test_command_is_the_one_ci_runs():
    assert "python -m pytest" in readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in ci if line.strip() and not line.startswith("#")][-1] == "python -m pytest"


@pytest.mark.fast
def test_every_readme_command_is_one_the_project_supports():
    """The commands that are not Snakemake's: what each needs is in the repository."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for command in readme_commands():
        words = shlex.split(command)
        if words[0] == "snakemake":
            continue  # dry-run by test_every_snakemake_command_of_the_readme_plans_on_a_fresh_clone
        if words[:3] == ["python", "-m", "venv"] or words[:2] == [".", ".venv/bin/activate"]:
            assert words[-1].startswith(".venv"), command
        elif words[:3] == ["pip", "install", "-e"]:
            extra = re.fullmatch(r"\.\[(\w+)\]", words[3])
            assert extra and extra[1] in extras, command
        elif words[:3] == ["python", "-m", "pytest"]:
            assert all(w.startswith("-m") or w in ("fast",) for w in words[3:]), command
        else:
            pytest.fail(f"the README runs a command this test does not know: {command}")


@pytest.mark.workflow
def test_every_snakemake_command_of_the_readme_plans_on_a_fresh_clone(tmp_path):
    workdir = copy_project(tmp_path)
    snakemake_commands = [c for c in readme_commands() if c.startswith("snakemake ")]
    assert len(snakemake_commands) >= 4, snakemake_commands  # the real result, demo, paper run, report
    for command in snakemake_commands:
        words = shlex.split(command)[1:]
        if "--report" in words:  # a report needs a finished run: plan that run
            at = words.index("--report")
            words = words[:at] + words[at + 2:]
        run = subprocess.run([sys.executable, "-m", "snakemake", *words, "-n"], cwd=workdir, capture_output=True,
                             text=True, timeout=300, env=env(workdir))
        assert run.returncode == 0, (command, run.stdout + run.stderr)
        assert "Job stats:" in run.stdout + run.stderr, command


HISTORY = [
    re.compile(r"\bissues? #?\d+", re.I),                   # an issue number
    re.compile(r"(?<![\w-])#\d{1,4}\b"),                    # a pull request or issue reference
    re.compile(r"(?<![\w./-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])([0-9a-f]{7,12}|[0-9a-f]{40})(?![\w.-])"),  # a commit
    re.compile(r"\b(this|previous|last) (session|round)\b|\bbefore issues?\b|\bwe (added|built|changed)\b", re.I),
]


@pytest.mark.fast
def test_the_product_speaks_of_itself_not_of_its_making():
    found = []
    for path in PRODUCT:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{number}: {m.group(0)!r}" for p in HISTORY for m in p.finditer(line)]
    assert found == []


def test_the_history_patterns_catch_what_they_are_for():
    lines = ["fixed in issue 15", "see #12", "at 1eea15d", "as before issues 15 and 16", "this session's run",
             "commit 0d8f5842c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6"]
    assert all(any(p.search(line) for p in HISTORY) for line in lines)
    fine = ["md5 eb9058c3a382ffc7106e4002c42a8d85", "resnet152-394f9c45.pth", "epoch 200", "sha256 of the file"]
    assert not any(p.search(line) for p in HISTORY for line in fine)


def real_section() -> str:
    text = README.read_text()
    begin, end = markers(REAL_RUN)
    return text[text.index(begin) + len(begin):text.index(end)]


@pytest.mark.fast
def test_the_readme_real_result_comes_from_the_runs_own_files():
    """Each row of the README's every-variant table, recomputed from the run's per-seed evaluation files: top-1
    and shot groups of the final model at the variant's τ (plain: argmax; a post-hoc rule: τ = 1)."""
    results = ROOT / "results" / REAL_RUN
    sweeps = sorted((results / "eval").glob("*/imba*/seed*/tau_sweep.csv"))
    if not sweeps:
        pytest.skip(f"results/{REAL_RUN} is not here: run snakemake --cores all --configfile "
                    f"config/{REAL_RUN}.yaml (CIFAR-10 needed) to check the README's table against it")
    section = real_section()
    rows = {cells[1]: cells for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
        if line.startswith("| 100 |"))}
    frame = pd.concat(map(pd.read_csv, sweeps), ignore_index=True)
    final = frame[frame["model"] == "final"]
    assert set(rows) == set(final["variant"]), (sorted(rows), sorted(final["variant"].unique()))
    for variant, sweep in final.groupby("variant"):
        tau = 0.0 if sweep["evaluation"].iloc[0] == "plain" else 1.0
        at = sweep[np.isclose(sweep["tau"], tau)].groupby("seed")[["top1", "many", "medium", "few"]].first()
        shown = rows[variant][3:7]
        expected = ["n/a" if np.isnan(v) else f"{round_percent(v):.1f}" for v in at.mean()]
        assert shown == expected, (variant, shown, expected)


@pytest.mark.fast
def test_the_readme_figure_is_the_runs_own():
    figure = ROOT / "docs" / "figures" / f"{REAL_RUN}_per_class.png"
    assert figure.name in README.read_text() and figure.is_file()
    produced = ROOT / "results" / REAL_RUN / "plots" / "headline_per_class.png"
    if not produced.exists():
        pytest.skip(f"results/{REAL_RUN} is not here")
    assert figure.read_bytes() == produced.read_bytes()
