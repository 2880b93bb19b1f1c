"""What the sandboxes' cgroups do alike on v1 and v2: count OOM kills once each, and kill
what is left in a sandbox's cgroup before it is removed."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

__all__ = ["CgroupBase", "oom_kill_count"]


def oom_kill_count(path: Path) -> int:
    """The ``oom_kill N`` line of ``memory.oom_control`` (v1) or ``memory.events`` (v2)."""
    try:
        text = path.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


class CgroupBase:
    """The shared part; a subclass says where a sandbox's OOM count and processes are."""

    def __init__(self) -> None:
        self._oom_counted: dict[str, int] = {}

    def oom_kills(self, sandbox_id: str) -> int:
        raise NotImplementedError

    def pids(self, sandbox_id: str) -> list[int]:
        raise NotImplementedError

    def count_oom_kills_from_now(self, sandbox_id: str) -> None:
        """Kills before now are not the sandbox's (a reused cgroup)."""
        self._oom_counted[sandbox_id] = self.oom_kills(sandbox_id)

    def took_oom_kill(self, sandbox_id: str) -> bool:
        """Whether the OOM killer ended a process of the sandbox not accounted for yet (each
        kill is accounted for once)."""
        counted = self._oom_counted.get(sandbox_id, 0)
        if self.oom_kills(sandbox_id) > counted:
            self._oom_counted[sandbox_id] = counted + 1
            return True
        return False

    def kill_members(self, sandbox_id: str, *, wait: float = 0.0) -> None:
        """SIGKILL every process in the sandbox's cgroup, waiting up to ``wait`` seconds for
        them to be gone; its OOM accounting is forgotten."""
        deadline = time.monotonic() + wait
        while True:
            pids = self.pids(sandbox_id)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not pids or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        self._oom_counted.pop(sandbox_id, None)
