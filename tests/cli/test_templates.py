"""``hopx template list``, against the local backend."""

from __future__ import annotations

import re

from .conftest import Hopx


def test_template_list_prints_every_template(hopx: Hopx) -> None:
    listed = hopx.json("template", "list")
    by_name = {t["name"]: t for t in listed}
    assert set(by_name) == {"code-interpreter", "base"}
    assert by_name["code-interpreter"]["id"] == "1"
    assert by_name["code-interpreter"]["language"] == "python"
    assert by_name["base"]["is_active"] is True

    lines = hopx.ok("template", "list").splitlines()  # piped: plain aligned columns
    assert lines[0].split() == ["NAME", "ID", "LANGUAGE", "ACTIVE", "DISPLAY", "NAME"]
    assert re.match(r"^code-interpreter\s+1\s+python\s+yes\s+Code Interpreter$", lines[1])
    assert re.match(r"^base\s+2\s+bash\s+yes\s+Base$", lines[2])
    assert len(lines) == 3


def test_a_listed_name_creates_a_sandbox(hopx: Hopx) -> None:
    name = hopx.json("template", "list")[-1]["name"]
    created = hopx.json("sandbox", "create", "--template", name)
    try:
        assert created["template_name"] == name
    finally:
        hopx("sandbox", "kill", created["id"])


def test_template_is_listed_in_the_help(hopx: Hopx) -> None:
    assert re.search(r"^\s+template\s", hopx.ok("--help"), flags=re.M)
