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
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .backend import LocalBackend
from .daemon import (
    DEFAULT_STATE_DIR,
    PID_FILE,
    SERVER_FILE,
    LocalCommandError,
    prepare_state_dir,
    remembered_port,
    resolve_api_key,
    start,
    status,
    stop,
    write_private,
)
from .service.dialect import DIALECTS, Dialect, dialect_from
from .state.lock import StateDirInUse, StateLock

__all__ = ["main"]

logger = logging.getLogger("hopx_async.local")


# ---------------------------------------------------------------------------------- serve
def _dialect(args: argparse.Namespace) -> Dialect | None:
    """The dialect the options name (else ``HOPX_LOCAL_DIALECT``), with the knobs given."""
    knobs = {
        "boot_seconds": args.boot_seconds,
        "control_rate_per_minute": args.control_rate,
        "agent_rate_per_minute": args.agent_rate,
        "create_rate_per_minute": args.create_rate,
        "rate_window_seconds": args.rate_window,
    }
    given = {k: v for k, v in knobs.items() if v is not None}
    if args.dialect is None and not given:
        return None
    return Dialect.named(args.dialect or dialect_from(None).name, **given)


async def _serve(args: argparse.Namespace, state_dir: Path | None, api_key: str) -> None:
    port = args.port if args.port else remembered_port(state_dir)
    backend = LocalBackend(
        state_dir=state_dir,
        api_key=api_key,
        host=args.host,
        port=port,
        rate_limit_per_minute=args.rate_limit,
        callback_hosts=args.callback_host,
        dialect=_dialect(args),
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
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
            write_private(state_dir / SERVER_FILE, json.dumps(record) + "\n")
            write_private(state_dir / PID_FILE, f"{os.getpid()}\n")
        sys.stdout.write(f"HOPX_BASE_URL={shlex.quote(backend.base_url)}\n")
        sys.stdout.write(f"HOPX_API_KEY={shlex.quote(backend.api_key)}\n")
        sys.stdout.flush()
        await stopping.wait()
        logger.info("signal received; stopping")
    finally:
        await backend.stop()
        if state_dir is not None:
            with contextlib.suppress(OSError):
                (state_dir / PID_FILE).unlink()


def cmd_serve(args: argparse.Namespace) -> int:
    state_dir = prepare_state_dir(args.state_dir)
    try:
        if state_dir is not None:
            StateLock.probe(state_dir)  # refuse before the key file or anything is touched
        api_key, _ = resolve_api_key(
            flag=args.api_key, key_file=args.api_key_file, state_dir=state_dir
        )
        asyncio.run(_serve(args, state_dir, api_key))
    except StateDirInUse as exc:
        raise LocalCommandError(str(exc)) from None
    return 0


def _exports(base_url: str, api_key: str) -> str:
    return (
        f"export HOPX_BASE_URL={shlex.quote(base_url)}\n"
        f"export HOPX_API_KEY={shlex.quote(api_key)}\n"
    )


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
        dialect_options=_dialect_argv(args),
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
_KNOB_FLAGS = (
    ("--dialect", "dialect"),
    ("--boot-seconds", "boot_seconds"),
    ("--control-rate", "control_rate"),
    ("--agent-rate", "agent_rate"),
    ("--create-rate", "create_rate"),
    ("--rate-window", "rate_window"),
)


def _dialect_argv(args: argparse.Namespace) -> list[str]:
    """The dialect options given to ``start``, to pass on to the ``serve`` it starts."""
    argv: list[str] = []
    for flag, name in _KNOB_FLAGS:
        value = getattr(args, name)
        if value is not None:
            argv += [flag, str(value)]
    return argv


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
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default=None,
        help="extended (default; env HOPX_LOCAL_DIALECT), hopx or openapi (docs/wire.md 13)",
    )
    knobs = parser.add_argument_group("dialect knobs (default: the dialect's)")
    knobs.add_argument("--boot-seconds", type=float, default=None, metavar="S")
    knobs.add_argument("--control-rate", type=int, default=None, metavar="N", help="per minute")
    knobs.add_argument("--agent-rate", type=int, default=None, metavar="N", help="per sandbox")
    knobs.add_argument("--create-rate", type=int, default=None, metavar="N", help="per minute")
    knobs.add_argument("--rate-window", type=float, default=None, metavar="S", help="seconds")


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
