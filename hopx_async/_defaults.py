"""The default client of each event loop, used by ``AsyncSandbox.create()`` without a client.

It is configured from ``HOPX_API_KEY`` and ``HOPX_BASE_URL``, shared by every sandbox made
that way on the loop, and closes its connection pool when the last of them is killed.
"""

from __future__ import annotations

import asyncio
import weakref

from ._client import AsyncHopx
from ._control import set_default_factory

__all__ = ["aclose_default_client", "default_client"]


class _LoopDefault(AsyncHopx):
    """A loop's default client: it holds the sandboxes made through it and closes its pool
    when the last of them is killed (the next one opens a new pool)."""

    _shares_pool = True


_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncHopx] = (
    weakref.WeakKeyDictionary()
)


def default_client() -> AsyncHopx:
    """The running loop's default client (configured from the environment)."""
    loop = asyncio.get_running_loop()
    client = _defaults.get(loop)
    if client is None or client.closed:
        client = _defaults[loop] = _LoopDefault()
    return client


async def aclose_default_client() -> None:
    """Close the running loop's default client, if one was made."""
    client = _defaults.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


set_default_factory(default_client)
