"""A workflow job's settings as Snakemake rerun keys: exact, and short enough to read in a dry run.

Snakemake reruns a job whose params changed and prints, as the reason, every changed param's value before and
now. A job's members (every recipe of a fused group) are handed to its script whole, but as a ``Handed`` list,
whose text is constant, so they never appear there; what Snakemake compares instead are ``member_keys``: one line
a training, its settings as the config writes them and a hash of everything the job is handed for it. A change
to one λ then reads ``before: BaGMar_pn: lambda1=1.2, lambda2=0.9 #<hash> now: BaGMar_pn: lambda1=1.3, …``.
"""

from __future__ import annotations

import hashlib
import json

SHOWN = 60  # characters of a training's settings shown in its key; the hash keeps the key exact beyond them


class Handed(list):
    """A job's members, handed to its script as a list; compared through ``member_keys``, not through its text."""

    def __repr__(self) -> str:
        return "members (compared by their keys)"


def digest(value) -> str:
    """A short hash of a JSON-able value, for rerun keys (8 bytes of sha256)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_text(settings: dict) -> str:
    """A training's settings as the config writes them, on one short line."""
    text = ", ".join(f"{key}={value}" for key, value in settings.items()) or "defaults"
    return text if len(text) <= SHOWN else text[:SHOWN - 1] + "…"


def member_keys(members: list[dict], trainings: dict[str, dict]) -> list[str]:
    """One key a training of the job, in member order: its name, its settings (``trainings``, the config's) and a
    hash of all it is handed for that training (its members' recipes, seeds, imbalance factors, output names)."""
    by_training: dict[str, list[dict]] = {}
    for member in members:
        by_training.setdefault(member["training"], []).append(member)
    return [f"{name}: {settings_text(trainings.get(name, {}))} #{digest(held)}" for name, held in by_training.items()]

