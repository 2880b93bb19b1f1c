"""The sandboxes' cgroups on a cgroup v2 (unified) hierarchy.

Used where the server is root and the unified hierarchy really has the ``memory`` and
``pids`` controllers (a hybrid machine may mount an empty ``cgroup2`` beside its v1
controllers: that one is not usable). Controllers can be given to child cgroups only by a
cgroup with no process of its own (the *no internal process* rule), so unless the server runs
in the root cgroup it first moves itself (and the processes it started) into a child,
``hopx-local-server``, and enables ``+memory +pids`` (and ``+cpu``) on its own cgroup and on
``hopx-local``, which holds one cgroup per sandbox. Where another program shares the server's
cgroup, nothing is moved and sandboxes get rlimits instead (the server does not move what it
did not start).

Per sandbox: ``memory.max`` (and ``memory.swap.max``), ``pids.max``, ``cpu.max``; the OOM
kills counted from ``memory.events``; ending writes ``cgroup.kill`` where the kernel has it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cgroupbase import CgroupBase, oom_kill_count

if TYPE_CHECKING:
    from .limits import SandboxLimits

__all__ = ["CgroupsV2", "unified_mount"]

logger = logging.getLogger("hopx_async.local")

_SERVER = "hopx-local-server"
_GROUP = "hopx-local"
_WANTED = ("memory", "pids", "cpu")


def unified_mount(mountinfo: Path = Path("/proc/self/mountinfo")) -> Path | None:
    """Where the cgroup v2 hierarchy is mounted, if it is."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        before, sep, after = line.partition(" - ")
        if sep and after.split(" ", 1)[0] == "cgroup2":
            fields = before.split(" ")
            if len(fields) >= 5:
                return Path(fields[4].replace("\\040", " "))
    return None


def _own_path(cgroup_file: Path) -> str | None:
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _pids(group: Path) -> list[int]:
    try:
        return [int(pid) for pid in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


class CgroupsV2(CgroupBase):
    """One cgroup v2 directory per sandbox, under ``parent``."""

    def __init__(self, parent: Path, controllers: set[str]) -> None:
        super().__init__()
        self.parent = parent
        #: controller -> the directory holding one cgroup per sandbox (all the same here)
        self.bases = {controller: parent for controller in sorted(controllers)}

    @classmethod
    def detect(
        cls,
        *,
        mount: Path | None = None,
        cgroup_file: Path = Path("/proc/self/cgroup"),
        ours: set[int] | None = None,
    ) -> CgroupsV2 | None:
        """The server's delegated cgroups, or None (why is logged). ``ours``: the pids the
        server may move out of its cgroup (itself and what it started; by default itself)."""
        mount = mount or unified_mount()
        own = _own_path(cgroup_file)
        if mount is None or own is None:
            return None
        here = mount / own.lstrip("/")
        try:
            available = set((here / "cgroup.controllers").read_text().split())
        except OSError:
            return None
        if not {"memory", "pids"} <= available:
            return None
        controllers = {c for c in _WANTED if c in available}
        enable = " ".join(f"+{c}" for c in sorted(controllers))
        ours = ours if ours is not None else {os.getpid()}
        try:
            if own != "/":
                others = set(_pids(here)) - ours
                if others:
                    logger.info(
                        "cgroup v2: %d other processes share the server's cgroup %s; "
                        "sandboxes get rlimits",
                        len(others),
                        here,
                    )
                    return None
                server = here / _SERVER
                server.mkdir(exist_ok=True)
                for pid in sorted(set(_pids(here)) & ours):
                    _write(server / "cgroup.procs", str(pid))
            _write(here / "cgroup.subtree_control", enable)
            parent = here / _GROUP
            parent.mkdir(exist_ok=True)
            _write(parent / "cgroup.subtree_control", enable)
        except OSError as exc:
            logger.info("cgroup v2 is not usable here (%s); sandboxes get rlimits", exc)
            return None
        found = cls(parent, controllers)
        probe = f"probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            (parent / probe).mkdir()
            _write(parent / probe / "pids.max", "16")
            _write(parent / probe / "memory.max", str(64 << 20))
        except OSError as exc:
            logger.info("cgroup v2 limits cannot be set here (%s); sandboxes get rlimits", exc)
            found.remove(probe)
            return None
        found.remove(probe)
        return found

    def _dir(self, sandbox_id: str) -> Path:
        return self.parent / sandbox_id

    def make(self, sandbox_id: str, limits: SandboxLimits) -> None:
        """The sandbox's cgroup, with its limits (raises ``OSError``)."""
        group = self._dir(sandbox_id)
        group.mkdir(exist_ok=True)
        _write(group / "memory.max", str(limits.memory_bytes))
        with contextlib.suppress(OSError):  # only with swap accounting
            _write(group / "memory.swap.max", "0")
        _write(group / "pids.max", str(limits.processes))
        if "cpu" in self.bases:
            _write(group / "cpu.max", f"{limits.vcpu * 100000} 100000")
        self.count_oom_kills_from_now(sandbox_id)

    def attach(self, sandbox_id: str, pid: int) -> None:
        """Put ``pid`` (a box's pid 1, before anything runs in it) in the sandbox's cgroup."""
        _write(self._dir(sandbox_id) / "cgroup.procs", str(pid))

    def oom_kills(self, sandbox_id: str) -> int:
        return oom_kill_count(self._dir(sandbox_id) / "memory.events")

    def pids(self, sandbox_id: str) -> list[int]:
        return _pids(self._dir(sandbox_id))

    def remove(self, sandbox_id: str, *, wait: float = 0.0) -> None:
        """Kill what is left in the sandbox's cgroup and remove it (waiting up to ``wait``
        seconds for the killed to be gone)."""
        group = self._dir(sandbox_id)
        with contextlib.suppress(OSError):
            _write(group / "cgroup.kill", "1")
        self.kill_members(sandbox_id, wait=wait)
        with contextlib.suppress(OSError):
            group.rmdir()

    def leftovers(self) -> list[str]:
        """Sandbox ids that have a cgroup here (from this run or an earlier one)."""
        try:
            return [entry.name for entry in self.parent.iterdir() if entry.is_dir()]
        except OSError:
            return []

    def describe(self) -> dict[str, Any]:
        return {controller: str(path) for controller, path in self.bases.items()}
