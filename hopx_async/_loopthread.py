"""An asyncio event loop in a daemon thread, and blocking calls into it from other threads.

The one implementation behind the blocking facade (:mod:`hopx_sync`),
``LocalBackend.in_thread()`` and the benchmarks; public as :mod:`hopx_async.loopthread`.

- :meth:`LoopThread.run` hands a coroutine to the loop and blocks the calling thread on a
  plain queue until it is done; calls from many threads run concurrently on the loop.
- A call from the loop's own thread would wait for itself forever: it raises
  ``RuntimeError`` instead.
- ``KeyboardInterrupt`` (or any exception) while waiting cancels the task, waits a moment
  for it to finish cancelling, and is re-raised; the loop stays usable.
- Callbacks wrapped by a :class:`Relay` are called on the *calling* thread while it waits,
  never on the loop thread, so they may make blocking calls themselves.
- The loop's default executor still takes work at interpreter exit (after the standard
  thread pools refuse it), so host names resolve in ``atexit`` handlers too.
- After ``os.fork()`` the child's copy has no thread: its calls fail at once with a clear
  error and it is never touched again (the parent's loop shares its file descriptors).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import queue
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

__all__ = ["LoopThread", "Relay"]

T = TypeVar("T")
C = TypeVar("C", bound="Callable[..., Any] | None")

#: how long an interrupted call waits for its task to finish cancelling before re-raising
CANCEL_GRACE = 2.0
#: how often a waiting call checks that the loop thread is still alive
_ALIVE_CHECK = 5.0

OWN_THREAD = (
    "a blocking call was made from the own event-loop thread of the client it calls "
    "(for example from a coroutine running on it); it would deadlock. "
    "Await the hopx_async API there, or make the call from another thread."
)
SERVING = (
    "a blocking (hopx_sync) call was made on the thread whose event loop {loop} runs {what}; "
    "that server cannot answer while this thread blocks, so the call would hang until it timed "
    "out. Await the hopx_async API there instead, or start the backend with "
    "LocalBackend.in_thread(), which runs it on an event loop of its own."
)
CLOSED = "this client's event-loop thread is closed; create a new client"
FORKED = (
    "this client's event-loop thread belongs to the parent process (the client was made "
    "before os.fork()); create a new client in the child"
)

_names = itertools.count(1)
#: servers that run on an event loop (an in-process LocalBackend): loop -> {id(server): what}
_serving: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, str]] = (
    weakref.WeakKeyDictionary()
)
_DONE: Any = object()
#: loops inherited through fork(): kept referenced so that they are never closed or collected
_orphans: list[asyncio.AbstractEventLoop] = []


def discard(aw: Awaitable[Any]) -> None:
    """Close a coroutine that will never run, so that it does not warn 'never awaited'."""
    close = getattr(aw, "close", None)
    if close is not None:
        close()


def mark_serving(loop: asyncio.AbstractEventLoop, server: object, what: str) -> None:
    """Note that ``loop`` runs ``server``: a blocking call from its thread then fails at once
    (it would stop the server from answering it) instead of hanging."""
    _serving.setdefault(loop, {})[id(server)] = what


def unmark_serving(server: object) -> None:
    """``server`` no longer runs (see :func:`mark_serving`)."""
    for servers in list(_serving.values()):
        servers.pop(id(server), None)


def _served_here() -> str | None:
    """What the calling thread's running event loop serves, if anything (a blocking call
    made from a coroutine, or from code it calls synchronously)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    servers = _serving.get(loop)
    if not servers:
        return None
    return SERVING.format(
        loop=f"{type(loop).__name__}@{id(loop):#x}", what=", ".join(servers.values())
    )


class _ExitSafeExecutor(concurrent.futures.ThreadPoolExecutor):
    """A thread pool that, once the standard pools refuse work at interpreter exit, runs
    each job in a thread of its own (``getaddrinfo`` for a host name in an ``atexit``)."""

    _own_shutdown = False

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:
            if self._own_shutdown:
                raise
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def work() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    fut.set_exception(exc)

        threading.Thread(target=work, name="hopx-exit-worker", daemon=True).start()
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._own_shutdown = True
        super().shutdown(wait, cancel_futures=cancel_futures)


class Relay:
    """Carries callbacks of one call from the loop to the thread that waits for it.

    ``relay(f)`` returns a function that, called on the loop, queues ``f``'s call; the
    waiting :meth:`LoopThread.run` (given ``relay=``) calls ``f`` on its own thread. An
    exception raised by ``f`` cancels the call and is raised by ``run``.
    """

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def __call__(self, fn: C) -> C:
        if fn is None:
            return fn
        put = self.events.put
        return cast(C, lambda *args, **kwargs: put((fn, args, kwargs)))


class _Call:
    """One blocking call: started on the loop, its outcome queued by a done-callback."""

    __slots__ = ("aw", "cancelled", "error", "events", "result", "task")

    def __init__(self, aw: Awaitable[Any], events: queue.SimpleQueue[Any]) -> None:
        self.aw: Awaitable[Any] | None = aw
        self.events = events
        self.result: Any = None
        self.error: BaseException | None = None
        self.task: asyncio.Future[Any] | None = None
        self.cancelled = False

    def start(self) -> None:  # on the loop thread
        aw, self.aw = self.aw, None
        assert aw is not None
        if self.cancelled:
            discard(aw)
            self.error = asyncio.CancelledError()
            self.events.put(_DONE)
            return
        try:
            task = asyncio.ensure_future(aw)
        except BaseException as exc:
            discard(aw)
            self.error = exc
            self.events.put(_DONE)
            return
        self.task = task
        task.add_done_callback(self.finish)

    def finish(self, task: asyncio.Future[Any]) -> None:  # on the loop thread
        try:
            self.result = task.result()
        except BaseException as exc:
            self.error = exc
        self.events.put(_DONE)

    def cancel(self) -> None:  # on the loop thread
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The loop thread's body: run until stopped, then cancel what is left and close."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _stop(
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    pid: int,
    last: Callable[[], Awaitable[Any]] | None,
) -> None:
    """Stop the loop (after ``last()`` ran on it) and, unless called from it, join its thread."""
    if os.getpid() != pid:
        _orphans.append(loop)  # the parent's loop: never touch it
        return
    try:
        loop.call_soon_threadsafe(lambda: loop.create_task(_last_then_stop(loop, last)))
    except RuntimeError:
        return  # already closed
    if thread is not threading.current_thread() and thread.is_alive():
        thread.join()


async def _last_then_stop(
    loop: asyncio.AbstractEventLoop, last: Callable[[], Awaitable[Any]] | None
) -> None:
    try:
        if last is not None:
            await asyncio.wait_for(last(), CANCEL_GRACE)
    except Exception:  # best effort: the loop stops either way
        pass
    finally:
        loop.stop()


class LoopThread:
    """An event loop running in a daemon thread, and blocking calls into it.

    The thread stops when :meth:`close` is called, when the object is garbage-collected,
    or at interpreter exit. ``on_close`` (a coroutine function) runs on the loop just before
    it stops, whichever way that happens.

    >>> with LoopThread() as lt:
    ...     lt.run(asyncio.sleep(0, result=42))
    42
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        on_close: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(_ExitSafeExecutor(thread_name_prefix="hopx-worker"))
        self._thread = threading.Thread(
            target=_serve,
            args=(self._loop,),
            name=name or f"hopx-loop-{next(_names)}",
            daemon=True,
        )
        self._thread.start()
        self._ident = self._thread.ident
        self._pid = os.getpid()
        self._closed = False
        self._finalizer = weakref.finalize(
            self, _stop, self._loop, self._thread, self._pid, on_close
        )

    def __repr__(self) -> str:
        return f"<LoopThread {self._thread.name} {'closed' if self.closed else 'running'}>"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the calls run on."""
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        """The thread the loop runs in."""
        return self._thread

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called, or this process is a fork of its owner's."""
        return self._closed or os.getpid() != self._pid

    def run(self, aw: Awaitable[T], *, relay: Relay | None = None) -> T:
        """Run ``aw`` on the loop and block until it is done; return or raise its outcome.

        With ``relay`` the callbacks it wrapped are called on this thread while waiting.
        """
        if threading.get_ident() == self._ident:
            discard(aw)
            raise RuntimeError(OWN_THREAD)
        if os.getpid() != self._pid:
            discard(aw)
            raise RuntimeError(FORKED)
        served = _served_here()
        if served is not None:
            discard(aw)
            raise RuntimeError(served)
        call = _Call(aw, relay.events if relay is not None else queue.SimpleQueue())
        try:
            if self._closed:
                raise RuntimeError(CLOSED)
            self._loop.call_soon_threadsafe(call.start)
        except RuntimeError:
            discard(aw)
            raise RuntimeError(CLOSED) from None
        events = call.events
        try:
            while True:
                try:
                    event = events.get(timeout=_ALIVE_CHECK)
                except queue.Empty:
                    if not self._thread.is_alive():
                        if call.aw is not None:
                            discard(call.aw)
                        raise RuntimeError(CLOSED) from None
                    continue
                if event is _DONE:
                    break
                fn, args, kwargs = event
                fn(*args, **kwargs)
        except BaseException:
            # KeyboardInterrupt, a failed callback, or the loop died: cancel and wait a moment.
            try:
                self._loop.call_soon_threadsafe(call.cancel)
            except RuntimeError:
                pass
            else:
                _drain(events, CANCEL_GRACE)
            raise
        error = call.error
        if error is not None:
            call.error = None
            try:
                raise error
            finally:
                error = None
        result: T = call.result
        return result

    def close(self) -> None:
        """Stop the loop (cancelling whatever still runs on it) and join its thread."""
        if threading.get_ident() == self._ident:
            raise RuntimeError(OWN_THREAD)
        self._closed = True
        self._finalizer()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _drain(events: queue.SimpleQueue[Any], timeout: float) -> None:
    """Wait (at most ``timeout``) for a cancelled call's end, dropping its callbacks."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        try:
            if events.get(timeout=left) is _DONE:
                return
        except queue.Empty:
            return
