"""The analysis queue: bounded, drained on the event loop in micro-batches, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
import json

from modelmon.pipeline import DRAIN_DELAY, MAX_BATCH, AnalysisQueue, Decoded, Exchange, PipelineStats

BODY = json.dumps({"instances": [[1.0, 2.0]]}).encode()


def exchange(i: int) -> Exchange:
    return Exchange("m", "/v1/models/{model}:predict", 200, BODY, b"", request_id=str(i))


class Recorder:
    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.seen: list[str | None] = []
        self._fail_on = fail_on or set()

    def analyse(self, decoded: Decoded) -> None:
        self.seen.append(decoded.request_id)
        if decoded.request_id in self._fail_on:
            raise RuntimeError("analyser bug")


@contextlib.asynccontextmanager
async def running(queue: AnalysisQueue, analyser: Recorder):  # type: ignore[no-untyped-def]
    worker = asyncio.create_task(queue.run_worker([analyser]))
    await asyncio.sleep(0)
    try:
        yield worker
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def test_items_offered_before_the_worker_starts_are_analysed_in_order() -> None:
    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    for i in range(3):
        assert queue.offer(exchange(i))
    recorder = Recorder()
    async with running(queue, recorder):
        await queue.join(timeout=2)
    assert recorder.seen == ["0", "1", "2"]
    assert queue.stats.analysed[("m", "proxy")] == 3


async def test_a_full_queue_drops_and_counts() -> None:
    queue = AnalysisQueue(2, PipelineStats(), 1 << 20)
    assert queue.offer(exchange(0)) and queue.offer(exchange(1))
    assert not queue.offer(exchange(2), records=5)
    assert queue.depth() == 2
    assert queue.stats.dropped[("queue_full",)] == 5


async def test_a_burst_is_drained_in_micro_batches_that_let_other_callbacks_run() -> None:
    queue = AnalysisQueue(10 * MAX_BATCH, PipelineStats(), 1 << 20)
    recorder = Recorder()
    seen_when_other_callback_ran: list[int] = []

    class Scheduler(Recorder):
        def analyse(self, decoded: Decoded) -> None:  # once analysis has begun, someone else asks for a turn
            if decoded.request_id == "0":
                asyncio.get_running_loop().call_soon(
                    lambda: seen_when_other_callback_ran.append(len(recorder.seen)))
            recorder.analyse(decoded)

    async with running(queue, Scheduler()):
        for i in range(3 * MAX_BATCH):
            queue.offer(exchange(i))
        await queue.join(timeout=2)
    assert len(recorder.seen) == 3 * MAX_BATCH
    # The other callback ran between micro-batches, not after the whole burst.
    assert seen_when_other_callback_ran == [MAX_BATCH]


async def test_an_analyser_error_is_counted_and_the_drain_carries_on() -> None:
    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    recorder = Recorder(fail_on={"1"})
    async with running(queue, recorder):
        for i in range(3):
            queue.offer(exchange(i))
        await queue.join(timeout=2)
        queue.offer(exchange(3))
        await queue.join(timeout=2)
    assert recorder.seen == ["0", "1", "2", "3"]
    assert queue.stats.dropped[("analysis_error",)] == 1


async def test_undecodable_items_are_counted_not_analysed() -> None:
    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    recorder = Recorder()
    async with running(queue, recorder):
        queue.offer(Exchange("m", "/x", 200, b"{not json", b""))
        queue.offer(exchange(1))
        await queue.join(timeout=2)
    assert recorder.seen == ["1"]
    assert queue.stats.dropped[("invalid_json",)] == 1


async def test_after_the_worker_stops_items_wait_in_the_bounded_queue() -> None:
    queue = AnalysisQueue(3, PipelineStats(), 1 << 20)
    recorder = Recorder()
    async with running(queue, recorder):
        pass
    for i in range(4):
        queue.offer(exchange(i))
    await asyncio.sleep(0.01)
    assert recorder.seen == [] and queue.depth() == 3
    assert queue.stats.dropped[("queue_full",)] == 1


async def test_items_are_analysed_in_a_batch_shortly_after_the_first_arrives() -> None:
    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    recorder = Recorder()
    async with running(queue, recorder):
        loop = asyncio.get_running_loop()
        queue.offer(exchange(0))
        first = loop.time()
        await asyncio.sleep(0)
        queue.offer(exchange(1))
        assert recorder.seen == []  # not right after the response...
        await queue.join(timeout=2)
        assert recorder.seen == ["0", "1"]  # ...but together, soon after
        assert loop.time() - first >= DRAIN_DELAY * 0.9

