"""Step by step, how far a fused member's weights drift from the same model trained alone.

tests/test_fused.py trains BaGMar, logit-adjusted and LDAM-DRW members as one fused network and compares each
with the model trained alone. This script replays that setup (its data, recipes and steps are the test's) and
prints, after every SGD step, each member's gap to its lone twin:

    relative  ||w_fused - w_alone|| / ||w_alone|| over every float tensor (what the tests assert on)
    max       the largest elementwise |w_fused - w_alone| / (|w_alone| + 1e-12)

once in float32 and once in float64 (recipe precision). Float rounding starts near the dtype's epsilon and grows
smoothly; a difference of method would show as a jump at one step (DRW switching on at the second epoch, or the
first step that reads the statistics). Run it under each CPU kernel set, each in its own process:

    for c in default avx2 avx512; do ATEN_CPU_CAPABILITY=$c python benchmarks/fused_drift.py; done   # ~8 s each

Record: benchmarks/results/<stamp>-fused-drift-<capability>.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import numpy as np
import torch

from bagmar.data.long_tail import make_synthetic
from bagmar.training.engine import FusedGroup, to_device_images
from bagmar.training.train import Recipe, learning_rate

ROOT = Path(__file__).resolve().parent
NUM_CLASSES = 5


def data():
    """tests/test_fused.py's long tail: 48 synthetic images, 16 to 4 per class."""
    full = make_synthetic(NUM_CLASSES, 40, 10, 16, seed=0)
    subset = np.r_[0:16, 40:56, 80:88, 120:124, 160:164]
    return full.train_images[subset], full.train_labels[subset]


def recipes(precision: str, epochs: int) -> list[Recipe]:
    common = dict(epochs=epochs, batch_size=16, width=4, padding=2, cutout_size=8, autoaugment="torchvision",
                  precision=precision, seed=0)
    return [Recipe(lambda1=1.2, lambda2=0.9, **common), Recipe(loss="logit_adjusted", **common),
            Recipe(loss="ldam_drw", drw_after=0.5, **common)]


def gaps(a: dict, b: dict) -> tuple[float, float]:
    names = [n for n in b if b[n].is_floating_point()]
    relative = float(sum((a[n] - b[n]).double().square().sum() for n in names).sqrt()
                     / sum(b[n].double().square().sum() for n in names).sqrt())
    largest = max(float(((a[n] - b[n]).double().abs() / (b[n].double().abs() + 1e-12)).max()) for n in names)
    return relative, largest


def drift(precision: str, epochs: int) -> dict[str, list[dict]]:
    images, labels = data()
    x, y = to_device_images(images, "cpu"), torch.as_tensor(labels, dtype=torch.int64)
    group_recipes = recipes(precision, epochs)
    fused = FusedGroup(group_recipes, NUM_CLASSES, x, y, "cpu")
    alone = [FusedGroup([r], NUM_CLASSES, x, y, "cpu") for r in group_recipes]
    curves: dict[str, list[dict]] = {r.loss: [] for r in group_recipes}
    steps = len(labels) // group_recipes[0].batch_size
    for epoch in range(1, epochs + 1):
        lr = learning_rate(epoch, group_recipes[0])
        for group in (fused, *alone):
            group.start_epoch(epoch, lr)
        for step in range(steps):
            for group in (fused, *alone):
                group.step()
            for k, (r, single) in enumerate(zip(group_recipes, alone)):
                relative, largest = gaps(fused.model.member_state_dict(k), single.model.member_state_dict(0))
                curves[r.loss].append({"epoch": epoch, "step": (epoch - 1) * steps + step + 1,
                                       "relative": relative, "max": largest})
    return curves


def processor() -> str:
    """The CPU's model name (Linux), else the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="the test trains 2, of 3 steps each")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    capability = torch.backends.cpu.get_cpu_capability()
    record = {"capability": capability, "processor": processor(),
              "torch": torch.__version__, "epochs": args.epochs, "curves": {}}
    for precision in ("float32", "float64"):
        curves = record["curves"][precision] = drift(precision, args.epochs)
        print(f"{precision} under {capability}: relative / max elementwise gap, fused member vs alone")
        print("step epoch " + "".join(f"{loss:>28}" for loss in curves))
        for i in range(len(next(iter(curves.values())))):
            row = [c[i] for c in curves.values()]
            print(f"{row[0]['step']:>4} {row[0]['epoch']:>5} "
                  + "".join(f"{r['relative']:>14.2e}{r['max']:>14.2e}" for r in row))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "results" / f"{stamp}-fused-drift-{capability.lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"record: {out}")


if __name__ == "__main__":
    main()
