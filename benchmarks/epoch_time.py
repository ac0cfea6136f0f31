"""Per-epoch training and evaluation time at IF 100: a reference-style loop against the project's trainer.

The project's trainer should be faster than the paper's released code. This script measures both, in one run on
one machine, on the project's synthetic CIFAR-shaped set cut to IF 100 (full size: 100 classes, 10,847 training
images = 169 steps of 64, 10,000 test images, 32x32, ResNet-32 of width 16):

(a) **reference-style**: written here to SPEC, in the released code's shape: a torch DataLoader with worker
    processes over a Dataset that runs torchvision's per-image PIL transforms (RandomCrop(padding),
    RandomHorizontalFlip, AutoAugment(CIFAR10, fill=128), ToTensor, a per-image numpy Cutout, Normalize);
    fp32 eager ResNet-32 (``bagmar.method.model.ResNet32``); SGD per SPEC §3; the BaGMar loss with its gradient read
    from the adjusted logits after backward and the statistics updated by a per-sample Python loop
    (``F[:, y_i] += g[i]``, then ``P += F*I``, ``N += F*(1-I)``, ``theta = P.sum(1)``, ``phi = N.sum(0)``);
    ``loss.item()`` every step for the running loss, as such code logs; after each epoch a test pass through a
    DataLoader (ToTensor + Normalize per image) with plain and PN (tau = 1) accuracy.
(b) **project**: ``bagmar.training.train.train`` for the same epochs. Its logged per-epoch seconds include its own
    evaluation (test logits + PN), which it logs separately (``eval_seconds``, after a host sync that ends the
    epoch's training steps); the project's training time per epoch is the logged epoch time minus that epoch's
    evaluation. The same evaluation is also timed separately on the final model (``predict_logits`` + PN), as a
    cross-check in the record. The benchmark changes nothing in the trainer.

Both loops run one warm-up epoch (not timed: allocator, cuDNN autotuning, lazy init, first loader start) and
then ``--epochs`` timed epochs; the figures are the median over the timed epochs. ``torch.set_num_threads``
is set once for both loops. The JSON record also projects the full paper table: 12 trainings (3 per IF) x 200
epochs at the step counts of IF 200/100/50/10 (148, 169, 197, 305 per epoch), each epoch followed by one
evaluation of the 10,000 test images, from the measured per-step training and per-epoch evaluation time. The
projection means something only at full size (``"projection"["full_size"]``).

    python benchmarks/epoch_time.py                      # full size, device auto
    python benchmarks/epoch_time.py --small --device cpu # CPU smoke size, well under a minute on 2 cores
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from bagmar.data.long_tail import long_tailed_indices, make_synthetic
from bagmar.evaluation.evaluate import pn_predictions
from bagmar.training.train import Recipe, predict_logits, resolve_device, train, train_group

if str(Path(__file__).resolve().parent) not in sys.path:  # imported by file path from the tests
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import FULL, LAMBDA1, LAMBDA2, SMALL, Size, _sync, run_reference  # noqa: E402,F401 (benchmarks/reference.py)

ROOT = Path(__file__).resolve().parent
PAPER_STEPS_PER_EPOCH = {200: 148, 100: 169, 50: 197, 10: 305}  # CIFAR-100-LT at batch 64 (SPEC §1, §3)
PAPER_EPOCHS, PAPER_TRAININGS_PER_IF, PAPER_TEST_IMAGES, PAPER_SEEDS = 200, 3, 10_000, 3




# --------------------------------------------------------------------------- (b) the project's trainer


def time_project_eval(model: nn.Module, test_images: np.ndarray, test_labels: np.ndarray, device: str,
                      repeats: int) -> list[float]:
    """The trainer's per-epoch evaluation on its own: predict_logits on the device-resident test set + PN."""
    x_test = torch.from_numpy(np.ascontiguousarray(test_images)).permute(0, 3, 1, 2).contiguous().to(device)
    seconds = []
    for _ in range(repeats + 1):  # the first call is a warm-up
        _sync(device)
        started = time.perf_counter()
        logits = predict_logits(model, x_test)
        plain, pn = pn_predictions(logits.cpu().numpy(), [0.0, 1.0])
        float(np.mean(plain == test_labels)), float(np.mean(pn == test_labels))
        seconds.append(time.perf_counter() - started)
    return seconds[1:]


def run_project(data, size: Size, epochs: int, warmup_epochs: int, device: str, seed: int, log) -> dict:
    train_images, train_labels, test_images, test_labels = data
    recipe = Recipe(epochs=warmup_epochs + epochs, batch_size=size.batch_size, width=size.width,
                    padding=size.padding, cutout_size=size.cutout_size, lambda1=LAMBDA1, lambda2=LAMBDA2, seed=seed)
    result = train(train_images, train_labels, test_images, test_labels, size.num_classes, recipe, device=device,
                   progress=lambda line: log("  project " + line.strip())
                   if " epoch " in line and "step" not in line else None, name="trainer")
    epoch_seconds = [row["seconds"] for row in result.metrics]
    in_trainer = [row["eval_seconds"] for row in result.metrics]
    separate = time_project_eval(result.model, test_images, test_labels, device, max(epochs, 3))
    total = statistics.median(epoch_seconds[warmup_epochs:])
    eval_s = statistics.median(in_trainer[warmup_epochs:])
    train_s = statistics.median([e - v for e, v in zip(epoch_seconds, in_trainer)][warmup_epochs:])
    return {
        "includes": {
            "epoch_total": "bagmar.training.train.train's logged seconds per epoch (metrics[i]['seconds']): augmentation on "
                           "the device, training steps, its per-epoch test evaluation (predict_logits + PN) and metrics",
            "eval": "the trainer's own test pass in each epoch, as it logs it (metrics[i]['eval_seconds']: "
                    "predict_logits on the device-resident uint8 test set, plain and PN accuracy, after a sync)",
            "train": "derived: per epoch, logged epoch seconds - that epoch's eval seconds",
        },
        "eval_source": "in_trainer",
        "epoch_seconds": epoch_seconds,
        "eval_seconds": in_trainer,
        "eval_separate_seconds": separate,
        "epoch_total": total,
        "eval_per_epoch": eval_s,
        "train_per_epoch": train_s,
        "final_test_acc": {"plain": result.metrics[-1]["test_acc"], "pn": result.metrics[-1]["test_acc_pn"]},
    }


# --------------------------------------------------------------------------- (c) fused groups


FUSED_LAMBDAS = [(0.0, 0.0), (1.0, 1.0), (1.2, 0.9)]  # ce, BaGMar, BaGMar_pn (SPEC §6), then seeds


def run_fused(data, size: Size, epochs: int, warmup_epochs: int, device: str, seed: int, members: int,
              precision: str, log) -> dict:
    """``bagmar.training.train.train_group`` with K models (the three trainings of an IF, then further seeds)."""
    train_images, train_labels, test_images, test_labels = data
    recipes = [
        Recipe(epochs=warmup_epochs + epochs, batch_size=size.batch_size, width=size.width, padding=size.padding,
               cutout_size=size.cutout_size, lambda1=FUSED_LAMBDAS[k % 3][0], lambda2=FUSED_LAMBDAS[k % 3][1],
               seed=seed + k // 3, precision=precision)
        for k in range(members)
    ]
    results = train_group(train_images, train_labels, test_images, test_labels, size.num_classes, recipes,
                          device=device, names=[f"m{k}" for k in range(members)],
                          progress=lambda line: log(f"  fused x{members} " + line.strip())
                          if line.startswith("m0 epoch") else None)
    epoch_seconds = [row["seconds"] for row in results[0].metrics]
    in_trainer = [row["eval_seconds"] for row in results[0].metrics]
    total = statistics.median(epoch_seconds[warmup_epochs:])
    eval_s = statistics.median(in_trainer[warmup_epochs:])
    train_s = statistics.median([e - v for e, v in zip(epoch_seconds, in_trainer)][warmup_epochs:])
    return {
        "members": members,
        "precision": precision,
        "epoch_seconds": epoch_seconds,
        "eval_seconds": in_trainer,
        "epoch_total": total,
        "eval_per_epoch": eval_s,
        "train_per_epoch": train_s,
        "per_model_epoch": total / members,
        "final_test_acc": [{"plain": r.metrics[-1]["test_acc"], "pn": r.metrics[-1]["test_acc_pn"]} for r in results],
    }


def fused_table(train_per_step: float, eval_per_epoch: float, test_images: int, members: int) -> dict:
    """The paper table run as fused jobs of ``members`` models each (3 trainings x seeds per IF)."""
    eval_s = eval_per_epoch * PAPER_TEST_IMAGES / test_images
    per_job = {str(f): PAPER_EPOCHS * (steps * train_per_step + eval_s) for f, steps in PAPER_STEPS_PER_EPOCH.items()}
    jobs = {seeds: math.ceil(PAPER_TRAININGS_PER_IF * seeds / members) for seeds in (1, PAPER_SEEDS)}
    return {"models_per_job": members, "per_job_seconds": per_job,
            "one_seed_seconds": jobs[1] * sum(per_job.values()),
            "three_seeds_seconds": jobs[PAPER_SEEDS] * sum(per_job.values())}


def graph_check(data, size: Size, device: str, seed: int, log, epochs: int = 2) -> dict:
    """A GPU's CUDA-graph step against the same step run eagerly: 3 fused models, same seeds, ``epochs`` epochs.

    Rounding (and cuDNN's algorithm choice) differ between the two, and early training amplifies
    it (tests/test_fused.py); a frozen learning rate, batch position or random stream would not
    stay within a few per cent. Only meaningful on CUDA.
    """
    train_images, train_labels, test_images, test_labels = data
    recipes = [Recipe(epochs=epochs, batch_size=size.batch_size, width=size.width, padding=size.padding,
                      cutout_size=size.cutout_size, lambda1=l1, lambda2=l2, seed=seed) for l1, l2 in FUSED_LAMBDAS]
    runs = {}
    for graph in (True, False):
        runs[graph] = train_group(train_images, train_labels, test_images, test_labels, size.num_classes, recipes,
                                  device=device, progress=lambda line: None, cuda_graph=graph)
    differences = []
    for a, b in zip(runs[True], runs[False]):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        names = [n for n in sa if sa[n].is_floating_point()]
        num = sum((sa[n] - sb[n]).double().square().sum() for n in names).sqrt()
        differences.append(float(num / sum(sb[n].double().square().sum() for n in names).sqrt()))
    record = {"epochs": epochs, "relative_weight_difference": differences,
              "test_acc": {"graph": [r.metrics[-1]["test_acc"] for r in runs[True]],
                           "eager": [r.metrics[-1]["test_acc"] for r in runs[False]]},
              "lr_per_epoch": [row["lr"] for row in runs[True][0].metrics]}
    log(f"graph check: relative weight difference graph vs eager per model {[f'{d:.2e}' for d in differences]}, "
        f"test accuracy graph {record['test_acc']['graph']} vs eager {record['test_acc']['eager']}")
    return record


# --------------------------------------------------------------------------- record


def project_table(train_per_step: float, eval_per_epoch: float, test_images: int) -> dict:
    """Wall time of the paper table (3 trainings per IF x 4 IFs x 200 epochs, one evaluation per epoch)."""
    eval_s = eval_per_epoch * PAPER_TEST_IMAGES / test_images
    per_training = {
        str(imbalance): PAPER_EPOCHS * (steps * train_per_step + eval_s)
        for imbalance, steps in PAPER_STEPS_PER_EPOCH.items()
    }
    one_seed = PAPER_TRAININGS_PER_IF * sum(per_training.values())
    return {"per_training_seconds": per_training, "one_seed_seconds": one_seed,
            "three_seeds_seconds": PAPER_SEEDS * one_seed}


def machine() -> dict:
    """Host, CPU (the first processor's /proc/cpuinfo model name, family, model, stepping) and Python."""
    cpu = {"model name": platform.processor() or platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "cpu family", "model", "stepping"):
                cpu[key.strip()] = value.strip()
    except OSError:
        pass
    return {"host": platform.node(), "platform": platform.platform(), "cpu_model": cpu["model name"],
            "cpu_id": {k: v for k, v in cpu.items() if k != "model name"}, "cpu_count": os.cpu_count(),
            "python": platform.python_version()}


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def default_out(device: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return ROOT / "results" / f"{stamp}-{device}.json"


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def summary(record: dict) -> str:
    s, ref, proj, ratio = record["sizes"], record["reference"], record["project"], record["ratio"]
    table = record["projection"]
    lines = [
        f"epoch_time: {record['device']['name']} ({record['device']['type']}), torch {record['torch_version']}, "
        f"{record['torch_threads']} torch threads, {s['num_workers']} loader workers, "
        f"load average {record['loadavg']['start']} -> {record['loadavg']['end']}",
        f"IF {s['imbalance_factor']:g}: {s['train_images']} training images = {s['steps_per_epoch']} steps of "
        f"{s['batch_size']}, {s['test_images']} test images, {s['image_size']}x{s['image_size']}, "
        f"{s['num_classes']} classes, ResNet-32 width {s['width']}; {s['warmup_epochs']} warm-up + "
        f"{s['timed_epochs']} timed epoch(s), medians",
        f"{'':18}{'train/epoch':>12}{'eval/epoch':>12}{'total/epoch':>13}",
        f"{'reference-style':18}{ref['train_per_epoch']:>10.2f} s{ref['eval_per_epoch']:>10.2f} s"
        f"{ref['epoch_total']:>11.2f} s",
        f"{'project trainer':18}{proj['train_per_epoch']:>10.2f} s{proj['eval_per_epoch']:>10.2f} s"
        f"{proj['epoch_total']:>11.2f} s   (train = logged epoch - eval, eval {proj['eval_source']})",
        f"ratio reference/project: {ratio['epoch_total']:.2f}x per epoch (train {ratio['train']:.2f}x, "
        f"eval {ratio['eval']:.2f}x)",
        f"paper table projected (12 trainings x 200 epochs at IF 200/100/50/10{'' if table['full_size'] else '; NOT full size, indicative only'}): "
        f"project {_clock(table['project']['one_seed_seconds'])} per seed, "
        f"{_clock(table['project']['three_seeds_seconds'])} for 3 seeds; reference-style "
        f"{_clock(table['reference']['one_seed_seconds'])} per seed, {_clock(table['reference']['three_seeds_seconds'])} for 3",
    ]
    for f, t in zip(record.get("fused", []), table.get("fused", [])):
        lines.append(
            f"fused x{f['members']} ({f['precision']}): {f['epoch_total']:.2f} s per fused epoch (train "
            f"{f['train_per_epoch']:.2f} s, eval {f['eval_per_epoch']:.2f} s) = {f['per_model_epoch']:.3f} s per model-epoch, "
            f"{ref['epoch_total'] / f['per_model_epoch']:.2f}x the reference per model; paper table as jobs of "
            f"{f['members']}: {_clock(t['one_seed_seconds'])} per seed, {_clock(t['three_seeds_seconds'])} for 3"
        )
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per loop (default 2)")
    p.add_argument("--warmup-epochs", type=int, default=1, help="untimed epochs before them (default 1)")
    p.add_argument("--small", action="store_true", help=f"CPU smoke size: {SMALL}")
    p.add_argument("--out", type=Path, help="JSON record (default benchmarks/results/<timestamp>-<device>.json)")
    p.add_argument("--num-workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="reference loader worker processes (default min(4, cpu count))")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for both loops (default: torch's current setting)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fused", type=int, nargs="*", default=[], metavar="K",
                   help="also time fused groups of K models (train_group), e.g. --fused 3 9")
    p.add_argument("--graph-check", action="store_true",
                   help="on CUDA: also train 3 fused models with and without the CUDA graph and compare them")
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="precision of the fused runs (the reference and single project loop stay float32)")
    p.add_argument("--eval-batch-size", type=int, default=100, help="reference test loader batch (default 100)")
    for field in dataclasses.fields(Size):  # overrides of the chosen size, e.g. --num-classes 10
        p.add_argument("--" + field.name.replace("_", "-"), type=float if field.type == "float" else int)
    return p.parse_args(argv)


def main(argv: list[str] | None = None, log=print) -> dict:
    args = parse_args(argv)
    if args.epochs < 1 or args.warmup_epochs < 0:
        raise SystemExit("--epochs must be >= 1 and --warmup-epochs >= 0")
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    size = dataclasses.replace(
        SMALL if args.small else FULL,
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(Size) if getattr(args, f.name) is not None},
    )
    images = make_synthetic(size.num_classes, size.train_per_class, size.test_per_class, size.image_size,
                            seed=args.seed)
    cut = long_tailed_indices(images.train_labels, size.num_classes, size.imbalance_factor, seed=args.seed)
    data = (images.train_images[cut], images.train_labels[cut], images.test_images, images.test_labels)
    steps = len(cut) // size.batch_size
    if steps == 0:
        raise SystemExit(f"{len(cut)} training images make no batch of {size.batch_size}")

    load_start = loadavg()
    log(f"reference-style loop ({args.num_workers} workers) on {device} ...")
    reference = run_reference(data, size, args.epochs, args.warmup_epochs, device, args.num_workers, args.seed,
                              args.eval_batch_size, log)
    reference.pop("final_test_logits")
    log(f"project trainer on {device} ...")
    project = run_project(data, size, args.epochs, args.warmup_epochs, device, args.seed, log)
    fused = []
    for members in args.fused:
        log(f"project trainer, {members} fused models ({args.precision}) on {device} ...")
        fused.append(run_fused(data, size, args.epochs, args.warmup_epochs, device, args.seed, members,
                               args.precision, log))
    if args.graph_check:
        if not device.startswith("cuda"):
            raise SystemExit("--graph-check needs a GPU: CUDA graphs exist only there")
        checked = graph_check(data, size, device, args.seed, log)
    load_end = loadavg()

    def per_step(result):
        return {**result, "train_per_step": result["train_per_epoch"] / steps}

    reference, project = per_step(reference), per_step(project)
    fused = [per_step(f) for f in fused]
    n_test = len(images.test_labels)
    record = {
        "benchmark": "epoch_time",
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["python", "benchmarks/epoch_time.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "device": {"type": device,
                   "name": torch.cuda.get_device_name() if device.startswith("cuda") else machine()["cpu_model"]},
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "torch_threads": torch.get_num_threads(),
        "loadavg": {"start": load_start, "end": load_end},
        "sizes": {
            **dataclasses.asdict(size), "padding": size.padding, "cutout_size": size.cutout_size,
            "train_images": len(cut), "test_images": n_test, "steps_per_epoch": steps,
            "warmup_epochs": args.warmup_epochs, "timed_epochs": args.epochs, "num_workers": args.num_workers,
            "reference_eval_batch_size": args.eval_batch_size, "lambda1": LAMBDA1, "lambda2": LAMBDA2,
            "full_size": size.is_paper_size,
        },
        "reference": reference,
        "project": project,
        "fused": fused,
        "graph_check": checked if args.graph_check else None,
        "ratio": {  # reference / project: > 1 means the project's trainer is faster
            name: reference[key] / project[key] if project[key] > 0 else float("inf")
            for name, key in (("epoch_total", "epoch_total"), ("train", "train_per_epoch"), ("eval", "eval_per_epoch"))
        },
        "projection": {
            "full_size": size.is_paper_size,
            "method": f"{PAPER_TRAININGS_PER_IF} trainings per IF x {PAPER_EPOCHS} epochs x (steps per epoch at the IF "
                      f"{PAPER_STEPS_PER_EPOCH} x measured train seconds per step + measured eval seconds per epoch "
                      f"scaled to {PAPER_TEST_IMAGES} test images); excludes data preparation, the PN sweeps and "
                      "tables (seconds), and process start-up",
            "reference": project_table(reference["train_per_step"], reference["eval_per_epoch"], n_test),
            "project": project_table(project["train_per_step"], project["eval_per_epoch"], n_test),
            "fused": [fused_table(f["train_per_step"], f["eval_per_epoch"], n_test, f["members"]) for f in fused],
        },
    }
    out = args.out or default_out(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    log(summary(record))
    log(f"record: {out}")
    return record


if __name__ == "__main__":
    main()
