"""Snakemake job: train one ResNet-32 (one training config x imbalance factor x seed)."""
import numpy as np
import torch

from bagmar.data import ImageSet
from bagmar.io import log_to
from bagmar.train import Recipe, resolve_device, train

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    images = ImageSet.load(snakemake.input.images)
    indices = np.load(snakemake.input.indices)
    recipe = Recipe(**snakemake.params.recipe)
    device = resolve_device(snakemake.config.get("device", "auto"))
    w = snakemake.wildcards
    print(f"{recipe} on {device}, {len(indices)} training images")
    result = train(images.train_images[indices], images.train_labels[indices], images.test_images,
                   images.test_labels, images.num_classes, recipe, device=device,
                   checkpoint_dir=snakemake.params.checkpoints, name=f"{w.training} IF {w.imbalance} seed {w.seed}")
    result.save(model=snakemake.output.model, logits=snakemake.output.logits, test_labels=images.test_labels,
                metrics=snakemake.output.metrics, statistics=snakemake.output.statistics)
