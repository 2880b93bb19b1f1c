"""The one reader of ``/proc`` (Linux): process states, parents, groups, sessions, start times.

Everything here is a plain read with no state; a process that vanishes between two reads is
simply absent from the answer.
"""

from __future__ import annotations

import os
import pwd
import shlex

import attrs

__all__ = [
    "ProcStat",
    "all_stats",
    "command_line",
    "descendants",
    "host_uids",
    "owner",
    "pids_by_env",
    "read_stat",
]


@attrs.frozen
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the backend uses."""

    pid: int
    #: The one-letter state (``R``, ``S``, ``T``, ``Z``, ...).
    state: str
    ppid: int
    pgid: int
    session: int
    #: Start time in clock ticks since boot: with ``pid``, identifies a process for good.
    start_ticks: str
    #: The executable's name, as in the parentheses of the stat line.
    comm: str

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """The stat of ``pid``, or None when it does not exist (or ``/proc`` is absent)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    head, _, tail = raw.rpartition(")")
    fields = tail.split()
    # fields[0] is field 3 of proc(5) (state); ppid 4, pgrp 5, session 6, starttime 22.
    if len(fields) < 20:
        return None
    try:
        return ProcStat(
            pid=pid,
            state=fields[0],
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            session=int(fields[3]),
            start_ticks=fields[19],
            comm=head.partition("(")[2],
        )
    except ValueError:
        return None


def all_stats() -> list[ProcStat]:
    """The stat of every visible process."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                found.append(stat)
    return found


def descendants(roots: set[int], stats: list[ProcStat] | None = None) -> list[ProcStat]:
    """Every process below ``roots`` in the parent tree (the roots included)."""
    stats = all_stats() if stats is None else stats
    children: dict[int, list[ProcStat]] = {}
    by_pid: dict[int, ProcStat] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
        by_pid[stat.pid] = stat
    found = [by_pid[pid] for pid in roots if pid in by_pid]
    todo = list(roots)
    seen = set(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
                todo.append(child.pid)
    return found


def command_line(stat: ProcStat) -> str:
    """The command line of a process, shell-quoted (its name when it has none)."""
    try:
        with open(f"/proc/{stat.pid}/cmdline", "rb") as f:
            argv = [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        argv = []
    return shlex.join(argv) if argv else stat.comm


def owner(pid: int) -> str:
    """The user name owning ``pid`` (the numeric uid when it has no name)."""
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def pids_by_env(name: str, values: set[str]) -> dict[str, list[int]]:
    """Live processes whose initial environment has ``name`` set to one of ``values``."""
    found: dict[str, list[int]] = {}
    if not values:
        return found
    prefix = name.encode() + b"="
    for stat in all_stats():
        if stat.zombie:
            continue
        try:
            with open(f"/proc/{stat.pid}/environ", "rb") as f:
                entries = f.read().split(b"\0")
        except OSError:
            continue
        for entry in entries:
            if entry.startswith(prefix):
                value = entry[len(prefix) :].decode("utf-8", "replace")
                if value in values:
                    found.setdefault(value, []).append(stat.pid)
                break
    return found


def host_uids() -> set[int]:
    """Every uid a live process runs as (real, effective, saved or filesystem)."""
    found: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith(b"Uid:"):
                found.update(int(field) for field in line.split()[1:])
                break
    return found
