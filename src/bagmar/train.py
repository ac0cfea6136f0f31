"""Training under the recipe of SPEC §3 (bagmar.recipe), shared by every training (they differ in their loss and
its settings): one model, or a group of them fused into one network (bagmar.engine)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import checkpoint
from .engine import FusedGroup, Stepper, pn_correct, predict_logits, to_device_images
from .io import UserError, atomic_write
from .loss import GradientStatistics
from .recipe import FUSABLE, LOSS_SETTINGS, Recipe, RecipeError, learning_rate  # noqa: F401 (re-exported)


class NonFiniteError(UserError, FloatingPointError):
    """A loss or logit became NaN or infinite; nothing of that training is written as if complete."""


SELECTIONS = {"plain": "test_acc", "pn": "test_acc_pn"}  # best epoch by plain / PN (tau = 1) test accuracy


@dataclasses.dataclass
class TrainResult:
    model: nn.Module
    test_logits: np.ndarray  # (M, C) float32, final-epoch model, plain logits
    metrics: list[dict]  # one row per epoch
    stats: GradientStatistics
    # SPEC §7: the released code reported the epoch with the best *test* accuracy (PN for the _pn
    # variants); kept beside the final model, so both can be shown, and labelled as test-selected.
    best: dict[str, dict]  # selection -> {"epoch", "acc", "logits": (M, C), "bias" and "norms": (C,) tensors}

    def save(self, *, model: str, logits: str, test_labels: np.ndarray, metrics: str, statistics: str) -> None:
        """Each file is written atomically; none of them is a pickle of arbitrary objects.

        The logits file also holds the classifier's bias and per-class weight norms, which
        tau-normalisation needs (evaluate.py)."""
        with atomic_write(model, "wb") as f:
            torch.save({k: v.cpu() for k, v in self.model.state_dict().items()}, f)
        best = {}
        for selection, entry in self.best.items():
            best[f"best_{selection}_logits"] = entry["logits"].cpu().numpy()
            best[f"best_{selection}_epoch"] = np.int64(entry["epoch"])
            best[f"best_{selection}_classifier_bias"] = entry["bias"].numpy()
            best[f"best_{selection}_classifier_weight_norm"] = entry["norms"].numpy()
        with atomic_write(logits, "wb") as f:
            bias, norms = self.model.classifier_terms()
            np.savez(f, logits=self.test_logits, labels=np.asarray(test_labels, dtype=np.int64),
                     final_epoch=np.int64(self.metrics[-1]["epoch"]), classifier_bias=bias.cpu().numpy(),
                     classifier_weight_norm=norms.cpu().numpy(), **best)
        with atomic_write(metrics) as f:
            pd.DataFrame(self.metrics).to_csv(f, index=False)
        with atomic_write(statistics, "wb") as f:
            np.savez(f, **{k: v.cpu().numpy() for k, v in self.stats.state_dict().items()})


def resolve_device(name: str) -> str:
    """'auto' picks CUDA when a GPU is visible (Snakemake never sets CUDA_VISIBLE_DEVICES itself)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was requested but no GPU is visible; set device: auto or cpu in the config")
    return name


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
    cuda_graph: bool | None = None,
) -> TrainResult:
    """Train ResNet-32 with the BaGMar loss (cross-entropy when lambda1 = lambda2 = 0): a group of one."""
    return train_group(train_images, train_labels, test_images, test_labels, num_classes, [recipe], device=device,
                       progress=progress, checkpoint_dir=checkpoint_dir, names=[name], cuda_graph=cuda_graph)[0]


def train_group(
    train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
    num_classes: int,
    recipes: list[Recipe],
    device: str = "cpu",
    progress: Callable[[str], None] = print,
    checkpoint_dir: str | Path | None = None,
    names: list[str] | None = None,
    cuda_graph: bool | None = None,
    stop_after_epoch: int | None = None,
    keep_matrix: bool | None = None,
) -> list[TrainResult]:
    """Train K models (recipes differing only in FUSABLE) as one fused network; each ends as if trained alone.

    ``checkpoint_dir``: save every epoch, resume from the newest intact checkpoint (bit-identical on the CPU);
    ``cuda_graph`` (default: on a GPU); ``stop_after_epoch``: the first epochs of ``recipe.epochs``' schedule;
    ``keep_matrix``: keep SPEC §4's matrix F beside theta and phi (loss.GradientStatistics; default: C <= 1,000).
    """
    names = names or [f"training {k}" for k in range(len(recipes))]
    _check_fusable(recipes)
    recipe = recipes[0]
    x_test = to_device_images(test_images, device)
    y_test = torch.as_tensor(test_labels, dtype=torch.int64, device=device)
    group = FusedGroup(recipes, num_classes, to_device_images(train_images, device),
                       torch.as_tensor(train_labels, dtype=torch.int64, device=device), device, keep_matrix)
    steps = _steps_per_epoch(len(train_labels), recipe.batch_size)
    history = _History(len(recipes))
    saved = _Checkpoints(checkpoint_dir, recipes, train_images, train_labels, device, group.stats.keeps_matrix)
    first_epoch = saved.restore(group, history, lambda epoch: progress(
        f"resuming {', '.join(names)} after epoch {epoch} from {checkpoint_dir}"))
    stepper = Stepper(group, cuda_graph=torch.device(device).type == "cuda" and cuda_graph is not False)
    report = _Progress(progress, names, recipe.epochs, steps)
    last_epoch = recipe.epochs if stop_after_epoch is None else min(stop_after_epoch, recipe.epochs)
    test_logits = None
    for epoch in range(first_epoch, last_epoch + 1):
        started, lr = time.perf_counter(), learning_rate(epoch, recipe)
        group.start_epoch(epoch, lr)
        for step in range(steps):
            stepper()
            report.step(epoch, step)
        _refuse_non_finite(group, recipes, names, epoch, steps, lr)  # a host sync: the training steps are done
        evaluated = time.perf_counter()
        test_logits = predict_logits(group.model, x_test)  # (K, N, C)
        history.add_epoch(epoch, lr, group, test_logits, y_test, steps, recipe.batch_size, started, evaluated)
        saved.save(epoch, group, history)
        report.epoch(epoch, history)
    if test_logits is None:  # every epoch was in the checkpoint: only the test logits are missing
        test_logits = predict_logits(group.model, x_test)
    return history.results(group, test_logits.cpu().numpy(), num_classes, device)


def _steps_per_epoch(images: int, batch_size: int) -> int:
    """The last incomplete batch is dropped, as the released loader does."""
    if images < batch_size:
        raise RecipeError(f"batch_size {batch_size} is larger than the training split ({images} images)")
    return images // batch_size


class _History:
    """Per model: one metrics row per epoch, and the test-selected best epochs (SPEC §7)."""

    def __init__(self, members: int):
        self.metrics: list[list[dict]] = [[] for _ in range(members)]
        self.best = [{selection: {"epoch": 0, "acc": -1.0, "logits": torch.zeros(0), "bias": torch.zeros(0),
                                  "norms": torch.zeros(0)} for selection in SELECTIONS} for _ in range(members)]

    def add_epoch(self, epoch: int, lr: float, group: FusedGroup, test_logits: torch.Tensor,
                  test_labels: torch.Tensor, steps: int, batch_size: int, started: float, evaluated: float) -> None:
        """``started``: the epoch's start; ``evaluated``: the test pass's start (perf_counter seconds)."""
        self.add(epoch, lr, group.loss_sum, group.correct, group.model.classifier.terms(), test_logits, test_labels,
                 steps, batch_size, started, evaluated)

    def add(self, epoch: int, lr: float, loss_sum: torch.Tensor, train_correct: torch.Tensor,
            classifier_terms: tuple[torch.Tensor, torch.Tensor], test_logits: torch.Tensor, test_labels: torch.Tensor,
            steps: int, batch_size: int, started: float, evaluated: float) -> None:
        """One epoch of K models: their summed step losses and correct training predictions (K,), classifier bias
        and weight norms (K, C) each (what tau-normalisation of a best epoch needs), and test logits (K, N, C)."""
        correct = pn_correct(test_logits, test_labels).tolist()  # waits for the test pass
        now = time.perf_counter()
        losses, train_correct = loss_sum.tolist(), train_correct.tolist()
        bias, norms = classifier_terms
        for member, rows in enumerate(self.metrics):
            rows.append({
                "epoch": epoch,
                "lr": lr,
                "train_loss": losses[member] / steps,
                "train_acc": 100.0 * train_correct[member] / (steps * batch_size),
                "test_acc": 100.0 * correct[member][0] / len(test_labels),
                "test_acc_pn": 100.0 * correct[member][1] / len(test_labels),
                "seconds": now - started,
                "eval_seconds": now - evaluated,  # the test pass of all K models with its plain and PN accuracy
            })
            for selection, column in SELECTIONS.items():
                if rows[-1][column] > self.best[member][selection]["acc"]:
                    self.best[member][selection] = {"epoch": epoch, "acc": rows[-1][column],
                                                    "logits": test_logits[member].cpu(),
                                                    "bias": bias[member].cpu(), "norms": norms[member].cpu()}

    def results(self, group: FusedGroup, test_logits: np.ndarray, num_classes: int, device) -> list[TrainResult]:
        results = []
        for member, (metrics, best) in enumerate(zip(self.metrics, self.best)):
            stats = GradientStatistics(num_classes, device, keep_matrix=group.stats.keeps_matrix)
            stats.load_state_dict(group.stats.member(member))
            results.append(TrainResult(group.model.member(member), test_logits[member], metrics, stats, best))
        return results


class _Checkpoints:
    """Per-epoch checkpoints of a group (checkpoint.py), or none without a directory."""

    def __init__(self, directory, recipes: list[Recipe], train_images: np.ndarray, train_labels: np.ndarray, device,
                 keep_matrix: bool):
        self.directory, self.device = directory, device
        self.identity = checkpoint.fingerprint({"format": 4, "recipes": [dataclasses.asdict(r) for r in recipes],
                                                "keep_matrix": keep_matrix},
                                               train_images, train_labels)

    def restore(self, group: FusedGroup, history: _History, announce: Callable[[int], None]) -> int:
        """Load the newest intact checkpoint of these recipes and data; the first epoch still to train."""
        state = self.directory is not None and checkpoint.load_latest(self.directory, self.identity, self.device)
        if not state:
            return 1
        group.load_state_dict(state)
        history.metrics, history.best = state["metrics"], state["best"]
        announce(state["epoch"])
        return state["epoch"] + 1

    def save(self, epoch: int, group: FusedGroup, history: _History) -> None:
        if self.directory is not None:
            checkpoint.save(self.directory, epoch, {"fingerprint": self.identity, "epoch": epoch, **group.state_dict(),
                                                    "metrics": history.metrics, "best": history.best})


class _Progress:
    """The job log: a bar with ETA ten times an epoch, then one line per model and epoch."""

    def __init__(self, progress: Callable[[str], None], names: list[str], epochs: int, steps: int):
        self.progress, self.names, self.epochs, self.steps = progress, names, epochs, steps
        self.every, self.done, self.started = max(1, steps // 10), 0, time.perf_counter()

    def step(self, epoch: int, step: int) -> None:
        self.done += 1
        if (step + 1) % self.every == 0 and step + 1 < self.steps:
            left = (self.epochs - epoch + 1) * self.steps - step - 1
            eta = (time.perf_counter() - self.started) / self.done * left
            self.progress(f"  epoch {epoch}/{self.epochs} {_bar((step + 1) / self.steps)} step {step + 1}/{self.steps}"
                          f"  ETA {_clock(eta)}")

    def epoch(self, epoch: int, history: _History) -> None:
        k = len(self.names)
        for name, rows in zip(self.names, history.metrics):
            row = rows[-1]
            self.progress(
                f"{name} epoch {epoch}/{self.epochs}  lr {row['lr']:.4f}  loss {row['train_loss']:.4f}  "
                f"train {row['train_acc']:.2f}%  test {row['test_acc']:.2f}%  test PN {row['test_acc_pn']:.2f}%  "
                f"({row['seconds']:.1f} s{' for all ' + str(k) if k > 1 else ''}, "
                f"ETA {_clock(row['seconds'] * (self.epochs - epoch))})"
            )


def _refuse_non_finite(group: FusedGroup, recipes: list[Recipe], names: list[str], epoch: int, steps: int,
                       lr: float) -> None:
    """One host read per epoch: the first step whose loss or logits were not finite, per model."""
    for member, bad in enumerate(group.first_bad_step.tolist()):
        if bad >= 0:
            r = recipes[member]
            settings = ", ".join(f"{key}={getattr(r, key)}" for key in LOSS_SETTINGS[r.loss])
            raise NonFiniteError(
                f"{names[member]}: non-finite loss or logits in epoch {epoch}, step {bad} of {steps} "
                f"({r.loss}: {settings}, lr={lr:.4g}); nothing was saved for this "
                "training. Lower the learning rate or check the input data."
            )


def _check_fusable(recipes: list[Recipe]) -> None:
    shared = [{k: v for k, v in dataclasses.asdict(r).items() if k not in FUSABLE} for r in recipes]
    for r, settings in zip(recipes[1:], shared[1:]):
        if settings != shared[0]:
            differ = sorted(key for key in settings if settings[key] != shared[0][key])
            raise RecipeError(
                f"trainings fused into one group must share every setting but {', '.join(FUSABLE)}; "
                f"these differ: {', '.join(differ)}. Turn fusion off or give them the same values."
            )


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
