"""The literal, slow reference implementations that the tests and benchmarks compare the project against.

Written to SPEC in the released code's shape, on purpose not reusing the project's fast paths: the statistics
as three C x C matrices updated by a per-sample Python loop, the adjusted logits by a double loop, the SPEC §3
schedule by its formula, and the reference-style training loop (a torch DataLoader with worker processes over
torchvision's per-image PIL transforms, fp32 eager ResNet-32, torch.optim.SGD) that benchmarks/epoch_time.py
times and benchmarks/parity.py compares with the fast trainer. One module, so that there is one reference.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from bagmar.data.augment import CIFAR_MEAN, CIFAR_STD
from bagmar.method.loss import EPS
from bagmar.method.model import ResNet32
from bagmar.training.train import Recipe

PAPER = Recipe()  # SPEC §3's recipe, from the config schema's defaults
LAMBDA1, LAMBDA2 = 1.2, 0.9  # BaGMar_pn (SPEC §6): the reference loop trains with the BaGMar loss


@dataclasses.dataclass(frozen=True)
class Size:
    num_classes: int = 100
    train_per_class: int = 500
    test_per_class: int = 100
    image_size: int = 32
    width: int = 16
    batch_size: int = 64
    imbalance_factor: float = 100

    @property
    def padding(self) -> int:  # 4 at 32x32, as SPEC §3; scaled with the image for smoke sizes
        return max(1, self.image_size // 8)

    @property
    def cutout_size(self) -> int:  # 16 at 32x32
        return max(1, self.image_size // 2)

    @property
    def is_paper_size(self) -> bool:
        return self == Size()


FULL = Size()
SMALL = Size(num_classes=20, train_per_class=200, test_per_class=50, image_size=16, width=4)


class Cutout:
    """One length x length hole centred at a uniform pixel, clipped at the border, per image (DeVries & Taylor)."""

    def __init__(self, length: int):
        self.length = length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[1:]
        mask = np.ones((h, w), np.float32)
        y, x = np.random.randint(h), np.random.randint(w)
        y1, y2 = np.clip([y - self.length // 2, y + self.length // 2], 0, h)
        x1, x2 = np.clip([x - self.length // 2, x + self.length // 2], 0, w)
        mask[y1:y2, x1:x2] = 0.0
        return img * torch.from_numpy(mask).expand_as(img)


class ImageDataset(Dataset):
    """uint8 (N, H, W, 3) images as PIL images through a per-image transform, as torchvision's CIFAR100 does."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def _seed_numpy_in_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)  # else every worker repeats the same Cutout draws


def reference_transforms(size: Size):
    normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)
    train_tf = T.Compose([
        T.RandomCrop(size.image_size, padding=size.padding),
        T.RandomHorizontalFlip(),
        T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=128),
        T.ToTensor(),
        Cutout(size.cutout_size),
        normalize,
    ])
    return train_tf, T.Compose([T.ToTensor(), normalize])


def reference_lr(epoch: int, epochs: int, base: float = PAPER.base_lr, peak: float = PAPER.peak_lr,
                 warmup: int = PAPER.warmup_epochs) -> float:
    """SPEC §3, epoch = 1..E, written out as the released code does (the recipe's numbers: bagmar.config.recipe.Recipe)."""
    if epoch < warmup:
        return base + (peak - base) * (epoch - 1) / (warmup - 1)
    return peak * (1 + math.cos(math.pi * (epoch - warmup) / max(epochs - warmup, 1))) / 2


class ReferenceStatistics:
    """SPEC §4 in the released code's shape: three C x C matrices and a per-sample Python loop."""

    def __init__(self, num_classes: int, device):
        zeros = dict(dtype=torch.float64, device=device)
        self.F = torch.zeros(num_classes, num_classes, **zeros)
        self.P = torch.zeros(num_classes, num_classes, **zeros)
        self.N = torch.zeros(num_classes, num_classes, **zeros)
        self.I = torch.eye(num_classes, **zeros)
        self.theta = torch.zeros(num_classes, **zeros)
        self.phi = torch.zeros(num_classes, **zeros)

    def update(self, g: torch.Tensor, y: torch.Tensor) -> None:
        g = g.to(torch.float64)
        for i in range(g.shape[0]):
            self.F[:, y[i]] += g[i]
        self.P += self.F * self.I
        self.N += self.F * (1 - self.I)
        self.theta = self.P.sum(1)
        self.phi = self.N.sum(0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_reference(data, size: Size, epochs: int, warmup_epochs: int, device: str, num_workers: int, seed: int,
                  eval_batch_size: int, log, schedule=None) -> dict:
    """The reference-style loop: ``warmup_epochs`` untimed epochs, then ``epochs`` timed ones, on SPEC §3's schedule
    over all of them, or on ``schedule(epoch, total_epochs)`` when given (e.g. a recorded or shorter warm-up)."""
    train_images, train_labels, test_images, test_labels = data
    train_tf, test_tf = reference_transforms(size)
    pin = device.startswith("cuda")
    loader_kw = dict(num_workers=num_workers, pin_memory=pin, worker_init_fn=_seed_numpy_in_worker)
    torch.manual_seed(seed)
    np.random.seed(seed)
    train_loader = DataLoader(ImageDataset(train_images, train_labels, train_tf), batch_size=size.batch_size,
                              shuffle=True, drop_last=True, **loader_kw)
    test_loader = DataLoader(ImageDataset(test_images, test_labels, test_tf), batch_size=eval_batch_size,
                             shuffle=False, **loader_kw)
    model = ResNet32(size.num_classes, size.width).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=PAPER.base_lr, momentum=PAPER.momentum,
                                weight_decay=PAPER.weight_decay)
    stats = ReferenceStatistics(size.num_classes, device)
    total_epochs = warmup_epochs + epochs
    train_seconds, eval_seconds, accuracy = [], [], {}
    for epoch in range(1, total_epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = (schedule or reference_lr)(epoch, total_epochs)
        _sync(device)
        started = time.perf_counter()
        model.train()
        loss_sum = 0.0
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
            logits = model(x)
            adjusted = (logits + LAMBDA1 * torch.log(stats.theta + EPS).float()
                        - LAMBDA2 * torch.log(stats.phi[y] + EPS).float()[:, None])
            adjusted.retain_grad()
            loss = F.cross_entropy(adjusted, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            stats.update(adjusted.grad.abs(), y)
            loss_sum += loss.item()
        _sync(device)
        train_seconds.append(time.perf_counter() - started)

        started = time.perf_counter()
        model.eval()
        outputs, targets = [], []
        with torch.no_grad():
            for x, y in test_loader:
                outputs.append(model(x.to(device, non_blocking=pin)))
                targets.append(y.to(device, non_blocking=pin))
        z, y = torch.cat(outputs), torch.cat(targets)
        p = z.softmax(1)
        accuracy = {"plain": 100.0 * (p.argmax(1) == y).float().mean().item(),
                    "pn": 100.0 * ((p / p.sum(0)).argmax(1) == y).float().mean().item()}
        eval_seconds.append(time.perf_counter() - started)
        log(f"  reference epoch {epoch}/{total_epochs}{' (warm-up)' if epoch <= warmup_epochs else ''}: "
            f"train {train_seconds[-1]:.2f} s, eval {eval_seconds[-1]:.2f} s, loss {loss_sum / len(train_loader):.3f}, "
            f"test {accuracy['plain']:.1f}% (PN {accuracy['pn']:.1f}%)")
    timed_train, timed_eval = train_seconds[warmup_epochs:], eval_seconds[warmup_epochs:]
    train_s, eval_s = statistics.median(timed_train), statistics.median(timed_eval)
    return {
        "includes": {
            "train": "one pass of the training DataLoader (worker start-up, per-image PIL augmentation, collation, "
                     "host-to-device copy), forward, BaGMar loss, backward, SGD, per-sample statistics loop, "
                     "loss.item() every step",
            "eval": "one pass of the test DataLoader (per-image ToTensor + Normalize), forward, plain and PN "
                    "(tau = 1) accuracy",
        },
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "train_per_epoch": train_s,
        "eval_per_epoch": eval_s,
        "epoch_total": train_s + eval_s,
        "final_test_acc": accuracy,
        "final_test_logits": z.float().cpu().numpy(),  # for tests/test_parity.py; not written to the record
    }


def reference_adjusted_logits(z, labels, stats: "ReferenceStatistics", lambda1: float, lambda2: float) -> np.ndarray:
    """SPEC §4's z'[i, j] = z[i, j] + lambda1 log(theta[j] + eps) - lambda2 log(phi[y_i] + eps), one entry at a time."""
    theta, phi = stats.theta.cpu().numpy(), stats.phi.cpu().numpy()
    out = np.array(z, dtype=np.float64)
    for i, y in enumerate(np.asarray(labels)):
        for j in range(out.shape[1]):
            out[i, j] += lambda1 * np.log(theta[j] + EPS) - lambda2 * np.log(phi[y] + EPS)
    return out
