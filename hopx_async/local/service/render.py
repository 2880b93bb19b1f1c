"""JSON answers from records: sandboxes, processes, start answers, env listings.

No service logic here: the renderer reads records and output files and builds the documented
bodies. Finished processes are immutable, so their base object (and small outputs) are cached.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..runtime.output import read_tail
from ..state.layout import Layout
from ..state.records import ProcessRecord, SandboxRecord, iso
from .tokens import TokenSigner

__all__ = ["LIST_OUTPUT_CAP", "MASK", "Renderer", "is_secret_name", "number"]

#: Per stream, the list answer carries at most this many trailing bytes of output.
LIST_OUTPUT_CAP = 1024 * 1024
#: Finished processes whose output is at most this big have it kept in memory for lists.
_CACHE_MAX = 64 * 1024
#: ... up to this many characters in all.
_CACHE_BUDGET = 64 * 1024 * 1024

_SECRET_MARKERS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "PRIVATE")
MASK = "***MASKED***"
_RESOURCES = {"vcpu": 2, "memory_mb": 2048, "disk_mb": 10240}


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in _SECRET_MARKERS)


def number(value: float) -> float | int:
    """``3.0`` as ``3``; other values unchanged."""
    return int(value) if float(value).is_integer() else value


def seconds(value: float) -> str:
    """``1`` as ``1 second``, ``2.5`` as ``2.5 seconds``."""
    return f"{number(value)} second{'' if value == 1 else 's'}"


class Renderer:
    """Builds the wire objects; ``base_url`` is set once the server listens."""

    def __init__(self, layout: Layout, signer: TokenSigner) -> None:
        self.layout = layout
        self.signer = signer
        self.base_url = ""
        self._out_cache: dict[tuple[str, str], tuple[str, bool]] = {}
        self._out_cache_chars = 0
        self._json_cache: dict[str, dict[str, Any]] = {}

    # -- sandboxes ------------------------------------------------------------------------

    def sandbox(self, sbx: SandboxRecord, *, with_token: bool = True) -> dict[str, Any]:
        host = f"{self.base_url}/sandboxes/{sbx.id}"
        data: dict[str, Any] = {
            "id": sbx.id,
            "object": "sandbox",
            "status": sbx.status,
            "public_host": host,
            "direct_url": host,
            "template_id": sbx.template_id,
            "template_name": sbx.template_name,
            "organization_id": 1,
            "region": sbx.region,
            "resources": dict(_RESOURCES),
            "internet_access": sbx.internet_access,
            "timeout_seconds": sbx.timeout_seconds,
            "expires_at": iso(sbx.expires_at),
            "created_at": iso(sbx.created_at),
            "updated_at": iso(sbx.updated_at),
        }
        if with_token:
            data.update(self.token(sbx.id))
        return data

    def token(self, sandbox_id: str) -> dict[str, Any]:
        token, expires = self.signer.issue(sandbox_id)
        return {"auth_token": token, "token_expires_at": iso(expires)}

    @staticmethod
    def env_vars(sbx: SandboxRecord, base: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The ``GET /env`` answer: ``base`` (the environment every process starts with)
        overlaid with the sandbox's own variables, secrets masked."""
        merged = {**(base or {}), **sbx.env_vars}
        masked = {k: (MASK if is_secret_name(k) else v) for k, v in merged.items()}
        return {"env_vars": masked, "count": len(masked)}

    # -- processes ------------------------------------------------------------------------

    @staticmethod
    def start_answer(rec: ProcessRecord, *, status: str | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "process_id": rec.process_id,
            "execution_id": rec.execution_id,
            "status": status or rec.status,
            "name": rec.name,
            "language": rec.language,
            "timeout": number(rec.timeout),
            "version": rec.version,
        }
        if rec.command is not None:
            answer["command"] = rec.command
        return answer

    @staticmethod
    def _process_base(rec: ProcessRecord) -> dict[str, Any]:
        if rec.duration is not None:
            elapsed = rec.duration
        elif rec.started_at is None:
            elapsed = 0.0
        else:  # running: elapsed so far; recovered after a crash: until it was marked failed
            elapsed = max(0.0, (rec.completed_at or time.time()) - rec.started_at)
        data: dict[str, Any] = {
            "process_id": rec.process_id,
            "execution_id": rec.execution_id,
            "name": rec.name,
            "status": rec.status,
            "language": rec.language,
            "created_at": iso(rec.created_at),
            "started_at": iso(rec.started_at),
            "completed_at": iso(rec.completed_at),
            "exit_code": rec.exit_code,
            "execution_time": round(elapsed, 4),
            "timeout": number(rec.timeout),
            "pid": rec.pid,
            "version": rec.version,
        }
        if rec.command is not None:
            data["command"] = rec.command
        if rec.error is not None:
            data["error"] = rec.error
        return data

    def forget(self, process_id: str) -> None:
        """Drop what is cached for a deleted process."""
        self._json_cache.pop(process_id, None)
        for stream in ("stdout", "stderr"):
            cached = self._out_cache.pop((process_id, stream), None)
            if cached is not None:
                self._out_cache_chars -= len(cached[0])

    def output_tail(self, rec: ProcessRecord, stream: str) -> tuple[str, bool]:
        key = (rec.process_id, stream)
        cached = self._out_cache.get(key)
        if cached is not None:
            return cached
        path = self.layout.output(rec.sandbox_id, rec.process_id, stream)
        text, truncated, size = read_tail(path, LIST_OUTPUT_CAP)
        if rec.finished and size <= _CACHE_MAX and self._out_cache_chars < _CACHE_BUDGET:
            self._out_cache[key] = (text, truncated)
            self._out_cache_chars += len(text)
        return text, truncated

    def process(self, rec: ProcessRecord, *, output: bool = True) -> dict[str, Any]:
        base = self._json_cache.get(rec.process_id)
        if base is None:
            base = self._process_base(rec)
            if rec.finished:  # a finished record never changes again: build it once
                self._json_cache[rec.process_id] = base
        data = dict(base)
        if output:
            data["stdout"], data["stdout_truncated"] = self.output_tail(rec, "stdout")
            data["stderr"], data["stderr_truncated"] = self.output_tail(rec, "stderr")
        return data
