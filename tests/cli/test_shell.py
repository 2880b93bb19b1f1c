"""``hopx shell`` under a pseudo-terminal, and ``hopx exec``, against the local backend."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

from .conftest import HOPX, Hopx


class Pty:
    """``hopx`` run on a pseudo-terminal that the test types into and reads."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, self.slave = os.openpty()
        self.resize(100, 30)
        self.saved = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            argv, stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env
        )
        self.seen = b""

    def resize(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def read_until(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                self.seen += os.read(self.master, 65536)
            else:
                assert self.proc.poll() is None, f"exited before {text!r}: {self.seen!r}"
        return self.seen.decode("utf-8", "replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        while select.select([self.master], [], [], 0.1)[0]:
            self.seen += os.read(self.master, 65536)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def test_shell_on_a_terminal_runs_resizes_and_exits_with_the_shells_status(
    hopx: Hopx, sandbox_id: str
) -> None:
    term = Pty([str(HOPX), "shell", sandbox_id], {**hopx.env, "TERM": "xterm-256color"})
    try:
        term.type("stty size\n")
        term.read_until("30 100")
        term.resize(132, 43)
        term.proc.send_signal(signal.SIGWINCH)  # the test's pty is not its controlling tty
        term.type("stty size\n")
        term.read_until("43 132")
        term.type("echo $((6*7))\n")
        term.read_until("42")
        term.type("exit 3\n")
        assert term.wait() == 3, term.seen
        assert termios.tcgetattr(term.slave) == term.saved, "the terminal was not restored"
    finally:
        term.close()


def test_shell_passes_ctrl_c_to_the_sandbox(hopx: Hopx, sandbox_id: str) -> None:
    term = Pty([str(HOPX), "shell", sandbox_id], {**hopx.env, "TERM": "xterm-256color"})
    try:
        term.type("echo $((1+1))up\n")
        term.read_until("2up")  # the remote shell is up, the local terminal raw
        term.type("sleep 60; echo slept\n")
        term.read_until("sleep 60; echo slept\r\n")
        time.sleep(0.3)  # the sleep has started
        term.type("\x03")  # Ctrl-C: raw mode sends it to the sandbox's terminal
        term.type("echo after $?\n")
        out = term.read_until("after 130")
        assert "slept\r\n" not in out.replace("echo slept", "")
        term.type("exit\n")
        assert term.wait() == 0  # the status of the last command, the echo
    finally:
        term.close()


def test_exec_streams_output_and_exits_with_the_commands_code(hopx: Hopx, sandbox_id: str) -> None:
    done = hopx("exec", sandbox_id, "--", "sh", "-c", "echo out $0; echo err >&2; exit 7", "x y")
    assert (done.returncode, done.stdout, done.stderr) == (7, "out x y\n", "err\n")
    assert hopx.ok("exec", sandbox_id, "--", "pwd") == "/workspace\n" or hopx.ok(
        "exec", sandbox_id, "--", "pwd"
    ).endswith("/workspace\n")
    missing = hopx("exec", sandbox_id)
    assert missing.returncode == 2


def test_shell_reads_a_regular_file_as_its_input(
    hopx: Hopx, sandbox_id: str, tmp_path: Path
) -> None:
    """``hopx shell SBX < script``: a file cannot be polled; it is read and sent as typed."""
    script = tmp_path / "script.sh"
    script.write_text("echo from-$((40 + 2))\nexit 3\n")
    with script.open() as stdin:
        done = subprocess.run(
            [str(HOPX), "shell", sandbox_id],
            stdin=stdin,
            capture_output=True,
            text=True,
            env=hopx.env,
            timeout=90,
        )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "from-42" in done.stdout
    assert "Traceback" not in done.stderr
