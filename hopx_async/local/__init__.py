"""The embedded local backend: a HopX-compatible server that runs code in local processes.

It speaks the HTTP API of ``shared/hopx-api.md`` (control plane under ``/v1``, each
sandbox's agent under ``/sandboxes/{id}``) plus a few advertised extensions; see
``docs/local-backend.md``.

    python -m hopx_async.local serve [--host 127.0.0.1] [--port 0] [--api-key KEY] [--state-dir DIR]
"""

from ._backend import LocalBackend
from ._version import __version__

__all__ = ["LocalBackend", "__version__"]
