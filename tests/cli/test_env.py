"""``hopx env list|set|unset``, run as the installed ``hopx`` against the local backend."""

from __future__ import annotations

from pathlib import Path

from .conftest import Hopx


def test_env_list_set_unset(hopx: Hopx, sandbox_id: str) -> None:
    listed = hopx.json("env", "list", "--sandbox", sandbox_id)
    assert {"PATH", "HOME"} <= set(listed), "the base environment is listed"
    hopx.ok("env", "set", "DEBUG=1", "API_TOKEN=s3cret", "EMPTY=", "--sandbox", sandbox_id)
    shown = hopx.json("env", "list", HOPX_SANDBOX=sandbox_id)
    assert shown["DEBUG"] == "1"
    assert shown["EMPTY"] == ""
    assert shown["API_TOKEN"] == "***MASKED***"
    table = hopx.ok("env", "list", HOPX_SANDBOX=sandbox_id)
    assert "DEBUG" in table
    assert "s3cret" not in table
    ran = hopx.ok(
        "run", "--sandbox", sandbox_id, "--language", "bash", "-c", "echo $DEBUG $API_TOKEN"
    )
    assert ran == "1 s3cret\n", "new processes get the variables"

    hopx.ok("env", "unset", "DEBUG", "NEVER_SET", "--sandbox", sandbox_id)
    after = hopx.json("env", "list", "--sandbox", sandbox_id)
    assert "DEBUG" not in after
    assert "API_TOKEN" in after

    hopx.ok("env", "set", "--replace", "ONLY=1", "--sandbox", sandbox_id)
    replaced = hopx.json("env", "list", "--sandbox", sandbox_id)
    assert replaced["ONLY"] == "1"
    assert "API_TOKEN" not in replaced


def test_env_set_from_a_file(hopx: Hopx, sandbox_id: str, tmp_path: Path) -> None:
    env_file = tmp_path / "vars.env"
    env_file.write_text("# settings\nexport MODE=batch\nQUOTED='a b'\n")
    hopx.ok("env", "set", "--env-file", str(env_file), "--sandbox", sandbox_id)
    shown = hopx.json("env", "list", "--sandbox", sandbox_id)
    assert shown["MODE"] == "batch"
    assert shown["QUOTED"] == "a b"


def test_env_usage_errors(hopx: Hopx, sandbox_id: str) -> None:
    no_sandbox = hopx("env", "list")
    assert no_sandbox.returncode == 2
    assert "HOPX_SANDBOX" in no_sandbox.stderr
    bad_pair = hopx("env", "set", "NOEQUALS", "--sandbox", sandbox_id)
    assert bad_pair.returncode == 2
    assert "KEY=VALUE" in bad_pair.stderr
    nothing = hopx("env", "set", "--sandbox", sandbox_id)
    assert nothing.returncode == 2
    bad_name = hopx("env", "set", "1BAD=x", "--sandbox", sandbox_id)
    assert bad_name.returncode == 2, bad_name.stderr
    assert bad_name.stderr.startswith("hopx: error:")
    unknown = hopx("env", "list", "--sandbox", "sbx_unknown")
    assert unknown.returncode == 3
