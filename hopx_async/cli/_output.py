"""Output and shared helpers of the commands: terminal or pipe, tables, progress."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

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

from hopx_async import (
    ProcessInfo,
    ProcessResult,
    ProcessStatus,
)

from ._common import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    status_style,
)

T = TypeVar("T")

DEFAULT_TEMPLATE = "code-interpreter"
LANGUAGES = ("python", "javascript", "bash", "go")
_SUFFIX_LANGUAGE = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".sh": "bash",
    ".go": "go",
}

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


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine on a fresh event loop."""
    return asyncio.run(coro)


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


def language_for(path: str | None, given: str | None) -> str:
    if given:
        return given
    if path and path != "-":
        return _SUFFIX_LANGUAGE.get(Path(path).suffix.lower(), "python")
    return "python"


def read_source(path: str | None, code: str | None) -> str:
    """The code of ``FILE``, ``-c CODE`` or ``-`` (stdin)."""
    if (path is None) == (code is None):
        raise CliError("give one of FILE, -c CODE or - (stdin)", EXIT_USAGE)
    if code is not None:
        return code
    assert path is not None
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


def process_exit_code(result: ProcessResult) -> int:
    """The exit code of ``hopx run`` for a finished process."""
    if result.status == ProcessStatus.TIMEOUT:
        return EXIT_TIMEOUT
    if result.status == ProcessStatus.COMPLETED:
        return result.exit_code or 0
    if result.exit_code:
        return result.exit_code
    return EXIT_FAILED


def duration_of(info: ProcessInfo | ProcessResult) -> float | None:
    if info.execution_time is not None:
        return info.execution_time
    if info.started_at is not None and not ProcessStatus.is_terminal(info.status):
        return (datetime.now(timezone.utc) - info.started_at).total_seconds()
    return None


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
