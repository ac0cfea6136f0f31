"""The engine that runs the method fast: K trainings of one split as one network, one step per kernel launch.

The method (``loss``: the statistics, adjusted logits and loss of one model; ``model.ResNet32``; ``train``: the
recipe and its loop) says what is computed. This module says how it runs quickly, and changes no number:

- ``FusedResNet32`` (training.fused_network): K ResNet-32s as one network of grouped convolutions, so one GPU kernel
  serves K models;
- ``StackedStatistics``: K models' gradient statistics in single tensors, one ``index_add_`` per step;
- ``SGD``: torch.optim.SGD's update with the learning rate in a device tensor (no host sync);
- ``FusedGroup``: every tensor one step reads or writes, so that ``Stepper`` can replay the step as a CUDA graph;
- ``predict_logits`` and ``pn_correct``: the per-epoch test pass, on the device.

A single training is a group of one. tests/test_fused.py checks that every member of a group trains as it would
alone and that the step never synchronises with the host. The fused and lone networks run different kernels, whose
float32 rounding training amplifies chaotically (benchmarks/fused_drift.py records the curve), so the equivalence
is checked in float64 (recipe ``precision: float64``), where the two agree to rounding of double precision.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..method import baselines
from ..data.augment import test_transform, train_augment
from ..method.loss import GradientStatistics, adjusted_logits, cross_entropy_and_gradient
from ..method.model import ResNet32
from .fused_network import FusedResNet32
from ..config.recipe import is_user_loss, user_loss


# The dtype of the weights and the loss for each recipe precision. bfloat16 autocasts the forward pass only, over
# float32 weights; float64 trains in double precision throughout (slow: for checking equivalences, where the
# kernels' float32 rounding would otherwise hide a difference of method).
PRECISION_DTYPES = {"float32": torch.float32, "bfloat16": torch.float32, "float64": torch.float64}


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
    dtype = next(model.parameters()).dtype  # float32, or float64 for a training run in float64
    model.eval()
    outputs = []
    for i in range(0, len(images), batch_size):
        x = test_transform(images[i : i + batch_size]).to(dtype)
        outputs.append(model(x.expand(members, *x.shape)) if members else model(x))
    model.train()
    return torch.cat(outputs, dim=-2).float()


class StackedStatistics(GradientStatistics):
    """K models' loss.GradientStatistics packed into single tensors: one ``index_add_`` per step for all K.

    theta and phi are (K, C) (F, where kept, (K, C, C)); ``update`` takes (K, B, C) gradients with (K, B) labels. The
    arithmetic is loss.GradientStatistics's, on rows offset by model; ``member(k)`` is model k's set in
    the single-model layout, and tests/test_fused.py checks K stacked sets against K single ones.
    """

    def __init__(self, num_classes: int, device: torch.device | str, members: int, keep_matrix: bool | None = None):
        self.members = members
        self._allocate((members,), num_classes, device, keep_matrix)
        self._first_row = torch.arange(0, members * num_classes, num_classes, device=device)[:, None]  # per model

    def update(self, grad: torch.Tensor, labels: torch.Tensor) -> None:
        """grad: |dL/dz'| of each model's batch-mean loss, (K, B, C); labels: (K, B)."""
        rows = labels.reshape(self.members, -1) + self._first_row
        self._add(grad, labels, rows.reshape(-1))
        self._accumulate()

    def member(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's statistics, shaped as a single model's state_dict."""
        return {name: value[k] for name, value in self.state_dict().items()}


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
        self.lr = torch.zeros((), dtype=self.params[0].dtype, device=device)
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


class LossTerms:
    """Each member's loss as numbers of one formula, so that K models of different methods train in one step.

    Member k trains on the cross-entropy, weighted by class_weights[k], of
        z + lambda1[k] log(theta_k + eps) - lambda2[k] log(phi_k[y] + eps)   (BaGMar, loss.adjusted_logits)
          + tau[k] log(pi)                                                    (logit adjustment, baselines)
          - target_margins[k, y] at the target class                          (LDAM, baselines)
    Every term a member's method does not use is exactly zero (and its weights exactly one), which leaves
    the logits unchanged bit for bit, so each member gets the numbers of its own method alone. A member whose
    loss is a function of the user's own (``module:function``, recipe.user_loss) trains in the same network on
    that function of its own logits instead (``own``: member -> function).
    """

    def __init__(self, recipes: list, train_counts: np.ndarray, device: torch.device | str):
        k, c = len(recipes), len(train_counts)
        as_tensor = functools.partial(torch.tensor, dtype=torch.float64, device=device)
        self.recipes = recipes
        self.lambda1 = as_tensor([r.lambda1 for r in recipes])
        self.lambda2 = as_tensor([r.lambda2 for r in recipes])
        # which methods the group holds: the step applies only their terms (a term no member uses is zero
        # for all, so leaving it out changes no number, and keeps a BaGMar-only step as short as before)
        adjusted = self.adjusts = any(r.loss == "logit_adjusted" for r in recipes)
        self.ldam = any(r.loss == "ldam_drw" for r in recipes)
        self.tau = as_tensor([r.tau if r.loss == "logit_adjusted" else 0.0 for r in recipes])
        self.log_prior = as_tensor(baselines.log_prior(train_counts) if adjusted else np.zeros(c))
        margins, drw = np.zeros((k, c)), np.ones((k, c))
        for member, r in enumerate(recipes):
            if r.loss == "ldam_drw":
                margins[member] = r.scale * baselines.ldam_margins(train_counts, r.max_margin)
                drw[member] = baselines.class_balanced_weights(train_counts, r.beta)
        # float64 here; each loss rounds them to the dtype it computes in (loss.loss_dtype)
        self.target_margins = as_tensor(margins)
        self.drw_weights = as_tensor(drw)
        self.class_weights = torch.ones(k, c, dtype=torch.float64, device=device)
        self.own = {member: user_loss(r.loss) for member, r in enumerate(recipes) if is_user_loss(r.loss)}

    def start_epoch(self, epoch: int) -> None:
        """LDAM-DRW members switch to their class-balanced weights once their deferred epoch has come
        (a function of the epoch alone, so a resumed training needs nothing saved for it)."""
        on = [r.loss == "ldam_drw" and baselines.drw_active(epoch, r.epochs, r.drw_after) for r in self.recipes]
        self.class_weights.copy_(torch.where(torch.tensor(on, device=self.drw_weights.device)[:, None],
                                             self.drw_weights, torch.ones_like(self.drw_weights)))


def group_loss(logits: torch.Tensor, labels: torch.Tensor, stats: StackedStatistics,
               terms: LossTerms) -> tuple[torch.Tensor, torch.Tensor]:
    """Every member's loss (K,) and |dL/dz'| (K, B, C) for logits (K, B, C): the methods' own functions,
    applied with each member's numbers (LossTerms)."""
    adjusted = adjusted_logits(logits, labels, stats, terms.lambda1, terms.lambda2)
    if terms.adjusts:
        adjusted = baselines.logit_adjusted_logits(adjusted, terms.log_prior, terms.tau)
    if terms.ldam:
        adjusted = baselines.ldam_logits(adjusted, labels, terms.target_margins)
    loss, grad = cross_entropy_and_gradient(adjusted, labels, terms.class_weights if terms.ldam else None)
    return own_losses(logits, labels, loss, grad, terms.own) if terms.own else (loss, grad)


def own_losses(logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor, grad: torch.Tensor,
               own: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss`` (K,) and ``grad`` (K, B, C) with the members of ``own`` (member -> the user's function) replaced:
    the function's value on that member's (B, C) logits, and its |dL/dz| by autograd (for the statistics)."""
    losses, grads = list(loss.unbind(0)), list(grad.unbind(0))
    for member, function in own.items():
        z = logits[member].to(loss.dtype)
        value = function(z, labels[member]).reshape(())
        (gradient,) = torch.autograd.grad(value, z, retain_graph=True)
        losses[member], grads[member] = value.to(loss.dtype), gradient.detach().abs().to(grad.dtype)
    return torch.stack(losses), torch.stack(grads)


def train_step(model: nn.Module, optimizer: SGD, stats: StackedStatistics, images: torch.Tensor,
               labels: torch.Tensor, terms: LossTerms, precision: str = "float32") -> tuple[torch.Tensor, torch.Tensor]:
    """One SGD step on each member's loss, then the statistics update (SPEC §4). Never syncs with the host.

    The one implementation of the step: the CPU runs it eagerly, a GPU replays it as a CUDA
    graph. images (K, B, 3, H, W) for a FusedResNet32 of K models (K = 1 for a single training).
    Returns the detached per-model losses (K,) and logits (K, B, C).
    """
    # no autocast weight cache: a CUDA graph would replay casts of stale weights
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16", cache_enabled=False):
        logits = model(images)
    loss, grad = group_loss(logits, labels, stats, terms)
    optimizer.zero_grad()
    loss.sum().backward()  # each model's gradient is its own loss's: they share no parameters
    optimizer.step()
    stats.update(grad, labels)
    return loss.detach(), logits.detach()


class FusedGroup:
    """Everything one step reads or writes, in tensors that stay put, so a CUDA graph can replay it.

    Each model has its own generator, seeded with its recipe's seed, which draws its data order and
    its augmentation exactly as a single training with that seed would.
    """

    def __init__(self, recipes: list, num_classes: int, x_train: torch.Tensor, y_train: torch.Tensor,
                 device: torch.device | str, keep_matrix: bool | None = None):
        recipe = recipes[0]
        members = []
        for r in recipes:
            torch.manual_seed(r.seed)  # each model's initialisation, as train() alone would draw it
            members.append(ResNet32(num_classes, r.width, cosine_scale=r.scale if r.loss == "ldam_drw" else None))
        # float64 (precision: float64) casts the float32 initialisation exactly: the same models, in double precision
        self.model = FusedResNet32.from_members(members).to(device, PRECISION_DTYPES[recipe.precision])
        if torch.device(device).type == "cuda":  # cuDNN's fast layout; CPU kernels prefer NCHW
            self.model = self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest (grouped) convolution once
        self.optimizer = SGD(self.model.parameters(), recipe.momentum, recipe.weight_decay, device)
        self.stats = StackedStatistics(num_classes, device, members=len(recipes), keep_matrix=keep_matrix)
        self.generators = [torch.Generator(device).manual_seed(r.seed) for r in recipes]
        self.terms = LossTerms(recipes, np.bincount(y_train.cpu().numpy(), minlength=num_classes), device)
        self.recipe, self.x_train, self.y_train = recipe, x_train, y_train
        k, n = len(recipes), len(y_train)
        self.order = torch.zeros(k, n, dtype=torch.int64, device=device)
        self.offsets = torch.arange(recipe.batch_size, device=device)
        self.step_index = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros(k, device=device)
        self.correct = torch.zeros(k, dtype=torch.int64, device=device)
        self.first_bad_step = torch.full((k,), -1, dtype=torch.int64, device=device)  # read once per epoch

    def start_epoch(self, epoch: int, lr: float) -> None:
        self.optimizer.lr.fill_(lr)
        self.terms.start_epoch(epoch)
        for k, generator in enumerate(self.generators):
            self.order[k] = torch.randperm(len(self.y_train), generator=generator, device=self.order.device)
        for tensor in (self.step_index, self.loss_sum, self.correct):
            tensor.zero_()
        self.first_bad_step.fill_(-1)

    def step(self) -> None:
        r = self.recipe
        batch = self.order.index_select(1, self.step_index * r.batch_size + self.offsets)  # (K, B)
        x = torch.stack([
            train_augment(self.x_train[batch[k]], g, padding=r.padding, cutout_size=r.cutout_size, policy=r.autoaugment)
            for k, g in enumerate(self.generators)
        ]).to(self.optimizer.lr.dtype)  # float32 images, or exactly the same images in float64
        y = self.y_train[batch]
        loss, logits = train_step(self.model, self.optimizer, self.stats, x, y, self.terms, r.precision)
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


class Stepper:
    """Runs ``group.step``: eagerly, or on a GPU as a CUDA graph captured after a few eager steps.

    A graph replays the kernels of one step without Python or launch overhead; everything that
    changes between steps (batch position, learning rate, statistics, random draws) lives in
    device tensors or registered generators, so the replayed step is the eager one.

    A capture or first replay that fails (a step that synchronises with the host, a driver or
    torch that cannot capture it) costs no step and no run: ``log`` gets one line saying why, the
    step is run eagerly from the state it would have started from, and so is every later one.
    ``status`` says how the steps run: "off", "warming up", "captured" or "failed: <why>".
    """

    WARMUP_STEPS = 3  # eager steps on a side stream before capture, as CUDA graphs require

    def __init__(self, group: FusedGroup, cuda_graph: bool, log: Callable[[str], None] = print):
        self.group, self.log = group, log
        self.graph: torch.cuda.CUDAGraph | None = None
        self.eager_steps = 0
        self.status = "warming up" if cuda_graph else "off"

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.status != "warming up":
            self.group.step()
        elif self.eager_steps < self.WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.group.step()
            torch.cuda.current_stream().wait_stream(side)
            self.eager_steps += 1
        else:
            self._capture()

    def _capture(self) -> None:
        """Capture the step and replay it once (capture records the step without running it)."""
        torch.cuda.synchronize()
        stream, generators = torch.cuda.current_stream(), self._generators()
        before = [generator.clone_state() for generator in generators]
        try:
            graph = torch.cuda.CUDAGraph()
            for generator in self.group.generators:
                graph.register_generator_state(generator)
            self.group.optimizer.zero_grad()
            with torch.cuda.graph(graph):
                self.group.step()
            graph.replay()
        except Exception as error:  # whatever the failure, the eager step trains on
            # A failed capture can leave a generator marked as capturing, a replay that did not launch its offset
            # advanced, and the capture stream current: back to where the step would have started.
            for generator, state in zip(generators, before):
                generator.graphsafe_set_state(state)
            torch.cuda.set_stream(stream)
            self.status = f"failed: {_reason(error)}"
            self.log(f"CUDA graph capture failed ({_reason(error)}); training on with the eager step")
            self.group.step()
        else:
            self.graph, self.status = graph, "captured"

    def _generators(self) -> list[torch.Generator]:
        """The CUDA generators a capture registers: the group's, and the device's default one."""
        device = self.group.optimizer.lr.device
        default = [torch.cuda.default_generators[device.index]] if device.type == "cuda" else []
        return [g for g in (*self.group.generators, *default) if g.device.type == "cuda"]


def _reason(error: BaseException) -> str:
    """The first exception of a chain (a capture that ends in error reports its own on top), on one line."""
    while error.__context__ is not None:
        error = error.__context__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


@torch.no_grad()
def pn_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Correct test predictions (K, 2) at tau = 0 and PN tau = 1, on the device.

    The rule of evaluate.pn_predictions (which runs in NumPy for saved logits); tests check they agree.
    """
    log_p = logits.double().log_softmax(-1)
    log_mass = log_p.logsumexp(-2, keepdim=True)
    plain, pn = log_p.argmax(-1), (log_p - log_mass).argmax(-1)
    return torch.stack([(plain == labels).sum(-1), (pn == labels).sum(-1)], -1)
