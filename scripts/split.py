"""Snakemake job: the long-tailed cut of the training set for one imbalance factor (SPEC §1).

class_counts.json is the seed's cls_freq file: a JSON list of the per-class training counts.
"""
import json

import numpy as np

from bagmar.data.long_tail import ImageSet, check_spec_counts, class_counts, long_tailed_indices
from bagmar.io import atomic_write, log_to

with log_to(snakemake.log[0]):
    p = snakemake.params
    images = ImageSet.load(snakemake.input.images)
    indices = long_tailed_indices(images.train_labels, images.num_classes, p.imbalance_factor, p.seed)
    counts = class_counts(images.train_labels[indices], images.num_classes).tolist()
    check_spec_counts(p.dataset, p.imbalance_factor, counts)  # real data only: the SPEC totals, at run time
    with atomic_write(snakemake.output.indices, "wb") as f:
        np.save(f, indices)
    with atomic_write(snakemake.output.counts) as f:
        json.dump(counts, f)
    print(f"{p.dataset} IF {p.imbalance_factor:g}: {len(indices)} images, head {counts[0]}, tail {counts[-1]}")
