"""``hopx cp`` both ways, against the local backend."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HOPX, Hopx
from .test_cli import one_line_error, run_in_pty


def remote_sha256(hopx: Hopx, sandbox_id: str, path: str) -> str:
    code = f"import hashlib; print(hashlib.sha256(open({path!r}, 'rb').read()).hexdigest())"
    return hopx.ok("run", "--sandbox", sandbox_id, "-c", code).strip()


def test_cp_a_binary_file_up_and_down_byte_for_byte(
    hopx: Hopx, sandbox_id: str, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # every byte value, not a multiple of a chunk
    local = tmp_path / "blob.bin"
    local.write_bytes(data)
    done = hopx("cp", str(local), f"{sandbox_id}:/workspace/blob.bin")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")  # piped: quiet
    assert (
        remote_sha256(hopx, sandbox_id, "/workspace/blob.bin") == hashlib.sha256(data).hexdigest()
    )

    back = tmp_path / "back.bin"
    done = hopx("cp", f"{sandbox_id}:/workspace/blob.bin", str(back))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert back.read_bytes() == data
    assert {p.name for p in tmp_path.iterdir()} == {"blob.bin", "back.bin"}  # no partial file


def test_cp_into_directories_keeps_the_name_and_relative_paths_are_in_the_workspace(
    hopx: Hopx, sandbox_id: str, tmp_path: Path
) -> None:
    local = tmp_path / "notes.txt"
    local.write_text("hello\n")
    hopx.ok("cp", str(local), f"{sandbox_id}:/workspace/")  # a directory: keeps the name
    hopx.ok("cp", str(local), f"{sandbox_id}:renamed.txt")  # relative: under /workspace
    (tmp_path / "third.txt").write_text("3\n")
    hopx.ok("cp", str(tmp_path / "third.txt"), f"{sandbox_id}:")  # the workspace itself
    hopx.ok("cp", str(tmp_path / "third.txt"), f"{sandbox_id}:/workspace")  # as a directory
    listed = hopx.ok("run", "--sandbox", sandbox_id, "-c", "import os; print(sorted(os.listdir()))")
    assert "'notes.txt'" in listed and "'renamed.txt'" in listed and "'third.txt'" in listed
    out = tmp_path / "out"
    out.mkdir()
    hopx.ok("cp", f"{sandbox_id}:renamed.txt", str(out))  # a local directory
    assert (out / "renamed.txt").read_text() == "hello\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a.txt", "b.txt"), "got two local paths"),
        (("sbx_1:/a", "sbx_2:/b"), "got two sandbox paths"),
    ],
)
def test_cp_needs_exactly_one_remote_side(hopx: Hopx, args: tuple[str, str], message: str) -> None:
    done = hopx("cp", *args)
    assert done.returncode == 2
    assert message in one_line_error(done.stderr)


def test_cp_errors_are_one_line(hopx: Hopx, sandbox_id: str, tmp_path: Path) -> None:
    missing = hopx("cp", f"{sandbox_id}:/workspace/nope.bin", str(tmp_path))
    assert missing.returncode == 3
    assert one_line_error(missing.stderr) == (
        f"hopx: error: {sandbox_id}:/workspace/nope.bin: no such file"
    )
    assert list(tmp_path.iterdir()) == []
    directory = hopx("cp", str(tmp_path), f"{sandbox_id}:/workspace/")
    assert directory.returncode == 2
    assert "is a directory" in one_line_error(directory.stderr)
    nowhere = hopx("cp", f"{sandbox_id}:/workspace", str(tmp_path / "no" / "such"))
    assert nowhere.returncode == 2
    assert "does not exist" in one_line_error(nowhere.stderr)


def test_cp_on_a_terminal_shows_progress_for_a_large_file(
    hopx: Hopx, sandbox_id: str, tmp_path: Path
) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(2 * 1024 * 1024))
    env = {**hopx.env, "TERM": "xterm-256color"}
    code, out = run_in_pty([str(HOPX), "cp", str(local), f"{sandbox_id}:/workspace/"], env)
    assert code == 0, out
    assert "big.bin" in out and "2.1" in out and "MB" in out, out  # name, size
    code, small = run_in_pty(
        [str(HOPX), "cp", f"{sandbox_id}:/workspace/big.bin", str(tmp_path / "copy.bin")], env
    )
    assert code == 0, small
    assert (tmp_path / "copy.bin").read_bytes() == local.read_bytes()
    (tmp_path / "tiny.txt").write_text("x")
    code, quiet = run_in_pty(
        [str(HOPX), "cp", str(tmp_path / "tiny.txt"), f"{sandbox_id}:/workspace/"], env
    )
    assert (code, quiet) == (0, "")  # small files: no bar


def peak_rss_kib(hopx: Hopx, *args: str) -> int:
    """The peak resident memory of one ``hopx`` run, measured by a parent of its own."""
    probe = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True); "
        "assert done.returncode == 0, done.stderr; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(HOPX), *args],
        env=hopx.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def test_cp_streams_a_large_file_both_ways(hopx: Hopx, sandbox_id: str, tmp_path: Path) -> None:
    size = 32 * 1024 * 1024
    (tmp_path / "tiny.bin").write_bytes(b"x")
    with (tmp_path / "large.bin").open("wb") as f:
        for _ in range(size // (1024 * 1024)):
            f.write(os.urandom(1024 * 1024))
    base = peak_rss_kib(hopx, "cp", str(tmp_path / "tiny.bin"), f"{sandbox_id}:tiny.bin")
    up = peak_rss_kib(hopx, "cp", str(tmp_path / "large.bin"), f"{sandbox_id}:large.bin")
    down = peak_rss_kib(hopx, "cp", f"{sandbox_id}:large.bin", str(tmp_path / "back.bin"))
    # holding the file whole would add 32 MiB (32768 KiB) to the small copy's peak
    assert up < base + 16 * 1024, (base, up)
    assert down < base + 16 * 1024, (base, down)
    with (tmp_path / "large.bin").open("rb") as a, (tmp_path / "back.bin").open("rb") as b:
        assert hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest()
