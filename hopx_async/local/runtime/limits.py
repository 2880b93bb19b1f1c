"""What one sandbox may use: its template's resources, held by cgroups or rlimits.

Per sandbox: memory (the template's ``memory_mb``), processes (``HOPX_LOCAL_MAX_PROCESSES``,
default 1,024), CPU (``vcpu``), the size of one file (``disk_gb``) and of ``/tmp`` (a tmpfs of
half the memory). Where the server may make cgroups (cgroup v1 with writable ``memory`` and
``pids`` controllers, checked by making one), each box's pid 1 goes into a cgroup of its own
per controller before anything runs in it: the kernel then holds the whole box to the memory
(its OOM killer ends what passes it), the process count (``fork`` fails past it) and the CPU
quota. Elsewhere the box's supervisor lowers its rlimits, which its processes inherit:
``RLIMIT_AS`` (per process). ``RLIMIT_FSIZE`` is always set, and ``RLIMIT_NPROC`` (counted per
host uid) whenever the sandbox runs as a host uid of its own (a root server, ``state/uids.py``),
cgroups or not. On a cgroup v2 hierarchy
with those controllers the server delegates them to itself first (``cgroup2.py``). The
workspace as a whole is bounded by ``disk_gb`` too (``runtime.disk``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import attrs

from .catalog import TEMPLATES
from .cgroup2 import CgroupsV2
from .cgroupbase import CgroupBase, oom_kill_count
from .procfs import all_stats, descendants

__all__ = [
    "CGROUPS_ENV",
    "DISK_ENV",
    "MAX_PROCESSES_ENV",
    "MEMORY_ENV",
    "Cgroups",
    "SandboxLimits",
]

logger = logging.getLogger("hopx_async.local")

#: Processes (and threads) one sandbox may have at once (default 1,024).
MAX_PROCESSES_ENV = "HOPX_LOCAL_MAX_PROCESSES"
#: Memory of one sandbox in MiB, instead of the template's (for tests and small machines).
MEMORY_ENV = "HOPX_LOCAL_SANDBOX_MEMORY_MB"
#: The bound of one sandbox's ``/workspace`` in MiB, instead of the template's ``disk_gb``.
DISK_ENV = "HOPX_LOCAL_SANDBOX_DISK_MB"
#: ``off``: use no cgroups (rlimits only), even where they are usable.
CGROUPS_ENV = "HOPX_LOCAL_CGROUPS"
_ROOT = Path("/sys/fs/cgroup")
_GROUP = "hopx-local"


def _env_int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if raw.isdigit() and low <= int(raw) <= high:
        return int(raw)
    logger.warning("%s=%r is not a number from %d to %d; using %d", name, raw, low, high, default)
    return default


@attrs.frozen
class SandboxLimits:
    """The limits every sandbox gets (both templates have the same resources)."""

    vcpu: int
    memory_mb: int
    disk_gb: int
    processes: int
    #: the bound of ``/workspace`` (``disk_gb`` in MiB unless ``HOPX_LOCAL_SANDBOX_DISK_MB``)
    disk_mb: int = attrs.field(
        default=attrs.Factory(lambda self: self.disk_gb * 1024, takes_self=True)
    )

    @classmethod
    def from_template(cls) -> SandboxLimits:
        resources = TEMPLATES[0]["default_resources"]
        return cls(
            vcpu=int(resources["vcpu"]),
            memory_mb=_env_int(MEMORY_ENV, int(resources["memory_mb"]), 16, 1 << 30),
            disk_gb=int(resources["disk_gb"]),
            processes=_env_int(MAX_PROCESSES_ENV, 1024, 8, 1 << 22),
            disk_mb=_env_int(DISK_ENV, int(resources["disk_gb"]) * 1024, 4, 1 << 30),
        )

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def disk_bytes(self) -> int:
        return self.disk_mb * 1024 * 1024

    @property
    def tmp_bytes(self) -> int:
        return self.memory_bytes // 2


class Cgroups(CgroupBase):
    """The cgroup v1 directories of the sandboxes, one per controller."""

    def __init__(self, bases: dict[str, Path]) -> None:
        super().__init__()
        #: controller -> the directory holding one cgroup per sandbox
        self.bases = bases

    @classmethod
    def detect(cls) -> Cgroups | CgroupsV2 | None:
        """The usable cgroups: v1 controllers (``memory`` and ``pids`` at least), else a
        delegated cgroup v2 hierarchy (``cgroup2.py``), else None."""
        if os.geteuid() != 0 or os.environ.get(CGROUPS_ENV, "").strip().lower() == "off":
            return None
        found = cls._detect_v1()
        if found is not None:
            return found
        me = os.getpid()
        ours = {me} | {stat.pid for stat in descendants({me}, all_stats())}
        return CgroupsV2.detect(ours=ours)

    @classmethod
    def _detect_v1(cls) -> Cgroups | None:
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        bases: dict[str, Path] = {}
        for line in lines:
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(","):
                if controller in ("memory", "pids", "cpu"):
                    mount = _ROOT / controller
                    if (mount / "cgroup.procs").exists():
                        bases[controller] = mount / path.lstrip("/") / _GROUP
        if not {"memory", "pids"} <= set(bases):
            return None
        found = cls(bases)
        probe = f"probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            found._make_dirs(probe)
            found._write(probe, "pids", "pids.max", "16")
            found._write(probe, "memory", "memory.limit_in_bytes", str(64 << 20))
        except OSError as exc:
            logger.info("cgroups are not usable here (%s); sandboxes get rlimits", exc)
            found.remove(probe)
            return None
        if "cpu" in bases:
            try:
                found._write(probe, "cpu", "cpu.cfs_period_us", "100000")
            except OSError:
                del found.bases["cpu"]
        found.remove(probe)
        return found

    def _dir(self, sandbox_id: str, controller: str) -> Path:
        return self.bases[controller] / sandbox_id

    def _make_dirs(self, sandbox_id: str) -> None:
        for controller in self.bases:
            self._dir(sandbox_id, controller).mkdir(parents=True, exist_ok=True)

    def _write(self, sandbox_id: str, controller: str, name: str, value: str) -> None:
        with open(self._dir(sandbox_id, controller) / name, "w") as f:
            f.write(value)

    def make(self, sandbox_id: str, limits: SandboxLimits) -> None:
        """The sandbox's cgroups, with its limits (raises ``OSError``)."""
        self._make_dirs(sandbox_id)
        self._write(sandbox_id, "memory", "memory.limit_in_bytes", str(limits.memory_bytes))
        with contextlib.suppress(OSError):  # only with swap accounting
            self._write(
                sandbox_id, "memory", "memory.memsw.limit_in_bytes", str(limits.memory_bytes)
            )
        self._write(sandbox_id, "pids", "pids.max", str(limits.processes))
        if "cpu" in self.bases:
            self._write(sandbox_id, "cpu", "cpu.cfs_period_us", "100000")
            self._write(sandbox_id, "cpu", "cpu.cfs_quota_us", str(limits.vcpu * 100000))
        self.count_oom_kills_from_now(sandbox_id)

    def attach(self, sandbox_id: str, pid: int) -> None:
        """Put ``pid`` (a box's pid 1, before anything runs in it) in the sandbox's cgroups."""
        for controller in self.bases:
            self._write(sandbox_id, controller, "cgroup.procs", str(pid))

    def oom_kills(self, sandbox_id: str) -> int:
        return oom_kill_count(self._dir(sandbox_id, "memory") / "memory.oom_control")

    def pids(self, sandbox_id: str) -> list[int]:
        try:
            text = (self._dir(sandbox_id, "pids") / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def remove(self, sandbox_id: str, *, wait: float = 0.0) -> None:
        """Kill what is left in the sandbox's cgroups and remove them (waiting up to ``wait``
        seconds for the killed to be gone)."""
        self.kill_members(sandbox_id, wait=wait)
        for controller in self.bases:
            with contextlib.suppress(OSError):
                self._dir(sandbox_id, controller).rmdir()

    def leftovers(self) -> list[str]:
        """Sandbox ids that have a cgroup here (from this run or an earlier one)."""
        base = self.bases["pids"]
        try:
            return [entry.name for entry in base.iterdir() if entry.is_dir()]
        except OSError:
            return []

    def describe(self) -> dict[str, Any]:
        return {controller: str(path) for controller, path in self.bases.items()}
