"""bagmar.config.layout: the run's paths and its group table, and that nothing else builds or parses a results path."""

import ast
from pathlib import Path

import pytest
import yaml

from bagmar.config.layout import TRAINING_FILES, Layout, Member

ROOT = Path(__file__).parents[1]
PAPER = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


# The paper run: five fused trainings, and LDAM_DRW_released, which selects a named recipe and trains alone under
# fusion (one group per member, as with fusion none).
ALONE = 12  # LDAM_DRW_released x 4 imbalance factors x 3 seeds


@pytest.mark.parametrize("fusion, groups, sizes", [("none", 72, {1}), ("trainings", 12 + ALONE, {5, 1}),
                                                   ("trainings_and_seeds", 4 + ALONE, {15, 1})])
def test_every_training_is_in_exactly_one_group(fusion, groups, sizes):
    layout = Layout({**PAPER, "fusion": fusion})
    members = layout.members()
    assert len(layout.groups) == groups and {len(m) for m in layout.groups.values()} == sizes
    assert len(members) == len(set(members)) == 6 * 4 * 3  # trainings x imbalance factors x seeds
    assert layout.alone == ([] if fusion == "none" else ["LDAM_DRW_released"])
    assert layout.kinds() == (["fused"] if fusion == "none" else ["fused", "alone"])
    for group, group_members in layout.groups.items():
        assert all(layout.group_of(member) == group for member in group_members)
        # the group's name is the part of its members' directories that they share
        assert all(f"/{group}/" in layout.training_file("model", *vars(m).values()) for m in group_members)
        # a group is of one kind: every member alone, or none
        assert len({m.training in layout.alone for m in group_members}) == 1


@pytest.mark.parametrize("fusion", ["none", "trainings", "trainings_and_seeds"])
def test_the_rule_outputs_name_each_members_files(fusion):
    layout = Layout({**PAPER, "fusion": fusion})
    for kind in layout.kinds():
        outputs = layout.group_outputs(kind)
        groups = layout.group_names(kind)
        for group in groups:
            for member in layout.group_members(group):
                for kind, name in member["outputs"].items():
                    expected = layout.training_file(kind, member["training"], f"{member['imbalance_factor']:g}",
                                                    member["seed"])
                    assert outputs[name].replace("{group}", group) == expected
        assert len(outputs) == len(layout.groups[groups[0]]) * len(TRAINING_FILES)


@pytest.mark.parametrize("fusion", ["none", "trainings", "trainings_and_seeds"])
def test_the_evaluation_rule_outputs_name_each_evaluated_members_files(fusion):
    """A training that no variant reads is trained but not evaluated; the rest are, in their training's group."""
    config = {**PAPER, "fusion": fusion, "variants": {k: v for k, v in PAPER["variants"].items() if k != "BaGMar"}}
    layout = Layout(config)
    assert "BaGMar" not in layout.evaluated and "BaGMar" in layout.trainings
    for kind in layout.kinds():
        outputs = layout.evaluation_outputs(kind)
        for group in layout.group_names(kind):
            members = layout.evaluation_members(group)
            assert [m["name"] for m in members] == [m.name for m in layout.groups[group] if m.training != "BaGMar"]
            for member in members:
                for kind, name in member["outputs"].items():
                    expected = layout.evaluation_file(kind, member["training"], f"{member['imbalance_factor']:g}",
                                                      member["seed"])
                    assert outputs[name].replace("{group}", group) == expected
    assert layout.group_log("imba100", "evaluate") == "results/cifar100_lt/logs/evaluate/imba100.log"


def test_member_keys_and_names():
    member = Member("BaGMar_pn", "100", "2")
    assert member.keys() == {"training": "BaGMar_pn", "imbalance_factor": 100.0, "seed": 2}
    assert member.name == "BaGMar_pn IF 100 seed 2"
    layout = Layout({**PAPER, "run_name": "x", "fusion": "trainings"})
    assert layout.group_of(member) == "imba100/seed2"
    assert layout.group_log("imba100/seed2") == "results/x/logs/train/imba100/seed2.log"
    assert layout.evaluation_file("sweep", "ce", "10", "0") == "results/x/eval/ce/imba10/seed0/tau_sweep.csv"


def _code_strings(path: Path):
    """String constants of a file that are not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


@pytest.mark.parametrize("path", sorted((ROOT / "scripts").glob("*.py")) + [ROOT / "main.py"], ids=lambda p: p.name)
def test_no_script_builds_or_parses_a_results_path(path):
    strings = [node.value for node in _code_strings(path)]
    assert not [s for s in strings if "results/" in s or s in ("imba", "seed", "results")], path
    tree = ast.parse(path.read_text())
    parsing = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
               and node.attr in ("parts", "removeprefix")]
    splits = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("split", "rsplit") and node.args and isinstance(node.args[0], ast.Constant)
              and node.args[0].value in ("/", "imba", "seed")]
    assert not parsing and not splits, (path, parsing, splits)
