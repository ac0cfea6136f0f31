"""Snakemake job: the long-tailed cut of the training set for one imbalance factor (SPEC §1)."""
import json

import numpy as np

from bagmar.data import ImageSet, class_counts, long_tailed_indices
from bagmar.io import atomic_write, log_to

with log_to(snakemake.log[0]):
    images = ImageSet.load(snakemake.input.images)
    indices = long_tailed_indices(images.train_labels, images.num_classes, snakemake.params.imbalance_factor,
                                  snakemake.params.seed)
    counts = class_counts(images.train_labels[indices], images.num_classes)
    with atomic_write(snakemake.output.indices, "wb") as f:
        np.save(f, indices)
    with atomic_write(snakemake.output.counts) as f:
        json.dump(counts.tolist(), f)
    print(f"IF {snakemake.params.imbalance_factor:g}: {len(indices)} images, head {counts[0]}, tail {counts[-1]}")
