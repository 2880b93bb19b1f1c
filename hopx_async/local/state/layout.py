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
    STATE/sandboxes/<sbx>/workspace.img    its bound: an ext4 image mounted there (0600)
    STATE/sandboxes/<sbx>/tmp/             the sandbox's /tmp (inside its box)
    STATE/sandboxes/<sbx>/output/<proc>.stdout, .stderr, .src.*
    STATE/webhooks/<exec>.json             webhook deliveries not made yet (0600)
    """

    root: Path
    #: (sandbox id, part) -> path: a start asks for the same few paths many times
    _paths: dict[tuple[str, str], Path] = attrs.field(
        factory=dict, init=False, repr=False, eq=False
    )

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    def _part(self, sandbox_id: str, part: str) -> Path:
        path = self._paths.get((sandbox_id, part))
        if path is None:
            base = self.root / "sandboxes" / sandbox_id
            path = self._paths[(sandbox_id, part)] = base / part if part else base
        return path

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self._part(sandbox_id, "")

    def workspace(self, sandbox_id: str) -> Path:
        return self._part(sandbox_id, "workspace")

    def workspace_image(self, sandbox_id: str) -> Path:
        return self._part(sandbox_id, "workspace.img")

    def tmp(self, sandbox_id: str) -> Path:
        return self._part(sandbox_id, "tmp")

    def output_dir(self, sandbox_id: str) -> Path:
        return self._part(sandbox_id, "output")

    def output(self, sandbox_id: str, process_id: str, stream: str) -> Path:
        return self._part(sandbox_id, "output") / f"{process_id}.{stream}"

    def forget(self, sandbox_id: str) -> None:
        """Drop the paths kept for a deleted sandbox."""
        for part in ("", "workspace", "workspace.img", "tmp", "output"):
            self._paths.pop((sandbox_id, part), None)

    @property
    def webhooks(self) -> Path:
        return self.root / "webhooks"

    def make_root(self) -> None:
        """Create the state directory owner-only (0700), tightening an existing one."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        (self.root / "sandboxes").mkdir(exist_ok=True, mode=0o700)
