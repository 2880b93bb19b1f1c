"""The ``hopx`` entry point: every command registered, every outcome mapped to an exit code."""

from __future__ import annotations

import os
import sys
import traceback

import click

from hopx_async import (
    ConfigurationError,
    HopxError,
    ValidationError,
    WaitTimeoutError,
)

from . import _cp, _env, _kill, _logs, _map, _ps, _run, _sandboxes, _shell, _templates, _wait  # noqa: F401  (registers the commands)
from ._common import (
    EXIT_API,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    CliError,
    Interrupted,
)
from ._group import cli
from ._hints import cli_message
from ._output import describe, note


# ------------------------------------------------------------------------------ entry point
def execute(argv: list[str]) -> int:
    """Run ``hopx`` and map every outcome to an exit code and at most one line on stderr."""
    debug = "--debug" in argv or os.environ.get("HOPX_DEBUG") == "1"
    try:
        result = cli.main(args=argv, prog_name="hopx", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        note("interrupted")
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_USAGE
    except CliError as exc:
        return _fail(str(exc), exc.code, debug)
    except (Interrupted, KeyboardInterrupt):
        note("interrupted")
        return EXIT_INTERRUPTED
    except WaitTimeoutError as exc:
        return _fail(describe(exc), EXIT_TIMEOUT, debug)
    except (ValidationError, ConfigurationError) as exc:
        return _fail(describe(exc), EXIT_USAGE, debug)
    except HopxError as exc:
        return _fail(cli_message(exc, _base_url(argv)), EXIT_API, debug)
    except BrokenPipeError:
        # the reader went away (hopx ps | head): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        return _fail(
            f"unexpected {type(exc).__name__}: {describe(exc)} (--debug for the traceback)",
            EXIT_FAILED,
            debug,
        )
    return result if isinstance(result, int) else EXIT_OK


def _base_url(argv: list[str]) -> str | None:
    """``--base-url`` from the arguments, if given (else the environment's is used)."""
    for i, arg in enumerate(argv):
        if arg == "--base-url" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--base-url="):
            return arg.partition("=")[2]
    return None


def _fail(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"hopx: error: {message}", file=sys.stderr, flush=True)
    return code
