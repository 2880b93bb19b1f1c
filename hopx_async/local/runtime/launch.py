"""Launching a sandbox's code: its directories, argv, environment and working directory,
started in its box (``box``) by the supervisor.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import posixpath
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ..errors import bad_request
from ..state.layout import Layout
from ..state.uids import SandboxUids, UidRange
from .box import BOX_ID, Box, Isolation
from .boxes import Boxes
from .catalog import Catalog
from .procfs import ProcStat, host_uids
from .seccomp import filter_fd
from .spawner import SOURCE
from .spawner_client import Script, SpawnArgs
from .supervisor import Running, Supervisor

__all__ = [
    "PROCESS_TAG_ENV",
    "Launcher",
    "StartSpec",
    "WorkDir",
]

logger = logging.getLogger("hopx_async.local")

#: Without a box, each process carries its id in this variable, so that a restart finds
#: what a crash left running even when the crash came before its pid was recorded.
PROCESS_TAG_ENV = "HOPX_LOCAL_PROCESS_ID"

#: The terminal's shell: bash where the host has it (a box sees the host's /bin), else sh.
_TERMINAL_SHELL = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: A shell reads its code from this descriptor (a memory file the spawner writes).
_SCRIPT_FD = 3
_SCRIPT_PATH = f"/dev/fd/{_SCRIPT_FD}"


def _sourcing(shell: str) -> list[str]:
    """A shell that runs the code at ``_SCRIPT_FD`` as ``-c`` would (``$0`` the shell)."""
    return [shell, "-c", f". {_SCRIPT_PATH}", shell]


#: Shells whose ``-c LINE`` is run from a descriptor instead.
_SHELLS = frozenset({"sh", "bash", "dash", "zsh"})


@attrs.frozen
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


@attrs.frozen
class Program:
    """An argv and the code it reads from a descriptor or a private file (or None)."""

    argv: list[str]
    script: Script | None


@attrs.frozen
class WorkDir:
    """A working directory: on the host, and as the code sees it."""

    host: Path
    inside: str


class Launcher:
    """Turns a ``StartSpec`` into a started (boxed) process of one sandbox."""

    def __init__(
        self, layout: Layout, catalog: Catalog, supervisor: Supervisor, isolation: Isolation
    ) -> None:
        try:
            uid_range = UidRange.from_env()
        except ValueError:
            supervisor.close()  # the launcher's to close: it does not come to be
            raise
        self.layout = layout
        self.catalog = catalog
        self.supervisor = supervisor
        self.isolation = isolation
        self.box = Box(layout, isolation)
        self.boxes = Boxes(layout, self.box, supervisor)
        self._root_server = os.geteuid() == 0
        self.uids = SandboxUids(layout.root, uid_range)
        self._uids_claimed = False

    @property
    def boxed(self) -> bool:
        return self.isolation.mechanism == "bubblewrap"

    # -- sandboxes' uids --------------------------------------------------------------------

    @property
    def own_uids(self) -> bool:
        """Whether each sandbox runs as a host uid of its own (a root server with boxes; an
        unprivileged server's boxes are all its own uid on the host, 65534 inside)."""
        return self.boxed and self._root_server

    def _claimed(self) -> SandboxUids:
        if self.own_uids and not self._uids_claimed:
            self._uids_claimed = True
            self.uids.reclaim(host_uids())
        return self.uids

    async def assign_uid(self, sandbox_id: str) -> None:
        """Give a new sandbox its own host uid (when sandboxes get one). The uids host
        processes run as are read from ``/proc`` off the event loop (milliseconds with a few
        hundred processes)."""
        if self.own_uids:
            busy = await asyncio.to_thread(host_uids)
            self._claimed().assign(sandbox_id, busy)

    def release_uid(self, sandbox_id: str) -> None:
        """The sandbox is deleted: its uid is free (reused once nothing runs as it)."""
        self.uids.free(sandbox_id)

    def uid_of(self, sandbox_id: str) -> int:
        """The uid the sandbox's code runs as (on the host too, for a root server)."""
        if not self.own_uids:
            return BOX_ID
        uid = self._claimed().of(sandbox_id)
        return BOX_ID if uid is None else uid

    def owner_of(self, sandbox_id: str) -> int | None:
        """Who new files of the sandbox belong to (None: the server, which is then their
        owner for the box's user too)."""
        return self.uid_of(sandbox_id) if self.own_uids else None

    # -- sandboxes' directories -------------------------------------------------------------

    def prepare_sandbox(self, sandbox_id: str) -> None:
        """Create a sandbox's directories; its workspace and /tmp belong to its uid."""
        self.layout.sandbox_dir(sandbox_id).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.layout.output_dir(sandbox_id).mkdir(exist_ok=True, mode=0o700)
        # 0711: bwrap, without its capabilities, must still enter the workspace (--chdir).
        owner = self.owner_of(sandbox_id)
        for path, mode in (
            (self.layout.workspace(sandbox_id), 0o711),
            (self.layout.tmp(sandbox_id), 0o700),
        ):
            path.mkdir(exist_ok=True, mode=mode)
            if owner is not None:
                os.chown(path, owner, owner)

    def resolve_working_dir(self, sandbox_id: str, value: str | None) -> WorkDir:
        """Map ``/workspace``, paths under it and relative paths onto the workspace."""
        workspace = self.layout.workspace(sandbox_id)
        if value is None or value == "":
            return WorkDir(workspace, "/workspace")
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
            self._make_dirs(workspace, relative, self.owner_of(sandbox_id))
        except OSError as exc:
            reason = "a symbolic link is in the way" if exc.errno == errno.ELOOP else exc.strerror
            raise bad_request(f"'working_dir' {value!r} cannot be used: {reason}") from exc
        return WorkDir(path, "/workspace" + ("/" + relative if relative else ""))

    def _make_dirs(self, workspace: Path, relative: str, owner: int | None) -> None:
        """Create ``relative`` under ``workspace`` one component at a time, following no
        symbolic link: sandboxed code may swap a directory for a link at any moment."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(workspace, flags)
        try:
            for name in relative.split("/") if relative else ():
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                    created = True
                except FileExistsError:
                    created = False
                child = os.open(name, flags, dir_fd=fd)
                os.close(fd)
                fd = child
                if created and owner is not None:
                    os.fchown(fd, owner, owner)
        finally:
            os.close(fd)

    def process_env(
        self, sandbox_id: str, sandbox_env: Mapping[str, str], extra: Mapping[str, str]
    ) -> dict[str, str]:
        """PATH, HOME, LANG, PYTHONUNBUFFERED, then the sandbox's env, then the request's."""
        interpreter_dir = os.path.dirname(sys.executable)
        if self.boxed:
            interpreter_dir = self.box.inside_path(interpreter_dir)
        home = "/workspace" if self.boxed else str(self.layout.workspace(sandbox_id))
        env = {
            "PATH": f"{interpreter_dir}:{_BASE_PATH}",
            "HOME": home,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        env.update(sandbox_env)
        env.update(extra)
        return env

    # -- starting ---------------------------------------------------------------------------

    async def launch(
        self,
        sandbox_id: str,
        process_id: str,
        spec: StartSpec,
        *,
        workdir: WorkDir,
        env: dict[str, str],
        internet: bool,
    ) -> Running:
        """Start ``spec`` for ``sandbox_id``; raises ``OSError`` when it cannot start.

        Neither the code nor the environment goes on a command line (every local user can
        read those): the code reaches the process through a memory file the spawner writes,
        the environment through ``execve``'s, which only the process's owner and root can read.
        """
        stdout = self.layout.output(sandbox_id, process_id, "stdout")
        stderr = self.layout.output(sandbox_id, process_id, "stderr")
        program = self._program(spec)
        if not self.boxed:
            tagged = {**env, PROCESS_TAG_ENV: process_id}
            return await self.supervisor.spawn(
                SpawnArgs(program.argv, workdir.host, tagged, stdout, stderr, script=program.script)
            )
        box = await self.boxes.box_of(sandbox_id, internet=internet, uid=self.uid_of(sandbox_id))
        inside_argv = list(program.argv)
        inside_argv[0] = self.box.inside_path(inside_argv[0])
        stdio: list[int] = []
        try:
            stdio.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            for path in (stdout, stderr):
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                stdio.append(os.open(path, flags, 0o600))
        except OSError:
            for fd in stdio:
                os.close(fd)
            raise
        started = box.spawn(
            inside_argv, workdir.inside, env, (stdio[0], stdio[1], stdio[2]), program.script
        )
        return await self.supervisor.adopt(started)

    async def launch_terminal(
        self, sandbox_id: str, terminal: int, *, env: dict[str, str], internet: bool
    ) -> Running:
        """Start an interactive shell in ``/workspace`` on ``terminal`` (a pty's slave, kept
        open by the caller), as its stdin, stdout, stderr and controlling terminal."""
        argv = [_TERMINAL_SHELL, "-i"]
        env = {"TERM": "xterm-256color", **env}
        if not self.boxed:
            tagged = {**env, PROCESS_TAG_ENV: "terminal"}
            workspace = self.layout.workspace(sandbox_id)
            none = Path(os.devnull)
            args = SpawnArgs(argv, workspace, tagged, none, none, stdio=(terminal,) * 3, ctty=True)
            return await self.supervisor.spawn(args)
        box = await self.boxes.box_of(sandbox_id, internet=internet, uid=self.uid_of(sandbox_id))
        stdio = (os.dup(terminal), os.dup(terminal), os.dup(terminal))
        started = box.spawn(argv, "/workspace", env, stdio, None, ctty=True)
        return await self.supervisor.adopt(started)

    # -- the sandbox's box, from the host ------------------------------------------------

    def end_box(self, sandbox_id: str) -> None:
        """Kill the sandbox's box (if it has one) and everything in it."""
        self.boxes.end(sandbox_id)

    def freeze_box(self, sandbox_id: str) -> None:
        self.boxes.freeze(sandbox_id)

    def thaw_box(self, sandbox_id: str) -> None:
        self.boxes.thaw(sandbox_id)

    def box_members(self, sandbox_id: str) -> list[ProcStat] | None:
        """Every live process of the sandbox's box (None when unboxed)."""
        return self.boxes.members(sandbox_id) if self.boxed else None

    def oom_killed(self, sandbox_id: str) -> bool:
        """Whether a process of the sandbox that died by SIGKILL was the OOM killer's."""
        return self.boxed and self.boxes.oom_killed(sandbox_id)

    def enforced_limits(self) -> dict[str, Any] | None:
        """Each limit of a boxed sandbox and what holds it (None without a box)."""
        return self.boxes.enforced() if self.boxed else None

    def sweep_leftovers(self, sandbox_ids: set[str]) -> None:
        """Kill what a crash left running of these sandboxes' boxes; free the uids of
        sandboxes that have no record."""
        self.boxes.sweep(sandbox_ids)
        self.uids.keep_only(sandbox_ids)

    def _program(self, spec: StartSpec) -> Program:
        """The argv to run and the code it reads (never on its command line)."""
        if spec.kind == "command":
            assert spec.argv is not None
            argv = list(spec.argv)
            if len(argv) == 3 and argv[1] == "-c" and os.path.basename(argv[0]) in _SHELLS:
                # A shell line is code too: the shell reads it from a descriptor.
                return Program(_sourcing(argv[0]), Script(argv[2], _SCRIPT_FD))
            return Program(argv, None)
        assert spec.code is not None
        program = self.catalog.languages[spec.language]
        if spec.language == "python":
            # From stdin, so that sys.path[0] is the working directory, as with -c.
            return Program([program, "-u", "-"], Script(spec.code, 0))
        if spec.language == "javascript":
            return Program([program, "-"], Script(spec.code, 0))
        if spec.language == "go":
            return Program([program, "run", SOURCE], Script(spec.code, 0, file=".go"))
        return Program(_sourcing(program), Script(spec.code, _SCRIPT_FD))

    def close(self) -> None:
        """End every box, close the descriptors kept for their mounts and stop the spawner
        process."""
        self.boxes.close()
        self.box.close()
        self.supervisor.close()

    def self_test(self) -> str:
        """Run the interpreter in a real box once: ``""`` when it works, else why not."""
        probe = self.layout.sandbox_dir(".probe")
        try:
            self.prepare_sandbox(probe.name)
            with self.box.fds(probe.name) as fds:
                fds["seccomp"] = filter_fd()
                argv = self.box.argv(fds, "/workspace", internet=False, tmp_bytes=1 << 20)
                done = subprocess.run(
                    [*argv, self.box.inside_path(sys.executable), "-c", "print(1)"],
                    capture_output=True,
                    timeout=30,
                    check=False,
                    cwd="/",
                    env={},
                    pass_fds=(*fds.values(), *self.box.kept_fds),
                )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"a box cannot start: {exc}"
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        if done.stdout.strip() == b"1":
            return ""
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return "the interpreter cannot run in a box: " + (
            lines[-1] if lines else f"exit status {done.returncode}"
        )

    def disable(self, reason: str) -> None:
        """Run plain processes from now on (the box does not work here)."""
        self.box.close()
        self.isolation = Isolation("none", reason=reason)
