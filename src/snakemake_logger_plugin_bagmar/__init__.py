"""The workflow's terminal output: one line a job, its reason in short, and what went wrong printed last.

A Snakemake logger plugin (``--logger bagmar``; the workflow's profiles set it). Snakemake's own output names every
input and output file of a job and every value of a changed param, on lines of thousands of characters, and ends a
failed run with its own summary after the job's message. This handler writes the same events, shorter:

- a job: ``[time] rule (wildcards): reason``, the reason's file lists counted, each line at most ``WIDTH``
  characters; a dry run reads in one screen;
- a failed job: one line naming its log, and when the run ends, for each failed job, the message its log ends with
  (a bagmar error's one line, or the last line of a traceback), so that what went wrong is the last thing printed;
- everything else as Snakemake writes it (through its default formatter and filter, so ``--quiet`` works as usual).

``--logger-bagmar-jobs full`` shows Snakemake's own block for each job instead of its line (every input, output,
wildcard and resource), for whoever needs them; the failures are still summarised last.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

WIDTH = 200
# Snakemake's reasons: "<what>: <file>, <file>, ...; <what>: ..." ("Params have changed ..." holds values)
_FILE_REASONS = ("Missing output files", "Input files updated by another job", "Updated input files",
                 "Set of input files has changed since last execution", "Forced execution")
_PARAMS = "Params have changed since last execution: Union of exclusive params before and now across all output: "
_PROVENANCE = "Some jobs were triggered by provenance information"
# the line a traceback ends with: "package.module.SomeError: message"
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?P<kind>[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))(?:: (?P<msg>.*))?$")
_USER_ERRORS = {"UserError", "DataError", "ConfigError", "RecipeError"}  # bagmar's: the message is the whole story


def shorten(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def short_reason(reason: str) -> str:
    """Snakemake's reason with each file list counted and a params change as before/now."""
    parts = []
    for part in str(reason).split("; "):
        what, _, rest = part.partition(": ")
        if what in _FILE_REASONS and rest:
            files = rest.split(", ")
            parts.append(f"{what.lower()}: {files[0]}" + (f" and {len(files) - 1} more" if len(files) > 1 else ""))
        elif part.startswith(_PARAMS):
            parts.append("changed " + part[len(_PARAMS):].strip())
        else:
            parts.append(part)
    return "; ".join(parts)


def wildcards_text(wildcards) -> str:
    items = dict(wildcards or {}).items()
    return ", ".join(f"{key}={value}" for key, value in items)


def last_message(log: str | Path) -> str | None:
    """What a failed job's log says went wrong: the message of the exception it ends with (from its first line to the
    end, for messages of several lines), or its last line."""
    try:
        lines = [line.rstrip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    for i in range(len(lines) - 1, -1, -1):
        found = _EXCEPTION.match(lines[i])
        if found:
            message = "\n".join([found["msg"] or "", *lines[i + 1:]]).strip()
            if found["kind"] in _USER_ERRORS:
                return message
            return f"{found['kind']}: {message}" if message else found["kind"]
    return lines[-1] if lines else None


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    jobs: str = field(default="short", metadata={
        "help": "short: one line a job, its reason in short; full: Snakemake's own block for each job",
        "choices": ["short", "full"], "type": str})


class LogHandler(LogHandlerBase):
    """Writes Snakemake's events to its stream (stderr, or stdout with --stdout), shorter; see the module."""

    def __post_init__(self) -> None:
        self.stream = sys.stdout if getattr(self.common_settings, "stdout", False) else sys.stderr
        self.failed: list[tuple[str, str, list[str]]] = []  # (rule, wildcards, logs)

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return False  # Snakemake's default filter: --quiet, --printshellcmds and dry runs as usual

    @property
    def has_formatter(self) -> bool:
        return False  # Snakemake's default formatter, for the events not shortened here

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def emit(self, record) -> None:
        try:
            text = self.text(record)
            if text is not None:
                self.stream.write(text + "\n")
                self.stream.flush()
        except Exception:  # noqa: BLE001 (a logging handler reports its own failures, as logging does)
            self.handleError(record)

    def text(self, record) -> str | None:
        event = getattr(record, "event", None)
        stamp = f"[{time.strftime('%H:%M:%S')}]"
        if event == LogEvent.WORKFLOW_STARTED:
            files = ", ".join(str(f) for f in getattr(record, "configfiles", None) or []) or "none"
            return shorten(f"Snakemake {getattr(record, 'snakemake_version', '')} in {getattr(record, 'cwd', '')}; "
                           f"config files: {files}")
        full = getattr(self.settings, "jobs", "short") == "full"
        if event == LogEvent.JOB_INFO and not getattr(record, "rule_msg", None) and not full:
            head = f"{stamp} {record.rule_name}"
            wildcards = wildcards_text(getattr(record, "wildcards", None))
            if wildcards:
                head += f" ({wildcards})"
            reason = getattr(record, "reason", None)
            lines = [shorten(f"{head}: {short_reason(reason)}" if reason else head)]
            logs = list(getattr(record, "log", None) or [])
            if logs and not getattr(self.common_settings, "dryrun", False):
                lines.append(shorten(f"    log: {', '.join(logs)}"))
            return "\n".join(lines)
        if event == LogEvent.JOB_ERROR:
            wildcards = wildcards_text(getattr(record, "wildcards", None))
            logs = list(getattr(record, "log", None) or [])
            self.failed.append((record.rule_name, wildcards, logs))
            if full:
                return self.format(record)
            where = f" ({wildcards})" if wildcards else ""
            return shorten(f"{stamp} {record.rule_name}{where} failed" + (f"; log: {', '.join(logs)}" if logs else ""))
        message = record.getMessage() if event in (None, LogEvent.ERROR) else None
        if message and message.startswith("RuleException:") and "returned non-zero exit status" in message:
            return None  # a script job's exit status: the failed job's line and its log's message follow
        if message and message.startswith(_PROVENANCE):
            return ("Some jobs rerun because their settings or code changed (the reasons above); "
                    "--rerun-triggers mtime would ignore such changes.")
        return self.format(record)

    def close(self) -> None:
        """At the end of the run (Snakemake closes its handlers last): each failed job's message, last."""
        try:
            if self.failed:
                out = ["", "What went wrong:"]
                for rule, wildcards, logs in self.failed:
                    where = f" ({wildcards})" if wildcards else ""
                    messages = [m for m in map(last_message, logs) if m]
                    out.append(f"- {rule}{where}" + (f", log {', '.join(logs)}:" if logs else ":"))
                    out.extend("  " + line for m in messages for line in m.splitlines())
                    if not messages:
                        out.append("  (no log to read: see the output above)")
                self.stream.write("\n".join(out) + "\n")
                self.stream.flush()
                self.failed = []
        finally:
            super().close()
