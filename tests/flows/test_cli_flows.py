"""The ``hopx`` command's flows (run, ps, logs -f, wait, kill, rm, map) against each dialect."""

from __future__ import annotations

import pytest

from hopx_async.local import LocalBackend

from .conftest import Hopx, xfail_on

pytestmark = pytest.mark.timeout(120)

_NO_OUTPUT = "issue 16 item 2: no output in the OpenAPI list; hopx prints nothing and exits 0"


@pytest.fixture
def hopx(dialect_backend: LocalBackend) -> Hopx:
    return Hopx(dialect_backend)


@pytest.fixture
def sandbox_id(hopx: Hopx) -> str:
    created = hopx.json("sandbox", "create")
    return str(created["id"])


def test_run_foreground(request: pytest.FixtureRequest, dialect: str, hopx: Hopx) -> None:
    xfail_on(request, dialect, _NO_OUTPUT, "openapi")
    assert hopx.ok("run", "-c", "print('x')") == "x\n"


def test_background_ps_logs_wait_rm(
    request: pytest.FixtureRequest, dialect: str, hopx: Hopx, sandbox_id: str
) -> None:
    xfail_on(request, dialect, _NO_OUTPUT, "openapi")
    ref = hopx.ok("run", "--sandbox", sandbox_id, "--background", "-c", "print('bg')").strip()
    assert ref.startswith(sandbox_id + "/")
    hopx.ok("wait", ref)
    assert ref in hopx.ok("ps", "--sandbox", sandbox_id)
    assert hopx.ok("logs", "-f", ref) == "bg\n"
    removed = hopx("rm", ref)
    if dialect == "extended":
        assert removed.returncode == 0, removed.stderr
    else:  # the service cannot remove a process: a clear error
        assert removed.returncode != 0
        assert "remov" in removed.stderr.lower()


def test_kill(request: pytest.FixtureRequest, dialect: str, hopx: Hopx, sandbox_id: str) -> None:
    code = "import time; time.sleep(60)"
    ref = hopx.ok("run", "--sandbox", sandbox_id, "--background", "-c", code).strip()
    hopx.ok("kill", ref)
    waited = hopx("wait", ref)
    assert "killed" in (waited.stdout + waited.stderr)


def test_map(request: pytest.FixtureRequest, dialect: str, hopx: Hopx) -> None:
    xfail_on(request, dialect, _NO_OUTPUT, "openapi")
    code = 'import os; print(os.environ["HOPX_INPUT"].upper())'
    done = hopx.json("map", "-n", "1", "-c", code, "a", "b")
    assert sorted(str(t["stdout"]) for t in done) == ["A\n", "B\n"]
