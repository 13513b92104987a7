"""The primitives the drivers are written with (acr_blob._concurrency), on their own."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from acr_blob._concurrency import (
    STOP_WAIT,
    AsyncWorkers,
    Workers,
    WorkersStopped,
    arun_blocking,
)


def test_guarded_blocks_run_side_by_side_and_a_stop_waits_for_them() -> None:
    workers = Workers("test")
    both_inside = threading.Barrier(3, timeout=5)
    release = threading.Event()

    def work() -> None:
        with workers.guard():
            both_inside.wait()  # only passes with both workers inside their blocks at once
            release.wait(STOP_WAIT + 5)

    workers.start(work)
    workers.start(work)
    both_inside.wait()
    stopped = threading.Event()
    stopper = threading.Thread(target=lambda: (workers.stop(), stopped.set()))
    stopper.start()
    # Past the time a stop gives its threads: the guarded blocks hold it still.
    assert not stopped.wait(STOP_WAIT + 0.5), "stop() returned while a guarded block ran"
    release.set()
    assert stopped.wait(5)
    stopper.join()
    with pytest.raises(WorkersStopped), workers.guard():
        pass


def test_a_stop_does_not_wait_for_a_worker_stuck_outside_its_reads() -> None:
    workers = Workers("test")
    release = threading.Event()
    workers.start(release.wait, 30)  # as a worker waiting for an answer's headers
    started = time.monotonic()
    workers.stop()
    assert time.monotonic() - started < 3
    release.set()


def test_a_workers_failure_is_raised_by_the_group_and_none_after_a_stop() -> None:
    workers = Workers("test")
    workers.start(lambda: 1 / 0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            workers.raise_failure()
        except ZeroDivisionError:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the worker's failure never reached the group")
    workers.stop()

    quiet = Workers("test")
    quiet.start(lambda: (_ for _ in ()).throw(WorkersStopped))
    quiet.stop()
    quiet.raise_failure()  # a worker that ended because of the stop is no failure


def test_a_task_cancelled_in_arun_blocking_waits_for_the_call_to_end() -> None:
    ended: list[float] = []

    def slow() -> None:
        time.sleep(0.3)
        ended.append(time.monotonic())

    async def main() -> float:
        task = asyncio.create_task(arun_blocking(slow))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    unwound = asyncio.run(main())
    assert ended and ended[0] <= unwound, "the task unwound before its blocking call ended"


def test_async_workers_stop_cancels_them_and_closes_the_guard() -> None:
    async def main() -> None:
        workers = AsyncWorkers("test")
        workers.start(asyncio.sleep, 30)
        workers.start(asyncio.sleep, 30)
        await asyncio.sleep(0)
        started = time.monotonic()
        await workers.stop()
        assert time.monotonic() - started < 1
        workers.raise_failure()  # cancelled is not failed
        with pytest.raises(WorkersStopped):
            async with workers.guard():
                pass

    asyncio.run(main())
