"""Which HopX the local backend speaks: every decision a dialect makes, in one frozen object.

``extended`` (the default) is the local backend as it always was: every variant a client
sends is accepted and the extensions of docs/wire.md section 7 are served and advertised.
``hopx`` is the service as its documentation and the official SDK show it; ``openapi`` is the
service as the OpenAPI documents describe it and nothing more. The http layer reads this
object once, when it builds the app (which routes and middlewares exist), and the services
read its fields where an answer's shape depends on it; nothing compares the dialect's name.

Timings and limits are fields too, so tests can shrink them: ``Dialect.named("hopx",
boot_seconds=0.2, agent_rate_per_minute=30, rate_window_seconds=1.0)``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["DIALECTS", "Dialect", "PausedAnswer", "dialect_from"]

DIALECTS = ("extended", "hopx", "openapi")
#: How a paused sandbox's agent answers: an HTTP status, or ``"close"`` (no answer at all).
PausedAnswer = int | Literal["close"]
#: The exit code that makes a process end in the status ``error`` in the strict dialects
#: (``status_aliases`` can rename any other status as well); documented for tests.
ERROR_EXIT_CODE = 222
#: seconds a sandbox created without ``timeout_seconds`` lives in the ``extended`` dialect (a
#: notebook cell that fails before ``sandbox.kill()`` does not leak it for good)
SANDBOX_TIMEOUT = 3600
SANDBOX_TIMEOUT_ENV = "HOPX_LOCAL_SANDBOX_TIMEOUT"


@attrs.frozen
class Dialect:
    """The behaviours of one dialect; build one with :meth:`named`."""

    name: str
    #: agent ``/health`` advertises ``features``; the extension routes and query parameters
    #: (process by id, offsets, long poll, ``since``, remove, push, ``Idempotency-Key``, the
    #: ``DELETE /env`` keys) are served. Off: those routes are 404 and the parameters ignored.
    extensions: bool = True
    #: the process list carries ``stdout``/``stderr`` (``openapi``'s ProcessInfo has none)
    list_output: bool = True
    #: the list's output is flagged ``*_truncated`` when cut (the service documents no flag)
    output_flags: bool = True
    #: ``started_at``/``completed_at``/``execution_time`` or the OpenAPI's
    #: ``start_time``/``end_time``/``duration``
    openapi_times: bool = False
    #: where ``DELETE /execute/kill`` reads the id: the JSON body too, or the query only
    kill_id_in_body: bool = True
    #: ``POST /execute/kill/{id}`` (the docs, the official sync SDK)
    kill_by_path: bool = True
    #: ``POST /v1/sandboxes/{id}/kill`` (documented, not in the OpenAPI document)
    sandbox_kill_route: bool = True
    #: ``POST /processes/{id}/kill`` (only the official async SDK; undocumented)
    kill_processes_path: bool = True
    #: the working-directory keys read, the first present wins
    workdir_keys: tuple[str, ...] = ("working_dir", "workdir")
    #: ``/execute/background`` honours a working directory (no documented field for it)
    background_workdir: bool = True
    #: ``/commands/*`` with ``command`` alone runs it through ``/bin/sh -c``
    command_alone_in_shell: bool = True
    #: a non-zero ``/commands/run`` exit is a 500 with ``stdout``/``stderr``/``exit_code``
    command_failure_500: bool = False
    #: ``PUT``/``PATCH /env`` with ``***MASKED***`` keeps the stored secret
    env_keep_masked: bool = True
    #: ``PATCH /env`` merges without ``"merge": true``
    env_patch_merges: bool = True
    #: ``env_vars`` given at create become the sandbox's environment
    create_applies_env: bool = True
    #: the ``code`` of an agent 401 for a bad or expired token (``None``: no code)
    token_error_code: str | None = "INVALID_TOKEN"
    #: ``POST /execute/async`` is served, and its answer names the ``process_id``
    async_route: bool = True
    async_process_id: bool = True
    #: how a paused sandbox's agent answers
    paused_answer: PausedAnswer = 409
    #: seconds a new sandbox's agent is not ready, and what it answers meanwhile, in turn
    boot_seconds: float = 0.0
    boot_answers: tuple[int, ...] = (502, 404, 401)
    #: streams end with a ``complete`` frame (else they close after ``result``)
    stream_complete: bool = True
    #: statuses reported under another name, e.g. ``{"failed": "error"}``
    status_aliases: Mapping[str, str] = attrs.field(factory=dict)
    #: a process exiting with ``ERROR_EXIT_CODE`` ends as ``error`` (strict dialects)
    error_exit_status: bool = False
    #: the control plane takes ``Authorization: Bearer KEY`` as well as ``X-API-Key`` (the
    #: OpenAPI document's routes require ``X-API-Key``; its Bearer scheme is a session JWT)
    control_bearer: bool = True
    #: rate limits (``None``: off): control plane per API key, agent per sandbox, creations
    control_rate_per_minute: int | None = None
    agent_rate_per_minute: int | None = None
    create_rate_per_minute: int | None = None
    rate_window_seconds: float = 60.0
    #: the sandbox list: the largest ``limit``, and whether pages carry ``next_cursor``
    page_limit_max: int = 1000
    list_cursor: bool = True
    #: the largest output per stream in the process list (bytes)
    list_output_cap: int = 1024 * 1024
    #: seconds a sandbox created without ``timeout_seconds`` lives before it is killed
    #: (``None``: until killed, the service's documented behaviour, kept by ``hopx`` and
    #: ``openapi``; ``extended``: :data:`SANDBOX_TIMEOUT`, or ``HOPX_LOCAL_SANDBOX_TIMEOUT``)
    default_sandbox_timeout: int | None = None

    @property
    def strict(self) -> bool:
        """Only documented routes and fields (``hopx`` and ``openapi``)."""
        return not self.extensions

    @property
    def rate_limited(self) -> bool:
        return any(
            limit is not None
            for limit in (
                self.control_rate_per_minute,
                self.agent_rate_per_minute,
                self.create_rate_per_minute,
            )
        )

    def status(self, status: str, exit_code: int | None) -> str:
        """The status a process is reported under."""
        if self.error_exit_status and exit_code == ERROR_EXIT_CODE and status == "failed":
            status = "error"
        if self.openapi_times and status in ("queued", "timeout"):
            status = "running" if status == "queued" else "failed"
        return self.status_aliases.get(status, status)

    def working_dir(self, body: Mapping[str, Any]) -> object:
        """The raw working-directory value of ``body`` (the first key present), or None."""
        for key in self.workdir_keys:
            value = body.get(key)
            if value is not None:
                return value
        return None

    def health_limits(self) -> dict[str, Any]:
        return {
            "control_per_minute": self.control_rate_per_minute,
            "agent_per_minute": self.agent_rate_per_minute,
            "create_per_minute": self.create_rate_per_minute,
            "window_seconds": self.rate_window_seconds,
        }

    @classmethod
    def named(cls, name: str, **overrides: Any) -> Dialect:
        """The dialect ``name`` with its documented defaults, then ``overrides``."""
        if name not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {name!r}")
        base: dict[str, Any] = {}
        if name == "extended":
            base = {"default_sandbox_timeout": sandbox_timeout_from_env()}
        else:
            base = {
                "extensions": False,
                "output_flags": False,
                "kill_processes_path": False,
                "workdir_keys": ("workdir", "working_dir"),
                "background_workdir": False,
                "command_failure_500": True,
                "env_keep_masked": False,
                "env_patch_merges": False,
                "create_applies_env": False,
                "token_error_code": None,
                "async_process_id": False,
                "paused_answer": 502,
                "boot_seconds": 2.0,
                "error_exit_status": True,
                "control_rate_per_minute": 100,
                "agent_rate_per_minute": 300,
                "create_rate_per_minute": 20,
                "page_limit_max": 100,
                "list_output_cap": 4 * 1024 * 1024,
            }
        if name == "openapi":
            base |= {
                "list_output": False,
                "openapi_times": True,
                "kill_id_in_body": False,
                "kill_by_path": False,
                "sandbox_kill_route": False,
                "workdir_keys": ("workdir",),
                "command_alone_in_shell": False,
                "command_failure_500": False,
                "token_error_code": "UNAUTHORIZED",
                "async_route": False,
                "list_cursor": False,
                "control_bearer": False,
            }
        return cls(name=name, **(base | overrides))


def sandbox_timeout_from_env() -> int | None:
    """``HOPX_LOCAL_SANDBOX_TIMEOUT`` (seconds; ``0`` or ``none``: never), else
    :data:`SANDBOX_TIMEOUT`: the ``extended`` dialect's lifetime of a sandbox created without
    ``timeout_seconds``."""
    raw = os.environ.get(SANDBOX_TIMEOUT_ENV, "").strip().lower()
    if not raw:
        return SANDBOX_TIMEOUT
    if raw in ("0", "none"):
        return None
    if not raw.isdigit():
        raise ValueError(
            f"{SANDBOX_TIMEOUT_ENV} must be a whole number of seconds, or 0 or none for no "
            f"limit, not {raw!r}"
        )
    return int(raw)


def dialect_from(given: str | Dialect | None) -> Dialect:
    """``given``, or the dialect ``HOPX_LOCAL_DIALECT`` names, else ``extended``."""
    if isinstance(given, Dialect):
        return given
    return Dialect.named(given or os.environ.get("HOPX_LOCAL_DIALECT") or "extended")
