"""The config documentation: config/README.md names every key of the schema, and the catalog's usage file parses."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
SCHEMA = ROOT / "src" / "bagmar" / "config" / "schema.yaml"
CONFIG_README = ROOT / "config" / "README.md"
CATALOG = ROOT / ".snakemake-workflow-catalog.yml"

# The nested objects whose every key the page documents: top-level properties, and the schema's training definition.
NESTED = ("dataset", "recipe", "image_list_recipe", "report")


def schema_keys(node: dict, where: str) -> list[tuple[str, str]]:
    """(dotted path, key) of every property under ``node``: its own, its nested objects' and those of the objects
    its maps hold (additionalProperties, e.g. report.paper.<imbalance factor>)."""
    found = []
    for key, spec in node.get("properties", {}).items():
        found.append((f"{where}.{key}" if where else key, key))
        found += schema_keys(spec, f"{where}.{key}" if where else key)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        found += schema_keys(extra, f"{where}.<name>")
    return found


@pytest.mark.fast
def test_config_readme_names_every_schema_key():
    schema = yaml.safe_load(SCHEMA.read_text())
    text = CONFIG_README.read_text()
    keys = [(key, key) for key in schema["properties"]]
    for name in NESTED:
        assert schema["properties"][name].get("properties"), f"schema: {name} has no properties"
        keys += schema_keys(schema["properties"][name], name)
    keys += schema_keys(schema["definitions"]["training"], "trainings.<name>")
    keys += [item for name in ("variants", "tau_grid", "distributed", "threads")
             for item in schema_keys(schema["properties"][name], name)]
    missing = sorted({path for path, key in keys if f"`{key}`" not in text})
    assert not missing, f"config/README.md does not name (as `key`): {', '.join(missing)}"


@pytest.mark.fast
def test_catalog_usage_file_parses():
    settings = yaml.safe_load(CATALOG.read_text())
    assert isinstance(settings, dict) and "usage" in settings, settings
    usage = settings["usage"]
    assert usage.get("report") is True, usage
    assert usage["software-stack-deployment"].get("conda") is True, usage
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}, usage


def test_config_readme_lists_every_config_file():
    listed = set(re.findall(r"^\| `([\w.]+\.yaml)` \|", CONFIG_README.read_text(), re.M))
    assert listed == {path.name for path in (ROOT / "config").glob("*.yaml")}
