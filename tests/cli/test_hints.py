"""Errors of the command line name its own way out: flags and commands, not Python."""

from __future__ import annotations

import socket

from .conftest import Hopx
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
    for args in (
        ("run", "--sandbox", sandbox_id, "-c", "1"),
        ("env", "list", "--sandbox", sandbox_id),
    ):
        done = hopx(*args)
        assert done.returncode == 3
        line = one_line_error(done.stderr)
        assert line.startswith(
            f"hopx: error: sandbox {sandbox_id} is paused: resume it with "
            f"`hopx sandbox resume {sandbox_id}` (HTTP 409, CONFLICT"
        ), line
    hopx.ok("sandbox", "resume", sandbox_id)
    assert hopx.ok("run", "--sandbox", sandbox_id, "-c", "print(2)") == "2\n"
