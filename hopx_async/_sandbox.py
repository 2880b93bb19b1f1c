"""AsyncSandbox: one HopX sandbox, its agent, and the code and commands run in it."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import quote

from . import _validation as validate
from ._errors import (
    APIError,
    HopxError,
    NetworkError,
    NotFoundError,
    ProcessNotFoundError,
    SandboxNotFoundError,
    ServerError,
    TokenExpiredError,
)
from ._models import (
    CommandResult,
    ExecutionResult,
    OutputChunk,
    ProcessInfo,
    ProcessResult,
    ProcessStatus,
    SandboxInfo,
    parse_time,
)
from ._process import AsyncBackgroundProcess, _Watcher
from ._transport import Response
from ._utils import AwaitableContext

if TYPE_CHECKING:
    from ._client import AsyncHopx, ProgressCallback

__all__ = ["AsyncCommands", "AsyncSandbox"]

logger = logging.getLogger("hopx_async")

#: how long the agent may take to answer /health as healthy after a create
_READY_TIMEOUT = 60.0
#: a token this close to its expiry (seconds) is refreshed before it is used
_TOKEN_MARGIN = 5.0
#: the three kill forms, documented first
_KILL_FORMS = ("DELETE /execute/kill", "POST /execute/kill/{id}", "POST /processes/{id}/kill")
_STREAMS: tuple[Literal["stdout", "stderr"], ...] = ("stdout", "stderr")
#: bytes per stream per request when collecting output by offsets
_OUTPUT_PAGE = 4 * 1024 * 1024


def _process_list(data: Any) -> list[ProcessInfo]:
    """Read the process list from ``{"processes": [...]}``, ``{"data": [...]}`` or ``[...]``."""
    items: Any = data
    if isinstance(data, Mapping):
        items = data.get("processes", data.get("data", []))
    if not isinstance(items, list):
        return []
    return [ProcessInfo.from_wire(item) for item in items if isinstance(item, Mapping)]


def _agent_base(info: SandboxInfo) -> str:
    host = info.public_host or info.direct_url
    if not host:
        raise HopxError(f"sandbox {info.id} has no public_host or direct_url to reach its agent")
    if not host.startswith(("http://", "https://")):
        host = "https://" + host
    return host.rstrip("/")


class AsyncCommands:
    """Shell commands in a sandbox: ``sandbox.commands``."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    def __repr__(self) -> str:
        return f"<AsyncCommands of {self._sandbox.id}>"

    @overload
    async def run(
        self,
        command: str,
        *,
        background: Literal[False] = False,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        command: str,
        *,
        background: Literal[True],
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> AsyncBackgroundProcess: ...

    async def run(
        self,
        command: str,
        *,
        background: bool = False,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> CommandResult | AsyncBackgroundProcess:
        """Run a shell command (``/bin/sh -c``) and return its result.

        ``timeout`` defaults to 30 s. With ``background=True`` it returns at once with an
        :class:`AsyncBackgroundProcess`, and ``timeout`` is the process's lifetime on the
        server (default 300 s).

        >>> result = await sandbox.commands.run("ls -la")  # doctest: +SKIP
        >>> proc = await sandbox.commands.run("make all", background=True,
        ...                                   timeout=600)  # doctest: +SKIP
        """
        if name is not None and not background:
            raise validate.ValidationError(
                "name", "only background commands (background=True) take a name"
            )
        if timeout is None:
            timeout = 300 if background else 30
        body, seconds = _execution_body(
            "command", command, timeout=timeout, env=env, name=name, working_dir=working_dir
        )
        sandbox = self._sandbox
        if background:
            return await sandbox._start("/commands/background", body, language="bash")
        resp = await sandbox._agent(
            "POST", "/commands/run", json=body, safe=False, timeout=seconds + 30
        )
        return CommandResult.from_wire(resp.mapping)


class AsyncSandbox:
    """One HopX sandbox. Create with :meth:`create` or ``client.sandboxes.create()``.

    >>> async with AsyncSandbox.create(template="code-interpreter") as sandbox:  # doctest: +SKIP
    ...     proc = await sandbox.run_code_background("print(6 * 7)")
    ...     print((await proc.wait()).stdout)
    42
    """

    def __init__(
        self,
        client: AsyncHopx,
        info: SandboxInfo,
        *,
        token: str | None = None,
        token_expires_at: datetime | None = None,
    ) -> None:
        self._client = client
        self._info = info
        self._token = token
        self._token_expires_at = token_expires_at
        self._agent_url = _agent_base(info) if (info.public_host or info.direct_url) else None
        self._features: dict[str, Any] | None = None
        self._ready_lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        self._kill_form: str | None = None
        self._handles: weakref.WeakValueDictionary[str, AsyncBackgroundProcess] = (
            weakref.WeakValueDictionary()
        )
        self._watcher = _Watcher(self)
        self._standalone = False
        self._killed = False
        self.commands = AsyncCommands(self)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        template: str | None = None,
        *,
        template_id: str | None = None,
        region: str | None = None,
        timeout_seconds: int | None = None,
        internet_access: bool | None = None,
        env_vars: Mapping[str, str] | None = None,
        client: AsyncHopx | None = None,
    ) -> AwaitableContext[AsyncSandbox]:
        """Create a sandbox from a template; await it or use it with ``async with``.

        Without ``client`` the sandbox uses the event loop's default client, configured
        from ``HOPX_API_KEY`` and ``HOPX_BASE_URL`` and shared by all such sandboxes.

        >>> sandbox = await AsyncSandbox.create(template="code-interpreter")  # doctest: +SKIP
        """
        from ._client import _default_client

        body = _create_body(
            template, template_id, region, timeout_seconds, internet_access, env_vars
        )

        async def make() -> AsyncSandbox:
            owner = client if client is not None else _default_client()
            sandbox = await owner.sandboxes._create(body)
            if client is None:
                owner._adopt(sandbox)
            return sandbox

        return AwaitableContext(make)

    @classmethod
    async def connect(cls, sandbox_id: str, *, client: AsyncHopx | None = None) -> AsyncSandbox:
        """Attach to an existing sandbox by id.

        >>> sandbox = await AsyncSandbox.connect("sbx_123")  # doctest: +SKIP
        """
        from ._client import _default_client

        validate.non_empty_str("sandbox_id", sandbox_id)
        owner = client if client is not None else _default_client()
        sandbox = await owner.sandboxes.connect(sandbox_id)
        if client is None:
            owner._adopt(sandbox)
        return sandbox

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.kill()

    def __repr__(self) -> str:
        return f"<AsyncSandbox {self._info.id} status={self._info.status!r}>"

    # -------------------------------------------------------------------- state
    @property
    def id(self) -> str:
        """The sandbox id."""
        return self._info.id

    @property
    def sandbox_id(self) -> str:
        """Same as :attr:`id`."""
        return self._info.id

    @property
    def info(self) -> SandboxInfo:
        """The last sandbox record seen (no I/O; see :meth:`get_info`)."""
        return self._info

    @property
    def client(self) -> AsyncHopx:
        """The client whose connection pool this sandbox uses."""
        return self._client

    def _has_feature(self, name: str) -> bool:
        return bool(self._features and self._features.get(name) is True)

    def _min_poll_interval(self) -> float:
        return self._client._transport.min_interval(self.id)

    def _observe(self, info: ProcessInfo) -> None:
        proc = self._handles.get(info.process_id)
        if proc is not None:
            proc._observe(info)

    def process(self, process_id: str) -> AsyncBackgroundProcess:
        """A handle on an existing background process, without any request.

        >>> proc = sandbox.process("proc_abc")  # doctest: +SKIP
        >>> result = await proc.wait()  # doctest: +SKIP
        """
        validate.non_empty_str("process_id", process_id)
        proc = self._handles.get(process_id)
        if proc is None:
            proc = AsyncBackgroundProcess(self, process_id, status="unknown")
            self._handles[process_id] = proc
        return proc

    # ------------------------------------------------------------ control plane
    async def get_info(self) -> SandboxInfo:
        """Fetch the sandbox record.

        >>> (await sandbox.get_info()).status  # doctest: +SKIP
        'running'
        """
        resp = await self._client._control(
            "GET", f"/v1/sandboxes/{quote(self.id)}", resource="sandbox"
        )
        self._take_record(resp.data)
        return self._info

    def _take_record(self, data: Any) -> None:
        if not isinstance(data, Mapping):
            return
        info = SandboxInfo.from_wire(data)
        if info.id:
            self._info = info
            if self._agent_url is None and (info.public_host or info.direct_url):
                self._agent_url = _agent_base(info)
        token = data.get("auth_token")
        if isinstance(token, str) and token:
            self._token = token
            self._token_expires_at = parse_time(data.get("token_expires_at"))

    async def kill(self) -> None:
        """Destroy the sandbox and everything running in it. Killing twice is harmless.

        >>> await sandbox.kill()  # doctest: +SKIP
        """
        if not self._killed:
            try:
                await self._client._control(
                    "DELETE", f"/v1/sandboxes/{quote(self.id)}", resource="sandbox"
                )
            except NotFoundError:
                pass
            self._killed = True
        await self._client._release(self)

    async def pause(self) -> None:
        """Pause the sandbox; its processes stop until :meth:`resume`."""
        resp = await self._client._control(
            "POST", f"/v1/sandboxes/{quote(self.id)}/pause", safe=True, resource="sandbox"
        )
        self._info = _with_status(self._info, resp.data, "paused")

    async def resume(self) -> None:
        """Resume a paused sandbox."""
        resp = await self._client._control(
            "POST", f"/v1/sandboxes/{quote(self.id)}/resume", safe=True, resource="sandbox"
        )
        self._info = _with_status(self._info, resp.data, "running")

    async def set_timeout(self, seconds: int) -> None:
        """Kill the sandbox automatically ``seconds`` from now.

        >>> await sandbox.set_timeout(3600)  # doctest: +SKIP
        """
        validate.positive_int("seconds", seconds)
        await self._client._control(
            "PUT",
            f"/v1/sandboxes/{quote(self.id)}/timeout",
            json={"timeout_seconds": seconds},
            safe=True,
            resource="sandbox",
        )

    async def _refresh_token(self, stale: str | None) -> None:
        async with self._refresh_lock:
            if self._token != stale:
                return  # another call refreshed it meanwhile
            resp = await self._client._control(
                "POST",
                f"/v1/sandboxes/{quote(self.id)}/token/refresh",
                safe=True,
                resource="sandbox",
            )
            data = resp.mapping
            token = data.get("auth_token")
            if not isinstance(token, str) or not token:
                raise HopxError(f"token refresh for sandbox {self.id} returned no auth_token")
            self._token = token
            self._token_expires_at = parse_time(data.get("token_expires_at"))

    # ----------------------------------------------------------------- the agent
    async def _ensure_ready(self) -> None:
        if self._features is not None:
            return
        async with self._ready_lock:
            if self._features is not None:
                return
            if self._agent_url is None or self._token is None:
                await self.get_info()
                if self._token is None:
                    await self._refresh_token(None)
            deadline = time.monotonic() + _READY_TIMEOUT
            delay = 0.05
            while True:
                try:
                    resp = await self._agent("GET", "/health", ready=False)
                    data = resp.mapping
                    if str(data.get("status", "healthy")).lower() in ("healthy", "ok"):
                        features = data.get("features")
                        self._features = dict(features) if isinstance(features, Mapping) else {}
                        return
                except (NetworkError, ServerError):
                    pass
                if time.monotonic() > deadline:
                    raise HopxError(
                        f"the agent of sandbox {self.id} did not become healthy "
                        f"within {_READY_TIMEOUT:g}s"
                    )
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _agent(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        safe: bool | None = None,
        timeout: float | None = None,
        resource: str | None = None,
        headers: Mapping[str, str] | None = None,
        ready: bool = True,
    ) -> Response:
        """One request to the sandbox's agent: readiness first, one token refresh on 401."""
        if self._killed:
            raise SandboxNotFoundError(
                f"sandbox {self.id} was killed; create a new one",
                status=404,
                code="RESOURCE_NOT_FOUND",
            )
        if ready:
            await self._ensure_ready()
        expires = self._token_expires_at
        if expires is not None and expires.timestamp() - _TOKEN_MARGIN < time.time():
            await self._refresh_token(self._token)
        assert self._agent_url is not None
        for attempt in (0, 1):
            token = self._token
            sent = {"Authorization": f"Bearer {token}", **(headers or {})}
            try:
                return await self._client._transport.request(
                    method,
                    self._agent_url + path,
                    headers=sent,
                    json=json,
                    params=params,
                    safe=safe,
                    timeout=timeout,
                    scope=self.id,
                    resource=resource,
                )
            except TokenExpiredError:
                if attempt:
                    raise
                await self._refresh_token(token)
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- execution
    async def run_code(
        self,
        code: str,
        *,
        language: str = "python",
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
    ) -> ExecutionResult:
        """Run code synchronously (at most 300 s) and return its output.

        >>> result = await sandbox.run_code("print(1 + 1)")  # doctest: +SKIP
        >>> result.stdout  # doctest: +SKIP
        '2\\n'
        """
        body, seconds = _execution_body(
            "code",
            code,
            language=language,
            timeout=timeout,
            env=env,
            working_dir=working_dir,
            max_timeout=validate.MAX_SYNC_TIMEOUT,
        )
        resp = await self._agent("POST", "/execute", json=body, safe=False, timeout=seconds + 30)
        return ExecutionResult.from_wire(resp.mapping)

    async def run_code_background(
        self,
        code: str,
        *,
        language: str = "python",
        timeout: int = 300,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> AsyncBackgroundProcess:
        """Start code in the background and return a handle at once.

        ``timeout`` is the process's lifetime on the server, in seconds (default 300).

        >>> proc = await sandbox.run_code_background(
        ...     "import time; time.sleep(5); print('done')", name="nap")  # doctest: +SKIP
        >>> (await proc.wait()).stdout  # doctest: +SKIP
        'done\\n'
        """
        body, _ = _execution_body(
            "code",
            code,
            language=language,
            timeout=timeout,
            env=env,
            name=name,
            working_dir=working_dir,
        )
        return await self._start("/execute/background", body, language=body["language"])

    async def _start(
        self, path: str, body: dict[str, Any], *, language: str
    ) -> AsyncBackgroundProcess:
        await self._ensure_ready()
        headers: dict[str, str] = {}
        safe = False
        if self._has_feature("idempotency_keys"):
            import secrets

            headers["Idempotency-Key"] = "idem_" + secrets.token_hex(16)
            safe = True  # the server answers a repeat with the first answer
        resp = await self._agent("POST", path, json=body, safe=safe, headers=headers)
        data = resp.mapping
        process_id = data.get("process_id") or data.get("id")
        if not process_id and isinstance(resp.data, str) and ":" in resp.data:
            # "Background process started: <id>" (older agents answered with text)
            process_id = resp.data.rsplit(":", 1)[1].strip()
        if not process_id:
            raise HopxError(f"{path} answered without a process_id: {str(resp.data)[:200]}")
        timeout = data.get("timeout", body.get("timeout"))
        proc = AsyncBackgroundProcess(
            self,
            str(process_id),
            execution_id=_opt_str(data.get("execution_id")),
            name=_opt_str(data.get("name")) or body.get("name"),
            status=str(data.get("status") or ProcessStatus.QUEUED),
            language=_opt_str(data.get("language")) or language,
            timeout=timeout if isinstance(timeout, int) else None,
            version=data.get("version") if isinstance(data.get("version"), int) else None,
        )
        self._handles[proc.id] = proc
        return proc

    # -------------------------------------------------------------- processes
    async def list_processes(
        self, *, status: str | Iterable[str] | None = None, name: str | None = None
    ) -> list[ProcessInfo]:
        """Every background process of the sandbox, optionally filtered.

        >>> for proc in await sandbox.list_processes(status="running"):  # doctest: +SKIP
        ...     print(proc.name, proc.status)
        """
        wanted: set[str] | None = None
        if status is not None:
            wanted = {status} if isinstance(status, str) else set(status)
            for item in wanted:
                validate.non_empty_str("status", item)
        validate.optional_str("name", name)
        infos = await self._list_raw()
        for info in infos:
            self._observe(info)
        return [
            info
            for info in infos
            if (wanted is None or info.status in wanted) and (name is None or info.name == name)
        ]

    async def _list_raw(self) -> list[ProcessInfo]:
        resp = await self._agent("GET", "/execute/processes")
        return _process_list(resp.data)

    async def _list_since(self, version: int, wait: float) -> tuple[list[ProcessInfo], int | None]:
        params = {"since": str(version)}
        if wait > 0:
            params["wait"] = f"{wait:g}"
        resp = await self._agent(
            "GET",
            "/execute/processes",
            params=params,
            timeout=wait + self._client._transport.timeouts.request,
        )
        data = resp.mapping
        current = data.get("version")
        return _process_list(resp.data), current if isinstance(current, int) else None

    async def get_process(self, process_id: str) -> ProcessInfo:
        """The current record of one background process.

        >>> info = await sandbox.get_process("proc_abc")  # doctest: +SKIP
        """
        validate.non_empty_str("process_id", process_id)
        if self._features is None:
            await self._ensure_ready()
        if self._has_feature("process_get"):
            resp = await self._agent(
                "GET", f"/execute/processes/{quote(process_id)}", resource="process"
            )
            info = ProcessInfo.from_wire(resp.mapping)
        else:
            found = [i for i in await self._list_raw() if i.process_id == process_id]
            if not found:
                raise ProcessNotFoundError(
                    f"sandbox {self.id} has no process {process_id}",
                    status=404,
                    code="PROCESS_NOT_FOUND",
                )
            info = found[0]
        self._observe(info)
        return info

    async def kill_process(self, process_id: str) -> None:
        """Kill a background process and its children.

        Raises :class:`ProcessNotFoundError` when it is unknown or has already ended.

        >>> await sandbox.kill_process("proc_abc")  # doctest: +SKIP
        """
        validate.non_empty_str("process_id", process_id)
        await self._ensure_ready()
        forms = [self._kill_form] if self._kill_form else list(_KILL_FORMS)
        for form in forms:
            method, path = form.split(" ", 1)
            path = path.replace("{id}", quote(process_id))
            body = {"process_id": process_id} if "{id}" not in form else None
            try:
                await self._agent(method, path, json=body, safe=True, resource="process")
            except APIError as exc:
                route_missing = exc.status == 405 or (exc.status == 404 and exc.code is None)
                if route_missing and form != forms[-1]:
                    continue
                raise
            self._kill_form = form
            proc = self._handles.get(process_id)
            if proc is not None:
                proc._status = ProcessStatus.KILLED
            return

    async def remove_process(self, process_id: str) -> None:
        """Remove a finished process and its output from the sandbox's list.

        Needs a server that offers it (the local backend does); others raise HopxError.
        """
        validate.non_empty_str("process_id", process_id)
        await self._ensure_ready()
        if not self._has_feature("process_delete"):
            raise HopxError("this server does not offer removing finished processes")
        await self._agent("DELETE", f"/execute/processes/{quote(process_id)}", resource="process")
        self._handles.pop(process_id, None)

    async def wait_all(
        self,
        processes: Iterable[AsyncBackgroundProcess],
        *,
        timeout: float | None = None,
        check: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> list[ProcessResult]:
        """Wait for many processes (of any sandbox of this client); results in order.

        The same as :meth:`AsyncHopx.wait_all` of this sandbox's client.

        >>> results = await sandbox.wait_all([p1, p2], timeout=120)  # doctest: +SKIP
        """
        return await self._client.wait_all(
            processes, timeout=timeout, check=check, on_progress=on_progress
        )

    # --------------------------------------------------------------- output
    async def _full_result(self, info: ProcessInfo) -> ProcessResult:
        """The result of a finished process with its whole output, not the capped tail."""
        if not (info.stdout_truncated or info.stderr_truncated) or not self._has_feature(
            "output_offsets"
        ):
            return ProcessResult.from_info(info)
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        offsets = {"stdout": 0, "stderr": 0}
        while True:
            data = await self._read_offsets(info.process_id, offsets, max_bytes=_OUTPUT_PAGE)
            progressed = False
            for stream in ("stdout", "stderr"):
                text = data.get(stream) or ""
                nxt = data.get(f"{stream}_next_offset")
                if text:
                    out[stream].append(str(text))
                if isinstance(nxt, int) and nxt > offsets[stream]:
                    offsets[stream] = nxt
                    progressed = True
            sizes_done = all(
                not isinstance(data.get(f"{s}_size"), int) or offsets[s] >= data[f"{s}_size"]
                for s in ("stdout", "stderr")
            )
            if sizes_done or not progressed:
                break
        return ProcessResult.from_info(
            info, stdout="".join(out["stdout"]), stderr="".join(out["stderr"])
        )

    async def _read_offsets(
        self,
        process_id: str,
        offsets: Mapping[str, int],
        *,
        max_bytes: int | None = None,
        wait: float | None = None,
    ) -> Mapping[str, Any]:
        params = {"stdout_offset": str(offsets["stdout"]), "stderr_offset": str(offsets["stderr"])}
        if max_bytes:
            params["max_bytes"] = str(max_bytes)
        if wait:
            params["wait"] = f"{wait:g}"
        resp = await self._agent(
            "GET",
            f"/execute/processes/{quote(process_id)}",
            params=params,
            resource="process",
            timeout=(wait or 0) + self._client._transport.timeouts.request,
        )
        return resp.mapping

    async def _stream_output(
        self, proc: AsyncBackgroundProcess, interval: float | None
    ) -> AsyncIterator[OutputChunk]:
        await self._ensure_ready()
        policy = self._client._polling
        if self._has_feature("output_offsets"):
            offsets = {"stdout": 0, "stderr": 0}
            wait = policy.long_poll if self._has_feature("long_poll") else None
            while True:
                data = await self._read_offsets(proc.id, offsets, wait=wait)
                for stream in _STREAMS:
                    piece = data.get(stream) or ""
                    nxt = data.get(f"{stream}_next_offset")
                    if isinstance(nxt, int):
                        offsets[stream] = max(offsets[stream], nxt)
                    if piece:
                        yield OutputChunk(stream, str(piece))
                info = ProcessInfo.from_wire({**data, "stdout": None, "stderr": None})
                proc._observe(info)
                drained = all(
                    not isinstance(data.get(f"{s}_size"), int) or offsets[s] >= data[f"{s}_size"]
                    for s in ("stdout", "stderr")
                )
                if info.is_done and drained:
                    return
                if wait is None:
                    await asyncio.sleep(interval or policy.initial_interval)
            return
        seen = {"stdout": 0, "stderr": 0}
        pause = interval or policy.initial_interval
        while True:
            info = await self.get_process(proc.id)
            for stream in _STREAMS:
                text: str = getattr(info, stream)
                if len(text) > seen[stream]:
                    yield OutputChunk(stream, text[seen[stream] :])
                    seen[stream] = len(text)
            if info.is_done:
                return
            await asyncio.sleep(pause)
            pause = min(policy.max_interval, max(pause * 1.5, self._min_poll_interval()))


def _execution_body(
    field: str,
    text: Any,
    *,
    language: Any = None,
    timeout: Any,
    env: Any,
    name: Any = None,
    working_dir: Any,
    max_timeout: float | None = None,
) -> tuple[dict[str, Any], float]:
    """Check the arguments every execution call shares and build its request body."""
    body: dict[str, Any] = {field: validate.non_empty_str(field, text)}
    if language is not None:
        body["language"] = validate.language(language)
    seconds = validate.positive_number("timeout", timeout, maximum=max_timeout)
    body["timeout"] = int(max(1, round(seconds)))
    env_vars = validate.env_vars("env", env)
    if env_vars:
        body["env"] = env_vars
    if validate.optional_str("name", name):
        body["name"] = name
    if validate.optional_str("working_dir", working_dir):
        body["working_dir"] = working_dir
    return body, seconds


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _with_status(info: SandboxInfo, data: Any, default: str) -> SandboxInfo:
    import attrs

    status = data.get("status") if isinstance(data, Mapping) else None
    return attrs.evolve(info, status=str(status or default))


def _create_body(
    template: str | None,
    template_id: str | None,
    region: str | None,
    timeout_seconds: int | None,
    internet_access: bool | None,
    env_vars: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The create request body, validated before any I/O."""
    if template is None and template_id is None:
        raise validate.ValidationError(
            "template", "give a template name (e.g. 'code-interpreter') or template_id"
        )
    if template is not None and template_id is not None:
        raise validate.ValidationError("template", "give template or template_id, not both")
    body: dict[str, Any] = {}
    if template is not None:
        body["template_name"] = validate.non_empty_str("template", template)
    if template_id is not None:
        body["template_id"] = validate.non_empty_str("template_id", template_id)
    if region is not None:
        body["region"] = validate.non_empty_str("region", region)
    if timeout_seconds is not None:
        body["timeout_seconds"] = validate.positive_int("timeout_seconds", timeout_seconds)
    if internet_access is not None:
        if not isinstance(internet_access, bool):
            raise validate.ValidationError(
                "internet_access", f"expected True or False, got {internet_access!r}"
            )
        body["internet_access"] = internet_access
    env = validate.env_vars("env_vars", env_vars)
    if env:
        body["env_vars"] = env
    return body
