"""Webhook executions: the handle ``run_code_async()`` returns.

The server runs the code as a background process and POSTs its result to the callback URL
when it ends (see :func:`hopx_async.verify_webhook` for the receiving side). Where the
server also lists the execution among its background processes (the local backend does),
``wait()`` follows it through the same background-process handle as
``run_code_background()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import _validation as validate
from ._connection import AgentConnection
from ._errors import HopxError, ValidationError
from ._models import ProcessResult
from ._process import AsyncBackgroundProcess

if TYPE_CHECKING:
    from ._sandbox import AsyncSandbox

__all__ = ["AsyncExecution", "callback_body", "start_execution"]

_MAX_HEADERS = 32


def callback_body(url: Any, headers: Any, secret: Any) -> dict[str, Any]:
    """The callback fields of an ``/execute/async`` body, checked before any I/O."""
    callback_url = validate.non_empty_str("callback_url", url)
    if not callback_url.startswith(("http://", "https://")):
        raise ValidationError("callback_url", "expected an http:// or https:// URL")
    body: dict[str, Any] = {"callback_url": callback_url}
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise ValidationError(
                "callback_headers", f"expected a dict of str to str, got {type(headers).__name__}"
            )
        if len(headers) > _MAX_HEADERS:
            raise ValidationError("callback_headers", f"at most {_MAX_HEADERS} headers")
        checked: dict[str, str] = {}
        for name, value in headers.items():
            if not isinstance(name, str) or not name or not name.isascii():
                raise ValidationError("callback_headers", f"bad header name {name!r}")
            if not isinstance(value, str) or any(not " " <= c <= "~" for c in value):
                raise ValidationError(
                    "callback_headers", f"value of {name!r} must be printable ASCII text"
                )
            checked[name] = value
        if checked:
            body["callback_headers"] = checked
    if secret is not None:
        body["callback_signature_secret"] = validate.non_empty_str(
            "callback_signature_secret", secret
        )
    return body


class AsyncExecution:
    """A webhook execution; returned by ``sandbox.run_code_async()``.

    >>> execution = await sandbox.run_code_async(
    ...     "print('done')", callback_url="http://127.0.0.1:8080/hook",
    ...     callback_signature_secret="s3cret")  # doctest: +SKIP
    >>> execution.execution_id  # doctest: +SKIP
    'exec_...'
    >>> (await execution.wait()).stdout  # doctest: +SKIP
    'done\\n'

    ``execution["execution_id"]`` and ``execution.get("callback_url")`` also work, for code
    written against the documented dict answer.
    """

    _KEYS = ("execution_id", "status", "callback_url", "process_id")

    def __init__(
        self,
        sandbox: AsyncSandbox,
        execution_id: str,
        *,
        callback_url: str,
        status: str = "queued",
        process_id: str | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._execution_id = execution_id
        self._callback_url = callback_url
        self._status = status
        self._process: AsyncBackgroundProcess | None = (
            None if process_id is None else sandbox.process(process_id)
        )

    @property
    def execution_id(self) -> str:
        """The execution id (also in the callback's body)."""
        return self._execution_id

    @property
    def callback_url(self) -> str:
        """Where the result is POSTed."""
        return self._callback_url

    @property
    def process(self) -> AsyncBackgroundProcess | None:
        """The background-process handle, when the server named the process."""
        return self._process

    @property
    def process_id(self) -> str | None:
        """The background process running it, when the server named it."""
        return None if self._process is None else self._process.id

    @property
    def status(self) -> str:
        """The last status seen: ``queued`` at first, then the process's own."""
        if self._process is not None and self._process.status != "unknown":
            return self._process.status
        return self._status

    @property
    def sandbox(self) -> AsyncSandbox:
        return self._sandbox

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access to the documented answer's fields."""
        return getattr(self, key) if key in self._KEYS else default

    def __contains__(self, key: object) -> bool:
        return key in self._KEYS

    def __repr__(self) -> str:
        return f"<AsyncExecution {self._execution_id} status={self.status!r}>"

    async def wait(self, timeout: float | None = None, *, check: bool = False) -> ProcessResult:
        """Wait until the execution ends and return its result, through the process list.

        Same rules as :meth:`AsyncBackgroundProcess.wait`. Raises :class:`HopxError` when
        the server does not list the execution among its background processes (its result
        then arrives only at the callback).

        >>> result = await execution.wait(timeout=600, check=True)  # doctest: +SKIP
        """
        limit = validate.optional_timeout("timeout", timeout)
        process = await self._find()
        return await process.wait(limit, check=check)

    async def _find(self) -> AsyncBackgroundProcess:
        if self._process is None:
            for info in await self._sandbox.list_processes():
                if info.execution_id == self._execution_id:
                    self._process = self._sandbox.process(info.process_id)
                    break
            else:
                raise HopxError(
                    f"execution {self._execution_id} is not in the sandbox's process list; "
                    "its result is delivered only to the callback URL"
                )
        return self._process


async def start_execution(
    sandbox: AsyncSandbox, agent: AgentConnection, body: dict[str, Any]
) -> AsyncExecution:
    """POST ``/execute/async`` to ``sandbox``'s agent (never retried: it starts something)
    and return the handle."""
    resp = await agent.request("POST", "/execute/async", json=body, safe=False)
    data = resp.mapping
    execution_id = data.get("execution_id")
    if not isinstance(execution_id, str) or not execution_id:
        raise HopxError(f"/execute/async answered without an execution_id: {str(resp.data)[:200]}")
    process_id = data.get("process_id")
    callback_url = data.get("callback_url")
    status = data.get("status")
    return AsyncExecution(
        sandbox,
        execution_id,
        callback_url=callback_url if isinstance(callback_url, str) else body["callback_url"],
        status=status if isinstance(status, str) and status else "queued",
        process_id=process_id if isinstance(process_id, str) and process_id else None,
    )
