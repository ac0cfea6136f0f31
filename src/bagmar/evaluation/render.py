"""Markdown tables and the README's results section, rendered with Jinja2 from aggregated CSVs.

Presentation code: it reads result files and never imports training code.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import jinja2
import pandas as pd

from ..io import UserError, atomic_write


def cell(mean: float, std: float = float("nan"), n: int = 1, digits: int = 1) -> str:
    """'51.0', '51.0 ± 0.3' over several seeds, 'n/a' for a group with no classes."""
    if mean is None or math.isnan(mean):
        return "n/a"
    if n > 1 and not math.isnan(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


RULES = {"plain": "plain", "pn": "PN τ=1", "logit_adjustment": "post-hoc LA τ=1", "tau_norm": "τ-norm τ=1"}


def rule(evaluation: str) -> str:
    """An evaluation rule as the tables name it, with the headline τ of a post-hoc rule."""
    return RULES[evaluation]


def _text(value) -> str:
    """A CSV text cell, '' when it was empty (pandas reads an empty cell as NaN)."""
    return value if isinstance(value, str) else ""


def methods_rows(methods: pd.DataFrame) -> tuple[list[float], list[dict], list[dict]]:
    """The methods table by variant: imbalance factors (descending), one row per variant with one cell per
    factor (ours, published, source number), and the numbered sources with their notes per factor."""
    factors = sorted(methods["imbalance_factor"].unique(), reverse=True)
    sources: dict[str, dict] = {}
    rows = []
    for variant, frame in methods.groupby("variant", sort=False):
        by_factor = frame.set_index("imbalance_factor")
        cells = []
        for factor in factors:
            if factor not in by_factor.index:
                cells.append(None)
                continue
            r = by_factor.loc[factor]
            source, note = _text(r["published_source"]), _text(r["published_note"])
            number = None
            if source:
                entry = sources.setdefault(source, {"number": len(sources) + 1, "source": source, "notes": []})
                number = entry["number"]
                if note:
                    entry["notes"].append(f"{variant}, IF {factor:g}: {note}")
            cells.append({"ours": cell(r["top1"], r["top1_std"], int(r["n_seeds"])),
                          "published": f"{r['published_top1']:g} [{number}]" if number else "–"})
        first = frame.iloc[0]
        rows.append({"variant": variant, "training": first["training"], "rule": rule(first["evaluation"]),
                     "recipe": _text(first.get("recipe", "shared")) or "shared", "cells": cells})
    return factors, rows, list(sources.values())


def tau_cell(mean: float, std: float, n: int, tau: float, first: bool = False) -> str:
    """A top-1 with the tau it was read at: '52.3 (τ=1.4)', or '1.4 (52.3)' with ``first`` (the all-variants
    table's "τ (top-1)" columns); 'n/a' where no tau was chosen (no validation logits)."""
    if tau is None or math.isnan(tau):
        return "n/a"
    return f"{tau:g} ({cell(mean, std, n)})" if first else f"{cell(mean, std, n)} (τ={tau:g})"


def signed(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:+.1f}"


def _template(path: str | Path) -> jinja2.Template:
    path = Path(path)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(path.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,  # a line holding only a {% tag %} leaves no blank line behind
        lstrip_blocks=True,
    )
    env.globals.update(cell=cell, signed=signed, rule=rule, tau_cell=tau_cell)
    return env.get_template(path.name)


def render_results(table: pd.DataFrame, comparison: pd.DataFrame, methods: pd.DataFrame, template: str | Path, *,
                   run_name: str, dataset: str, headline_variant: str, variants: list[str],
                   links: dict[float, list[dict]], link_base: str | Path = ".", data_note: str | None = None,
                   note: str | None = None, compared: pd.DataFrame | None = None,
                   compare_with: str | None = None, headline_model: str = "final-epoch model",
                   has_released: bool = False, brief: bool = False, validation: str | None = None,
                   no_validation: str = "the data set has no official validation split") -> str:
    """The markdown results section.

    ``links`` maps an imbalance factor to one {"seed", "log", "model"} per seed of the headline
    variant's training; paths are written relative to ``link_base``, where the markdown will live.
    ``data_note`` says where real data came from (an unofficial copy is flagged there). ``methods`` is
    bagmar.evaluation.tables.methods_table: the comparison of methods, with published figures and their sources.
    ``note``: a paragraph under the title (report.note). ``compared``: the paper-format table of run
    ``compare_with`` (report.compare_with), whose headline figures are shown beside this run's where it has the
    imbalance factor; None when that run has no results yet (the section says so). ``headline_model``: which
    model of the headline training the figures are (a released checkpoint is its test-selected best epoch);
    ``has_released``: some rows are released checkpoints (the methods table says which model those are).
    ``brief``: the title, the data's provenance and the every-variant table alone (report.section: brief).
    ``validation``: the data set's validation split, whose val-selected tau the tables show beside test-best and
    label-free (None: the data set has none, and the section says why: ``no_validation``).
    """
    factors, method_rows, sources = methods_rows(methods)
    order = {v: i for i, v in enumerate(variants)}
    full = table.assign(_order=table["variant"].map(order)).sort_values(["imbalance_factor", "_order"],
                                                                         ascending=[False, True])
    relative = {
        float(f): [{**e, "log": os.path.relpath(e["log"], link_base), "model": os.path.relpath(e["model"], link_base)}
                   for e in entries]
        for f, entries in links.items()
    }
    headline = comparison.to_dict("records")
    if compare_with:
        theirs = ({} if compared is None else
                  {float(r["imbalance_factor"]): r for r in compared.to_dict("records")})
        for row in headline:
            other = theirs.get(float(row["imbalance_factor"]))
            row["compared"] = None if other is None else {
                "top1": cell(other["top1"], other.get("top1_std", float("nan")), int(other.get("n_seeds", 1))),
                "finetuned": f"{cell(other['test_best_top1'])} (τ={other['test_best_tau']:g})"}
    return _template(template).render(
        note=note,
        headline_model=headline_model,
        has_released=has_released,
        compare_with=compare_with,
        compared_missing=compare_with is not None and compared is None,
        run_name=run_name,
        dataset=dataset,
        headline_variant=headline_variant,
        headline=headline,
        has_paper=bool(comparison["paper_finetuned"].notna().any()),
        full=full.to_dict("records"),
        links=relative,
        n_seeds=int(table["n_seeds"].max()),
        factors=factors,
        methods=method_rows,
        recipes=sorted({m["recipe"] for m in method_rows}),
        sources=sources,
        data_note=data_note,
        brief=brief,
        validation=validation,
        no_validation=no_validation,
    )


def markers(run_name: str) -> tuple[str, str]:
    """The two README lines between which a run's results section is spliced."""
    return f"<!-- BEGIN results: {run_name} -->", f"<!-- END results: {run_name} -->"


def splice_readme(readme: str | Path, run_name: str, section: str) -> bool:
    """Replace the README text between this run's markers, atomically; nothing else is touched.

    Returns False, leaving the README as it is, when it has no markers for this run (a run of one's own
    need not appear in the project's README); two pairs of them are an error, since either could be meant.
    """
    readme = Path(readme)
    begin, end = markers(run_name)
    text = readme.read_text()
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    found = len(pattern.findall(text))
    if found == 0:
        return False
    if found > 1:
        raise UserError(f"{readme} holds {found} pairs of the markers {begin} ... {end}; keep one, where run "
                        f"'{run_name}'s results should go")
    with atomic_write(readme) as f:
        f.write(pattern.sub(lambda _: f"{begin}\n{section.strip()}\n{end}", text))
    return True
