"""The training loop of every training: epochs, per-epoch checkpoints and exact resume, the metrics history with its
test-selected best epochs, the job log's progress lines, the non-finite check, and a stop after an early epoch.

Trainings differ only in where their steps come from, a ``Steps`` object: bagmar.training.train's trains a group of
ResNet-32s fused into one network on images held on the device (engine.FusedGroup, run by engine.Stepper, a CUDA
graph on a GPU); bagmar.training.image_train's trains one network on JPEG batches decoded by DataLoader workers, in one
process or as one rank of several. ``run`` trains either and returns a TrainResult per model, saved in the same
files, so evaluation, the tables and the report read every training alike.

A checkpoint holds the steps' own state (``Steps.state_dict``) beside the history, after every epoch; a killed
training resumes from the newest intact one and ends with the same weights, bit for bit on the CPU.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import checkpoint
from .engine import StackedStatistics, pn_correct
from ..io import UserError, atomic_write
from ..method.loss import GradientStatistics
from ..config.recipe import RecipeError, loss_settings


class NonFiniteError(UserError, FloatingPointError):
    """A loss or logit became NaN or infinite; nothing of that training is written as if complete."""


SELECTIONS = {"plain": "test_acc", "pn": "test_acc_pn"}  # best epoch by plain / PN (tau = 1) test accuracy
TIMES = ("seconds", "eval_seconds")  # the metrics' last columns: wall times, which differ between runs


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


class Steps(Protocol):
    """Where the steps of K models trained together come from (K = 1 but for a fused group).

    Each epoch ``run`` calls ``start_epoch``, iterates ``run_epoch``, then ``non_finite``, ``totals``,
    ``test_logits``, ``classifier_terms`` (on the leader) and ``end_epoch``; ``state_dict`` and ``load_state_dict``
    are what a checkpoint holds of the steps, beside the history. Every process of a data-parallel training runs
    the loop; only the leader keeps the history, writes the checkpoints and returns the results.
    """

    recipes: list  # one per model; the first one's epochs and batch size are every model's
    steps: int  # per epoch
    test_labels: torch.Tensor  # (N,), on the training's device
    stats: StackedStatistics  # the K models' gradient statistics
    leader: bool
    cuda_graph: str  # how the steps run, recorded in the metrics: "off", "warming up", "captured", "failed: <why>"

    def start_epoch(self, epoch: int) -> float:
        """Set the epoch up (learning rate, data order, zeroed sums); its learning rate."""

    def run_epoch(self, epoch: int) -> Iterator[int]:
        """Train the epoch's steps, yielding each one's index once it is done."""

    def non_finite(self) -> list[str | None]:
        """Per model: where in this epoch its loss or logits were first not finite ("step 3 of 5"), or None."""

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The epoch's summed step losses (K,) and correct training predictions (K,), of the global batches."""

    def test_logits(self) -> torch.Tensor | None:
        """Plain test logits (K, N, C) of the current weights; None on a process that does not lead."""

    def classifier_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every model's classifier bias and per-class weight norms, (K, C) each."""

    def model(self, k: int) -> nn.Module:
        """Model k as its TrainResult holds it."""

    def resumes_at(self, epoch: int) -> None:
        """Called with the first epoch to train, once the newest checkpoint is loaded (or none was found)."""

    def end_epoch(self) -> None:
        """Called once an epoch is recorded (and checkpointed)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def steps_per_epoch(images: int, batch_size: int, training_set: str) -> int:
    """The last incomplete batch is dropped, as the released loaders do."""
    if images < batch_size:
        raise RecipeError(f"batch_size {batch_size} is larger than the {training_set} ({images} images)")
    return images // batch_size


def run(source: Steps, names: list[str], fingerprint: str, progress: Callable[[str], None] = print,
        checkpoint_dir: str | Path | None = None, stop_after_epoch: int | None = None) -> list[TrainResult] | None:
    """Train the models of ``source``, named ``names`` in the log, to the end of their schedule, or to the end of
    epoch ``stop_after_epoch``.

    ``checkpoint_dir``: save every epoch, and resume from the newest intact checkpoint whose ``fingerprint`` (what
    it belongs to: settings and data) is this one. A TrainResult per model; None on a process that does not lead.
    """
    recipe = source.recipes[0]
    history = _History(len(source.recipes))
    saved = _Checkpoints(checkpoint_dir, fingerprint, source.test_labels.device)
    first_epoch = saved.restore(source, history, lambda epoch: progress(
        f"resuming {', '.join(names)} after epoch {epoch} from {checkpoint_dir}"))
    source.resumes_at(first_epoch)
    report = _Progress(progress, names, recipe.epochs, source.steps)
    last_epoch = recipe.epochs if stop_after_epoch is None else min(stop_after_epoch, recipe.epochs)
    test_logits = None
    for epoch in range(first_epoch, last_epoch + 1):
        started, lr = time.perf_counter(), source.start_epoch(epoch)
        for step in source.run_epoch(epoch):
            report.step(epoch, step)
        _refuse_non_finite(source, names, epoch, lr)  # a host sync: the training steps are done
        loss_sum, correct = source.totals()
        evaluated = time.perf_counter()
        test_logits = source.test_logits()
        if source.leader:
            history.add(epoch, lr, loss_sum, correct, source.classifier_terms(), test_logits, source, started,
                        evaluated)
            saved.save(epoch, source, history)
            report.epoch(epoch, history)
        source.end_epoch()
    if first_epoch > last_epoch:  # every epoch was in the checkpoint: only the test logits are missing
        test_logits = source.test_logits()
    return history.results(source, test_logits.cpu().numpy()) if source.leader else None


def _refuse_non_finite(source: Steps, names: list[str], epoch: int, lr: float) -> None:
    """One host read per epoch: the first step whose loss or logits were not finite, per model."""
    for member, where in enumerate(source.non_finite()):
        if where is not None:
            r = source.recipes[member]
            settings = ", ".join(f"{key}={getattr(r, key)}" for key in loss_settings(r.loss))
            raise NonFiniteError(
                f"{names[member]}: non-finite loss or logits in epoch {epoch}, {where} "
                f"({r.loss}: {settings}, lr={lr:.4g}); nothing was saved for this "
                "training. Lower the learning rate or check the input data."
            )


class _History:
    """Per model: one metrics row per epoch, and the test-selected best epochs (SPEC §7)."""

    def __init__(self, members: int):
        self.metrics: list[list[dict]] = [[] for _ in range(members)]
        self.best = [{selection: {"epoch": 0, "acc": -1.0, "logits": torch.zeros(0), "bias": torch.zeros(0),
                                  "norms": torch.zeros(0)} for selection in SELECTIONS} for _ in range(members)]

    def add(self, epoch: int, lr: float, loss_sum: torch.Tensor, train_correct: torch.Tensor,
            classifier_terms: tuple[torch.Tensor, torch.Tensor], test_logits: torch.Tensor, source: Steps,
            started: float, evaluated: float) -> None:
        """One epoch of K models: their summed step losses and correct training predictions (K,), classifier bias
        and weight norms (K, C) each (what tau-normalisation of a best epoch needs), and test logits (K, N, C).
        ``started``: the epoch's start; ``evaluated``: the test pass's start (perf_counter seconds)."""
        test_labels, batch_size = source.test_labels, source.recipes[0].batch_size
        correct = pn_correct(test_logits, test_labels).tolist()  # waits for the test pass
        now = time.perf_counter()
        losses, train_correct = loss_sum.tolist(), train_correct.tolist()
        bias, norms = classifier_terms
        for member, rows in enumerate(self.metrics):
            rows.append({
                "epoch": epoch,
                "lr": lr,
                "train_loss": losses[member] / source.steps,
                "train_acc": 100.0 * train_correct[member] / (source.steps * batch_size),
                "test_acc": 100.0 * correct[member][0] / len(test_labels),
                "test_acc_pn": 100.0 * correct[member][1] / len(test_labels),
                "cuda_graph": source.cuda_graph,
                "seconds": now - started,
                "eval_seconds": now - evaluated,  # the test pass of all K models with its plain and PN accuracy
            })
            for selection, column in SELECTIONS.items():
                if rows[-1][column] > self.best[member][selection]["acc"]:
                    self.best[member][selection] = {"epoch": epoch, "acc": rows[-1][column],
                                                    "logits": test_logits[member].cpu(),
                                                    "bias": bias[member].cpu(), "norms": norms[member].cpu()}

    def restore(self, metrics: list[list[dict]], best: list[dict]) -> None:
        """A checkpoint's history; rows written before the cuda_graph column get it, before the times."""
        self.metrics = [[{**{k: v for k, v in row.items() if k not in TIMES},
                          "cuda_graph": row.get("cuda_graph", "not recorded"), **{k: row[k] for k in TIMES}}
                         for row in rows] for rows in metrics]
        self.best = best

    def results(self, source: Steps, test_logits: np.ndarray) -> list[TrainResult]:
        """A TrainResult per model: its weights, final test logits (K, N, C), history and gradient statistics."""
        results = []
        for member, (metrics, best) in enumerate(zip(self.metrics, self.best)):
            theta = source.stats.theta
            stats = GradientStatistics(theta.shape[-1], theta.device, keep_matrix=source.stats.keeps_matrix)
            stats.load_state_dict(source.stats.member(member))
            results.append(TrainResult(source.model(member), test_logits[member], metrics, stats, best))
        return results


class _Checkpoints:
    """Per-epoch checkpoints of a training (checkpoint.py), or none without a directory."""

    def __init__(self, directory: str | Path | None, fingerprint: str, device: torch.device):
        self.directory, self.fingerprint, self.device = directory, fingerprint, device

    def restore(self, source: Steps, history: _History, announce: Callable[[int], None]) -> int:
        """Load the newest intact checkpoint of this training; the first epoch still to train."""
        state = self.directory is not None and checkpoint.load_latest(self.directory, self.fingerprint, self.device)
        if not state:
            return 1
        source.load_state_dict(state)
        history.restore(state["metrics"], state["best"])
        announce(state["epoch"])
        return state["epoch"] + 1

    def save(self, epoch: int, source: Steps, history: _History) -> None:
        if self.directory is not None:
            checkpoint.save(self.directory, epoch, {"fingerprint": self.fingerprint, "epoch": epoch,
                                                    **source.state_dict(), "metrics": history.metrics,
                                                    "best": history.best})


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


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
