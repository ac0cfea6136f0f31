"""The install files agree: pyproject.toml (pip) and envs/bagmar.yaml (conda) pin the same ranges."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]


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
