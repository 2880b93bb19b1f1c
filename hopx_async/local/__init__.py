"""The embedded local backend: a HopX-compatible server that runs code in local processes.

It speaks the HopX HTTP API (control plane under ``/v1``, each sandbox's agent under
``/sandboxes/{id}``) plus a few extensions advertised in ``/health``; see
``docs/local-backend.md``. From a shell::

    eval "$(hopx local start --state-dir DIR)"     # in the background; `hopx local stop`
    hopx local serve [--host 127.0.0.1] [--port 0] [--state-dir DIR]   # in the foreground
"""

from .backend import LocalBackend
from .version import __version__

__all__ = ["LocalBackend", "__version__"]
