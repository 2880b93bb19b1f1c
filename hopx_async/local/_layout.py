"""Where the backend keeps things inside its state directory (paths only, no I/O but mkdir)."""

from __future__ import annotations

import os
from pathlib import Path

import attrs

__all__ = ["DB_NAME", "Layout"]

DB_NAME = "hopx-local.sqlite3"


@attrs.frozen
class Layout:
    """The state directory's layout::

    STATE/hopx-local.sqlite3               records and the token secret (0600)
    STATE/sandboxes/<sbx>/workspace/       the sandbox's /workspace
    STATE/sandboxes/<sbx>/tmp/             the sandbox's /tmp (inside its box)
    STATE/sandboxes/<sbx>/output/<proc>.stdout, .stderr, .src.*
    STATE/webhooks/<exec>.json             webhook deliveries not made yet (0600)
    """

    root: Path

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / sandbox_id

    def workspace(self, sandbox_id: str) -> Path:
        return self.sandbox_dir(sandbox_id) / "workspace"

    def tmp(self, sandbox_id: str) -> Path:
        return self.sandbox_dir(sandbox_id) / "tmp"

    def output_dir(self, sandbox_id: str) -> Path:
        return self.sandbox_dir(sandbox_id) / "output"

    def output(self, sandbox_id: str, process_id: str, stream: str) -> Path:
        return self.output_dir(sandbox_id) / f"{process_id}.{stream}"

    @property
    def webhooks(self) -> Path:
        return self.root / "webhooks"

    def make_root(self) -> None:
        """Create the state directory owner-only (0700), tightening an existing one."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        (self.root / "sandboxes").mkdir(exist_ok=True, mode=0o700)
