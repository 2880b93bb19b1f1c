"""The boxes of every sandbox: one long-lived box per sandbox, made at its first start.

Each box is a ``bwrap`` started (by the host's spawner process) with the sandbox's mounts and
namespaces, whose pid 1 is the sandbox's supervisor (``spawner.py`` in its ``box`` role). All
processes of the sandbox run in it: they share its PID namespace, ``/tmp`` (a size-bounded
tmpfs) and whatever daemons they leave behind. Killing the sandbox, its expiry or the server's
stop end the box from the host (SIGKILL of its pid 1); a pause stops every process in it.

A box cannot outlive the server: its supervisor exits (and with it the PID namespace) once
the server's end of its socket is closed, which the kernel does when the server dies, also
while the box is still being set up; ``bwrap --die-with-parent`` and the host spawner's
``PR_SET_PDEATHSIG`` stack on top. A restart still looks for leftovers by the tag every box's
``bwrap`` carries in its environment (``BOX_TAG_ENV``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from ..state.layout import Layout
from .box import SUPERVISOR_PATH, Box
from .procfs import ProcStat, all_stats, descendants, pids_by_env
from .sandbox_box import SandboxBox
from .seccomp import filter_fd
from .spawner_client import SpawnArgs
from .supervisor import Supervisor

__all__ = ["BOX_TAG_ENV", "Boxes"]

logger = logging.getLogger("hopx_async.local")

#: Every box's ``bwrap`` carries its sandbox's id in this variable (a restart finds leftovers).
BOX_TAG_ENV = "HOPX_LOCAL_BOX"
_SUPERVISOR_SOURCE = Path(__file__).with_name("spawner.py")


class Boxes:
    """The live box of each sandbox (made on demand)."""

    def __init__(self, layout: Layout, box: Box, supervisor: Supervisor) -> None:
        self.layout = layout
        self.box = box
        self.supervisor = supervisor
        self._boxes: dict[str, SandboxBox] = {}
        self._making: dict[str, asyncio.Future[SandboxBox]] = {}
        self._program: bytes | None = None
        #: the size of a box's /tmp (bytes), and the rlimits its supervisor sets
        self.tmp_bytes = 1024 * 1024 * 1024
        self.rlimits: dict[str, int] = {}

    def get(self, sandbox_id: str) -> SandboxBox | None:
        """The sandbox's live box, if it has one."""
        box = self._boxes.get(sandbox_id)
        return box if box is not None and box.alive else None

    async def box_of(self, sandbox_id: str, *, internet: bool) -> SandboxBox:
        """The sandbox's box, made now if it has none (concurrent callers share the making)."""
        live = self.get(sandbox_id)
        if live is not None:
            return live
        making = self._making.get(sandbox_id)
        if making is None:
            making = self._making[sandbox_id] = asyncio.ensure_future(
                self._make(sandbox_id, internet=internet)
            )
            making.add_done_callback(lambda _: self._making.pop(sandbox_id, None))
        return await asyncio.shield(making)

    def _supervisor_program(self) -> bytes:
        if self._program is None:
            self._program = _SUPERVISOR_SOURCE.read_bytes()
        return self._program

    async def _make(self, sandbox_id: str, *, internet: bool) -> SandboxBox:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: dict[str, int] = {}
        try:
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            fds["workspace"] = os.open(self.layout.workspace(sandbox_id), flags)
            fds["seccomp"] = filter_fd()
            program = os.memfd_create("hopx-supervisor", os.MFD_CLOEXEC)
            fds["supervisor"] = program
            os.write(program, self._supervisor_program())
            os.lseek(program, 0, os.SEEK_SET)
            argv = self.box.argv(
                fds, "/workspace", internet=internet, tmp_bytes=self.tmp_bytes, pid1=True
            )
            python = self.box.inside_path(sys.executable)
            limits = [f"{name}={value}" for name, value in sorted(self.rlimits.items())]
            command = [python, "-I", "-S", SUPERVISOR_PATH, str(theirs.fileno()), "box", *limits]
            box = SandboxBox(sandbox_id, ours)
            carrier = await self.supervisor.spawn(
                SpawnArgs(
                    [*argv, *command],
                    Path("/"),
                    {BOX_TAG_ENV: sandbox_id},
                    Path(os.devnull),
                    self.layout.sandbox_dir(sandbox_id) / "box.log",
                    pass_fds=(*fds.values(), theirs.fileno(), *self.box.kept_fds),
                )
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            for fd in fds.values():
                os.close(fd)
        carrier.child.exit_future().add_done_callback(lambda _: box.lost(None, quiet=True))
        try:
            await box.wait_ready()
        except OSError as exc:
            why = f"the sandbox's box did not start: {self._why(sandbox_id)}"
            raise OSError(exc.errno, why) from None
        self._boxes[sandbox_id] = box
        return box

    def _why(self, sandbox_id: str) -> str:
        try:
            text = (self.layout.sandbox_dir(sandbox_id) / "box.log").read_text(errors="replace")
        except OSError:
            return "no reason given"
        lines = text.strip().splitlines()
        return lines[-1][:300] if lines else "no reason given"

    def end(self, sandbox_id: str) -> None:
        """Kill the sandbox's box and everything in it (from the host)."""
        box = self._boxes.pop(sandbox_id, None)
        if box is not None:
            box.kill()

    def freeze(self, sandbox_id: str) -> None:
        box = self.get(sandbox_id)
        if box is not None:
            box.freeze()

    def thaw(self, sandbox_id: str) -> None:
        box = self.get(sandbox_id)
        if box is not None:
            box.thaw()

    def members(self, sandbox_id: str) -> list[ProcStat]:
        """Every live process in the sandbox's box but its supervisor."""
        box = self.get(sandbox_id)
        return [] if box is None else box.members()

    def close(self) -> None:
        """End every box."""
        for sandbox_id in list(self._boxes):
            self.end(sandbox_id)

    @staticmethod
    def sweep(sandbox_ids: set[str]) -> int:
        """Kill what a crash left of these sandboxes' boxes (found by their tag); how many."""
        tagged = pids_by_env(BOX_TAG_ENV, sandbox_ids)
        roots = {pid for pids in tagged.values() for pid in pids}
        if not roots:
            return 0
        doomed = descendants(roots, all_stats())
        for stat in doomed:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(stat.pid, signal.SIGKILL)
        logger.warning("killed %d processes left by a previous run's boxes", len(doomed))
        return len(doomed)
