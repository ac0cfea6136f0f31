"""One rank of a data-parallel image-list training, for tests/test_distributed.py (started by torchrun).

usage: torchrun --standalone --nproc_per_node N tests/ddp_worker.py ROOT STAGE1 OUT_DIR [--no-reduce] [--kill R:E:S]
       [--end-to-end] [--own-checkpoints R]

Trains tests/test_distributed.py's recipe (a classifier re-training on STAGE1's frozen ResNet-10) on the miniature
under ROOT, and writes OUT_DIR/rank<r>.pt: theta and phi after every step, the image indices of every batch, and
(rank 0) the final weights and test logits. The recording wraps functions from outside the package, as tests/resume_worker.py does.
--no-reduce: the ranks do not all-reduce their statistics (the test shows that they then drift apart).
--kill R:E:S: rank R SIGKILLs itself in step S of epoch E. Checkpoints go to OUT_DIR/../checkpoints.
--end-to-end: one epoch of the whole network instead (BatchNorm trains, per rank).
--own-checkpoints R: rank R keeps its checkpoints in a directory of its own (OUT_DIR/../checkpoints_rankR).
"""

import dataclasses
import os
import signal

import sys
from pathlib import Path

import torch

import bagmar.training.distributed
import bagmar.training.engine
import bagmar.data.image_data
from bagmar.training.engine import StackedStatistics
from bagmar.data.image_lists import read_list
from bagmar.training.image_train import train_image_list

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import CLASSES, recipe  # noqa: E402


def record_into(record: dict, no_reduce: bool) -> None:
    for cls in (StackedStatistics, bagmar.training.distributed.GlobalStatistics):
        def update(self, grad, labels, _original=cls.update):
            _original(self, grad, labels)
            record["theta"].append(self.theta[0].clone())
            record["phi"].append(self.phi[0].clone())

        cls.update = update
    if no_reduce:
        init = bagmar.training.distributed.GlobalStatistics.__init__
        bagmar.training.distributed.GlobalStatistics.__init__ = lambda self, *a, **k: init(self, *a, **{**k, "reduce": False})
    batches = bagmar.data.image_data._EpochBatches.__iter__

    def recorded_batches(self):
        for batch in batches(self):
            record["indices"].append([index for index, _, _ in batch])
            yield batch

    bagmar.data.image_data._EpochBatches.__iter__ = recorded_batches


STEPS = 4  # a rank's steps per epoch (159 images, batch 32)


def arm_kill(world, point: str) -> None:
    rank, epoch, step = map(int, point.split(":"))
    if world.rank != rank:
        return
    calls, loss = [0], bagmar.training.engine.group_loss

    def killing_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] == (epoch - 1) * STEPS + step:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return loss(*args, **kwargs)

    bagmar.training.engine.group_loss = killing_loss


def main(root: str, stage1: str, out: str, *flags: str) -> None:
    torch.set_num_threads(1)
    world = bagmar.training.distributed.init_world("cpu", timeout_seconds=60)
    record = {"theta": [], "phi": [], "indices": [], "model": {}}
    record_into(record, "--no-reduce" in flags)
    if "--kill" in flags:
        arm_kill(world, flags[flags.index("--kill") + 1])
    train = read_list(f"{root}/Mini_LT_train.txt", CLASSES)
    test = read_list(f"{root}/Mini_LT_test.txt", CLASSES)
    lines = []
    settings = recipe(stage1)
    if "--end-to-end" in flags:
        settings = dataclasses.replace(settings, protocol="end_to_end", stage1=None, epochs=1)
    checkpoints = Path(out).parent / "checkpoints"
    if "--own-checkpoints" in flags and world.rank == int(flags[flags.index("--own-checkpoints") + 1]):
        checkpoints = checkpoints.with_name(f"checkpoints_rank{world.rank}")  # as a node's local disk would be
    result = train_image_list(root, train, test, CLASSES, settings, progress=lines.append, world=world,
                              checkpoint_dir=checkpoints)
    resumed = [line for line in lines if line.startswith("resuming training after epoch ")]
    record["resumed_after"] = int(resumed[0].split()[4]) if resumed else 0
    if result is not None:
        record["model"] = {k: v.clone() for k, v in result.model.state_dict().items()}
        record["test_logits"] = torch.as_tensor(result.test_logits)  # every rank tested its shard; rank 0 gathered
    torch.save(record, Path(out) / f"rank{world.rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
