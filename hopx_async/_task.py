"""The unit of work of a fan-out (:class:`Task`), its argument checks, how one is started,
and the counters of one run (:class:`BatchStats`); no I/O but the start itself."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import _validation as validate
from ._errors import ValidationError
from ._models import ProcessResult

if TYPE_CHECKING:
    from ._process import AsyncBackgroundProcess
    from ._sandbox import AsyncSandbox

__all__ = ["BatchStats", "ProgressCallback", "Task", "check_tasks", "start_task"]

#: ``on_progress(done, total, result)``, called as each process ends
ProgressCallback = Callable[[int, int, ProcessResult], None]


def _env(value: Any) -> Mapping[str, str] | None:
    return validate.env_vars("env", value)


def _env_repr(value: Mapping[str, str] | None) -> str:
    """The names only: values may be secrets."""
    return "None" if value is None else "{" + ", ".join(f"{k!r}: '***'" for k in value) + "}"


@attrs.frozen(kw_only=True)
class Task:
    """One unit of work for :meth:`AsyncHopx.run_many`: code or a shell command.

    Give exactly one of ``code`` (run in ``language``, default python) and ``command``
    (``/bin/sh -c``). ``timeout`` is the process's lifetime on the server (default 300 s).

    >>> Task(code="print(6 * 7)", name="answer").name
    'answer'
    >>> Task(command="ls -la").command
    'ls -la'
    """

    code: str | None = None
    command: str | None = None
    language: str = "python"
    env: Mapping[str, str] | None = attrs.field(default=None, converter=_env, repr=_env_repr)
    name: str | None = None
    timeout: float = 300
    working_dir: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.code is None) == (self.command is None):
            raise ValidationError("task", "give exactly one of code= and command=")
        if self.code is not None:
            validate.non_empty_str("code", self.code)
            validate.language(self.language)
        else:
            validate.non_empty_str("command", self.command)
        validate.positive_number("timeout", self.timeout)
        validate.optional_str("name", self.name)
        validate.optional_str("working_dir", self.working_dir)


@attrs.define
class BatchStats:
    """Counters of one :meth:`AsyncHopx.run_many` run; pass one as ``stats=`` to read them.

    ``from_manifest``: tasks whose result came from the manifest; ``reattached``: tasks
    found running (or started by an earlier run) and waited on; ``started``: processes
    started by this run (retries included); ``retried``: re-runs after a failure or a lost
    sandbox; ``throttled``: 429/503 answers met (absorbed by the transport or not);
    ``concurrency``: the current bound on tasks in flight, ``lowest_concurrency`` the lowest
    it went; ``keepalives``: sandbox timeouts extended.

    >>> stats = BatchStats()
    >>> (stats.started, stats.from_manifest)
    (0, 0)
    """

    from_manifest: int = 0
    reattached: int = 0
    started: int = 0
    retried: int = 0
    throttled: int = 0
    concurrency: int = 0
    lowest_concurrency: int = 0
    keepalives: int = 0


def check_tasks(
    tasks: Iterable[Task],
    sandboxes: Iterable[AsyncSandbox],
    max_concurrency: int,
    *,
    allow_none: bool = False,
) -> tuple[list[Task], list[AsyncSandbox]]:
    """The arguments of ``run_many``, checked before any I/O."""
    if isinstance(tasks, (str, bytes, Mapping)):
        raise ValidationError("tasks", "expected an iterable of Task")
    items = list(tasks)
    for item in items:
        if not isinstance(item, Task):
            raise ValidationError("tasks", f"expected Task objects, got {type(item).__name__}")
    if isinstance(sandboxes, (str, bytes, Mapping)):
        raise ValidationError("sandboxes", "expected a list of sandboxes")
    boxes = list(sandboxes)
    if not boxes and not allow_none:
        raise ValidationError("sandboxes", "expected at least one sandbox")
    for box in boxes:
        if not hasattr(box, "run_code_background") or not hasattr(box, "commands"):
            raise ValidationError("sandboxes", f"expected sandboxes, got {type(box).__name__}")
    validate.positive_int("max_concurrency", max_concurrency)
    return items, boxes


def check_retries(retries: Any) -> int:
    """``retries``: a whole number, 0 or more."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValidationError("retries", f"expected a whole number >= 0, got {retries!r}")
    return retries


async def start_task(
    sandbox: AsyncSandbox, task: Task, name: str | None = None
) -> AsyncBackgroundProcess:
    """Start one task in ``sandbox`` in the background (as ``name``, else its own name)."""
    name = name if name is not None else task.name
    if task.code is not None:
        return await sandbox.run_code_background(
            task.code,
            language=task.language,
            timeout=task.timeout,
            env=task.env,
            name=name,
            working_dir=task.working_dir,
        )
    assert task.command is not None
    return await sandbox.commands.run(
        task.command,
        background=True,
        timeout=task.timeout,
        env=task.env,
        name=name,
        working_dir=task.working_dir,
    )
