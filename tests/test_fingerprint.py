"""bagmar.fingerprint: what a workflow job's rerun trigger sees of its code (docs/reruns-and-recovery.md)."""

import shutil
from pathlib import Path

import pytest

from bagmar.fingerprint import code_fingerprint

ROOT = Path(__file__).parents[1]


@pytest.fixture
def project(tmp_path):
    shutil.copytree(ROOT / "src" / "bagmar", tmp_path / "bagmar")
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    return tmp_path


def fingerprints(project):
    return {s.name: code_fingerprint(s, project / "bagmar") for s in sorted((project / "scripts").glob("*.py"))}


def edit(path, old, new):
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def changed(before, after):
    return {script: sorted(k for k in after[script] if before[script].get(k) != after[script][k])
            for script in before if before[script] != after[script]}


def test_each_script_reaches_the_modules_it_runs(project):
    fp = fingerprints(project)
    assert set(fp["train.py"]) == {
        "train.py", "bagmar.config.recipe", "bagmar.data.augment", "bagmar.data.long_tail", "bagmar.fingerprint", "bagmar.io",
        "bagmar.method.baselines", "bagmar.method.loss", "bagmar.method.model", "bagmar.training.checkpoint",
        "bagmar.training.engine", "bagmar.training.fused_network", "bagmar.training.loop", "bagmar.training.train"}
    assert set(fp["split.py"]) == {"split.py", "bagmar.data.long_tail", "bagmar.io"}
    assert "bagmar.method.loss" not in fp["evaluate.py"] and "bagmar.training.train" not in fp["plots.py"]


def test_comments_docstrings_and_layout_change_nothing(project):
    before = fingerprints(project)
    for path in [*(project / "bagmar").rglob("*.py"), *(project / "scripts").glob("*.py")]:
        path.write_text("# a comment\n" + path.read_text().replace("\n\n\n", "\n\n\n\n") + "\n# another\n")
    edit(project / "bagmar" / "method" / "loss.py", "SPEC §4's bookkeeping", "SPEC §4's bookkeeping (edited)")
    edit(project / "bagmar" / "method" / "loss.py", '"""z\' of SPEC §4', '"""The adjusted logits z\' of SPEC §4')
    assert fingerprints(project) == before


def test_a_change_reaches_exactly_the_scripts_that_can_run_it(project):
    before = fingerprints(project)
    edit(project / "bagmar" / "method" / "loss.py", "torch.log(stats.theta + EPS)", "torch.log(stats.theta + 2 * EPS)")
    assert changed(before, fingerprints(project)) == {"train.py": ["bagmar.method.loss"],
                                                      "train_image_list.py": ["bagmar.method.loss"]}

    before = fingerprints(project)
    edit(project / "bagmar" / "evaluation" / "evaluate.py", "FEW_SHOT_BELOW = 20", "FEW_SHOT_BELOW = 25")
    # the scripts that evaluate, and aggregate (whose tables module imports evaluate): not train, not split
    assert changed(before, fingerprints(project)) == {"evaluate.py": ["bagmar.evaluation.evaluate"],
                                                      "export_model.py": ["bagmar.evaluation.evaluate"]}  # its card

    before = fingerprints(project)
    edit(project / "bagmar" / "data" / "long_tail.py", "rng = np.random.default_rng(seed)\n    grid = 4",
         "rng = np.random.default_rng(seed)\n    grid = 5")  # make_synthetic: only the synthetic data job runs it
    assert changed(before, fingerprints(project)) == {"make_synthetic.py": ["bagmar.data.long_tail"]}

    before = fingerprints(project)
    edit(project / "bagmar" / "io.py", "@contextlib.contextmanager\ndef atomic_write(",
         "def _unused():\n    return 1\n\n\n@contextlib.contextmanager\ndef atomic_write(")
    assert changed(before, fingerprints(project)) == {}  # a new function no job calls

    before = fingerprints(project)  # the validation pass and its file: image-list trainings only, never CIFAR's
    edit(project / "bagmar" / "training" / "image_train.py", 'dtype=np.int64),\n                     final_epoch',
         'dtype=np.int32),\n                     final_epoch')
    assert changed(before, fingerprints(project)) == {"train_image_list.py": ["bagmar.training.image_train"]}

    before = fingerprints(project)  # the val-selected rule: the evaluations and the model cards, not a training
    edit(project / "bagmar" / "evaluation" / "evaluate.py", "labels, train_counts, taus, evaluation))[\"tau\"]",
         "labels, train_counts, taus[::-1], evaluation))[\"tau\"]")
    assert changed(before, fingerprints(project)) == {"evaluate.py": ["bagmar.evaluation.evaluate"],
                                                      "export_model.py": ["bagmar.evaluation.evaluate"]}

    before = fingerprints(project)
    edit(project / "scripts" / "plots.py", "dpi=110", "dpi=120")
    assert changed(before, fingerprints(project)) == {"plots.py": ["plots.py"]}


def test_code_reached_through_a_module_attribute_is_followed(tmp_path):
    package = tmp_path / "bagmar"
    package.mkdir()
    (package / "__init__.py").write_text('"""doc"""\n')
    (package / "a.py").write_text("from . import b\n\ndef f():\n    return b.g()\n")
    (package / "b.py").write_text("K = 2\n\ndef g():\n    return K\n\ndef h():\n    return 0\n")
    script = tmp_path / "s.py"
    script.write_text("from bagmar.a import f\nprint(f())\n")
    before = code_fingerprint(script, package)
    assert set(before) == {"s.py", "bagmar.a", "bagmar.b"}
    (package / "b.py").write_text("K = 2\n\ndef g():\n    return K\n\ndef h():\n    return 1\n")
    assert code_fingerprint(script, package) == before  # h is not reachable
    (package / "b.py").write_text("K = 3\n\ndef g():\n    return K\n\ndef h():\n    return 1\n")
    after = code_fingerprint(script, package)
    assert {k for k in after if after[k] != before[k]} == {"bagmar.b"}


TRAINING_CODE = (ROOT / "workflow" / "rules" / "common.smk").read_text().split("def training_code", 1)[1].split("\n\n")[0]


def test_every_scripted_rule_fingerprints_its_own_script():
    import re

    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"\n\s*rule\b", smk.read_text())[1:]:
            script = re.search(r"script:\s*\"([^\"]+)\"", block)
            if script:
                found = re.findall(r"\*\*code_params\(\"([^\"]+)\"\)", block)
                if re.search(r"\*\*training_code_params\(\)", block):  # the run's training script
                    found = [name for name in ("train.py", "train_image_list.py") if f'"{name}"' in TRAINING_CODE
                             and name == Path(script.group(1)).name]
                assert found == [Path(script.group(1)).name], (smk, block[:80])


def test_subpackages_and_relative_imports_are_followed(tmp_path):
    """Modules in subpackages, reached through relative imports of any level and through a subpackage's __init__
    that re-exports them; importing a module runs the __init__ of every package above it."""
    package = tmp_path / "bagmar"
    for folder in ("method", "training"):
        (package / folder).mkdir(parents=True)
    (package / "__init__.py").write_text('"""doc"""\n')
    (package / "method" / "__init__.py").write_text("from .loss import g\n")
    (package / "method" / "loss.py").write_text("K = 2\n\ndef g():\n    return K\n\ndef unused():\n    return 0\n")
    (package / "training" / "__init__.py").write_text('"""doc"""\n')
    (package / "training" / "loop.py").write_text("from ..method import g\nfrom . import helpers\n\n"
                                                   "def f():\n    return g() + helpers.h()\n")
    (package / "training" / "helpers.py").write_text("def h():\n    return 1\n")
    script = tmp_path / "s.py"
    script.write_text("from bagmar.training.loop import f\nprint(f())\n")
    before = code_fingerprint(script, package)
    # (bagmar.method's __init__ only re-exports: it has no code of its own to fingerprint)
    assert set(before) == {"s.py", "bagmar.training.loop", "bagmar.training.helpers", "bagmar.method.loss"}
    (package / "method" / "loss.py").write_text("K = 2\n\ndef g():\n    return K\n\ndef unused():\n    return 1\n")
    assert code_fingerprint(script, package) == before  # unused is not reachable
    (package / "method" / "loss.py").write_text("K = 3\n\ndef g():\n    return K\n\ndef unused():\n    return 1\n")
    after = code_fingerprint(script, package)
    assert {k for k in after if after[k] != before[k]} == {"bagmar.method.loss"}


def test_a_users_own_module_is_fingerprinted_whole(tmp_path):
    own = tmp_path / "my_losses.py"
    own.write_text("def focal(logits, labels):\n    return logits.sum()  # a comment\n")
    script = ROOT / "scripts" / "train.py"
    before = code_fingerprint(script, ROOT / "src" / "bagmar", own)
    own.write_text("def focal(logits, labels):\n    return logits.sum()  # another comment\n")
    assert code_fingerprint(script, ROOT / "src" / "bagmar", own) == before
    own.write_text("def focal(logits, labels):\n    return 2 * logits.sum()\n")
    after = code_fingerprint(script, ROOT / "src" / "bagmar", own)
    assert {k for k in after if after[k] != before[k]} == {"my_losses.py"}
