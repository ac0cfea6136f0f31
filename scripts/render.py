"""Snakemake job: the markdown results section, with its links relative to where it lands.

Writes results/<run>/tables/results.md and, when report.readme names a README, the same section with links
relative to that README (readme_section.md, not written when report.readme is null), which the readme job
splices into it.
"""
import json
from pathlib import Path

import pandas as pd

from bagmar.io import atomic_write, log_to
from bagmar.evaluation.render import render_results

with log_to(snakemake.log[0]):
    p = snakemake.params
    data_note = None
    if snakemake.input.provenance:
        with open(snakemake.input.provenance) as f:
            provenance = json.load(f)
        data_note = f"{provenance['title']} from {provenance['location']}: {provenance['note']}."
    table, comparison = pd.read_csv(snakemake.input.table), pd.read_csv(snakemake.input.comparison)
    methods = pd.read_csv(snakemake.input.methods, keep_default_na=False, na_values=[""])
    compared = pd.read_csv(snakemake.input.compare[0]) if snakemake.input.compare else None
    destinations = [(snakemake.output.markdown, Path(snakemake.output.markdown).parent, False)]
    destinations += [(path, Path(p.readme).parent, p.section == "brief")  # none without report.readme
                     for path in snakemake.output.readme_section]
    for path, link_base, brief in destinations:
        section = render_results(table, comparison, methods, snakemake.input.template, run_name=p.run_name,
                                 dataset=p.dataset, headline_variant=p.headline_variant, variants=p.variants,
                                 links=p.links, link_base=link_base, data_note=data_note, note=p.note,
                                 compared=compared, compare_with=p.compare_with, headline_model=p.headline_model,
                                 has_released=p.has_released, brief=brief, validation=p.validation,
                                 no_validation=p.no_validation)
        with atomic_write(path) as f:
            f.write(section)
    print(section)
