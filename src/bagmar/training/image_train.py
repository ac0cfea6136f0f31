"""Training on an image-list data set: a torchvision ResNet (bagmar.method.backbones), end to end (stage 1) or
as classifier re-training on a frozen feature model (stage 2), with any of the losses of the CIFAR runs.

The step is the CIFAR one (engine.train_step with loss.GradientStatistics's O(C) statistics, engine.LossTerms,
engine.SGD), on a group of one, and so is the loop (bagmar.training.loop: checkpoints and resume, history, progress, the
non-finite check); the result is a loop.TrainResult, saved in the same files, so evaluation, the tables and the
report read an image-list training exactly as a CIFAR one. What differs is where the steps come from: JPEGs
decoded and augmented by DataLoader workers (bagmar.data.image_data), normalisation on the device, and
in a data-parallel training each rank's share of every global batch (bagmar.training.distributed).

A killed training resumes from its newest checkpoint and ends with the same weights, bit for bit on the CPU
(every random draw follows from the seed and epoch).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Subset

from ..method import backbones
from . import checkpoint
from ..io import atomic_write

from .distributed import DistributedError, GlobalStatistics, World
from .engine import SGD, LossTerms, StackedStatistics, train_step
from ..data.image_data import TestImages, TrainImages, epoch_order, prepare, test_loader, train_loader
from ..data.image_lists import ImageList
from .loop import TrainResult, run, steps_per_epoch
from ..config.recipe import STAGE1_RANDOM, ImageListRecipe, cosine_learning_rate


class _Stacked(nn.Module):
    """A single network as a group of one, the layout engine.train_step works in: (1, B, ...) -> (1, B, C)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x[0])[None]


def build_network(recipe: ImageListRecipe, num_classes: int) -> tuple[backbones.Network, list[nn.Parameter]]:
    """The recipe's network, initialised from its seed, and the parameters it trains: all of them (end to end),
    the classifier only on the stage-1 feature model (classifier re-training), or the last residual block and the
    classifier on the pretrained network (last-block fine-tuning). The classifier starts from random weights
    (another class count than the weights'); stage1 "random" keeps the seed's initialisation throughout."""
    torch.manual_seed(recipe.seed)
    network = backbones.build(recipe.architecture, num_classes, recipe.width,
                              recipe.scale if recipe.loss == "ldam_drw" else None)
    if recipe.protocol == "end_to_end":
        return network, list(network.parameters())
    if recipe.stage1 != STAGE1_RANDOM:
        backbones.load_stage1(network, recipe.stage1, classifier=False)
    return network, backbones.freeze(network, recipe.protocol, recipe.frozen_batchnorm)


def train_image_list(
    root: str | Path, train_list: ImageList, test_list: ImageList, num_classes: int, recipe: ImageListRecipe,
    device: str = "cpu", progress: Callable[[str], None] = print, checkpoint_dir: str | Path | None = None,
    name: str = "training", workers: int = 0, keep_matrix: bool | None = None, stop_after_epoch: int | None = None,
    world: World = World(), code: dict | None = None, val_list: ImageList | None = None,
) -> TrainResult | None:
    """Train one network on ``train_list``'s images under ``root``; test after every epoch on ``test_list``, and
    the final model once on ``val_list`` (a validation split, where the data set has one: its logits are the
    result's ``val_logits``, an ImageListResult; their cost is the job's, one pass of the validation images,
    printed).

    ``workers``: JPEG-decoding processes (the numbers do not depend on it); ``checkpoint_dir``: save every epoch
    and resume from the newest intact checkpoint; ``stop_after_epoch``: the first epochs of the schedule only;
    ``world``: this process's rank in a data-parallel training (bagmar.training.distributed; every rank calls this, each
    trains on its share of every global batch and tests its shard of the test set; rank 0 gathers the test logits,
    writes the checkpoints and returns the result, the others None); ``code``: the fingerprint of the code that
    trains, so that a checkpoint of other code is not resumed.
    """
    source = _ImageListSteps(root, train_list, test_list, num_classes, recipe, world.device(device), workers,
                             keep_matrix, world, name, checkpoint_dir)
    identity = _fingerprint(recipe, train_list, test_list, source.stats.keeps_matrix, code)
    results = run(source, [name], identity, progress, checkpoint_dir, stop_after_epoch)
    if val_list is None or stop_after_epoch is not None:
        return None if results is None else results[0]
    started = time.perf_counter()
    val_logits = source.validation_logits(val_list)  # every rank its shard; rank 0 gathers
    if results is None:
        return None
    progress(f"{name}: validation logits of the final model, {len(val_list.images)} images, "
             f"{time.perf_counter() - started:.2f} s")
    return ImageListResult(**vars(results[0]), val_logits=val_logits.cpu().numpy())


@dataclasses.dataclass
class ImageListResult(TrainResult):
    """A training's result with its final model's logits on a validation list (V, C), which ``save`` writes as
    ``val_logits`` beside the test outputs: the logits, the labels, and the final epoch and classifier terms as the
    test file holds them (tau-normalisation reads them), without the best epochs."""

    val_logits: np.ndarray | None = None

    def save(self, *, val_logits: str | None = None, val_labels: np.ndarray | None = None, **files) -> None:
        super().save(**files)
        if val_logits is None:
            return
        if self.val_logits is None or val_labels is None:
            raise ValueError("val_logits asked for, but this training has no validation logits or labels")
        bias, norms = self.model.classifier_terms()
        with atomic_write(val_logits, "wb") as f:
            np.savez(f, logits=self.val_logits, labels=np.asarray(val_labels, dtype=np.int64),
                     final_epoch=np.int64(self.metrics[-1]["epoch"]), classifier_bias=bias.cpu().numpy(),
                     classifier_weight_norm=norms.cpu().numpy())


class _ImageListSteps:
    """One network's steps (bagmar.training.loop.Steps): batches of JPEGs decoded by DataLoader workers and prepared on the
    device. In a data-parallel training, this rank's share of each global batch, its gradients averaged over the
    ranks (DistributedDataParallel) and the statistics' increments summed (distributed.GlobalStatistics)."""

    cuda_graph = "off"

    def __init__(self, root: str | Path, train_list: ImageList, test_list: ImageList, num_classes: int,
                 recipe: ImageListRecipe, device: str, workers: int, keep_matrix: bool | None, world: World,
                 name: str, checkpoint_dir: str | Path | None):
        self.labels = train_list.labels
        self.steps = steps_per_epoch(len(self.labels), recipe.batch_size, "training list")
        self.recipes, self.num_classes, self.device, self.workers = [recipe], num_classes, device, workers
        self.world, self.leader, self.name, self.checkpoint_dir = world, world.leader, name, checkpoint_dir
        self.network, trainable = build_network(recipe, num_classes)
        if recipe.sync_batchnorm and world.distributed:
            self.network = synchronised_batchnorm(self.network, device)
        self.network.to(device)
        replicated = (DistributedDataParallel(self.network, device_ids=[world.local_rank] if "cuda" in device else None)
                      if world.distributed else self.network)
        self.stacked = _Stacked(replicated)  # what engine.train_step trains
        self.optimizer = SGD(trainable, recipe.momentum, recipe.weight_decay, device)
        self.stats = (GlobalStatistics(num_classes, device, world, keep_matrix=keep_matrix) if world.distributed
                      else StackedStatistics(num_classes, device, members=1, keep_matrix=keep_matrix))
        self.terms = LossTerms([recipe], np.bincount(self.labels, minlength=num_classes), device)
        self.train_images = TrainImages(root, train_list, recipe.seed, recipe.image_size, recipe.color_jitter,
                                        recipe.augment, recipe.mean)
        self.train_mean, self.train_std = self.train_images.normalisation(recipe.mean, recipe.std)
        self.test_images = TestImages(root, test_list, recipe.image_size, recipe.resize_size)
        self.test_labels = torch.as_tensor(test_list.labels, device=device)
        self.loss_sum, self.correct = torch.zeros(1, device=device), torch.zeros(1, dtype=torch.int64, device=device)
        self.step_index, self.first_bad = (torch.zeros((), dtype=torch.int64, device=device) for _ in range(2))

    def start_epoch(self, epoch: int) -> float:
        recipe = self.recipes[0]
        lr = cosine_learning_rate(epoch, recipe)
        self.optimizer.lr.fill_(lr)
        self.terms.start_epoch(epoch)
        _train_mode(self.network, recipe)
        for tensor in (self.loss_sum, self.correct, self.step_index):
            tensor.zero_()
        self.first_bad.fill_(-1)
        return lr

    def run_epoch(self, epoch: int) -> Iterator[int]:
        recipe, device = self.recipes[0], self.device
        order = epoch_order(self.labels, self.num_classes, recipe.seed, epoch, recipe.sampler, recipe.samples_per_class)
        for step, (images, y, jitter) in enumerate(train_loader(self.train_images, order, epoch, recipe.batch_size,
                                                                 self.workers, device, self.world)):
            x = prepare(images.to(device, non_blocking=True), self.train_mean, self.train_std,
                        jitter.to(device, non_blocking=True) if self.train_images.jitters_on_device else None)
            y = y.to(device, non_blocking=True)
            loss, logits = train_step(self.stacked, self.optimizer, self.stats, x[None], y[None], self.terms,
                                      recipe.precision)
            self.loss_sum += loss
            self.correct += (logits.argmax(-1) == y).sum(-1)
            self.step_index += 1
            finite = torch.isfinite(loss).all() & torch.isfinite(logits).all()  # read once an epoch, not per step
            self.first_bad.copy_(torch.where(finite | (self.first_bad >= 0), self.first_bad, self.step_index))
            yield step

    def non_finite(self) -> list[str | None]:
        """Every rank stops if any rank saw a non-finite value (one host read and one all-reduce an epoch)."""
        bad = int(self.first_bad)
        if not int(self.world.all_reduce(torch.tensor([int(bad >= 0)], device=self.device))[0]):
            return [None]
        return [f"step {bad} of {self.steps}" if bad >= 0 else f"a step of another rank than {self.world.rank}"]

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batches': correct predictions summed over the ranks, and the mean over ranks of their batch
        means."""
        self.world.all_reduce(self.correct)
        self.world.all_reduce(self.loss_sum).div_(self.world.size)
        return self.loss_sum, self.correct

    def test_logits(self) -> torch.Tensor | None:
        """Every rank tests its shard with the BatchNorm statistics that rank 0 saves; rank 0 gathers them."""
        self.world.broadcast_buffers(self.network)
        logits = predict(self.network, self.test_images, self.recipes[0], self.workers, self.device, self.world)
        return None if logits is None else logits[None]

    def classifier_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(t[None] for t in self.network.classifier_terms())

    def validation_logits(self, val_list: ImageList) -> torch.Tensor | None:
        """The model as it is now (the final one, once the loop is done) on a validation list, tested as the test
        list is (resize, centre crop); rank 0 gathers them, the other ranks get None."""
        recipe = self.recipes[0]
        self.world.broadcast_buffers(self.network)
        images = TestImages(self.train_images.root, val_list, recipe.image_size, recipe.resize_size)
        return predict(self.network, images, recipe, self.workers, self.device, self.world)

    def model(self, k: int) -> nn.Module:
        self.network.eval()
        return self.network

    def resumes_at(self, epoch: int) -> None:
        if not self.world.same_on_every_rank(epoch):  # each rank read its own newest checkpoint
            raise DistributedError(f"{self.name}: the processes found different newest checkpoints in "
                                   f"{self.checkpoint_dir} (rank {self.world.rank} resumes at epoch {epoch}); every "
                                   "node must see the same checkpoint directory (a shared file system, not a node's "
                                   "local disk)")

    def end_epoch(self) -> None:
        self.world.barrier()  # the other ranks wait for rank 0's checkpoint

    def state_dict(self) -> dict:
        """Rank 0's is saved: every rank holds the same weights, optimizer state and statistics."""
        return {"model": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "statistics": self.stats.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stats.load_state_dict(state["statistics"])


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
    if recipe.protocol != "end_to_end":
        backbones.freeze(network, recipe.protocol, recipe.frozen_batchnorm)  # BatchNorm as released (train), or frozen


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


def _fingerprint(recipe: ImageListRecipe, train_list: ImageList, test_list: ImageList, keep_matrix: bool,
                 code: dict | None) -> str:
    """What a checkpoint of this training belongs to (checkpoint.fingerprint): settings, lists, stage-1 weights, and
    the code that trains (where the workflow gives it)."""
    settings = {"format": 2, "kind": "image_list", "recipe": dataclasses.asdict(recipe), "keep_matrix": keep_matrix,
                **({"code": code} if code else {})}
    if recipe.stage1 not in (None, STAGE1_RANDOM):  # other stage-1 weights under the same path are another training
        settings["stage1_sha256"] = hashlib.sha256(Path(recipe.stage1).read_bytes()).hexdigest()
    return checkpoint.fingerprint(settings, _list_digest(train_list), _list_digest(test_list))
