"""Testing a data-parallel training's model: every rank its shard of the test set, gathered on rank 0 (what
bagmar.training.image_train.predict does), against rank 0 testing the whole set while the others wait.

    python benchmarks/distributed_eval.py                        # CPU: 2 gloo ranks, ResNet-50, 64 test JPEGs
    python benchmarks/distributed_eval.py --device cuda --processes 8 --images 8192 --workers 6

The test JPEGs are input_pipeline.py's (500 x 375, about 100 kB, ImageNet's typical size), resized to 256 and
centre-cropped to 224. Each way is timed ``--repeats`` times from a barrier to a barrier (the others' wait is part
of the time, as in training), alternating; the figure is the median. The two ways' logits are compared too.
On the CPU each rank gets cpus / processes threads, as the training job gives them.

A record is written to benchmarks/results/<time>-distributed-eval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bagmar.method import backbones  # noqa: E402
from bagmar.training.distributed import init_world  # noqa: E402
from bagmar.data.image_data import TestImages  # noqa: E402
from bagmar.data.image_lists import read_list  # noqa: E402
from bagmar.training.image_train import predict  # noqa: E402
from bagmar.config.recipe import ImageListRecipe  # noqa: E402

CLASSES = 1000


def worker(args) -> None:
    """One rank (started by torchrun): time both ways, rank 0 writes the figures to args.out."""
    world = init_world(args.device, timeout_seconds=600)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.size) if args.device == "cpu" else 4)
    device = world.device(args.device)
    recipe = ImageListRecipe(args.architecture, 1, args.batch_size, 0.1, 5e-4, lambda1=1.2, lambda2=0.9)
    torch.manual_seed(0)
    network = backbones.build(args.architecture, CLASSES).to(device)
    if "cuda" in device:
        network = network.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    images = TestImages(args.root, read_list(Path(args.root) / "list.txt", CLASSES), recipe.image_size,
                        recipe.resize_size)
    ways = {"sharded": lambda: predict(network, images, recipe, args.workers, device, world),
            "rank0": lambda: predict(network, images, recipe, args.workers, device) if world.leader else None}
    seconds, logits = {way: [] for way in ways}, {}
    for repeat in range(args.repeats + 1):  # the first round warms up (cuDNN's choice, the page cache)
        for way, test in ways.items():
            world.barrier()
            if "cuda" in device:
                torch.cuda.synchronize()
            started = time.perf_counter()
            logits[way] = test()
            if "cuda" in device:
                torch.cuda.synchronize()
            world.barrier()
            if repeat:
                seconds[way].append(time.perf_counter() - started)
    if world.leader:
        difference = (logits["sharded"] - logits["rank0"]).abs().max().item()
        Path(args.out).write_text(json.dumps({"seconds": seconds, "max_logit_difference": difference}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="decoding workers per rank")
    parser.add_argument("--architecture", default="resnet50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from input_pipeline import write_images

    record = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name() if args.device == "cuda" else
              platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
              **{key: getattr(args, key) for key in ("processes", "images", "batch_size", "workers", "architecture",
                                                     "repeats")}}
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.images, CLASSES)
        out = Path(tmp) / "figures.json"
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc_per_node={args.processes}", __file__, "--worker", "--root", tmp, "--out",
                              str(out), *sys.argv[1:]], capture_output=True, text=True)
        if run.returncode:
            sys.exit(run.stdout + run.stderr)
        figures = json.loads(out.read_text())
    record["max_logit_difference"] = figures["max_logit_difference"]
    for way, seconds in figures["seconds"].items():
        record[f"{way}_seconds"] = seconds
        record[f"{way}_images_per_s"] = args.images / statistics.median(seconds)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = ROOT / "benchmarks" / "results" / f"{stamp}-distributed-eval.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    for way in ("sharded", "rank0"):
        print(f"{way:>8}: {record[f'{way}_images_per_s']:8.1f} images/s (median of {args.repeats})")
    print(f"largest logit difference between the two: {record['max_logit_difference']:.2e}")
    print(f"record: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
