"""Webhook executions (``POST /execute/async``): run in the background, POST the result back.

An execution is an ordinary background process (it shows in the process list). When it ends,
its result is POSTed as JSON to the callback URL with the caller's headers, an
``X-HOPX-Timestamp`` and, when a secret was given, ``X-HOPX-Signature: sha256=<hex>`` over
``f"{timestamp}".encode() + body``, no separator (:func:`hopx_async._webhooks.sign_webhook`,
the function receivers verify with).

A delivery is kept as a file ``STATE/webhooks/<execution_id>.json`` (0600, in a 0700
directory the boxes never see) from the answer to the request until it is delivered or given
up, so one pending when the server stops is delivered after the next start. A failed
delivery (an answer other than 2xx, a refused connection, a timeout) is retried with
exponential backoff, a bounded number of times. Redirects are not followed and every
attempt has a deadline: the server posts to the allowed callback hosts and nowhere else.

Each receiver (scheme, host and port) gets at most ``PER_RECEIVER`` attempts in flight at
once, the others wait for one of those: a receiver that never answers holds its own slots
until their deadline, never another receiver's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import attrs
from yarl import URL

from ..._webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from ..errors import ApiError
from ..runtime.launch import StartSpec
from ..runtime.output import read_tail
from ..state.layout import Layout
from ..state.records import ProcessRecord, SandboxRecord, iso
from ..version import __version__
from .callbacks import Callback, CallbackHosts, parse_callback
from .changes import ChangeFeed
from .processes import Processes

__all__ = ["Webhooks"]

logger = logging.getLogger("hopx_async.local")

#: Per stream, a callback carries at most this many trailing bytes of output.
CALLBACK_OUTPUT_CAP = 1024 * 1024
#: Attempts in flight at once to one receiver (scheme, host, port).
PER_RECEIVER = 4


@attrs.define
class _Delivery:
    """One callback to make, as kept in its file."""

    execution_id: str
    process_id: str
    sandbox_id: str
    callback: Callback
    #: "waiting" for the process to end, then "pending" with the body to deliver.
    state: str = "waiting"
    body: str | None = attrs.field(default=None, repr=False)
    attempts: int = 0
    next_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Delivery:
        callback = Callback(**data.pop("callback"))
        return cls(callback=callback, **data)


class Webhooks:
    """Every webhook execution's delivery: started by the route, kept until delivered."""

    def __init__(
        self,
        directory: Path,
        processes: Processes,
        changes: ChangeFeed,
        layout: Layout,
        hosts: CallbackHosts,
        *,
        attempts: int,
        retry_delay: float,
        timeout: float,
    ) -> None:
        self.directory = directory
        self.processes = processes
        self.changes = changes
        self.layout = layout
        self.hosts = hosts
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: receiver -> (its slots, deliveries using or waiting for them)
        self._receivers: dict[str, tuple[asyncio.Semaphore, int]] = {}

    def __repr__(self) -> str:
        return f"<Webhooks {len(self._tasks)} in flight>"

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Load the deliveries left by the last run and resume them (in the running loop)."""
        self.directory.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),  # bounded per receiver instead
            trust_env=False,  # never through a proxy from the environment
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )
        for path in sorted(self.directory.glob("*.json")):
            try:
                delivery = _Delivery.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError, KeyError):
                logger.warning("unreadable webhook delivery %s; removing it", path.name)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            self._spawn(delivery, None)
        for tmp in self.directory.glob("*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()

    async def close(self) -> None:
        """Stop delivering; what is not delivered yet stays on disk for the next start."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- the route -----------------------------------------------------------------------

    def callback(self, body: Mapping[str, Any]) -> Callback:
        """The callback of a request body, checked (400 before anything starts)."""
        return parse_callback(body, self.hosts)

    async def submit(
        self, sbx: SandboxRecord, spec: StartSpec, callback: Callback
    ) -> dict[str, Any]:
        """Start the execution and keep its delivery; answer the documented queued body."""
        started = await self.processes.start(sbx, spec, None)
        rec = self.processes.get(sbx.id, started["process_id"])
        delivery = _Delivery(
            execution_id=rec.execution_id,
            process_id=rec.process_id,
            sandbox_id=sbx.id,
            callback=callback,
        )
        self._save(delivery)  # durable before the caller learns the execution id
        self._spawn(delivery, rec)
        return {
            "execution_id": rec.execution_id,
            "process_id": rec.process_id,
            "status": "queued",
            "callback_url": callback.url,
            "message": "Execution queued. Will POST to callback_url when complete.",
            "timestamp": iso(time.time()),
        }

    # -- delivering ----------------------------------------------------------------------

    def _spawn(self, delivery: _Delivery, rec: ProcessRecord | None) -> None:
        task = asyncio.ensure_future(self._run(delivery, rec))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("webhook delivery failed unexpectedly", exc_info=task.exception())

    async def _run(self, delivery: _Delivery, rec: ProcessRecord | None) -> None:
        if delivery.state == "waiting":
            if rec is None:
                with contextlib.suppress(ApiError):
                    rec = self.processes.get(delivery.sandbox_id, delivery.process_id)
            while rec is not None and not rec.finished:
                await self.changes.wait_for_process(rec, 30.0, None)
            delivery.body = json.dumps(self._result(delivery, rec), separators=(",", ":"))
            delivery.state = "pending"
            delivery.next_at = time.time()
            self._save(delivery)
        while delivery.attempts < self.attempts:
            delay = delivery.next_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            delivery.attempts += 1
            async with self._slot(delivery.callback.url):
                outcome = await self._post(delivery)
            if outcome is None:
                self._forget(delivery)
                return
            delivery.next_at = time.time() + self.retry_delay * 2 ** (delivery.attempts - 1)
            self._save(delivery)
            logger.info(
                "webhook for %s: attempt %d of %d failed (%s)",
                delivery.execution_id,
                delivery.attempts,
                self.attempts,
                outcome,
            )
        logger.warning(
            "webhook for %s not delivered after %d attempts; giving up",
            delivery.execution_id,
            delivery.attempts,
        )
        self._forget(delivery)

    def _result(self, delivery: _Delivery, rec: ProcessRecord | None) -> dict[str, Any]:
        if rec is None:  # its sandbox was deleted while the server was stopped
            return {
                "execution_id": delivery.execution_id,
                "process_id": delivery.process_id,
                "sandbox_id": delivery.sandbox_id,
                "status": "failed",
                "success": False,
                "stdout": "",
                "stderr": "",
                "exit_code": None,
                "execution_time": None,
                "timestamp": iso(time.time()),
                "error": "the execution's record is gone (its sandbox was deleted)",
            }
        result: dict[str, Any] = {
            "execution_id": rec.execution_id,
            "process_id": rec.process_id,
            "sandbox_id": rec.sandbox_id,
            "status": rec.status,
            "success": rec.status == "completed" and rec.exit_code == 0,
            "exit_code": rec.exit_code,
            "execution_time": None if rec.duration is None else round(rec.duration, 4),
            "timestamp": iso(rec.completed_at),
            "error": rec.error,
        }
        for stream in ("stdout", "stderr"):
            path = self.layout.output(rec.sandbox_id, rec.process_id, stream)
            result[stream], result[f"{stream}_truncated"], _ = read_tail(path, CALLBACK_OUTPUT_CAP)
        return result

    @contextlib.asynccontextmanager
    async def _slot(self, url: str) -> AsyncIterator[None]:
        """One of the receiver's ``PER_RECEIVER`` slots, for one attempt."""
        parsed = URL(url)
        key = f"{parsed.scheme}://{parsed.host}:{parsed.port}"
        slots, users = self._receivers.get(key, (asyncio.Semaphore(PER_RECEIVER), 0))
        self._receivers[key] = (slots, users + 1)
        try:
            async with slots:
                yield
        finally:
            slots, users = self._receivers[key]
            if users > 1:
                self._receivers[key] = (slots, users - 1)
            else:
                del self._receivers[key]

    async def _post(self, delivery: _Delivery) -> str | None:
        """One attempt: ``None`` once delivered, else why not."""
        session = self._session
        assert session is not None
        assert delivery.body is not None
        url = delivery.callback.url
        host = URL(url).host or ""
        if not self.hosts.allows(host):  # the allow-list changed since it was accepted
            delivery.attempts = self.attempts
            return f"host {host!r} is no longer an allowed callback host"
        body = delivery.body.encode()
        stamp = int(time.time())
        headers = {
            **delivery.callback.headers,
            "Content-Type": "application/json",
            "User-Agent": f"hopx-local/{__version__}",
            TIMESTAMP_HEADER: str(stamp),
        }
        if delivery.callback.secret is not None:
            headers[SIGNATURE_HEADER] = sign_webhook(delivery.callback.secret, stamp, body)
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                if 200 <= r.status < 300:
                    logger.info("webhook for %s delivered", delivery.execution_id)
                    return None
                return f"HTTP {r.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return type(exc).__name__

    # -- files ---------------------------------------------------------------------------

    def _path(self, delivery: _Delivery) -> Path:
        return self.directory / f"{delivery.execution_id}.json"

    def _save(self, delivery: _Delivery) -> None:
        path = self._path(delivery)
        tmp = path.with_suffix(".tmp")
        data = json.dumps(delivery.to_json()).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _forget(self, delivery: _Delivery) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(delivery).unlink()
