"""The control plane of one client (sandboxes, pause/resume, timeout, token refresh).

A :class:`ControlPlane` also carries what every sandbox of its client shares: the
transport (one connection pool), the polling policy and the clock. The client makes one and
hands it to each sandbox it makes (through ``client.sandboxes``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ._config import PollPolicy
from ._transport import Response, Transport
from ._utils import SecretHeaders
from ._wire import segment

__all__ = [
    "Closable",
    "ControlPlane",
    "default_client",
    "set_default_factory",
]


class Closable(Protocol):
    """Something that ends its pending work with an error when its client closes."""

    def close(self, error: BaseException) -> None: ...


class ControlPlane:
    """Requests to ``{base_url}/v1/...`` with the API key, and the client's shared parts."""

    def __init__(
        self,
        transport: Transport,
        base_url: str,
        api_key: str,
        *,
        polling: PollPolicy,
        clock: Callable[[], float],
        shared: bool = False,
    ) -> None:
        self.transport = transport
        self.base_url = base_url
        self.polling = polling
        #: the Unix time (token expiry); injectable for tests
        self.clock = clock
        # every /v1 route's security in the OpenAPI
        self._auth = SecretHeaders({"X-API-Key": api_key})
        self._closables: weakref.WeakSet[Closable] = weakref.WeakSet()
        #: sandboxes made without an explicit client, held while they live
        self._adopted: set[Any] = set()
        #: whether this is a loop's default client, which holds the sandboxes made through it
        #: and closes its pool with the last of them
        self.shared = shared

    def __repr__(self) -> str:
        return f"<ControlPlane {self.base_url}>"

    # ------------------------------------------------------------------ lifecycle
    def track(self, closable: Closable) -> None:
        """Close ``closable`` with the client (weakly held)."""
        self._closables.add(closable)

    def close_all(self, error: BaseException) -> None:
        """End the pending work of everything tracked with ``error``."""
        for closable in list(self._closables):
            closable.close(error)

    def adopt(self, sandbox: Any) -> None:
        """Hold a sandbox of a shared client until it is killed."""
        self._adopted.add(sandbox)

    async def release(self, sandbox: Any) -> None:
        """``sandbox`` was killed: a shared client closes its pool when none remain."""
        self._adopted.discard(sandbox)
        if self.shared and not self._adopted:
            await self.transport.aclose(final=False)

    # ------------------------------------------------------------------- requests
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        safe: bool | None = None,
        resource: str | None = None,
    ) -> Response:
        return await self.transport.request(
            method,
            self.base_url + path,
            headers=self._auth,
            json=json,
            params=params,
            safe=safe,
            scope="control",
            resource=resource,
        )

    async def create_sandbox(self, body: Mapping[str, Any]) -> Any:
        resp = await self.request("POST", "/v1/sandboxes", json=body, safe=False)
        return resp.data

    async def get_sandbox(self, sandbox_id: str) -> Any:
        path = f"/v1/sandboxes/{segment(sandbox_id, 'sandbox_id')}"
        return (await self.request("GET", path, resource="sandbox")).data

    async def delete_sandbox(self, sandbox_id: str) -> None:
        path = f"/v1/sandboxes/{segment(sandbox_id, 'sandbox_id')}"
        await self.request("DELETE", path, resource="sandbox")

    async def sandbox_action(self, sandbox_id: str, action: str, body: Any = None) -> Any:
        """POST/PUT ``/v1/sandboxes/{id}/{action}`` (pause, resume, timeout, token/refresh)."""
        method = "PUT" if action == "timeout" else "POST"
        path = f"/v1/sandboxes/{segment(sandbox_id, 'sandbox_id')}/{action}"
        resp = await self.request(method, path, json=body, safe=True, resource="sandbox")
        return resp.data

    async def list_sandboxes(self, params: Mapping[str, str]) -> Mapping[str, Any]:
        return (await self.request("GET", "/v1/sandboxes", params=params)).mapping

    async def list_templates(self) -> Any:
        return (await self.request("GET", "/v1/templates")).data


_default_factory: Callable[[], Any] | None = None


def set_default_factory(factory: Callable[[], Any]) -> None:
    """Set how :func:`default_client` makes a loop's default client (see ``_defaults``)."""
    global _default_factory
    _default_factory = factory


def default_client() -> Any:
    """The running loop's default client (configured from the environment)."""
    if _default_factory is None:
        raise RuntimeError("hopx_async is not fully imported")
    return _default_factory()
