"""Sandboxes: create, list, pause/resume, timeouts and expiry, env, delete.

Processes are the ``Processes`` part's business; a sandbox asks it to pause, resume or end
them. Records live in memory, the store is write-through persistence; a creation and a
deletion are committed before they are answered (a crash right after loses neither).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from typing import Any

from ..errors import ApiError, not_found
from ..runtime import fileops
from ..runtime.disk import WorkspaceDisks
from ..runtime.launch import Launcher
from ..state.layout import Layout
from ..state.records import SandboxRecord, new_id
from ..state.store import Store
from .processes import Processes

__all__ = ["Sandboxes"]

logger = logging.getLogger("hopx_async.local")


class Sandboxes:
    def __init__(
        self,
        *,
        layout: Layout,
        store: Store,
        launcher: Launcher,
        processes: Processes,
        disks: WorkspaceDisks,
    ) -> None:
        self.layout = layout
        self.store = store
        self.launcher = launcher
        self.processes = processes
        #: the workspaces' bound (an image each, or the files API's usage check)
        self.disks = disks
        self.records: dict[str, SandboxRecord] = {}
        self._deleting: set[str] = set()
        self._seq = 0
        self._reaper: asyncio.Task[None] | None = None

    def load(self) -> None:
        for sbx in self.store.sandboxes():
            self.records[sbx.id] = sbx
            self.launcher.prepare_sandbox(sbx.id)
            self._seq = max(self._seq, sbx.seq)
        self.launcher.sweep_leftovers(set(self.records))  # boxes a crash left running
        self.disks.recover(set(self.records))  # before the sweep: it must not enter a mount
        fileops.sweep(self.layout, set(self.records))  # what a crash or failed deletion left
        self.processes.load(self.records)

    def start_reaper(self) -> None:
        self._reaper = asyncio.ensure_future(self._reap_expired())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await self.processes.close()
        self.store.flush()
        await asyncio.to_thread(self.disks.close)

    async def _reap_expired(self) -> None:
        while True:
            now = time.time()
            for sbx in list(self.records.values()):
                if sbx.expires_at is not None and sbx.expires_at <= now:
                    logger.info("sandbox %s reached its timeout; deleting it", sbx.id)
                    try:
                        await self.delete(sbx.id, reason="the sandbox's timeout expired")
                    except ApiError:
                        pass  # deleted meanwhile
                    except Exception:
                        logger.exception("could not delete expired sandbox %s", sbx.id)
            await asyncio.sleep(0.25)

    def get(self, sandbox_id: str) -> SandboxRecord:
        sbx = self.records.get(sandbox_id)
        if sbx is None:
            raise not_found("sandbox", sandbox_id)
        return sbx

    async def create(
        self,
        *,
        template: dict[str, Any],
        region: str | None,
        timeout_seconds: int | None,
        internet_access: bool,
        env_vars: dict[str, str],
    ) -> SandboxRecord:
        now = time.time()
        self._seq += 1
        sbx = SandboxRecord(
            id=new_id("sbx"),
            seq=self._seq,
            template_name=template["name"],
            template_id=template["id"],
            region=region or "local",
            internet_access=internet_access,
            created_at=now,
            updated_at=now,
            timeout_seconds=timeout_seconds,
            expires_at=None if timeout_seconds is None else now + timeout_seconds,
            env_vars=dict(env_vars),
        )
        await self.launcher.assign_uid(sbx.id)
        self.launcher.prepare_sandbox(sbx.id)
        try:
            await asyncio.to_thread(self.disks.attach, sbx.id, new=True)
        except OSError as exc:
            await asyncio.to_thread(fileops.remove_all, self.layout.sandbox_dir(sbx.id))
            self.layout.forget(sbx.id)
            self.launcher.release_uid(sbx.id)
            logger.error("could not make the workspace of a new sandbox: %s", exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ApiError(507, "INSUFFICIENT_STORAGE", "no space left for a sandbox") from None
            raise ApiError(
                500, "INTERNAL_ERROR", "the sandbox's workspace could not be made"
            ) from None
        self.records[sbx.id] = sbx
        self.processes.add_sandbox(sbx.id)
        self.store.put_sandbox(sbx)
        await self.store.commit()  # durable before it is answered
        return sbx

    def page(
        self, *, limit: int, after_seq: int, status: str | None, region: str | None
    ) -> tuple[list[SandboxRecord], bool]:
        matching = [
            sbx
            for sbx in self.records.values()
            if sbx.seq > after_seq
            and (status is None or sbx.status == status)
            and (region is None or sbx.region == region)
        ]
        matching.sort(key=lambda s: s.seq)
        return matching[:limit], len(matching) > limit

    async def delete(self, sandbox_id: str, *, reason: str) -> None:
        sbx = self.get(sandbox_id)
        if sandbox_id in self._deleting:
            return
        self._deleting.add(sandbox_id)
        # from now on it reads as gone: a client that sees its processes end meanwhile
        # can tell that they ended with their sandbox
        sbx.status = "deleted"
        try:
            await self.processes.end_sandbox(sandbox_id)
            self.launcher.end_box(sandbox_id)  # also one a start made meanwhile
            self.records.pop(sandbox_id, None)
            self.store.delete_sandbox(sandbox_id)
            await self.store.commit()  # gone for good before its files go
            logger.info("sandbox %s deleted (%s)", sandbox_id, reason)
            await asyncio.to_thread(self._remove_files, sandbox_id)
            self.layout.forget(sandbox_id)
            self.launcher.release_uid(sandbox_id)
        finally:
            self._deleting.discard(sandbox_id)

    def _remove_files(self, sandbox_id: str) -> None:
        """The workspace unmounted, then the sandbox's directory (the image with it) removed;
        what fails is left for the next start's sweep."""
        try:
            self.disks.detach(sandbox_id)
        except OSError as exc:
            logger.warning("could not unmount the workspace of %s: %s", sandbox_id, exc)
            return
        fileops.remove_all(self.layout.sandbox_dir(sandbox_id))

    def pause(self, sandbox_id: str) -> SandboxRecord:
        sbx = self.get(sandbox_id)
        if sbx.status != "paused":
            self.processes.pause_sandbox(sandbox_id)
            sbx.status = "paused"
            self._touch(sbx)
        return sbx

    def resume(self, sandbox_id: str) -> SandboxRecord:
        sbx = self.get(sandbox_id)
        if sbx.status == "paused":
            self.processes.resume_sandbox(sandbox_id)
            sbx.status = "running"
            self._touch(sbx)
        return sbx

    def set_timeout(self, sandbox_id: str, seconds: int) -> SandboxRecord:
        sbx = self.get(sandbox_id)
        sbx.timeout_seconds = seconds
        sbx.expires_at = time.time() + seconds
        self._touch(sbx)
        return sbx

    def set_env(self, sbx: SandboxRecord, env: dict[str, str], *, merge: bool) -> None:
        sbx.env_vars = {**sbx.env_vars, **env} if merge else dict(env)
        self._touch(sbx)

    def delete_env(self, sbx: SandboxRecord, names: list[str] | None) -> None:
        if names is None:
            sbx.env_vars = {}
        else:
            for name in names:
                sbx.env_vars.pop(name, None)
        self._touch(sbx)

    def _touch(self, sbx: SandboxRecord) -> None:
        sbx.updated_at = time.time()
        self.store.put_sandbox(sbx)
