"""Snakemake job: write the miniature image-list data set (JPEGs and lists, bagmar.data.image_lists.write_miniature)
and its facts (counts, per-class extremes, each list's sha256), which the verification job checks it against."""
import json
from pathlib import Path

from bagmar.data.image_lists import write_miniature
from bagmar.io import atomic_write, log_to

with log_to(snakemake.log[0]):
    root = Path(snakemake.output.root)
    facts = write_miniature(root, **snakemake.params.miniature)
    with atomic_write(root / "facts.json") as f:
        json.dump(facts.to_json(), f, indent=2)
    for split, split_facts in facts.splits.items():
        print(f"{split}: {split_facts.images} images, classes of {split_facts.smallest} to {split_facts.largest}")
