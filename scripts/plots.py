"""Snakemake job: the report's figures from the evaluation and training results."""
from pathlib import Path

import numpy as np
import pandas as pd

from bagmar import plots
from bagmar.io import atomic_write, log_to


def keyed(paths, read):
    """Each result file read into a frame, tagged by the wildcards in its path (.../<name>/imba<IF>/seed<S>/...)."""
    frames = []
    for path in map(Path, paths):
        name, imbalance, seed = path.parts[-4], path.parts[-3], path.parts[-2]
        frames.append(read(path).assign(name=name, imbalance_factor=float(imbalance.removeprefix("imba")),
                                        seed=int(seed.removeprefix("seed"))))
    return pd.concat(frames, ignore_index=True)


def theta(path):
    with np.load(path, allow_pickle=False) as f:
        return pd.DataFrame({"class": np.arange(len(f["theta"])), "theta": f["theta"]})


with log_to(snakemake.log[0]):
    figures = {
        "tau_sweep": plots.tau_sweep(pd.read_csv(snakemake.input.evaluations), snakemake.params.paper),
        "per_class": plots.per_class_accuracy(keyed(snakemake.input.per_class, pd.read_csv).rename(columns={"name": "variant"})),
        "curves": plots.training_curves(keyed(snakemake.input.metrics, pd.read_csv).rename(columns={"name": "training"})),
        "theta": plots.theta_per_class(keyed(snakemake.input.statistics, theta).rename(columns={"name": "training"})),
    }
    for name, figure in figures.items():
        with atomic_write(getattr(snakemake.output, name), "wb") as f:
            figure.savefig(f, format="png", dpi=110)
        print(f"wrote {getattr(snakemake.output, name)}")
