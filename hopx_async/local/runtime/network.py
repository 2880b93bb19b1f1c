"""The network of a sandbox's box: the host's (``host``) or a namespace of its own with
user-mode networking (``user``).

In ``user`` mode every box gets its own network namespace. A sandbox without internet access
keeps it empty (only loopback). For one with internet access the host attaches
``slirp4netns`` to the box's namespace once its pid 1 is up and waits for its ready signal
before anything runs in the box: the box then has ``tap0`` (10.0.2.100, gateway 10.0.2.2,
DNS 10.0.2.3) and reaches the outside through the host's sockets, but neither the host's
loopback (``--disable-host-loopback``) nor another sandbox's abstract Unix sockets (they are
per network namespace). ``slirp4netns`` runs beside untrusted packets: a root server runs it
with ``--enable-sandbox --enable-seccomp``, an unprivileged one with ``--enable-seccomp``
(its sandbox needs root in the caller's user namespace). It ends with its box (its exit
descriptor is held by the server, so also when the server dies) and carries the box's tag.

``HOPX_LOCAL_NETWORK`` chooses: ``auto`` (default: ``user`` where it works here, else
``host``), ``user`` (fail to start without it), ``host`` (the host's network namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Literal

import attrs

from .spawner_client import SpawnArgs
from .supervisor import Running, Supervisor

__all__ = [
    "GATEWAY",
    "NETWORK_ENV",
    "Attachment",
    "Network",
    "NetworkMode",
    "last_line",
    "resolv_conf_for",
]

#: Environment variable that chooses the network mode: ``auto``, ``user`` or ``host``.
NETWORK_ENV = "HOPX_LOCAL_NETWORK"
NetworkMode = Literal["auto", "user", "host"]
#: The host as a box sees it in ``user`` mode (its loopback is not reachable through it).
GATEWAY = "10.0.2.2"
#: The resolver ``slirp4netns`` offers the box (it forwards to the host's).
_DNS = "10.0.2.3"
#: Seconds ``slirp4netns`` has to say it is ready.
READY_TIMEOUT = 10.0
_NS_GET_USERNS = 0xB701  # ioctl: the user namespace that owns a namespace


def resolv_conf_for(text: str) -> str | None:
    """The resolv.conf a ``user`` box needs instead of the host's ``text``: None when the
    host's nameservers are reachable from the box (there are some, none on its loopback)."""
    servers = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    try:
        if servers and not any(ipaddress.ip_address(s.split("%")[0]).is_loopback for s in servers):
            return None
    except ValueError:
        return None  # not ours to fix
    kept = [line for line in text.splitlines() if not line.startswith("nameserver")]
    return "\n".join([f"nameserver {_DNS}", *kept]) + "\n"


@attrs.frozen
class Network:
    """How boxes get their network: ``mode`` and, in ``user`` mode, the tool's path."""

    mode: Literal["user", "host"]
    tool: str | None = None
    #: Why ``auto`` gave ``host`` (empty otherwise).
    reason: str = ""

    @classmethod
    def detect(cls, *, boxed: bool) -> Network:
        """The mode ``HOPX_LOCAL_NETWORK`` asks for (``ValueError`` on a bad value,
        ``RuntimeError`` when ``user`` is asked for and cannot be had)."""
        mode = os.environ.get(NETWORK_ENV, "").strip().lower() or "auto"
        if mode not in ("auto", "user", "host"):
            raise ValueError(f"{NETWORK_ENV} must be auto, user or host, not {mode!r}")
        if mode == "host":
            return cls("host", reason="the host's network was asked for")
        tool = shutil.which("slirp4netns")
        reason = ""
        if not boxed:
            reason = "user-mode networking needs a bubblewrap box"
        elif not sys.platform.startswith("linux"):
            reason = "user-mode networking needs Linux"
        elif tool is None:
            reason = "no slirp4netns found (install the slirp4netns package)"
        elif os.geteuid() != 0 and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
            reason = "/dev/net/tun is not usable by this user (slirp4netns needs it)"
        if reason:
            if mode == "user":
                raise RuntimeError(f"{NETWORK_ENV}=user was required but {reason}")
            return cls("host", reason=reason)
        return cls("user", tool=tool)

    @property
    def user(self) -> bool:
        return self.mode == "user"

    def advert(self) -> dict[str, Any]:
        """The network mode as ``/health`` advertises it (beside the limits)."""
        return {"value": self.mode, "by": "slirp4netns" if self.user else None}

    def resolv_conf(self) -> str | None:
        """What a ``user`` box's /etc/resolv.conf must say (None: the host's file will do)."""
        path = Path("/etc/resolv.conf")
        if not self.user or path.is_symlink():
            return None
        try:
            return resolv_conf_for(path.read_text(errors="replace"))
        except OSError:
            return None

    async def attach(
        self, supervisor: Supervisor, init_pid: int, env: dict[str, str], log: Path
    ) -> Attachment:
        """Give the network namespace of the box whose pid 1 is ``init_pid`` a way out;
        returns once ``slirp4netns`` is ready (``OSError`` with its reason otherwise)."""
        assert self.tool is not None
        netns = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        owner = ready_r = ready_w = exit_r = exit_w = -1
        try:
            argv = [self.tool, "--configure", "--mtu=65520", "--disable-host-loopback"]
            if os.geteuid() == 0:
                argv.append("--enable-sandbox")
            argv.append("--enable-seccomp")
            with contextlib.suppress(OSError):  # before Linux 4.9: no such ioctl
                owner = fcntl.ioctl(netns, _NS_GET_USERNS)
            if owner >= 0 and os.fstat(owner).st_ino != os.stat("/proc/self/ns/user").st_ino:
                # An unprivileged server's box: bwrap nests a second user namespace for the
                # code; the network namespace belongs to the first, which slirp4netns joins.
                argv.append(f"--userns-path=/proc/self/fd/{owner}")
            ready_r, ready_w = os.pipe()
            exit_r, exit_w = os.pipe()
            argv += [f"--ready-fd={ready_w}", f"--exit-fd={exit_r}"]
            argv += ["--netns-type=path", f"/proc/self/fd/{netns}", "tap0"]
            running = await supervisor.spawn(
                SpawnArgs(
                    argv, Path("/"), env, Path(os.devnull), log,
                    pass_fds=tuple(fd for fd in (netns, owner, ready_w, exit_r) if fd >= 0),
                )
            )  # fmt: skip
        except BaseException:
            for fd in (ready_r, exit_w):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in (netns, owner, ready_w, exit_r):
                if fd >= 0:
                    os.close(fd)
        attachment = Attachment(running, exit_w)
        try:
            ok = await _ready(ready_r)
        except BaseException:  # cancelled: nothing is left running
            attachment.stop()
            raise
        finally:
            os.close(ready_r)
        if not ok:
            attachment.stop()
            raise OSError(errno.EIO, f"slirp4netns did not start: {last_line(log)}")
        return attachment


async def _ready(fd: int) -> bool:
    """Whether ``slirp4netns`` wrote its ready byte on ``fd`` in time (EOF: it exited)."""
    loop = asyncio.get_running_loop()
    said: asyncio.Future[bytes] = loop.create_future()

    def readable() -> None:
        if not said.done():
            try:
                said.set_result(os.read(fd, 1))
            except OSError:
                said.set_result(b"")

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(said, READY_TIMEOUT) == b"1"
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


def last_line(log: Path) -> str:
    """The last line of a helper's log that is not a warning (at most 300 characters): why it
    did not start."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if "WARNING" not in ln]
    except OSError:
        return "no reason given"
    lines = [ln for ln in lines if ln.strip()]
    return lines[-1][:300] if lines else "no reason given"


class Attachment:
    """A running ``slirp4netns`` of one box: it exits once ``stop`` closes its exit
    descriptor (or the server dies); ``stop`` also kills it if it is still there."""

    def __init__(self, running: Running, exit_fd: int) -> None:
        self.running = running
        self._exit_fd: int | None = exit_fd

    def stop(self) -> None:
        if self._exit_fd is not None:
            os.close(self._exit_fd)
            self._exit_fd = None
        child = self.running.child
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child.pid, signal.SIGKILL)
