"""The ``hopx`` command's flows (run, ps, logs -f, wait, kill, rm, map) against each dialect."""

from __future__ import annotations

import pytest

from hopx_async.local import LocalBackend

from .conftest import Hopx

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def hopx(dialect_backend: LocalBackend) -> Hopx:
    return Hopx(dialect_backend)


@pytest.fixture
def sandbox_id(hopx: Hopx) -> str:
    created = hopx.json("sandbox", "create")
    return str(created["id"])


def test_run_foreground(dialect: str, hopx: Hopx) -> None:
    if dialect != "openapi":
        assert hopx.ok("run", "-c", "print('x')") == "x\n"
        return
    # The OpenAPI process list carries no output: nothing is passed off as the output.
    ran = hopx("run", "-c", "print('x')")
    assert ran.stdout == ""
    assert "unavailable" in ran.stderr


def test_background_ps_logs_wait_rm(dialect: str, hopx: Hopx, sandbox_id: str) -> None:
    ref = hopx.ok("run", "--sandbox", sandbox_id, "--background", "-c", "print('bg')").strip()
    assert ref.startswith(sandbox_id + "/")
    hopx.ok("wait", ref)
    assert ref in hopx.ok("ps", "--sandbox", sandbox_id)
    if dialect != "openapi":
        assert hopx.ok("logs", "-f", ref) == "bg\n"
    else:  # no output in the OpenAPI list: a clear error, not an empty log
        logs = hopx("logs", "-f", ref)
        assert logs.returncode != 0
        assert "no output" in logs.stderr
    removed = hopx("rm", ref)
    if dialect == "extended":
        assert removed.returncode == 0, removed.stderr
    else:  # the service cannot remove a process: a clear error
        assert removed.returncode != 0
        assert "remov" in removed.stderr.lower()


def test_kill(hopx: Hopx, sandbox_id: str) -> None:
    code = "import time; time.sleep(60)"
    ref = hopx.ok("run", "--sandbox", sandbox_id, "--background", "-c", code).strip()
    hopx.ok("kill", ref)
    waited = hopx("wait", ref)
    assert "killed" in (waited.stdout + waited.stderr)


def test_map(dialect: str, hopx: Hopx) -> None:
    code = 'import os; print(os.environ["HOPX_INPUT"].upper())'
    done = hopx.json("map", "-n", "1", "-c", code, "a", "b")
    assert [t["status"] for t in done] == ["completed", "completed"]
    expected = ["", ""] if dialect == "openapi" else ["A\n", "B\n"]  # openapi: no output
    assert sorted(str(t["stdout"]) for t in done) == expected
