"""Writing results so that a crash never leaves a complete-looking file; job logs; errors meant for the user."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
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

