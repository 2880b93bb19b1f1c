"""An asyncio event loop in a daemon thread, with blocking calls into it from other threads.

What :mod:`hopx_sync` and ``LocalBackend.in_thread()`` run on; usable on its own:

>>> import asyncio
>>> from hopx_async.loopthread import LoopThread
>>> with LoopThread() as lt:
...     lt.run(asyncio.sleep(0, result="done"))
'done'

See :class:`LoopThread` and :class:`Relay` (callbacks called on the waiting thread).
"""

from ._loopthread import LoopThread, Relay

__all__ = ["LoopThread", "Relay"]
