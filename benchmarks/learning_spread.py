"""Seed-to-seed spread of the learning tests' effects, to choose their margins.

tests/test_learning.py asserts that BaGMar, the logit-adjusted loss and LDAM-DRW beat cross-entropy and that PN
beats plain argmax, by margins. A
margin read off one machine's trajectory breaks on another CPU (floating-point differences grow chaotically
over training), so the margins are chosen from this benchmark: the test's own setup (``learning_run``,
imported from the test) for several seeds under each ATEN_CPU_CAPABILITY, each capability in its own
process (PyTorch reads the variable once, at import). The record holds every run's accuracies and, per
effect, the smallest value seen; the test's margins should stay well below those minima.

    python benchmarks/learning_spread.py --seeds 0-3 --capabilities default avx2 avx512   # ~25 min on 2 cores
    python benchmarks/learning_spread.py --seeds 0-1 --jobs 2                             # two processes at once

Record: benchmarks/results/<stamp>-learning-spread.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TEST = ROOT.parent / "tests" / "test_learning.py"
# effect name -> (training, tau, metric) minus (training, tau, metric)
EFFECTS = {
    "bagmar_minus_ce_top1": (("bagmar", 0.0, "top1"), ("ce", 0.0, "top1")),
    "bagmar_minus_ce_few": (("bagmar", 0.0, "few"), ("ce", 0.0, "few")),
    "pn_minus_plain_ce_top1": (("ce", 1.0, "top1"), ("ce", 0.0, "top1")),
    "pn_minus_plain_ce_few": (("ce", 1.0, "few"), ("ce", 0.0, "few")),
    "logit_adjusted_minus_ce_top1": (("logit_adjusted", 0.0, "top1"), ("ce", 0.0, "top1")),
    "logit_adjusted_minus_ce_few": (("logit_adjusted", 0.0, "few"), ("ce", 0.0, "few")),
    "ldam_drw_minus_ce_top1": (("ldam_drw", 0.0, "top1"), ("ce", 0.0, "top1")),
    "ldam_drw_minus_ce_few": (("ldam_drw", 0.0, "few"), ("ce", 0.0, "few")),
    "ce_many_minus_few": (("ce", 0.0, "many"), ("ce", 0.0, "few")),
    "ce_top1": (("ce", 0.0, "top1"), None),
    "ce_many": (("ce", 0.0, "many"), None),
}

TRAININGS = {"ce": {}, "bagmar": dict(lambda1=1.0, lambda2=1.0), "logit_adjusted": dict(loss="logit_adjusted"),
             "ldam_drw": dict(loss="ldam_drw")}  # as tests/test_learning.py's sweeps fixture


def _learning_run():
    spec = importlib.util.spec_from_file_location("test_learning", TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one(seed: int) -> dict:
    """The test's trainings at one seed, in this process (its ATEN_CPU_CAPABILITY)."""
    import torch

    torch.set_num_threads(1)
    test = _learning_run()
    row = {"seed": seed, "capability": os.environ.get("ATEN_CPU_CAPABILITY", "native"), "seconds": {}, "metrics": {}}
    for name, settings in TRAININGS.items():
        started = time.perf_counter()
        sweep = test.learning_run(**settings, seed=seed)
        row["seconds"][name] = round(time.perf_counter() - started, 1)
        for tau in (0.0, 1.0):
            for metric in ("top1", "many", "medium", "few"):
                row["metrics"][f"{name}/{tau:g}/{metric}"] = float(sweep.loc[tau, metric])
    row["effects"] = {}
    for effect, (a, b) in EFFECTS.items():
        value = row["metrics"][f"{a[0]}/{a[1]:g}/{a[2]}"]
        if b is not None:
            value -= row["metrics"][f"{b[0]}/{b[1]:g}/{b[2]}"]
        row["effects"][effect] = round(value, 2)
    return row


def run_in_subprocess(capability: str, seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run([sys.executable, __file__, "--one", str(seed)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{capability} seed {seed} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["capability"] = capability
    print(f"{capability} seed {seed}: " + ", ".join(f"{k} {v:+.1f}" for k, v in row["effects"].items()), flush=True)
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0-3", help="e.g. 0-3 or 0,2,5 (default 0-3)")
    p.add_argument("--capabilities", nargs="+", default=["default", "avx2", "native"],
                   help="ATEN_CPU_CAPABILITY values; 'native' leaves it unset (default: default avx2 native)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, one thread each (default 1)")
    p.add_argument("--out", type=Path)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one seed in this process
    args = p.parse_args(argv)
    if args.one is not None:
        print(json.dumps(one(args.one)))
        return {}
    sys.path.insert(0, str(ROOT))
    import epoch_time  # noqa: E402 (benchmarks/epoch_time.py: machine description and load)
    from parity import parse_seeds  # noqa: E402 (the same seed syntax as the parity benchmark)

    seeds = parse_seeds([args.seeds])

    started, load = time.perf_counter(), epoch_time.loadavg()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda cs: run_in_subprocess(*cs), [(c, s) for c in args.capabilities for s in seeds]))
    minima = {effect: min(row["effects"][effect] for row in rows) for effect in EFFECTS}
    record = {
        "benchmark": "learning_spread",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/learning_spread.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": epoch_time.machine(),
        "loadavg": {"start": load, "end": epoch_time.loadavg()},
        "setup": "tests/test_learning.py learning_run (see its docstring)",
        "runs": rows,
        "minimum_effect": minima,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    out = args.out or ROOT / "results" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-learning-spread.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("smallest effect over all runs: " + ", ".join(f"{k} {v:+.1f}" for k, v in minima.items()))
    print(f"record: {out}")
    return record


if __name__ == "__main__":
    main()
