"""The training recipe of SPEC §3, shared by every variant (they differ only in lambda1/lambda2)."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from .augment import test_transform, train_augment
from .io import atomic_write
from .loss import GradientStatistics, bagmar_loss
from .model import ResNet32


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training's settings; defaults are the paper's (SPEC §3, §6)."""

    epochs: int = 200
    batch_size: int = 64
    base_lr: float = 0.05
    peak_lr: float = 0.1
    warmup_epochs: int = 2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    width: int = 16  # ResNet-32's first-stage width
    padding: int = 4  # random-crop padding
    cutout_size: int = 16
    lambda1: float = 0.0
    lambda2: float = 0.0
    seed: int = 0  # model init, data order and augmentation draws


def learning_rate(epoch: int, recipe: Recipe) -> float:
    """SPEC §3, for epoch = 1..E: linear warm-up from base to peak, then half a cosine to 0 at E."""
    warmup, epochs = recipe.warmup_epochs, recipe.epochs
    if epoch < warmup:
        return recipe.base_lr + (recipe.peak_lr - recipe.base_lr) * (epoch - 1) / (warmup - 1)
    return recipe.peak_lr * (1 + math.cos(math.pi * (epoch - warmup) / max(epochs - warmup, 1))) / 2


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    test_logits: np.ndarray  # (M, C) float32, final-epoch model, plain logits
    metrics: list[dict]  # one row per epoch
    stats: GradientStatistics

    def save(self, *, model: str, logits: str, test_labels: np.ndarray, metrics: str, statistics: str) -> None:
        """Each file is written atomically; none of them is a pickle of arbitrary objects."""
        with atomic_write(model, "wb") as f:
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, f)
        with atomic_write(logits, "wb") as f:
            np.savez(f, logits=self.test_logits, labels=np.asarray(test_labels, dtype=np.int64))
        with atomic_write(metrics) as f:
            pd.DataFrame(self.metrics).to_csv(f, index=False)
        with atomic_write(statistics, "wb") as f:
            np.savez(f, **{k: v.cpu().numpy() for k, v in self.stats.state_dict().items()})


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when a GPU is visible (Snakemake never sets CUDA_VISIBLE_DEVICES itself)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no GPU is visible; set device: auto or cpu in the config")
    return name


def to_device_images(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) uint8 resident on the device: the whole set fits."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Plain logits (SPEC §4: evaluation never adjusts them) for uint8 (N, 3, H, W) images."""
    model.eval()
    out = torch.cat([model(test_transform(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])
    model.train()
    return out.float()


def train(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    recipe: Recipe,
    device: str = "cpu",
    progress: Callable[[str], None] = print,
) -> TrainResult:
    """Train ResNet-32 with the BaGMar loss (cross-entropy when lambda1 = lambda2 = 0)."""
    torch.manual_seed(recipe.seed)
    model = ResNet32(num_classes, recipe.width).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    stats = GradientStatistics(num_classes, device)
    generator = torch.Generator(device).manual_seed(recipe.seed)

    x_train = to_device_images(train_images, device)
    y_train = torch.as_tensor(train_labels, dtype=torch.int64, device=device)
    x_test = to_device_images(test_images, device)
    y_test = torch.as_tensor(test_labels, dtype=torch.int64, device=device)
    steps = len(y_train) // recipe.batch_size  # the last incomplete batch is dropped
    if steps == 0:
        raise ValueError(f"batch_size {recipe.batch_size} is larger than the training split ({len(y_train)} images)")

    metrics = []
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        lr = learning_rate(epoch, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(y_train), generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for step in range(steps):
            batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x = train_augment(x_train[batch], generator, padding=recipe.padding, cutout_size=recipe.cutout_size)
            y = y_train[batch]
            logits = model(x)
            loss, grad = bagmar_loss(logits, y, stats, recipe.lambda1, recipe.lambda2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            stats.update(grad, y)
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
        train_loss = loss_sum.item() / steps
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"non-finite training loss in epoch {epoch} (lambda1={recipe.lambda1}, lambda2={recipe.lambda2}); "
                "lower the learning rate or check the input data"
            )
        test_logits = predict_logits(model, x_test)
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "train_acc": 100.0 * correct.item() / (steps * recipe.batch_size),
            "test_acc": 100.0 * (test_logits.argmax(1) == y_test).float().mean().item(),
            "seconds": time.perf_counter() - started,
        }
        metrics.append(row)
        progress(
            f"epoch {epoch}/{recipe.epochs}  lr {lr:.4f}  loss {row['train_loss']:.4f}  "
            f"train {row['train_acc']:.2f}%  test {row['test_acc']:.2f}%  ({row['seconds']:.1f} s)"
        )
    return TrainResult(model, test_logits.cpu().numpy(), metrics, stats)
