"""The version the local backend reports in ``/health``: the installed package's."""

from __future__ import annotations

from importlib import metadata

__all__ = ["__version__"]

try:
    __version__ = metadata.version("hopx-async")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
