"""``python -m hopx_async.cli``: the ``hopx`` command, for when the venv's bin is not on PATH."""

from __future__ import annotations

from . import main

if __name__ == "__main__":
    main()
