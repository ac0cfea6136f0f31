"""Snakemake job: train one ResNet-32, or a fused group of them (config `fusion`), on one long-tailed split."""
import torch

from bagmar.data.long_tail import ImageSet
from bagmar.fingerprint import from_params
from bagmar.io import load_arrays, log_to
from bagmar.training.train import Recipe, resolve_device, train_group

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    images = ImageSet.load(snakemake.input.images)
    indices = load_arrays(snakemake.input.indices)[""]
    members = snakemake.params.members
    recipes = [Recipe(**member["recipe"]) for member in members]
    device = resolve_device(snakemake.config.get("device", "auto"))
    for member, recipe in zip(members, recipes):
        print(f"{member['name']}: {recipe}")
    print(f"{len(members)} model(s) on {device}, {len(indices)} training images")
    results = train_group(images.train_images[indices], images.train_labels[indices], images.test_images,
                          images.test_labels, images.num_classes, recipes, device=device,
                          checkpoint_dir=snakemake.params.checkpoints, names=[m["name"] for m in members],
                          keep_matrix=snakemake.params.keep_matrix, code=from_params(snakemake.params))
    for member, result in zip(members, results):  # each member's files: the outputs Snakemake names for it
        files = {kind: getattr(snakemake.output, name) for kind, name in member["outputs"].items()}
        result.save(**files, test_labels=images.test_labels)
