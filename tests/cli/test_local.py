"""``hopx local start|stop|status|serve``: a detached local backend for a shell."""

from __future__ import annotations

import re
import shlex
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import HOPX, Hopx, base_env


def exports(text: str) -> dict[str, str]:
    """``export NAME=VALUE`` lines, as a shell's ``eval`` would read them."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        assert words[0] == "export" and len(words) == 2, line
        name, _, value = words[1].partition("=")
        found[name] = value
    return found


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    subprocess.run(
        [str(HOPX), "local", "stop", "--state-dir", str(path)],
        env=base_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_start_status_stop_and_restart_keeps_key_and_port(state: Path) -> None:
    local = Hopx(base_env())
    assert local("local", "status", "--state-dir", str(state)).returncode == 3

    started = local("local", "start", "--state-dir", str(state))
    assert started.returncode == 0, started.stderr
    env = exports(started.stdout)
    assert set(env) == {"HOPX_BASE_URL", "HOPX_API_KEY"}
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env["HOPX_BASE_URL"])
    key_file = state / "api-key"
    assert key_file.read_text().strip() == env["HOPX_API_KEY"]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # the exported values reach the API, and the key is not on the server's command line
    client = Hopx({**base_env(), **env})
    assert client.ok("run", "-c", "print('up')") == "up\n"
    status = client.json("local", "status", "--state-dir", str(state))
    assert status["running"] is True and status["base_url"] == env["HOPX_BASE_URL"]
    pid = int((state / "server.pid").read_text())
    assert status["pid"] == pid
    assert env["HOPX_API_KEY"] not in cmdline(pid)

    # starting again is harmless and prints the same lines
    again = local("local", "start", "--state-dir", str(state))
    assert (again.returncode, again.stdout) == (0, started.stdout)
    assert "already running" in again.stderr

    stopped = local("local", "stop", "--state-dir", str(state))
    assert stopped.returncode == 0
    assert f"pid {pid}" in stopped.stderr
    assert local("local", "status", "--state-dir", str(state)).returncode == 3
    assert not (state / "server.pid").exists()

    restarted = local("local", "start", "--state-dir", str(state))
    assert restarted.returncode == 0, restarted.stderr
    assert exports(restarted.stdout) == env  # same key, same port


def test_serve_warns_about_a_key_on_the_command_line(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(HOPX), "local", "serve", "--api-key", "visible-key", "--log-level", "WARNING"],
        env=base_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("HOPX_BASE_URL=http://127.0.0.1:")
    assert proc.stdout.readline() == "HOPX_API_KEY=visible-key\n"
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=30)
    assert (proc.returncode, rest) == (0, "")
    assert "--api-key puts the key on the command line" in err


def test_serve_takes_its_key_from_the_environment(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(HOPX), "local", "serve", "--state-dir", str(tmp_path / "s"), "--log-level", "ERROR"],
        env={**base_env(), "HOPX_API_KEY": "from-env"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    assert proc.stdout.readline() == "HOPX_API_KEY=from-env\n"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, "", "")
    assert (tmp_path / "s" / "api-key").read_text() == "from-env\n"


def test_start_reports_a_server_that_cannot_start(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = Hopx(base_env())(
            "local", "start", "--state-dir", str(tmp_path / "s"), "--port", str(port)
        )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: the server exited with 1 while starting:")


def test_start_passes_the_dialect_on_to_serve(state: Path) -> None:
    import json
    import urllib.request

    local = Hopx(base_env())
    started = local(
        "local", "start", "--state-dir", str(state), "--dialect", "openapi", "--boot-seconds", "0"
    )
    assert started.returncode == 0, started.stderr
    env = exports(started.stdout)
    pid = int((state / "server.pid").read_text())
    assert "--dialect openapi" in cmdline(pid)
    assert "--boot-seconds 0.0" in cmdline(pid)
    with urllib.request.urlopen(env["HOPX_BASE_URL"] + "/health", timeout=10) as answer:
        health = json.loads(answer.read())
    assert health["dialect"] == "openapi"
    refused = local("local", "start", "--state-dir", str(state), "--dialect", "lenient")
    assert refused.returncode != 0
    assert "invalid choice" in refused.stderr
