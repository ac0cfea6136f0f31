"""Training on an image-list data set (issue 15): a torchvision ResNet (bagmar.backbones), end to end (stage 1) or
as classifier re-training on a frozen feature model (stage 2), with any of the losses of the CIFAR runs.

The step is the CIFAR one (engine.train_step with loss.GradientStatistics's O(C) statistics, engine.LossTerms,
engine.SGD), on a group of one; the result is a train.TrainResult, saved in the same files, so evaluation, the
tables and the report read an image-list training exactly as a CIFAR one. What differs is the data: JPEGs
decoded and cropped by DataLoader workers (bagmar.image_data), colour jitter and normalisation on the device.

Checkpoints are written after every epoch, outside the job's outputs; a killed training resumes from the newest
one and ends with the same weights, bit for bit on the CPU (every random draw follows from the seed and epoch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset

from . import backbones, checkpoint

from .distributed import DistributedError, GlobalStatistics, World
from .engine import SGD, LossTerms, StackedStatistics, train_step
from .image_data import TestImages, TrainImages, epoch_order, prepare, test_loader, train_loader
from .image_lists import ImageList
from .loss import GradientStatistics
from .recipe import LOSS_SETTINGS, ImageListRecipe, RecipeError, cosine_learning_rate
from .train import NonFiniteError, TrainResult, _History, _Progress


class _Stacked(nn.Module):
    """A single network as a group of one, the layout engine.train_step works in: (1, B, ...) -> (1, B, C)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x[0])[None]


def build_network(recipe: ImageListRecipe, num_classes: int) -> tuple[backbones.Network, list[nn.Parameter]]:
    """The recipe's network, initialised from its seed, and the parameters it trains: all of them (stage 1), or
    the classifier only, on the stage-1 feature model (stage 2; the classifier starts from random weights)."""
    torch.manual_seed(recipe.seed)
    network = backbones.build(recipe.architecture, num_classes, recipe.width,
                              recipe.scale if recipe.loss == "ldam_drw" else None)
    if recipe.protocol == "end_to_end":
        return network, list(network.parameters())
    backbones.load_stage1(network, recipe.stage1, classifier=False)
    return network, backbones.freeze_backbone(network)


def train_image_list(
    root: str | Path,
    train_list: ImageList,
    test_list: ImageList,
    num_classes: int,
    recipe: ImageListRecipe,
    device: str = "cpu",
    progress: Callable[[str], None] = print,
    checkpoint_dir: str | Path | None = None,
    name: str = "training",
    workers: int = 0,
    keep_matrix: bool | None = None,
    stop_after_epoch: int | None = None,
    world: World = World(),
) -> TrainResult | None:
    """Train one network on ``train_list``'s images under ``root``; test after every epoch on ``test_list``.

    ``workers``: JPEG-decoding processes (the numbers do not depend on it); ``checkpoint_dir``: save every epoch
    and resume from the newest intact checkpoint; ``stop_after_epoch``: the first epochs of the schedule only;
    ``world``: this process's rank in a data-parallel training (bagmar.distributed; every rank calls this, each
    trains on its share of every global batch and tests its shard of the test set; rank 0 gathers the test logits,
    writes the checkpoints and returns the result, the others None).
    """
    labels = train_list.labels
    if len(labels) < recipe.batch_size:
        raise RecipeError(f"batch_size {recipe.batch_size} is larger than the training list ({len(labels)} images)")
    steps = len(labels) // recipe.batch_size  # the last incomplete batch is dropped
    device = world.device(device)
    network, trainable = build_network(recipe, num_classes)
    if recipe.sync_batchnorm and world.distributed:
        network = synchronised_batchnorm(network, device)
    network.to(device)
    model = _Stacked(DistributedDataParallel(network, device_ids=[world.local_rank] if "cuda" in device else None)
                     if world.distributed else network)
    optimizer = SGD(trainable, recipe.momentum, recipe.weight_decay, device)
    stats = (GlobalStatistics(num_classes, device, world, keep_matrix=keep_matrix) if world.distributed
             else StackedStatistics(num_classes, device, members=1, keep_matrix=keep_matrix))
    terms = LossTerms([recipe], np.bincount(labels, minlength=num_classes), device)
    train_images = TrainImages(root, train_list, recipe.seed, recipe.image_size, recipe.color_jitter)
    test_images = TestImages(root, test_list, recipe.image_size, recipe.resize_size)
    y_test = torch.as_tensor(test_list.labels, device=device)
    history = _History(1)
    saved = _Checkpoints(checkpoint_dir, recipe, train_list, test_list, stats.keeps_matrix, device, world)
    first_epoch = saved.restore(network, optimizer, stats, history, lambda epoch: progress(
        f"resuming {name} after epoch {epoch} from {checkpoint_dir}"))
    if not world.same_on_every_rank(first_epoch):  # each rank read its own newest checkpoint
        raise DistributedError(f"{name}: the processes found different newest checkpoints in {checkpoint_dir} (rank "
                               f"{world.rank} resumes at epoch {first_epoch}); every node must see the same "
                               "checkpoint directory (a shared file system, not a node's local disk)")
    report = _Progress(progress, [name], recipe.epochs, steps)
    last_epoch = recipe.epochs if stop_after_epoch is None else min(stop_after_epoch, recipe.epochs)
    loss_sum, correct = torch.zeros(1, device=device), torch.zeros(1, dtype=torch.int64, device=device)
    step_index, first_bad = (torch.zeros((), dtype=torch.int64, device=device) for _ in range(2))
    test_logits = None
    for epoch in range(first_epoch, last_epoch + 1):
        started, lr = time.perf_counter(), cosine_learning_rate(epoch, recipe)
        optimizer.lr.fill_(lr)
        terms.start_epoch(epoch)
        _train_mode(network, recipe)
        for tensor in (loss_sum, correct, step_index):
            tensor.zero_()
        first_bad.fill_(-1)
        order = epoch_order(labels, num_classes, recipe.seed, epoch, recipe.sampler, recipe.samples_per_class)
        for step, (images, y, jitter) in enumerate(train_loader(train_images, order, epoch, recipe.batch_size,
                                                                 workers, device, world)):
            x = prepare(images.to(device, non_blocking=True), recipe.mean, recipe.std,
                        jitter.to(device, non_blocking=True) if recipe.color_jitter else None)
            y = y.to(device, non_blocking=True)
            loss, logits = train_step(model, optimizer, stats, x[None], y[None], terms, recipe.precision)
            loss_sum += loss
            correct += (logits.argmax(-1) == y).sum(-1)
            step_index += 1
            finite = torch.isfinite(loss).all() & torch.isfinite(logits).all()  # read once an epoch, not per step
            first_bad.copy_(torch.where(finite | (first_bad >= 0), first_bad, step_index))
            report.step(epoch, step)
        # every rank stops if any rank saw a non-finite value (one host read an epoch); metrics of the global batch
        bad = int(first_bad)
        if int(world.all_reduce(torch.tensor([int(bad >= 0)], device=device))[0]):
            settings = ", ".join(f"{key}={getattr(recipe, key)}" for key in LOSS_SETTINGS[recipe.loss])
            where = f"step {bad} of {steps}" if bad >= 0 else f"a step of another rank than {world.rank}"
            raise NonFiniteError(f"{name}: non-finite loss or logits in epoch {epoch}, {where} "
                                 f"({recipe.loss}: {settings}, lr={lr:.4g}); nothing was saved for this training. "
                                 "Lower the learning rate or check the input data.")
        world.all_reduce(correct)
        world.all_reduce(loss_sum).div_(world.size)  # the mean over ranks of their batch means
        evaluated = time.perf_counter()
        world.broadcast_buffers(network)  # every rank tests with the BatchNorm statistics that rank 0 saves
        test_logits = predict(network, test_images, recipe, workers, device, world)  # every rank its shard
        if world.leader:  # one writer; the others wait at the barrier
            test_logits = test_logits[None]
            history.add(epoch, lr, loss_sum, correct, tuple(t[None] for t in network.classifier_terms()), test_logits,
                        y_test, steps, recipe.batch_size, started, evaluated)
            saved.save(epoch, network, optimizer, stats, history)
            report.epoch(epoch, history)
        world.barrier()
    if first_epoch > last_epoch:  # every epoch was in the checkpoint: only the test logits are missing
        test_logits = predict(network, test_images, recipe, workers, device, world)
        test_logits = None if test_logits is None else test_logits[None]
    if not world.leader:
        return None
    single = GradientStatistics(num_classes, device, keep_matrix=stats.keeps_matrix)
    single.load_state_dict(stats.member(0))
    network.eval()
    return TrainResult(network, test_logits[0].cpu().numpy(), history.metrics[0], single, history.best[0])


def synchronised_batchnorm(network: backbones.Network, device: str) -> backbones.Network:
    """The network with every BatchNorm a SyncBatchNorm (the same parameters and buffers, so the same state-dict
    keys): BatchNorm statistics over the global batch, as one process would compute them, at one all-reduce per
    layer per step. torch implements it for CUDA only."""
    if torch.device(device).type != "cuda":
        raise DistributedError(f"sync_batchnorm needs GPUs (torch's SyncBatchNorm runs on CUDA only); this training "
                               f"runs on {device}: set sync_batchnorm: false, or train on GPUs")
    return nn.SyncBatchNorm.convert_sync_batchnorm(network)


def _train_mode(network: backbones.Network, recipe: ImageListRecipe) -> None:
    network.train()
    if recipe.protocol == "classifier_retraining":
        backbones.freeze_backbone(network)  # the feature model's BatchNorm stays in eval mode


@torch.no_grad()
def predict(network: backbones.Network, images: TestImages, recipe: ImageListRecipe, workers: int,
            device: torch.device | str, world: World = World()) -> torch.Tensor | None:
    """Plain logits (N, C) of the test images (resize, centre crop, normalise), float32.

    In a data-parallel training every rank tests its consecutive shard of the test set, in whole batches, and
    rank 0 gathers the logits in order (None on the others): the same batches as one process, and N ranks test
    about N times as fast as rank 0 alone (benchmarks/distributed_eval.py); nobody waits at a barrier meanwhile.
    """
    network.eval()
    shard = world.shard(len(images), multiple=recipe.batch_size)  # whole batches: one process's batches
    outputs = [network(prepare(x.to(device, non_blocking=True), recipe.mean, recipe.std)).float()
               for x, _ in test_loader(Subset(images, shard), recipe.batch_size, workers, device)]
    logits = torch.cat(outputs) if outputs else torch.zeros((0, network.num_classes), device=device)
    return world.gather_rows(logits, len(images), multiple=recipe.batch_size)


def _list_digest(image_list: ImageList) -> np.ndarray:
    """The list's images and labels, as bytes a checkpoint's fingerprint can take."""
    digest = hashlib.sha256("\n".join(image_list.images).encode())
    digest.update(np.ascontiguousarray(image_list.labels).tobytes())
    return np.frombuffer(digest.digest(), dtype=np.uint8)


class _Checkpoints:
    """Per-epoch checkpoints of one image-list training (checkpoint.py), or none without a directory."""

    def __init__(self, directory, recipe: ImageListRecipe, train_list: ImageList, test_list: ImageList,
                 keep_matrix: bool, device, world: World):
        self.directory, self.device, self.world = directory, device, world
        fields = dataclasses.asdict(recipe)
        if not recipe.sync_batchnorm:  # a setting newer than format 1: left out at its default, so that checkpoints
            del fields["sync_batchnorm"]  # written before it still resume
        settings = {"format": 1, "kind": "image_list", "recipe": fields, "keep_matrix": keep_matrix}
        if recipe.stage1 is not None:  # other stage-1 weights under the same path are another training
            settings["stage1_sha256"] = hashlib.sha256(Path(recipe.stage1).read_bytes()).hexdigest()
        self.identity = checkpoint.fingerprint(settings, _list_digest(train_list), _list_digest(test_list))

    def restore(self, network, optimizer: SGD, stats: StackedStatistics, history: _History,
                announce: Callable[[int], None]) -> int:
        """Load the newest intact checkpoint of this training; the first epoch still to train."""
        state = self.directory is not None and checkpoint.load_latest(self.directory, self.identity, self.device)
        if not state:
            return 1
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stats.load_state_dict(state["statistics"])
        history.metrics, history.best = state["metrics"], state["best"]
        announce(state["epoch"])
        return state["epoch"] + 1

    def save(self, epoch: int, network, optimizer: SGD, stats: StackedStatistics, history: _History) -> None:
        """Rank 0's: every rank holds the same weights, optimizer state and statistics."""
        if self.directory is not None and self.world.leader:
            checkpoint.save(self.directory, epoch, {
                "fingerprint": self.identity, "epoch": epoch, "model": network.state_dict(),
                "optimizer": optimizer.state_dict(), "statistics": stats.state_dict(),
                "metrics": history.metrics, "best": history.best})
