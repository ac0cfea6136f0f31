"""Snakemake job: train one network on an image-list data set (bagmar.training.image_job: in this process, or in gpus
processes a node on nodes machines under torchrun; fusion is none for these). threads are a node's."""
import json
from pathlib import Path

from bagmar.fingerprint import from_params
from bagmar.io import log_to
from bagmar.training.image_job import launch
from bagmar.training.train import resolve_device

with log_to(snakemake.log[0]):
    p = snakemake.params
    (member,) = p.members
    with open(snakemake.input.provenance) as f:
        root = json.load(f)["images_root"]  # where the verification job found every listed image
    settings = snakemake.config  # device, workers and the distributed settings: not rerun triggers
    job = {
        "name": member["name"], "recipe": member["recipe"], "root": root, "classes": p.classes,
        "train": snakemake.input.train, "test": snakemake.input.test, "val": (snakemake.input.val or [None])[0],
        "checkpoints": p.checkpoints,
        "outputs": {kind: getattr(snakemake.output, name) for kind, name in member["outputs"].items()},
        "device": resolve_device(settings.get("device", "auto")), "workers": settings["threads"]["loader"],
        "threads": max(1, snakemake.threads // member["gpus"]), "keep_matrix": p.keep_matrix,
        "timeout_seconds": settings["distributed"]["timeout_seconds"], "code": from_params(p),
    }
    launch(job, Path(p.checkpoints) / "job.json", member["gpus"], member["nodes"], settings["distributed"]["restarts"])
