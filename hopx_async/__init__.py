"""hopx_async: run code in the background in HopX sandboxes, many at once, and watch it finish.

>>> import asyncio, hopx_async
>>> async def main():  # doctest: +SKIP
...     async with hopx_async.AsyncHopx() as client:
...         async with client.sandboxes.create("code-interpreter") as sandbox:
...             proc = await sandbox.run_code_background("print('hello')")
...             print((await proc.wait()).stdout)

The blocking twin of every class lives in :mod:`hopx_sync` (``AsyncHopx`` -> ``Hopx``).
The embedded local backend lives in :mod:`hopx_async.local`.
"""

from . import _errors
from ._client import AsyncHopx, AsyncSandboxes
from ._commands import AsyncCommands
from ._config import DEFAULT_BASE_URL, Limits, PollPolicy, RetryPolicy, Timeouts
from ._defaults import aclose_default_client
from ._errors import *  # noqa: F403 (the error classes, named once in _errors.__all__)
from ._execution import AsyncExecution
from ._fanout import ProgressCallback, Task
from ._files import AsyncEnv, AsyncFiles
from ._manifest import Manifest
from ._models import ProcessInfo, ProcessResult, ProcessStatus, Resources, SandboxInfo, Template
from ._process import AsyncBackgroundProcess
from ._results import CommandResult, ExecutionResult, FileInfo, OutputChunk, StreamEvent
from ._sandbox import AsyncSandbox
from ._task import BatchStats
from ._terminal import AsyncTerminal
from ._utils import AwaitableContext
from ._version import __version__
from ._watcher import WatcherStats
from ._webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    # clients and handles (each has a blocking twin in hopx_sync)
    "AsyncHopx",
    "AsyncSandboxes",
    "AsyncSandbox",
    "AsyncCommands",
    "AsyncBackgroundProcess",
    "AsyncFiles",
    "AsyncEnv",
    "AsyncExecution",
    "AsyncTerminal",
    "AwaitableContext",
    "aclose_default_client",
    # fan-out
    "Task",
    "ProgressCallback",
    "BatchStats",
    "Manifest",
    # configuration
    "DEFAULT_BASE_URL",
    "Timeouts",
    "Limits",
    "RetryPolicy",
    "PollPolicy",
    # results
    "ProcessStatus",
    "ProcessInfo",
    "ProcessResult",
    "ExecutionResult",
    "CommandResult",
    "OutputChunk",
    "StreamEvent",
    "SandboxInfo",
    "Resources",
    "Template",
    "FileInfo",
    "WatcherStats",
    # webhooks
    "verify_webhook",
    "WebhookVerificationError",
    "__version__",
]
# errors: the hierarchy of _errors, drawn in its docstring
__all__ += _errors.__all__
