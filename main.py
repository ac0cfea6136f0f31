"""The seed's command line: one experiment per config file, run through the workflow.

    python main.py --cfg config/CIFAR100_LT/BaGMar_imba100.yaml [KEY VALUE ...]

Each config/CIFAR100_LT/<variant>_imba<IF>.yaml is one experiment of the seed (a variant at one
imbalance factor). This command turns it into a workflow configuration with that one variant and
imbalance factor, and asks Snakemake for that evaluation's outputs: the data set, the split, the
training and the evaluation run as the same jobs, with the same parameters and code, as in
`snakemake --cores all`, and land where that writes them (results/<run_name>/...). So the full
workflow reuses what a seed command has produced, and the reverse. The jobs' logs are echoed
while they are written (per-epoch progress of the training included), then the headline numbers.

Trailing KEY VALUE pairs override the config file, as the seed's yacs options did: dotted keys,
YAML values, e.g. `recipe.epochs 10 dataset.name synthetic`.

    python main.py --write-seed-configs [CONFIG DIR]

writes the seed configs from a workflow configuration (default: config/config.yaml into
config/CIFAR100_LT/); tests/test_seed_configs.py fails when the checked-in files disagree with it.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package, as the workflow's jobs import it
from bagmar.config.layout import EVALUATION_FILES, Layout, imbalance_key  # noqa: E402
HEADER = """\
# {title}, imbalance factor {imbalance:g}: the seed's {path} ({variant}).
#   python main.py --cfg {path}
# runs this experiment's jobs of the workflow (data, split, training {training}, evaluation) and writes
# where `snakemake` writes them. Generated from {source} by `python main.py --write-seed-configs`;
# tests/test_seed_configs.py fails if the two disagree.
"""
TITLES = {"cifar100": "CIFAR-100-LT", "cifar10": "CIFAR-10-LT", "synthetic": "Synthetic LT"}


# --------------------------------------------------------------------------- seed config <-> workflow config


# The workflow keys that list several experiments; a seed config names one of each instead.
# Every other key (data set, recipe, tau grid, seeds, ...) is carried over as it is.
EXPERIMENT_KEYS = ("imbalance_factors", "trainings", "variants", "report")
SEED_KEYS = ("variant", "imbalance_factor", "training", "evaluation")


def seed_configs(config: dict) -> dict[str, dict]:
    """The seed's one-experiment configs of a workflow configuration: '<variant>_imba<IF>' -> config."""
    shared = {k: v for k, v in config.items() if k not in (*EXPERIMENT_KEYS, "run_name")}
    out = {}
    for imbalance in config["imbalance_factors"]:
        for variant, spec in config["variants"].items():
            out[f"{variant}_imba{imbalance:g}"] = {
                "run_name": config["run_name"],
                "variant": variant,
                "imbalance_factor": imbalance,
                "training": {"name": spec["training"], **config["trainings"][spec["training"]]},
                "evaluation": spec["evaluation"],
                **shared,
            }
    return out


def workflow_config(seed: dict) -> dict:
    """The workflow configuration that runs exactly this experiment (one variant, one imbalance factor)."""
    training = dict(seed["training"])
    name = training.pop("name")
    return {
        **{k: v for k, v in seed.items() if k not in SEED_KEYS},
        "imbalance_factors": [seed["imbalance_factor"]],
        "trainings": {name: training},
        "variants": {seed["variant"]: {"training": name, "evaluation": seed["evaluation"]}},
        "report": {"headline_variant": seed["variant"], "readme": None},  # tables and README are the workflow's
    }


def evaluation_files(seed: dict) -> list[str]:
    """The outputs of this experiment's evaluation per seed, where the workflow writes them (bagmar.config.layout)."""
    layout = Layout(workflow_config(seed))
    return [layout.evaluation_file(kind, seed["training"]["name"], imbalance_key(seed["imbalance_factor"]), s)
            for s in seed["seeds"] for kind in EVALUATION_FILES]


def override(config: dict, pairs: list[str]) -> dict:
    """Apply KEY VALUE pairs (dotted keys, YAML values) to a copy of ``config``."""
    if len(pairs) % 2:
        raise SystemExit(f"overrides come in KEY VALUE pairs; got an odd number: {pairs}")
    config = copy.deepcopy(config)  # keeps the key order: Snakemake compares job params by repr
    for key, value in zip(pairs[::2], pairs[1::2]):
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SystemExit(f"override {key}: {part} is not a mapping in the config")
        node[leaf] = yaml.safe_load(value)
    return config


def write_seed_configs(source: Path, folder: Path) -> list[Path]:
    config = yaml.safe_load(source.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, seed in seed_configs(config).items():
        path = folder / f"{name}.yaml"
        header = HEADER.format(title=TITLES.get(seed["dataset"]["name"], seed["dataset"]["name"]),
                               imbalance=seed["imbalance_factor"], path=_shown(path), variant=seed["variant"],
                               training=seed["training"]["name"], source=_shown(source))
        path.write_text(header + yaml.safe_dump(seed, sort_keys=False))
        written.append(path)
    return written


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# --------------------------------------------------------------------------- running


class LogEcho(threading.Thread):
    """Prints, as they are written, the lines of the job logs under ``folder`` changed since ``since``."""

    def __init__(self, folder: Path, since: float):
        super().__init__(daemon=True)
        self.folder, self.since, self.offsets, self.done = folder, since, {}, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.poll()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.poll()

    def poll(self) -> None:
        for path in sorted(self.folder.rglob("*.log")) if self.folder.is_dir() else []:
            stat = path.stat()
            if stat.st_mtime < self.since:
                continue
            offset = self.offsets.get(path, 0) if stat.st_size >= self.offsets.get(path, 0) else 0
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self.offsets[path] = offset + len(complete)
            tag = path.relative_to(self.folder).with_suffix("")
            for line in complete.decode(errors="replace").splitlines():
                print(f"[{tag}] {line}", flush=True)


def run(seed: dict, name: str, cores: str, dry_run: bool) -> int:
    config = workflow_config(seed)
    layout = Layout(config)
    configfile = ROOT / layout.path("seed_configs", f"{name}.yaml")  # the exact workflow configuration of this run
    configfile.parent.mkdir(parents=True, exist_ok=True)
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    targets = evaluation_files(seed)
    command = [sys.executable, "-m", "snakemake", *targets, "--cores", cores, "--resources", "gpu=1",
               "--configfile", str(configfile.relative_to(ROOT)), *(["--dry-run"] if dry_run else [])]
    print(f"{name}: {seed['variant']} ({seed['evaluation']} evaluation, training {seed['training']['name']}) on "
          f"{seed['dataset']['name']} at imbalance factor {seed['imbalance_factor']:g}", flush=True)
    print("$ python " + " ".join(command[1:]), flush=True)
    echo = LogEcho(ROOT / layout.path("logs"), since=time.time() - 1)
    echo.start()
    try:
        # the workflow runs only with this checkout's package (workflow/rules/common.smk), as this process imports it
        package = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
        code = subprocess.call(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": package})
    finally:
        echo.stop()
    if code == 0 and not dry_run:
        print_summary(seed, targets)
    return code


def print_summary(seed: dict, targets: list[str]) -> None:
    """The evaluation's headline numbers, as the workflow's tables define them (bagmar.evaluation.tables.summarize)."""
    import pandas as pd

    from bagmar.evaluation.tables import summarize

    sweeps = pd.concat([pd.read_csv(ROOT / t) for t in targets if t.endswith("tau_sweep.csv")], ignore_index=True)
    for _, row in summarize(sweeps).iterrows():
        print("\n" + row.to_string(na_rep="n/a"), flush=True)  # a shot group with no classes, as in the tables
    print(f"\nresults: {', '.join(sorted({str(Path(t).parent) for t in targets}))}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Example: python main.py --cfg config/CIFAR100_LT/BaGMar_pn_imba100.yaml")
    parser.add_argument("--cfg", type=Path, help="one experiment's config, e.g. config/CIFAR100_LT/BaGMar_imba100.yaml")
    parser.add_argument("--cores", default="all", help="CPU cores for Snakemake (default: all)")
    parser.add_argument("--dry-run", "-n", action="store_true", help="show the jobs that would run, run nothing")
    parser.add_argument("--write-seed-configs", nargs="*", metavar=("CONFIG", "DIR"),
                        help="write the seed configs of CONFIG (config/config.yaml) into DIR (config/CIFAR100_LT)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. recipe.epochs 10")
    args = parser.parse_args(argv)

    if args.write_seed_configs is not None:
        if len(args.write_seed_configs) not in (0, 2):
            parser.error("--write-seed-configs takes no argument or two: CONFIG DIR")
        source, folder = args.write_seed_configs or ["config/config.yaml", "config/CIFAR100_LT"]
        for path in write_seed_configs(Path(source), Path(folder)):
            print(path)
        return 0
    if args.cfg is None:
        parser.error("--cfg is required (or --write-seed-configs)")
    if not args.cfg.is_file():
        parser.error(f"--cfg {args.cfg}: no such file (the seed's experiments are config/CIFAR100_LT/*.yaml)")
    seed = override(yaml.safe_load(args.cfg.read_text()), args.opts)
    return run(seed, args.cfg.stem, args.cores, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
