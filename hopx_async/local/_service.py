"""Sandboxes and their processes: the state behind the HTTP routes.

``Service`` owns the in-memory records (the store is write-through persistence), starts
processes through the ``Supervisor``, follows them to a terminal status, and keeps the
per-sandbox change counter that the list's ``since``/``wait`` extension relies on.
It knows nothing about HTTP beyond raising ``ApiError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import pwd
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ._errors import ApiError, bad_request, not_found, process_not_found
from ._output import file_size, read_tail
from ._records import ProcessRecord, SandboxRecord, iso, new_id
from ._store import Store
from ._supervisor import Running, Supervisor, exit_code_of, proc_start_ticks, signal_group
from ._tokens import TokenSigner

__all__ = ["LIST_OUTPUT_CAP", "TEMPLATES", "Service", "StartSpec"]

logger = logging.getLogger("hopx_async.local")

#: Per stream, the list answer carries at most this many trailing bytes of output.
LIST_OUTPUT_CAP = 1024 * 1024
#: Per stream, a synchronous execution answers at most this many trailing bytes.
SYNC_OUTPUT_CAP = 8 * 1024 * 1024
#: Finished processes whose output is at most this big have it kept in memory for lists.
_CACHE_MAX = 64 * 1024
#: ... up to this many characters in all.
_CACHE_BUDGET = 64 * 1024 * 1024

_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SECRET_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "PRIVATE")
MASK = "***MASKED***"

_RESOURCES = {"vcpu": 2, "memory_mb": 2048, "disk_mb": 10240}

TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "id": "1",
        "name": "code-interpreter",
        "display_name": "Code Interpreter",
        "description": "Python, bash and (when installed) JavaScript/Go, run as local processes",
        "category": "development",
        "language": "python",
        "is_active": True,
        "is_public": True,
        "status": "active",
        "object": "template",
        "default_resources": {"vcpu": 2, "memory_mb": 2048, "disk_gb": 10},
        "features": ["background_execution", "commands", "env"],
        "tags": ["local"],
    },
    {
        "id": "2",
        "name": "base",
        "display_name": "Base",
        "description": "A bare workspace; the same languages as code-interpreter",
        "category": "operating-system",
        "language": "bash",
        "is_active": True,
        "is_public": True,
        "status": "active",
        "object": "template",
        "default_resources": {"vcpu": 2, "memory_mb": 2048, "disk_gb": 10},
        "features": ["background_execution", "commands", "env"],
        "tags": ["local"],
    },
)

_LANGUAGE_ALIASES = {
    "python": "python",
    "python3": "python",
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "nodejs": "javascript",
    "go": "go",
    "golang": "go",
}
#: Code up to this many characters goes on the command line (-c / -e), not in a file.
_INLINE_CODE_MAX = 32 * 1024
_INLINE_FLAG = {"python": ("-u", "-c"), "bash": ("-c",), "javascript": ("-e",)}
_SOURCE_SUFFIX = {"python": ".py", "bash": ".sh", "javascript": ".js", "go": ".go"}


def find_template(name_or_id: str) -> dict[str, Any] | None:
    for template in TEMPLATES:
        if name_or_id in (template["name"], template["id"]):
            return template
    return None


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in _SECRET_MARKERS)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


@attrs.define
class StartSpec:
    """What to run: built by the routes from a request body."""

    kind: Literal["code", "command"]
    language: str
    timeout: float
    working_dir: str | None
    env: dict[str, str]
    name: str | None = None
    code: str | None = None
    #: For commands: the argv to run, and the text shown as "command".
    argv: list[str] | None = None
    command: str | None = None


class Service:
    def __init__(
        self,
        *,
        state_dir: Path,
        store: Store,
        signer: TokenSigner,
        supervisor: Supervisor,
    ) -> None:
        self.state_dir = state_dir
        self.store = store
        self.signer = signer
        self.supervisor = supervisor
        self.base_url = ""
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.procs: dict[str, dict[str, ProcessRecord]] = {}
        self.runs: dict[str, Running] = {}
        self._sync_runs: dict[str, set[Running]] = {}
        self._spawning: dict[str, asyncio.Future[None]] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._idempotent: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._out_cache: dict[tuple[str, str], tuple[str, bool]] = {}
        self._out_cache_chars = 0
        self._json_cache: dict[str, dict[str, Any]] = {}
        self._followers: set[asyncio.Task[None]] = set()
        self._deleting: set[str] = set()
        self._seq = 0
        self._reaper: asyncio.Task[None] | None = None
        self.languages = self._detect_languages()

    # -- lifecycle -----------------------------------------------------------------------

    @staticmethod
    def _detect_languages() -> dict[str, str]:
        found = {"python": sys.executable, "bash": shutil.which("bash") or "/bin/bash"}
        for language, program in (("javascript", "node"), ("go", "go")):
            path = shutil.which(program)
            if path:
                found[language] = path
        return found

    def load(self) -> None:
        """Read the store; processes that were running when the server died become failed."""
        for sbx in self.store.sandboxes():
            self.sandboxes[sbx.id] = sbx
            self.procs[sbx.id] = {}
            self._seq = max(self._seq, sbx.seq)
        now = time.time()
        for rec in self.store.processes():
            procs = self.procs.get(rec.sandbox_id)
            if procs is None:
                continue
            procs[rec.process_id] = rec
            self._seq = max(self._seq, rec.seq)
            if rec.idempotency_key:
                done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                done.set_result(self.start_answer(rec, status="running"))
                self._idempotent[(rec.sandbox_id, rec.idempotency_key)] = done
            if rec.finished:
                continue
            self._kill_orphan(rec)
            rec.status = "failed"
            rec.completed_at = now
            rec.error = (
                "the local backend stopped while this process was "
                f"{'running' if rec.pid else 'starting'}; its outcome is unknown"
            )
            self._note(rec, "stderr", f"hopx-local: {rec.error}")
            self._bump(self.sandboxes[rec.sandbox_id], rec)
        self.store.flush()

    @staticmethod
    def _kill_orphan(rec: ProcessRecord) -> None:
        # Its group may still run (it had its own session); only touch it if the pid still
        # belongs to the same process (same start time), never a recycled pid.
        if rec.pid and rec.pid_start and proc_start_ticks(rec.pid) == rec.pid_start:
            signal_group(rec.pid, signal.SIGKILL)

    def start_reaper(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_expired())

    async def _reap_expired(self) -> None:
        while True:
            now = time.time()
            for sbx in list(self.sandboxes.values()):
                if sbx.expires_at is not None and sbx.expires_at <= now:
                    logger.info("sandbox %s reached its timeout; deleting it", sbx.id)
                    try:
                        await self.delete_sandbox(sbx.id, reason="the sandbox's timeout expired")
                    except ApiError:
                        pass  # deleted meanwhile
                    except Exception:
                        logger.exception("could not delete expired sandbox %s", sbx.id)
            await asyncio.sleep(0.25)

    async def close(self) -> None:
        """Kill every running process group (marking them killed) and flush the store."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        runs = list(self.runs.values())
        for run in runs:
            if run.end_reason is None:
                run.end_reason = "shutdown"
            self.supervisor.terminate_soon(run)
        for sync_runs in self._sync_runs.values():
            for run in sync_runs:
                run.end_reason = run.end_reason or "shutdown"
                self.supervisor.terminate_soon(run)
        await _all_done(runs, timeout=10)
        if self._followers:
            await asyncio.wait(list(self._followers), timeout=5)
        self.store.flush()

    # -- sandboxes -----------------------------------------------------------------------

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.state_dir / "sandboxes" / sandbox_id

    def workspace(self, sandbox_id: str) -> Path:
        return self.sandbox_dir(sandbox_id) / "workspace"

    def output_path(self, rec: ProcessRecord, stream: str) -> Path:
        return self.sandbox_dir(rec.sandbox_id) / "output" / f"{rec.process_id}.{stream}"

    def get_sandbox(self, sandbox_id: str) -> SandboxRecord:
        sbx = self.sandboxes.get(sandbox_id)
        if sbx is None:
            raise not_found("sandbox", sandbox_id)
        return sbx

    def create_sandbox(
        self,
        *,
        template: dict[str, Any],
        region: str | None,
        timeout_seconds: int | None,
        internet_access: bool,
        env_vars: dict[str, str],
    ) -> SandboxRecord:
        now = time.time()
        self._seq += 1
        sbx = SandboxRecord(
            id=new_id("sbx"),
            seq=self._seq,
            template_name=template["name"],
            template_id=template["id"],
            region=region or "local",
            internet_access=internet_access,
            created_at=now,
            updated_at=now,
            timeout_seconds=timeout_seconds,
            expires_at=None if timeout_seconds is None else now + timeout_seconds,
            env_vars=dict(env_vars),
        )
        (self.sandbox_dir(sbx.id) / "output").mkdir(parents=True, exist_ok=True)
        self.workspace(sbx.id).mkdir(parents=True, exist_ok=True)
        self.sandboxes[sbx.id] = sbx
        self.procs[sbx.id] = {}
        self.store.put_sandbox(sbx)
        return sbx

    def sandbox_json(self, sbx: SandboxRecord, *, with_token: bool = True) -> dict[str, Any]:
        host = f"{self.base_url}/sandboxes/{sbx.id}"
        data: dict[str, Any] = {
            "id": sbx.id,
            "object": "sandbox",
            "status": sbx.status,
            "public_host": host,
            "direct_url": host,
            "template_id": sbx.template_id,
            "template_name": sbx.template_name,
            "organization_id": 1,
            "region": sbx.region,
            "resources": dict(_RESOURCES),
            "internet_access": sbx.internet_access,
            "timeout_seconds": sbx.timeout_seconds,
            "expires_at": iso(sbx.expires_at),
            "created_at": iso(sbx.created_at),
            "updated_at": iso(sbx.updated_at),
        }
        if with_token:
            token, expires = self.signer.issue(sbx.id)
            data["auth_token"] = token
            data["token_expires_at"] = iso(expires)
        return data

    def list_sandboxes(
        self, *, limit: int, after_seq: int, status: str | None, region: str | None
    ) -> tuple[list[SandboxRecord], bool]:
        matching = [
            sbx
            for sbx in self.sandboxes.values()
            if sbx.seq > after_seq
            and (status is None or sbx.status == status)
            and (region is None or sbx.region == region)
        ]
        matching.sort(key=lambda s: s.seq)
        return matching[:limit], len(matching) > limit

    async def delete_sandbox(self, sandbox_id: str, *, reason: str) -> None:
        sbx = self.get_sandbox(sandbox_id)
        if sandbox_id in self._deleting:
            return
        self._deleting.add(sandbox_id)
        try:
            runs = [self.runs[pid] for pid in self.procs.get(sandbox_id, {}) if pid in self.runs]
            runs.extend(self._sync_runs.get(sandbox_id, ()))
            for run in runs:
                if run.end_reason is None:
                    run.end_reason = "killed"
                self.supervisor.terminate_soon(run)
            await _all_done(runs, timeout=5)
            self.sandboxes.pop(sandbox_id, None)
            for pid in self.procs.pop(sandbox_id, {}):
                self._forget_output(pid)
            self._sync_runs.pop(sandbox_id, None)
            for key in [k for k in self._idempotent if k[0] == sandbox_id]:
                del self._idempotent[key]
            self.store.delete_sandbox(sandbox_id)
            self._wake(sbx.id)
            logger.info("sandbox %s deleted (%s)", sandbox_id, reason)
            await asyncio.to_thread(shutil.rmtree, self.sandbox_dir(sandbox_id), True)
        finally:
            self._deleting.discard(sandbox_id)

    def _groups_of(self, sandbox_id: str) -> list[int]:
        pids = [run.pid for pid, run in self.runs.items() if pid in self.procs.get(sandbox_id, {})]
        pids.extend(run.pid for run in self._sync_runs.get(sandbox_id, ()))
        return pids

    def pause(self, sandbox_id: str) -> SandboxRecord:
        sbx = self.get_sandbox(sandbox_id)
        if sbx.status != "paused":
            for pgid in self._groups_of(sandbox_id):
                signal_group(pgid, signal.SIGSTOP)
            sbx.status = "paused"
            self._touch(sbx)
        return sbx

    def resume(self, sandbox_id: str) -> SandboxRecord:
        sbx = self.get_sandbox(sandbox_id)
        if sbx.status == "paused":
            for pgid in self._groups_of(sandbox_id):
                signal_group(pgid, signal.SIGCONT)
            sbx.status = "running"
            self._touch(sbx)
        return sbx

    def set_timeout(self, sandbox_id: str, seconds: int) -> SandboxRecord:
        sbx = self.get_sandbox(sandbox_id)
        sbx.timeout_seconds = seconds
        sbx.expires_at = time.time() + seconds
        self._touch(sbx)
        return sbx

    def _touch(self, sbx: SandboxRecord) -> None:
        sbx.updated_at = time.time()
        self.store.put_sandbox(sbx)

    # -- environment ---------------------------------------------------------------------

    def resolve_language(self, language: str) -> str:
        canonical = _LANGUAGE_ALIASES.get(language.lower())
        if canonical is None or canonical not in self.languages:
            available = ", ".join(sorted(self.languages))
            raise bad_request(f"unsupported language {language!r}; available here: {available}")
        return canonical

    def resolve_working_dir(self, sandbox_id: str, value: str | None) -> Path:
        workspace = self.workspace(sandbox_id)
        if value is None or value == "":
            return workspace
        if "\x00" in value:
            raise bad_request("'working_dir' must not contain NUL characters")
        if value.startswith("/"):
            norm = "/" + posixpath.normpath(value).lstrip("/")
            if norm == "/workspace":
                relative = ""
            elif norm.startswith("/workspace/"):
                relative = norm[len("/workspace/") :]
            else:
                raise bad_request(
                    f"'working_dir' {value!r} is outside the sandbox's workspace (/workspace)"
                )
        else:
            norm = posixpath.normpath(value)
            if norm == ".." or norm.startswith("../"):
                raise bad_request(f"'working_dir' {value!r} leaves the sandbox's workspace")
            relative = "" if norm == "." else norm
        path = workspace / relative if relative else workspace
        real = os.path.realpath(path)
        root = os.path.realpath(workspace)
        if real != root and not real.startswith(root + os.sep):
            raise bad_request(f"'working_dir' {value!r} leaves the sandbox's workspace")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise bad_request(f"'working_dir' {value!r} cannot be used: {exc.strerror}") from exc
        return path

    def process_env(self, sbx: SandboxRecord, extra: Mapping[str, str]) -> dict[str, str]:
        interpreter_dir = os.path.dirname(sys.executable)
        env = {
            "PATH": f"{interpreter_dir}:{_BASE_PATH}",
            "HOME": str(self.workspace(sbx.id)),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(sbx.env_vars)
        env.update(extra)
        return env

    def env_vars_json(self, sbx: SandboxRecord) -> dict[str, Any]:
        masked = {k: (MASK if is_secret_name(k) else v) for k, v in sbx.env_vars.items()}
        return {"env_vars": masked, "count": len(masked)}

    def set_env(self, sbx: SandboxRecord, env: dict[str, str], *, merge: bool) -> None:
        sbx.env_vars = {**sbx.env_vars, **env} if merge else dict(env)
        self._touch(sbx)

    def delete_env(self, sbx: SandboxRecord, names: list[str] | None) -> None:
        if names is None:
            sbx.env_vars = {}
        else:
            for name in names:
                sbx.env_vars.pop(name, None)
        self._touch(sbx)

    # -- processes -----------------------------------------------------------------------

    def _argv(self, rec: ProcessRecord, spec: StartSpec) -> tuple[list[str], Path | None]:
        if spec.kind == "command":
            assert spec.argv is not None
            return spec.argv, None
        assert spec.code is not None
        program = self.languages[rec.language]
        inline = len(spec.code) <= _INLINE_CODE_MAX and "\x00" not in spec.code
        if inline and rec.language in _INLINE_FLAG:
            # No source file to create: file creation is the slowest part of a start.
            return [program, *_INLINE_FLAG[rec.language], spec.code], None
        source = self.output_path(rec, "src" + _SOURCE_SUFFIX[rec.language])
        source.write_text(spec.code, encoding="utf-8")
        if rec.language == "python":
            # The code comes on stdin, so sys.path[0] is the working directory, as with -c.
            return [program, "-u", "-"], source
        if rec.language == "go":
            return [program, "run", str(source)], None
        return [program, str(source)], None

    def start_answer(self, rec: ProcessRecord, *, status: str | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "process_id": rec.process_id,
            "execution_id": rec.execution_id,
            "status": status or rec.status,
            "name": rec.name,
            "language": rec.language,
            "timeout": _number(rec.timeout),
            "version": rec.version,
        }
        if rec.command is not None:
            answer["command"] = rec.command
        return answer

    async def start(
        self, sbx: SandboxRecord, spec: StartSpec, idempotency_key: str | None
    ) -> dict[str, Any]:
        """Start a background process; answer the documented start body."""
        if idempotency_key is None:
            return await self._start(sbx, spec, None)
        key = (sbx.id, idempotency_key)
        existing = self._idempotent.get(key)
        if existing is not None:
            return dict(await asyncio.shield(existing))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._idempotent[key] = future
        try:
            answer = await self._start(sbx, spec, idempotency_key)
        except BaseException as exc:
            del self._idempotent[key]
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        future.set_result(answer)
        return dict(answer)

    async def _start(
        self, sbx: SandboxRecord, spec: StartSpec, idempotency_key: str | None
    ) -> dict[str, Any]:
        cwd = self.resolve_working_dir(sbx.id, spec.working_dir)
        env = self.process_env(sbx, spec.env)
        self._seq += 1
        rec = ProcessRecord(
            process_id=new_id("proc"),
            execution_id=new_id("exec"),
            sandbox_id=sbx.id,
            seq=self._seq,
            kind=spec.kind,
            language=spec.language,
            timeout=spec.timeout,
            created_at=time.time(),
            name=spec.name,
            command=spec.command,
            idempotency_key=idempotency_key,
        )
        self.procs[sbx.id][rec.process_id] = rec
        self._bump(sbx, rec)
        spawned: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawning[rec.process_id] = spawned
        try:
            await self._spawn(sbx, rec, spec, cwd, env)
        finally:
            del self._spawning[rec.process_id]
            spawned.set_result(None)
        return self.start_answer(rec)

    async def _spawn(
        self,
        sbx: SandboxRecord,
        rec: ProcessRecord,
        spec: StartSpec,
        cwd: Path,
        env: dict[str, str],
    ) -> None:
        stdout, stderr = self.output_path(rec, "stdout"), self.output_path(rec, "stderr")
        try:
            argv, stdin = self._argv(rec, spec)
            run = await self.supervisor.spawn(
                argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, stdin=stdin
            )
        except OSError as exc:
            now = time.time()
            rec.status = "failed"
            rec.started_at = rec.completed_at = now
            rec.duration = 0.0
            rec.exit_code = 127 if isinstance(exc, FileNotFoundError) else 126
            rec.error = f"could not start: {exc}"
            self._note(rec, "stderr", f"hopx-local: {rec.error}")
            self._bump(sbx, rec)
            return
        rec.status = "running"
        rec.started_at = time.time()
        rec.pid = run.pid
        rec.pid_start = run.start_ticks
        self.runs[rec.process_id] = run
        self._bump(sbx, rec)
        if sbx.id not in self.sandboxes or sbx.id in self._deleting:
            # The sandbox went away while this process was being started.
            run.end_reason = "killed"
            self.supervisor.terminate_soon(run)
        elif sbx.status == "paused":  # paused while it was being started
            signal_group(run.pid, signal.SIGSTOP)
        task = asyncio.ensure_future(self._follow(sbx, rec, run, time.monotonic()))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow(
        self, sbx: SandboxRecord, rec: ProcessRecord, run: Running, started: float
    ) -> None:
        try:
            returncode = await self.supervisor.watch(run, rec.timeout)
            rec.exit_code = exit_code_of(returncode)
            rec.completed_at = time.time()
            rec.duration = time.monotonic() - started
            reason = run.end_reason
            if reason == "timeout":
                rec.status = "timeout"
                rec.error = f"timed out after {_number(rec.timeout)} seconds"
                self._note(
                    rec,
                    "stderr",
                    f"hopx-local: process timed out after {_number(rec.timeout)} seconds;"
                    " its process group was killed",
                )
            elif reason == "shutdown":
                rec.status = "killed"
                rec.error = "killed because the local backend shut down"
                self._note(rec, "stderr", f"hopx-local: {rec.error}")
            elif reason == "killed":
                rec.status = "killed"
            else:
                rec.status = "completed" if returncode == 0 else "failed"
            self._bump(sbx, rec)
        finally:
            self.runs.pop(rec.process_id, None)
            run.done.set()

    def _note(self, rec: ProcessRecord, stream: str, line: str) -> None:
        """Append a line of the server's own to a process's output file."""
        path = self.output_path(rec, stream)
        try:
            with open(path, "ab") as f:
                if f.tell() > 0:
                    with open(path, "rb") as r:
                        r.seek(-1, os.SEEK_END)
                        if r.read(1) != b"\n":
                            f.write(b"\n")
                f.write(line.encode() + b"\n")
        except OSError:
            logger.warning("could not write to %s", path)

    def _bump(self, sbx: SandboxRecord, rec: ProcessRecord) -> None:
        if sbx.id not in self.sandboxes:  # deleted meanwhile: never write it back
            return
        sbx.version += 1
        rec.version = sbx.version
        self.store.put_process(rec)
        self.store.put_sandbox(sbx)
        self._wake(sbx.id)

    def _wake(self, sandbox_id: str) -> None:
        event = self._changed.pop(sandbox_id, None)
        if event is not None:
            event.set()

    def get_process(self, sandbox_id: str, process_id: str) -> ProcessRecord:
        rec = self.procs.get(sandbox_id, {}).get(process_id)
        if rec is None:
            raise process_not_found(process_id)
        return rec

    async def kill(self, sandbox_id: str, process_id: str) -> ProcessRecord:
        rec = self.get_process(sandbox_id, process_id)
        spawning = self._spawning.get(process_id)
        if spawning is not None:
            await asyncio.shield(spawning)
        run = self.runs.get(process_id)
        if rec.finished or run is None:
            raise process_not_found(process_id, ended=True)
        if run.end_reason is None:
            run.end_reason = "killed"
        self.supervisor.terminate_soon(run)
        await asyncio.wait_for(asyncio.shield(run.done.wait()), 10)
        return rec

    def delete_process(self, sandbox_id: str, process_id: str) -> None:
        rec = self.get_process(sandbox_id, process_id)
        if not rec.finished:
            raise ApiError(
                409,
                "CONFLICT",
                f"process {process_id!r} is {rec.status}; kill it before deleting it",
            )
        del self.procs[sandbox_id][process_id]
        self.store.delete_process(process_id)
        self._forget_output(process_id)
        output_dir = self.sandbox_dir(sandbox_id) / "output"
        for path in output_dir.glob(f"{process_id}.*"):
            with contextlib.suppress(OSError):
                path.unlink()

    @staticmethod
    def _process_base(rec: ProcessRecord) -> dict[str, Any]:
        if rec.duration is not None:
            elapsed = rec.duration
        elif rec.started_at is None:
            elapsed = 0.0
        else:  # running: elapsed so far; recovered after a crash: until it was marked failed
            elapsed = max(0.0, (rec.completed_at or time.time()) - rec.started_at)
        data: dict[str, Any] = {
            "process_id": rec.process_id,
            "execution_id": rec.execution_id,
            "name": rec.name,
            "status": rec.status,
            "language": rec.language,
            "created_at": iso(rec.created_at),
            "started_at": iso(rec.started_at),
            "completed_at": iso(rec.completed_at),
            "exit_code": rec.exit_code,
            "execution_time": round(elapsed, 4),
            "timeout": _number(rec.timeout),
            "pid": rec.pid,
            "version": rec.version,
        }
        if rec.command is not None:
            data["command"] = rec.command
        if rec.error is not None:
            data["error"] = rec.error
        return data

    def _forget_output(self, process_id: str) -> None:
        self._json_cache.pop(process_id, None)
        for stream in ("stdout", "stderr"):
            cached = self._out_cache.pop((process_id, stream), None)
            if cached is not None:
                self._out_cache_chars -= len(cached[0])

    def output_tail(self, rec: ProcessRecord, stream: str) -> tuple[str, bool]:
        key = (rec.process_id, stream)
        cached = self._out_cache.get(key)
        if cached is not None:
            return cached
        text, truncated, size = read_tail(self.output_path(rec, stream), LIST_OUTPUT_CAP)
        if rec.finished and size <= _CACHE_MAX and self._out_cache_chars < _CACHE_BUDGET:
            self._out_cache[key] = (text, truncated)
            self._out_cache_chars += len(text)
        return text, truncated

    def process_json(self, rec: ProcessRecord, *, output: bool = True) -> dict[str, Any]:
        base = self._json_cache.get(rec.process_id)
        if base is None:
            base = self._process_base(rec)
            if rec.finished:  # a finished record never changes again: build it once
                self._json_cache[rec.process_id] = base
        data = dict(base)
        if output:
            data["stdout"], data["stdout_truncated"] = self.output_tail(rec, "stdout")
            data["stderr"], data["stderr_truncated"] = self.output_tail(rec, "stderr")
        return data

    async def wait_for_change(self, sandbox_id: str, since: int, wait: float) -> None:
        """Return once the sandbox's counter exceeds ``since``, or after ``wait`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            sbx = self.sandboxes.get(sandbox_id)
            if sbx is None or sbx.version > since:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            event = self._changed.setdefault(sandbox_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except asyncio.TimeoutError:
                return

    async def wait_for_process(
        self, rec: ProcessRecord, wait: float, offsets: tuple[int, int] | None
    ) -> None:
        """Return when ``rec`` ended, has output past ``offsets``, or ``wait`` elapsed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while not rec.finished:
            if offsets is not None and (
                file_size(self.output_path(rec, "stdout")) > offsets[0]
                or file_size(self.output_path(rec, "stderr")) > offsets[1]
            ):
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            run = self.runs.get(rec.process_id)
            step = remaining if offsets is None else min(remaining, 0.05)
            if run is None:
                await asyncio.sleep(min(step, 0.05))
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(run.done.wait()), step)

    # -- synchronous execution -------------------------------------------------------------

    async def run_sync(self, sbx: SandboxRecord, spec: StartSpec) -> dict[str, Any]:
        """Run to the end (or the timeout) and answer stdout/stderr/exit_code."""
        cwd = self.resolve_working_dir(sbx.id, spec.working_dir)
        env = self.process_env(sbx, spec.env)
        scratch = ProcessRecord(
            process_id=new_id("sync"),
            execution_id=new_id("exec"),
            sandbox_id=sbx.id,
            seq=0,
            kind=spec.kind,
            language=spec.language,
            timeout=spec.timeout,
            created_at=time.time(),
        )
        stdout, stderr = self.output_path(scratch, "stdout"), self.output_path(scratch, "stderr")
        started = time.monotonic()
        try:
            try:
                argv, stdin = self._argv(scratch, spec)
                run = await self.supervisor.spawn(
                    argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr, stdin=stdin
                )
            except OSError as exc:
                return {
                    "success": False,
                    "stdout": "",
                    "stderr": f"hopx-local: could not start: {exc}\n",
                    "exit_code": 127 if isinstance(exc, FileNotFoundError) else 126,
                    "execution_time": 0.0,
                }
            runs = self._sync_runs.setdefault(sbx.id, set())
            runs.add(run)
            try:
                returncode = await self.supervisor.watch(run, spec.timeout)
            except BaseException:
                run.end_reason = run.end_reason or "killed"
                self.supervisor.terminate_soon(run)
                raise
            finally:
                runs.discard(run)
                run.done.set()
            out, out_cut, _ = read_tail(stdout, SYNC_OUTPUT_CAP)
            err, err_cut, _ = read_tail(stderr, SYNC_OUTPUT_CAP)
            result: dict[str, Any] = {
                "success": returncode == 0 and run.end_reason is None,
                "stdout": out,
                "stderr": err,
                "exit_code": exit_code_of(returncode),
                "execution_time": round(time.monotonic() - started, 4),
                "stdout_truncated": out_cut,
                "stderr_truncated": err_cut,
            }
            if run.end_reason == "timeout":
                raise ApiError(
                    408,
                    "EXECUTION_TIMEOUT",
                    f"execution timed out after {_number(spec.timeout)} seconds",
                    extra={**result, "exit_code": None},
                )
            if run.end_reason is not None:
                raise ApiError(
                    409, "CONFLICT", "execution was killed (sandbox deleted or server stopping)"
                )
            return result
        finally:
            for path in self.sandbox_dir(sbx.id).joinpath("output").glob(f"{scratch.process_id}.*"):
                with contextlib.suppress(OSError):
                    path.unlink()

    # -- the operating-system view ---------------------------------------------------------

    def os_processes(self, sandbox_id: str) -> list[dict[str, Any]]:
        sessions = set(self._groups_of(sandbox_id))
        found: list[dict[str, Any]] = []
        if not sessions:
            return found
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            info = _proc_info(int(entry), sessions)
            if info is not None:
                found.append(info)
        return found


async def _all_done(runs: list[Running], *, timeout: float) -> None:
    """Wait until every run's record is final (or ``timeout``); leave no waiter behind."""
    if not runs:
        return
    waiters = [asyncio.ensure_future(run.done.wait()) for run in runs]
    _, pending = await asyncio.wait(waiters, timeout=timeout)
    for waiter in pending:
        waiter.cancel()


def _proc_info(pid: int, sessions: set[int]) -> dict[str, Any] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("utf-8", "replace")
        fields = stat.rpartition(")")[2].split()
        if int(fields[3]) not in sessions or fields[0] == "Z":
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
        uid = os.stat(f"/proc/{pid}").st_uid
    except (OSError, IndexError, ValueError):
        return None
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    command = shlex.join(argv) if argv else stat[stat.find("(") + 1 : stat.rfind(")")]
    return {"pid": pid, "command": command, "user": user, "ppid": int(fields[1])}
