"""``python -m hopx_async.local serve``: run the local backend until SIGINT/SIGTERM.

When ready it prints exactly two lines to stdout, for a shell to ``eval``::

    HOPX_BASE_URL=http://127.0.0.1:PORT
    HOPX_API_KEY=KEY

Everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import signal
import sys
from collections.abc import Sequence

from ._backend import LocalBackend

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hopx_async.local", description="The embedded HopX local backend."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server until SIGINT/SIGTERM")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    serve.add_argument("--api-key", default=None, help="API key (default: a random one)")
    serve.add_argument(
        "--state-dir", default=None, help="keep state here across restarts (default: temporary)"
    )
    serve.add_argument(
        "--rate-limit", type=int, default=None, metavar="N", help="requests per minute (off)"
    )
    serve.add_argument("--log-level", default="INFO", help="stderr log level (default INFO)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    backend = LocalBackend(
        state_dir=args.state_dir,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        rate_limit_per_minute=args.rate_limit,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await backend.start()
    try:
        sys.stdout.write(f"HOPX_BASE_URL={shlex.quote(backend.base_url)}\n")
        sys.stdout.write(f"HOPX_API_KEY={shlex.quote(backend.api_key)}\n")
        sys.stdout.flush()
        await stop.wait()
        logging.getLogger("hopx_async.local").info("signal received; stopping")
    finally:
        await backend.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot start the local backend: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
