"""Data-parallel training of one image-list model across processes: torchrun starts them, this module
makes the method run in them exactly as on one GPU.

- ``World``: this process's rank among ``size`` (from torchrun's environment), its device, and the collectives
  the trainer needs, each under a timeout (a rank that dies takes the job down with an error, never a hang);
- ``World.per_rank_batch``: each rank's share of the global batch (bagmar.data.image_data.rank_positions says which
  positions: the ranks' batches together are exactly the single-process batch, so the data order is the same);
- ``World.shard`` and ``World.gather_rows``: the test set split into consecutive shards, one a rank, and the
  shards' logits put back together in order on rank 0 (evaluation: benchmarks/distributed_eval.py measured it
  against rank 0 testing alone);
- ``GlobalStatistics``: BaGMar's statistics with every step's increments all-reduced (summed) before they are
  added, so every rank adjusts its logits with the same theta and phi, equal (to float rounding) to one process
  that sees the whole global batch.

Gradients are averaged over the ranks by torch's DistributedDataParallel; each rank's loss is the mean over its
own batch of B / N images, so the average is the global batch mean. BatchNorm stays per rank (the literature's
practice): in end-to-end training a rank normalises over its own B / N images, which differs from one process
over B; ``sync_batchnorm`` (GPUs only, bagmar.training.image_train.synchronised_batchnorm) normalises over the global batch
instead. A classifier re-training (stage 2) with ``frozen_batchnorm: frozen`` keeps BatchNorm in eval mode, so there
the ranks compute exactly the single-process numbers (to float rounding; tests/test_distributed.py); with the
released default (``train``) its BatchNorm is per rank, as in end-to-end training.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

import torch
import torch.distributed as dist

from .engine import StackedStatistics
from ..io import UserError


class DistributedError(UserError, RuntimeError):
    """A distributed setting that cannot train: the message says which and what to change."""


@dataclasses.dataclass(frozen=True)
class World:
    """One process of a data-parallel training (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that gathers the test logits and writes checkpoints and outputs."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """Each rank its own GPU (torchrun's LOCAL_RANK), whatever CUDA_VISIBLE_DEVICES leaves visible."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.distributed else device

    def per_rank_batch(self, batch_size: int) -> int:
        if batch_size % self.size:
            raise DistributedError(f"batch_size {batch_size} does not divide over {self.size} processes; the global "
                                   f"batch is the recipe's, so choose a batch size that is a multiple of {self.size}")
        return batch_size // self.size

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks, in place (a no-op for one process)."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def same_on_every_rank(self, value: int) -> bool:
        """Whether every rank holds this integer (one all-reduce of its value and its negation, each a max)."""
        if not self.distributed:
            return True
        extremes = torch.tensor([value, -value], dtype=torch.int64, device=self._device)
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        return int(extremes[0]) == -int(extremes[1])

    def broadcast_buffers(self, network: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every rank. DistributedDataParallel copies them
        only at the start of a forward, so after an epoch's last step each rank holds its own: without this the
        ranks would test with statistics other than the ones rank 0 saves."""
        if self.distributed:
            for buffer in network.buffers():
                dist.broadcast(buffer, 0)

    def shard(self, total: int, multiple: int = 1) -> range:
        """This rank's positions of ``total`` items: consecutive shards of ceil(total / size) rounded up to a
        ``multiple`` (the last shorter, or empty), so that the shards in rank order are the items in order, and
        with ``multiple`` the batch size a shard's batches are the single-process batches."""
        per_rank = self._per_rank(total, multiple)
        return range(min(total, self.rank * per_rank), min(total, (self.rank + 1) * per_rank))

    def gather_rows(self, rows: torch.Tensor, total: int, multiple: int = 1) -> torch.Tensor | None:
        """Every rank's ``rows`` (its shard's, ``shard(total, multiple)``) concatenated in rank order: the
        (total, ...) tensor on rank 0, None on the others. One all_gather (gloo and NCCL both have it), the shards
        padded to one size."""
        if not self.distributed:
            return rows
        padded = rows.new_zeros((self._per_rank(total, multiple), *rows.shape[1:]))
        padded[:len(rows)] = rows
        gathered = [torch.empty_like(padded) for _ in range(self.size)]
        dist.all_gather(gathered, padded)
        return torch.cat(gathered)[:total] if self.leader else None

    def _per_rank(self, total: int, multiple: int) -> int:
        """ceil(total / size), rounded up to a multiple of ``multiple``."""
        per_rank = -(-total // self.size)
        return -(-per_rank // multiple) * multiple

    @property
    def _device(self) -> str:
        """Where this rank's collectives run: its GPU under NCCL, the CPU under gloo."""
        return f"cuda:{self.local_rank}" if dist.get_backend() == "nccl" else "cpu"


def init_world(device: str, timeout_seconds: float = 600.0) -> World:
    """The World torchrun launched this process into (its RANK, WORLD_SIZE, LOCAL_RANK), with the process group up:
    NCCL on GPUs, gloo on CPUs. Without torchrun's environment: a world of one, no process group.

    ``timeout_seconds`` bounds every collective: a rank that dies or hangs ends the others' wait with an error.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_seconds))
    return world


class GlobalStatistics(StackedStatistics):
    """StackedStatistics whose every update is the sum over the ranks of their increments, as one process seeing
    the global batch would add them.

    A rank's loss is the mean over its B / N images, so its |dL/dz'| is N times the global mean's: each rank's
    gradients are divided by N, the increments (diagonal and mass; F's rows where kept) summed over the ranks in one
    all-reduce, then added on every rank. ``reduce=False`` skips the all-reduce (tests show that the ranks then
    drift apart); it is not a setting of any training.
    """

    def __init__(self, num_classes: int, device, world: World, members: int = 1, keep_matrix: bool | None = None,
                 reduce: bool = True):
        super().__init__(num_classes, device, members=members, keep_matrix=keep_matrix)
        self.world, self.reduce = world, reduce
        self._increment = StackedStatistics(num_classes, device, members=members, keep_matrix=keep_matrix)

    def update(self, grad: torch.Tensor, labels: torch.Tensor) -> None:
        increment = self._increment
        for tensor in (increment._diagonal, increment._mass, increment._f_by_class):
            if tensor is not None:
                tensor.zero_()
        rows = labels.reshape(self.members, -1) + self._first_row
        increment._add(grad.to(torch.float64) / self.world.size, labels, rows.reshape(-1))
        parts = [increment._diagonal.reshape(-1), increment._mass.reshape(-1)]
        if increment._f_by_class is not None:
            parts.append(increment._f_by_class.reshape(-1))
        packed = torch.cat(parts)
        if self.reduce:
            self.world.all_reduce(packed)
        diagonal, mass, *matrix = packed.split([p.numel() for p in parts])
        self._diagonal += diagonal.view_as(self._diagonal)
        self._mass += mass.view_as(self._mass)
        if matrix:
            self._f_by_class += matrix[0].view_as(self._f_by_class)
        self._accumulate()
