"""Shared pieces of the commands: exit codes, errors, references, settings, input, Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import attrs

from hopx_async import AsyncHopx, ProcessResult, ProcessStatus

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

NO_KEY = (
    "no HopX API key: pass --api-key KEY (before the command: hopx --api-key KEY ...) or set "
    'HOPX_API_KEY; for the local backend, eval "$(hopx local start --state-dir DIR)" sets '
    "HOPX_BASE_URL and HOPX_API_KEY in the shell"
)

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
        if not (self.api_key or os.environ.get("HOPX_API_KEY", "")).strip():
            raise CliError(NO_KEY, EXIT_USAGE)
        return AsyncHopx(api_key=self.api_key, base_url=self.base_url)


def default_sandbox(flag: str | None) -> str | None:
    """``--sandbox``, else ``HOPX_SANDBOX``."""
    return flag or os.environ.get("HOPX_SANDBOX") or None


# ----------------------------------------------------------------------------------- input
DEFAULT_TEMPLATE = "code-interpreter"
LANGUAGES = ("python", "javascript", "bash", "go")
_SUFFIX_LANGUAGE = {
    ".py": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".sh": "bash",
    ".go": "go",
}


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


# ------------------------------------------------------------------------------- running
def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine on a fresh event loop."""
    return asyncio.run(coro)


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
