"""Snakemake job: one released checkpoint mapped into ResNet-32 and tested, written as a training's files."""
import torch

from bagmar.data.long_tail import ImageSet
from bagmar.io import log_to
from bagmar.models.released import import_released

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    (member,) = snakemake.params.members
    images = ImageSet.load(snakemake.input.images)
    outputs = {kind: getattr(snakemake.output, name) for kind, name in member["outputs"].items()}
    import_released(snakemake.input.checkpoint, images, outputs["model"], outputs["logits"])
