"""Snakemake job: one variant's evaluation from saved logits: the tau sweep and per-class accuracy."""
import json

import numpy as np

from bagmar.evaluate import per_class_table, tau_sweep
from bagmar.io import atomic_write, log_to
from bagmar.tables import headline_tau

with log_to(snakemake.log[0]):
    with np.load(snakemake.input.logits, allow_pickle=False) as f:
        logits, labels = f["logits"], f["labels"]
    with open(snakemake.input.counts) as f:
        counts = np.asarray(json.load(f))
    w, evaluation = snakemake.wildcards, snakemake.params.evaluation
    sweep = tau_sweep(logits, labels, counts, snakemake.params.taus)
    sweep.insert(0, "evaluation", evaluation)
    sweep.insert(0, "seed", int(w.seed))
    sweep.insert(0, "imbalance_factor", float(w.imbalance))
    sweep.insert(0, "variant", w.variant)
    with atomic_write(snakemake.output.sweep) as f:
        sweep.to_csv(f, index=False)
    with atomic_write(snakemake.output.per_class) as f:
        per_class_table(logits, labels, counts, headline_tau(evaluation)).to_csv(f, index=False)
    print(sweep.to_string(index=False))
