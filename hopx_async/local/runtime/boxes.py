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
``bwrap`` (and its ``slirp4netns``, see ``network.py``) carries in its environment
(``BOX_TAG_ENV``).
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
from typing import Any

from ..state.layout import Layout
from .box import BOX_ID, SUPERVISOR_PATH, Box
from .limits import Cgroups, SandboxLimits
from .network import Attachment, Network, last_line
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
        boxed = box.isolation.mechanism == "bubblewrap"
        #: the boxes' network (``HOPX_LOCAL_NETWORK``) and each box's user-mode networking
        try:
            self.network = Network.detect(boxed=boxed)
        except (ValueError, RuntimeError):
            box.close()  # no launcher is made: nothing it was given may stay open
            supervisor.close()
            raise
        self._nets: dict[str, Attachment] = {}
        self.limits = SandboxLimits.from_template()
        self.cgroups = Cgroups.detect() if boxed else None
        #: the rlimits a box's supervisor sets (inherited by everything in the box)
        self.rlimits: dict[str, int] = {"fsize": self.limits.disk_gb << 30}
        if self.cgroups is None:
            self.rlimits["as"] = self.limits.memory_bytes
            if os.geteuid() == 0:  # per host uid: never the server's own
                self.rlimits["nproc"] = self.limits.processes

    def rlimits_of(self, uid: int) -> dict[str, int]:
        """The rlimits of a box whose code runs as ``uid``: a host uid of its own counts only
        the sandbox's processes, so ``RLIMIT_NPROC`` holds them (also beside a cgroup)."""
        if uid == BOX_ID:
            return self.rlimits
        return {**self.rlimits, "nproc": self.limits.processes}

    def enforced(self) -> dict[str, Any]:
        """Each limit of a sandbox, and what holds it (``cgroup``, ``rlimit``, ``tmpfs``)."""
        cgroup = self.cgroups is not None
        by = "cgroup" if cgroup else "rlimit"
        cpu = cgroup and self.cgroups is not None and "cpu" in self.cgroups.bases
        nproc = "cgroup" if cgroup else ("rlimit" if "nproc" in self.rlimits else None)
        return {
            "memory_mb": {"value": self.limits.memory_mb, "by": by},
            "processes": {"value": self.limits.processes, "by": nproc},
            "vcpu": {"value": self.limits.vcpu, "by": "cgroup" if cpu else None},
            "file_size_gb": {"value": self.limits.disk_gb, "by": "rlimit"},
            "tmp_mb": {"value": self.limits.tmp_bytes >> 20, "by": "tmpfs"},
            "network": self.network.advert(),
        }

    def oom_killed(self, sandbox_id: str) -> bool:
        """Whether the sandbox's memory cgroup saw an OOM kill not accounted for yet."""
        return self.cgroups is not None and self.cgroups.took_oom_kill(sandbox_id)

    def get(self, sandbox_id: str) -> SandboxBox | None:
        """The sandbox's live box, if it has one."""
        box = self._boxes.get(sandbox_id)
        return box if box is not None and box.alive else None

    async def box_of(self, sandbox_id: str, *, internet: bool, uid: int = BOX_ID) -> SandboxBox:
        """The sandbox's box, made now if it has none (concurrent callers share the making);
        ``uid``: the uid its code runs as."""
        live = self.get(sandbox_id)
        if live is not None:
            return live
        making = self._making.get(sandbox_id)
        if making is None:
            making = self._making[sandbox_id] = asyncio.ensure_future(
                self._make(sandbox_id, internet=internet, uid=uid)
            )
            making.add_done_callback(lambda _: self._making.pop(sandbox_id, None))
        return await asyncio.shield(making)

    def _supervisor_program(self) -> bytes:
        if self._program is None:
            self._program = _SUPERVISOR_SOURCE.read_bytes()
        return self._program

    async def _make(self, sandbox_id: str, *, internet: bool, uid: int) -> SandboxBox:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds: dict[str, int] = {}
        try:
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            fds["workspace"] = os.open(self.layout.workspace(sandbox_id), flags)
            fds["seccomp"] = filter_fd()
            resolv = self.network.resolv_conf() if internet else None
            if resolv is not None:  # the host's resolver is on its loopback: slirp4netns's
                fds["resolv"] = os.memfd_create("hopx-resolv", os.MFD_CLOEXEC)
                os.write(fds["resolv"], resolv.encode())
                os.lseek(fds["resolv"], 0, os.SEEK_SET)
            program = os.memfd_create("hopx-supervisor", os.MFD_CLOEXEC)
            fds["supervisor"] = program
            os.write(program, self._supervisor_program())
            os.lseek(program, 0, os.SEEK_SET)
            argv = self.box.argv(
                fds,
                "/workspace",
                internet=internet,
                tmp_bytes=self.limits.tmp_bytes,
                pid1=True,
                uid=uid,
                own_netns=self.network.user,
            )
            python = self.box.inside_path(sys.executable)
            limits = [f"{name}={value}" for name, value in sorted(self.rlimits_of(uid).items())]
            command = [python, "-I", "-S", SUPERVISOR_PATH, str(theirs.fileno()), "box", *limits]
            if self.cgroups is not None:
                self.cgroups.make(sandbox_id, self.limits)
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
            log = self.layout.sandbox_dir(sandbox_id) / "box.log"
            why = f"the sandbox's box did not start: {last_line(log)}"
            raise OSError(exc.errno, why) from None
        if self.cgroups is not None:
            try:  # before anything runs in the box: all of it is held
                self.cgroups.attach(sandbox_id, box.init_pid)
            except OSError as exc:
                box.kill()
                raise OSError(exc.errno, f"the sandbox's box got no cgroup: {exc}") from None
        if internet and self.network.user:
            await self._attach_network(sandbox_id, box, carrier.child.exit_future())
        self._boxes[sandbox_id] = box
        return box

    async def _attach_network(
        self, sandbox_id: str, box: SandboxBox, box_exit: asyncio.Future[int]
    ) -> None:
        """User-mode networking for the box, ready before anything runs in it; it ends
        with the box (also when the box dies on its own)."""
        self._stop_network(sandbox_id)
        try:
            net = await self.network.attach(
                self.supervisor,
                box.init_pid,
                {BOX_TAG_ENV: sandbox_id},
                self.layout.sandbox_dir(sandbox_id) / "net.log",
            )
        except BaseException as exc:
            box.kill()
            if isinstance(exc, OSError):
                why = exc.strerror or str(exc)
                raise OSError(exc.errno, f"the sandbox's box got no network: {why}") from None
            raise
        self._nets[sandbox_id] = net
        box_exit.add_done_callback(lambda _: self._stop_network(sandbox_id, net))

    def _stop_network(self, sandbox_id: str, only: Attachment | None = None) -> None:
        net = self._nets.get(sandbox_id)
        if net is not None and (only is None or net is only):
            del self._nets[sandbox_id]
            net.stop()

    def end(self, sandbox_id: str) -> None:
        """Kill the sandbox's box and everything in it (from the host)."""
        box = self._boxes.pop(sandbox_id, None)
        if box is not None:
            box.kill()
        self._stop_network(sandbox_id)
        if self.cgroups is not None:
            # The box's processes are gone once the kernel has reaped them: remove then.
            loop = asyncio.get_running_loop()
            for delay in (0.2, 1.0, 5.0):
                loop.call_later(delay, self._drop_cgroups, sandbox_id)

    def _drop_cgroups(self, sandbox_id: str) -> None:
        if self.cgroups is not None and sandbox_id not in self._boxes:
            self.cgroups.remove(sandbox_id)

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
        """End every box (and remove the cgroups of those that are gone)."""
        for sandbox_id in list(self._boxes):
            box = self._boxes.pop(sandbox_id)
            box.kill()
            self._stop_network(sandbox_id)
            if self.cgroups is not None:
                self.cgroups.remove(sandbox_id)
        for sandbox_id in list(self._nets):
            self._stop_network(sandbox_id)

    def sweep(self, sandbox_ids: set[str]) -> int:
        """Kill what a crash left of these sandboxes' boxes and their ``slirp4netns`` (found
        by their tag and by their cgroups); how many processes."""
        if self.cgroups is not None:
            for sandbox_id in set(self.cgroups.leftovers()) & sandbox_ids:
                self.cgroups.remove(sandbox_id, wait=1.0)
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
