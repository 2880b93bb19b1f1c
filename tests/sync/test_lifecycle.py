"""The facade's life cycle where it meets the process: Ctrl-C, fork(), atexit, the GC.

Each case runs a small script in a fresh interpreter against the session's local backend
(over real HTTP), because what is checked is what a user sees on stderr at exit, in a
forked child, or from an ``atexit`` handler.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process semantics")


def run_script(backend: Any, code: str, *args: str, host: str = "127.0.0.1") -> tuple[str, str]:
    """Run ``code`` with ``U``/``K`` (and the HOPX_* variables) set; return stdout, stderr."""
    url = backend.base_url.replace("127.0.0.1", host)
    env = {**os.environ, "U": url, "K": backend.api_key}
    env.update(HOPX_BASE_URL=url, HOPX_API_KEY=backend.api_key)
    done = subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, done.stderr


def test_ctrl_c_in_wait_all_cancels_the_batch_cleanly(backend: Any) -> None:
    """No "_GatheringFuture exception was never retrieved" at exit, processes untouched."""
    out, err = run_script(
        backend,
        """
        import gc, os, signal
        from hopx_sync import Hopx

        with Hopx(api_key=os.environ["K"], base_url=os.environ["U"]) as client:
            with client.sandboxes.create("code-interpreter") as sandbox:
                quick = sandbox.run_code_background("print('quick')")
                slow = [sandbox.run_code_background("import time; time.sleep(60)") for _ in "ab"]

                def progress(done, total, result):
                    signal.raise_signal(signal.SIGINT)  # Ctrl-C while the batch waits

                try:
                    client.wait_all([quick, *slow], timeout=600, on_progress=progress)
                except KeyboardInterrupt:
                    print("interrupted")
                gc.collect()
                print("running:", sorted(p.refresh().status for p in slow))
                print("killed:", [p.kill() for p in slow])
        gc.collect()
        """,
    )
    assert out.splitlines() == [
        "interrupted",
        "running: ['running', 'running']",
        "killed: [True, True]",
    ]
    assert err == ""


def test_the_forked_child_can_use_the_facade_again(backend: Any) -> None:
    out, err = run_script(
        backend,
        """
        import os, sys
        from hopx_sync import Hopx, Sandbox

        client = Hopx(api_key=os.environ["K"], base_url=os.environ["U"])
        standalone = Sandbox.create(template="code-interpreter")
        print("parent:", standalone.run_code("print(1)").stdout.strip())
        sys.stdout.flush()  # a piped stdout is block-buffered: the child would print it again
        pid = os.fork()
        if pid == 0:
            try:
                client.sandboxes.list_templates()
            except RuntimeError as exc:
                print("old client:", "fork" in str(exc))
            child = Sandbox.create(template="code-interpreter")
            print("child standalone:", child.run_code("print(2)").stdout.strip())
            child.kill()
            with Hopx(api_key=os.environ["K"], base_url=os.environ["U"]) as fresh:
                print("child client:", fresh.sandboxes.get(standalone.id).status)
            sys.stdout.flush()
            sys.exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit:", os.waitstatus_to_exitcode(status))
        print("parent again:", standalone.run_code("print(3)").stdout.strip())
        standalone.kill()
        client.close()
        """,
    )
    assert out.splitlines() == [
        "parent: 1",
        "old client: True",
        "child standalone: 2",
        "child client: running",
        "child exit: 0",
        "parent again: 3",
    ]
    assert err == ""


@pytest.mark.parametrize("first_use", ["before", "after"])
def test_calls_from_atexit_work_with_a_host_name(backend: Any, first_use: str) -> None:
    """``localhost`` must be resolved after the standard thread pools stopped taking work."""
    out, err = run_script(
        backend,
        f"""
        import atexit, os

        def at_exit():
            from hopx_sync import Hopx, Sandbox

            with Hopx(api_key=os.environ["K"], base_url=os.environ["U"]) as client:
                with client.sandboxes.create("code-interpreter") as sandbox:
                    print("client:", sandbox.run_code("print(7)").stdout.strip())
            standalone = Sandbox.create(template="code-interpreter")
            print("standalone:", standalone.run_code("print(8)").stdout.strip())
            standalone.kill()

        if {first_use == "before"!r}:
            from hopx_sync import Hopx
            with Hopx(api_key=os.environ["K"], base_url=os.environ["U"]) as client:
                client.sandboxes.list_templates()
        atexit.register(at_exit)
        """,
        host="localhost",
    )
    assert out.splitlines() == ["client: 7", "standalone: 8"]
    assert err == ""


@pytest.mark.parametrize("how", ["collected", "at exit"])
def test_an_unclosed_client_warns_once_with_sync_advice(backend: Any, how: str) -> None:
    _, err = run_script(
        backend,
        f"""
        import gc, os
        from hopx_sync import Hopx

        with Hopx(api_key=os.environ["K"], base_url=os.environ["U"]) as closed:
            closed.sandboxes.list_templates()  # closed: no warning
        del closed
        client = Hopx(api_key=os.environ["K"], base_url=os.environ["U"])
        client.sandboxes.list_templates()  # the connection pool is open
        if {how == "collected"!r}:
            del client
            gc.collect()
            print("collected")
        """,
        "-W",
        "always::ResourceWarning",
    )
    warnings = [line for line in err.splitlines() if "Warning" in line]
    assert len(warnings) == 1, err
    assert "ResourceWarning: unclosed hopx_sync.Hopx client created at <string>:" in warnings[0]
    assert "with Hopx() as client:" in warnings[0]
    assert "client.close()" in warnings[0]
    assert "Unclosed" not in err and "AsyncHopx" not in err and "async with" not in err
