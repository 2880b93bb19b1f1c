"""Limits of arguments, checked before any I/O: out-of-range numbers, text that cannot travel
(surrogates, NUL), unsafe environment keys, and API keys that cannot be a header are a
``ValidationError`` (never a bare ``OverflowError``, a late aiohttp error or a request that
the server would answer with a 500); printable keys and values in range are accepted.

The argument checks with their messages: ``test_validation.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hopx_async import AsyncHopx, AsyncSandbox, SandboxInfo, ValidationError
from hopx_async._validation import (
    MAX_PROCESS_TIMEOUT,
    MAX_SECONDS,
    env_vars,
    positive_int,
    positive_number,
)

# Nothing listens here (the client checks before it connects anywhere).
NOWHERE = "http://127.0.0.1:9"
SURROGATE = "\ud800"


def offline_sandbox(url: str) -> AsyncSandbox:
    """A sandbox whose every request would go through the counting proxy at ``url``."""
    client = AsyncHopx(api_key="k", base_url=url)
    info = SandboxInfo.from_wire({"id": "sbx_x", "status": "running", "public_host": url})
    return AsyncSandbox(client, client._control, info, token="t")


Call = Callable[[AsyncSandbox], Awaitable[Any]]

CASES: list[tuple[str, Call]] = [
    ("seconds", lambda s: s.set_timeout(10**12)),
    ("seconds", lambda s: s.set_timeout(MAX_SECONDS + 1)),
    ("timeout", lambda s: s.run_code_background("x", timeout=float("inf"))),
    ("timeout", lambda s: s.run_code_background("x", timeout=float("-inf"))),
    ("timeout", lambda s: s.run_code_background("x", timeout=float("nan"))),
    ("timeout", lambda s: s.run_code_background("x", timeout=10**400)),
    ("timeout", lambda s: s.run_code_background("x", timeout=1e300)),
    ("timeout", lambda s: s.run_code("x", timeout=float("inf"))),
    # past the documented 7-day maximum of a process
    ("timeout", lambda s: s.run_code_background("x", timeout=10**9)),
    ("timeout", lambda s: s.run_code_background("x", timeout=MAX_PROCESS_TIMEOUT + 1)),
    ("timeout", lambda s: s.commands.run("ls", background=True, timeout=10**9)),
    ("timeout", lambda s: s.commands.run("ls", timeout=10**400)),
    ("timeout", lambda s: s.commands.run("ls", background=True, timeout=float("inf"))),
    ("timeout", lambda s: s.process("proc_1").wait(timeout=float("inf"))),
    ("timeout", lambda s: s.process("proc_1").wait(timeout=10**400)),
    ("code", lambda s: s.run_code_background(SURROGATE)),
    ("code", lambda s: s.run_code(f"print('{SURROGATE}')")),
    ("command", lambda s: s.commands.run(f"echo {SURROGATE}")),
    ("working_dir", lambda s: s.run_code_background("x", working_dir=SURROGATE)),
    ("working_dir", lambda s: s.commands.run("ls", working_dir="/workspace/" + SURROGATE)),
    ("name", lambda s: s.run_code_background("x", name=SURROGATE)),
    ("env", lambda s: s.run_code_background("x", env={"A": SURROGATE})),
    ("env", lambda s: s.run_code_background("x", env={"A": "a\0b"})),
    ("env", lambda s: s.run_code_background("x", env={"A\n": "v"})),
    ("env", lambda s: s.run_code_background("x", env={"A=B": "v"})),
    ("env", lambda s: s.run_code_background("x", env={"1A": "v"})),
    ("env", lambda s: s.run_code_background("x", env={SURROGATE: "v"})),
    ("env", lambda s: s.commands.run("ls", env={"A B": "v"})),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("argument", "call"), CASES)
async def test_refused_before_io(argument: str, call: Call, proxy: Any) -> None:
    sandbox = offline_sandbox(proxy.url)
    with pytest.raises(ValidationError) as err:
        await call(sandbox)
    assert err.value.argument == argument
    assert len(str(err.value)) < 300, "the message stays short, even for a 400-digit number"
    assert not proxy.counts, "no request may be sent"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"timeout_seconds": 10**20}, "timeout_seconds"),
        ({"timeout_seconds": MAX_SECONDS + 1}, "timeout_seconds"),
        ({"env_vars": {"A\n": "v"}}, "env_vars"),
        ({"env_vars": {"A": SURROGATE}}, "env_vars"),
        ({"region": SURROGATE}, "region"),
    ],
)
async def test_create_refused_before_io(kwargs: dict[str, Any], argument: str, proxy: Any) -> None:
    client = AsyncHopx(api_key="k", base_url=proxy.url)
    with pytest.raises(ValidationError) as err:
        await client.sandboxes.create("code-interpreter", **kwargs)
    assert err.value.argument == argument
    assert not proxy.counts, "no request may be sent"


@pytest.mark.parametrize(
    "key", ["K\r\nX: 1", "K\nX", "K\x00", "K\x7f", "clé", "K\tK", "k" + SURROGATE]
)
def test_api_key_that_cannot_be_a_header_is_refused_at_creation(key: str) -> None:
    with pytest.raises(ValidationError) as err:
        AsyncHopx(api_key=key, base_url=NOWHERE)
    assert err.value.argument == "api_key"
    assert key.strip() not in str(err.value), "the key itself is never shown"


def test_api_key_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOPX_API_KEY", "K\x1bX")
    with pytest.raises(ValidationError) as err:
        AsyncHopx(base_url=NOWHERE)
    assert err.value.argument == "HOPX_API_KEY"


def test_api_key_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(ValidationError, match="api_key"):
        AsyncHopx(api_key=123, base_url=NOWHERE)  # type: ignore[arg-type]


def test_printable_keys_and_limits_are_accepted() -> None:
    assert AsyncHopx(api_key=" hopx_live_A-b.c~d ", base_url=NOWHERE) is not None
    assert positive_int("seconds", MAX_SECONDS) == MAX_SECONDS
    assert positive_int("timeout_seconds", 1) == 1
    assert positive_number("timeout", 1e-3) == 1e-3
    assert positive_number("timeout", MAX_SECONDS) == float(MAX_SECONDS)
    assert env_vars("env", {"_A1": "é ✓ \n"}) == {"_A1": "é ✓ \n"}
