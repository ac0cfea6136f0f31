"""The GPU acceptance run: one command, one record, every stage tried even when one fails.

    bash benchmarks/gpu_acceptance.sh --prepare   # here, once: ../shared/data's CIFAR-10 -> .gpu_data/ (ignored)
    bash benchmarks/gpu_acceptance.sh             # on the GPU machine, from the repository root (carry .gpu_data)
    bash benchmarks/gpu_acceptance.sh --cpu       # tiny sizes on the CPU, synthetic data: what the test suite runs

It needs only the torch that the machine has and the project's own files: the package runs from ``src/`` on
PYTHONPATH (no install: pyproject pins a newer torch than the GPU machine's), without Snakemake. Stages, in
order, with their budget on one H200 (estimates; the record holds the measured seconds of each):

1. ``card`` (~10 s): GPU name, memory, driver (nvidia-smi), CUDA, cuDNN, torch / torchvision / numpy /
   Python versions, CPU model and count, load average. No host name.
2. ``epoch_time`` (~90 s): ``benchmarks/epoch_time.py --device cuda --epochs 2 --fused 3 9``: the
   reference-style loop and the project's trainer for a single training, then fused groups of 3 and 9
   (1 warm-up + 2 timed epochs each, synthetic CIFAR-shaped set at IF 100, full size). Its own record is
   embedded whole (``stages.epoch_time.record``).
3. ``graph_check`` (~20 s): epoch_time's graph-vs-eager check (3 fused models, 2 epochs, with and without
   the CUDA graph); passes when every model's relative weight difference is below ``--graph-tolerance``.
4. ``data`` (~30 s): genuine CIFAR-10 (``.gpu_data/cifar10_jpeg.npz``, JPEG-decoded, from ../shared/data)
   written in the official layout to a temporary folder by ``cifar10_official_layout.py``, read by
   ``bagmar.data.cifar.load_cifar(unofficial_copy=...)``, cut to CIFAR-10-LT IF 100 (split seed 0) and checked
   against SPEC §1 (12,406 images).
5. ``real_run`` (~240 s, ``--real-budget``): ce, BaGMar and BaGMar_pn (config/cifar10_lt.yaml's lambdas)
   fused, the paper recipe's 200-epoch schedule, stopped after N epochs, N chosen from the fused-3 speed
   of stage 2 so the run fits the budget (``FALLBACK_EPOCHS`` when stage 2 failed); at the end
   each training's plain and PN (tau = 1) top-1 and shot-group accuracies, as bagmar.evaluation.evaluate computes them
   (CIFAR-10-LT IF 100 has no class under 20 images, so few-shot is null there: "not applicable"), and
   each epoch's plain and PN test top-1 from the trainer's own metrics. ``train_group(stop_after_epoch=N)``
   keeps the 200-epoch learning-rate schedule and stops after epoch N.

``--cpu`` runs the same stages on tiny sizes with one thread: epoch_time on 10 classes of 8x8 images, the graph
check eager against eager (plumbing only), and the real-data stage on a generated CIFAR-10-format copy read
through the same load_cifar path; about 10 s.

Total about 6.5 minutes. The real run's budget shrinks when the stages before it ran long (it is at most
``--total-budget`` (430 s) minus the time spent minus 30 s), so the whole ends within about 7.5 minutes
(the budget allows 8) unless the fused-3 estimate is off by more than the 30 s margin. The record is
``benchmarks/results/YYYYMMDD-HHMMSS-gpu-acceptance-<cuda|cpu>.json``, rewritten after every stage; when
``$OUT`` is set (the device tool) it and the log are copied there too. The exit status is 1 when any stage
is not ``ok``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import pickle
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torchvision

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import epoch_time  # noqa: E402  (benchmarks/epoch_time.py)
from bagmar.data.cifar import load_cifar  # noqa: E402
from bagmar.data.long_tail import class_counts, check_spec_counts, long_tailed_indices, make_synthetic  # noqa: E402
from bagmar.evaluation.evaluate import group_accuracies, per_class_accuracy, pn_predictions, shot_groups  # noqa: E402
from bagmar.training.train import Recipe, learning_rate, resolve_device, train_group  # noqa: E402

STAGES = ("card", "epoch_time", "graph_check", "data", "real_run")
DATA_FILES = ("cifar10_jpeg.npz", "cifar10_official_layout.py", "README.md")  # README.md is optional
TRAININGS = {"ce": (0.0, 0.0), "BaGMar": (1.0, 1.0), "BaGMar_pn": (1.2, 0.9)}  # config/cifar10_lt.yaml
IMBALANCE, SPLIT_SEED, SEED = 100, 0, 0

# Stage 2's arguments. CPU mode: 10 classes of 60 8x8 images cut at IF 100 (143 images = 4 steps of 32), 1 thread.
BENCH_GPU = ["--device", "cuda", "--epochs", "2", "--warmup-epochs", "1", "--fused", "3", "9"]
BENCH_CPU = ["--small", "--device", "cpu", "--num-classes", "10", "--train-per-class", "60", "--test-per-class",
             "10", "--image-size", "8", "--width", "2", "--batch-size", "32", "--epochs", "1", "--warmup-epochs", "0",
             "--num-workers", "1", "--threads", "1", "--fused", "3", "9"]
CPU_THREADS = 1  # tiny sizes: on a shared machine two threads ran up to 50x slower than one (spinning waits)
GRAPH_EPOCHS = {"cuda": 2, "cpu": 1}  # 2 cross an epoch boundary (new rate, new order); on a CPU both runs are eager
# The real-data stage in CPU mode: a generated CIFAR-10-format copy, 10 classes of 60 / 10 32x32 images.
CPU_DATA = dict(train_per_class=60, test_per_class=10)
CPU_RECIPE = dict(batch_size=32, width=4)
FALLBACK_EPOCHS = 5  # the real run's length when stage 2 measured no fused-3 speed to plan it from


class Log:
    """Lines to stdout (unless quiet) and to a log file when one is given."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def __call__(self, line: str = "", quiet: bool = False) -> None:
        if not quiet:
            print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")


# --------------------------------------------------------------------------- stage 1: the card


def _nvidia_smi() -> dict | None:
    query = "name,driver_version,memory.total,pci.bus_id"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[v.strip() for v in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    return {"gpus": [dict(zip(("name", "driver", "memory_total_mib", "pci_bus_id"), row)) for row in rows]}


def card(device: str) -> dict:
    host = epoch_time.machine()
    host.pop("host", None)  # the record names no machine
    info = {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_model": host["cpu_model"],
        "cpu_count": os.cpu_count(),
        "platform": host["platform"],
        "loadavg": epoch_time.loadavg(),
        "nvidia_smi": _nvidia_smi(),
        "gpu": None,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        smi = (info["nvidia_smi"] or {}).get("gpus") or [{}]
        info["gpu"] = {"name": torch.cuda.get_device_name(0), "driver": smi[0].get("driver"),
                       "memory_gib": round(props.total_memory / 2**30, 1),
                       "multiprocessors": props.multi_processor_count,
                       "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
        if info["gpu"]["driver"] is None:
            raise RuntimeError("nvidia-smi gave no driver version")
    return info


# --------------------------------------------------------------------------- stages 2 and 3: epoch time, graph check


def run_epoch_time(argv: list[str], log) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        record = epoch_time.main([*argv, "--out", str(Path(tmp) / "epoch_time.json")], log=log)
    record = json.loads(json.dumps(record))  # plain JSON types, as written
    record["machine"].pop("host", None)
    fused = {str(f["members"]): {k: f[k] for k in ("epoch_total", "train_per_epoch", "eval_per_epoch",
                                                   "per_model_epoch", "train_per_step")}
             for f in record["fused"]}
    return {
        "command": record["command"],
        "summary": {
            "steps_per_epoch": record["sizes"]["steps_per_epoch"],
            "test_images": record["sizes"]["test_images"],
            "reference_epoch_total": record["reference"]["epoch_total"],
            "single_epoch_total": record["project"]["epoch_total"],
            "single_train_per_step": record["project"]["train_per_step"],
            "single_eval_per_epoch": record["project"]["eval_per_epoch"],
            "ratio_reference_over_single": record["ratio"]["epoch_total"],
            "fused": fused,
        },
        "record": record,
    }


def run_graph_check(argv: list[str], tolerance: float, log) -> dict:
    """epoch_time.graph_check on the data that epoch_time.main builds from the same arguments."""
    args = epoch_time.parse_args(argv)
    device = resolve_device(args.device)
    size = dataclasses.replace(
        epoch_time.SMALL if args.small else epoch_time.FULL,
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(epoch_time.Size)
           if getattr(args, f.name) is not None},
    )
    images = make_synthetic(size.num_classes, size.train_per_class, size.test_per_class, size.image_size,
                            seed=args.seed)
    cut = long_tailed_indices(images.train_labels, size.num_classes, size.imbalance_factor, seed=args.seed)
    data = (images.train_images[cut], images.train_labels[cut], images.test_images, images.test_labels)
    checked = epoch_time.graph_check(data, size, device, args.seed, log, epochs=GRAPH_EPOCHS[device])
    worst = max(checked["relative_weight_difference"])
    return {
        **checked,
        "max_relative_weight_difference": worst,
        "tolerance": tolerance,
        "passed": worst < tolerance,
        "meaningful": device == "cuda",
        "note": ("CUDA graph replay against the eager step, same seeds" if device == "cuda" else
                 "CPU: CUDA graphs exist only on a GPU, both runs are eager; this checks the plumbing only"),
    }


# --------------------------------------------------------------------------- stage 4: data


def md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_official_layout(images, folder: Path, names: list[str]) -> Path:
    """An ImageSet of 32x32 images, 10 classes, as CIFAR-10's python release lays it out (for CPU mode)."""
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)

    def rows(x: np.ndarray) -> np.ndarray:  # (N, 32, 32, 3) -> N x 3072: 1024 R, 1024 G, 1024 B
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), 3072))

    def dump(name: str, x: np.ndarray, y: np.ndarray, label: str) -> None:
        entry = {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": rows(x),
                 b"filenames": [f"{name}_{i:05d}.png".encode() for i in range(len(y))]}
        (out / name).write_bytes(pickle.dumps(entry, protocol=2))

    order = np.random.default_rng(0).permutation(len(images.train_labels))  # interleave the classes
    for b, part in enumerate(np.array_split(order, 5)):
        dump(f"data_batch_{b + 1}", images.train_images[part], images.train_labels[part], f"training batch {b + 1} of 5")
    dump("test_batch", images.test_images, images.test_labels, "testing batch 1 of 1")
    (out / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": len(order) // 5, b"num_vis": 3072},
        protocol=2))
    return out


def prepare_data(data_dir: Path, workdir: Path, synthetic: bool, arrays: dict, log) -> dict:
    """The CIFAR-10-LT IF 100 training set and the test set (into ``arrays["data"]``); returns their record."""
    layout = workdir / "layout"
    if synthetic:
        images = make_synthetic(10, CPU_DATA["train_per_class"], CPU_DATA["test_per_class"], 32, seed=SEED)
        write_official_layout(images, layout, [f"synthetic_{c}" for c in range(10)])
        provenance = {"genuine": False, "source": "generated in CPU mode: bagmar.data.long_tail.make_synthetic(10 classes, "
                      f"{CPU_DATA['train_per_class']} train / {CPU_DATA['test_per_class']} test per class, 32x32, "
                      "seed 0), written in CIFAR-10's official layout"}
    else:
        missing = [n for n in DATA_FILES[:2] if not (data_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{data_dir} lacks {', '.join(missing)}: run `bash benchmarks/gpu_acceptance.sh --prepare` on the "
                "machine that has ../shared/data, and carry the folder (run's carry: [\".gpu_data\"])")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(data_dir / "cifar10_official_layout.py"), str(layout)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cifar10_official_layout.py failed ({done.returncode}): {done.stderr[-2000:]}")
        log(f"official layout written in {time.perf_counter() - started:.1f} s")
        provenance = {"genuine": True,
                      "source": "genuine CIFAR-10 (all 60,000 images, official split and label order) as JPEG bytes "
                                "from a public mirror (../shared/data/cifar10_jpeg.npz, carried as "
                                f"{data_dir.name}/), decoded and written in the official layout by "
                                "cifar10_official_layout.py; JPEG loss means the official md5s cannot match",
                      "npz_md5": md5(data_dir / "cifar10_jpeg.npz"),
                      "layout_script_md5": md5(data_dir / "cifar10_official_layout.py")}
    images, record = load_cifar("cifar10", unofficial_copy=layout, progress=lambda line: log(line, quiet=True))
    record["location"] = "<temporary folder>/layout/cifar-10-batches-py"  # gone after the run
    cut = long_tailed_indices(images.train_labels, images.num_classes, IMBALANCE, SPLIT_SEED)
    counts = class_counts(images.train_labels[cut], images.num_classes).tolist()
    if not synthetic:
        check_spec_counts("cifar10", IMBALANCE, counts)  # 12,406 images, 5000 ... 50
    arrays["data"] = (images.train_images[cut], images.train_labels[cut], images.test_images, images.test_labels)
    summary = {
        "provenance": {**provenance, "load_cifar": record},
        "dataset": "cifar10", "imbalance_factor": IMBALANCE, "split_seed": SPLIT_SEED,
        "train_images": int(len(cut)), "test_images": int(len(images.test_labels)), "class_counts": counts,
        "shot_groups": {g: int((shot_groups(np.array(counts)) == g).sum()) for g in ("many", "medium", "few")},
        "spec_counts_checked": not synthetic,
    }
    log(f"CIFAR-10-LT IF {IMBALANCE}: {len(cut)} training images (head {counts[0]}, tail {counts[-1]}), "
        f"{len(images.test_labels)} test images ({'genuine' if not synthetic else 'generated'})")
    return summary


# --------------------------------------------------------------------------- stage 5: the real-data run


def plan_epochs(bench: dict | None, steps: int, test_images: int, budget: float, max_epochs: int) -> dict:
    """N epochs of the fused-3 speed measured in stage 2 that fit ``budget`` seconds (>= 1, <= max_epochs)."""
    fused = ((bench or {}).get("summary") or {}).get("fused", {}).get("3")
    if fused is None:
        return {"source": f"none (the epoch_time stage gave no fused-3 figure): {FALLBACK_EPOCHS} epochs",
                "budget_seconds": budget, "planned_epochs": min(FALLBACK_EPOCHS, max_epochs),
                "estimated_seconds_per_epoch": None}
    per_epoch = (fused["train_per_step"] * steps
                 + fused["eval_per_epoch"] * test_images / bench["summary"]["test_images"])
    record = bench["record"]["fused"][[f["members"] for f in bench["record"]["fused"]].index(3)]
    overhead = max(0.0, record["epoch_seconds"][0] - record["epoch_total"])  # first epoch: cuDNN tuning, capture
    planned = int(max(1, min(max_epochs, (budget - overhead) // per_epoch)))
    return {"source": "epoch_time fused x3: train seconds per step x steps + eval seconds scaled to the test set",
            "budget_seconds": budget, "estimated_seconds_per_epoch": per_epoch,
            "estimated_first_epoch_overhead": overhead, "planned_epochs": planned}


def _evaluate(logits: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> dict:
    plain, pn = pn_predictions(logits, [0.0, 1.0])
    out = {}
    for name, predictions in (("plain", plain), ("pn", pn)):
        groups = group_accuracies(predictions, labels, counts)
        out[name] = {"top1": groups["top1"], "many": groups["many"], "medium": groups["medium"],
                     "few": groups["few"],  # NaN (null in the record) when no class has < 20 images
                     "per_class": per_class_accuracy(predictions, labels, len(counts)).tolist()}
    return out


def run_real(data: tuple, summary: dict, device: str, plan: dict, recipe_overrides: dict, log) -> dict:
    """ce, BaGMar and BaGMar_pn fused, the 200-epoch schedule, stopped after ``plan['planned_epochs']``."""
    train_images, train_labels, test_images, test_labels = data
    base = Recipe(seed=SEED, **recipe_overrides)
    recipes = [dataclasses.replace(base, lambda1=l1, lambda2=l2) for l1, l2 in TRAININGS.values()]
    names = list(TRAININGS)
    counts = np.array(summary["class_counts"])
    started = time.perf_counter()
    results = train_group(train_images, train_labels, test_images, test_labels, 10, recipes, device=device,
                          names=names, progress=lambda line: None if line.startswith(" ") else log(line, True),
                          stop_after_epoch=plan["planned_epochs"])
    train_seconds = time.perf_counter() - started
    seconds = [row["seconds"] for row in results[0].metrics]  # one fused group: the same clock for all three
    curve = [{"epoch": row["epoch"], "seconds": row["seconds"],
              **{name: [r.metrics[i]["test_acc"], r.metrics[i]["test_acc_pn"]] for name, r in zip(names, results)}}
             for i, row in enumerate(results[0].metrics)]
    trainings = {name: {"lambda1": l1, "lambda2": l2, "seed": SEED, **_evaluate(result.test_logits, test_labels, counts)}
                 for (name, (l1, l2)), result in zip(TRAININGS.items(), results)}
    epochs = len(seconds)
    return {
        "recipe": dataclasses.asdict(base),
        "schedule_epochs": base.epochs,
        "plan": plan,
        "stop_mechanism": "train_group(stop_after_epoch=N)",
        "epochs_run": epochs,
        "lr_last_epoch": learning_rate(epochs, base),
        "steps_per_epoch": len(train_labels) // base.batch_size,
        "epoch_seconds": seconds,
        "first_epoch_seconds": seconds[0],
        "seconds_per_epoch": statistics.median(seconds[1:]) if epochs > 1 else seconds[0],
        "train_seconds_total": train_seconds,
        "evaluation": "final epoch's test logits; plain = PN tau 0, pn = PN tau 1 (bagmar.evaluation.evaluate.pn_predictions), "
                      "top-1 and shot groups (many > 100, few < 20 training images; null = no class in the group)",
        "trainings": trainings,
        "curve": curve,  # per epoch: seconds, and each training's plain and PN (tau = 1) test top-1
    }


# --------------------------------------------------------------------------- driver


def _finite(value):
    """NaN and infinities become null: the record is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(_finite(record), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def prepare(source: Path, data_dir: Path) -> int:
    """Copy ../shared/data's CIFAR-10 files into the (ignored) data folder that a device call carries."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in DATA_FILES:
        src, dst = source / name, data_dir / name
        if not src.is_file():
            if name == "README.md":
                continue
            print(f"{src} is missing: nothing to prepare from", file=sys.stderr)
            return 1
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)  # copies the bytes, not the read-only mode
        print(f"{dst} ({dst.stat().st_size / 2**20:.1f} MiB)")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(data_dir)], cwd=REPO, check=False).returncode == 0
    if not ignored:
        print(f"warning: git does not ignore {data_dir}; it must not be committed", file=sys.stderr)
    print(f"ready: a device call carries it with carry [\"{data_dir.relative_to(REPO) if data_dir.is_relative_to(REPO) else data_dir}\"]")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="CPU mode: tiny sizes and generated data (the test suite's)")
    p.add_argument("--prepare", action="store_true", help="copy --shared's CIFAR-10 files into --data, then stop")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="default ../shared/data")
    p.add_argument("--data", type=Path, default=REPO / ".gpu_data",
                   help="folder with cifar10_jpeg.npz and cifar10_official_layout.py (default .gpu_data)")
    p.add_argument("--results-dir", type=Path, default=BENCHMARKS / "results")
    p.add_argument("--out-copy", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="also copy the record and the log here (default $OUT when set)")
    p.add_argument("--total-budget", type=float, default=None, help="seconds for the whole run (GPU 430, CPU 60)")
    p.add_argument("--real-budget", type=float, default=None, help="seconds for the real-data run (GPU 240, CPU 3)")
    p.add_argument("--max-real-epochs", type=int, default=None, help="cap on N (GPU 200, CPU 2)")
    p.add_argument("--graph-tolerance", type=float, default=0.05,
                   help="largest relative weight difference graph vs eager that passes (default 0.05)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        return prepare(args.shared, args.data)
    cpu = args.cpu
    mode = "cpu" if cpu else "cuda"
    total_budget = args.total_budget or (60.0 if cpu else 430.0)
    real_budget = args.real_budget or (3.0 if cpu else 240.0)
    max_epochs = args.max_real_epochs or (2 if cpu else 200)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.results_dir / f"{stamp}-gpu-acceptance-{mode}.json"
    log = Log(args.out_copy / "gpu-acceptance.log" if args.out_copy else None)
    t0 = time.perf_counter()
    record = {
        "benchmark": "gpu_acceptance",
        "mode": mode,
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(["bash", "benchmarks/gpu_acceptance.sh", *(sys.argv[1:] if argv is None else argv)]),
        "budgets": {"total_seconds": total_budget, "real_run_seconds": real_budget, "max_real_epochs": max_epochs},
        "stages": {name: {"status": "pending"} for name in STAGES},
    }

    def save() -> None:
        record["wall_seconds"] = time.perf_counter() - t0
        record["status"] = ("ok" if all(s["status"] == "ok" for s in record["stages"].values()) else "failed")
        write_json(out, record)
        if args.out_copy:
            write_json(args.out_copy / out.name, record)

    def stage(name: str, fn, *fn_args):
        log(f"== {name}")
        started = time.perf_counter()
        entry = record["stages"][name]
        try:
            result = fn(*fn_args)
            entry.update(status="ok", result=result)
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # epoch_time.main raises SystemExit for its own refusals
            entry.update(status="failed", error=f"{type(error).__name__}: {error}",
                         traceback=traceback.format_exc()[-4000:])
            log(f"!! {name} FAILED: {type(error).__name__}: {error}")
            result = None
        entry["seconds"] = time.perf_counter() - started
        save()
        return result

    def skip(name: str, reason: str) -> None:
        record["stages"][name].update(status="skipped", reason=reason)
        log(f"== {name}: skipped ({reason})")
        save()

    device = "cpu" if cpu else "cuda"
    if cpu:
        torch.set_num_threads(CPU_THREADS)
    if not cpu and not torch.cuda.is_available():
        log("no GPU visible: every CUDA stage will fail (use --cpu for the CPU mode)")
    record["card"] = stage("card", card, device)
    bench_argv = BENCH_CPU if cpu else BENCH_GPU
    bench = stage("epoch_time", run_epoch_time, bench_argv, log)
    checked = stage("graph_check", run_graph_check, bench_argv, args.graph_tolerance, log)
    if checked is not None and not checked["passed"]:
        record["stages"]["graph_check"].update(
            status="failed", error=f"relative weight difference {checked['max_relative_weight_difference']:.3g} "
                                   f">= tolerance {args.graph_tolerance}")
        save()
    with tempfile.TemporaryDirectory(prefix="gpu-acceptance-") as tmp:
        arrays = {}
        summary = stage("data", prepare_data, args.data, Path(tmp), cpu, arrays, log)
        if summary is None:
            skip("real_run", "no data (the data stage failed)")
        else:
            data = arrays["data"]
            steps = len(data[1]) // (CPU_RECIPE["batch_size"] if cpu else Recipe().batch_size)
            budget = max(1.0, min(real_budget, total_budget - (time.perf_counter() - t0) - (5 if cpu else 30)))
            plan = plan_epochs(bench, steps, len(data[3]), budget, max_epochs)
            log(f"real run: {plan['planned_epochs']} epoch(s) of the 200-epoch schedule planned for {budget:.0f} s "
                f"(estimated {plan['estimated_seconds_per_epoch'] or float('nan'):.2f} s per epoch)")
            stage("real_run", run_real, data, summary, device, plan, CPU_RECIPE if cpu else {}, log)
    record["loadavg_end"] = epoch_time.loadavg()
    save()
    log(summary_text(record))
    log(f"record: {out}")
    return 0 if record["status"] == "ok" else 1


def _fmt(value, spec=".1f", unit="") -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:{spec}}{unit}"


def summary_text(record: dict) -> str:
    stages = record["stages"]
    lines = [f"gpu acceptance ({record['mode']}): {record['status'].upper()} in {record['wall_seconds']:.0f} s"]
    for name in STAGES:
        entry = stages[name]
        result = entry.get("result") or {}
        head = f"  {name}: {entry['status']}" + (f" ({entry['seconds']:.0f} s)" if "seconds" in entry else "")
        if entry["status"] != "ok":
            head += f": {entry.get('error') or entry.get('reason', '')}"
        elif name == "card":
            gpu = result["gpu"] or {}
            head += (f": {gpu.get('name', result['cpu_model'])}, driver {gpu.get('driver', '-')}, torch "
                     f"{result['torch']} (CUDA {result['torch_cuda'] or '-'}), torchvision {result['torchvision']}, "
                     f"Python {result['python']}, {result['cpu_count']} CPUs, load {result['loadavg']}")
        elif name == "epoch_time":
            s = result["summary"]
            head += (f": reference {s['reference_epoch_total']:.2f} s/epoch, single {s['single_epoch_total']:.2f} s "
                     f"({s['ratio_reference_over_single']:.2f}x), " +
                     ", ".join(f"fused x{k} {v['epoch_total']:.2f} s ({v['per_model_epoch']:.3f} s/model)"
                               for k, v in s["fused"].items()))
        elif name == "graph_check":
            head += (f": max relative weight difference {result['max_relative_weight_difference']:.2e} "
                     f"(< {result['tolerance']}){'' if result['meaningful'] else ', CPU: plumbing only'}")
        elif name == "data":
            head += f": {result['train_images']} train / {result['test_images']} test, genuine {result['provenance']['genuine']}"
        elif name == "real_run":
            head += (f": {result['epochs_run']}/{result['schedule_epochs']} epochs of the schedule, "
                     f"{result['seconds_per_epoch']:.2f} s/epoch")
        lines.append(head)
        if name == "real_run" and entry["status"] == "ok":
            for t, r in result["trainings"].items():
                lines.append(f"    {t:10} plain {_fmt(r['plain']['top1'])}% (few {_fmt(r['plain']['few'])}), "
                             f"PN {_fmt(r['pn']['top1'])}% (few {_fmt(r['pn']['few'])}, medium {_fmt(r['pn']['medium'])})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
