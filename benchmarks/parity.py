"""Does the fast trainer learn what the reference-style loop learns? A paired comparison over seeds.

For each seed, two trainings on the SAME long-tailed training set, schedule, width, batch, BaGMar_pn lambdas
(1.2 / 0.9) and seed:

(a) **reference**: ``benchmarks/epoch_time.py``'s ``run_reference`` (imported, not copied): a DataLoader with
    worker processes over torchvision's per-image PIL transforms (RandomCrop, flip, AutoAugment(CIFAR10),
    ToTensor, numpy Cutout, Normalize), fp32 eager ResNet-32, torch.optim.SGD, the statistics updated by a
    per-sample Python loop;
(b) **fast**: ``bagmar.training.train.train`` (on-device batched augmentation, the fused-group step, bagmar.training.engine.SGD).

Both follow SPEC §3's schedule over the same ``--epochs`` (``run_reference`` is called with no untimed epochs,
so its total is ``--epochs``; its learning-rate function is given ``--warmup-epochs``, and the record holds both
loops' per-epoch learning rates, which must be equal). Both start from the same initial weights
(``torch.manual_seed(seed)`` before ``ResNet32``); data order and augmentation draws differ by construction.
Each final-epoch model's test logits are evaluated the same way (``bagmar.evaluation.evaluate``): top-1 and many / medium /
few-shot accuracy, plain (argmax) and PN (tau = 1). Per metric the record holds both loops' means and standard
deviations and the paired difference fast - reference: mean, standard deviation, standard error, the 95 %
Student-t interval and n, plus the seeds that would bring the standard error to ``--target-se`` at the
observed spread. A shot group without classes (few-shot on CIFAR-10-LT at IF 100: its smallest class has 50
images) is recorded as not applicable.

    python /work/shared/data/cifar10_official_layout.py /tmp/c10     # genuine CIFAR-10, official layout (~1 min)
    python benchmarks/parity.py --data cifar10 --cifar10 /tmp/c10 --seeds 0-9 --epochs 10 --width 8 --threads 1
    python benchmarks/parity.py --resume benchmarks/results/<stamp>-parity-cpu.json --data cifar10 ...  # same options

On a shared 2-core CPU use ``--threads 1``: with 2 OpenMP threads and other work on the cores, a training step
was measured 10-15x slower than with one (benchmarks/RESULTS.md).

The record (``benchmarks/results/<stamp>-parity-<device>.json`` unless ``--out``) is rewritten after every seed;
``--resume RECORD`` continues it, skipping the seeds it already holds (the setup must be the same).
Seeds can run in parallel (two processes of one thread each on a 2-core machine, or several machines of one
kind) with ``--out`` per process and then ``--merge A.json B.json --out AB.json``, which trains nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib.util
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from bagmar.data.cifar import load_cifar
from bagmar.data.long_tail import (
    check_spec_counts,
    class_counts,
    long_tailed_indices,
    make_synthetic,
)
from bagmar.evaluation.evaluate import group_accuracies, pn_predictions, shot_groups
from bagmar.io import atomic_write
from bagmar.training.train import Recipe, resolve_device, train

ROOT = Path(__file__).resolve().parent
LOOPS = ("reference", "fast")
EVALUATIONS = {"plain": 0.0, "pn": 1.0}  # PN's tau
GROUPS = ("top1", "many", "medium", "few")
METRICS = [f"{evaluation}/{group}" for evaluation in EVALUATIONS for group in GROUPS]
SPLIT_SEED = 0  # the long-tailed cut (and the synthetic images) are the same for every training seed


def _load_epoch_time():
    """benchmarks/epoch_time.py as a module (registered under its name: its dataclasses look it up there)."""
    if "epoch_time" in sys.modules:
        return sys.modules["epoch_time"]
    spec = importlib.util.spec_from_file_location("epoch_time", ROOT / "epoch_time.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["epoch_time"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("epoch_time", None)
        raise
    return module


epoch_time = _load_epoch_time()
import reference  # noqa: E402 (benchmarks/reference.py, on the path epoch_time put it on)
LAMBDA1, LAMBDA2 = epoch_time.LAMBDA1, epoch_time.LAMBDA2  # BaGMar_pn (SPEC §6)


# --------------------------------------------------------------------------- statistics


def _t_central_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4, exact finite sums)."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for j in range(df // 2 - 1):  # cos^(2j+2): (1*3*...*(2j+1)) / (2*4*...*(2j+2))
            term *= c2 * (2 * j + 1) / (2 * j + 2)
            total += term
        return s * total
    if df == 1:
        return 2.0 * theta / math.pi
    term = math.cos(theta)
    total = term
    for j in range(1, (df - 1) // 2):  # cos^(2j+1): (2*4*...*2j) / (3*5*...*(2j+1))
        term *= c2 * (2 * j) / (2 * j + 1)
        total += term
    return 2.0 / math.pi * (theta + s * total)


def t_quantile(q: float, df: int) -> float:
    """The q-quantile (q > 0.5) of Student's t with integer ``df`` >= 1, e.g. t_quantile(0.975, 3) = 3.182.

    Bisection on the exact distribution function; needs no scipy (not a project dependency).
    """
    if not 0.5 < q < 1 or df < 1 or int(df) != df:
        raise ValueError(f"t_quantile needs 0.5 < q < 1 and an integer df >= 1, got q={q}, df={df}")
    mass = 2.0 * q - 1.0
    lo, hi = 0.0, 1.0
    while _t_central_mass(hi, int(df)) < mass:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central_mass(mid, int(df)) < mass else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return (lo + hi) / 2


def paired_statistics(reference, fast, confidence: float = 0.95, target_se: float | None = None) -> dict:
    """Paired comparison of two lists (same seeds, same order); pairs with a missing/NaN value are left out.

    Returns n, each loop's mean and standard deviation, and for the differences fast - reference: mean,
    standard deviation (n - 1), standard error, the ``confidence`` Student-t interval (lower, upper) and its
    t quantile; with ``target_se``, the seeds that standard error would need at this standard deviation.
    Figures that need n >= 2 are None below it; ``applicable`` is False when no pair is left.
    """
    pairs = [(float(r), float(f)) for r, f in zip(reference, fast)
             if r is not None and f is not None and math.isfinite(float(r)) and math.isfinite(float(f))]
    n = len(pairs)
    out = {"applicable": n > 0, "n": n, "confidence": confidence, "reference_mean": None, "fast_mean": None,
           "reference_sd": None, "fast_sd": None, "mean_diff": None, "sd_diff": None, "se_diff": None,
           "t_quantile": None, "ci_lower": None, "ci_upper": None}
    if target_se is not None:
        out.update(target_se=target_se, seeds_for_target_se=None)
    if n == 0:
        return out
    r, f = [p[0] for p in pairs], [p[1] for p in pairs]
    d = [b - a for a, b in pairs]
    out.update(reference_mean=statistics.fmean(r), fast_mean=statistics.fmean(f), mean_diff=statistics.fmean(d))
    if n >= 2:
        sd = statistics.stdev(d)
        se = sd / math.sqrt(n)
        t = t_quantile(0.5 + confidence / 2, n - 1)
        out.update(reference_sd=statistics.stdev(r), fast_sd=statistics.stdev(f), sd_diff=sd, se_diff=se,
                   t_quantile=t, ci_lower=out["mean_diff"] - t * se, ci_upper=out["mean_diff"] + t * se)
        if target_se is not None:
            out["seeds_for_target_se"] = max(2, math.ceil((sd / target_se) ** 2))
    return out


def all_statistics(runs: list[dict], target_se: float | None = None) -> dict:
    runs = sorted(runs, key=lambda run: run["seed"])
    return {metric: paired_statistics([run["reference"]["metrics"][metric] for run in runs],
                                      [run["fast"]["metrics"][metric] for run in runs], target_se=target_se)
            for metric in METRICS}


# --------------------------------------------------------------------------- the two loops


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def evaluate_logits(logits: np.ndarray, test_labels: np.ndarray, counts: np.ndarray) -> dict:
    """'plain/top1' ... 'pn/few' -> accuracy in %, None for a shot group without classes."""
    predictions = pn_predictions(logits, list(EVALUATIONS.values()))
    out = {}
    for evaluation, p in zip(EVALUATIONS, predictions):
        accuracies = group_accuracies(p, test_labels, counts)
        out.update({f"{evaluation}/{group}": _finite_or_none(accuracies[group]) for group in GROUPS})
    return out


@dataclasses.dataclass
class Setup:
    data: tuple  # (train images, train labels, test images, test labels), the long-tailed cut
    size: object  # epoch_time.Size
    counts: np.ndarray
    description: dict


def prepare_data(args, log) -> Setup:
    if args.data == "cifar10":
        if args.cifar10 is None:
            raise SystemExit("--data cifar10 needs --cifar10 DIR (a folder holding cifar-10-batches-py; write one "
                             "with: python /work/shared/data/cifar10_official_layout.py DIR)")
        images, source = load_cifar("cifar10", unofficial_copy=args.cifar10, progress=log)
        per_class_train, per_class_test, image_size = 5000, 1000, 32
    else:
        per_class_train, per_class_test, image_size = args.train_per_class, args.test_per_class, args.image_size
        images = make_synthetic(args.num_classes, per_class_train, per_class_test, image_size, seed=SPLIT_SEED)
        source = {"dataset": "synthetic", "make_synthetic": {"num_classes": args.num_classes,
                  "train_per_class": per_class_train, "test_per_class": per_class_test, "image_size": image_size,
                  "seed": SPLIT_SEED, "noise": 0.5}}
    num_classes = images.num_classes
    cut = long_tailed_indices(images.train_labels, num_classes, args.imbalance, seed=SPLIT_SEED)
    counts = class_counts(images.train_labels[cut], num_classes)
    if args.data == "cifar10":
        check_spec_counts("cifar10", args.imbalance, counts)
    size = epoch_time.Size(num_classes=num_classes, train_per_class=per_class_train, test_per_class=per_class_test,
                           image_size=image_size, width=args.width, batch_size=args.batch_size,
                           imbalance_factor=args.imbalance)
    steps = len(cut) // size.batch_size
    if steps == 0:
        raise SystemExit(f"{len(cut)} training images make no batch of {size.batch_size}")
    groups = shot_groups(counts)
    data = (images.train_images[cut], images.train_labels[cut], images.test_images, images.test_labels)
    description = {
        "data": args.data, "source": source, "imbalance_factor": args.imbalance, "split_seed": SPLIT_SEED,
        "num_classes": num_classes, "train_images": len(cut), "test_images": len(images.test_labels),
        "class_counts": counts.tolist(),
        "shot_group_classes": {g: int((groups == g).sum()) for g in ("many", "medium", "few")},
        "image_size": image_size, "padding": size.padding, "cutout_size": size.cutout_size,
        "epochs": args.epochs, "warmup_epochs": args.warmup_epochs, "width": args.width,
        "batch_size": args.batch_size, "steps_per_epoch": steps, "lambda1": LAMBDA1, "lambda2": LAMBDA2,
        "base_lr": Recipe.base_lr, "peak_lr": Recipe.peak_lr, "momentum": Recipe.momentum,
        "weight_decay": Recipe.weight_decay, "num_workers": args.num_workers, "threads": torch.get_num_threads(),
        "device": args.device_resolved,
    }
    return Setup(data, size, counts, description)


def _reference_schedule(warmup: int):
    """The reference loop's learning rate (reference.reference_lr, SPEC §3's formula) with ``warmup`` epochs of
    warm-up, and the list of the rates it sets (the record compares them with the fast trainer's)."""
    rates = []

    def schedule(epoch: int, epochs: int) -> float:
        rates.append(reference.reference_lr(epoch, epochs, warmup=warmup))
        return rates[-1]

    return schedule, rates


def run_seed(setup: Setup, args, seed: int, log) -> dict:
    train_images, train_labels, test_images, test_labels = setup.data
    size, device = setup.size, args.device_resolved
    loads = [epoch_time.loadavg()]

    schedule, reference_rates = _reference_schedule(args.warmup_epochs)
    started = time.perf_counter()
    reference_run = reference.run_reference(setup.data, size, args.epochs, 0, device, args.num_workers, seed,
                                            args.eval_batch_size, lambda line: log(f"  seed {seed} " + line.strip()),
                                            schedule=schedule)
    reference_wall = time.perf_counter() - started
    loads.append(epoch_time.loadavg())

    # the reference loop runs torchvision's AutoAugment (reference.reference_transforms): so does the fast one here
    recipe = Recipe(epochs=args.epochs, warmup_epochs=args.warmup_epochs, batch_size=size.batch_size,
                    width=size.width, padding=size.padding, cutout_size=size.cutout_size, autoaugment="torchvision",
                    lambda1=LAMBDA1, lambda2=LAMBDA2, seed=seed)
    started = time.perf_counter()
    fast = train(train_images, train_labels, test_images, test_labels, size.num_classes, recipe, device=device,
                 progress=lambda line: log(f"  seed {seed} fast " + line.strip())
                 if " epoch " in line and "step" not in line else None, name="trainer")
    fast_wall = time.perf_counter() - started
    loads.append(epoch_time.loadavg())

    fast_rates = [row["lr"] for row in fast.metrics]
    if len(reference_rates) != len(fast_rates) or not np.allclose(reference_rates, fast_rates, rtol=0, atol=1e-12):
        raise RuntimeError(f"the two loops' learning-rate schedules differ: reference {reference_rates}, "
                           f"fast {fast_rates}")
    return {
        "seed": seed,
        "loadavg": {"start": loads[0], "after_reference": loads[1], "end": loads[2]},
        "lr_per_epoch": fast_rates,
        "reference": {
            "metrics": evaluate_logits(reference_run["final_test_logits"], test_labels, setup.counts),
            "in_loop_final_test_acc": reference_run["final_test_acc"],  # the loop's own plain/PN top-1, a cross-check
            "wall_seconds": reference_wall,
            "train_seconds": reference_run["train_seconds"],
            "eval_seconds": reference_run["eval_seconds"],
            "seconds_per_epoch": reference_wall / args.epochs,
        },
        "fast": {
            "metrics": evaluate_logits(fast.test_logits, test_labels, setup.counts),
            "in_loop_final_test_acc": {"plain": fast.metrics[-1]["test_acc"], "pn": fast.metrics[-1]["test_acc_pn"]},
            "wall_seconds": fast_wall,
            "epoch_seconds": [row["seconds"] for row in fast.metrics],
            "seconds_per_epoch": fast_wall / args.epochs,
        },
    }


# --------------------------------------------------------------------------- command line and record


def parse_seeds(tokens: list[str]) -> list[int]:
    """'0-9', '0,1,2', '0 1 2' or mixtures ('0-2,5') -> sorted unique seeds."""
    seeds = set()
    for token in tokens:
        for part in filter(None, token.replace(",", " ").split()):
            first, dash, last = part.partition("-")
            try:
                lo, hi = (int(first), int(last)) if dash else (int(first), int(first))
            except ValueError:
                raise SystemExit(f"--seeds: {part!r} is neither a seed nor a range like 0-9") from None
            if hi < lo:
                raise SystemExit(f"--seeds: empty range {part!r}")
            seeds.update(range(lo, hi + 1))
    if not seeds:
        raise SystemExit("--seeds: no seed given")
    return sorted(seeds)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["cifar10", "synthetic"], default="cifar10")
    p.add_argument("--cifar10", type=Path, help="folder holding cifar-10-batches-py (read as an unofficial copy)")
    p.add_argument("--imbalance", type=float, default=100, help="imbalance factor of the cut (default 100)")
    p.add_argument("--seeds", nargs="+", default=["0-9"], help="training seeds: 0-9, 0,1,2 or 0 1 2 (default 0-9)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of both loops' schedule (default 10)")
    p.add_argument("--warmup-epochs", type=int, default=2,
                   help="learning-rate warm-up epochs inside the schedule, SPEC §3 (default 2)")
    p.add_argument("--width", type=int, default=8, help="ResNet-32 first-stage width (default 8; the paper's is 16)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's setting)")
    p.add_argument("--num-workers", type=int, default=2, help="reference loader worker processes (default 2)")
    p.add_argument("--eval-batch-size", type=int, default=100, help="reference test loader batch (default 100)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--target-se", type=float, default=1.5,
                   help="standard error (points) for the 'seeds needed' projection (default 1.5)")
    p.add_argument("--out", type=Path, help="JSON record (default benchmarks/results/<stamp>-parity-<device>.json)")
    p.add_argument("--resume", type=Path, metavar="RECORD", help="continue this record, skipping its seeds")
    p.add_argument("--merge", type=Path, nargs="+", metavar="RECORD",
                   help="write one record (--out) from records of the same setup with different seeds; trains nothing")
    synthetic = p.add_argument_group("--data synthetic (make_synthetic, split seed 0)")
    synthetic.add_argument("--num-classes", type=int, default=10)
    synthetic.add_argument("--train-per-class", type=int, default=300)
    synthetic.add_argument("--test-per-class", type=int, default=100)
    synthetic.add_argument("--image-size", type=int, default=16)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.warmup_epochs < 0 or args.width < 1 or args.batch_size < 1 or args.num_workers < 0:
        raise SystemExit("--epochs and --width and --batch-size must be >= 1, --warmup-epochs and --num-workers >= 0")
    args.seed_list = parse_seeds(args.seeds)
    return args


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def summary(record: dict) -> str:
    s = record["setup"]
    runs = record["runs"]
    lines = [(
        f"parity: {record['device']['name']} ({s['device']}), torch {record['torch_version']}, {s['threads']} threads, "
        f"{s['num_workers']} reference loader workers; load average {record['loadavg']['start']} -> "
        f"{record['loadavg']['end']}"), (
        f"{s['data']} IF {s['imbalance_factor']:g}: {s['train_images']} training images ({s['steps_per_epoch']} steps "
        f"of {s['batch_size']}), {s['test_images']} test; ResNet-32 width {s['width']}, {s['epochs']} epochs "
        f"(warm-up {s['warmup_epochs']}), lambda {s['lambda1']}/{s['lambda2']}; seeds {[r['seed'] for r in runs]}"),
    ]
    if runs:
        ref_s = statistics.fmean(r["reference"]["seconds_per_epoch"] for r in runs)
        fast_s = statistics.fmean(r["fast"]["seconds_per_epoch"] for r in runs)
        lines.append(f"seconds per epoch (wall, incl. the per-epoch test pass): reference {ref_s:.1f}, fast "
                     f"{fast_s:.1f}; {epoch_time._clock(record['wall_seconds'])} in all")
    lines.append(f"{'metric':13}{'reference':>11}{'fast':>9}{'diff':>9}{'95% CI':>20}{'sd diff':>9}{'n':>4}"
                 f"{'seeds@SE' + format(record['target_se'], 'g'):>13}")
    for metric, st in record["statistics"].items():
        if not st["applicable"]:
            lines.append(f"{metric:13}{'n/a (no classes in this group)':>50}")
            continue
        ci = "n/a" if st["ci_lower"] is None else f"[{st['ci_lower']:+.2f}, {st['ci_upper']:+.2f}]"
        lines.append(f"{metric:13}{_fmt(st['reference_mean']):>11}{_fmt(st['fast_mean']):>9}"
                     f"{st['mean_diff']:>+9.2f}{ci:>20}{_fmt(st['sd_diff']):>9}{st['n']:>4}"
                     f"{'n/a' if st.get('seeds_for_target_se') is None else st['seeds_for_target_se']:>13}")
    return "\n".join(lines)


def _write(record: dict, out: Path) -> None:
    with atomic_write(out) as f:
        f.write(json.dumps(record, indent=2, allow_nan=False) + "\n")


def setup_differences(a: dict, b: dict) -> list[str]:
    """Keys in which two records' setups differ, ignoring what changes timing only (threads) or where the
    data copy lies (its location); the data's member md5s still have to agree."""
    def comparable(description):
        return {**description, "threads": None,
                "source": {k: v for k, v in description.get("source", {}).items() if k != "location"}}

    a, b = comparable(a), comparable(b)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def merge(paths: list[Path], target_se: float) -> dict:
    """One record from several of the same setup that ran different seeds (e.g. in parallel processes or on
    several machines). Each part's command, machine, load and wall time is kept under ``parts``; the top-level
    ``wall_seconds`` is their sum (device time, not elapsed time when the parts overlapped)."""
    records = [json.loads(Path(path).read_text()) for path in paths]
    first = records[0]
    runs, seen = [], {}
    for path, record in zip(paths, records):
        differ = setup_differences(first["setup"], record["setup"])
        if differ:
            raise SystemExit(f"--merge: {path} has a different setup than {paths[0]} in {', '.join(differ)}")
        if record["torch_version"] != first["torch_version"] or record["device"] != first["device"]:
            raise SystemExit(f"--merge: {path} ran on {record['device']['name']} with torch "
                             f"{record['torch_version']}, {paths[0]} on {first['device']['name']} with torch "
                             f"{first['torch_version']}; merge only records of one machine kind and torch")
        for run in record["runs"]:
            if run["seed"] in seen:
                raise SystemExit(f"--merge: seed {run['seed']} is in both {seen[run['seed']]} and {path}")
            seen[run["seed"]] = path
            runs.append(run)
    runs.sort(key=lambda r: r["seed"])
    parts = [{key: record[key] for key in ("command", "timestamp", "machine", "loadavg", "wall_seconds", "complete")}
             | {"file": Path(path).name, "seeds": [r["seed"] for r in record["runs"]]}
             for path, record in zip(paths, records)]
    return {
        **{key: first[key] for key in ("benchmark", "machine", "device", "torch_version", "torchvision_version")},
        "timestamp": max(record["timestamp"] for record in records),
        "command": shlex.join(["python", "benchmarks/parity.py", "--merge", *map(str, paths)]),
        "loadavg": {"start": first["loadavg"]["start"], "end": records[-1]["loadavg"]["end"]},
        "seeds": [r["seed"] for r in runs],
        "setup": first["setup"],
        "comparison": first["comparison"],
        "target_se": target_se,
        "runs": runs,
        "statistics": all_statistics(runs, target_se),
        "wall_seconds": sum(record["wall_seconds"] for record in records),
        "complete": all(record["complete"] for record in records),
        "parts": parts,
    }


def main(argv: list[str] | None = None, log=print) -> dict:
    args = parse_args(argv)
    if args.merge:
        if args.out is None:
            raise SystemExit("--merge needs --out, the merged record's path")
        record = merge(args.merge, args.target_se)
        _write(record, args.out)
        log(summary(record))
        log(f"record: {args.out}")
        return record
    args.device_resolved = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    setup = prepare_data(args, log)
    runs, previous_wall, seeds = [], 0.0, list(args.seed_list)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or args.resume or ROOT / "results" / f"{stamp}-parity-{args.device_resolved}.json"
    if args.resume is not None:
        old = json.loads(args.resume.read_text())
        differ = setup_differences(old["setup"], setup.description)
        if differ:
            raise SystemExit(f"--resume {args.resume}: its setup differs in {', '.join(differ)} "
                             f"({ {k: old['setup'].get(k) for k in differ} }); give the same options")
        runs, previous_wall = old["runs"], old["wall_seconds"]
        seeds = sorted(set(old["seeds"]) | set(seeds))
        log(f"resuming {args.resume}: seeds {[r['seed'] for r in runs]} done")
    done = {run["seed"] for run in runs}
    record = {
        "benchmark": "parity",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/parity.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": epoch_time.machine(),
        "device": {"type": args.device_resolved, "name": torch.cuda.get_device_name()
                   if args.device_resolved.startswith("cuda") else epoch_time.machine()["cpu_model"]},
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "loadavg": {"start": epoch_time.loadavg(), "end": None},
        "seeds": seeds,
        "setup": setup.description,
        "comparison": "fast - reference, paired by seed, final-epoch models; accuracies in %",
        "target_se": args.target_se,
        "runs": runs,
        "statistics": all_statistics(runs, args.target_se),
        "wall_seconds": previous_wall,
        "complete": False,
    }
    started = time.perf_counter()
    for seed in seeds:
        if seed in done:
            continue
        log(f"seed {seed}: reference loop, then fast trainer ...")
        run = run_seed(setup, args, seed, log)
        runs.append(run)
        runs.sort(key=lambda r: r["seed"])
        m = {loop: run[loop]["metrics"] for loop in LOOPS}
        log(f"seed {seed}: top-1 plain reference {m['reference']['plain/top1']:.2f} fast "
            f"{m['fast']['plain/top1']:.2f}, PN {m['reference']['pn/top1']:.2f} / {m['fast']['pn/top1']:.2f}; "
            f"wall {run['reference']['wall_seconds']:.0f} + {run['fast']['wall_seconds']:.0f} s")
        record.update(statistics=all_statistics(runs, args.target_se),
                      wall_seconds=previous_wall + time.perf_counter() - started)
        record["loadavg"]["end"] = epoch_time.loadavg()
        _write(record, out)
    record.update(statistics=all_statistics(runs, args.target_se),
                  wall_seconds=previous_wall + time.perf_counter() - started,
                  complete={run["seed"] for run in runs} >= set(seeds))
    record["loadavg"]["end"] = epoch_time.loadavg()
    _write(record, out)
    log(summary(record))
    log(f"record: {out}")
    return record


if __name__ == "__main__":
    main()
