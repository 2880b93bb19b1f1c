"""SQLite persistence for sandboxes and process records (output lives in files).

The store is small and local, so its calls run synchronously on the event loop. Writes go
into an open transaction and are committed once per loop iteration (``call_soon``), which
batches the many small writes of a burst of process starts into one commit. Sandbox and
process rows are written at the commit (their state then), once per batch however often they
changed in between. A writer that
must not go on before its writes are durable (a start, before its child may run) awaits
``commit()``: every caller of one loop iteration shares one commit (group commit).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path

from .records import ProcessRecord, SandboxRecord

__all__ = ["Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY,
    sandbox_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS processes_by_sandbox ON processes (sandbox_id, seq);
"""


class Store:
    @classmethod
    def open(cls, path: Path) -> Store:
        """The store in the database file ``path``, created private (0600) if missing."""
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        return cls(path)

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Resolved by the next commit; awaited by ``commit()``.
        self._next_commit: asyncio.Future[None] | None = None
        #: Rows to write at the next commit (the record's state at that moment), by id.
        self._sandboxes: dict[str, SandboxRecord] = {}
        self._processes: dict[str, ProcessRecord] = {}

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit once per iteration of ``loop`` instead of once per write."""
        self._loop = loop

    # -- reading (startup only) ----------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def sandboxes(self) -> list[SandboxRecord]:
        self._write_pending()
        rows = self._db.execute("SELECT data FROM sandboxes ORDER BY seq").fetchall()
        return [SandboxRecord.from_json(json.loads(row[0])) for row in rows]

    def processes(self) -> list[ProcessRecord]:
        self._write_pending()
        rows = self._db.execute("SELECT data FROM processes ORDER BY sandbox_id, seq").fetchall()
        return [ProcessRecord.from_json(json.loads(row[0])) for row in rows]

    # -- writing -------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        self._dirty()

    def put_sandbox(self, rec: SandboxRecord) -> None:
        self._sandboxes[rec.id] = rec
        self._dirty()

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._sandboxes.pop(sandbox_id, None)
        for process_id in [k for k, v in self._processes.items() if v.sandbox_id == sandbox_id]:
            del self._processes[process_id]
        self._db.execute("DELETE FROM processes WHERE sandbox_id = ?", (sandbox_id,))
        self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
        self._dirty()

    def put_process(self, rec: ProcessRecord) -> None:
        self._processes[rec.process_id] = rec
        self._dirty()

    def delete_process(self, process_id: str) -> None:
        self._processes.pop(process_id, None)
        self._db.execute("DELETE FROM processes WHERE id = ?", (process_id,))
        self._dirty()

    def flush(self) -> None:
        self._flush_scheduled = False
        waiters, self._next_commit = self._next_commit, None
        try:
            self._write_pending()
            self._db.commit()
        except BaseException as exc:
            if waiters is not None:
                waiters.set_exception(exc)
            raise
        if waiters is not None and not waiters.done():
            waiters.set_result(None)

    def _write_pending(self) -> None:
        if self._sandboxes:
            sandboxes, self._sandboxes = self._sandboxes, {}
            self._db.executemany(
                "INSERT OR REPLACE INTO sandboxes (id, seq, data) VALUES (?, ?, ?)",
                [(r.id, r.seq, json.dumps(r.to_json())) for r in sandboxes.values()],
            )
        if self._processes:
            processes, self._processes = self._processes, {}
            self._db.executemany(
                "INSERT OR REPLACE INTO processes (id, sandbox_id, seq, data) VALUES (?, ?, ?, ?)",
                [
                    (r.process_id, r.sandbox_id, r.seq, json.dumps(r.to_json()))
                    for r in processes.values()
                ],
            )

    async def commit(self) -> None:
        """Return once everything written so far is committed.

        The callers of one loop iteration share one commit (they all wait for it).
        """
        if self._loop is None:
            self.flush()
            return
        if self._next_commit is None:
            self._next_commit = self._loop.create_future()
        waiters = self._next_commit
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)
        # Shielded: one caller cancelled must not cancel the commit the others wait for.
        await asyncio.shield(waiters)

    def close(self) -> None:
        self.flush()
        self._db.close()

    def _dirty(self) -> None:
        if self._loop is None:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)
