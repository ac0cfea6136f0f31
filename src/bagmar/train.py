"""The training recipe of SPEC §3, shared by every variant (they differ only in lambda1/lambda2)."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import checkpoint
from .augment import test_transform, train_augment
from .evaluate import pn_predictions
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


SELECTIONS = {"plain": "test_acc", "pn": "test_acc_pn"}  # best epoch by plain / PN (tau = 1) test accuracy


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    test_logits: np.ndarray  # (M, C) float32, final-epoch model, plain logits
    metrics: list[dict]  # one row per epoch
    stats: GradientStatistics
    # SPEC §7: the released code reported the epoch with the best *test* accuracy (PN for the _pn
    # variants); kept beside the final model, so both can be shown, and labelled as test-selected.
    best: dict[str, dict]  # selection -> {"epoch": int, "acc": float, "logits": (M, C) tensor}

    def save(self, *, model: str, logits: str, test_labels: np.ndarray, metrics: str, statistics: str) -> None:
        """Each file is written atomically; none of them is a pickle of arbitrary objects."""
        with atomic_write(model, "wb") as f:
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, f)
        best = {}
        for selection, entry in self.best.items():
            best[f"best_{selection}_logits"] = entry["logits"].cpu().numpy()
            best[f"best_{selection}_epoch"] = np.int64(entry["epoch"])
        with atomic_write(logits, "wb") as f:
            np.savez(f, logits=self.test_logits, labels=np.asarray(test_labels, dtype=np.int64),
                     final_epoch=np.int64(self.metrics[-1]["epoch"]), **best)
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
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Plain logits (SPEC §4: evaluation never adjusts them) for uint8 (N, 3, H, W) images.

    Batches of 1,000 keep a GPU busy; on a CPU, activations of 100 images stay in cache and the
    same evaluation ran 3x faster than at 1,000 (benchmarks/RESULTS.md).
    """
    batch_size = batch_size or (1000 if images.is_cuda else 100)
    model.eval()
    out = torch.cat([model(test_transform(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])
    model.train()
    return out.float()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, stats: GradientStatistics, images: torch.Tensor,
               labels: torch.Tensor, lambda1: float, lambda2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the BaGMar loss, then the statistics update (SPEC §4). Never syncs with the host.

    Returns the detached loss and logits, for the epoch's running metrics.
    """
    logits = model(images)
    loss, grad = bagmar_loss(logits, labels, stats, lambda1, lambda2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    stats.update(grad, labels)
    return loss.detach(), logits.detach()


def train(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    recipe: Recipe,
    device: str = "cpu",
    progress: Callable[[str], None] = print,
    checkpoint_dir: str | Path | None = None,
    name: str = "training",
) -> TrainResult:
    """Train ResNet-32 with the BaGMar loss (cross-entropy when lambda1 = lambda2 = 0).

    With ``checkpoint_dir``, the full state is saved after every epoch and a rerun resumes from
    the newest intact checkpoint of the same recipe and data; on the CPU the resumed run ends
    bit-identical to an uninterrupted one. All randomness after the model's initialisation comes
    from one torch.Generator, whose state the checkpoint holds.
    """
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
    steps = len(y_train) // recipe.batch_size  # the last incomplete batch is dropped
    if steps == 0:
        raise ValueError(f"batch_size {recipe.batch_size} is larger than the training split ({len(y_train)} images)")

    metrics: list[dict] = []
    best = {selection: {"epoch": 0, "acc": -1.0, "logits": torch.zeros(0)} for selection in SELECTIONS}
    first_epoch = 1
    identity = checkpoint.fingerprint(dataclasses.asdict(recipe), train_images, train_labels)
    if checkpoint_dir is not None and (state := checkpoint.load_latest(checkpoint_dir, identity, device)):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stats.load_state_dict(state["statistics"])
        generator.set_state(state["generator"].cpu())
        metrics, best = state["metrics"], state["best"]
        first_epoch = state["epoch"] + 1
        progress(f"resuming {name} after epoch {state['epoch']} from {checkpoint_dir}")

    report_every = max(1, steps // 10)
    trained_steps, training_started = 0, time.perf_counter()
    for epoch in range(first_epoch, recipe.epochs + 1):
        started = time.perf_counter()
        lr = learning_rate(epoch, recipe)
        for group in optimizer.param_groups:
            group["lr"] = lr
        order = torch.randperm(len(y_train), generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)  # checked once per epoch: no sync
        for step in range(steps):
            batch = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x = train_augment(x_train[batch], generator, padding=recipe.padding, cutout_size=recipe.cutout_size)
            y = y_train[batch]
            loss, logits = train_step(model, optimizer, stats, x, y, recipe.lambda1, recipe.lambda2)
            loss_sum += loss
            correct += (logits.argmax(1) == y).sum()
            finite = torch.isfinite(loss) & torch.isfinite(logits).all()
            first_bad_step = torch.where(finite | (first_bad_step >= 0), first_bad_step, step + 1)
            trained_steps += 1
            if (step + 1) % report_every == 0 and step + 1 < steps:
                left = (recipe.epochs - epoch + 1) * steps - step - 1
                eta = (time.perf_counter() - training_started) / trained_steps * left
                progress(f"  epoch {epoch}/{recipe.epochs} {_bar((step + 1) / steps)} step {step + 1}/{steps}  "
                         f"ETA {_clock(eta)}")
        if (bad := int(first_bad_step)) >= 0:
            raise FloatingPointError(
                f"{name}: non-finite loss or logits in epoch {epoch}, step {bad} of {steps} "
                f"(lambda1={recipe.lambda1}, lambda2={recipe.lambda2}, lr={lr:.4g}); nothing was saved for this "
                "training. Lower the learning rate or check the input data."
            )
        test_logits = predict_logits(model, x_test)
        plain, pn = pn_predictions(test_logits.cpu().numpy(), [0.0, 1.0])
        metrics.append({
            "epoch": epoch,
            "lr": lr,
            "train_loss": loss_sum.item() / steps,
            "train_acc": 100.0 * correct.item() / (steps * recipe.batch_size),
            "test_acc": 100.0 * float(np.mean(plain == test_labels)),
            "test_acc_pn": 100.0 * float(np.mean(pn == test_labels)),
            "seconds": time.perf_counter() - started,
        })
        for selection, column in SELECTIONS.items():
            if metrics[-1][column] > best[selection]["acc"]:
                best[selection] = {"epoch": epoch, "acc": metrics[-1][column], "logits": test_logits.cpu()}
        if checkpoint_dir is not None:
            checkpoint.save(checkpoint_dir, epoch, {
                "fingerprint": identity,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "statistics": stats.state_dict(),
                "generator": generator.get_state(),
                "metrics": metrics,
                "best": best,
            })
        row = metrics[-1]
        progress(
            f"{name} epoch {epoch}/{recipe.epochs}  lr {lr:.4f}  loss {row['train_loss']:.4f}  "
            f"train {row['train_acc']:.2f}%  test {row['test_acc']:.2f}%  test PN {row['test_acc_pn']:.2f}%  "
            f"({row['seconds']:.1f} s, ETA {_clock(row['seconds'] * (recipe.epochs - epoch))})"
        )
    if first_epoch > recipe.epochs:  # every epoch was in the checkpoint: only the test logits are missing
        test_logits = predict_logits(model, x_test)
    return TrainResult(model, test_logits.cpu().numpy(), metrics, stats, best)


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
