"""Errors of the command line name its own way out: flags and commands, not Python."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from hopx_async.local import LocalBackend
from hopx_async.local.service.dialect import Dialect

from .conftest import Hopx, base_env
from .test_cli import one_line_error


def test_a_wrong_key_names_the_flag_and_the_variable(hopx: Hopx) -> None:
    done = hopx("sandbox", "list", HOPX_API_KEY="wrong-key")
    assert done.returncode == 3
    line = one_line_error(done.stderr)
    assert line.endswith(": check --api-key or HOPX_API_KEY"), line
    assert "api_key=" not in line


def test_no_key_names_the_flag_not_the_python_argument(hopx: Hopx) -> None:
    env = {k: v for k, v in hopx.env.items() if k != "HOPX_API_KEY"}
    done = Hopx(env)("sandbox", "list")
    assert done.returncode == 2
    line = one_line_error(done.stderr)
    assert "--api-key KEY" in line and "HOPX_API_KEY" in line
    assert "api_key=" not in line
    assert "hopx local start" in line


def test_a_refused_local_connection_names_hopx_local_status(hopx: Hopx) -> None:
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = hopx("sandbox", "list", HOPX_BASE_URL=f"http://127.0.0.1:{port}")
    assert done.returncode == 3
    line = one_line_error(done.stderr)
    assert "cannot connect" in line
    assert "`hopx local status --state-dir DIR`" in line
    flag = hopx("--base-url", f"http://localhost:{port}", "sandbox", "list")
    assert "hopx local status" in one_line_error(flag.stderr)


def test_a_paused_sandbox_names_hopx_sandbox_resume(hopx: Hopx, sandbox_id: str) -> None:
    hopx.ok("sandbox", "pause", sandbox_id)
    hint = f"sandbox {sandbox_id} is paused: resume it with `hopx sandbox resume {sandbox_id}`"
    for args in (
        ("run", "--sandbox", sandbox_id, "-c", "1"),
        ("env", "list", "--sandbox", sandbox_id),
        ("cp", f"{sandbox_id}:/workspace/a", "."),
    ):
        done = hopx(*args)
        assert done.returncode == 3
        assert one_line_error(done.stderr) == f"hopx: error: {hint}", args
    # the agent's own answer (409 in this dialect) gets the same hint
    listed = hopx("ps", "--sandbox", sandbox_id)
    assert listed.returncode == 3
    assert one_line_error(listed.stderr).startswith(f"hopx: error: {hint} (HTTP 409, CONFLICT")
    hopx.ok("sandbox", "resume", sandbox_id)
    assert hopx.ok("run", "--sandbox", sandbox_id, "-c", "print(2)") == "2\n"


@pytest.fixture(scope="module")
def hopx_dialect() -> Iterator[LocalBackend]:
    # boot and rate limits out of the way: only the paused agent's 502 matters here
    knobs = {
        "boot_seconds": 0.0,
        "control_rate_per_minute": 10_000,
        "agent_rate_per_minute": 10_000,
    }
    with LocalBackend.in_thread(dialect=Dialect.named("hopx", **knobs)) as running:
        yield running


def test_a_paused_sandbox_fails_at_once_where_the_agent_answers_502(
    hopx_exe: Path, hopx_dialect: LocalBackend
) -> None:
    """On the service a paused sandbox's agent answers 502, which the SDK waits through:
    the commands that need the sandbox running say so at once instead."""
    hopx = Hopx(
        {**base_env(), "HOPX_BASE_URL": hopx_dialect.base_url, "HOPX_API_KEY": hopx_dialect.api_key}
    )
    sandbox_id = hopx.ok("sandbox", "create").strip()
    try:
        hopx.ok("sandbox", "pause", sandbox_id)
        done = hopx("run", "--sandbox", sandbox_id, "-c", "1", timeout=60)
        assert done.returncode == 3
        assert "`hopx sandbox resume " + sandbox_id + "`" in one_line_error(done.stderr)
    finally:
        hopx("sandbox", "kill", sandbox_id)
