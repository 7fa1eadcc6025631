"""The analysis queue: bounded, drained on the event loop in micro-batches, never fatal."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from conftest import StartSidecar
from modelmon.analysis import queue as handoff
from modelmon.analysis.queue import (
    DRAIN_DELAY,
    MAX_BATCH,
    Analyser,
    AnalysisQueue,
    Decoded,
    Exchange,
    Item,
    PipelineStats,
)
from modelmon.logs import RateLimitedLog

BODY = json.dumps({"instances": [[1.0, 2.0]]}).encode()


def exchange(i: int) -> Exchange:
    return Exchange("m", "/v1/models/{model}:predict", 200, BODY, b"", request_id=str(i))


class Recorder:
    def __init__(self, fail_on: set[str] | None = None) -> None:
        self.seen: list[str | None] = []
        self._fail_on = fail_on or set()

    def analyse(self, decoded: Decoded) -> int:
        self.seen.append(decoded.request_id)
        if decoded.request_id in self._fail_on:
            raise RuntimeError("analyser bug")
        return 1  # the one row of BODY


@contextlib.asynccontextmanager
async def running(queue: AnalysisQueue, analyser: Recorder):  # type: ignore[no-untyped-def]
    queue.start([analyser])
    await asyncio.sleep(0)
    try:
        yield queue
    finally:
        queue.stop()


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


# --- whatever one item raises, it alone is lost -------------------------------------------------

DEEP = b"[" * 10_000 + b"]" * 10_000  # beyond orjson's depth limit, and the stdlib parser's recursion


@pytest.fixture(autouse=True)
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own first log line per reason (the module's log is rate-limited)."""
    monkeypatch.setattr(handoff, "log", RateLimitedLog(logging.getLogger("modelmon.pipeline")))


def deep_value(depth: int = 5_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class Raiser(Recorder):
    """Raises ``error`` while analysing the item with request id "2"."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self._error = error

    def analyse(self, decoded: Decoded) -> int:
        self.seen.append(decoded.request_id)
        if decoded.request_id == "2":
            raise self._error
        return 1


@pytest.mark.parametrize("error", [
    RuntimeError("analyser bug"),
    RecursionError("maximum recursion depth exceeded"),
    MemoryError(),
    KeyError(deep_value()),  # its message is the repr of client data: rendering it raises too
], ids=["runtime", "recursion", "memory", "unprintable"])
async def test_an_error_on_one_item_spares_the_rest_of_its_batch_and_later_items(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    analyser = Raiser(error)
    async with running(queue, analyser):
        for i in range(5):  # one batch: all offered before the drain runs
            queue.offer(exchange(i))
        await queue.join(timeout=1)
        assert analyser.seen == ["0", "1", "2", "3", "4"] and queue.depth() == 0
        queue.offer(exchange(5))  # and the drain keeps working
        await queue.join(timeout=1)
    assert analyser.seen == ["0", "1", "2", "3", "4", "5"]
    assert queue.stats.dropped == {("analysis_error",): 1}
    assert queue.stats.analysed[("m", "proxy")] == 5  # the failed one is dropped, not analysed
    assert "Exception in callback" not in caplog.text
    logged = [r.getMessage() for r in caplog.records if r.name == "modelmon.pipeline"]
    assert len(logged) == 1 and "\n" not in logged[0] and len(logged[0]) < 400


@pytest.mark.parametrize("encoding", ["", "gzip"])
async def test_a_body_nested_too_deep_is_invalid_json_and_its_batch_goes_on(
    encoding: str, caplog: pytest.LogCaptureFixture
) -> None:
    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    recorder = Recorder()
    body = gzip.compress(DEEP) if encoding else DEEP
    async with running(queue, recorder):
        queue.offer(exchange(0))
        queue.offer(Exchange("m", "/v1/models/{model}:predict", 200, body, b"", encoding, request_id="deep"))
        queue.offer(Exchange("m", "/v1/models/{model}:predict", 200, BODY, DEEP, request_id="deep response"))
        queue.offer(exchange(1))
        await queue.join(timeout=1)
        assert recorder.seen == ["0", "1"] and queue.depth() == 0
    assert queue.stats.dropped == {("invalid_json",): 2}
    assert "Exception in callback" not in caplog.text


async def test_an_exception_escaping_the_per_item_guard_is_still_one_items_loss(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    recorder = Recorder()
    analyse = queue._analyse

    def broken(item: Item, analysers: Sequence[Analyser]) -> None:  # a bug in the guard itself
        if isinstance(item, Exchange) and item.request_id == "1":
            raise ValueError("bug")
        analyse(item, analysers)

    monkeypatch.setattr(queue, "_analyse", broken)
    async with running(queue, recorder):
        for i in range(3):
            queue.offer(exchange(i))
        await queue.join(timeout=1)
        assert recorder.seen == ["0", "2"]
    assert queue.stats.dropped == {("analysis_error",): 1}
    assert "Exception in callback" not in caplog.text


async def test_the_drain_stays_scheduled_whatever_escapes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even what no guard catches (a BaseException) leaves the rest of the queue drained."""

    class Escape(BaseException):
        pass

    queue = AnalysisQueue(10, PipelineStats(), 1 << 20)
    recorder = Recorder()
    analyse = queue._analyse

    def escaping(item: Item, analysers: Sequence[Analyser]) -> None:
        if isinstance(item, Exchange) and item.request_id == "1":
            raise Escape
        analyse(item, analysers)

    monkeypatch.setattr(queue, "_analyse", escaping)
    loop = asyncio.get_running_loop()
    escaped: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: escaped.append(context["exception"]))
    try:
        async with running(queue, recorder):
            for i in range(3):
                queue.offer(exchange(i))
            await queue.join(timeout=1)
            assert recorder.seen == ["0", "2"] and queue.depth() == 0
            queue.offer(exchange(3))
            await queue.join(timeout=1)
            assert recorder.seen == ["0", "2", "3"]
    finally:
        loop.set_exception_handler(None)
    assert [type(e) for e in escaped] == [Escape]


async def test_a_deeply_nested_proxied_body_is_dropped_and_the_queue_behind_it_analysed(
    upstream: TestServer, start_sidecar: StartSidecar, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(handoff, "DRAIN_DELAY", 0.5)  # all three requests land in one batch
    running_sidecar = await start_sidecar(str(upstream.make_url("")), proxy={"routes": [
        {"path": "/echo", "name": "echo", "model": "m", "inference": True}]})
    post = running_sidecar.session.post
    async with post(running_sidecar.traffic_url + "/echo", data=DEEP) as resp:
        assert resp.status == 200  # the model answered: the body was fine by it
    for rows in ([[1.0]], [[2.0], [3.0]]):
        async with post(running_sidecar.traffic_url + "/echo", json={"instances": rows}) as resp:
            assert resp.status == 200
    # No further request: the valid exchanges queued behind the deep one are analysed anyway.
    await running_sidecar.sidecar.queue.join(timeout=2)
    assert running_sidecar.sidecar.queue.depth() == 0
    assert running_sidecar.sample("modelmon_analysis_dropped_records_total", {"reason": "invalid_json"}) == 1
    assert running_sidecar.sample("modelmon_analysis_records_total", {"model": "m", "source": "proxy"}) == 3
    assert running_sidecar.sample("modelmon_analysis_dropped_records_total", {"reason": "analysis_error"}) is None
    assert "Exception in callback" not in caplog.text
    assert any("invalid_json" in r.getMessage() and "depth" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("shape", "rows"), [
    ([3, 2], 3), ([0, 4], 0), ([-1000000, 1], 1), ([10**18, 1], 1), ([True, 1], 1), (["3", 1], 1),
])
def test_a_claimed_batch_size_is_a_row_count_only_when_it_can_be(shape: list[Any], rows: int) -> None:
    """An OIP tensor's shape is the client's claim: rows are what the adapter read, and a shape
    it cannot read (negative, beyond any body, not integers) is one unreadable payload (before:
    the rows counter went down by a million, or up by 10**18)."""
    from modelmon.analysis.analyser import Analysis
    from modelmon.config import Config

    n = max(0, shape[0]) * shape[1] if all(type(d) is int for d in shape) and shape[0] < 10**6 else 1
    body = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": [1.0] * n}]}
    decoded = handoff.Decoded("m", "proxy", body, {}, route="/v2/models/{model}/infer")
    assert Analysis(Config()).analyse(decoded) == rows


@pytest.mark.parametrize(("body", "encoding", "header"), [
    (b"\x1f\x8b\x08\x00not gzip at all", "gzip", None),
    (b"\x1f\x8b\x08\x00not gzip at all", "gzip", "10"),  # a binary-extension body
    (b'{"instances": [[1]]}', "br", None),
])
def test_a_body_that_does_not_inflate_is_an_encoding_error_not_json(body: bytes, encoding: str,
                                                                    header: str | None) -> None:
    """Named for what it is (before: counted as invalid_json, also for binary tensor bodies)."""
    with pytest.raises(handoff.AnalysisError) as caught:
        handoff.decode_body(body, encoding, 1 << 20, header)
    assert caught.value.reason == "invalid_encoding"
