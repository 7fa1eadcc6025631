"""Background jobs: each one a task that runs its step now and then every ``interval``
seconds, started and stopped with the sidecar (:func:`start_jobs` on its exit stack); and the
heap trim, one of those jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("modelmon")

# How often the C heap's free pages are handed back to the OS (a short pause each time).
HEAP_TRIM_SECONDS = 30.0


@dataclass(frozen=True)
class Job:
    interval: float  # seconds from the end of one step to the start of the next (the first at once)
    step: Callable[[], Awaitable[None]]
    name: str


async def every(interval: float, step: Callable[[], Awaitable[None]], name: str) -> None:
    """Run ``step`` now and then every ``interval`` seconds until cancelled; a failing step is
    logged and retried on the next tick rather than ending the loop."""
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; retrying in %.0fs", name, interval)
        await asyncio.sleep(interval)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def start_jobs(jobs: Sequence[Job], stack: contextlib.AsyncExitStack) -> None:
    """A task per job, each cancelled (and awaited) when ``stack`` unwinds."""
    for job in jobs:
        task = asyncio.create_task(every(job.interval, job.step, job.name), name=job.name)
        stack.push_async_callback(_cancel, task)


async def trim_heap() -> None:
    release_free_heap()


def release_free_heap() -> None:
    """Hand the C heap's free pages back to the OS (glibc only): start-up (imports, config,
    profiles) and bursts of traffic leave MBs of freed memory that would otherwise stay
    resident, counted against the pod's memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
