"""Snakemake job: every variant's evaluation of each model of one training group, from its saved test outputs (and
its validation logits, where the data set has a validation split: the val-selected tau)."""
import json

import numpy as np
import pandas as pd

from bagmar.evaluation.evaluate import Outputs, evaluate_training, per_class_table
from bagmar.io import atomic_write, load_arrays, log_to

with log_to(snakemake.log[0]):
    with open(snakemake.input.counts) as f:
        counts = np.asarray(json.load(f))
    validations = snakemake.input.get("val_logits") or [None] * len(snakemake.input.logits)  # a validation split's
    for member, path, val_path in zip(snakemake.params.members, snakemake.input.logits, validations, strict=True):
        logits = load_arrays(path)
        validation = None if val_path is None else load_arrays(val_path)
        sweeps, per_class = [], []
        for variant in member["variants"]:  # {variant, evaluation, taus[, tau_norm_bias]}
            columns = {"variant": variant["variant"], **member["key_columns"], "evaluation": variant["evaluation"]}
            keep_bias = variant.get("tau_norm_bias") == "keep"
            sweep = evaluate_training(logits, logits["labels"], counts, variant["taus"], variant["evaluation"],
                                      keep_bias, validation)
            sweeps.append(pd.concat([pd.DataFrame(columns, index=sweep.index), sweep], axis=1))
            table = per_class_table(Outputs.from_saved(logits, keep_bias=keep_bias), logits["labels"], counts,
                                    variant["evaluation"])
            per_class.append(pd.concat([pd.DataFrame(columns, index=table.index), table], axis=1))
        sweeps, per_class = pd.concat(sweeps, ignore_index=True), pd.concat(per_class, ignore_index=True)
        outputs = {kind: getattr(snakemake.output, name) for kind, name in member["outputs"].items()}
        with atomic_write(outputs["sweep"]) as f:
            sweeps.to_csv(f, index=False)  # columns: variant, imbalance_factor, seed, evaluation, ...
        with atomic_write(outputs["per_class"]) as f:
            per_class.to_csv(f, index=False)
        print(f"{member['name']}:")
        print(sweeps.to_string(index=False, na_rep="n/a"))  # a shot group with no classes, as in the tables
