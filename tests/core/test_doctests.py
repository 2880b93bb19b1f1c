"""The examples in the docstrings of every module of ``hopx_async`` and ``hopx_sync`` run
and print what they show (examples marked ``+SKIP`` need a live sandbox; the site's pages
run those against the local backend)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import hopx_async
import hopx_sync


def _modules() -> list[str]:
    names = []
    for package in (hopx_async, hopx_sync):
        names.append(package.__name__)
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__"):
                names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {results.attempted} examples failed"


def test_the_examples_are_found() -> None:
    """The finder reaches the no-I/O helpers' examples (a test that runs none proves nothing)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    module = importlib.import_module("hopx_async._output")
    examples = sum(len(t.examples) for t in finder.find(module, module.__name__))
    assert examples >= 10
