"""Per-epoch training checkpoints: written atomically, loaded without executing code.

They live outside the job's declared outputs (Snakemake deletes a failed job's outputs), so a
killed or pre-empted training resumes from its newest intact epoch. A checkpoint holds tensors,
numbers and strings only, and is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_write

_NAME = re.compile(r"epoch(\d{4,})\.pt$")
KEEP = 2  # the newest, and the one before it in case the newest is damaged on disk


def fingerprint(settings: dict, *arrays: np.ndarray) -> str:
    """Identifies what a checkpoint belongs to: a checkpoint of other settings or data is never resumed."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def save(directory: str | Path, epoch: int, state: dict) -> Path:
    """Write epoch ``epoch``'s state, then drop all but the newest KEEP checkpoints."""
    directory = Path(directory)
    path = directory / f"epoch{epoch:04d}.pt"
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    for old in _checkpoints(directory)[KEEP:]:
        old.unlink(missing_ok=True)
    for orphan in directory.glob(".epoch*.tmp"):  # left by a writer killed mid-write
        orphan.unlink(missing_ok=True)
    return path


def load_latest(directory: str | Path, expected_fingerprint: str, device: str | torch.device) -> dict | None:
    """The newest checkpoint that loads and matches; damaged or foreign ones are reported and skipped."""
    for path in _checkpoints(Path(directory)):
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as error:  # truncated, corrupt, or a pickle that would run code
            warnings.warn(f"checkpoint {path} cannot be read ({type(error).__name__}: {error}); trying an older one")
            continue
        if state.get("fingerprint") != expected_fingerprint:
            warnings.warn(f"checkpoint {path} belongs to other settings or data; not resuming from it")
            continue
        return state
    return None


def _checkpoints(directory: Path) -> list[Path]:
    """Newest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found, reverse=True)]
