"""The host uid of each sandbox (a root server with boxes): one per sandbox, from a range.

``STATE/uids.json`` records ``{sandbox id: uid}`` (written atomically: a temporary file
renamed over the old one), so a restart keeps every sandbox's uid. A sandbox that
has no entry (made by an older version, or by a server without boxes or root) runs as
``LEGACY_UID``. The range is ``HOPX_LOCAL_UID_RANGE=START-END`` (default
1,000,000-1,065,535: far above real users and ``nobody``).

Several servers on one machine (each with its own state directory) draw from the same
range: each uid taken is also claimed machine-wide by a file ``CLAIMS/<uid>`` naming the
state directory and the sandbox. A claim whose state directory no longer records that uid
for that sandbox (deleted, or a crash between the two writes) is stale and taken over; claims
are taken under an exclusive ``flock`` of ``CLAIMS/.lock``. A uid any host process still
runs as (the caller passes them, read from ``/proc``) is never given out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Collection, Iterator
from pathlib import Path

import attrs

from ..errors import ApiError

__all__ = ["CLAIMS", "LEGACY_UID", "UIDS_FILE", "UID_RANGE_ENV", "SandboxUids", "UidRange"]

logger = logging.getLogger("hopx_async.local")

#: ``START-END`` (inclusive): the host uids sandboxes get.
UID_RANGE_ENV = "HOPX_LOCAL_UID_RANGE"
#: The uid of a sandbox that has none of its own (``nobody``).
LEGACY_UID = 65534
#: The record's name in the state directory.
UIDS_FILE = "uids.json"
#: The machine-wide claims (root only).
CLAIMS = Path("/run/hopx-local/uids")
_LOWEST = 65536  # above every 16-bit id: never root, nobody, nor a usual account
_HIGHEST = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


@attrs.frozen
class UidRange:
    """The inclusive range ``start``-``end`` of host uids given to sandboxes."""

    start: int = 1_000_000
    end: int = 1_065_535

    @classmethod
    def from_env(cls) -> UidRange:
        """``HOPX_LOCAL_UID_RANGE`` (``START-END``), or the default; ``ValueError`` naming
        the variable when it is malformed."""
        raw = os.environ.get(UID_RANGE_ENV, "").strip()
        if not raw:
            return cls()
        start, dash, end = raw.partition("-")
        if not (dash and start.strip().isdigit() and end.strip().isdigit()):
            raise ValueError(f"{UID_RANGE_ENV} must be START-END (two uids), not {raw!r}")
        found = cls(int(start), int(end))
        if not _LOWEST <= found.start <= found.end <= _HIGHEST:
            raise ValueError(
                f"{UID_RANGE_ENV}={raw!r}: need {_LOWEST} <= START <= END <= {_HIGHEST}"
            )
        return found

    @property
    def size(self) -> int:
        return self.end - self.start + 1


class SandboxUids:
    """The uids of one state directory's sandboxes, and their claims on the machine."""

    def __init__(self, root: Path, uid_range: UidRange, claims: Path = CLAIMS) -> None:
        self.root = root
        self.path = root / UIDS_FILE
        self.range = uid_range
        self.claims = claims
        self._uids: dict[str, int] = {}
        self._cursor = uid_range.start  # the next one tried: freed uids come back last
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        self._uids, cursor = _read(self.path)
        if cursor is not None and self.range.start <= cursor <= self.range.end:
            self._cursor = cursor

    def of(self, sandbox_id: str) -> int | None:
        """The sandbox's own uid, or None (it runs as ``LEGACY_UID``)."""
        self._load()
        return self._uids.get(sandbox_id)

    def reclaim(self, busy: Collection[int]) -> None:
        """At start: claim every recorded uid again; a sandbox whose uid another state
        directory holds now gets a new one."""
        self._load()
        with self._locked():
            records: dict[str, dict[str, int]] = {}
            lost = [sid for sid, uid in self._uids.items() if not self._claim(uid, sid, records)]
            for sandbox_id in lost:
                old = self._uids.pop(sandbox_id)
                uid = self._pick(sandbox_id, busy)
                logger.warning(
                    "uid %d of %s is another server's now: it gets %d", old, sandbox_id, uid
                )
        if lost:
            self._save()

    def assign(self, sandbox_id: str, busy: Collection[int]) -> int:
        """A uid of its own for a new sandbox: none another sandbox (here or of another
        state directory) has, nor one in ``busy`` (uids host processes run as)."""
        self._load()
        if sandbox_id in self._uids:
            return self._uids[sandbox_id]
        try:
            with self._locked():
                uid = self._pick(sandbox_id, busy)
            self._save()
        except OSError as exc:
            self._uids.pop(sandbox_id, None)
            raise ApiError(
                503,
                "SERVICE_UNAVAILABLE",
                f"no host uid could be recorded for a new sandbox ({self.claims},"
                f" {self.path}): {exc.strerror or exc}",
            ) from None
        return uid

    def _pick(self, sandbox_id: str, busy: Collection[int]) -> int:
        taken = set(self._uids.values())
        records: dict[str, dict[str, int]] = {}  # other state dirs' uids, read once
        for step in range(self.range.size):
            uid = self.range.start + (self._cursor - self.range.start + step) % self.range.size
            if uid in taken or uid in busy or not self._claim(uid, sandbox_id, records):
                continue
            self._uids[sandbox_id] = uid
            self._cursor = self.range.start + (uid - self.range.start + 1) % self.range.size
            return uid
        raise ApiError(
            503,
            "SERVICE_UNAVAILABLE",
            f"no free host uid for a new sandbox in {self.range.start}-{self.range.end}"
            f" ({UID_RANGE_ENV}); delete sandboxes or widen the range",
        )

    def free(self, sandbox_id: str) -> None:
        """The sandbox is gone: its uid may be given out again (once nothing runs as it)."""
        self._load()
        uid = self._uids.pop(sandbox_id, None)
        if uid is None:
            return
        self._save()
        with self._locked():
            if self._holder(uid) == (str(self.root), sandbox_id):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.claims / str(uid))

    def keep_only(self, sandbox_ids: Collection[str]) -> None:
        """Free the uids of sandboxes that have no record (a crash between the writes)."""
        self._load()
        for sandbox_id in [sid for sid in self._uids if sid not in sandbox_ids]:
            self.free(sandbox_id)

    # -- the file and the claims ------------------------------------------------------------

    def _save(self) -> None:
        data = json.dumps({"uids": self._uids, "next": self._cursor}, sort_keys=True)
        temp = self.path.with_name(f".{UIDS_FILE}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:  # no fsync: as durable as the store's commits
                f.write(data)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.claims.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.claims / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _held(self, holder: tuple[str, str], uid: int, records: dict[str, dict[str, int]]) -> bool:
        """Whether the claim's state directory still records ``uid`` for its sandbox."""
        state, sandbox_id = holder
        if state == str(self.root):
            return self._uids.get(sandbox_id) == uid
        if state not in records:
            records[state] = _read(Path(state) / UIDS_FILE)[0]
        return records[state].get(sandbox_id) == uid

    def _holder(self, uid: int) -> tuple[str, str] | None:
        try:
            claim = json.loads((self.claims / str(uid)).read_text())
            return str(claim["state"]), str(claim["sandbox"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _claim(self, uid: int, sandbox_id: str, records: dict[str, dict[str, int]]) -> bool:
        """Claim ``uid`` for ``sandbox_id`` (under the lock): False when another sandbox
        still holds it. ``records``: the state directories' uids read so far."""
        ours = (str(self.root), sandbox_id)
        holder = self._holder(uid)
        if holder is not None and holder != ours and self._held(holder, uid, records):
            return False
        if holder != ours:
            temp = self.claims / f".{uid}.{secrets.token_hex(4)}"
            temp.write_text(json.dumps({"state": ours[0], "sandbox": ours[1]}))
            os.replace(temp, self.claims / str(uid))
        return True


def _read(path: Path) -> tuple[dict[str, int], int | None]:
    """The uids recorded at ``path`` and the next one to try (nothing when it is missing or
    unreadable)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        logger.warning("%s is unreadable (%s): its sandboxes run as %d", path, exc, LEGACY_UID)
        return {}, None
    if not isinstance(data, dict) or not isinstance(data.get("uids"), dict):
        return {}, None
    uids = {str(k): v for k, v in data["uids"].items() if type(v) is int}
    cursor = data.get("next")
    return uids, cursor if type(cursor) is int else None
