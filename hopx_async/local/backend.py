"""``LocalBackend``: start and stop the server, in the running loop or in a thread of its own."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from .._loopthread import LoopThread, mark_serving, unmark_serving
from . import wiring
from .http.app import make_app
from .http.common import STATE
from .http.connections import ConnectionCap, QuietServerLog
from .runtime.box import Isolation, IsolationMode, detect_isolation
from .runtime.catalog import Catalog
from .runtime.launch import Launcher
from .runtime.supervisor import GRACE_SECONDS, Supervisor
from .service.callbacks import CallbackHosts
from .service.dialect import Dialect, dialect_from
from .service.tokens import is_header_text
from .state.layout import Layout
from .state.lock import StateLock
from .state.store import Store

__all__ = ["LocalBackend"]

logger = logging.getLogger("hopx_async.local")

_PR_SET_DUMPABLE = 4


def _not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``: no core dumps, no ptrace, ``/proc/<pid>`` root-owned."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        logger.warning("could not make the server non-dumpable (prctl failed)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class LocalBackend:
    """A HopX-compatible server on this machine that runs code in local processes.

    ::

        async with LocalBackend() as backend:
            ...  # backend.base_url, backend.api_key

        with LocalBackend.in_thread() as backend:  # from synchronous code
            ...

    ``state_dir`` keeps sandboxes, process records and output across restarts; without it
    a temporary directory is used and removed at stop. ``api_key`` defaults to a random
    ``hopx_local_...`` key. ``rate_limit_per_minute`` turns on 429 answers (off by default).

    ``dialect`` is ``"extended"`` (the default: every variant and the extensions), ``"hopx"``
    (the service as documented) or ``"openapi"`` (the OpenAPI document's shapes only), or a
    :class:`~hopx_async.local.service.dialect.Dialect` with its knobs changed
    (``Dialect.named("hopx", boot_seconds=0)``); ``None`` reads ``HOPX_LOCAL_DIALECT``.

    Two class attributes bound what one client can hold (set them on an instance before ``start()``
    to change them): ``read_timeout``, the seconds a connection may stay idle or take to send a
    request's headers, and separately its body; ``max_connections``, the number of open
    connections, beyond which the oldest idle one is closed for a new one (and a new one is refused
    while every one is busy).

    ``isolation`` is ``"auto"`` (a bubblewrap box per process where possible), ``"none"``
    (plain processes; also forced by ``HOPX_LOCAL_ISOLATION=none``) or ``"bubblewrap"``
    (refuse to start without a box); ``backend.isolation`` tells which one is in use.

    ``callback_hosts`` are the hosts ``/execute/async`` may post results to: host names,
    ``*.suffix``, IP addresses or networks, or ``"*"`` for any; ``None`` reads the
    comma-separated ``HOPX_LOCAL_CALLBACK_HOSTS``, else allows loopback only. A delivery is
    tried ``callback_attempts`` times, ``callback_retry_delay`` seconds apart at first and
    doubling, each attempt within ``callback_timeout`` seconds (class attributes).
    """

    read_timeout: float = 60.0
    max_connections: int = 1024
    callback_attempts: int = 6
    callback_retry_delay: float = 1.0
    callback_timeout: float = 10.0

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit_per_minute: int | None = None,
        *,
        token_ttl_seconds: float = 24 * 3600.0,
        grace_seconds: float = GRACE_SECONDS,
        isolation: IsolationMode = "auto",
        callback_hosts: Sequence[str] | None = None,
        dialect: str | Dialect | None = None,
    ) -> None:
        self.dialect = dialect_from(dialect)
        if isolation not in ("auto", "none", "bubblewrap"):
            raise ValueError("isolation must be 'auto', 'none' or 'bubblewrap'")
        if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be at least 1 (or None for no limit)")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must not be empty (pass None for a random key)")
        if api_key is not None and not is_header_text(api_key):
            raise ValueError("api_key must be printable ASCII (it travels in an HTTP header)")
        if isinstance(callback_hosts, str):
            raise ValueError("callback_hosts must be a sequence of hosts, not one string")
        self.callback_hosts = CallbackHosts.from_setting(callback_hosts)
        self.api_key = api_key or "hopx_local_" + secrets.token_urlsafe(24)
        self.host = host
        self.port = port
        self.rate_limit_per_minute = rate_limit_per_minute
        self.token_ttl_seconds = token_ttl_seconds
        self.grace_seconds = grace_seconds
        self.isolation_mode: IsolationMode = isolation
        self._isolation: Isolation | None = None
        self._given_state_dir = None if state_dir is None else Path(state_dir)
        self._temp_dir: Path | None = None
        self._state_dir: Path | None = None
        self._store: Store | None = None
        self._lock: StateLock | None = None  # one server per state directory
        self._launcher: Launcher | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._base_url: str | None = None

    def __repr__(self) -> str:
        where = self._base_url or "not started"
        return f"LocalBackend({where}, state_dir={str(self.state_dir)!r})"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` once started."""
        if self._base_url is None:
            raise RuntimeError("the LocalBackend is not started")
        return self._base_url

    @property
    def state_dir(self) -> Path | None:
        return self._state_dir or self._given_state_dir

    @property
    def isolation(self) -> str:
        """``"bubblewrap"`` or ``"none"`` once started (what ``/health`` advertises)."""
        if self._isolation is None:
            raise RuntimeError("the LocalBackend is not started")
        return self._isolation.mechanism

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the LocalBackend is already started")
        if not is_loopback(self.host):
            logger.warning(
                "binding to %s, not loopback: anyone who can reach it and has the API key can "
                "run code on this machine",
                self.host,
            )
        if self._given_state_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="hopx-local-"))
            self._state_dir = self._temp_dir
        else:
            self._state_dir = self._given_state_dir.resolve()
        try:
            await self._start(self._state_dir)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, state_dir: Path) -> None:
        _not_dumpable()
        self._lock = StateLock.acquire(state_dir)  # before anything in it is touched
        layout = Layout(state_dir)
        layout.make_root()
        # Held here until the app's cleanup contexts own them: stop() closes them till then.
        launcher = self._launcher = await self._open_launcher(layout)
        store = self._store = Store.open(layout.db)
        store.bind_loop(asyncio.get_running_loop())
        app_state = wiring.app_state(self, layout, launcher, store)
        app = make_app(app_state)
        sandboxes, hooks, renderer = app_state.sandboxes, app_state.webhooks, app_state.renderer
        # Opened at the app's startup, closed at its cleanup in the reverse order.
        app.cleanup_ctx.extend(
            [
                wiring.closing(store),
                wiring.closing(launcher),
                wiring.serving(sandboxes),
                wiring.delivering(hooks),
            ]
        )
        # The work ends first (a delivery not made yet stays for the next start; every
        # process is killed and its record made final), so that the handlers waiting on it
        # answer, before the listener closes and the server waits for its handlers.
        app.on_shutdown.append(self._end_work)
        cap = ConnectionCap(self.max_connections)
        app.middlewares.insert(0, cap.middleware)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=1.0,
            # Idle, and still sending its headers, a connection is closed after this long.
            keepalive_timeout=self.read_timeout,
            # A client that goes away cancels its request's handler (which ends its code).
            handler_cancellation=True,
            logger=QuietServerLog(),
        )
        self._store = self._launcher = None  # the app's cleanup contexts own them now
        await self._runner.setup()
        assert self._runner.server is not None
        self._listener = await asyncio.get_running_loop().create_server(
            cap.protocol_factory(self._runner.server), self.host, self.port
        )
        port = self._listener.sockets[0].getsockname()[1]
        self._base_url = f"http://{_url_host(self.host)}:{port}"
        renderer.base_url = self._base_url
        mark_serving(asyncio.get_running_loop(), self, f"the LocalBackend at {self._base_url}")
        self._isolation = launcher.isolation
        logger.info(
            "local backend listening on %s (state in %s); isolation: %s",
            self._base_url,
            state_dir,
            launcher.isolation.mechanism,
        )

    async def _open_launcher(self, layout: Layout) -> Launcher:
        """The launcher, with the isolation that works here (a box is tried once)."""
        isolation = await asyncio.to_thread(detect_isolation, self.isolation_mode)
        supervisor = Supervisor(self.grace_seconds)
        supervisor.prestart()
        launcher = Launcher(layout, Catalog(), supervisor, isolation)
        if launcher.boxed:
            failure = await asyncio.to_thread(launcher.self_test)
            if failure and isolation.required:
                launcher.close()
                raise RuntimeError(f"isolation 'bubblewrap' was required but {failure}")
            if failure:
                launcher.disable(failure)
        if launcher.isolation.mechanism == "none":
            logger.warning(
                "SANDBOXED CODE IS NOT ISOLATED: %s; every process runs as this user with "
                "access to everything it can reach (see docs/local-backend.md)",
                launcher.isolation.reason,
            )
        return launcher

    async def _end_work(self, app: web.Application) -> None:
        app_state = app[STATE]
        await app_state.webhooks.close()
        await app_state.sandboxes.close()
        self._close_listener()

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def stop(self) -> None:
        """Kill every running process group (marked killed), flush the store, clean up."""
        unmark_serving(self)
        if self._runner is not None:
            await self._runner.cleanup()  # the app's shutdown, then its cleanup contexts
            self._runner = None
        self._close_listener()
        if self._launcher is not None:  # a start that failed before the app owned them
            self._launcher.close()
            self._launcher = None
        if self._store is not None:
            self._store.close()
            self._store = None
        StateLock.free(self._lock)
        if self._temp_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._temp_dir, True)
            self._temp_dir = None
            self._state_dir = None
        self._base_url = None

    async def __aenter__(self) -> LocalBackend:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(
        cls,
        state_dir: str | os.PathLike[str] | None = None,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit_per_minute: int | None = None,
        **kwargs: Any,
    ) -> Iterator[LocalBackend]:
        """Run the server on its own event loop in a daemon thread (for synchronous code)."""
        backend = cls(state_dir, api_key, host, port, rate_limit_per_minute, **kwargs)
        thread = LoopThread("hopx-local-backend")
        try:
            thread.run(backend.start())
            yield backend
        finally:
            try:
                thread.run(backend.stop())
            finally:
                thread.close()
