"""Full process lists (a server without the extensions, as the real service): only records
that changed, or that someone waits on, become models; records nobody holds cost nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hopx_async import AsyncHopx, PollPolicy

from .proxy import FaultProxy
from .waiting import gated_batch, until

pytestmark = pytest.mark.anyio

LIST = ("GET", "/execute/processes")


async def test_without_extensions_only_changed_records_become_models(backend: Any) -> None:
    async with (
        FaultProxy(backend.base_url, hide_features=True) as proxy,
        AsyncHopx(
            api_key=backend.api_key,
            base_url=proxy.url,
            polling=PollPolicy(initial_interval=0.02, max_interval=0.05),
        ) as client,
        client.sandboxes.create("code-interpreter") as sandbox,
    ):
        async with gated_batch(sandbox, 20) as procs:
            waiting = asyncio.ensure_future(client.wait_all(procs))

            async def many_polls() -> bool:
                return sandbox.watcher_stats.polls >= 6

            await until(many_polls, "six full lists")
            parsed_while_running = sandbox.watcher_stats.records_parsed
            await sandbox.commands.run("touch release")
            results = await asyncio.wait_for(waiting, 60)
        stats = sandbox.watcher_stats
    assert [r.status for r in results] == ["completed"] * 20
    assert proxy.count(*LIST) == stats.polls
    # six lists of 20 unchanged running records: each record became a model once ...
    assert parsed_while_running == 20
    # ... and once more when it ended (not once per list)
    assert stats.records_parsed == 40 < stats.polls * 20


def test_full_list_keys_follow_the_listed_processes() -> None:
    """Changed records become models; the keys kept are those of the last list only."""
    from hopx_async._lists import changed_processes

    def rec(pid: str, status: str, out: str = "") -> dict[str, Any]:
        return {"process_id": pid, "status": status, "stdout": out, "stderr": ""}

    infos, keys = changed_processes([rec("a", "running"), rec("b", "running")], {})
    assert [i.process_id for i in infos] == ["a", "b"]
    # unchanged: nothing to build; new output or a new status: that record only
    infos, keys = changed_processes([rec("a", "running"), rec("b", "running", "x")], keys)
    assert [i.process_id for i in infos] == ["b"]
    infos, keys = changed_processes([rec("a", "completed"), rec("b", "running", "x")], keys)
    assert [(i.process_id, i.status) for i in infos] == [("a", "completed")]
    # an ended record that someone starts waiting on later is built again for that waiter
    infos, keys = changed_processes([rec("a", "completed"), rec("b", "running", "x")], keys, {"a"})
    assert [i.process_id for i in infos] == ["a"]
    infos, keys = changed_processes([rec("a", "completed"), rec("b", "running", "x")], keys, {"b"})
    assert infos == []
    # a process that disappeared from the list is forgotten
    _, keys = changed_processes([rec("b", "running", "x")], keys)
    assert set(keys) == {"b"}


def test_record_keys_of_odd_records() -> None:
    """Non-scalar fields, a numeric id or an ``id`` instead of ``process_id`` still key."""
    from hopx_async._lists import changed_processes, record_key

    odd = {"id": 7, "status": "running", "exit_code": [1], "stdout": {"x": 1}}
    assert record_key(odd) == record_key(dict(odd))
    assert record_key(odd) != record_key({**odd, "exit_code": [2]})
    infos, keys = changed_processes([odd], {})
    assert [i.process_id for i in infos] == ["7"] and keys == {"7": record_key(odd)}
    plain = {"process_id": "p", "status": "running", "stdout": "ab", "end_time": "t"}
    assert changed_processes([plain], {})[1] == {"p": record_key(plain)}
    assert changed_processes([odd], keys)[0] == []
    ended = {**odd, "status": "completed", "end_time": "2026-01-01T00:00:00Z"}
    assert [i.status for i in changed_processes([ended], keys)[0]] == ["completed"]


def test_full_list_skips_records_nobody_holds() -> None:
    """Records of processes without a handle cost no key and no model; waited ones never skip."""
    from hopx_async._lists import changed_processes

    items = [{"process_id": p, "status": "running"} for p in ("a", "b", "c")]
    infos, keys = changed_processes(items, {}, (), held={"a"})
    assert [i.process_id for i in infos] == ["a"] and set(keys) == {"a"}
    infos, keys = changed_processes(items, keys, {"b"}, held={"a"})
    assert [i.process_id for i in infos] == ["b"] and set(keys) == {"a", "b"}
    # a handle made later gets its record from the next list
    infos, keys = changed_processes(items, keys, (), held={"a", "c"})
    assert [i.process_id for i in infos] == ["c"] and set(keys) == {"a", "c"}
