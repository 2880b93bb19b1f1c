"""What the commands print: terminal or pipe, tables, JSON, progress, formatting, notes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import attrs
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from hopx_async import HopxError, ProcessInfo, ProcessResult, ProcessStatus

# -------------------------------------------------------------------------------- consoles
err_console = Console(stderr=True, highlight=False)


def out_console() -> Console:
    """stdout as a rich console (plain when stdout is not a terminal)."""
    return Console(highlight=False)


def interactive() -> bool:
    """Whether stdout is a terminal: live progress and tables, else plain lines."""
    return sys.stdout.isatty()


def note(message: str) -> None:
    """One line for the user on stderr."""
    print(f"hopx: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- tables
def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, status_column: int | None = None
) -> None:
    """A table: rich on a terminal, tab-free aligned columns when piped."""
    rows = [list(r) for r in rows]
    if interactive():
        table = Table(*headers, box=None, header_style="bold", pad_edge=False)
        for row in rows:
            cells: list[str | Text] = list(row)
            if status_column is not None:
                cells[status_column] = Text(
                    row[status_column], style=status_style(row[status_column])
                )
            table.add_row(*cells)
        out_console().print(table)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for line in [list(headers), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def progress_bar() -> Progress:
    """A rich progress bar (spinner, tally, bar, done/total, elapsed) on stdout."""
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out_console(),
    )


def tally(results: Iterable[ProcessResult]) -> str:
    """``2 completed, 1 failed``: how many results have each status."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "waiting"


# ------------------------------------------------------------------------------------ JSON
def jsonable(value: Any) -> Any:
    """Models, datetimes and containers as JSON-ready values."""
    if hasattr(value, "to_dict") and attrs.has(type(value)):
        return {k: jsonable(v) for k, v in value.to_dict(json_ready=True).items()}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if attrs.has(type(value)):
        return jsonable(attrs.asdict(value, recurse=False))
    return value


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------ formatting
def fmt_duration(seconds: float | None) -> str:
    """``0.25s``, ``12.0s``, ``3m05s``; empty when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def fmt_time(value: datetime | None) -> str:
    """Local ``HH:MM:SS`` today, else ``YYYY-MM-DD HH:MM``."""
    if value is None:
        return ""
    local = value.astimezone()
    if local.date() == datetime.now(timezone.utc).astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M")


def fmt_exit(code: int | None) -> str:
    return "" if code is None else str(code)


def plural(count: int, word: str) -> str:
    """``1 process``, ``2 processes``."""
    if count == 1:
        return f"1 {word}"
    return f"{count} {word}es" if word.endswith(("s", "x")) else f"{count} {word}s"


def status_style(status: str) -> str:
    """A rich style per process status."""
    return {
        "completed": "green",
        "running": "cyan",
        "queued": "cyan",
        "failed": "red",
        "killed": "magenta",
        "timeout": "yellow",
    }.get(status, "")


def duration_of(info: ProcessInfo | ProcessResult) -> float | None:
    if info.execution_time is not None:
        return info.execution_time
    if info.started_at is not None and not ProcessStatus.is_terminal(info.status):
        return (datetime.now(timezone.utc) - info.started_at).total_seconds()
    return None


def describe(exc: BaseException) -> str:
    """One line for an error of the SDK."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if isinstance(exc, HopxError) and not first:
        return type(exc).__name__
    return first
