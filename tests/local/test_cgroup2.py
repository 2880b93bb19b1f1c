"""Cgroup v2 delegation (``runtime/cgroup2.py``).

This machine is a cgroup v1 hybrid whose unified mount has no controllers, so the kernel
cannot be asked to delegate here: these tests give the code a directory laid out like a
unified hierarchy (the files the kernel would show) and read back what it wrote. What the
real machine shows is tested too: its empty unified mount is not taken as usable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hopx_async.local.runtime.cgroup2 import CgroupsV2, unified_mount
from hopx_async.local.runtime.limits import SandboxLimits


def _hierarchy(tmp_path: Path, own: str, procs: list[int], controllers: str) -> Path:
    mount = tmp_path / "unified"
    here = mount / own.lstrip("/")
    here.mkdir(parents=True)
    (here / "cgroup.controllers").write_text(controllers + "\n")
    (here / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in procs))
    (tmp_path / "cgroup").write_text(f"0::{own}\n")
    return mount


def test_the_unified_mount_is_found_in_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n"
    )
    assert unified_mount(info) == Path("/sys/fs/cgroup/unified")
    info.write_text("22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n")
    assert unified_mount(info) is None


def test_a_hierarchy_without_memory_and_pids_is_not_used(tmp_path: Path) -> None:
    mount = _hierarchy(tmp_path, "/", [os.getpid()], "cpuset cpu io")
    assert CgroupsV2.detect(mount=mount, cgroup_file=tmp_path / "cgroup") is None
    assert not (mount / "hopx-local").exists()


def test_the_server_moves_itself_out_before_delegating(tmp_path: Path) -> None:
    """Not in the root cgroup: the server and its children go to a child cgroup first
    (the no-internal-process rule), then the controllers are enabled down to hopx-local."""
    me, child = os.getpid(), 424242
    mount = _hierarchy(tmp_path, "/user.slice/session-1", [me, child], "cpu io memory pids")
    found = CgroupsV2.detect(mount=mount, cgroup_file=tmp_path / "cgroup", ours={me, child})
    assert found is not None
    here = mount / "user.slice/session-1"
    # the fake file keeps the last write; the kernel moves one pid per write
    assert (here / "hopx-local-server" / "cgroup.procs").read_text() in (str(me), str(child))
    assert (here / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (here / "hopx-local" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert found.parent == here / "hopx-local"
    assert set(found.bases) == {"cpu", "memory", "pids"}


def test_nothing_is_moved_when_another_program_shares_the_cgroup(tmp_path: Path) -> None:
    me = os.getpid()
    mount = _hierarchy(tmp_path, "/user.slice/session-1", [me, 1], "memory pids")
    assert CgroupsV2.detect(mount=mount, cgroup_file=tmp_path / "cgroup", ours={me}) is None
    here = mount / "user.slice/session-1"
    assert not (here / "hopx-local-server").exists()
    assert not (here / "cgroup.subtree_control").exists()


def test_in_the_root_cgroup_nothing_is_moved(tmp_path: Path) -> None:
    me = os.getpid()
    mount = _hierarchy(tmp_path, "/", [me, 1], "memory pids")
    found = CgroupsV2.detect(mount=mount, cgroup_file=tmp_path / "cgroup", ours={me})
    assert found is not None
    assert not (mount / "hopx-local-server").exists()
    assert (mount / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert "cpu" not in found.bases


def test_a_sandbox_gets_its_template_limits_and_its_oom_kills_are_counted(
    tmp_path: Path,
) -> None:
    me = os.getpid()
    mount = _hierarchy(tmp_path, "/", [me], "cpu memory pids")
    found = CgroupsV2.detect(mount=mount, cgroup_file=tmp_path / "cgroup", ours={me})
    assert found is not None
    limits = SandboxLimits(vcpu=2, memory_mb=256, disk_gb=1, processes=100)
    found.make("sbx1", limits)
    group = found.parent / "sbx1"
    assert (group / "memory.max").read_text() == str(256 << 20)
    assert (group / "pids.max").read_text() == "100"
    assert (group / "cpu.max").read_text() == "200000 100000"
    found.attach("sbx1", 4242)
    assert (group / "cgroup.procs").read_text() == "4242"
    assert "sbx1" in found.leftovers()  # (the fake keeps the probe: rmdir needs the kernel)
    assert not found.took_oom_kill("sbx1")
    (group / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert found.took_oom_kill("sbx1")
    assert not found.took_oom_kill("sbx1"), "one kill is accounted for once"
    (group / "cgroup.procs").write_text("")
    found.remove("sbx1")
    assert (group / "cgroup.kill").read_text() == "1"  # the kernel ends everything in it


def test_this_machines_unified_mount_is_taken_only_with_its_controllers() -> None:
    mount = unified_mount()
    if mount is None:
        pytest.skip("no cgroup2 mount on this machine")
    try:
        controllers = (mount / "cgroup.controllers").read_text().split()
    except OSError:
        pytest.skip("the cgroup2 mount has no cgroup.controllers")
    if {"memory", "pids"} <= set(controllers):
        pytest.skip("a real cgroup v2 machine: detecting would move this test process")
    assert CgroupsV2.detect() is None  # a hybrid's empty unified mount is not usable
