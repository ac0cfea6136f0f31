"""Writing results so that a crash never leaves a complete-looking file; job logs; errors meant for the user."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path
from typing import IO, Iterator


class UserError(Exception):
    """Input the user can fix (data, configuration, a diverging setting): the message names the problem and the fix.

    A job that raises one ends with that message alone on the terminal, once, and exit status 1; its traceback
    goes to the job's log for whoever needs it. Anything else is a bug and keeps its traceback everywhere.
    """


class DataError(UserError, RuntimeError):
    """The data on disk cannot be used; the message says which file and what to do."""


_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Write to a temporary file beside ``path``, fsync, then rename over it.

    Readers see either the old file or the whole new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the rest of a shared group
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def download(url: str, destination: Path) -> None:
    """Fetch ``url`` to ``destination`` with torchvision's downloader: the project's one downloader (CIFAR's
    archives, the split lists; the tests replace it)."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(destination.parent), destination.name)


def load_arrays(path: str | Path) -> dict:
    """Every array of a workflow's .npz file, or of a .npy file (under the key ""), read at once.

    A damaged file (truncated by a full disk, overwritten, half-copied) is named, with its fix, instead of
    numpy's traceback: the workflow made it, so removing it lets Snakemake make it again.
    """
    import numpy as np

    try:
        with open(path, "rb") as f:
            if str(path).endswith(".npy"):
                return {"": np.load(f, allow_pickle=False)}
            with np.load(f, allow_pickle=False) as saved:
                return {key: saved[key] for key in saved.files}
    except (FileNotFoundError, PermissionError):
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise DataError(
            f"{path} is damaged or incomplete ({type(error).__name__}: {error}); remove it and run the same "
            "command again: Snakemake makes it again, and reruns what reads it"
        ) from error


@contextlib.contextmanager
def log_to(path: str | Path) -> Iterator[None]:
    """Send a job's stdout and stderr (warnings and tracebacks too) to its log file, line-buffered.

    A UserError ends the job here: its message to the terminal (the job's real stderr) and exit status 1.
    """
    with open(path, "w", buffering=1) as log:
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                try:
                    yield
                except BaseException:
                    traceback.print_exc(file=log)
                    raise
        except UserError as error:
            print(f"Error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None

