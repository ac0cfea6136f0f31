"""Catalog hygiene: `snakemake --lint` finds nothing for the paper and demo configs, and `snakefmt --check` passes."""

import subprocess
import sys

import pytest
from project import ROOT, copy_project, env


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/demo.yaml"])
def test_snakemake_lint_is_clean(tmp_path, configfile):
    workdir = copy_project(tmp_path)
    run = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", configfile], cwd=workdir,
                         capture_output=True, text=True, timeout=300, env=env(workdir))
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "Congratulations, your workflow is in a good condition!" in output, output
    assert "Lints for" not in output, output


def test_snakefmt_check_passes():
    run = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "--diff", "Snakefile", "workflow"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr + "\n(fix: snakefmt Snakefile workflow)"
