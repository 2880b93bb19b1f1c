"""The installed ``hopx`` command, run as a subprocess against the local backend."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
from datetime import datetime
from pathlib import Path

import pytest

from .conftest import HOPX, Hopx

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
REF = re.compile(r"^(sbx_[0-9a-f]+)/(proc_[0-9a-f]+)$")

#: prints "start", then waits (bounded) until a file "go" appears in its working directory
WAITS_FOR_GO = """
import os, time
print("start", flush=True)
for _ in range(1200):
    if os.path.exists("go"):
        break
    time.sleep(0.05)
print("end", flush=True)
"""


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def status_of(hopx: Hopx, ref: str) -> str:
    sandbox = ref.split("/")[0]
    listed = hopx.json("ps", "--sandbox", sandbox)
    found = [p["status"] for p in listed if p["ref"] == ref]
    assert len(found) == 1, listed
    return str(found[0])


# --------------------------------------------------------------------------------- basics
def test_help_documents_commands_and_exit_codes(hopx: Hopx) -> None:
    out = hopx.ok("--help")
    for command in ("run", "ps", "logs", "wait", "kill", "rm", "map", "sandbox", "local"):
        assert re.search(rf"^\s+{command}\s", out, flags=re.M), command
    assert "Exit codes" in out
    for code in ("124", "130", "usage error", "API or connection error"):
        assert code in out


def test_without_click_it_prints_the_install_hint(hopx: Hopx) -> None:
    code = "import sys; sys.modules['click'] = None; from hopx_async.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=hopx.env, check=False
    )
    assert done.returncode == 2
    assert one_line_error(done.stderr) == (
        "hopx: the command line needs click and rich: pip install 'hopx-async[cli]'"
    )


# ------------------------------------------------------------------------------------ run
def test_run_streams_both_streams_and_exits_with_the_code(hopx: Hopx) -> None:
    done = hopx("run", "-c", "import sys; print('out'); print('err', file=sys.stderr); exit(3)")
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_run_reads_a_file_stdin_and_picks_the_language(hopx: Hopx, tmp_path: Path) -> None:
    script = tmp_path / "hello.sh"
    script.write_text('echo "shell says $GREETING"\n')
    assert hopx.ok("run", str(script), "--env", "GREETING=hi") == "shell says hi\n"
    env_file = tmp_path / "vars.env"
    env_file.write_text("# comment\nexport A='one'\nB=two\n")
    code = "import os; print(os.environ['A'], os.environ['B'])"
    assert hopx.ok("run", "-", "--env-file", str(env_file), input=code) == "one two\n"


def test_run_json_parses_back(hopx: Hopx) -> None:
    result = hopx.json("run", "-c", "print(6 * 7)", "--name", "answer")
    assert REF.match(result["ref"])
    assert result["status"] == "completed"
    assert result["stdout"] == "42\n"
    assert result["exit_code"] == 0
    assert result["name"] == "answer"
    assert datetime.fromisoformat(result["started_at"]) <= datetime.fromisoformat(
        result["completed_at"]
    )


def test_run_that_times_out_exits_124(hopx: Hopx) -> None:
    done = hopx("run", "--timeout", "1", "-c", "import time; time.sleep(60)")
    assert done.returncode == 124
    assert "Traceback" not in done.stderr
    # the process's own stderr (the server's note), then hopx's one line
    assert re.fullmatch(
        r"hopx: process sbx_\w+/proc_\w+ timed out after 1s", done.stderr.splitlines()[-1]
    )


def test_ctrl_c_during_a_foreground_run_kills_the_process(hopx: Hopx, sandbox_id: str) -> None:
    code = "import time; print('started', flush=True); time.sleep(60)"
    proc = hopx.popen("run", "--sandbox", sandbox_id, "-c", code)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert "interrupted; killed process" in one_line_error(err)
    ref = err.strip().rsplit(" ", 1)[1]
    assert status_of(hopx, ref) == "killed"


# --------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run",), "give one of FILE, -c CODE or -"),
        (("run", "-c", "1", "--env", "NOEQUALS"), "expected KEY=VALUE"),
        (("logs", "a/b/c"), "expected SANDBOX/PROCESS"),
        (("wait", "proc_1"), "has no sandbox"),
        (("rm",), "give REF... or --finished"),
        (("map", "-c", "1"), "no inputs"),
        (("run", "--timeout", "0", "-c", "1"), "Invalid value for '--timeout'"),
    ],
)
def test_usage_errors_exit_2(hopx: Hopx, args: tuple[str, ...], message: str) -> None:
    done = hopx(*args)
    assert done.returncode == 2, done
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_api_errors_exit_3_in_one_line_and_debug_shows_the_traceback(hopx: Hopx) -> None:
    done = hopx("sandbox", "list", HOPX_API_KEY="wrong-key")
    assert done.returncode == 3
    assert one_line_error(done.stderr).startswith("hopx: error: ")
    unknown = hopx("ps", "--sandbox", "sbx_0000000000000000")
    assert unknown.returncode == 3
    one_line_error(unknown.stderr)
    debug = hopx("--debug", "sandbox", "list", HOPX_API_KEY="wrong-key")
    assert debug.returncode == 3
    assert "Traceback" in debug.stderr


def test_an_unreachable_server_exits_3(hopx: Hopx) -> None:
    import socket

    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = hopx("sandbox", "list", HOPX_BASE_URL=f"http://127.0.0.1:{port}", timeout=120)
    assert done.returncode == 3
    one_line_error(done.stderr)


# ------------------------------------------------------------------- references round-trip
def test_a_background_ref_round_trips_through_ps_logs_wait_and_rm(
    hopx: Hopx, sandbox_id: str
) -> None:
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)"
    ref = hopx.ok("run", "--background", "--sandbox", sandbox_id, "--name", "count", "-c", code)
    ref = ref.strip()
    assert REF.match(ref) and ref.startswith(sandbox_id + "/")
    listed = hopx.json("ps", HOPX_SANDBOX=sandbox_id)
    assert [(p["ref"], p["name"]) for p in listed] == [(ref, "count")]
    assert listed[0]["status"] in ("queued", "running", "completed")

    waited = hopx.json("wait", ref)
    assert [(w["ref"], w["status"], w["exit_code"]) for w in waited] == [(ref, "completed", 0)]
    assert hopx.ok("logs", ref) == "0\n1\n2\n"
    assert hopx.ok("logs", "--stderr", ref) == ""
    process_id = ref.split("/")[1]
    assert hopx.ok("logs", process_id, HOPX_SANDBOX=sandbox_id) == "0\n1\n2\n"

    table = hopx.ok("ps", "--sandbox", sandbox_id)
    assert re.search(rf"^{re.escape(ref)}\s+count\s+completed\s+0\s", table, flags=re.M), table
    assert hopx.ok("rm", ref) == f"removed {ref}\n"
    assert hopx.json("ps", "--sandbox", sandbox_id) == []
    gone = hopx("logs", ref)
    assert gone.returncode == 3
    assert "no process" in one_line_error(gone.stderr)


def test_kill_and_wait_check(hopx: Hopx, sandbox_id: str) -> None:
    nap = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", "import time; time.sleep(60)")
    ok = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", "print('fine')")
    nap, ok = nap.strip(), ok.strip()
    assert hopx.ok("kill", nap) == f"killed {nap}\n"
    plain = hopx("wait", nap, ok)
    assert plain.returncode == 0  # without --check: all ended
    lines = plain.stdout.splitlines()
    assert sorted(line.split()[1:3] for line in lines[:2]) == sorted(
        [[nap, "killed"], [ok, "completed"]]
    )
    assert lines[2] == "2 processes: 1 completed, 1 killed"
    checked = hopx("wait", "--check", nap, ok)
    assert checked.returncode == 1
    again = hopx("kill", nap)
    assert again.returncode == 3
    assert "no such running process" in one_line_error(again.stderr)
    assert sorted(hopx.ok("rm", "--finished", "--sandbox", sandbox_id).splitlines()) == sorted(
        [f"removed {nap}", f"removed {ok}"]
    )


def test_wait_timeout_exits_124_and_the_process_keeps_running(hopx: Hopx, sandbox_id: str) -> None:
    ref = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", "import time; time.sleep(60)")
    ref = ref.strip()
    done = hopx("wait", "--timeout", "0.5", ref)
    assert done.returncode == 124
    assert "still running after 0.5s" in done.stderr
    assert status_of(hopx, ref) == "running"
    hopx.ok("kill", ref)


def test_ctrl_c_during_wait_stops_waiting_and_the_process_keeps_running(
    hopx: Hopx, sandbox_id: str
) -> None:
    ref = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", "import time; time.sleep(60)")
    ref = ref.strip()
    proc = hopx.popen("wait", ref)
    assert proc.stderr is not None
    assert proc.stderr.readline() == "hopx: waiting for 1 process\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (130, "")
    assert err == "hopx: stopped waiting; 1 of 1 still running (not killed)\n"
    assert status_of(hopx, ref) == "running"
    hopx.ok("kill", ref)


def test_ps_watch_refreshes_until_ctrl_c(hopx: Hopx, sandbox_id: str) -> None:
    ref = hopx.ok("run", "-b", "--sandbox", sandbox_id, "--name", "w", "-c", "print(1)").strip()
    hopx.ok("wait", ref)
    watch = hopx.popen("ps", "--watch", "--sandbox", sandbox_id)
    assert watch.stdout is not None
    tables = []
    for _ in range(2):  # two refreshes: a time line, the header, the row, a blank line
        block = [watch.stdout.readline() for _ in range(4)]
        assert re.fullmatch(r"\d\d:\d\d:\d\d\n", block[0]), block
        tables.append(block[1:])
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=30)
    assert (watch.returncode, err) == (0, "")
    assert tables[0] == tables[1]
    assert tables[0][0].split() == ["REF", "NAME", "STATUS", "EXIT", "STARTED", "DURATION"]
    assert tables[0][1].split()[:4] == [ref, "w", "completed", "0"]


def test_logs_follow_prints_each_byte_once_while_it_runs(hopx: Hopx, sandbox_id: str) -> None:
    ref = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", WAITS_FOR_GO).strip()
    follow = hopx.popen("logs", "--follow", ref)
    assert follow.stdout is not None
    assert follow.stdout.readline() == "start\n"
    assert status_of(hopx, ref) == "running"  # the follower is live, not reading a finished log
    hopx.ok("run", "--sandbox", sandbox_id, "-c", "open('go', 'w').close()")
    rest, err = follow.communicate(timeout=60)
    assert (follow.returncode, rest, err) == (0, "end\n", "")


# ------------------------------------------------------------------------------ terminal
def run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; its exit code and output."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            assert ready, f"no output for {timeout}s: {b''.join(chunks)!r}"
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_wait_on_a_terminal_shows_a_progress_bar_and_a_table(hopx: Hopx, sandbox_id: str) -> None:
    refs = [
        hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", f"import time; time.sleep({s})").strip()
        for s in (0.5, 1.5)
    ]
    code, out = run_in_pty([str(HOPX), "wait", *refs], {**hopx.env, "TERM": "xterm-256color"})
    assert code == 0, out
    assert "━" in out  # the bar
    assert "2/2" in out
    assert "\r\x1b[2K" in out  # the bar's line is redrawn in place
    for ref in refs:
        assert re.search(rf"{re.escape(ref)}\s+completed\s+0", ANSI.sub("", out)), out
    assert "2 processes: 2 completed" in out


def test_wait_piped_prints_plain_lines(hopx: Hopx, sandbox_id: str) -> None:
    ref = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", "print(1)").strip()
    out = hopx.ok("wait", ref)
    assert "\x1b" not in out and "\r" not in out
    assert out.splitlines()[0].startswith(f"[1/1] {ref} completed exit=0")


# ------------------------------------------------------------------------------------ map
def test_map_runs_every_input_and_keeps_the_output(hopx: Hopx, tmp_path: Path) -> None:
    code = "import os; print(os.environ['HOPX_INPUT'].upper(), os.environ['HOPX_INDEX'])"
    results = hopx.json("map", "-n", "2", "-j", "2", "-c", code, "alpha", "beta", "gamma")
    assert [(r["index"], r["input"], r["status"], r["stdout"]) for r in results] == [
        (0, "alpha", "completed", "ALPHA 0\n"),
        (1, "beta", "completed", "BETA 1\n"),
        (2, "gamma", "completed", "GAMMA 2\n"),
    ]
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("one\ntwo words\n\nfail\n")
    out_dir = tmp_path / "out"
    done = hopx(
        "map",
        "--cmd",
        'test {} != fail && echo "<$HOPX_INPUT>"',
        "--inputs-from",
        str(inputs),
        "--output-dir",
        str(out_dir),
    )
    assert done.returncode == 1  # one task failed
    assert done.stdout.splitlines()[-1].startswith("3 tasks on 2 sandboxes in ")
    assert done.stdout.splitlines()[-1].endswith(f"2 completed, 1 failed; output in {out_dir}")
    assert [(out_dir / f"{i}.out").read_text() for i in range(3)] == [
        "<one>\n",
        "<two words>\n",
        "",
    ]


def test_map_with_a_manifest_resumes_and_refuses_another_batch(hopx: Hopx, tmp_path: Path) -> None:
    manifest = str(tmp_path / "batch.jsonl")
    code = "import os; print(os.environ['HOPX_INPUT'])"
    first = hopx("map", "-n", "2", "--manifest", manifest, "-c", code, "a", "b", "c")
    assert first.returncode == 0, first.stderr
    assert "0 from the manifest, 0 re-attached, 3 started" in first.stderr
    # again: every result comes from the manifest, no sandbox is created
    again = hopx("map", "-n", "2", "--manifest", manifest, "--json", "-c", code, "a", "b", "c")
    assert again.returncode == 0, again.stderr
    assert [row["stdout"] for row in json.loads(again.stdout)] == ["a\n", "b\n", "c\n"]
    assert "3 from the manifest, 0 re-attached, 0 started" in again.stderr
    other = hopx("map", "--manifest", manifest, "-c", code, "a", "b")
    assert other.returncode == 2
    assert "different batch" in other.stderr


def test_map_on_a_terminal_shows_progress_and_a_summary(hopx: Hopx) -> None:
    code, out = run_in_pty(
        [str(HOPX), "map", "-c", "import os; print(os.environ['HOPX_INPUT'] * 2)", "ab", "cd"],
        {**hopx.env, "TERM": "xterm-256color"},
    )
    assert code == 0, out
    assert "━" in out
    assert re.search(r"1\s+cd\s+completed\s+0\s+\S+\s+cdcd", ANSI.sub("", out)), out


# -------------------------------------------------------------------------------- sandbox
def test_sandbox_commands(hopx: Hopx) -> None:
    created = hopx.json("sandbox", "create", "--timeout", "600", "-e", "COLOR=blue")
    sid = created["id"]
    assert created["status"] == "running"
    assert sid in [s["id"] for s in hopx.json("sandbox", "list")]
    info = hopx.json("sandbox", "info", sid)
    assert info["id"] == sid and datetime.fromisoformat(info["created_at"])
    assert hopx.ok("run", "--sandbox", sid, "-c", "import os; print(os.environ['COLOR'])") == (
        "blue\n"
    )
    assert hopx.ok("sandbox", "timeout", sid, "1200") == f"{sid} will be killed in 1200 seconds\n"
    assert hopx.ok("sandbox", "pause", sid) == f"paused {sid}\n"
    assert hopx.json("sandbox", "info", sid)["status"] == "paused"
    assert hopx.ok("sandbox", "resume", sid) == f"resumed {sid}\n"
    assert hopx.ok("sandbox", "kill", sid) == f"killed {sid}\n"
    after = hopx("sandbox", "info", sid)
    assert after.returncode == 3
    assert "not found" in one_line_error(after.stderr)
