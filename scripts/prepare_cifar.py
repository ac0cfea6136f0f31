"""Snakemake job: find (or download) the official CIFAR release, verify its md5s, store it as an image set,
and record where it came from (provenance.json says whether the official verification was skipped)."""
import json

from bagmar.data.cifar import load_cifar
from bagmar.io import atomic_write, log_to

with log_to(snakemake.log[0]):
    where = snakemake.config["dataset"]  # root, path, download: where to look, not what the data is
    images, provenance = load_cifar(snakemake.params.name, root=where["root"], download=where["download"],
                                    path=where.get("path"), unofficial_copy=snakemake.params.unofficial_copy)
    images.save(snakemake.output.images)
    with atomic_write(snakemake.output.provenance) as f:
        json.dump(provenance, f, indent=2)
