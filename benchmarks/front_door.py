"""What a newcomer waits for: the install, the demo and the test suite, timed on a fresh clone.

    python benchmarks/front_door.py                   # the demo (the README's quick-start command)
    python benchmarks/front_door.py --suite           # the demo, then the test suite (python -m pytest)
    python benchmarks/front_door.py --install --suite # also a fresh virtualenv: pip install -e '.[test]', its size
    python benchmarks/front_door.py --miniature       # also the image-list demo (config/miniature.yaml)
    python benchmarks/front_door.py --places-like     # also the Places-like demo (config/miniature_places.yaml)

Each stage runs in a fresh `git clone` of this checkout's HEAD (committed work only, as CI sees it) in a
temporary directory, exactly as the README says to run it; `--install` first builds a virtualenv there and
runs the demo and the suite with its Python, so the figures are a new machine's. Wall times are what the
tests used to assert and no longer do: a duration depends on the machine and its load, so each record keeps
the machine, the load average before and after every stage and the command, and README figures quote it.
The record lands in benchmarks/results/<stamp>-front-door.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from epoch_time import _clock, loadavg, machine  # noqa: E402

DEMO = ["-m", "snakemake", "--cores", "all", "--configfile", "config/demo.yaml"]
MINIATURE = ["-m", "snakemake", "--cores", "all", "--configfile", "config/miniature.yaml"]
PLACES_LIKE = ["-m", "snakemake", "--cores", "all", "--configfile", "config/miniature_places.yaml"]
SUITE = ["-m", "pytest"]


def timed(name: str, command: list[str], cwd: Path, log: Path, env: dict | None = None) -> dict:
    """Run one stage, its output into `log`; wall time, exit status and the load around it."""
    before = loadavg()
    started = time.perf_counter()
    with open(log, "w") as out:
        returncode = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - started
    tail = log.read_text().strip().splitlines()[-1:] or [""]
    print(f"{name}: {_clock(seconds)} ({seconds:.0f} s), exit {returncode}; load {before} -> {loadavg()}; "
          f"last line: {tail[0][:120]}", flush=True)
    return {"command": " ".join(command), "seconds": round(seconds, 1), "returncode": returncode,
            "load_before": before, "load_after": loadavg(), "last_line": tail[0]}


def size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--install", action="store_true", help="install into a fresh virtualenv first")
    parser.add_argument("--suite", action="store_true", help="also time the test suite")
    parser.add_argument("--no-demo", dest="demo", action="store_false", help="skip the demo")
    parser.add_argument("--miniature", action="store_true", help="also time the image-list demo")
    parser.add_argument("--places-like", action="store_true", help="also time the Places-like image-list demo")
    parser.add_argument("--out", type=Path, help="record path (default benchmarks/results/<stamp>-front-door.json)")
    args = parser.parse_args(argv)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "benchmarks" / "results" / f"{stamp}-front-door.json"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    record = {"date": stamp, "commit": commit, "machine": machine(), "stages": {}}
    with tempfile.TemporaryDirectory(prefix="front-door-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        # without --install, this Python runs the clone's package (as the workflow requires; another checkout
        # may be the one installed)
        python = sys.executable
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(clone / "src"),
                                                                          os.environ.get("PYTHONPATH")]))}
        if args.install:
            venv = Path(tmp) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            python = str(venv / "bin" / "python")
            env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
            stage = timed("install", [python, "-m", "pip", "install", "--disable-pip-version-check", "-e", ".[test]"],
                          clone, Path(tmp) / "install.log", env)
            stage["venv_bytes"] = size_bytes(venv)
            print(f"virtualenv: {stage['venv_bytes'] / 2**30:.1f} GiB", flush=True)
            record["stages"]["install"] = stage
        if args.demo:
            record["stages"]["demo"] = timed("demo", [python, *DEMO], clone, Path(tmp) / "demo.log", env)
        if args.miniature:
            record["stages"]["miniature"] = timed("miniature", [python, *MINIATURE], clone, Path(tmp) / "miniature.log",
                                                  env)
        if args.places_like:
            record["stages"]["places_like"] = timed("places-like", [python, *PLACES_LIKE], clone,
                                                    Path(tmp) / "places_like.log", env)
        if args.suite:
            record["stages"]["suite"] = timed("suite", [python, *SUITE], clone, Path(tmp) / "suite.log", env)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {out}")
    return record


if __name__ == "__main__":
    sys.exit(0 if all(s["returncode"] == 0 for s in main()["stages"].values()) else 1)
