"""The manifest of a resumable fan-out: an append-only file of JSON lines.

Every line is written through to the operating system at once (it survives the driver
being killed); the header and each intent are also fsync'd before the run goes on (they
survive a power loss too). A ``started`` or ``ended`` line lost with the machine is found
out again: the intent's process name finds the process, which is then waited on.

The first line names the batch: ``{"kind": "batch", "format": 1, "batch": HASH, "id": ID,
"tasks": N}``, where ``HASH`` is the identity of the tasks (their code or command, language,
working directory, timeout and environment as a hash, never its values, in order) and ``ID``
a random id of this manifest, which the names of its processes carry. Then, per task ``i``
and attempt ``a``:

* ``{"kind": "intent", "task": i, "attempt": a, "sandbox_id": ..., "name": ..., "at": T}``
  before a start is sent (``at``: Unix time);
* ``{"kind": "started", "task": i, "attempt": a, "sandbox_id": ..., "process_id": ...}``
  once it is answered;
* ``{"kind": "ended", "task": i, "attempt": a, "status": ..., "result": {...}}`` once the
  process ended (``status`` ``lost`` when its sandbox disappeared);

and ``{"kind": "sandbox", "sandbox_id": ...}`` for each sandbox the batch created for itself
(``hopx map``). A line cut short by a crash is skipped when the file is read again.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

import attrs

from ._errors import ValidationError
from ._fields import parse_time
from ._models import ProcessResult, ProcessStatus
from ._task import Task

__all__ = ["FORMAT", "Manifest", "TaskState", "batch_hash", "process_name"]


FORMAT = 1


def batch_hash(tasks: Sequence[Task]) -> str:
    """The identity of a batch: a hash of its tasks' content and order.

    >>> batch_hash([Task(code="print(1)")]) == batch_hash([Task(code="print(1)")])
    True
    >>> batch_hash([Task(code="print(1)")]) == batch_hash([Task(code="print(2)")])
    False
    """
    digest = hashlib.sha256()
    for task in tasks:
        env = None
        if task.env is not None:
            blob = json.dumps(sorted(task.env.items()), separators=(",", ":")).encode()
            env = hashlib.sha256(blob).hexdigest()
        kind, text = ("code", task.code) if task.code is not None else ("command", task.command)
        item = [kind, text, task.language, env, task.working_dir, task.timeout]
        digest.update(json.dumps(item, separators=(",", ":")).encode() + b"\n")
    return digest.hexdigest()


def process_name(task: Task, manifest_id: str, index: int, attempt: int) -> str:
    """The name a manifest's start gives its process, so that a later run can find it.

    >>> process_name(Task(code="1", name="map-3"), "ab12", 3, 0)
    'map-3@ab12.3.0'
    """
    return f"{task.name or 'task'}@{manifest_id}.{index}.{attempt}"


def result_to_json(result: ProcessResult) -> dict[str, Any]:
    return result.to_dict(json_ready=True)


def result_from_json(data: Any) -> ProcessResult | None:
    if not isinstance(data, dict):
        return None
    try:
        return ProcessResult(
            process_id=str(data["process_id"]),
            status=str(data["status"]),
            exit_code=data.get("exit_code"),
            stdout=str(data.get("stdout") or ""),
            stderr=str(data.get("stderr") or ""),
            name=data.get("name"),
            started_at=parse_time(data.get("started_at")),
            completed_at=parse_time(data.get("completed_at")),
            execution_time=data.get("execution_time"),
            output_available=bool(data.get("output_available", True)),
            stdout_truncated=bool(data.get("stdout_truncated", False)),
            stderr_truncated=bool(data.get("stderr_truncated", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


@attrs.define
class TaskState:
    """What a manifest says of one task: its last attempt and how far that got."""

    #: "new", "intent", "started" or "ended"
    phase: str = "new"
    attempt: int = 0
    sandbox_id: str | None = None
    process_id: str | None = None
    name: str | None = None
    #: when the intent was recorded (Unix time)
    at: float = 0.0
    result: ProcessResult | None = None
    #: attempts that ended unsuccessfully
    failures: int = 0

    def finished(self, retries: int) -> bool:
        """Whether the task needs nothing more: it succeeded, or failed ``retries + 1`` times."""
        if self.phase != "ended" or self.result is None:
            return False
        return self.result.ok or self.failures > retries


def _lost_or_failed(result: ProcessResult | None) -> bool:
    return result is None or not result.ok


class Manifest:
    """The manifest of one resumable batch (``run_many(manifest=PATH)``, ``hopx map
    --manifest``): an append-only file of JSON lines, one per start intent, start and
    result, each fsync'd. Open one to read what a batch did; ``run_many`` opens its own.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "batch.jsonl")
    >>> manifest = Manifest.open(path, [Task(code="print(1)")])
    >>> manifest.record_sandbox("sbx_1"); manifest.sandboxes
    ['sbx_1']
    >>> manifest.close()
    >>> Manifest.open(path, [Task(code="print(2)")])
    Traceback (most recent call last):
    ...
    hopx_async._errors.ValidationError: manifest: ... belongs to a different batch ...
    """

    def __init__(
        self, path: Path | None, batch: str, manifest_id: str, states: list[TaskState]
    ) -> None:
        #: None: kept in memory only (a run without ``manifest=``)
        self.path = path
        self.batch = batch
        self.id = manifest_id
        self.states = states
        #: the sandboxes the batch created for itself (``hopx map``)
        self.sandboxes: list[str] = []
        self._file: Any = None

    @classmethod
    def open(cls, path: str | os.PathLike[str], tasks: Sequence[Task]) -> Manifest:
        """Read the manifest at ``path`` (or start it) for ``tasks``; a manifest of another
        batch raises :class:`ValidationError` and is left as it is.

        ``states`` then tells, per task, what the file says (``phase``: new, intent,
        started or ended; ``result`` once ended); ``sandboxes`` the sandboxes recorded.
        """
        where = Path(path)
        batch = batch_hash(tasks)
        states = [TaskState() for _ in tasks]
        header: dict[str, Any] | None = None
        sandboxes: list[str] = []
        handle = _open_append(where)  # locked first: what is read next is the whole story
        try:
            header = _read_into(where, batch, len(tasks), states, sandboxes)
        except BaseException:
            handle.close()
            raise
        if _ends_cut(where):  # the end of a line cut short: the next record starts afresh
            handle.write("\n")
        manifest_id = str(header["id"]) if header else secrets.token_hex(6)
        manifest = cls(where, batch, manifest_id, states)
        manifest.sandboxes = sandboxes
        manifest._file = handle
        if header is None:
            manifest._append(
                {
                    "kind": "batch",
                    "format": FORMAT,
                    "batch": batch,
                    "id": manifest_id,
                    "tasks": len(tasks),
                    "created": time.time(),
                }
            )
        return manifest

    @classmethod
    def memory(cls, count: int) -> Manifest:
        """The bookkeeping of a run without a manifest file (nothing is written)."""
        return cls(None, "", secrets.token_hex(6), [TaskState() for _ in range(count)])

    @property
    def durable(self) -> bool:
        """Whether the records go to a file (and processes get findable names)."""
        return self.path is not None

    @property
    def resumed(self) -> bool:
        """Whether the file held records of an earlier run."""
        return any(state.phase != "new" for state in self.states) or bool(self.sandboxes)

    def close(self) -> None:
        """Close the file (records appended later reopen it)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, record: dict[str, Any], *, sync: bool = True) -> None:
        """Append ``record``; ``sync``: on disk before this returns (``fsync``), else handed
        to the operating system only (it survives the process being killed, not a power
        loss: what such a record says a resumed run finds out again by itself)."""
        if self.path is None:
            return
        if self._file is None:
            self._file = _open_append(self.path)
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    # ----------------------------------------------------------------- records
    def record_sandbox(self, sandbox_id: str) -> None:
        """Record that the batch created ``sandbox_id`` for itself (a resumed run reuses it,
        see :attr:`sandboxes`)."""
        if sandbox_id not in self.sandboxes:
            self.sandboxes.append(sandbox_id)
            self._append({"kind": "sandbox", "sandbox_id": sandbox_id})

    def intent(self, index: int, attempt: int, sandbox_id: str, name: str) -> None:
        record = {
            "kind": "intent",
            "task": index,
            "attempt": attempt,
            "sandbox_id": sandbox_id,
            "name": name,
            "at": time.time(),
        }
        self._append(record)
        _apply(self.states[index], record)

    def started(self, index: int, attempt: int, sandbox_id: str, process_id: str) -> None:
        record = {
            "kind": "started",
            "task": index,
            "attempt": attempt,
            "sandbox_id": sandbox_id,
            "process_id": process_id,
        }
        self._append(record, sync=False)  # if lost: the intent's name finds the process
        _apply(self.states[index], record)

    def ended(self, index: int, attempt: int, result: ProcessResult) -> None:
        record = {
            "kind": "ended",
            "task": index,
            "attempt": attempt,
            "status": result.status,
            "result": result_to_json(result),
        }
        self._append(record, sync=False)  # if lost: the process is waited on again
        _apply(self.states[index], record, result)


def _apply(state: TaskState, record: dict[str, Any], result: ProcessResult | None = None) -> None:
    kind = record.get("kind")
    attempt = record.get("attempt")
    if not isinstance(attempt, int) or attempt < state.attempt:
        return
    if kind == "intent":
        state.phase, state.attempt = "intent", attempt
        state.sandbox_id = _text(record.get("sandbox_id"))
        state.name = _text(record.get("name"))
        state.process_id, state.result = None, None
        at = record.get("at")
        state.at = float(at) if isinstance(at, (int, float)) else 0.0
    elif kind == "started" and attempt == state.attempt:
        state.phase = "started"
        state.sandbox_id = _text(record.get("sandbox_id")) or state.sandbox_id
        state.process_id = _text(record.get("process_id"))
    elif kind == "ended" and attempt == state.attempt and state.phase != "ended":
        done = result if result is not None else result_from_json(record.get("result"))
        if done is None:
            done = ProcessResult(
                process_id=state.process_id or "",
                status=str(record.get("status") or ProcessStatus.LOST),
                exit_code=None,
                stdout="",
                stderr="",
                name=state.name,
            )
        state.phase, state.result = "ended", done
        if _lost_or_failed(done):
            state.failures += 1


def _read_into(
    where: Path, batch: str, count: int, states: list[TaskState], sandboxes: list[str]
) -> dict[str, Any] | None:
    """Read the manifest at ``where`` into ``states`` and ``sandboxes``; its header (None
    for an empty file). One of another batch raises :class:`ValidationError`."""
    header: dict[str, Any] | None = None
    for record in _read_lines(where):
        if header is None:
            if record.get("kind") != "batch" or record.get("format") != FORMAT:
                raise ValidationError(
                    "manifest", f"{where} is not a manifest of this SDK (its first line)"
                )
            header = record
            if record.get("batch") != batch or record.get("tasks") != count:
                raise ValidationError(
                    "manifest",
                    f"{where} belongs to a different batch ({record.get('tasks')} tasks, "
                    f"batch {str(record.get('batch'))[:12]}; these {count} tasks are "
                    f"batch {batch[:12]}): give a new path, or the tasks it was made for",
                )
            continue
        sandbox_id = record.get("sandbox_id")
        if record.get("kind") == "sandbox" and isinstance(sandbox_id, str):
            if sandbox_id not in sandboxes:
                sandboxes.append(sandbox_id)
            continue
        index = record.get("task")
        if isinstance(index, int) and 0 <= index < count:
            _apply(states[index], record)
    return header


def _ends_cut(path: Path) -> bool:
    """Whether the file's last line was cut short (no newline at its end)."""
    try:
        if path.stat().st_size == 0:
            return False
        with path.open("rb") as existing:
            existing.seek(-1, os.SEEK_END)
            return existing.read(1) != b"\n"
    except OSError:
        return False


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ValidationError("manifest", f"cannot read {path}: {exc}") from None
    records = []
    for line in raw.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _open_append(path: Path) -> Any:
    """``path`` opened for appending, locked for this run (another run holding it: refused)."""
    try:
        handle = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise ValidationError("manifest", f"cannot write {path}: {exc}") from None
    if fcntl is not None:
        try:  # one run at a time: two would start the same tasks
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise ValidationError(
                "manifest", f"{path} is in use by another run (wait for it to end)"
            ) from None
    return handle
