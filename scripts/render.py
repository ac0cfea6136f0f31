"""Snakemake job: the markdown results section, also spliced into the README between its markers."""
import pandas as pd

from bagmar.io import atomic_write, log_to
from bagmar.render import render_results, splice_readme

with log_to(snakemake.log[0]):
    p = snakemake.params
    section = render_results(pd.read_csv(snakemake.input.table), snakemake.input.template, run_name=p.run_name,
                             dataset=p.dataset, headline_variant=p.headline_variant, variants=p.variants,
                             paper=p.paper)
    with atomic_write(snakemake.output.markdown) as f:
        f.write(section)
    if p.readme:
        splice_readme(p.readme, p.run_name, section)
    print(section)
