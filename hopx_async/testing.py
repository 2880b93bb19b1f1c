"""A pytest plugin for testing your own code against the embedded local backend.

Installed with the package and loaded by pytest on its own (entry point ``hopx`` in the
``pytest11`` group): no conftest, no network, no account, no environment variables.

Fixtures:

- ``hopx_backend``: a :class:`~hopx_async.local.LocalBackend` on its own thread, started
  once per session and dialect, its state under pytest's temporary directory;
  ``.base_url`` and ``.api_key``.
- ``hopx_client``: an :class:`~hopx_async.AsyncHopx` bound to it, closed after the test
  (an async fixture: mark the test ``@pytest.mark.anyio``).
- ``hopx_sandbox``: an :class:`~hopx_async.AsyncSandbox` of ``hopx_client``, killed after it.
- ``hopx_sync_client`` and ``hopx_sync_sandbox``: their blocking twins (:mod:`hopx_sync`),
  for plain ``def`` tests.

Option ``--hopx-dialect NAME`` (for the run) and marker ``@pytest.mark.hopx_dialect(NAME)``
(for one test) choose the backend's dialect: ``extended`` (the default), ``hopx`` (the
service as documented) or ``openapi`` (the OpenAPI document's shapes). One backend per
dialect serves the whole session.

>>> import pytest
>>> @pytest.mark.anyio
... async def test_square(hopx_sandbox):  # doctest: +SKIP
...     proc = await hopx_sandbox.run_code_background("print(7 * 7)")
...     assert (await proc.wait(check=True)).stdout == "49\\n"
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily: loading the plugin costs a test run nothing
    import hopx_sync

    from . import AsyncHopx, AsyncSandbox
    from .local import LocalBackend

__all__ = [
    "DIALECTS",
    "DEFAULT_DIALECT",
    "hopx_local_backends",
    "hopx_backend",
    "hopx_client",
    "hopx_sandbox",
    "hopx_sync_client",
    "hopx_sync_sandbox",
]

#: The dialects the local backend serves.
DIALECTS: tuple[str, ...] = ("extended", "hopx", "openapi")
#: The dialect used when neither the option nor a marker names one.
DEFAULT_DIALECT = "extended"
_TEMPLATE = "code-interpreter"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hopx", "hopx_async local backend")
    group.addoption(
        "--hopx-dialect",
        default=None,
        metavar="NAME",
        help=f"the local backend's dialect for hopx_backend: {', '.join(DIALECTS)}",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"hopx_dialect(name): the local backend dialect this test needs ({', '.join(DIALECTS)})",
    )
    dialect = config.getoption("--hopx-dialect", default=None)
    if dialect is not None:
        _check_dialect(dialect, "--hopx-dialect")


def _check_dialect(dialect: object, where: str) -> str:
    if dialect not in DIALECTS:
        raise pytest.UsageError(
            f"{where}: unknown hopx dialect {dialect!r}; the local backend serves "
            f"{', '.join(map(repr, DIALECTS))}"
        )
    return str(dialect)


class _Backends:
    """The session's local backends, one per dialect, each started when first asked for."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._stack = contextlib.ExitStack()
        self._running: dict[str, LocalBackend] = {}

    def get(self, dialect: str) -> LocalBackend:
        from .local import LocalBackend

        if dialect not in self._running:
            state_dir = self._tmp.mktemp(f"hopx-local-{dialect}")
            backend = LocalBackend.in_thread(state_dir, dialect=dialect)
            self._running[dialect] = self._stack.enter_context(backend)
        return self._running[dialect]

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="session")
def hopx_local_backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Backends]:
    """The session's local backends by dialect (``.get(name)``), stopped at the session's end."""
    backends = _Backends(tmp_path_factory)
    try:
        yield backends
    finally:
        backends.close()


@pytest.fixture
def hopx_backend(request: pytest.FixtureRequest, hopx_local_backends: _Backends) -> LocalBackend:
    """A local backend (``.base_url``, ``.api_key``) in the dialect the test's marker or
    ``--hopx-dialect`` names (``extended`` by default), shared by the session's tests of
    that dialect.

    It runs on its own event loop in a thread, so async and blocking tests share it.
    """
    dialect = request.config.getoption("--hopx-dialect", default=None) or DEFAULT_DIALECT
    _check_dialect(dialect, "--hopx-dialect")
    marker = request.node.get_closest_marker("hopx_dialect")
    if marker is not None:
        name = marker.args[0] if marker.args else marker.kwargs.get("name")
        dialect = _check_dialect(name, f"{request.node.nodeid}: @pytest.mark.hopx_dialect")
    return hopx_local_backends.get(dialect)


@pytest.fixture
async def hopx_client(
    hopx_backend: LocalBackend, anyio_backend: object
) -> AsyncIterator[AsyncHopx]:
    """An :class:`~hopx_async.AsyncHopx` bound to ``hopx_backend``, closed after the test."""
    from . import AsyncHopx

    async with AsyncHopx(api_key=hopx_backend.api_key, base_url=hopx_backend.base_url) as client:
        yield client


@pytest.fixture
async def hopx_sandbox(hopx_client: AsyncHopx) -> AsyncIterator[AsyncSandbox]:
    """A ``code-interpreter`` sandbox of ``hopx_client``, killed after the test."""
    async with hopx_client.sandboxes.create(_TEMPLATE) as sandbox:
        yield sandbox


@pytest.fixture
def hopx_sync_client(hopx_backend: LocalBackend) -> Iterator[hopx_sync.Hopx]:
    """A blocking :class:`hopx_sync.Hopx` bound to ``hopx_backend``, closed after the test."""
    import hopx_sync

    with hopx_sync.Hopx(api_key=hopx_backend.api_key, base_url=hopx_backend.base_url) as client:
        yield client


@pytest.fixture
def hopx_sync_sandbox(hopx_sync_client: hopx_sync.Hopx) -> Iterator[hopx_sync.Sandbox]:
    """A ``code-interpreter`` sandbox of ``hopx_sync_client``, killed after the test."""
    with hopx_sync_client.sandboxes.create(_TEMPLATE) as sandbox:
        yield sandbox
