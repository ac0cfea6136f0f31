"""Snakemake job: all tau sweeps -> per-evaluation summary -> mean/std over seeds -> paper and methods tables (CSV)."""
import pandas as pd

from bagmar.io import atomic_write, log_to
from bagmar.evaluation.tables import as_written, methods_table, over_seeds, paper_comparison, summarize

with log_to(snakemake.log[0]):
    sweeps = pd.concat([pd.read_csv(path) for path in snakemake.input.sweeps], ignore_index=True)
    summary = summarize(sweeps)
    table = over_seeds(summary)
    p = snakemake.params
    comparison = paper_comparison(table, p.headline_variant, p.paper)
    methods = methods_table(table, p.variants, p.losses, p.published, p.headline_variant, p.paper, p.recipes)
    for frame, path in [(as_written(sweeps, percent=False), snakemake.output.evaluations), (summary, snakemake.output.summary),
                        (table, snakemake.output.table), (comparison, snakemake.output.comparison),
                       (methods, snakemake.output.methods)]:
        with atomic_write(path) as f:
            frame.to_csv(f, index=False)
    print(table.to_string(index=False, na_rep="n/a"))
