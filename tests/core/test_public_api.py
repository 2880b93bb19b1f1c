"""The public surface: ``__all__`` names exactly the public names, and each is documented."""

from __future__ import annotations

import inspect
import types

import pytest

import hopx_async
import hopx_async.local
import hopx_sync


@pytest.mark.parametrize("module", [hopx_async, hopx_async.local, hopx_sync])
def test_all_is_exactly_the_public_names(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public -= {"annotations"}  # `from __future__ import annotations`
    assert set(module.__all__) - {"__version__"} == public - {"__version__"}
    assert len(module.__all__) == len(set(module.__all__)), "no duplicates in __all__"


@pytest.mark.parametrize("name", hopx_async.__all__)
def test_public_names_have_docstrings(name: str) -> None:
    obj = getattr(hopx_async, name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return
    assert inspect.getdoc(obj), f"{name} has no docstring"
    if inspect.isclass(obj) and name.startswith("Async"):
        for member in vars(obj):
            value = getattr(obj, member)
            if member.startswith("_") or not (inspect.isroutine(value) or inspect.ismethod(value)):
                continue
            assert inspect.getdoc(value), f"{name}.{member} has no docstring"
