"""How ``LocalBackend`` wires the server: the services each made with what it uses, and the
cleanup contexts that open and close them with the app."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from .http.common import AppState
from .http.middleware import RateLimiter
from .runtime.disk import WorkspaceDisks
from .runtime.launch import Launcher
from .runtime.limits import SandboxLimits
from .service.dialect import Dialect
from .service.foreground import ForegroundRuns
from .service.processes import Processes
from .service.render import Renderer
from .service.sandboxes import Sandboxes
from .service.tokens import TokenSigner
from .service.webhooks import Webhooks
from .state.layout import Layout
from .state.store import Store

if TYPE_CHECKING:
    from .backend import LocalBackend

__all__ = ["app_state", "closing", "delivering", "limiters", "serving"]


def limiters(dialect: Dialect) -> tuple[RateLimiter | None, ...]:
    """The control plane's, the agent's and the creations' limiters of a dialect."""
    window = dialect.rate_window_seconds
    limits = (
        dialect.control_rate_per_minute,
        dialect.agent_rate_per_minute,
        dialect.create_rate_per_minute,
    )
    return tuple(None if n is None else RateLimiter(n, window) for n in limits)


def closing(
    resource: Store | Launcher,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that closes ``resource`` (opened already) with the app."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        try:
            yield
        finally:
            resource.close()

    return context


def serving(
    sandboxes: Sandboxes,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the records loaded and the reaper running while the app runs."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        sandboxes.load()
        sandboxes.start_reaper()
        try:
            yield
        finally:
            await sandboxes.close()

    return context


def delivering(
    hooks: Webhooks,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: webhook deliveries (those left by the last run too) while it runs."""

    async def context(_app: web.Application) -> AsyncIterator[None]:
        hooks.open()
        try:
            yield
        finally:
            await hooks.close()

    return context


def app_state(backend: LocalBackend, layout: Layout, launcher: Launcher, store: Store) -> AppState:
    """The services, each made with what it uses, in the one state the handlers get."""
    # First: a bad switch fails the start before anything is written.
    disks = WorkspaceDisks.detect(layout, SandboxLimits.from_template().disk_bytes)
    secret = store.get_meta("token_secret")
    if secret is None:
        secret = secrets.token_hex(32)
        store.set_meta("token_secret", secret)
    signer = TokenSigner(bytes.fromhex(secret), backend.token_ttl_seconds)
    renderer = Renderer(layout, signer)
    supervisor = launcher.supervisor
    foreground = ForegroundRuns(layout=layout, launcher=launcher, supervisor=supervisor)
    processes = Processes(
        layout=layout,
        store=store,
        launcher=launcher,
        supervisor=supervisor,
        renderer=renderer,
        foreground=foreground,
    )
    hooks = Webhooks(
        layout.webhooks,
        processes,
        processes.changes,
        layout,
        backend.callback_hosts,
        attempts=backend.callback_attempts,
        retry_delay=backend.callback_retry_delay,
        timeout=backend.callback_timeout,
    )
    limit, dialect = backend.rate_limit_per_minute, backend.dialect
    shared = None if limit is None else RateLimiter(limit)
    control, agent, create = limiters(dialect) if dialect.rate_limited else (shared,) * 2 + (None,)
    return AppState(
        layout=layout,
        launcher=launcher,
        sandboxes=Sandboxes(
            layout=layout, store=store, launcher=launcher, processes=processes, disks=disks
        ),
        processes=processes,
        changes=processes.changes,
        foreground=foreground,
        renderer=renderer,
        webhooks=hooks,
        catalog=launcher.catalog,
        signer=signer,
        api_key=backend.api_key,
        limiter=control,
        read_timeout=backend.read_timeout,
        dialect=dialect,
        agent_limiter=agent,
        create_limiter=create,
    )
