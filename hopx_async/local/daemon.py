"""The state directory of ``start``/``stop``/``status``, and the detached server in it.

The files this command owns there (the backend owns the rest): the API key (0600), the
running server's record and pid, its log. ``start`` runs ``python -m hopx_async.local serve``
detached and returns once it answers; ``stop`` ends it (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_STATE_DIR",
    "LOG_FILE",
    "PID_FILE",
    "SERVER_FILE",
    "LocalCommandError",
    "pid_alive",
    "prepare_state_dir",
    "remembered_port",
    "resolve_api_key",
    "start",
    "status",
    "stop",
    "write_private",
]

logger = logging.getLogger("hopx_async.local")

#: the state directory's files owned by this command (the backend owns the rest)
KEY_FILE = "api-key"
SERVER_FILE = "server.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"
START_LOCK = "start.lock"

#: default state directory of start/stop/status
DEFAULT_STATE_DIR = "~/.local/state/hopx-local"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class LocalCommandError(Exception):
    """A start/stop/status failure, shown as one line."""


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def read_key_file(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise LocalCommandError(f"cannot read the key file {path}: {exc.strerror}") from None
    if not key:
        raise LocalCommandError(f"the key file {path} is empty")
    return key


def resolve_api_key(
    *, flag: str | None, key_file: str | None, state_dir: Path | None
) -> tuple[str, str]:
    """The server's API key and where it came from.

    Order: ``--api-key`` (warns: visible to every local user in the process list),
    ``--api-key-file``, ``HOPX_API_KEY``, the state directory's key file, else a new random
    key. With a state directory the key is saved there (0600) when it has none yet.
    """
    stored = state_dir / KEY_FILE if state_dir is not None else None
    if flag is not None:
        logger.warning(
            "--api-key puts the key on the command line, where other local users can read it; "
            "use HOPX_API_KEY or --api-key-file instead"
        )
        key, source = flag, "--api-key"
    elif key_file is not None:
        key, source = read_key_file(Path(key_file)), key_file
    elif os.environ.get("HOPX_API_KEY", "").strip():
        key, source = os.environ["HOPX_API_KEY"].strip(), "HOPX_API_KEY"
    elif stored is not None and stored.exists():
        key, source = read_key_file(stored), str(stored)
    else:
        key, source = "hopx_local_" + secrets.token_urlsafe(24), "new"
    if stored is not None and not stored.exists():
        write_private(stored, key + "\n")
    return key, source


def server_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remembered_port(state_dir: Path | None) -> int:
    if state_dir is None:
        return 0
    record = server_record(state_dir)
    port = record.get("port") if record else None
    return port if isinstance(port, int) and 0 < port < 65536 else 0


def prepare_state_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    state = Path(path).expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    return state


# ------------------------------------------------------------------- start / stop / status
def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def running_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def log_tail(state_dir: Path, lines: int = 5) -> str:
    try:
        tail = (state_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail)


def status(state_dir: Path) -> dict[str, Any]:
    """What is known about the server of ``state_dir``: running, pid, base_url."""
    pid = running_pid(state_dir)
    record = server_record(state_dir) or {}
    # the pid file alone could name a recycled pid: the recorded server must also answer
    running = pid is not None and record.get("pid") == pid and healthy(str(record.get("base_url")))
    return {
        "running": running,
        "pid": pid if running else None,
        "base_url": record.get("base_url") if running else None,
        "state_dir": str(state_dir),
        "log": str(state_dir / LOG_FILE),
    }


def start(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    rate_limit: int | None = None,
    api_key_file: str | None = None,
    timeout: float = START_TIMEOUT,
    dialect_options: Sequence[str] = (),
) -> tuple[str, str, bool]:
    """Start a detached server on ``state_dir`` (or find the running one).

    Returns ``(base_url, api_key, started)``; ``started`` is False when it was running.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _starting(state_dir, timeout):  # one start at a time: a second finds the first's
        return _start(state_dir, host, port, rate_limit, api_key_file, timeout, dialect_options)


@contextlib.contextmanager
def _starting(state_dir: Path, timeout: float) -> Iterator[None]:
    """Hold ``STATE/start.lock`` (an exclusive ``flock``) while a start runs."""
    fd = os.open(state_dir / START_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LocalCommandError(
                        f"another start on {state_dir} did not finish within {timeout:g} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _start(
    state_dir: Path,
    host: str,
    port: int,
    rate_limit: int | None,
    api_key_file: str | None,
    timeout: float,
    dialect_options: Sequence[str],
) -> tuple[str, str, bool]:
    stored = state_dir / KEY_FILE
    current = status(state_dir)
    if current["running"]:
        return str(current["base_url"]), read_key_file(stored), False
    # HOPX_API_KEY is ignored here: in a shell it is the key of whatever server the shell
    # points at. The state directory's key survives restarts.
    if api_key_file is not None:
        api_key = read_key_file(Path(api_key_file))
        write_private(stored, api_key + "\n")
    elif stored.exists():
        api_key = read_key_file(stored)
    else:
        api_key = "hopx_local_" + secrets.token_urlsafe(24)
        write_private(stored, api_key + "\n")
    command = [sys.executable, "-m", "hopx_async.local", "serve", "--state-dir", str(state_dir)]
    command += ["--host", host]
    if port:
        command += ["--port", str(port)]
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit)]
    command += list(dialect_options)  # --dialect and its knobs, passed on as given
    env = dict(os.environ, HOPX_API_KEY=api_key)
    log_fd = os.open(state_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_fd,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise LocalCommandError(
                f"the server exited with {code} while starting: {log_tail(state_dir)}"
            )
        record = server_record(state_dir)
        if record and record.get("pid") == proc.pid and healthy(str(record["base_url"])):
            return str(record["base_url"]), api_key, True
        time.sleep(0.05)
    proc.terminate()
    raise LocalCommandError(
        f"the server did not answer within {timeout:g} s; see {state_dir / LOG_FILE}"
    )


def stop(state_dir: Path, *, timeout: float = STOP_TIMEOUT) -> int | None:
    """Stop the server of ``state_dir`` (SIGTERM, then SIGKILL); its pid, or None if none ran."""
    current = status(state_dir)
    pid = current["pid"]
    if not isinstance(pid, int):
        with contextlib.suppress(OSError):
            (state_dir / PID_FILE).unlink()
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        (state_dir / PID_FILE).unlink()
    return pid
