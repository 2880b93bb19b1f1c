"""One sandbox's agent: executions, starts, the process list, kills and output by offsets,
over its connection (:mod:`._connection`: URL, token, readiness, features, requests).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from typing import Any

from ._connection import AgentConnection
from ._errors import (
    APIError,
    ExecutionTimeoutError,
    HopxError,
    ProcessNotFoundError,
    ServerError,
)
from ._keepalive import Keeper
from ._lists import list_version, process_list, raw_process_list
from ._models import ProcessInfo, ProcessResult
from ._output import KeptOutput, OutputCursor, bounded_result
from ._wire import (
    KILL_FORMS,
    StartAnswer,
    kill_form_missing,
    kill_request,
    segment,
    start_answer,
    timed_out_result,
)

__all__ = ["Agent"]

#: bytes per stream per request when collecting output by offsets
OUTPUT_PAGE = 4 * 1024 * 1024


class Agent(AgentConnection):
    """The agent client of one sandbox; shared by the sandbox, its watcher and its handles."""

    #: the kill form this agent answered, once found
    _kill_form: str | None = None
    #: the control-plane question in flight of whether the sandbox is gone (``_ending``)
    gone_question: asyncio.Future[bool] | None = None
    _keeper: Keeper | None = None

    @property
    def keeper(self) -> Keeper:
        """Who holds the sandbox alive, and its expiry as last known (``_keepalive``)."""
        if self._keeper is None:
            self._keeper = Keeper()
        return self._keeper

    # ------------------------------------------------------------------ execution
    async def execute(
        self, path: str, body: Mapping[str, Any], seconds: float
    ) -> Mapping[str, Any]:
        """A synchronous execution (``/execute``, ``/commands/run``); never retried.

        Past its timeout the service answers 200 with ``success: false``; a server that
        answers 408 with the partial output instead gets the same result made of it.
        """
        try:
            resp = await self.request("POST", path, json=body, safe=False, timeout=seconds + 30)
        except ExecutionTimeoutError as exc:
            return timed_out_result(exc.body, exc.message)
        except ServerError as exc:
            # the documented answer to a command that exited non-zero: 500 with its output
            body = exc.body
            if isinstance(body, Mapping) and type(body.get("exit_code")) is int:
                return body
            raise
        return resp.mapping

    async def start(self, path: str, body: Mapping[str, Any], language: str) -> StartAnswer:
        """Start a background process; with idempotency keys a retry is safe."""
        await self.ensure_ready()
        headers: dict[str, str] = {}
        safe = False
        if self.has_feature("idempotency_keys"):
            headers["Idempotency-Key"] = "idem_" + secrets.token_hex(16)
            safe = True  # the server answers a repeat with the first answer
        resp = await self.request("POST", path, json=body, safe=safe, headers=headers)
        answer = start_answer(resp.data, body, language)
        if answer is None:
            raise HopxError(f"{path} answered without a process_id: {str(resp.data)[:200]}")
        return answer

    # ------------------------------------------------------------------ processes
    async def list_processes(self) -> list[ProcessInfo]:
        """Every process, with its output (capped by the server)."""
        return process_list((await self.request("GET", "/execute/processes")).data)

    async def list_raw(self) -> list[Mapping[str, Any]]:
        """Every process as the agent sent it (unparsed; see ``_lists.changed_processes``)."""
        return raw_process_list((await self.request("GET", "/execute/processes")).data)

    async def list_since(
        self, version: int, wait: float, *, terminal: bool = False
    ) -> tuple[list[ProcessInfo], int | None]:
        """The processes changed after ``version``, held up to ``wait`` s for a change.

        ``terminal=True`` (where the agent has ``list_terminal``): only processes that ended
        after ``version``, and only an ending wakes the long poll.
        """
        params = {"since": str(version)}
        if wait > 0:
            params["wait"] = f"{wait:g}"
        if terminal:
            params["only"] = "terminal"
        resp = await self.request(
            "GET",
            "/execute/processes",
            params=params,
            timeout=wait + self.request_timeout,
        )
        return process_list(resp.data), list_version(resp.data)

    async def get_process(self, process_id: str) -> ProcessInfo:
        """One process's record; from the full list where the agent has no single GET."""
        await self.ensure_ready()
        if self.has_feature("process_get"):
            path = f"/execute/processes/{segment(process_id, 'process_id')}"
            resp = await self.request("GET", path, resource="process")
            return ProcessInfo.from_wire(resp.mapping)
        for info in await self.list_processes():
            if info.process_id == process_id:
                return info
        raise ProcessNotFoundError(
            f"sandbox {self.sandbox_id} has no process {process_id}",
            status=404,
            code="PROCESS_NOT_FOUND",
        )

    async def kill_process(self, process_id: str) -> None:
        """Kill with the first kill form the agent knows (remembered once found)."""
        segment(process_id, "process_id")
        await self.ensure_ready()
        forms = [self._kill_form] if self._kill_form else list(KILL_FORMS)
        for form in forms:
            method, path, query, body = kill_request(form, process_id)
            try:
                await self.request(
                    method, path, json=body, params=query, safe=True, resource="process"
                )
            except APIError as exc:
                if kill_form_missing(exc.status, exc.code) and form != forms[-1]:
                    continue
                raise
            self._kill_form = form
            return

    async def remove_process(self, process_id: str) -> None:
        path = f"/execute/processes/{segment(process_id, 'process_id')}"
        await self.ensure_ready()
        if not self.has_feature("process_delete"):
            raise HopxError("this server does not offer removing finished processes")
        await self.request("DELETE", path, resource="process")

    # --------------------------------------------------------------------- output
    async def read_output(
        self,
        process_id: str,
        cursor: OutputCursor,
        *,
        max_bytes: int | None = None,
        wait: float | None = None,
    ) -> Mapping[str, Any]:
        """One read of a process's output from the cursor's offsets (``output_offsets``)."""
        resp = await self.request(
            "GET",
            f"/execute/processes/{segment(process_id, 'process_id')}",
            params=cursor.params(max_bytes=max_bytes, wait=wait),
            resource="process",
            timeout=(wait or 0) + self.request_timeout,
        )
        return resp.mapping

    async def full_result(self, info: ProcessInfo) -> ProcessResult:
        """The result of a finished process with its whole output, not the capped tail."""
        truncated = info.stdout_truncated or info.stderr_truncated
        if not truncated or not self.has_feature("output_offsets"):
            limit = self.control.transport.limits.max_output_bytes
            return bounded_result(ProcessResult.from_info(info), limit)
        return await self.read_result(info)

    async def read_result(self, info: ProcessInfo) -> ProcessResult:
        """The result of a finished process, its whole output read by offsets."""
        kept = KeptOutput(limit=self.control.transport.limits.max_output_bytes)
        cursor = OutputCursor()
        while True:
            before = dict(cursor.offsets)
            data = await self.read_output(info.process_id, cursor, max_bytes=OUTPUT_PAGE)
            for chunk in cursor.take(data):
                kept.add(chunk)
            if kept.complete(cursor, data) or cursor.offsets == before:
                break
        return ProcessResult.from_info(
            info,
            stdout=kept.text("stdout"),
            stderr=kept.text("stderr"),
            cut=(kept.truncated("stdout"), kept.truncated("stderr")),
        )
