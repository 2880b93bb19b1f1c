"""Issue 16 part E: the output a handle keeps is bounded by ``Limits.max_output_bytes``
(its head is kept, the result flagged truncated), whatever the sandbox writes; ``output()``
still yields every chunk (local backend, a 64 KiB limit, a process printing 1 MiB)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, Limits
from hopx_async._output import KeptOutput, OutputCursor
from hopx_async._results import OutputChunk

pytestmark = pytest.mark.anyio

LIMIT = 64 << 10
CODE = "import sys\nfor i in range(1024):\n    sys.stdout.write(str(i % 10) * 1023 + '\\n')\n"


@pytest.fixture
async def bounded(backend: Any) -> AsyncIterator[AsyncSandbox]:
    """A sandbox of a client that keeps at most ``LIMIT`` bytes of each stream."""
    limits = Limits(max_output_bytes=LIMIT)
    async with (
        AsyncHopx(api_key=backend.api_key, base_url=backend.base_url, limits=limits) as client,
        client.sandboxes.create("code-interpreter") as sbx,
    ):
        yield sbx


async def test_wait_keeps_the_head_and_flags_it(bounded: AsyncSandbox) -> None:
    proc = await bounded.run_code_background(CODE)
    result = await asyncio.wait_for(proc.wait(timeout=30), 40)
    assert result.exit_code == 0
    assert result.stdout_truncated and not result.stderr_truncated
    assert len(result.stdout.encode()) == LIMIT
    assert result.stdout.startswith("0" * 1023 + "\n" + "1" * 1023)


async def test_output_yields_all_and_the_result_is_bounded(bounded: AsyncSandbox) -> None:
    proc = await bounded.run_code_background(CODE)
    seen = 0

    async def follow() -> None:
        nonlocal seen
        async for chunk in proc.output():
            if chunk.stream == "stdout":
                seen += len(chunk.text)

    await asyncio.wait_for(follow(), 40)
    result = await asyncio.wait_for(proc.wait(timeout=30), 40)
    assert seen >= LIMIT  # streamed on past the limit (or as much as the server kept)
    assert result.stdout_truncated
    assert len(result.stdout.encode()) <= LIMIT


def test_kept_output_stops_growing_and_cuts_on_a_character() -> None:
    kept = KeptOutput(limit=5)
    kept.add(OutputChunk("stdout", "abcé"))  # 5 bytes: fits
    assert not kept.truncated("stdout")
    kept.add(OutputChunk("stdout", "x"))
    kept.add(OutputChunk("stderr", "ééé"))  # 6 bytes: the head that fits, whole characters
    assert kept.text("stdout") == "abcé" and kept.truncated("stdout")
    assert kept.text("stderr") == "éé" and kept.truncated("stderr")
    cursor = OutputCursor()
    assert kept.complete(cursor, {"stdout_size": 1 << 36, "stderr_size": 1 << 36})


def test_default_output_limit() -> None:
    assert Limits().max_output_bytes == 16 << 20
