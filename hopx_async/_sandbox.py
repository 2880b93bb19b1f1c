"""AsyncSandbox: one HopX sandbox, as thin public methods over the control plane
(:mod:`._control`), the sandbox's agent (:mod:`._agent`) and its watcher (:mod:`._watcher`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _fanout
from . import _validation as validate
from ._agent import Agent
from ._commands import AsyncCommands, stream_events
from ._control import ControlPlane, default_client
from ._errors import HopxError, NotFoundError, SandboxLostError
from ._execution import AsyncExecution, callback_body, start_execution
from ._fanout import ProgressCallback
from ._files import AsyncEnv, AsyncFiles
from ._models import ProcessInfo, ProcessResult, ProcessStatus, SandboxInfo
from ._process import AsyncBackgroundProcess, handle_for, start_process
from ._results import ExecutionResult, StreamEvent
from ._terminal import AsyncTerminal, open_terminal
from ._utils import AwaitableContext
from ._watcher import Watcher, WatcherStats
from ._wire import (
    BACKGROUND_WORKDIR,
    background_code_body,
    create_body,
    execution_body,
    status_filter,
    token_of,
)

if TYPE_CHECKING:
    from ._client import AsyncHopx

__all__ = ["AsyncSandbox", "sandbox_from"]


def sandbox_from(client: AsyncHopx, control: ControlPlane, data: Any) -> AsyncSandbox:
    """A sandbox object of ``client`` (whose control plane is ``control``) from a
    control-plane record (with the token it may carry)."""
    if not isinstance(data, Mapping):
        raise HopxError(f"expected a sandbox object, got {str(data)[:200]}")
    token = token_of(data)
    return AsyncSandbox(
        client,
        control,
        SandboxInfo.from_wire(data),
        token=token[0] if token else None,
        token_expires_at=token[1] if token else None,
    )


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
        control: ControlPlane,
        info: SandboxInfo,
        *,
        token: str | None = None,
        token_expires_at: datetime | None = None,
    ) -> None:
        self._client = client
        self._control = control
        self._agent = Agent(control, info, token=token, token_expires_at=token_expires_at)
        self._watcher = Watcher(self._agent)
        control.track(self._watcher)
        if control.shared:  # made through a loop's default client: it holds the sandbox
            control.adopt(self)
        self.commands = AsyncCommands(self, self._watcher)
        self.files = AsyncFiles(self._agent)
        self.env = AsyncEnv(self._agent)

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

        Without ``template`` or ``template_id`` the template is ``code-interpreter``.
        Without ``client`` the sandbox uses the event loop's default client, configured
        from ``HOPX_API_KEY`` and ``HOPX_BASE_URL`` and shared by all such sandboxes.

        >>> sandbox = await AsyncSandbox.create()  # code-interpreter  # doctest: +SKIP
        """

        def through(owner: AsyncHopx) -> AwaitableContext[AsyncSandbox]:
            return owner.sandboxes.create(
                template,
                template_id=template_id,
                region=region,
                timeout_seconds=timeout_seconds,
                internet_access=internet_access,
                env_vars=env_vars,
            )

        if client is not None:
            return through(client)
        # checked now, before any I/O; the default client is made inside the awaiting loop
        create_body(template, template_id, region, timeout_seconds, internet_access, env_vars)

        async def make() -> AsyncSandbox:
            owner: AsyncHopx = default_client()
            return await through(owner)

        return AwaitableContext(make)

    @classmethod
    async def connect(cls, sandbox_id: str, *, client: AsyncHopx | None = None) -> AsyncSandbox:
        """Attach to an existing sandbox by id.

        >>> sandbox = await AsyncSandbox.connect("sbx_123")  # doctest: +SKIP
        """
        validate.non_empty_str("sandbox_id", sandbox_id)
        owner: AsyncHopx = client if client is not None else default_client()
        return await owner.sandboxes.connect(sandbox_id)

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
        info = self._agent.info
        return f"<AsyncSandbox {info.id} status={info.status!r}>"

    # -------------------------------------------------------------------- state
    @property
    def id(self) -> str:
        """The sandbox id."""
        return self._agent.info.id

    @property
    def sandbox_id(self) -> str:
        """Same as :attr:`id`."""
        return self._agent.info.id

    @property
    def info(self) -> SandboxInfo:
        """The last sandbox record seen (no I/O; see :meth:`get_info`)."""
        return self._agent.info

    @property
    def client(self) -> AsyncHopx:
        """The client whose connection pool this sandbox uses."""
        return self._client

    @property
    def watcher_stats(self) -> WatcherStats:
        """Counters of the sandbox's watcher: polls sent, pending waits, whether it polls.

        >>> sandbox.watcher_stats.waiters  # doctest: +SKIP
        0
        """
        return self._watcher.stats()

    def process(self, process_id: str) -> AsyncBackgroundProcess:
        """A handle on an existing background process, without any request.

        >>> proc = sandbox.process("proc_abc")  # doctest: +SKIP
        >>> result = await proc.wait()  # doctest: +SKIP
        """
        validate.non_empty_str("process_id", process_id)
        return handle_for(self, self._watcher, process_id)

    # ------------------------------------------------------------ control plane
    async def get_info(self) -> SandboxInfo:
        """Fetch the sandbox record.

        >>> (await sandbox.get_info()).status  # doctest: +SKIP
        'running'
        """
        return await self._agent.refresh_info()

    async def kill(self) -> None:
        """Destroy the sandbox and everything running in it. Killing twice is harmless.

        Pending waits on its processes end with :class:`SandboxLostError` (a
        :class:`SandboxNotFoundError`).

        >>> await sandbox.kill()  # doctest: +SKIP
        """
        if not self._agent.killed:
            try:
                await self._control.delete_sandbox(self.id)
            except NotFoundError:
                pass
            self._agent.killed = True
            self._watcher.close(
                SandboxLostError(f"sandbox {self.id} was killed", sandbox_id=self.id)
            )
        await self._control.release(self)

    async def pause(self) -> None:
        """Pause the sandbox; its processes stop until :meth:`resume`.

        Waits and output streams on its processes keep waiting while it is paused.
        """
        self._agent.take_status(await self._control.sandbox_action(self.id, "pause"), "paused")

    async def resume(self) -> None:
        """Resume a paused sandbox."""
        self._agent.take_status(await self._control.sandbox_action(self.id, "resume"), "running")

    async def set_timeout(self, seconds: int) -> None:
        """Kill the sandbox automatically ``seconds`` from now.

        >>> await sandbox.set_timeout(3600)  # doctest: +SKIP
        """
        validate.positive_int("seconds", seconds)
        await self._control.sandbox_action(self.id, "timeout", {"timeout_seconds": seconds})
        self._agent.keeper.timeout_set(seconds)

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
        body, seconds = execution_body("code", code, language, timeout, env, working_dir, sync=True)
        return ExecutionResult.from_wire(await self._agent.execute("/execute", body, seconds))

    async def run_code_background(
        self,
        code: str,
        *,
        language: str = "python",
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
        working_dir: str | None = None,
    ) -> AsyncBackgroundProcess:
        """Start code in the background and return a handle at once.

        ``timeout`` is the process's lifetime on the server, in seconds (default 300; the
        server gets whole seconds, at least 1).

        ``working_dir``: the service's background request has no such field. Unless the agent
        advertises ``background_workdir``, bash code is prefixed with a ``cd`` and other
        languages raise :class:`ValidationError` (use ``commands.run(..., background=True,
        working_dir=...)``) rather than running silently in ``/workspace``.

        >>> proc = await sandbox.run_code_background(
        ...     "import time; time.sleep(5); print('done')", name="nap")  # doctest: +SKIP
        >>> (await proc.wait()).stdout  # doctest: +SKIP
        'done\\n'
        """
        body, _ = execution_body("code", code, language, timeout, env, working_dir, name)
        if working_dir is not None:
            await self._agent.ensure_ready()
            body = background_code_body(body, self._agent.has_feature(BACKGROUND_WORKDIR))
        return await start_process(
            self, self._watcher, "/execute/background", body, body["language"]
        )

    async def run_code_stream(
        self,
        code: str,
        *,
        language: str = "python",
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Run code and yield its output as it appears (over a WebSocket; at most 300 s).

        Events are ``stdout``/``stderr`` (with ``text``), then ``result`` (``exit_code``,
        ``execution_time``, ``success``, ``timed_out``) and ``complete``. Closing the stream
        early (``contextlib.aclosing``) ends the code. A slow loop slows the server's
        sending, never its memory: the output waits in the sandbox.

        >>> async for event in sandbox.run_code_stream("print('hi')"):  # doctest: +SKIP
        ...     if event.kind == "stdout":
        ...         print(event.text, end="")
        ...     elif event.kind == "result":
        ...         print("exit code", event.exit_code)
        """
        body, _ = execution_body("code", code, language, timeout, env, working_dir, sync=True)
        async with contextlib.aclosing(stream_events(self._agent, "/execute/stream", body)) as run:
            async for event in run:
                yield event

    def terminal(self, *, cols: int = 80, rows: int = 24) -> AwaitableContext[AsyncTerminal]:
        """Open an interactive shell on a pseudo-terminal of ``cols`` x ``rows``; await it
        or use it with ``async with`` (leaving the block ends the shell).

        >>> async with sandbox.terminal() as term:  # doctest: +SKIP
        ...     await term.send("exit 3\\n")
        ...     output = "".join([text async for text in term.output()])
        ...     print(term.exit_code)
        3
        """
        validate.positive_int("cols", cols, maximum=10000)
        validate.positive_int("rows", rows, maximum=10000)
        return AwaitableContext(lambda: open_terminal(self._agent, cols, rows))

    async def run_code_async(
        self,
        code: str,
        *,
        callback_url: str,
        callback_headers: Mapping[str, str] | None = None,
        callback_signature_secret: str | None = None,
        language: str = "python",
        timeout: float = 1800,
        env: Mapping[str, str] | None = None,
        working_dir: str | None = None,
    ) -> AsyncExecution:
        """Start code whose result the server POSTs to ``callback_url`` when it ends.

        ``callback_headers`` are sent with the callback; with ``callback_signature_secret``
        it is signed (check it with :func:`hopx_async.verify_webhook`). ``timeout`` is the
        execution's lifetime in seconds (default 1800). The request is never retried.

        >>> execution = await sandbox.run_code_async(
        ...     "import time; time.sleep(600); print('done')",
        ...     callback_url="http://127.0.0.1:8080/hook",
        ...     callback_signature_secret="s3cret")  # doctest: +SKIP
        >>> execution.execution_id  # doctest: +SKIP
        'exec_...'
        """
        body, _ = execution_body("code", code, language, timeout, env, working_dir)
        body.update(callback_body(callback_url, callback_headers, callback_signature_secret))
        return await start_execution(self, self._agent, body)

    # -------------------------------------------------------------- processes
    async def list_processes(
        self, *, status: str | Iterable[str] | None = None, name: str | None = None
    ) -> list[ProcessInfo]:
        """Every background process of the sandbox, optionally filtered.

        ``status`` is one or more of queued, running, completed, failed, killed, timeout.

        >>> for proc in await sandbox.list_processes(status="running"):  # doctest: +SKIP
        ...     print(proc.name, proc.status)
        """
        wanted = status_filter(status)
        validate.optional_str("name", name)
        infos = await self._agent.list_processes()
        for info in infos:
            self._watcher.observe(info)
        return [
            info
            for info in infos
            if (wanted is None or info.status in wanted) and (name is None or info.name == name)
        ]

    async def get_process(self, process_id: str) -> ProcessInfo:
        """The current record of one background process.

        >>> info = await sandbox.get_process("proc_abc")  # doctest: +SKIP
        """
        validate.non_empty_str("process_id", process_id)
        info = await self._agent.get_process(process_id)
        self._watcher.observe(info)
        return info

    async def kill_process(self, process_id: str) -> None:
        """Kill a background process and its children.

        Raises :class:`ProcessNotFoundError` when it is unknown or has already ended.

        >>> await sandbox.kill_process("proc_abc")  # doctest: +SKIP
        """
        validate.non_empty_str("process_id", process_id)
        await self._agent.kill_process(process_id)
        self._watcher.mark(process_id, ProcessStatus.KILLED)

    async def remove_process(self, process_id: str) -> None:
        """Remove a finished process and its output from the sandbox's list.

        Needs a server that offers it (the local backend does); others raise HopxError.
        """
        validate.non_empty_str("process_id", process_id)
        await self._agent.remove_process(process_id)
        self._watcher.handles.pop(process_id, None)

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
        return await _fanout.wait_all(
            processes, timeout=timeout, check=check, on_progress=on_progress
        )
