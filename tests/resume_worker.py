"""Runs one tiny training in its own process, optionally SIGKILLing itself at a chosen point.

Used by tests/test_resume.py: the kill points are injected here, from outside the package, by
wrapping the functions the trainer calls — the trainer itself has no test hooks.
usage: python resume_worker.py CHECKPOINT_DIR OUT_FILE [step:EPOCH:STEP | checkpoint:EPOCH | evaluate:EPOCH]
"""

import os
import signal
import sys

import torch

import bagmar.checkpoint
import bagmar.engine
import bagmar.train
from bagmar.data import make_synthetic
from bagmar.train import Recipe, train

EPOCHS, STEPS = 4, 5  # 4 classes x 20 images, batch 16


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    kind, epoch, *rest = point.split(":")
    epoch = int(epoch)
    if kind == "step":  # mid-epoch: during the loss of step STEP of EPOCH
        calls, target = [0], (epoch - 1) * STEPS + int(rest[0])
        loss = bagmar.engine.group_loss

        def killing_loss(*args, **kwargs):
            calls[0] += 1
            if calls[0] == target:
                die()
            return loss(*args, **kwargs)

        bagmar.engine.group_loss = killing_loss
    elif kind == "checkpoint":  # half-way through writing EPOCH's checkpoint
        save = torch.save

        def killing_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("epoch") == epoch:
                f.write(b"PK\x03\x04 half a checkpoint")
                f.flush()
                die()
            return save(obj, f, *args, **kwargs)

        bagmar.checkpoint.torch.save = killing_save
    elif kind == "evaluate":  # during EPOCH's test-set evaluation
        calls, predict = [0], bagmar.train.predict_logits

        def killing_predict(*args, **kwargs):
            calls[0] += 1
            if calls[0] == epoch:
                die()
            return predict(*args, **kwargs)

        bagmar.train.predict_logits = killing_predict


def main(checkpoint_dir: str, out: str, point: str | None = None) -> None:
    torch.set_num_threads(1)
    if point:
        arm(point)
    images = make_synthetic(4, 20, 5, 8, seed=0)
    recipe = Recipe(epochs=EPOCHS, batch_size=16, width=2, padding=1, cutout_size=4, lambda1=1.2, lambda2=0.9, seed=3)
    result = train(images.train_images, images.train_labels, images.test_images, images.test_labels, 4, recipe,
                   checkpoint_dir=checkpoint_dir, name="worker")
    torch.save({"model": result.model.state_dict(), "logits": torch.from_numpy(result.test_logits),
                "theta": result.stats.theta, "metrics": [{k: v for k, v in row.items() if k not in ("seconds", "eval_seconds")}
                                                         for row in result.metrics]}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
