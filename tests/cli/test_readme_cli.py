"""Every shell command of the README's command-line and local-backend sections runs, as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import base_env

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def bash_blocks(title: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section(title), flags=re.S)


@pytest.mark.parametrize("title", ["Command line", "The local backend"])
def test_the_section_has_a_shell_session(title: str) -> None:
    assert len(bash_blocks(title)) == 1
    assert "hopx local start" in bash_blocks(title)[0]


@pytest.mark.parametrize("title", ["Command line", "The local backend"])
def test_every_command_of_the_section_runs(title: str, tmp_path: Path, hopx_exe: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = "set -euo pipefail\ntrap 'hopx local stop --state-dir .hopx-local' EXIT\n"
    script += bash_blocks(title)[0]
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "hopx: error" not in done.stderr
    if title == "Command line":
        out = done.stdout
        assert "hello from a sandbox\n" in out
        assert "0\n1\n2\n" in out  # logs --follow
        assert "ALPHA" in out and "GAMMA" in out  # map
        assert re.search(r"^killed sbx_\w+/proc_\w+$", out, flags=re.M)
        assert re.search(r"^removed sbx_\w+/proc_\w+$", out, flags=re.M)
