"""The install files agree: pyproject.toml (pip) and envs/bagmar.yaml (conda) pin the same ranges, and the conda
environment gets this checkout's bagmar from envs/bagmar.post-deploy.sh."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
ENV_FILE = ROOT / "envs" / "bagmar.yaml"
POST_DEPLOY = ROOT / "envs" / "bagmar.post-deploy.sh"


def test_conda_env_lists_the_package_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "envs" / "bagmar.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(project["dependencies"])
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert python.removeprefix("python") == project["requires-python"]


def test_every_rule_declares_the_conda_env_a_log_and_a_benchmark():
    for rules in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = rules.read_text()
        n_rules = len(re.findall(r"^\s*rule(?:\s+\w+)?:", text, re.M))  # named, or `rule:` with a name: directive
        assert n_rules == text.count('conda:\n') == text.count("log:\n") == text.count("benchmark:\n"), rules.name


def test_the_recipes_numbers_are_written_in_one_place():
    """SPEC §3's 0.05 / 0.1 / 5e-4 live in the config schema's defaults (and the configs); code reads them there."""
    import ast

    from project import spec_recipe

    from bagmar.training.train import Recipe

    spec = spec_recipe()
    triple = {spec["base_lr"], spec["peak_lr"], spec["weight_decay"]}
    root = Path(__file__).parents[1]
    offenders = []
    for path in [*root.glob("src/**/*.py"), *root.glob("scripts/*.py"), *root.glob("benchmarks/*.py"),
                 *root.glob("tests/**/*.py"), root / "main.py"]:
        numbers = {node.value for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.Constant) and isinstance(node.value, float)}
        if triple <= numbers:
            offenders.append(str(path.relative_to(root)))
    for path in root.glob("workflow/rules/*.smk"):
        if all(text in path.read_text() for text in ("0.05", "0.1", "5e-4")):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []
    assert {k: getattr(Recipe(), k) for k in spec} == spec  # Recipe's defaults: the schema's, which are SPEC's


def test_every_rule_uses_the_env_that_the_post_deploy_script_completes():
    """Each rule's conda: path, read relative to its .smk file as Snakemake reads it, is envs/bagmar.yaml, and
    Snakemake's own lookup of a post-deploy script (the .yaml suffix replaced) finds envs/bagmar.post-deploy.sh."""
    from snakemake.sourcecache import infer_source_file

    for rules in (ROOT / "workflow" / "rules").glob("*.smk"):
        for path in re.findall(r'^\s*conda:\s*\n\s*"([^"]+)"', rules.read_text(), re.M):
            assert (rules.parent / path).resolve() == ENV_FILE.resolve(), (rules.name, path)
    found = infer_source_file(str(ENV_FILE)).replace_suffix([".yaml", ".yml"], ".post-deploy.sh")
    assert Path(found.get_path_or_uri(secret_free=True)) == POST_DEPLOY


def _post_deploy(tmp_path, cwd, bagmar_found_in, **env):
    """envs/bagmar.post-deploy.sh run as Snakemake runs it: a copy in the conda prefix, the shebang's interpreter,
    the working directory, $CONDA_PREFIX; the environment's python a fake that logs a pip command and answers the
    import check with bagmar found in bagmar_found_in. Returns the finished process and the logged pip command."""
    prefix, log = tmp_path / "conda" / "0123abcd", tmp_path / "pip.log"
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    python = prefix / "bin" / "python"
    python.write_text(f"""#!/bin/sh
if [ "$1" = -m ]; then printf '%s\\n' "$@" > '{log}'; exit 0; fi
shift  # -I: the check, with bagmar where the fake install left it
PYTHONPATH='{bagmar_found_in}' exec '{sys.executable}' "$@"
""")
    python.chmod(0o755)
    copy = prefix.parent / "0123abcd.post-deploy.sh"
    shutil.copy(POST_DEPLOY, copy)
    interpreter = POST_DEPLOY.read_text().splitlines()[0].removeprefix("#!").strip()  # as Snakemake reads it
    environ = {k: v for k, v in os.environ.items() if k != "BAGMAR_CHECKOUT"} | {"CONDA_PREFIX": str(prefix)} | env
    done = subprocess.run(f"{interpreter} {copy}", shell=True, cwd=cwd, env=environ, capture_output=True, text=True)
    return done, (log.read_text().splitlines() if log.exists() else None)


def test_the_post_deploy_script_installs_the_checkout_it_runs_in(tmp_path):
    done, pip = _post_deploy(tmp_path, ROOT, ROOT / "src")
    assert done.returncode == 0, done.stderr
    assert pip == ["-m", "pip", "install", "--no-deps", "--editable", str(ROOT.resolve())]


def test_the_post_deploy_script_refuses_a_directory_that_is_not_the_checkout(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done, pip = _post_deploy(tmp_path, elsewhere, ROOT / "src")
    assert done.returncode != 0 and pip is None
    assert "not a bagmar checkout" in done.stderr and "BAGMAR_CHECKOUT" in done.stderr
    done, pip = _post_deploy(tmp_path, elsewhere, ROOT / "src", BAGMAR_CHECKOUT=str(ROOT))
    assert done.returncode == 0, done.stderr
    assert pip[-1] == str(ROOT.resolve())


def test_the_post_deploy_script_fails_when_the_env_imports_another_bagmar(tmp_path):
    other = tmp_path / "other"
    (other / "bagmar").mkdir(parents=True)
    (other / "bagmar" / "__init__.py").write_text("")
    done, _ = _post_deploy(tmp_path, ROOT, other)
    assert done.returncode != 0
    assert f"imports bagmar from {(other / 'bagmar').resolve()}" in done.stderr


FAKE_CONDA = """#!{python}
# conda, as far as Snakemake's conda integration calls it: `conda env create` makes a venv with no packages of its own
import json, os, subprocess, sys

args, base = sys.argv[1:], os.environ["FAKE_CONDA_BASE"]
if args == ["--version"]:
    print("conda 25.1.1")
elif args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": base, "platform": "linux-64"}}))
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:1] == ["clean"]:
    pass
elif args[:2] == ["env", "create"]:
    with open(os.environ["FAKE_CONDA_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    prefix = args[args.index("--prefix") + 1]
    subprocess.run([{python!r}, "-m", "venv", "--without-pip", "--system-site-packages", prefix], check=True)
else:
    sys.exit(f"fake conda: unexpected call {{args}}")
"""


@pytest.mark.workflow
def test_snakemake_runs_the_post_deploy_script_and_a_conda_job_imports_the_checkouts_bagmar(tmp_path):
    """Snakemake 9's own conda code, end to end, with a fake conda (no channel is reachable here): it copies
    envs/bagmar.yaml into .snakemake/conda/ before `conda env create` reads it (so a relative pip path there would
    resolve from that copy), runs envs/bagmar.post-deploy.sh in its working directory with the new environment
    activated, and a job in that environment imports bagmar from the checkout, PYTHONPATH being blocked for it."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copytree(ROOT / "envs", checkout / "envs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    (checkout / "Snakefile").write_text("""
rule which_bagmar:
    output:
        "which_bagmar.txt",
    conda:
        "envs/bagmar.yaml"
    shell:
        "python -c 'import bagmar; print(bagmar.__file__)' > {output}"
""")
    base, bin_ = tmp_path / "conda-base", tmp_path / "fake-bin"
    (base / "bin").mkdir(parents=True)
    bin_.mkdir()
    (base / "bin" / "activate").write_text('CONDA_PREFIX="$1"; PATH="$1/bin:$PATH"; export CONDA_PREFIX PATH\n')
    conda = bin_ / "conda"
    conda.write_text(FAKE_CONDA.format(python=sys.executable))
    conda.chmod(0o755)
    env = os.environ | {
        "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}",
        "FAKE_CONDA_BASE": str(base),
        "FAKE_CONDA_LOG": str(tmp_path / "conda.log"),
        "PYTHONPATH": str(ROOT / "src"),  # what the job must not rely on (Snakemake drops it for conda jobs)
        # offline: pip builds the editable wheel with this Python's setuptools instead of fetching one
        "PIP_NO_INDEX": "1",
        "PIP_NO_BUILD_ISOLATION": "0",
    }
    env.pop("BAGMAR_CHECKOUT", None)
    done = subprocess.run([sys.executable, "-m", "snakemake", "--sdm", "conda", "--cores", "1"], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Running post-deploy script" in done.stderr
    (create,) = [json.loads(line) for line in (tmp_path / "conda.log").read_text().splitlines()]
    read = Path(create[create.index("--file") + 1].strip('"'))
    assert read.parent == (checkout / ".snakemake" / "conda").resolve() and read.suffix == ".yaml"
    assert (checkout / "which_bagmar.txt").read_text().strip() == str(checkout / "src" / "bagmar" / "__init__.py")
