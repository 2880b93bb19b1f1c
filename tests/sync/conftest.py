"""Fixtures of the sync facade's tests: a blocking client and sandbox on the local backend."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hopx_sync import Hopx, PollPolicy, Sandbox


@pytest.fixture
def client(backend: Any) -> Iterator[Hopx]:
    with Hopx(
        api_key=backend.api_key,
        base_url=backend.base_url,
        polling=PollPolicy(initial_interval=0.05),
    ) as c:
        yield c


@pytest.fixture
def sandbox(client: Hopx) -> Iterator[Sandbox]:
    with client.sandboxes.create("code-interpreter") as sbx:
        yield sbx
