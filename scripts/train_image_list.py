"""Snakemake job: train one network on an image-list data set (bagmar.image_train; fusion is none for these)."""
import json

import torch

from bagmar.image_lists import read_list
from bagmar.image_train import train_image_list
from bagmar.io import log_to
from bagmar.recipe import ImageListRecipe
from bagmar.train import resolve_device

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    p = snakemake.params
    (member,) = p.members
    recipe = ImageListRecipe(**member["recipe"])
    with open(snakemake.input.provenance) as f:
        root = json.load(f)["images_root"]  # where the verification job found every listed image
    train, test = read_list(snakemake.input.train, p.classes), read_list(snakemake.input.test, p.classes)
    device = resolve_device(snakemake.config.get("device", "auto"))
    workers = snakemake.config["threads"]["loader"]  # the numbers do not depend on it: not a rerun trigger
    print(f"{member['name']}: {recipe}")
    print(f"on {device}, {len(train.images)} training and {len(test.images)} test images under {root}, "
          f"{workers} decoding workers")
    result = train_image_list(root, train, test, p.classes, recipe, device=device, checkpoint_dir=p.checkpoints,
                              name=member["name"], workers=workers, keep_matrix=p.keep_matrix)
    files = {kind: getattr(snakemake.output, name) for kind, name in member["outputs"].items()}
    result.save(**files, test_labels=test.labels)
