"""The pytest plugin (``hopx_async.testing``): a user's test file that takes its fixtures
passes with no conftest of its own, run by pytest in a subprocess as a user would run it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import pytest


def test_backend_has_an_address(hopx_backend):
    assert hopx_backend.base_url.startswith("http://127.0.0.1:")
    assert hopx_backend.api_key


@pytest.mark.anyio
async def test_async_sandbox(hopx_sandbox):
    proc = await hopx_sandbox.run_code_background("print(6 * 7)")
    assert (await proc.wait(timeout=30, check=True)).stdout == "42\\n"


def test_sync_sandbox(hopx_sync_sandbox):
    proc = hopx_sync_sandbox.run_code_background("print(6 * 7)")
    assert proc.wait(timeout=30, check=True).stdout == "42\\n"


def test_sync_client(hopx_sync_client):
    with hopx_sync_client.sandboxes.create("code-interpreter") as sandbox:
        assert sandbox.commands.run("echo hi").stdout == "hi\\n"
"""

# trio, if installed, would add a second run of each async test; aiohttp needs asyncio
ASYNCIO_ONLY = """
import pytest

@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def test_a_users_tests_pass_with_the_plugin_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine=USER_TESTS + ASYNCIO_ONLY)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=4)


def test_the_fixtures_are_listed_with_their_docs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider", timeout=60)
    result.stdout.fnmatch_lines(["*hopx_local_backends*session*", "*hopx_sync_client*"])


def test_an_unknown_dialect_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mine="def test_nothing(hopx_backend):\n    pass\n")
    result = pytester.runpytest_subprocess("--hopx-dialect", "soap", timeout=60)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown hopx dialect 'soap'*'extended', 'hopx', 'openapi'*"])


def test_each_test_gets_the_dialect_it_names(pytester: pytest.Pytester) -> None:
    """The option picks the run's dialect, a marker one test's; each is a real backend of
    that dialect (its control plane's /health says which), and an unknown name fails."""
    pytester.makepyfile(
        test_mine="import json, urllib.request\n"
        "import pytest\n\n"
        "def dialect_of(backend):\n"
        "    with urllib.request.urlopen(backend.base_url + '/health') as answer:\n"
        "        return json.load(answer)['dialect']\n\n"
        "def test_run_default(hopx_backend):\n"
        "    assert dialect_of(hopx_backend) == 'hopx'\n\n"
        "@pytest.mark.hopx_dialect('openapi')\n"
        "def test_marked(hopx_backend, hopx_sync_client):\n"
        "    assert dialect_of(hopx_backend) == 'openapi'\n\n"
        "@pytest.mark.hopx_dialect('soap')\n"
        "def test_unknown(hopx_backend):\n    pass\n"
    )
    result = pytester.runpytest_subprocess("-q", "--hopx-dialect", "hopx", timeout=120)
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*unknown hopx dialect 'soap'*"])
