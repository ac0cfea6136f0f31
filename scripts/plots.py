"""Snakemake job: the report's figures from the evaluation and training results."""
import numpy as np
import pandas as pd

from bagmar.evaluation import plots
from bagmar.io import atomic_write, load_arrays, log_to


def keyed(paths, keys, read):
    """Each result file read into a frame, tagged with its keys (training or variant, imbalance factor, seed)."""
    return pd.concat([read(path).assign(**key) for path, key in zip(paths, keys, strict=True)], ignore_index=True)


def theta(path):
    saved = load_arrays(path)["theta"]
    return pd.DataFrame({"class": np.arange(len(saved)), "theta": saved})


# a run of released checkpoints only (trainings with `released`): nothing was trained here
TRAINED_NONE = "no training in this run: its models are released checkpoints, imported as trained elsewhere"

with log_to(snakemake.log[0]):
    per_class = pd.concat(map(pd.read_csv, snakemake.input.per_class), ignore_index=True)
    figures = {
        "tau_sweep": plots.tau_sweep(pd.read_csv(snakemake.input.evaluations), snakemake.params.paper),
        "per_class": plots.per_class_accuracy(per_class),
        "curves": (plots.training_curves(keyed(snakemake.input.metrics, snakemake.params.metrics_keys, pd.read_csv))
                   if snakemake.input.metrics else plots.nothing_to_draw("Training curves", TRAINED_NONE)),
        "theta": (plots.theta_per_class(keyed(snakemake.input.statistics, snakemake.params.statistics_keys, theta))
                  if snakemake.input.statistics else plots.nothing_to_draw("θ per class", TRAINED_NONE)),
        "methods": plots.methods(pd.read_csv(snakemake.input.methods)),
        "headline_per_class": plots.headline_per_class(per_class, snakemake.params.headline_variant),
    }
    for name, figure in figures.items():
        with atomic_write(getattr(snakemake.output, name), "wb") as f:
            figure.savefig(f, format="png", dpi=110)
        print(f"wrote {getattr(snakemake.output, name)}")
