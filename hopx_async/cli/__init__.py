"""The ``hopx`` command line, built on the public :mod:`hopx_async` API.

Install it with the ``cli`` extra (click and rich)::

    pip install 'hopx-async[cli]'     # or, in a clone: pip install -e '.[cli]'
    hopx --help
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

HINT = "hopx: the command line needs click and rich: pip install 'hopx-async[cli]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hopx`` with ``argv`` (default: the process's arguments); return the exit code.

    >>> main(["--version"])  # doctest: +SKIP
    """
    code = _main(list(sys.argv[1:] if argv is None else argv))
    if argv is None:
        sys.exit(code)
    return code


def _main(argv: list[str]) -> int:
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError:
        print(HINT, file=sys.stderr)
        return 2
    from ._app import execute

    code: int = execute(argv)
    return code
