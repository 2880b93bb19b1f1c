"""Shared pieces of the command line: exit codes, references, JSON, output, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs

from hopx_async import AsyncHopx, HopxError

T = TypeVar("T")

# ------------------------------------------------------------------------------ exit codes
EXIT_OK = 0
#: a process failed or was killed (``run`` exits with the process's own code instead)
EXIT_FAILED = 1
#: bad arguments or options
EXIT_USAGE = 2
#: the API answered with an error, or could not be reached
EXIT_API = 3
#: a process timed out, or ``wait --timeout`` expired
EXIT_TIMEOUT = 124
#: interrupted by Ctrl-C
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""\b
Exit codes:
  {EXIT_OK}    success
  {EXIT_FAILED}    a process failed or was killed (run: the process's own exit code)
  {EXIT_USAGE}    usage error (bad arguments or options)
  {EXIT_API}    API or connection error (bad key, unknown sandbox, server unreachable)
  {EXIT_TIMEOUT}  a process timed out, or wait --timeout expired
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""


class CliError(Exception):
    """An error shown as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_API) -> None:
        super().__init__(message)
        self.code = code


class Interrupted(Exception):
    """Ctrl-C arrived while waiting."""


# ------------------------------------------------------------------------------ references
@attrs.frozen
class Ref:
    """A process reference, ``SANDBOX/PROCESS``: one token the other commands accept."""

    sandbox_id: str
    process_id: str

    def __str__(self) -> str:
        return f"{self.sandbox_id}/{self.process_id}"


def parse_ref(text: str, default_sandbox: str | None) -> Ref:
    """``sbx_1/proc_2``, or ``proc_2`` with a default sandbox (``--sandbox``/``HOPX_SANDBOX``)."""
    sandbox, sep, process = text.strip().partition("/")
    if sep:
        if not sandbox or not process or "/" in process:
            raise CliError(f"bad process reference {text!r}: expected SANDBOX/PROCESS", EXIT_USAGE)
        return Ref(sandbox, process)
    if not sandbox:
        raise CliError("empty process reference", EXIT_USAGE)
    if not default_sandbox:
        raise CliError(
            f"process reference {text!r} has no sandbox: use SANDBOX/PROCESS, "
            "--sandbox or HOPX_SANDBOX",
            EXIT_USAGE,
        )
    return Ref(default_sandbox, sandbox)


def parse_env(pairs: Iterable[str], env_file: str | None) -> dict[str, str]:
    """``KEY=VALUE`` options after the lines of ``env_file`` (``#`` comments, blank lines)."""
    env: dict[str, str] = {}
    if env_file is not None:
        try:
            with open(env_file, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise CliError(
                f"cannot read --env-file {env_file}: {exc.strerror}", EXIT_USAGE
            ) from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("export "):
                line = line[len("export ") :].lstrip()
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise CliError(f"{env_file}:{number}: expected KEY=VALUE", EXIT_USAGE)
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--env {pair!r}: expected KEY=VALUE", EXIT_USAGE)
        env[key] = value
    return env


# ---------------------------------------------------------------------------------- client
@attrs.define
class Settings:
    """Global options: where the API is, and how to show things."""

    api_key: str | None = None
    base_url: str | None = None
    debug: bool = False

    def client(self) -> AsyncHopx:
        """A new client (``async with``), from the flags, else the environment."""
        return AsyncHopx(api_key=self.api_key, base_url=self.base_url)


def default_sandbox(flag: str | None) -> str | None:
    """``--sandbox``, else ``HOPX_SANDBOX``."""
    return flag or os.environ.get("HOPX_SANDBOX") or None


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


def describe(exc: BaseException) -> str:
    """One line for an error of the SDK."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if isinstance(exc, HopxError) and not first:
        return type(exc).__name__
    return first


# ----------------------------------------------------------------------------------- Ctrl-C
async def interruptible(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; on SIGINT cancel it and raise :class:`Interrupted`."""
    loop = asyncio.get_running_loop()
    task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
        return await task
    try:
        return await task
    except asyncio.CancelledError:
        if interrupted:
            raise Interrupted from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)
