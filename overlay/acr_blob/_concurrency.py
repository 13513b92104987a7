"""The primitives the drivers in ``_async/`` are written with, each with its sync twin.

``tools/unasync.py`` turns ``AsyncLock`` into ``Lock``, ``arun_blocking`` into ``run_blocking``
and so on, so the sync code runs on threads and the async code on tasks of one event loop.
asyncio is imported by the async primitives only when they are first used: sync users never
load it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import httpx

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("acr_blob")

P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")

# How long a sync stop waits for its threads once their sockets are shut: a thread still
# waiting for an answer's headers ends on its own and never writes after the stop.
STOP_WAIT = 1.0


class WorkersStopped(Exception):
    """Raised inside a worker that goes on after its group was stopped."""


def run_blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``function`` (the sync twin of :func:`arun_blocking`)."""
    return function(*args, **kwargs)


async def arun_blocking(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``function`` in a worker thread, so that disk waits never hold up the event loop.

    A task cancelled meanwhile still waits for the call to end before it unwinds: a write must
    not outlive the file it writes to.
    """
    import asyncio

    future = asyncio.get_running_loop().run_in_executor(
        None, functools.partial(function, *args, **kwargs)
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise


sleep = time.sleep


async def asleep(seconds: float) -> None:
    """``asyncio.sleep``, with asyncio imported on first use."""
    import asyncio

    await asyncio.sleep(seconds)


# A lock between threads, and a signal ("clear, look at the state, then wait": it never
# misses a change made after the clear) between threads; their async twins follow.
Lock = threading.Lock
Signal = threading.Event


class AsyncLock:
    """Nothing to lock: tasks of one loop switch only at an ``await``, and the sections this
    guards have none."""

    async def __aenter__(self) -> None:
        pass

    async def __aexit__(self, *exc_info: object) -> None:
        pass


class AsyncSignal:
    """``Signal`` for tasks of one event loop."""

    def __init__(self) -> None:
        import asyncio

        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, timeout: float | None) -> None:
        import asyncio

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


def shut_socket(response: httpx.Response) -> None:
    """Shut the socket ``response`` reads from, so that a read blocked on it returns now."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        # socket.socket's own shutdown: ssl.SSLSocket's would drop its TLS state under the
        # thread reading it.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Workers:
    """Threads that fetch parts; :meth:`stop` ends them at once, wherever they wait.

    A worker's failure is kept for :meth:`raise_failure`. Answers a worker reads are
    :meth:`watch`-ed, so that a stop shuts their sockets; :meth:`guard` wraps what must not
    happen once :meth:`stop` has returned (a write to a file that is about to close).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._threads: list[threading.Thread] = []
        self._failure: BaseException | None = None
        self._watched: set[httpx.Response] = set()
        self._lock = threading.Lock()
        self._guarded = threading.Condition(self._lock)  # the count of blocks under guard()
        self._in_guard = 0
        self.stopped = False
        self._closed = False

    def start(self, work: Callable[..., object], *args: Any) -> None:
        thread = threading.Thread(
            target=self._run, args=(work, args), name=f"{self._name}-{len(self._threads)}"
        )
        thread.daemon = True  # one left waiting for headers after a stop must not hold exit
        self._threads.append(thread)
        thread.start()

    def _run(self, work: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            work(*args)
        except WorkersStopped:
            pass
        except BaseException as error:  # handed to the thread that runs the group
            with self._lock:
                if self._failure is None and not self.stopped:
                    self._failure = error

    def raise_failure(self) -> None:
        """Raise the first worker's failure, if one failed."""
        if self._failure is not None:
            raise self._failure

    def watch(self, response: httpx.Response) -> None:
        with self._lock:
            if self.stopped:
                raise WorkersStopped
            self._watched.add(response)

    def unwatch(self, response: httpx.Response) -> None:
        with self._lock:
            self._watched.discard(response)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Hold off the end of :meth:`stop` for the block (blocks of several workers run side
        by side); raise :class:`WorkersStopped` once it has ended."""
        with self._lock:
            if self._closed:
                raise WorkersStopped
            self._in_guard += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_guard -= 1
                self._guarded.notify_all()

    def stop(self) -> None:
        """Stop every worker: shut the sockets they read, then wait (briefly) for them."""
        with self._lock:
            self.stopped = True
            watched = list(self._watched)
        for response in watched:
            shut_socket(response)
        until = time.monotonic() + STOP_WAIT
        for thread in self._threads:
            thread.join(max(0.0, until - time.monotonic()))
        with self._lock:
            self._guarded.wait_for(lambda: self._in_guard == 0)
            self._closed = True
        if any(thread.is_alive() for thread in self._threads):
            logger.debug("%s: a worker still waits for an answer; it ends on its own", self._name)


class AsyncWorkers:
    """:class:`Workers` as tasks of one event loop: :meth:`stop` cancels them."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: list[asyncio.Task[object]] = []
        self.stopped = False
        self._closed = False

    def start(self, work: Callable[..., Coroutine[Any, Any, object]], *args: Any) -> None:
        import asyncio

        name = f"{self._name}-{len(self._tasks)}"
        self._tasks.append(asyncio.create_task(work(*args), name=name))

    def raise_failure(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error

    def watch(self, response: httpx.Response) -> None:
        """Nothing to do: cancelling a task ends its reads."""

    def unwatch(self, response: httpx.Response) -> None:
        pass

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        if self._closed:
            raise WorkersStopped
        yield

    async def stop(self) -> None:
        import asyncio

        self.stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._closed = True


def map_bounded(function: Callable[[A], T], items: Sequence[A], limit: int) -> list[T]:
    """``function`` of each item, at most ``limit`` at a time in threads, results in order; the
    first failure is raised once the calls under way have ended (none starts after it)."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    if limit <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
        futures = [pool.submit(function, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            wait(futures)
            raise failed.exception()  # type: ignore[misc]
        return [future.result() for future in futures]


async def amap_bounded(
    function: Callable[[A], Coroutine[Any, Any, T]], items: Sequence[A], limit: int
) -> list[T]:
    """:func:`map_bounded` as tasks: the first failure cancels the others."""
    import asyncio

    gate = asyncio.Semaphore(max(1, limit))

    async def gated(item: A) -> T:
        async with gate:
            return await function(item)

    tasks = [asyncio.ensure_future(gated(item)) for item in items]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task in done and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
