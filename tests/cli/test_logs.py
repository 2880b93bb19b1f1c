"""``hopx logs --json`` and ``--timestamps``, against the local backend."""

from __future__ import annotations

import json
import re
from datetime import datetime

from .conftest import Hopx
from .test_cli import WAITS_FOR_GO, status_of

BOTH = "import sys\nprint('out 1', flush=True)\nprint('err 1', file=sys.stderr, flush=True)\n"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 "


def finished(hopx: Hopx, sandbox_id: str, code: str) -> str:
    ref = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", code).strip()
    hopx.ok("wait", ref)
    return ref


def test_logs_json_prints_one_object_per_chunk_with_its_stream(hopx: Hopx, sandbox_id: str) -> None:
    ref = finished(hopx, sandbox_id, BOTH)
    records = [json.loads(line) for line in hopx.ok("logs", "--json", ref).splitlines()]
    assert [(r["stream"], r["text"], r["gap"]) for r in records] == [
        ("stdout", "out 1\n", False),
        ("stderr", "err 1\n", False),
    ]
    for record in records:
        assert datetime.fromisoformat(record["time"]).tzinfo is not None
    done = hopx("logs", "--json", "--stderr", ref)
    assert done.returncode == 2 and "drop --stderr" in done.stderr


def test_logs_follow_json_streams_chunks_as_they_appear(hopx: Hopx, sandbox_id: str) -> None:
    code = "import sys\nprint('to err', file=sys.stderr, flush=True)\n" + WAITS_FOR_GO
    ref = hopx.ok("run", "-b", "--sandbox", sandbox_id, "-c", code).strip()
    follow = hopx.popen("logs", "-f", "--json", ref)
    assert follow.stdout is not None
    seen = [json.loads(follow.stdout.readline()) for _ in range(2)]
    assert sorted((r["stream"], r["text"]) for r in seen) == [
        ("stderr", "to err\n"),
        ("stdout", "start\n"),
    ]
    assert status_of(hopx, ref) == "running"  # followed live
    hopx.ok("run", "--sandbox", sandbox_id, "-c", "open('go', 'w').close()")
    rest, err = follow.communicate(timeout=60)
    assert (follow.returncode, err) == (0, "")
    assert [(r["stream"], r["text"]) for r in map(json.loads, rest.splitlines())] == [
        ("stdout", "end\n")
    ]


def test_logs_timestamps_start_every_line(hopx: Hopx, sandbox_id: str) -> None:
    ref = finished(hopx, sandbox_id, "print('a'); print('b', end='')")
    lines = hopx.ok("logs", "--timestamps", ref).split("\n")
    assert len(lines) == 2
    assert re.fullmatch(STAMP + "a", lines[0]), lines
    assert re.fullmatch(STAMP + "b", lines[1]), lines
    stderr_lines = hopx.ok("logs", "-t", "--stderr", ref)
    assert stderr_lines == ""
    followed = hopx.ok("logs", "-f", "-t", ref).splitlines()
    assert [re.sub(STAMP, "", line) for line in followed] == ["a", "b"]
    assert all(re.match(STAMP, line) for line in followed)
