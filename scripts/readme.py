"""Snakemake job: splice a run's results section into the README between its markers, or say how to add them.

A README without markers for this run is no failure: the tables are in results/<run>/tables/ either way.
"""
import sys
from pathlib import Path

from bagmar.io import atomic_write, log_to
from bagmar.evaluation.render import markers, splice_readme

with log_to(snakemake.log[0]):
    readme, run_name = snakemake.params.readme, snakemake.params.run_name
    with open(snakemake.input.section) as f:
        spliced = splice_readme(readme, run_name, f.read())
    if spliced:
        status = f"{readme}: the section between its markers for run '{run_name}' now holds this run's tables"
    else:
        begin, end = markers(run_name)
        status = (f"{readme} has no markers for run '{run_name}', so it was left as it is (the tables are in "
                  f"{Path(snakemake.input.section).parent}/); to show them there, add the two lines "
                  f"'{begin}' and '{end}' where they should go and rerun with --forcerun readme, "
                  "or set report.readme: null")
        print(status, file=sys.__stderr__, flush=True)  # the terminal, not only the log
    print(status)
    with atomic_write(snakemake.output.status) as f:
        f.write(status + "\n")
