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
from .io import UserError, atomic_write
from .loss import GradientStatistics, bagmar_loss
from .model import FusedResNet32, ResNet32


class RecipeError(UserError, ValueError):
    """Recipe settings that cannot train: the message says which and what to change."""


class NonFiniteError(UserError, FloatingPointError):
    """A loss or logit became NaN or infinite; nothing of that training is written as if complete."""


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
    precision: str = "float32"  # or "bfloat16": autocast of the network's forward pass (loss stays float32)


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
        raise UserError("device 'cuda' was requested but no GPU is visible; set device: auto or cpu in the config")
    return name


def to_device_images(images: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) uint8 resident on the device: the whole set fits."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Plain logits (SPEC §4: evaluation never adjusts them) for uint8 (N, 3, H, W) images.

    For a FusedResNet32 of K models: (K, N, C), every model seeing the same images.
    Batches of 1,000 keep a GPU busy; on a CPU, activations of 100 images stay in cache and the
    same evaluation ran 3x faster than at 1,000 (benchmarks/RESULTS.md).
    """
    batch_size = batch_size or (1000 if images.is_cuda else 100)
    members = getattr(model, "members", None)
    model.eval()
    outputs = []
    for i in range(0, len(images), batch_size):
        x = test_transform(images[i : i + batch_size])
        outputs.append(model(x.expand(members, *x.shape)) if members else model(x))
    model.train()
    return torch.cat(outputs, dim=-2).float()


class SGD:
    """torch.optim.SGD's update as the recipe uses it (momentum, weight decay on every parameter,
    no dampening, no Nesterov), with the learning rate held in a device tensor.

    torch.optim.SGD reads a tensor learning rate with ``.item()`` (a host sync), so a captured
    CUDA graph would keep the rate of the epoch it was captured in. Here ``lr`` is set per epoch
    with ``fill_`` and every step reads it on the device: SPEC §3's schedule holds under capture.
    tests/test_fused.py checks this against torch.optim.SGD.
    """

    def __init__(self, params, momentum: float, weight_decay: float, device: torch.device | str):
        self.params = list(params)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.lr = torch.zeros((), device=device)
        self.buffers: list[torch.Tensor] | None = None  # created by the first step, as torch's are

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grads = torch._foreach_add([p.grad for p in self.params], self.params, alpha=self.weight_decay)
        if self.buffers is None:
            self.buffers = [g.clone() for g in grads]
        else:
            torch._foreach_mul_(self.buffers, self.momentum)
            torch._foreach_add_(self.buffers, grads)
        torch._foreach_add_(self.params, torch._foreach_mul(self.buffers, -self.lr))

    def state_dict(self) -> dict:
        return {"lr": self.lr, "buffers": self.buffers}

    def load_state_dict(self, state: dict) -> None:
        self.lr.copy_(state["lr"])
        self.buffers = None if state["buffers"] is None else [b.clone() for b in state["buffers"]]


def train_step(model: nn.Module, optimizer: SGD, stats: GradientStatistics, images: torch.Tensor,
               labels: torch.Tensor, lambda1, lambda2, precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on the BaGMar loss, then the statistics update (SPEC §4). Never syncs with the host.

    The one implementation of the step: the CPU runs it eagerly, a GPU replays it as a CUDA
    graph. images (K, B, 3, H, W) for a FusedResNet32 of K models (K = 1 for a single training),
    lambdas (K,) tensors. Returns the detached per-model losses (K,) and logits (K, B, C).
    """
    # no autocast weight cache: a CUDA graph would replay casts of stale weights
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16", cache_enabled=False):
        logits = model(images)
    loss, grad = bagmar_loss(logits, labels, stats, lambda1, lambda2)
    optimizer.zero_grad()
    loss.sum().backward()  # each model's gradient is its own loss's: they share no parameters
    optimizer.step()
    stats.update(grad, labels)
    return loss.detach(), logits.detach()


FUSABLE = ("lambda1", "lambda2", "seed")  # what may differ between the members of a fused group


class _Group:
    """Everything one step reads or writes, in tensors that stay put, so a CUDA graph can replay it.

    Each model has its own generator, seeded with its recipe's seed, which draws its data order and
    its augmentation exactly as a single training with that seed would.
    """

    def __init__(self, recipes: list[Recipe], num_classes: int, x_train: torch.Tensor, y_train: torch.Tensor,
                 device: torch.device | str):
        recipe = recipes[0]
        members = []
        for r in recipes:
            torch.manual_seed(r.seed)  # each model's initialisation, as train() alone would draw it
            members.append(ResNet32(num_classes, r.width))
        self.model = FusedResNet32.from_members(members).to(device)
        if torch.device(device).type == "cuda":  # cuDNN's fast layout; CPU kernels prefer NCHW
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = SGD(self.model.parameters(), recipe.momentum, recipe.weight_decay, device)
        self.stats = GradientStatistics(num_classes, device, members=len(recipes))
        self.generators = [torch.Generator(device).manual_seed(r.seed) for r in recipes]
        self.lambda1 = torch.tensor([r.lambda1 for r in recipes], dtype=torch.float64, device=device)
        self.lambda2 = torch.tensor([r.lambda2 for r in recipes], dtype=torch.float64, device=device)
        self.recipe, self.x_train, self.y_train = recipe, x_train, y_train
        k, n = len(recipes), len(y_train)
        self.order = torch.zeros(k, n, dtype=torch.int64, device=device)
        self.offsets = torch.arange(recipe.batch_size, device=device)
        self.step_index = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros(k, device=device)
        self.correct = torch.zeros(k, dtype=torch.int64, device=device)
        self.first_bad_step = torch.full((k,), -1, dtype=torch.int64, device=device)  # read once per epoch

    def start_epoch(self, lr: float) -> None:
        self.optimizer.lr.fill_(lr)
        for k, generator in enumerate(self.generators):
            self.order[k] = torch.randperm(len(self.y_train), generator=generator, device=self.order.device)
        for tensor in (self.step_index, self.loss_sum, self.correct):
            tensor.zero_()
        self.first_bad_step.fill_(-1)

    def step(self) -> None:
        r = self.recipe
        batch = self.order.index_select(1, self.step_index * r.batch_size + self.offsets)  # (K, B)
        x = torch.stack([
            train_augment(self.x_train[batch[k]], g, padding=r.padding, cutout_size=r.cutout_size)
            for k, g in enumerate(self.generators)
        ])
        y = self.y_train[batch]
        loss, logits = train_step(self.model, self.optimizer, self.stats, x, y, self.lambda1, self.lambda2,
                                  r.precision)
        self.step_index += 1
        self.loss_sum += loss
        self.correct += (logits.argmax(-1) == y).sum(-1)
        finite = torch.isfinite(loss) & torch.isfinite(logits).flatten(1).all(1)
        self.first_bad_step.copy_(torch.where(finite | (self.first_bad_step >= 0), self.first_bad_step, self.step_index))

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "statistics": self.stats.state_dict(),
            "generators": [g.get_state() for g in self.generators],
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stats.load_state_dict(state["statistics"])
        for generator, saved in zip(self.generators, state["generators"]):
            generator.set_state(saved.cpu())


class _Stepper:
    """Runs ``group.step``: eagerly, or on a GPU as a CUDA graph captured after a few eager steps.

    A graph replays the kernels of one step without Python or launch overhead; everything that
    changes between steps (batch position, learning rate, statistics, random draws) lives in
    device tensors or registered generators, so the replayed step is the eager one.
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require

    def __init__(self, group: _Group, cuda_graph: bool):
        self.group, self.cuda_graph = group, cuda_graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif not self.cuda_graph:
            self.group.step()
        elif self.eager_steps < self.WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.group.step()
            torch.cuda.current_stream().wait_stream(side)
            self.eager_steps += 1
        else:
            torch.cuda.synchronize()
            # A capture that fails means the step synchronised with the host: a bug, raised as such.
            self.graph = torch.cuda.CUDAGraph()
            for generator in self.group.generators:
                self.graph.register_generator_state(generator)
            self.group.optimizer.zero_grad()
            with torch.cuda.graph(self.graph):
                self.group.step()
            self.graph.replay()  # capture records the step without running it


@torch.no_grad()
def _pn_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct test predictions (K, 2) at tau = 0 and PN tau = 1, on the device.

    The rule of evaluate.pn_predictions (which runs in NumPy for saved logits); tests check they agree.
    """
    log_p = logits.double().log_softmax(-1)
    log_mass = log_p.logsumexp(-2, keepdim=True)
    plain, pn = log_p.argmax(-1), (log_p - log_mass).argmax(-1)
    return torch.stack([(plain == labels).sum(-1), (pn == labels).sum(-1)], -1)


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
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    recipes: list[Recipe],
    device: str = "cpu",
    progress: Callable[[str], None] = print,
    checkpoint_dir: str | Path | None = None,
    names: list[str] | None = None,
    cuda_graph: bool | None = None,
    stop_after_epoch: int | None = None,
) -> list[TrainResult]:
    """Train K models on one training set as one fused network; each ends as if trained alone.

    The recipes may differ only in lambda1, lambda2 and seed (the variants and seeds of one
    imbalance factor). With ``checkpoint_dir``, the full state is saved after every epoch and a
    rerun resumes from the newest intact checkpoint of the same recipes and data; on the CPU the
    resumed run ends bit-identical to an uninterrupted one. ``cuda_graph`` (default: on a GPU)
    replays the step as a CUDA graph. ``stop_after_epoch`` trains only the first epochs of the recipe's
    schedule (the learning rate stays that of ``recipe.epochs``), for runs that cannot afford all of it.
    """
    names = names or [f"training {k}" for k in range(len(recipes))]
    _check_fusable(recipes)
    recipe = recipes[0]
    x_train = to_device_images(train_images, device)
    y_train = torch.as_tensor(train_labels, dtype=torch.int64, device=device)
    x_test = to_device_images(test_images, device)
    y_test = torch.as_tensor(test_labels, dtype=torch.int64, device=device)
    steps = len(y_train) // recipe.batch_size  # the last incomplete batch is dropped
    if steps == 0:
        raise RecipeError(f"batch_size {recipe.batch_size} is larger than the training split ({len(y_train)} images)")
    group = _Group(recipes, num_classes, x_train, y_train, device)
    k = len(recipes)

    metrics: list[list[dict]] = [[] for _ in recipes]
    best = [{selection: {"epoch": 0, "acc": -1.0, "logits": torch.zeros(0)} for selection in SELECTIONS}
            for _ in recipes]
    first_epoch = 1
    identity = checkpoint.fingerprint({"format": 2, "recipes": [dataclasses.asdict(r) for r in recipes]},
                                      train_images, train_labels)
    if checkpoint_dir is not None and (state := checkpoint.load_latest(checkpoint_dir, identity, device)):
        group.load_state_dict(state)
        metrics, best = state["metrics"], state["best"]
        first_epoch = state["epoch"] + 1
        progress(f"resuming {', '.join(names)} after epoch {state['epoch']} from {checkpoint_dir}")

    use_graph = torch.device(device).type == "cuda" and cuda_graph is not False  # CUDA graphs exist only there
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest (grouped) convolution once
    stepper = _Stepper(group, use_graph)
    report_every = max(1, steps // 10)
    trained_steps, training_started = 0, time.perf_counter()
    last_epoch = recipe.epochs if stop_after_epoch is None else min(stop_after_epoch, recipe.epochs)
    for epoch in range(first_epoch, last_epoch + 1):
        started = time.perf_counter()
        lr = learning_rate(epoch, recipe)
        group.start_epoch(lr)
        for step in range(steps):
            stepper()
            trained_steps += 1
            if (step + 1) % report_every == 0 and step + 1 < steps:
                left = (recipe.epochs - epoch + 1) * steps - step - 1
                eta = (time.perf_counter() - training_started) / trained_steps * left
                progress(f"  epoch {epoch}/{recipe.epochs} {_bar((step + 1) / steps)} step {step + 1}/{steps}  "
                         f"ETA {_clock(eta)}")
        bad_steps = group.first_bad_step.tolist()
        for member, bad in enumerate(bad_steps):
            if bad >= 0:
                r = recipes[member]
                raise NonFiniteError(
                    f"{names[member]}: non-finite loss or logits in epoch {epoch}, step {bad} of {steps} "
                    f"(lambda1={r.lambda1}, lambda2={r.lambda2}, lr={lr:.4g}); nothing was saved for this "
                    "training. Lower the learning rate or check the input data."
                )
        test_logits = predict_logits(group.model, x_test)  # (K, N, C)
        correct = _pn_correct(test_logits, y_test).tolist()
        losses, train_correct = group.loss_sum.tolist(), group.correct.tolist()
        seconds = time.perf_counter() - started
        for member in range(k):
            metrics[member].append({
                "epoch": epoch,
                "lr": lr,
                "train_loss": losses[member] / steps,
                "train_acc": 100.0 * train_correct[member] / (steps * recipe.batch_size),
                "test_acc": 100.0 * correct[member][0] / len(y_test),
                "test_acc_pn": 100.0 * correct[member][1] / len(y_test),
                "seconds": seconds,
            })
            for selection, column in SELECTIONS.items():
                if metrics[member][-1][column] > best[member][selection]["acc"]:
                    best[member][selection] = {"epoch": epoch, "acc": metrics[member][-1][column],
                                               "logits": test_logits[member].cpu()}
        if checkpoint_dir is not None:
            checkpoint.save(checkpoint_dir, epoch, {
                "fingerprint": identity, "epoch": epoch, **group.state_dict(), "metrics": metrics, "best": best,
            })
        for member in range(k):
            row = metrics[member][-1]
            progress(
                f"{names[member]} epoch {epoch}/{recipe.epochs}  lr {lr:.4f}  loss {row['train_loss']:.4f}  "
                f"train {row['train_acc']:.2f}%  test {row['test_acc']:.2f}%  test PN {row['test_acc_pn']:.2f}%  "
                f"({seconds:.1f} s{' for all ' + str(k) if k > 1 else ''}, "
                f"ETA {_clock(seconds * (recipe.epochs - epoch))})"
            )
    if first_epoch > last_epoch:  # every epoch was in the checkpoint: only the test logits are missing
        test_logits = predict_logits(group.model, x_test)
    logits = test_logits.cpu().numpy()
    results = []
    for member in range(k):
        stats = GradientStatistics(num_classes, device)
        stats.load_state_dict(group.stats.member(member))
        results.append(TrainResult(group.model.member(member), logits[member], metrics[member], stats, best[member]))
    return results


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
