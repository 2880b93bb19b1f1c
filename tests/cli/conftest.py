"""Fixtures for the command line's tests: the installed ``hopx`` executable, run in
subprocesses against the session's local backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hopx_async.local import LocalBackend

BIN = Path(sys.executable).parent
HOPX = BIN / "hopx"


class Hopx:
    """Runs the installed ``hopx`` with the backend's URL and key in its environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 90, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HOPX), *args],
            input=input,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, **kwargs: Any) -> str:
        """stdout of a run that must succeed."""
        done = self(*args, **kwargs)
        assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str, **kwargs: Any) -> Any:
        """The parsed ``--json`` output of a run that must succeed."""
        return json.loads(self.ok(*args, "--json", **kwargs))

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(HOPX), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )


def base_env() -> dict[str, str]:
    """The test's environment without HOPX_* and with the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPX_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "120"
    return env


@pytest.fixture(scope="session")
def hopx_exe() -> Path:
    assert HOPX.exists(), f"{HOPX} is missing: install the project with pip install -e '.[cli]'"
    return HOPX


@pytest.fixture
def hopx(hopx_exe: Path, backend: LocalBackend) -> Hopx:
    return Hopx({**base_env(), "HOPX_BASE_URL": backend.base_url, "HOPX_API_KEY": backend.api_key})


@pytest.fixture
def sandbox_id(hopx: Hopx) -> Iterator[str]:
    """A fresh sandbox, killed after the test."""
    sid = hopx.ok("sandbox", "create").strip()
    yield sid
    hopx("sandbox", "kill", sid)
