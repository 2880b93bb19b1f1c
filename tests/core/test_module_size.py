"""No hand-written module of ``hopx_async`` (``cli`` and ``local`` included) over 450 lines.

A module that grows past it holds more than one concern: split it by concern. The generated
``hopx_sync/_generated.py`` is not in ``hopx_async`` and not counted.
"""

from __future__ import annotations

from pathlib import Path

import hopx_async

PACKAGE = Path(hopx_async.__file__).parent
MAX_LINES = 450


def module_sizes() -> dict[str, int]:
    """Every module of the package, recursively, by its path in the repository -> its lines."""
    return {
        path.relative_to(PACKAGE.parent).as_posix(): len(path.read_text().splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def test_the_modules_are_found_in_every_subpackage() -> None:
    sizes = module_sizes()
    assert "hopx_async/__init__.py" in sizes
    assert any(name.startswith("hopx_async/cli/") for name in sizes)
    assert any(name.startswith("hopx_async/local/") for name in sizes)


def test_no_module_is_over_450_lines() -> None:
    over = {name: size for name, size in module_sizes().items() if size > MAX_LINES}
    listed = "\n".join(
        f"  {name}: {size} lines" for name, size in sorted(over.items(), key=lambda kv: -kv[1])
    )
    assert not over, (
        f"{len(over)} modules over {MAX_LINES} lines (split them by concern):\n{listed}"
    )
