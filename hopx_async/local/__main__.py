"""Run the local backend from a shell: in the foreground, or detached with start/stop/status.

``python -m hopx_async.local serve`` (also ``hopx local serve``) runs the server until
SIGINT/SIGTERM. When ready it prints exactly two lines to stdout::

    HOPX_BASE_URL=http://127.0.0.1:PORT
    HOPX_API_KEY=KEY

Everything else goes to stderr.

``start --state-dir D`` runs the same server detached, returns once it answers, and prints
``export HOPX_BASE_URL=...`` and ``export HOPX_API_KEY=...`` for ``eval``::

    eval "$(hopx local start --state-dir ~/.hopx-local)"
    hopx local status --state-dir ~/.hopx-local
    hopx local stop --state-dir ~/.hopx-local

The API key never appears on the server's command line: it comes from ``HOPX_API_KEY``, a
key file (``--api-key-file``), or the state directory's ``api-key`` file (mode 0600, created
on first start). With a state directory the key and the port survive restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backend import LocalBackend

__all__ = ["main"]

logger = logging.getLogger("hopx_async.local")

#: the state directory's files owned by this command (the backend owns the rest)
KEY_FILE = "api-key"
SERVER_FILE = "server.json"
PID_FILE = "server.pid"
LOG_FILE = "server.log"

#: default state directory of start/stop/status
DEFAULT_STATE_DIR = "~/.local/state/hopx-local"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class LocalCommandError(Exception):
    """A start/stop/status failure, shown as one line."""


# ---------------------------------------------------------------------------- key and port
def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start (never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def _read_key_file(path: Path) -> str:
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
        key, source = _read_key_file(Path(key_file)), key_file
    elif os.environ.get("HOPX_API_KEY", "").strip():
        key, source = os.environ["HOPX_API_KEY"].strip(), "HOPX_API_KEY"
    elif stored is not None and stored.exists():
        key, source = _read_key_file(stored), str(stored)
    else:
        key, source = "hopx_local_" + secrets.token_urlsafe(24), "new"
    if stored is not None and not stored.exists():
        _write_private(stored, key + "\n")
    return key, source


def _server_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / SERVER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remembered_port(state_dir: Path | None) -> int:
    if state_dir is None:
        return 0
    record = _server_record(state_dir)
    port = record.get("port") if record else None
    return port if isinstance(port, int) and 0 < port < 65536 else 0


def _prepare_state_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    state = Path(path).expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    return state


# ---------------------------------------------------------------------------------- serve
async def _serve(args: argparse.Namespace, state_dir: Path | None, api_key: str) -> None:
    port = args.port if args.port else _remembered_port(state_dir)
    backend = LocalBackend(
        state_dir=state_dir,
        api_key=api_key,
        host=args.host,
        port=port,
        rate_limit_per_minute=args.rate_limit,
        callback_hosts=args.callback_host,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await backend.start()
    except OSError as exc:
        if port and not args.port:
            raise OSError(
                exc.errno,
                f"port {port}, kept in {state_dir} from the last run, is taken "
                f"({exc.strerror}); pass --port",
            ) from None
        raise
    try:
        if state_dir is not None:
            bound = int(backend.base_url.rsplit(":", 1)[1])
            record = {"pid": os.getpid(), "base_url": backend.base_url, "port": bound}
            _write_private(state_dir / SERVER_FILE, json.dumps(record) + "\n")
            _write_private(state_dir / PID_FILE, f"{os.getpid()}\n")
        sys.stdout.write(f"HOPX_BASE_URL={shlex.quote(backend.base_url)}\n")
        sys.stdout.write(f"HOPX_API_KEY={shlex.quote(backend.api_key)}\n")
        sys.stdout.flush()
        await stop.wait()
        logger.info("signal received; stopping")
    finally:
        await backend.stop()
        if state_dir is not None:
            with contextlib.suppress(OSError):
                (state_dir / PID_FILE).unlink()


def cmd_serve(args: argparse.Namespace) -> int:
    state_dir = _prepare_state_dir(args.state_dir)
    api_key, _ = resolve_api_key(flag=args.api_key, key_file=args.api_key_file, state_dir=state_dir)
    asyncio.run(_serve(args, state_dir, api_key))
    return 0


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


def _running_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _exports(base_url: str, api_key: str) -> str:
    return (
        f"export HOPX_BASE_URL={shlex.quote(base_url)}\n"
        f"export HOPX_API_KEY={shlex.quote(api_key)}\n"
    )


def _log_tail(state_dir: Path, lines: int = 5) -> str:
    try:
        tail = (state_dir / LOG_FILE).read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail)


def status(state_dir: Path) -> dict[str, Any]:
    """What is known about the server of ``state_dir``: running, pid, base_url."""
    pid = _running_pid(state_dir)
    record = _server_record(state_dir) or {}
    # the pid file alone could name a recycled pid: the recorded server must also answer
    running = pid is not None and record.get("pid") == pid and _healthy(str(record.get("base_url")))
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
) -> tuple[str, str, bool]:
    """Start a detached server on ``state_dir`` (or find the running one).

    Returns ``(base_url, api_key, started)``; ``started`` is False when it was running.
    """
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stored = state_dir / KEY_FILE
    current = status(state_dir)
    if current["running"]:
        return str(current["base_url"]), _read_key_file(stored), False
    # HOPX_API_KEY is ignored here: in a shell it is the key of whatever server the shell
    # points at. The state directory's key survives restarts.
    if api_key_file is not None:
        api_key = _read_key_file(Path(api_key_file))
        _write_private(stored, api_key + "\n")
    elif stored.exists():
        api_key = _read_key_file(stored)
    else:
        api_key = "hopx_local_" + secrets.token_urlsafe(24)
        _write_private(stored, api_key + "\n")
    command = [sys.executable, "-m", "hopx_async.local", "serve", "--state-dir", str(state_dir)]
    command += ["--host", host]
    if port:
        command += ["--port", str(port)]
    if rate_limit is not None:
        command += ["--rate-limit", str(rate_limit)]
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
                f"the server exited with {code} while starting: {_log_tail(state_dir)}"
            )
        record = _server_record(state_dir)
        if record and record.get("pid") == proc.pid and _healthy(str(record["base_url"])):
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


def _state_arg(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).expanduser().resolve()


def cmd_start(args: argparse.Namespace) -> int:
    state_dir = _state_arg(args)
    base_url, api_key, started = start(
        state_dir,
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        api_key_file=args.api_key_file,
    )
    sys.stdout.write(_exports(base_url, api_key))
    sys.stdout.flush()
    what = "started" if started else "already running"
    print(f"local backend {what} at {base_url} (state in {state_dir})", file=sys.stderr)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    state_dir = _state_arg(args)
    pid = stop(state_dir)
    if pid is None:
        print(f"no local backend running on {state_dir}", file=sys.stderr)
    else:
        print(f"stopped the local backend (pid {pid})", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = status(_state_arg(args))
    if args.json:
        print(json.dumps(info))
    elif info["running"]:
        print(f"running at {info['base_url']} (pid {info['pid']}, state in {info['state_dir']})")
    else:
        print(f"not running (state in {info['state_dir']})")
    return 0 if info["running"] else 3


# --------------------------------------------------------------------------------- parser
def _server_options(parser: argparse.ArgumentParser, *, port_help: str) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=0, help=port_help)
    parser.add_argument(
        "--api-key-file",
        default=None,
        metavar="PATH",
        help="read the API key from this file (default: STATE/api-key, created 0600)",
    )
    parser.add_argument(
        "--rate-limit", type=int, default=None, metavar="N", help="requests per minute (off)"
    )


def build_parser(prog: str = "python -m hopx_async.local") -> argparse.ArgumentParser:
    """The argument parser of ``serve``/``start``/``stop``/``status``."""
    parser = argparse.ArgumentParser(prog=prog, description="The embedded HopX local backend.")
    sub = parser.add_subparsers(dest="command", required=True)
    port_help = "port (default: the one of the last run with this state dir, else a free one)"

    serve = sub.add_parser("serve", help="run the server in the foreground until SIGINT/SIGTERM")
    _server_options(serve, port_help=port_help)
    serve.add_argument(
        "--api-key",
        default=None,
        help="API key (deprecated: visible in the process list; use HOPX_API_KEY)",
    )
    serve.add_argument(
        "--state-dir", default=None, help="keep state here across restarts (default: temporary)"
    )
    serve.add_argument("--log-level", default="INFO", help="stderr log level (default INFO)")
    serve.add_argument(
        "--callback-host",
        action="append",
        default=None,
        metavar="HOST",
        help="a host /execute/async may post results to (repeatable; a name, *.suffix, an IP "
        "or network, or *; default: $HOPX_LOCAL_CALLBACK_HOSTS, else loopback only)",
    )
    serve.set_defaults(func=cmd_serve)

    state_help = f"state directory (default {DEFAULT_STATE_DIR})"
    start_p = sub.add_parser("start", help="start the server detached; print export lines for eval")
    _server_options(start_p, port_help=port_help)
    start_p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=state_help)
    start_p.set_defaults(func=cmd_start)

    stop_p = sub.add_parser("stop", help="stop the server started with start")
    stop_p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=state_help)
    stop_p.set_defaults(func=cmd_stop)

    status_p = sub.add_parser("status", help="is it running? (exit 0 yes, 3 no)")
    status_p.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help=state_help)
    status_p.add_argument("--json", action="store_true", help="print a JSON object")
    status_p.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m hopx_async.local") -> int:
    """Entry point of ``python -m hopx_async.local`` and ``hopx-local``."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(args, "log_level", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except LocalCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot start the local backend: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
