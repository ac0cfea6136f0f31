"""The package's rooms and their one-way doors (docs/architecture.md): which subpackage may import which, no
import of another module's private name, and no path of the workflow read by the package."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "bagmar"
# room -> the rooms it may import (besides itself, io and fingerprint)
DOORS = {
    "data": set(),
    "method": {"data"},
    "evaluation": {"data"},
    "config": {"data", "evaluation"},
    "training": {"config", "method", "data"},
    "models": {"method", "data", "evaluation"},
    # the package's front doors: bagmar.load_model and `python -m bagmar predict`
    "__init__": {"models"},
    "__main__": {"models"},
}


def imports(path: Path):
    """(absolute module below bagmar, imported names) of every package import in a module."""
    room = path.relative_to(PACKAGE).parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(room[:-1])[: len(room) - node.level]
            yield ".".join([*base, *([node.module] if node.module else [])]), [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bagmar"):
            yield node.module.partition(".")[2], [a.name for a in node.names]


def test_each_room_imports_only_through_its_doors():
    crossings = []
    for path in PACKAGE.rglob("*.py"):
        room = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for module, _ in imports(path):
            target = module.split(".")[0]
            if target and target != room and target not in {"io", "fingerprint"} and target not in DOORS.get(room, set()):
                crossings.append(f"{path.relative_to(PACKAGE)} imports bagmar.{module}")
    assert crossings == []


def test_no_module_imports_another_modules_private_name():
    private = [f"{path.relative_to(PACKAGE)}: {name} from {module}" for path in PACKAGE.rglob("*.py")
               for module, names in imports(path) for name in names if name.startswith("_")]
    assert private == []


def test_the_package_reads_nothing_under_workflow():
    assert [str(p) for p in PACKAGE.rglob("*.py") if '"workflow"' in p.read_text() or "'workflow'" in p.read_text()] == []


def test_the_augmentations_the_config_accepts_are_the_ones_the_data_room_has():
    from bagmar.config import recipe
    from bagmar.data import image_data

    enum = recipe.schema()["properties"]["image_list_recipe"]["properties"]["augment"]["enum"]
    assert tuple(enum) == recipe.AUGMENTS == image_data.AUGMENTS
