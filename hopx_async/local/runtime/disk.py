"""A sandbox's ``/workspace`` bounded by its template's ``disk_gb``.

Where the server is root and the machine has loop devices (``/dev/loop-control``) and
``mkfs.ext4``, each sandbox's workspace is a sparse ext4 image in its state directory
(``workspace.img``), loop-mounted ``nosuid,nodev`` on the workspace directory: a write past
the bound fails with ENOSPC in the sandbox and through the files API alike, and at most the
bound lands on the host disk. The image's root gets the owner and mode of the directory it
covers; it is mounted at create (or when a restart finds it unmounted), unmounted at deletion
and at stop, and a restart unmounts what a crash left mounted of sandboxes that are gone.

Elsewhere (or with ``HOPX_LOCAL_WORKSPACE_IMAGE=off``) a usage check stands in: before a files
API write or upload, the workspace's allocated blocks are summed (at most ``SCAN_ENTRIES``
entries, so the check's cost is bounded) and a write that would pass the bound fails with
ENOSPC. It does not bound what sandboxed code writes itself, nor a tree larger than the scan.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..state.layout import Layout

__all__ = ["IMAGE_ENV", "SCAN_ENTRIES", "WorkspaceDisks", "mounts_under", "usage"]

logger = logging.getLogger("hopx_async.local")

#: ``off``: no image, the usage check only; ``on`` or unset: an image where the machine allows.
IMAGE_ENV = "HOPX_LOCAL_WORKSPACE_IMAGE"
#: The usage check reads at most this many directory entries of a workspace.
SCAN_ENTRIES = 100_000
_MNT_DETACH = 2
_MS_NOSUID, _MS_NODEV, _MS_NOATIME = 2, 4, 1024
_LOOP_CTL_GET_FREE, _LOOP_CONFIGURE, _LO_FLAGS_AUTOCLEAR = 0x4C82, 0x4C0A, 4
#: ``struct loop_config``: fd, block size, ``struct loop_info64``, reserved.
_LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q8Q")
#: The size of the image made at start to see that images work here.
_PROBE_BYTES = 8 << 20
#: The room on the host disk below which no image is made (its file system needs some).
_HOST_ROOM = 8 << 20
#: Images mounted (at a start) or unmounted (at a stop) at once.
_WORKERS = 4
#: No reserved blocks, lazy inode tables and journal, no room for growing the file system
#: (``resize_inode``: it is never grown, and leaving it out halves the time and the blocks),
#: read-only after an I/O error (the host disk filled under the sparse image) whatever the
#: machine's ``mke2fs.conf`` says.
_MKFS = (
    "-q",
    "-F",
    "-m",
    "0",
    "-e",
    "remount-ro",
    "-O",
    "^resize_inode",
    "-E",
    "lazy_itable_init=1,lazy_journal_init=1",
)


def _image_switch() -> bool:
    raw = os.environ.get(IMAGE_ENV, "").strip().lower()
    if raw in ("", "on", "1", "true", "yes"):
        return True
    if raw in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{IMAGE_ENV} must be 'on' or 'off', not {raw!r}")


def _unescape(field: str) -> str:
    """A path of ``/proc/self/mountinfo`` (spaces and the like are octal escapes there)."""
    if "\\" not in field:
        return field
    return field.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def mounts_under(root: Path) -> list[Path]:
    """The mount points below ``root`` (from ``/proc/self/mountinfo``), deepest first."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    prefix = str(root).rstrip("/") + "/"
    found = {_unescape(line.split()[4]) for line in lines if len(line.split()) > 4}
    return sorted((Path(p) for p in found if p.startswith(prefix)), key=lambda p: -len(p.parts))


def usage(root: Path, limit: int = SCAN_ENTRIES) -> int:
    """Bytes allocated under ``root`` (no link followed, no recursion), over at most ``limit``
    entries."""
    total, seen, stack = 0, 0, [str(root)]
    while stack and seen < limit:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if stat.S_ISDIR(info.st_mode):
                        stack.append(entry.path)
                    if seen >= limit:
                        break
        except OSError:
            continue
    return total


def _loop_mount(image: Path, workspace: Path) -> None:
    """Attach ``image`` to a free loop device (``LOOP_CONFIGURE``, detached by the kernel when
    unmounted) and mount it ``nosuid,nodev,noatime`` on ``workspace``: what ``mount -o loop``
    does, without its process (raises ``OSError``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(16):  # another program may take the free device first
            number = fcntl.ioctl(control, _LOOP_CTL_GET_FREE)
            device = f"/dev/loop{number}"
            fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                zeros = (0,) * 8
                config = _LOOP_CONFIG.pack(
                    backing, 0, 0, 0, 0, 0, 0, number, 0, 0, _LO_FLAGS_AUTOCLEAR,
                    os.fsencode(image)[-63:], b"", b"", 0, 0, *zeros,
                )  # fmt: skip
                try:
                    fcntl.ioctl(fd, _LOOP_CONFIGURE, config)
                except OSError as exc:
                    if exc.errno == errno.EBUSY:
                        continue
                    raise
                flags = _MS_NOSUID | _MS_NODEV | _MS_NOATIME
                if libc.mount(device.encode(), os.fsencode(workspace), b"ext4", flags, None):
                    err = ctypes.get_errno()
                    raise OSError(err, os.strerror(err), str(workspace))
                return
            finally:
                os.close(fd)  # the mount holds the device now (or, failed, it is detached)
        raise OSError(errno.EBUSY, "no free loop device")
    finally:
        os.close(backing)
        os.close(control)


def _umount(path: Path) -> None:
    """Detach the mount on ``path`` (lazily: a box still holding it keeps it till it ends)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # not a mount point (any more)
            raise OSError(err, os.strerror(err), str(path))


class WorkspaceDisks:
    """The workspaces' bound: an image per sandbox, or the usage check where there is none."""

    def __init__(self, layout: Layout, limit_bytes: int, *, images: bool) -> None:
        self.layout = layout
        self.limit_bytes = limit_bytes
        #: whether new sandboxes get an image
        self.images = images
        self._mounted: set[str] = set()

    def enforced(self) -> dict[str, object]:
        """The bound as ``/health`` advertises it: held by a loop-mounted image (for all
        writes) or by the files API's usage check (for its own writes only)."""
        return {"value": self.limit_bytes >> 20, "by": "image" if self.images else "usage_check"}

    @classmethod
    def detect(cls, layout: Layout, limit_bytes: int) -> WorkspaceDisks:
        """Images where they work here and are not switched off (raises ``ValueError`` on a
        bad switch)."""
        wanted = _image_switch()
        missing = [
            what
            for what, ok in (
                ("root", os.geteuid() == 0),
                ("/dev/loop-control", os.path.exists("/dev/loop-control")),
                ("mkfs.ext4", shutil.which("mkfs.ext4") is not None),
                ("mount", shutil.which("mount") is not None),
            )
            if not ok
        ]
        if wanted and missing:
            logger.info(
                "workspaces are bounded by a usage check of the files API only (no %s)",
                ", ".join(missing),
            )
        found = cls(layout, limit_bytes, images=wanted and not missing)
        if found.images and (failure := found.probe()):
            logger.warning(
                "workspace images do not work here (%s); workspaces are bounded by a usage "
                "check of the files API only",
                failure,
            )
            found.images = False
        return found

    def probe(self) -> str | None:
        """Make, mount and unmount a small image in the state directory: why it failed, or
        None."""
        where = Path(tempfile.mkdtemp(prefix=".disk-probe-", dir=self.layout.root))
        image, mount = where / "probe.img", where / "mount"
        try:
            mount.mkdir()
            self._make(image, _PROBE_BYTES)
            self._mount(image, mount)
            _umount(mount)
        except OSError as exc:
            return str(exc)
        finally:
            with contextlib.suppress(OSError):
                _umount(mount)
            shutil.rmtree(where, ignore_errors=True)
        return None

    @property
    def mechanism(self) -> str:
        return "image" if self.images else "usage-check"

    def image(self, sandbox_id: str) -> Path:
        return self.layout.workspace_image(sandbox_id)

    def is_mounted(self, sandbox_id: str) -> bool:
        return sandbox_id in self._mounted

    def attach(self, sandbox_id: str, *, new: bool, mounted: set[Path] | None = None) -> None:
        """Mount the sandbox's image on its workspace: made first for a ``new`` sandbox (when
        images are on), mounted again when one exists and is not in ``mounted`` (the mount
        points, read here when not given; raises ``OSError``)."""
        image = self.image(sandbox_id)
        workspace = self.layout.workspace(sandbox_id)
        if new and self.images:
            self._make(image)
        elif not image.exists():
            return  # an unbounded workspace of an earlier run: the usage check holds it
        if mounted is None:
            mounted = set(mounts_under(workspace.parent))
        if workspace in mounted:  # still mounted: the last run ended without its stop
            self._mounted.add(sandbox_id)
            return
        if os.geteuid() != 0:
            logger.warning("sandbox %s has a workspace image but the server is not root", image)
            return
        info = workspace.stat()
        self._mount(image, workspace)
        self._mounted.add(sandbox_id)
        try:
            os.chown(workspace, info.st_uid, info.st_gid)
            os.chmod(workspace, stat.S_IMODE(info.st_mode))
            lost = workspace / "lost+found"
            if lost.is_dir() and not os.listdir(lost):
                lost.rmdir()
        except OSError:
            self.detach(sandbox_id)
            raise

    def _make(self, image: Path, size: int | None = None) -> None:
        room = os.statvfs(image.parent)
        if room.f_bavail * room.f_frsize < _HOST_ROOM:  # mkfs would fail, less clearly
            raise OSError(errno.ENOSPC, "no space left on the host disk for a workspace")
        fd = os.open(image, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, self.limit_bytes if size is None else size)
        finally:
            os.close(fd)
        self._run(["mkfs.ext4", *_MKFS, str(image)], image)

    def _mount(self, image: Path, workspace: Path) -> None:
        try:
            _loop_mount(image, workspace)
            return
        except OSError as exc:  # an older kernel, or no /dev/loopN nodes: mount(8) does it
            logger.debug("loop mount by ioctl failed (%s); using mount(8)", exc)
        options = "loop,nosuid,nodev,noatime"
        self._run(["mount", "-t", "ext4", "-o", options, str(image), str(workspace)], image)

    @staticmethod
    def _run(argv: list[str], image: Path) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            raise OSError(errno.EIO, f"{argv[0]} failed for {image.name}: {why}")

    def detach(self, sandbox_id: str) -> None:
        """Unmount the sandbox's image (the image stays; its deletion removes it)."""
        self._mounted.discard(sandbox_id)
        _umount(self.layout.workspace(sandbox_id))  # not a mount point: nothing done

    def recover(self, keep: set[str]) -> None:
        """At start: unmount the mounts a crash left under the sandboxes of the state directory
        that are gone (their directories are swept next), and mount the images of ``keep``."""
        sandboxes = self.layout.root / "sandboxes"
        mounts = mounts_under(sandboxes)
        for mount in mounts:
            owner = mount.relative_to(sandboxes).parts[0]
            if owner not in keep:
                try:
                    _umount(mount)
                    logger.info("unmounted %s, left by a sandbox that is gone", mount)
                except OSError as exc:
                    logger.warning("could not unmount %s: %s", mount, exc.strerror)
        mounted = set(mounts)

        def attach(sandbox_id: str) -> None:
            try:
                self.attach(sandbox_id, new=False, mounted=mounted)
            except OSError as exc:
                logger.warning("could not mount the workspace of %s: %s", sandbox_id, exc)

        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="hopx-mount") as pool:
            list(pool.map(attach, sorted(keep)))

    def close(self) -> None:
        """At stop: unmount every workspace image (they are mounted again at the next start)."""

        def detach(sandbox_id: str) -> None:
            try:
                self.detach(sandbox_id)
            except OSError as exc:
                logger.warning("could not unmount the workspace of %s: %s", sandbox_id, exc)

        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="hopx-umount") as pool:
            list(pool.map(detach, sorted(self._mounted)))

    def has_image(self, sandbox_id: str) -> bool:
        """Whether the workspace is its mounted image (whose file system holds the bound)."""
        return sandbox_id in self._mounted

    def check_room(self, sandbox_id: str, size: int) -> None:
        """Before a files API write of ``size`` bytes: ENOSPC when a workspace without an image
        would pass the bound (an image needs no check: its file system says ENOSPC)."""
        if self.has_image(sandbox_id):
            return
        used = usage(self.layout.workspace(sandbox_id))
        if used + size > self.limit_bytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
