"""Snakemake job: one variant's evaluation of one training, from its saved test outputs."""
import json

import numpy as np

from bagmar.evaluate import Outputs, evaluate_training, per_class_table
from bagmar.io import atomic_write, log_to

with log_to(snakemake.log[0]):
    with np.load(snakemake.input.logits, allow_pickle=False) as f:
        logits = dict(f)
    with open(snakemake.input.counts) as f:
        counts = np.asarray(json.load(f))
    evaluation = snakemake.params.evaluation
    sweep = evaluate_training(logits, logits["labels"], counts, snakemake.params.taus, evaluation)
    for column, value in [("evaluation", evaluation), *reversed(snakemake.params.key_columns.items())]:
        sweep.insert(0, column, value)  # columns: variant, imbalance_factor, seed, evaluation, ...
    with atomic_write(snakemake.output.sweep) as f:
        sweep.to_csv(f, index=False)
    with atomic_write(snakemake.output.per_class) as f:
        per_class_table(Outputs.from_saved(logits), logits["labels"], counts, evaluation).to_csv(f, index=False)
    print(sweep.to_string(index=False, na_rep="n/a"))  # a shot group with no classes, as in the tables
