"""Images per second of the image-list input pipeline, of the network alone, and of both together,
against a plain DataLoader + PIL + torchvision transforms loop on the same files, in the same run.

    python benchmarks/input_pipeline.py                          # CPU: 512 generated JPEGs, 2 workers, ResNet-50
    python benchmarks/input_pipeline.py --device cuda --images 4096 --workers 12 --batch-size 256

The JPEGs are generated at ImageNet's typical size (500 x 375 pixels, quality 90, smooth random content plus
noise: about 100 kB a file, as ImageNet's average), so decoding costs about what it costs on the real data. Measured:

- loader: bagmar.data.image_data's TrainImages through its DataLoader, augment kang (decode, RandomResizedCrop, flip
  in the workers);
- released: the same with augment released_lt (decode, then the released PIL transform with RandAugment in the
  workers);
- pipeline: the same, then on the training device: uint8 -> float, ColorJitter, normalise (on a CPU device that
  runs in the training process, where the PIL loop does it in its workers);
- pil: the literature's loop (Kang et al.'s data loader): PIL open and convert, RandomResizedCrop, flip,
  ColorJitter, ToTensor, Normalize per image in the workers, then to the device;
- model: one training step of the network (engine.train_step with the BaGMar loss) on a fixed device batch;
- together: the pipeline feeding the training step.

A record is written to benchmarks/results/<time>-input-pipeline.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bagmar.training.engine import SGD, LossTerms, StackedStatistics, train_step  # noqa: E402
from bagmar.data.image_data import TrainImages, epoch_order, prepare, train_loader  # noqa: E402
from bagmar.data.image_lists import read_list  # noqa: E402
from bagmar.training.image_train import _Stacked  # noqa: E402
from bagmar.config.recipe import ImageListRecipe  # noqa: E402


def write_images(root: Path, count: int, classes: int, seed: int = 0) -> Path:
    """``count`` JPEGs of 500 x 375 under root/train/, and their list; smooth content compresses like photographs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    lines = []
    base = [np.cumsum(np.cumsum(rng.normal(size=(375, 500, 3)), 0), 1) for _ in range(8)]
    for i in range(count):
        spread = np.ptp(base[i % 8]) / 255  # noise of 40 grey levels: ~100 kB a file, ImageNet's typical size
        x = base[i % 8] + rng.normal(scale=40, size=(375, 500, 3)) * spread
        x = ((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)
        relative = f"train/{i % classes:03d}/{i:06d}.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(root / relative, format="JPEG", quality=90)
        lines.append(f"{relative} {i % classes}\n")
    (root / "list.txt").write_text("".join(lines))
    return root / "list.txt"


class PilImages(torch.utils.data.Dataset):
    """The literature's per-image PIL loop (Kang et al.'s LT_Dataset with their training transform)."""

    def __init__(self, root, image_list, image_size):
        from torchvision import transforms

        self.root, self.image_list = Path(root), image_list
        self.transform = transforms.Compose([
            transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.4, 0.4, 0.4, 0), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def __len__(self):
        return len(self.image_list.images)

    def __getitem__(self, index):
        from PIL import Image

        with open(self.root / self.image_list.images[index], "rb") as f:
            image = Image.open(io.BytesIO(f.read())).convert("RGB")
        return self.transform(image), int(self.image_list.labels[index])


def rate(batches, consume, batch_size: int, device: str, limit: int) -> float:
    """Images per second over ``limit`` batches after the first (which pays for worker start-up)."""
    started, seen = None, 0
    for step, batch in enumerate(batches):
        consume(batch)
        if step == 0:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            continue
        seen += batch_size
        if step >= limit:
            break
    if device == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--architecture", default="resnet50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model-steps", type=int, default=3, help="timed training steps of the network alone")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    device = args.device
    classes = 1000
    recipe = ImageListRecipe(args.architecture, 1, args.batch_size, 0.1, 5e-4, lambda1=1.2, lambda2=0.9,
                             precision=args.precision)
    record = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name() if device == "cuda" else
              platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "images": args.images, "batch_size": args.batch_size, "workers": args.workers,
              "architecture": args.architecture, "precision": args.precision}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        image_list = read_list(write_images(root, args.images, classes), classes)
        record["generate_seconds"] = time.perf_counter() - started
        record["mean_jpeg_bytes"] = float(np.mean([(root / p).stat().st_size for p in image_list.images]))
        steps = args.images // args.batch_size - 1
        order = epoch_order(image_list.labels, classes, 0, 1, "instance", 4)
        ours = TrainImages(root, image_list, 0, recipe.image_size, recipe.color_jitter, "kang")
        released = TrainImages(root, image_list, 0, recipe.image_size, recipe.color_jitter, "released_lt")

        def to_device(batch):
            images, labels, jitter = batch
            return prepare(images.to(device, non_blocking=True), recipe.mean, recipe.std, jitter.to(device)), \
                labels.to(device, non_blocking=True)

        record["loader_images_per_s"] = rate(  # the workers' part alone: decode, crop, flip
            train_loader(ours, order, 1, args.batch_size, args.workers, device), lambda batch: None,
            args.batch_size, device, steps)
        record["released_images_per_s"] = rate(  # the released augmentation, all of it in the workers
            train_loader(released, order, 1, args.batch_size, args.workers, device), lambda batch: None,
            args.batch_size, device, steps)
        record["pipeline_images_per_s"] = rate(train_loader(ours, order, 1, args.batch_size, args.workers, device),
                                               to_device, args.batch_size, device, steps)
        pil = torch.utils.data.DataLoader(PilImages(root, image_list, recipe.image_size), batch_size=args.batch_size,
                                          shuffle=True, num_workers=args.workers, drop_last=True,
                                          pin_memory=device == "cuda")
        record["pil_images_per_s"] = rate(pil, lambda b: (b[0].to(device), b[1].to(device)), args.batch_size,
                                          device, steps)

        from bagmar.method import backbones

        network = backbones.build(args.architecture, classes).to(device)
        if device == "cuda":
            network = network.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True
        model = _Stacked(network)
        optimizer = SGD(network.parameters(), 0.9, 5e-4, device)
        optimizer.lr.fill_(0.1)
        stats = StackedStatistics(classes, device, members=1)
        terms = LossTerms([recipe], np.bincount(image_list.labels, minlength=classes), device)
        x = torch.randn(1, args.batch_size, 3, recipe.image_size, recipe.image_size, device=device)
        y = torch.randint(0, classes, (1, args.batch_size), device=device)

        def step(batch):
            images, labels = batch
            train_step(model, optimizer, stats, images[None], labels[None], terms, recipe.precision)

        record["model_images_per_s"] = rate(((x[0], y[0]) for _ in range(args.model_steps + 1)), step,
                                            args.batch_size, device, args.model_steps)
        record["together_images_per_s"] = rate(
            train_loader(ours, order, 1, args.batch_size, args.workers, device),
            lambda batch: step(to_device(batch)), args.batch_size, device, min(steps, args.model_steps))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "benchmarks" / "results" / f"{stamp}-input-pipeline.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    for key in ("loader", "released", "pipeline", "pil", "model", "together"):
        print(f"{key:>9}: {record[f'{key}_images_per_s']:8.1f} images/s")
    print(f"record: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
