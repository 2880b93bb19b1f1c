"""The blocking twins ``sandbox.files`` and ``sandbox.env`` on the local backend."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hopx_sync import Env, FileInfo, Files, NotFoundError, Sandbox, ValidationError


def test_files_from_the_facade(sandbox: Sandbox, tmp_path: Path) -> None:
    assert isinstance(sandbox.files, Files)
    sandbox.files.write("/workspace/d/a.txt", "one\n")
    sandbox.files.write("d/b.bin", b"\x00\x01")
    assert sandbox.files.read("d/a.txt") == "one\n"
    assert sandbox.files.read_bytes("d/b.bin") == b"\x00\x01"
    entries = sandbox.files.list("d")
    assert all(isinstance(e, FileInfo) for e in entries)
    assert [e.name for e in entries] == ["a.txt", "b.bin"]
    assert sandbox.files.exists("d/a.txt") is True

    local = tmp_path / "up.dat"
    local.write_bytes(b"payload" * 50_000)
    assert sandbox.files.upload(local, "d/up.dat") == 350_000
    assert sandbox.files.upload(io.BytesIO(b"from memory"), "d/mem.txt") == 11
    sink = io.BytesIO()
    assert sandbox.files.download("d/up.dat", sink) == 350_000
    assert sink.getvalue() == local.read_bytes()
    back = tmp_path / "back.txt"
    sandbox.files.download("/workspace/d/mem.txt", back)
    assert back.read_text() == "from memory"

    sandbox.files.mkdir("d/e")
    sandbox.files.remove("d")
    assert sandbox.files.exists("d") is False
    with pytest.raises(NotFoundError):
        sandbox.files.read("d/a.txt")
    with pytest.raises(ValidationError) as err:
        sandbox.files.upload(42, "x")  # type: ignore[arg-type]
    assert err.value.argument == "source"


def test_env_from_the_facade(sandbox: Sandbox) -> None:
    assert isinstance(sandbox.env, Env)
    assert "PATH" in sandbox.env.get_all()
    sandbox.env.update({"COLOR": "blue"})
    assert sandbox.env.get("COLOR") == "blue"
    assert sandbox.commands.run("echo $COLOR").stdout == "blue\n"
    sandbox.env.delete("COLOR")
    assert sandbox.env.get("COLOR") is None
    sandbox.env.set({"ONLY": "1"})
    assert sandbox.env.get("ONLY") == "1"
