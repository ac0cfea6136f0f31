"""Markdown tables and the README's results section, rendered with Jinja2 from aggregated CSVs.

Presentation code: it reads result files and never imports training code.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import jinja2
import pandas as pd

from .io import atomic_write

def cell(mean: float, std: float = float("nan"), n: int = 1, digits: int = 1) -> str:
    """'51.0', '51.0 ± 0.3' over several seeds, 'n/a' for a group with no classes."""
    if mean is None or math.isnan(mean):
        return "n/a"
    if n > 1 and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def _template(path: str | Path) -> jinja2.Template:
    path = Path(path)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(path.parent), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    env.globals["cell"] = cell
    return env.get_template(path.name)


def render_results(table: pd.DataFrame, template: str | Path, *, run_name: str, dataset: str, headline_variant: str,
                   variants: list[str], paper: dict | None = None) -> str:
    """The markdown results section: the paper-format table for ``headline_variant``, then all variants."""
    rows = table.sort_values("imbalance_factor", ascending=False)
    headline = rows[rows["variant"] == headline_variant].to_dict("records")
    order = {v: i for i, v in enumerate(variants)}
    full = rows.sort_values(["imbalance_factor", "variant"], key=lambda c: c.map(order) if c.name == "variant" else -c)
    paper = {float(k): v for k, v in (paper or {}).items()}
    return _template(template).render(
        run_name=run_name,
        dataset=dataset,
        headline_variant=headline_variant,
        headline=headline,
        full=full.to_dict("records"),
        paper=paper,
        n_seeds=int(rows["n_seeds"].max()),
    )


def splice_readme(readme: str | Path, run_name: str, section: str) -> None:
    """Replace the README text between this run's markers, atomically; nothing else is touched."""
    readme = Path(readme)
    begin, end = f"<!-- BEGIN results: {run_name} -->", f"<!-- END results: {run_name} -->"
    text = readme.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(
            f"{readme} must contain exactly one pair of markers\n  {begin}\n  {end}\n"
            f"to receive the results of run '{run_name}'; add them where the table should go, "
            "or set report.readme to null in the config to skip updating the README"
        )
    with atomic_write(readme) as f:
        f.write(pattern.sub(lambda _: f"{begin}\n{section.strip()}\n{end}", text))
