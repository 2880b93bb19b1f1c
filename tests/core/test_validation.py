"""Bad arguments are refused before any I/O, with the argument and the allowed values named.

Out-of-range numbers, text that cannot travel and API keys: ``test_validation_limits.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, SandboxInfo, Task, ValidationError

# Nothing listens here: any I/O would raise NetworkError instead of ValidationError.
NOWHERE = "http://127.0.0.1:9"


def offline_sandbox(url: str = NOWHERE) -> AsyncSandbox:
    client = AsyncHopx(api_key="k", base_url=url)
    info = SandboxInfo.from_wire({"id": "sbx_x", "status": "running", "public_host": url})
    return AsyncSandbox(client, client._control, info, token="t")


CASES: list[tuple[str, Callable[[AsyncSandbox], Awaitable[Any]], str]] = [
    ("code", lambda s: s.run_code_background(""), "non-empty"),
    ("code", lambda s: s.run_code_background(None), "non-empty"),  # type: ignore[arg-type]
    ("language", lambda s: s.run_code_background("x", language="cobol"), "python"),
    ("timeout", lambda s: s.run_code_background("x", timeout=0), "> 0"),
    ("timeout", lambda s: s.run_code_background("x", timeout=-5), "> 0"),
    ("timeout", lambda s: s.run_code_background("x", timeout=True), "> 0"),  # type: ignore[arg-type]
    ("env", lambda s: s.run_code_background("x", env={"A": 1}), "must be a str"),  # type: ignore[dict-item]
    ("env", lambda s: s.run_code_background("x", env={"": "v"}), "non-empty"),
    ("env", lambda s: s.run_code_background("x", env=["A"]), "dict"),  # type: ignore[arg-type]
    ("name", lambda s: s.run_code_background("x", name=""), "non-empty"),
    ("timeout", lambda s: s.run_code("x", timeout=301), "at most 300"),
    ("command", lambda s: s.commands.run("  "), "non-empty"),
    ("name", lambda s: s.commands.run("ls", name="x"), "background"),
    ("process_id", lambda s: s.get_process(""), "non-empty"),
    ("process_id", lambda s: s.kill_process(""), "non-empty"),
    ("seconds", lambda s: s.set_timeout(0), "> 0"),
    ("timeout", lambda s: s.process("proc_1").wait(timeout=0), "> 0"),
    ("processes", lambda s: s.wait_all(["proc_1"]), "run_code_background"),  # type: ignore[list-item]
]


@pytest.mark.anyio
@pytest.mark.parametrize(("argument", "call", "fragment"), CASES)
async def test_refused_before_io(
    argument: str, call: Callable[[AsyncSandbox], Awaitable[Any]], fragment: str, proxy: Any
) -> None:
    sandbox = offline_sandbox(proxy.url)
    with pytest.raises(ValidationError) as err:
        await call(sandbox)
    assert err.value.argument == argument
    assert str(err.value).startswith(f"{argument}:")
    assert fragment in str(err.value)
    assert not proxy.counts, "no request may be sent"


@pytest.mark.anyio
async def test_create_arguments_refused_before_io(proxy: Any) -> None:
    client = AsyncHopx(api_key="k", base_url=proxy.url)
    with pytest.raises(ValidationError, match="template"):
        await client.sandboxes.create("")
    with pytest.raises(ValidationError, match="not both"):
        await client.sandboxes.create("a", template_id="b")
    with pytest.raises(ValidationError, match="timeout_seconds"):
        await client.sandboxes.create("code-interpreter", timeout_seconds=0)
    with pytest.raises(ValidationError, match="env_vars"):
        await client.sandboxes.create("code-interpreter", env_vars={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValidationError, match="template"):
        await AsyncSandbox.create("", client=client)
    with pytest.raises(ValidationError, match="page_size"):
        async for _ in client.sandboxes.list(page_size=0):
            pass
    assert not proxy.counts, "no request may be sent"


def test_validation_error_is_a_value_error() -> None:
    assert issubclass(ValidationError, ValueError)


async def _first(events: Any) -> None:
    async for _ in events:
        return


#: every public entry point that takes a process's lifetime as ``timeout``
LIFETIMES: dict[str, Callable[[AsyncSandbox, Any], Awaitable[Any]]] = {
    "run_code": lambda s, t: s.run_code("x", timeout=t),
    "run_code_background": lambda s, t: s.run_code_background("x", timeout=t),
    "run_code_stream": lambda s, t: _first(s.run_code_stream("x", timeout=t)),
    "run_code_async": lambda s, t: s.run_code_async(
        "x", callback_url="http://127.0.0.1:9/hook", timeout=t
    ),
    "commands.run": lambda s, t: s.commands.run("ls", timeout=t),
    "commands.run(background)": lambda s, t: s.commands.run("ls", background=True, timeout=t),
    "commands.stream": lambda s, t: _first(s.commands.stream("ls", timeout=t)),
}


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [0, -1.5, True, "60", float("nan")])
async def test_every_lifetime_timeout_refuses_the_same_values_alike(bad: Any) -> None:
    sandbox = offline_sandbox()
    messages = set()
    for call in LIFETIMES.values():
        with pytest.raises(ValidationError) as err:
            await call(sandbox, bad)
        assert err.value.argument == "timeout"
        messages.add(str(err.value))
    with pytest.raises(ValidationError) as err:
        Task(code="x", timeout=bad)
    messages.add(str(err.value))
    assert len(messages) == 1, messages


@pytest.mark.anyio
async def test_a_lifetime_may_be_a_fraction_of_a_second(sandbox: AsyncSandbox) -> None:
    """Any positive number of seconds; the server gets whole seconds, at least one."""
    proc = await sandbox.run_code_background("print(1)", timeout=2.6)
    assert proc.timeout == 3
    short = await sandbox.commands.run("true", background=True, timeout=0.2)
    assert short.timeout == 1
    assert Task(code="print(1)", timeout=0.5).timeout == 0.5
    assert (await proc.wait(timeout=60)).stdout == "1\n"
