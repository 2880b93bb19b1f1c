"""The sync facade's streamed execution: blocking iterators of typed events."""

from __future__ import annotations

from hopx_sync import Sandbox, StreamEvent


def test_run_code_stream_is_a_blocking_iterator(sandbox: Sandbox) -> None:
    code = "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr, flush=True)\n"
    with sandbox.run_code_stream(code, timeout=30) as events:  # type: ignore[attr-defined]
        seen = list(events)
    assert all(isinstance(e, StreamEvent) for e in seen)
    assert "".join(e.text for e in seen if e.kind == "stdout") == "a\n"
    assert "".join(e.text for e in seen if e.kind == "stderr") == "b\n"
    assert [e.kind for e in seen][-2:] == ["result", "complete"]
    assert seen[-2].exit_code == 0


def test_commands_stream_and_pushed_output(sandbox: Sandbox) -> None:
    events = list(sandbox.commands.stream("echo hi; exit 3"))
    assert "".join(e.text for e in events if e.kind == "stdout") == "hi\n"
    assert next(e for e in events if e.kind == "result").exit_code == 3
    proc = sandbox.run_code_background("print('x' * 100000)")
    text = "".join(c.text for c in proc.output())
    assert text == "x" * 100000 + "\n"
    assert proc.wait(timeout=30).stdout == text
