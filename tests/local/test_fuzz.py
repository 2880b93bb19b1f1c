"""Generated bad input against the raw HTTP surface and the SDK's arguments.

Every route gets generated bodies, query strings, path segments and header bytes; the SDK
gets generated arguments. Nothing may be answered with a 5xx, every error answer of the
application is the documented flat body, the SDK raises only its own exceptions, and the
server still answers a health request at the end of each test.

The runs are derandomized (the same examples every run) and bounded by ``max_examples``.
Generated code and commands are always harmless (a comment, ``true``, ``print(1)``): the
generator never writes a shell command of its own.

Each surface is fuzzed once per module run, by a module-scoped fixture that returns the
distinct bad inputs it met (those answered 4xx, or refused with ``ValidationError``); the
test of a surface asserts that enough of its inputs were bad, so that the generator reaches
the error paths, and the last test that all surfaces together did. Each test stands alone:
run by itself (or with ``-k``), it fuzzes what it asserts on. The counts are printed at the
end of the module.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hopx_async.local import LocalBackend
from hopx_sync import APIError, Hopx, HopxError, RetryPolicy, Sandbox, ValidationError

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


#: the least number of distinct bad inputs each surface must meet among its 150 examples
#: (about half of what the derandomized runs meet: 104, 107, 148 and 58)
BODIES_AT_LEAST = 50
QUERIES_AT_LEAST = 50
HEADERS_AT_LEAST = 75
SDK_AT_LEAST = 25


class FuzzBackend(LocalBackend):
    # A body that never comes (a generated Content-Length) is given up on quickly.
    read_timeout = 0.5


@pytest.fixture(scope="module")
def server() -> Iterator[LocalBackend]:
    with FuzzBackend.in_thread() as backend:
        yield backend


@pytest.fixture(scope="module")
def client(server: LocalBackend) -> Iterator[Hopx]:
    with Hopx(
        api_key=server.api_key, base_url=server.base_url, retries=RetryPolicy(max_retries=0)
    ) as hopx:
        yield hopx


@pytest.fixture(scope="module")
def sandbox(client: Hopx) -> Iterator[Sandbox]:
    with client.sandboxes.create("code-interpreter") as sbx:
        yield sbx


@pytest.fixture(scope="module")
def token(server: LocalBackend, sandbox: Sandbox) -> str:
    headers = {"X-API-Key": server.api_key}
    status, _, raw = _send(server, "GET", f"/v1/sandboxes/{sandbox.id}", b"", headers)
    assert status == 200, raw
    return str(json.loads(raw)["auth_token"])


@pytest.fixture(scope="module")
def report(request: pytest.FixtureRequest) -> Iterator[dict[str, set[str]]]:
    """The distinct bad inputs of each surface fuzzed in this run, printed at the module's end."""
    bad: dict[str, set[str]] = {}
    yield bad
    if not bad:
        return
    counts = ", ".join(f"{name}: {len(seen)}" for name, seen in bad.items())
    total = sum(len(seen) for seen in bad.values())
    line = f"fuzz: {total} distinct bad inputs ({counts}), none answered 5xx"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        print(f"\n{line}")


# -- values --------------------------------------------------------------------------------------

SURROGATE = st.sampled_from(["\ud800", "a\udfffb", "\udc80"])
ODD_TEXT = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "../..", "/etc", "/workspace/../..", "A\n", "é", "x" * 5000]
)
TEXT = st.one_of(st.text(max_size=30), SURROGATE, ODD_TEXT)
#: code and commands: harmless whatever the generator picks
SAFE_CODE = st.one_of(
    st.sampled_from(["print(1)", "true", "exit 3", "bash", "sh"]),
    st.text(max_size=30).map(lambda t: "#" + t.replace("\n", " ").replace("\r", " ")),
)
NUMBER = st.one_of(
    st.integers(max_value=0),
    st.integers(min_value=2**31, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0.01, max_value=3),
)
NOT_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    NUMBER,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
WILD = st.one_of(NOT_TEXT, TEXT)
ENV = st.one_of(
    NOT_TEXT,
    st.dictionaries(st.one_of(st.text(max_size=8), SURROGATE, ODD_TEXT), WILD, max_size=3),
)

KEY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "code": st.one_of(SAFE_CODE, SURROGATE, NOT_TEXT),
    "command": st.one_of(SAFE_CODE, SURROGATE, NOT_TEXT),
    "args": st.one_of(st.lists(st.one_of(SAFE_CODE, SURROGATE, NOT_TEXT), max_size=3), WILD),
    "language": st.one_of(st.sampled_from(["python", "bash", "go", "cobol"]), WILD),
    "timeout": st.one_of(NUMBER, WILD),
    # a valid sandbox timeout is at least an hour here, so the fuzzed sandbox stays alive
    "timeout_seconds": st.one_of(NUMBER, WILD, st.integers(3600, 2**31 - 1)),
    "env": ENV,
    "env_vars": ENV,
    "working_dir": WILD,
    "workdir": WILD,
    "name": WILD,
    "template_name": st.one_of(st.sampled_from(["base", "code-interpreter"]), WILD),
    "template_id": st.one_of(st.sampled_from(["1", "2"]), WILD),
    "region": WILD,
    "internet_access": WILD,
    "process_id": WILD,
    "keys": st.one_of(st.lists(TEXT, max_size=3), WILD),
    "names": st.one_of(st.lists(TEXT, max_size=3), WILD),
}
JSON_BODY = st.one_of(
    st.fixed_dictionaries({}, optional={key: value for key, value in KEY_VALUES.items()}).map(
        lambda body: json.dumps(body).encode()
    ),
    st.lists(st.integers(), max_size=3).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=60),
    st.sampled_from(
        [b"", b"{", b"null", b'"x"', b"[" * 20000, b'{"code": "\\ud800"}', b"\xff\xfe{}", b"NaN"]
    ),
)

#: every route, with {sid} for the fuzzed sandbox and {x} for a generated path segment
ROUTES = [
    ("GET", "/health"),
    ("POST", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes"),
    ("GET", "/v1/sandboxes/{x}"),
    ("DELETE", "/v1/sandboxes/{x}"),
    ("POST", "/v1/sandboxes/{x}/kill"),
    ("POST", "/v1/sandboxes/{x}/pause"),
    ("POST", "/v1/sandboxes/{x}/resume"),
    ("PUT", "/v1/sandboxes/{x}/timeout"),
    ("PUT", "/v1/sandboxes/{sid}/timeout"),
    ("POST", "/v1/sandboxes/{x}/token/refresh"),
    ("GET", "/v1/templates"),
    ("GET", "/v1/templates/{x}"),
    ("GET", "/sandboxes/{sid}/health"),
    ("POST", "/sandboxes/{sid}/execute"),
    ("POST", "/sandboxes/{sid}/execute/background"),
    ("GET", "/sandboxes/{sid}/execute/processes"),
    ("GET", "/sandboxes/{sid}/execute/processes/{x}"),
    ("DELETE", "/sandboxes/{sid}/execute/processes/{x}"),
    ("DELETE", "/sandboxes/{sid}/execute/kill"),
    ("POST", "/sandboxes/{sid}/execute/kill/{x}"),
    ("POST", "/sandboxes/{sid}/processes/{x}/kill"),
    ("GET", "/sandboxes/{sid}/processes"),
    ("POST", "/sandboxes/{sid}/commands/run"),
    ("POST", "/sandboxes/{sid}/commands/background"),
    ("GET", "/sandboxes/{sid}/env"),
    ("PUT", "/sandboxes/{sid}/env"),
    ("PATCH", "/sandboxes/{sid}/env"),
    ("DELETE", "/sandboxes/{sid}/env"),
    ("GET", "/sandboxes/{x}/execute/processes"),
]
SEGMENT = st.one_of(
    st.text(max_size=20).map(lambda t: urllib.parse.quote(t, safe="")),
    SURROGATE.map(lambda t: urllib.parse.quote(t.encode("utf-8", "surrogatepass"), safe="")),
    st.sampled_from(["..", "%2e%2e", "%2F", "%00", "%ED%A0%80", "%FF", "x" * 3000, "proc_1"]),
)
QUERY_VALUE = st.one_of(
    st.text(max_size=12).map(lambda t: urllib.parse.quote(t, safe="")),
    st.sampled_from(
        ["-1", "0", "1e999", "nan", "inf", "9" * 5000, "0.01", "true", "%ED%A0%80", "%00", ""]
    ),
)
QUERY_KEYS = [
    "limit", "cursor", "status", "region", "output", "since", "wait",
    "stdout_offset", "stderr_offset", "max_bytes", "process_id",
]  # fmt: skip


# -- HTTP -----------------------------------------------------------------------------------------


def _path(template: str, sandbox: Sandbox, segment: str) -> str:
    return template.replace("{sid}", sandbox.id).replace("{x}", segment)


def _headers_for(path: str, server: LocalBackend, token: str) -> dict[str, str]:
    if path.startswith("/v1/"):
        return {"X-API-Key": server.api_key}
    if path.startswith("/sandboxes/"):
        return {"Authorization": f"Bearer {token}"}
    return {}


def _send(
    server: LocalBackend, method: str, path: str, body: bytes, headers: dict[str, str]
) -> Any:
    host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def _check(status: int, headers: list[tuple[str, str]], raw: bytes, what: str) -> None:
    assert status < 500, (what, status, raw[:300])
    request_ids = [value for key, value in headers if key.lower() == "x-request-id"]
    if not request_ids:
        # Refused by the HTTP layer before the application saw it (a request line over
        # 8 KiB): aiohttp's own plain-text 400.
        assert status == 400, (what, status, raw[:300])
        return
    if status >= 400:
        body = json.loads(raw)
        assert isinstance(body, dict), (what, body)
        assert isinstance(body["error"], str) and body["error"], (what, body)
        assert isinstance(body["code"], str), (what, body)
        assert body["request_id"] == request_ids[0], (what, body)


def _still_serving(server: LocalBackend) -> None:
    status, _, raw = _send(server, "GET", "/health", b"", {})
    assert status == 200 and json.loads(raw)["status"] == "healthy"
    status, _, raw = _send(server, "GET", "/v1/sandboxes", b"", {"X-API-Key": server.api_key})
    assert status == 200, raw


def _enough_refused(server: LocalBackend, bad: set[str], at_least: int) -> None:
    _still_serving(server)
    assert len(bad) >= at_least, (
        f"only {len(bad)} distinct bad inputs of {FUZZ.max_examples} generated: "
        "the generator no longer reaches the error paths"
    )


@pytest.fixture(scope="module")
def bad_bodies(
    server: LocalBackend, sandbox: Sandbox, token: str, report: dict[str, set[str]]
) -> set[str]:
    """Every route with generated bodies: the distinct ones answered 4xx."""
    bad = report["body"] = set()

    @FUZZ
    @given(route=st.sampled_from(ROUTES), body=JSON_BODY, segment=SEGMENT)
    def send(route: tuple[str, str], body: bytes, segment: str) -> None:
        method, template = route
        path = _path(template, sandbox, segment)
        headers = {"Content-Type": "application/json", **_headers_for(path, server, token)}
        status, answer_headers, raw = _send(server, method, path, body, headers)
        _check(status, answer_headers, raw, f"{method} {path} {body[:200]!r}")
        if status >= 400:
            bad.add(f"{method} {template} {segment} {body!r}")

    send()
    return bad


def test_bodies(server: LocalBackend, bad_bodies: set[str]) -> None:
    _enough_refused(server, bad_bodies, at_least=BODIES_AT_LEAST)


@pytest.fixture(scope="module")
def bad_queries_and_paths(
    server: LocalBackend, sandbox: Sandbox, token: str, report: dict[str, set[str]]
) -> set[str]:
    """Every route with generated path segments and query strings: those answered 4xx."""
    bad = report["query and path"] = set()

    @FUZZ
    @given(
        route=st.sampled_from(ROUTES),
        segment=SEGMENT,
        query=st.lists(st.tuples(st.sampled_from(QUERY_KEYS), QUERY_VALUE), max_size=4),
    )
    def send(route: tuple[str, str], segment: str, query: list[tuple[str, str]]) -> None:
        method, template = route
        path = _path(template, sandbox, segment)
        if query:
            path += "?" + "&".join(f"{key}={value}" for key, value in query)
        status, answer_headers, raw = _send(
            server, method, path, b"", _headers_for(path, server, token)
        )
        _check(status, answer_headers, raw, f"{method} {path}")
        if status >= 400:
            bad.add(f"{method} {path}")

    send()
    return bad


def test_query_strings_and_paths(server: LocalBackend, bad_queries_and_paths: set[str]) -> None:
    _enough_refused(server, bad_queries_and_paths, at_least=QUERIES_AT_LEAST)


HEADER_NAMES = st.sampled_from(
    [
        b"X-API-Key",
        b"Authorization",
        b"Idempotency-Key",
        b"Content-Type",
        b"Content-Length",
        b"Transfer-Encoding",
        b"Content-Encoding",
        b"Origin",
        b"X-\xff",
        b"Bad Name",
    ]
)
HEADER_VALUES = st.one_of(
    st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from(
        [b"Bearer \xff\xfe", b"Bearer cl\xc3\xa9", b"Bearer \xed\xa0\x80", b"cl\xe9", b"-1",
         b"99999999999999999999", b"chunked", b"gzip", b"Bearer", b"Bearer hopx1.a.b", b""]
    ),
)  # fmt: skip


def _read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """One answer's head and body: up to its Content-Length, else until the server closes."""
    raw = b""
    while b"\r\n\r\n" not in raw and (chunk := sock.recv(65536)):
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    while (not lengths or len(body) < lengths[0]) and (chunk := sock.recv(65536)):
        body += chunk
    return head, body


@pytest.fixture(scope="module")
def bad_headers(server: LocalBackend, sandbox: Sandbox, report: dict[str, set[str]]) -> set[str]:
    """Every route with generated header bytes, sent raw: the requests answered 4xx."""
    bad = report["headers"] = set()

    @FUZZ
    @given(
        route=st.sampled_from(ROUTES),
        headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), min_size=1, max_size=4),
        body=st.sampled_from([b"", b"{}", b'{"code": "print(1)"}', b'{"template_name": "base"}']),
    )
    def send(route: tuple[str, str], headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        method, template = route
        path = _path(template, sandbox, "proc_x")
        lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
        lines += [name + b": " + value for name, value in headers]
        if not any(name in (b"Content-Length", b"Transfer-Encoding") for name, _ in headers):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        request = b"\r\n".join(lines) + b"\r\n\r\n" + body
        host, port = server.base_url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(request)
            head, answer = _read_answer(sock)
        status = int(head.split(b" ", 2)[1])
        assert status < 500, (request, head, answer[:300])
        if b"X-Request-ID" in head and status >= 400 and b"chunked" not in head.lower():
            error = json.loads(answer)
            assert error["error"] and error["code"] and error["request_id"], error
        if status >= 400:
            bad.add(repr(request))

    send()
    return bad


def test_header_bytes(server: LocalBackend, bad_headers: set[str]) -> None:
    _enough_refused(server, bad_headers, at_least=HEADERS_AT_LEAST)


# -- the SDK --------------------------------------------------------------------------------------

CALLS = st.sampled_from(
    [
        "run_code_background",
        "run_code",
        "commands.run",
        "commands.background",
        "set_timeout",
        "create",
        "client",
        "get",
        "wait",
        "list",
    ]
)
SDK_TEXT = st.one_of(TEXT, NOT_TEXT)
SDK_CODE = st.one_of(SAFE_CODE, SURROGATE, NOT_TEXT)
SDK_SECONDS = st.one_of(NUMBER, NOT_TEXT, TEXT, st.integers(3600, 2**31 - 1))


def _sdk_call(name: str, client: Hopx, sandbox: Sandbox, data: st.DataObject) -> Any:
    draw = data.draw
    if name == "run_code_background":
        return sandbox.run_code_background(
            draw(SDK_CODE),
            language=draw(st.one_of(st.just("python"), SDK_TEXT)),
            timeout=draw(st.one_of(st.just(5), SDK_SECONDS)),
            env=draw(st.one_of(st.none(), ENV)),
            name=draw(st.one_of(st.none(), SDK_TEXT)),
            working_dir=draw(st.one_of(st.none(), SDK_TEXT)),
        )
    if name == "run_code":
        return sandbox.run_code(
            draw(SDK_CODE),
            timeout=draw(st.one_of(st.just(5), SDK_SECONDS)),
            env=draw(st.one_of(st.none(), ENV)),
            working_dir=draw(st.one_of(st.none(), SDK_TEXT)),
        )
    if name in ("commands.run", "commands.background"):
        return sandbox.commands.run(
            draw(SDK_CODE),
            background=name == "commands.background",
            timeout=draw(st.one_of(st.none(), SDK_SECONDS)),
            env=draw(st.one_of(st.none(), ENV)),
            working_dir=draw(st.one_of(st.none(), SDK_TEXT)),
        )
    if name == "set_timeout":
        return sandbox.set_timeout(draw(SDK_SECONDS))
    if name == "create":
        with client.sandboxes.create(
            draw(st.one_of(st.just("base"), SDK_TEXT)),
            region=draw(st.one_of(st.none(), SDK_TEXT)),
            timeout_seconds=draw(st.one_of(st.none(), SDK_SECONDS)),
            env_vars=draw(st.one_of(st.none(), ENV)),
        ):
            return None
    if name == "client":
        key = draw(st.one_of(SDK_TEXT, st.binary(max_size=10).map(lambda b: b.decode("latin-1"))))
        Hopx(api_key=key, base_url=client.base_url).close()
        return None
    if name == "get":
        return client.sandboxes.get(draw(SDK_TEXT))
    if name == "wait":
        return sandbox.process(draw(SDK_TEXT)).wait(timeout=draw(SDK_SECONDS))
    assert name == "list"
    return list(
        client.sandboxes.list(
            page_size=draw(st.one_of(st.just(10), SDK_SECONDS)),
            status=draw(st.one_of(st.none(), SDK_TEXT)),
        )
    )


@pytest.fixture(scope="module")
def bad_sdk_arguments(
    client: Hopx, sandbox: Sandbox, server: LocalBackend, report: dict[str, set[str]]
) -> set[str]:
    """The SDK's calls with generated arguments: the distinct refusals."""
    bad = report["sdk"] = set()

    @FUZZ
    @given(name=CALLS, data=st.data())
    def call(name: str, data: st.DataObject) -> None:
        refused: HopxError | None = None
        try:
            _sdk_call(name, client, sandbox, data)
        except HopxError as exc:  # the SDK's own, typed; anything else fails the test
            refused = exc
        if isinstance(refused, APIError):
            assert refused.status < 500, refused
        if isinstance(refused, (ValidationError, APIError)):
            bad.add(f"{name} {refused}")
        _still_serving(server)

    call()
    return bad


def test_sdk_arguments(server: LocalBackend, bad_sdk_arguments: set[str]) -> None:
    _enough_refused(server, bad_sdk_arguments, at_least=SDK_AT_LEAST)


def test_the_server_kept_serving_and_enough_was_refused(
    server: LocalBackend,
    bad_bodies: set[str],
    bad_queries_and_paths: set[str],
    bad_headers: set[str],
    bad_sdk_arguments: set[str],
) -> None:
    _still_serving(server)
    surfaces = [bad_bodies, bad_queries_and_paths, bad_headers, bad_sdk_arguments]
    assert sum(len(bad) for bad in surfaces) >= 150, [len(bad) for bad in surfaces]
