"""Small helpers shared by the I/O classes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["AwaitableContext", "SecretHeaders"]


class SecretHeaders(dict[str, str]):
    """Request headers that carry a credential: their repr (a traceback's arguments, a log
    line) names them and never shows a value.

    >>> SecretHeaders({"X-API-Key": "hopx_live_x"})
    {'X-API-Key': '***'}
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{name!r}: '***'" for name in self) + "}"


class _AsyncClosable(Protocol):
    async def __aenter__(self) -> Any: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any: ...


T = TypeVar("T", bound=_AsyncClosable)


class AwaitableContext(Generic[T]):
    """The result of a ``create()``: await it, or use it with ``async with``.

    >>> sandbox = await AsyncSandbox.create(template="code-interpreter")  # doctest: +SKIP
    >>> async with AsyncSandbox.create(template="code-interpreter") as sandbox:  # doctest: +SKIP
    ...     ...  # the sandbox is killed when the block ends
    """

    __slots__ = ("_factory", "_value")

    def __init__(self, factory: Callable[[], Awaitable[T]]) -> None:
        self._factory = factory
        self._value: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._factory().__await__()

    async def __aenter__(self) -> T:
        self._value = await self._factory()
        await self._value.__aenter__()
        return self._value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._value is not None:
            await self._value.__aexit__(exc_type, exc, tb)
