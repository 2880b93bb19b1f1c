"""SQLite persistence for sandboxes and process records (output lives in files).

The store is small and local, so its calls run synchronously on the event loop. Writes go
into an open transaction and are committed once per loop iteration (``call_soon``), which
batches the many small writes of a burst of process starts into one commit.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from ._records import ProcessRecord, SandboxRecord

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
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level="DEFERRED")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit once per iteration of ``loop`` instead of once per write."""
        self._loop = loop

    # -- reading (startup only) ----------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def sandboxes(self) -> list[SandboxRecord]:
        rows = self._db.execute("SELECT data FROM sandboxes ORDER BY seq").fetchall()
        return [SandboxRecord.from_json(json.loads(row[0])) for row in rows]

    def processes(self) -> list[ProcessRecord]:
        rows = self._db.execute("SELECT data FROM processes ORDER BY sandbox_id, seq").fetchall()
        return [ProcessRecord.from_json(json.loads(row[0])) for row in rows]

    # -- writing -------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        self._dirty()

    def put_sandbox(self, rec: SandboxRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sandboxes (id, seq, data) VALUES (?, ?, ?)",
            (rec.id, rec.seq, json.dumps(rec.to_json())),
        )
        self._dirty()

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._db.execute("DELETE FROM processes WHERE sandbox_id = ?", (sandbox_id,))
        self._db.execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
        self._dirty()

    def put_process(self, rec: ProcessRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO processes (id, sandbox_id, seq, data) VALUES (?, ?, ?, ?)",
            (rec.process_id, rec.sandbox_id, rec.seq, json.dumps(rec.to_json())),
        )
        self._dirty()

    def delete_process(self, process_id: str) -> None:
        self._db.execute("DELETE FROM processes WHERE id = ?", (process_id,))
        self._dirty()

    def flush(self) -> None:
        self._flush_scheduled = False
        self._db.commit()

    def close(self) -> None:
        self.flush()
        self._db.close()

    def _dirty(self) -> None:
        if self._loop is None:
            self._db.commit()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)
