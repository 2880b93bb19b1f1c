"""MkDocs hooks: pages generated at build time from the code, so that they cannot drift.

A page holds a marker comment that the hook replaces:

- ``<!-- generated: cli -->``: every ``hopx`` command, walked from the click group;
- ``<!-- generated: errors -->``: the exception tree of :mod:`hopx_async`, with docstrings;
- ``<!-- generated: reference MODULE -->``: one mkdocstrings entry per name in ``__all__``;
- ``<!-- generated: matrix -->``: the benchmark matrix, taken from the README.

``tests/test_docs.py`` renders the same pages to check their code blocks.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

MARKER = re.compile(r"<!-- generated: (\w+)(?: ([\w.]+))? -->")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return expand(markdown)


def expand(markdown: str) -> str:
    """Replace every generated-content marker in ``markdown``."""

    def replace(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "cli":
            return render_cli()
        if kind == "errors":
            return render_errors()
        if kind == "reference" and arg:
            return render_reference(arg)
        if kind == "matrix":
            return render_matrix()
        raise ValueError(f"unknown generated section: {match.group(0)}")

    return MARKER.sub(replace, markdown)


# ---------------------------------------------------------------- command line
def _cli_group() -> Any:
    """The ``hopx`` click group, found in whichever module of hopx_async.cli defines it."""
    import click

    import hopx_async.cli as package

    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, click.Group) and value.name == "cli":
                return value
    raise LookupError("no click group named 'cli' in hopx_async.cli")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _prose(text: str) -> str:
    """Docstring markup (reST roles, double backquotes) as Markdown."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _help(text: str) -> str:
    """A click help text as Markdown: paragraphs as prose, example command lines as a list."""
    # click's \b marks a paragraph kept as written; \f ends what is shown
    text = inspect.cleandoc(text.split("\f")[0])
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text):
        verbatim = paragraph.lstrip().startswith("\b")
        lines = [line.strip() for line in paragraph.splitlines() if line.strip() not in ("", "\b")]
        if lines and (verbatim or all(line.startswith("hopx ") for line in lines)):
            paragraphs.append("\n".join(f"- `{line}`" for line in lines))
        elif lines:
            paragraphs.append(" ".join(lines))
    return "\n\n".join(paragraphs)


def _command(command: Any, path: str, ctx: Any, out: list[str]) -> None:
    import click

    level = "#" * min(2 + path.count(" "), 4)
    out.append(f"{level} `{path}`\n")
    if command.help:
        out.append(_help(command.help) + "\n")
    pieces = command.collect_usage_pieces(ctx)
    out.append(f"Usage: `{path} {' '.join(pieces)}`\n")
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            if isinstance(param, click.Argument):
                rows.append((param.make_metavar(ctx), "argument"))
            continue
        if not record[1] and isinstance(param, click.Argument):
            rows.append((record[0], "argument"))
            continue
        rows.append((record[0], record[1]))
    if rows:
        out.append("| option | meaning |\n|---|---|")
        out.extend(f"| `{_cell(name)}` | {_cell(text)} |" for name, text in rows)
        out.append("")
    passthrough = [
        p for p in command.params if isinstance(p.type, click.types.UnprocessedParamType)
    ]
    if passthrough:  # a command that hands its arguments to a parser of its own (argparse)
        _passthrough_help(path, out)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            _command(sub, f"{path} {name}", click.Context(sub, info_name=name, parent=ctx), out)


def _run_help(words: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hopx_async.cli", *words, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "100", "NO_COLOR": "1"},
    )
    return done.stdout.rstrip()


def _passthrough_help(path: str, out: list[str]) -> None:
    words = path.split()[1:]
    text = _run_help(words)
    out.append(f"```text\n{text}\n```\n")
    choices = re.search(r"\{([\w,-]+)\}", text)
    for name in choices[1].split(",") if choices else []:
        out.append(f"{'#' * min(3 + len(words), 4)} `{path} {name}`\n")
        out.append(f"```text\n{_run_help([*words, name])}\n```\n")


def render_cli() -> str:
    """Markdown for every ``hopx`` command: its help, usage and options."""
    import click

    group = _cli_group()
    out: list[str] = []
    _command(group, "hopx", click.Context(group, info_name="hopx"), out)
    return "\n".join(out)


# ---------------------------------------------------------------- errors
def render_errors() -> str:
    """Markdown for the exception tree of hopx_async: one entry per class, by inheritance."""
    import hopx_async

    classes = [
        getattr(hopx_async, name)
        for name in hopx_async.__all__
        if inspect.isclass(getattr(hopx_async, name))
        and issubclass(getattr(hopx_async, name), BaseException)
    ]
    ours = set(classes)
    out: list[str] = []

    def parent(cls: type) -> type | None:
        return next((base for base in cls.__mro__[1:] if base in ours), None)

    def visit(cls: type, depth: int) -> None:
        builtins = [
            base.__name__ for base in cls.__bases__ if base not in ours and base is not Exception
        ]
        also = f" (also a built-in `{'`, `'.join(builtins)}`)" if builtins else ""
        doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
        summary = _prose(" ".join(doc.split()))
        out.append(f"{'    ' * depth}- **`{cls.__name__}`**{also}: {summary}")
        for child in classes:
            if parent(child) is cls:
                visit(child, depth + 1)

    for root in classes:
        if parent(root) is None:
            visit(root, 0)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- reference
def render_reference(module_name: str) -> str:
    """One mkdocstrings entry per public name of ``module_name`` (its ``__all__``).

    Names re-exported from another top-level package (``hopx_sync`` re-exports the models,
    configuration and errors of ``hopx_async``) are listed, not documented twice.
    """
    module = importlib.import_module(module_name)
    top = module_name.split(".")[0]
    out, borrowed = [], []
    for name in module.__all__:
        if name.startswith("__"):
            continue
        origin = getattr(getattr(module, name), "__module__", None) or module_name
        if isinstance(origin, str) and origin.split(".")[0] != top:
            borrowed.append(f"`{name}`")
            continue
        out.append(f"::: {module_name}.{name}\n")
    if borrowed:
        out.append(
            "Also exported here, the same objects as in `hopx_async`: " + ", ".join(borrowed) + "."
        )
    return "\n".join(out)


# ---------------------------------------------------------------- benchmarks
def render_matrix() -> str:
    """The README's benchmark matrix (the table whose header starts with ``| N |``)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| N |"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end]) + "\n"
