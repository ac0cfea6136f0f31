"""Training under the recipe of SPEC §3 (bagmar.config.recipe), shared by every training (they differ in their loss and
its settings): one model, or a group of them fused into one network (bagmar.training.engine), trained by bagmar.training.loop on
steps drawn from the training images held on the device."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .engine import FusedGroup, Stepper, predict_logits, to_device_images
from ..io import UserError
from .loop import TrainResult, run, steps_per_epoch
from ..config.recipe import FUSABLE, Recipe, RecipeError, learning_rate


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
    code: dict | None = None,
) -> list[TrainResult]:
    """Train K models (recipes differing only in FUSABLE) as one fused network; each ends as if trained alone.

    ``checkpoint_dir``: save every epoch, resume from the newest intact checkpoint (bit-identical on the CPU);
    ``cuda_graph`` (default: on a GPU; should capture fail, the eager step trains on, as the log and the metrics'
    cuda_graph column say); ``stop_after_epoch``: the first epochs of ``recipe.epochs``' schedule;
    ``keep_matrix``: keep SPEC §4's matrix F beside theta and phi (loss.GradientStatistics; default: C <= 1,000);
    ``code``: the fingerprint of the code that trains (the workflow job's), so that a checkpoint of other code is
    not resumed: a rerun for a change of the code trains again instead of returning the old model.
    """
    names = names or [f"training {k}" for k in range(len(recipes))]
    _check_fusable(recipes)
    group = FusedGroup(recipes, num_classes, to_device_images(train_images, device),
                       torch.as_tensor(train_labels, dtype=torch.int64, device=device), device, keep_matrix)
    stepper = Stepper(group, cuda_graph=torch.device(device).type == "cuda" and cuda_graph is not False, log=progress)
    steps = steps_per_epoch(len(train_labels), recipes[0].batch_size, "training split")
    y_test = torch.as_tensor(test_labels, dtype=torch.int64, device=device)
    source = _FusedSteps(recipes, group, stepper, steps, to_device_images(test_images, device), y_test)
    settings = {"format": 4, "recipes": [dataclasses.asdict(r) for r in recipes], "keep_matrix": group.stats.keeps_matrix}
    identity = checkpoint.fingerprint({**settings, **({"code": code} if code else {})}, train_images, train_labels)
    return run(source, names, identity, progress, checkpoint_dir, stop_after_epoch)


class _FusedSteps:
    """A fused group's steps (bagmar.training.loop.Steps): batches drawn on the device from its in-memory training set by
    engine.FusedGroup, each step run by engine.Stepper (replayed as a CUDA graph on a GPU)."""

    leader = True

    def __init__(self, recipes: list[Recipe], group: FusedGroup, stepper: Stepper, steps: int,
                 test_images: torch.Tensor, test_labels: torch.Tensor):
        self.recipes, self.group, self.stepper, self.steps, self.stats = recipes, group, stepper, steps, group.stats
        self.test_images, self.test_labels = test_images, test_labels

    @property
    def cuda_graph(self) -> str:
        return self.stepper.status

    def start_epoch(self, epoch: int) -> float:
        lr = learning_rate(epoch, self.recipes[0])
        self.group.start_epoch(epoch, lr)
        return lr

    def run_epoch(self, epoch: int) -> Iterator[int]:
        for step in range(self.steps):
            self.stepper()
            yield step

    def non_finite(self) -> list[str | None]:
        return [f"step {bad} of {self.steps}" if bad >= 0 else None for bad in self.group.first_bad_step.tolist()]

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.group.loss_sum, self.group.correct

    def test_logits(self) -> torch.Tensor:
        return predict_logits(self.group.model, self.test_images)  # (K, N, C)

    def classifier_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.group.model.classifier.terms()

    def model(self, k: int) -> nn.Module:
        return self.group.model.member(k)

    def resumes_at(self, epoch: int) -> None:
        pass

    def end_epoch(self) -> None:
        pass

    def state_dict(self) -> dict:
        return self.group.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.group.load_state_dict(state)


def _check_fusable(recipes: list[Recipe]) -> None:
    shared = [{k: v for k, v in dataclasses.asdict(r).items() if k not in FUSABLE} for r in recipes]
    for r, settings in zip(recipes[1:], shared[1:]):
        if settings != shared[0]:
            differ = sorted(key for key in settings if settings[key] != shared[0][key])
            raise RecipeError(
                f"trainings fused into one group must share every setting but {', '.join(FUSABLE)}; "
                f"these differ: {', '.join(differ)}. Turn fusion off or give them the same values."
            )
