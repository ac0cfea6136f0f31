"""Runs one tiny training in its own process, optionally SIGKILLing itself at a chosen point.

Used by tests/test_resume.py: the kill points are injected here, from outside the package, by
wrapping the functions the trainer calls — the trainer itself has no test hooks.
usage: python resume_worker.py CHECKPOINT_DIR OUT_FILE [step:EPOCH:STEP | checkpoint:EPOCH | evaluate:EPOCH]
       python resume_worker.py --image-list ROOT CHECKPOINT_DIR OUT_FILE [POINT]
(--image-list: a training on the miniature image-list data set under ROOT, bagmar.training.image_train.)
"""

import os
import signal
import sys

import torch

import bagmar.training.checkpoint
import bagmar.training.engine
import bagmar.training.image_train
import bagmar.training.train
from bagmar.data.long_tail import make_synthetic
from bagmar.training.train import Recipe, train

EPOCHS, STEPS = 4, 5  # 4 classes x 20 images, batch 16


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    kind, epoch, *rest = point.split(":")
    epoch = int(epoch)
    if kind == "step":  # mid-epoch: during the loss of step STEP of EPOCH
        calls, target = [0], (epoch - 1) * STEPS + int(rest[0])
        loss = bagmar.training.engine.group_loss

        def killing_loss(*args, **kwargs):
            calls[0] += 1
            if calls[0] == target:
                die()
            return loss(*args, **kwargs)

        bagmar.training.engine.group_loss = killing_loss
    elif kind == "checkpoint":  # half-way through writing EPOCH's checkpoint
        save = torch.save

        def killing_save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("epoch") == epoch:
                f.write(b"PK\x03\x04 half a checkpoint")
                f.flush()
                die()
            return save(obj, f, *args, **kwargs)

        bagmar.training.checkpoint.torch.save = killing_save
    elif kind == "evaluate":  # during EPOCH's test-set evaluation
        for module, name in ((bagmar.training.train, "predict_logits"), (bagmar.training.image_train, "predict")):
            calls, predict = [0], getattr(module, name)

            def killing_predict(*args, _calls=calls, _predict=predict, **kwargs):
                _calls[0] += 1
                if _calls[0] == epoch:
                    die()
                return _predict(*args, **kwargs)

            setattr(module, name, killing_predict)


IMAGE_LIST_CLASSES = 10  # tests/test_image_train.py's miniature: 10 classes, 40 .. 4 images, batch 32: 5 steps


def image_list_training(root: str, checkpoint_dir: str):
    from bagmar.data.image_lists import read_list
    from bagmar.config.recipe import ImageListRecipe

    train_list = read_list(f"{root}/Mini_LT_train.txt", IMAGE_LIST_CLASSES)
    test_list = read_list(f"{root}/Mini_LT_test.txt", IMAGE_LIST_CLASSES)
    recipe = ImageListRecipe("resnet10", 3, 32, 0.1, 5e-4, width=8, image_size=24, resize_size=28, lambda1=1.2,
                             lambda2=0.9, seed=3)
    return bagmar.training.image_train.train_image_list(root, train_list, test_list, IMAGE_LIST_CLASSES, recipe,
                                               checkpoint_dir=checkpoint_dir, name="worker")


def main(*args: str) -> None:
    torch.set_num_threads(1)
    root = None
    if args[0] == "--image-list":
        root, *args = args[1:]
    checkpoint_dir, out, point = (*args, None)[:3]
    if root:
        global STEPS
        STEPS = 4  # 159 images, batch 32
    if point:
        arm(point)
    if root:
        result = image_list_training(root, checkpoint_dir)
    else:
        images = make_synthetic(4, 20, 5, 8, seed=0)
        recipe = Recipe(epochs=EPOCHS, batch_size=16, width=2, padding=1, cutout_size=4, lambda1=1.2, lambda2=0.9,
                        seed=3)
        result = train(images.train_images, images.train_labels, images.test_images, images.test_labels, 4, recipe,
                       checkpoint_dir=checkpoint_dir, name="worker")
    torch.save({"model": result.model.state_dict(), "logits": torch.from_numpy(result.test_logits),
                "theta": result.stats.theta, "metrics": [{k: v for k, v in row.items() if k not in ("seconds", "eval_seconds")}
                                                         for row in result.metrics]}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
