"""Snakemake job: the markdown results section, also spliced into the README between its markers."""
import json
from pathlib import Path

import pandas as pd

from bagmar.io import atomic_write, log_to
from bagmar.render import render_results, splice_readme

with log_to(snakemake.log[0]):
    p = snakemake.params
    data_note = None
    if snakemake.input.provenance:
        with open(snakemake.input.provenance) as f:
            provenance = json.load(f)
        data_note = f"{provenance['title']} from {provenance['location']}: {provenance['note']}."

    def section(link_base):
        return render_results(pd.read_csv(snakemake.input.table), pd.read_csv(snakemake.input.comparison),
                              snakemake.input.template, run_name=p.run_name, dataset=p.dataset,
                              headline_variant=p.headline_variant, variants=p.variants, links=p.links,
                              link_base=link_base, data_note=data_note)

    with atomic_write(snakemake.output.markdown) as f:
        f.write(section(Path(snakemake.output.markdown).parent))
    if p.readme:
        splice_readme(p.readme, p.run_name, section(Path(p.readme).parent))
    print(section("."))
