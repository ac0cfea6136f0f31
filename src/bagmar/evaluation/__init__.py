"""Evaluation and reporting: from saved test outputs to tables, plots and the README section.

- ``evaluate``: accuracies (all, many/medium/few-shot) under plain argmax and the post-hoc rules with their tau sweep;
- ``tables``: the results, paper-format and methods tables (mean and std over seeds), with pandas;
- ``render``: the Markdown tables and README section, with Jinja2;
- ``plots``: the figures.
"""
