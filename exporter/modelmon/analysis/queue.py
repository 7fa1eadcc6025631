"""The analysis pipeline: a bounded queue between the request path and the analysers.

The proxy and the push API only ever call :meth:`AnalysisQueue.offer`, which never blocks:
when the queue is full the item is dropped and counted. The queue is drained in micro-batches
by callbacks on the event loop, which hand items to the analysers; an item whose decoding or
analysis raises anything (a body nested too deep, an analyser bug) is counted and logged, and the
drain carries on with the next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import Metric

from ..jsondecode import JSONDecodeError, loads
from ..logs import RateLimitedLog
from ..metrics import catalogue as cat
from ..metrics.instruments import counter_vec
from ..protocols.base import BinaryBody

log = RateLimitedLog(logging.getLogger("modelmon.pipeline"))

# Analysis runs this long after the first item of a batch arrives, MAX_BATCH items per turn of
# the event loop (see AnalysisQueue).
DRAIN_DELAY = 0.01
MAX_BATCH = 8
# Let another runnable process on this CPU (the model server, say) go first. Linux, macOS.
_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


@dataclass(slots=True)
class Exchange:
    """One proxied inference call, handed over after the response was sent."""

    model: str
    route: str
    status: int
    request_body: bytes
    response_body: bytes
    request_encoding: str = ""
    response_encoding: str = ""
    request_id: str | None = None
    received_at: float = field(default_factory=time.time)
    # The Inference-Header-Content-Length field of the request and of the response, as sent:
    # set, the body is a JSON object of that many bytes followed by binary tensor data.
    request_header_length: str | None = None
    response_header_length: str | None = None


@dataclass(slots=True)
class PushedRecords:
    """Records pushed through ``POST /v1/records`` (already validated, one model per batch)."""

    model: str
    records: list[dict[str, Any]]
    received_at: float = field(default_factory=time.time)


Item = Exchange | PushedRecords


class AnalysisError(Exception):
    """An item could not be analysed; ``reason`` becomes the label of the dropped counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(slots=True)
class Decoded:
    """An item ready for the analysers: JSON decoded once, shared by all of them."""

    model: str
    source: str  # "proxy" or "push"
    request: Any = None
    response: Any = None
    records: list[dict[str, Any]] | None = None
    route: str = ""
    request_id: str | None = None  # from the request header (client-sent or generated)
    received_at: float = 0.0


class Analyser(Protocol):
    def analyse(self, decoded: Decoded) -> int:
        """Analyse one decoded item; return the rows analysed (the protocol adapters count
        them). Raising is allowed: it is counted, never fatal."""


class PipelineStats:
    def __init__(self) -> None:
        self.dropped = counter_vec()  # (reason,)
        self.analysed = counter_vec()  # (model, source)


class AnalysisQueue:
    """A bounded FIFO drained on the event loop, in batches, between I/O callbacks.

    Handing an item over costs a deque append (plus, when the queue was empty, one timer): no
    future to resolve and no task to wake per item. The queue is drained DRAIN_DELAY after its
    first item arrives, in turns of at most MAX_BATCH items with a CPU yield between turns:

    - right after a response the sidecar goes back to waiting instead of analysing, so whoever
      consumes the response (the client, or the model server on a shared CPU) does not compete
      with the analysis for the CPU (README, Performance, has the measured effect);
    - a batch runs with warm caches: after an idle millisecond this host runs the analysis code
      several times slower than in a tight loop;
    - turns of MAX_BATCH items, with I/O polled and the CPU offered to other runnable processes
      between them, keep a burst from holding up the proxy or the model for long.
    """

    def __init__(self, maxsize: int, stats: PipelineStats, max_body_bytes: int) -> None:
        self._items: deque[Item] = deque()
        self._maxsize = maxsize
        self.stats = stats
        self._limit = max_body_bytes
        self._analysers: Sequence[Analyser] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_handle: asyncio.Handle | None = None
        # When the hand-off last made progress: a drain turn ran, or an item arrived in an
        # empty queue (the liveness signal of /healthz, see stalled_for).
        self._progress = time.monotonic()

    @property
    def capacity(self) -> int:
        return self._maxsize

    def depth(self) -> int:
        return len(self._items)

    def offer(self, item: Item, records: int = 1) -> bool:
        """Enqueue without waiting; on a full queue drop the item, count it and return False."""
        if len(self._items) >= self._maxsize:
            self.drop("queue_full", records, "analysis queue full")
            return False
        if not self._items:
            self._progress = time.monotonic()
        self._items.append(item)
        if self._drain_handle is None and self._loop is not None:
            self._drain_handle = self._loop.call_later(DRAIN_DELAY, self._drain)
        return True

    def drop(self, reason: str, records: int, detail: str) -> None:
        self.stats.dropped[(reason,)] += records
        log.warning(reason, "record(s) not analysed: %s: %s", reason, detail)

    def start(self, analysers: Sequence[Analyser]) -> None:
        """Drain on the running loop from now on (items offered before are analysed first).
        No task runs: each drain turn is a callback the offers or the previous turn schedule."""
        self._analysers = analysers
        self._loop = asyncio.get_running_loop()
        self._progress = time.monotonic()
        if self._items and self._drain_handle is None:
            self._drain_handle = self._loop.call_soon(self._drain)

    def stop(self) -> None:
        """Stop draining; what is queued stays (``start`` again analyses it)."""
        if self._drain_handle is not None:
            self._drain_handle.cancel()
        self._drain_handle = self._loop = self._analysers = None

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds items have waited without the hand-off making progress (0 while the queue is
        empty or draining): what /healthz reports as the analysis hand-off's liveness."""
        if not self._items:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self._progress)

    def _drain(self) -> None:
        self._drain_handle = None
        analysers = self._analysers
        if analysers is None:
            return
        self._progress = time.monotonic()
        items = self._items
        try:
            for _ in range(min(len(items), MAX_BATCH)):
                item = items.popleft()
                try:
                    self._analyse(item, analysers)
                except Exception as exc:  # counting the failure failed: still this item's alone
                    self.stats.dropped[("analysis_error",)] += 1
                    log.warning("analysis_error", "record(s) not analysed: analysis_error: %s",
                                describe(exc))
        finally:
            # Whatever escaped above, the rest of the queue gets a turn: never leave items
            # behind without a drain scheduled (they would wait for the next offer).
            if items and self._loop is not None and self._drain_handle is None:
                _yield_cpu()
                self._drain_handle = self._loop.call_soon(self._drain)

    async def join(self, timeout: float) -> None:
        """Wait until the queue is empty (for shutdown and tests)."""
        deadline = time.monotonic() + timeout
        while self._items and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _analyse(self, item: Item, analysers: Sequence[Analyser]) -> None:
        """Decode and analyse one item: whatever goes wrong is counted against it alone."""
        try:
            decoded = decode(item, self._limit)
        except AnalysisError as exc:
            self.drop(exc.reason, 1, f"model={item.model}: {one_line(exc)}")
            return
        except Exception as exc:  # RecursionError (nested too deep), MemoryError, ...: not usable JSON
            self.drop("invalid_json", 1, f"model={item.model}: cannot decode: {describe(exc)}")
            return
        rows = 0
        for analyser in analysers:
            try:
                rows = max(rows, analyser.analyse(decoded))
            except Exception as exc:  # an analyser bug must not stop the drain or the others
                self.drop("analysis_error", 1,
                          f"model={item.model}: {type(analyser).__name__}: {describe(exc)}")
        if rows:
            self.stats.analysed[(item.model, decoded.source)] += rows


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one bounded line, for a log line. Never raises: a message
    built from client data can (the repr of a deeply nested value raises RecursionError)."""
    try:
        text = " ".join(str(exc).split())
    except Exception:
        return "(message unavailable)"
    return text if len(text) <= limit else text[:limit] + "..."


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line(exc)}"


def decode(item: Item, limit: int) -> Decoded:
    if isinstance(item, PushedRecords):
        return Decoded(item.model, "push", records=item.records,
                       received_at=item.received_at)
    request = decode_body(item.request_body, item.request_encoding, limit, item.request_header_length)
    response = decode_body(item.response_body, item.response_encoding, limit,
                           item.response_header_length) if item.response_body else None
    return Decoded(item.model, "proxy", request, response, route=item.route,
                   request_id=item.request_id, received_at=item.received_at)


def decode_body(body: bytes, encoding: str, limit: int, header_length: str | None = None) -> Any:
    """JSON-decode a (possibly gzip/deflate-encoded) body, refusing to inflate past ``limit``.

    With ``header_length`` (the message's Inference-Header-Content-Length) the body is in the
    binary tensor data extension: a :class:`BinaryBody` of its JSON object and the bytes after.
    The content coding applies to the whole body (as tritonclient compresses it)."""
    if encoding in ("gzip", "deflate"):
        inflater = zlib.decompressobj(wbits=47)  # 47: auto-detect gzip or zlib header
        try:
            body = inflater.decompress(body, limit)
        except zlib.error as exc:
            raise AnalysisError("invalid_encoding", f"cannot decompress {encoding} body: {exc}") from None
        if inflater.unconsumed_tail:
            raise AnalysisError("body_too_large", f"inflated body exceeds {limit} bytes")
    elif encoding not in ("", "identity"):
        raise AnalysisError("invalid_encoding", f"unsupported content-encoding {encoding!r}")
    if header_length is not None:
        return binary_body(body, header_length)
    return json_loads(body)


def json_loads(body: bytes) -> Any:
    try:
        # modelmon's JSON dialect, the same at every entry point: NaN/Infinity literals (as
        # Python clients send them) are counted as nan/inf, numbers beyond range as ±inf.
        return loads(body)
    except JSONDecodeError as exc:
        raise AnalysisError("invalid_json", f"body is not JSON: {exc}") from None


def binary_body(body: bytes, header_length: str) -> BinaryBody:
    """Split a binary-extension body at its JSON object's length. A length that is not a
    decimal number, is 0 (a raw tensor without JSON: its shape and datatype are the server's
    to know) or runs past the body, or a JSON object that does not decode, gives a BinaryBody
    that the adapter counts as a payload error."""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19):
        return BinaryBody(None, memoryview(b""), "binary_header_invalid")
    length = int(text)
    if length == 0:
        return BinaryBody(None, memoryview(b""), "binary_raw_request")
    if length > len(body):
        return BinaryBody(None, memoryview(b""), "binary_truncated")
    try:
        header = json_loads(body[:length])
    except AnalysisError:
        return BinaryBody(None, memoryview(b""), "binary_json_invalid")
    return BinaryBody(header, memoryview(body)[length:])


class PipelineCollector(cat.CatalogueCollector):
    owns = (cat.QUEUE_DEPTH, cat.QUEUE_CAPACITY, cat.RECORDS_DROPPED, cat.RECORDS_ANALYSED,)

    def __init__(self, queue: AnalysisQueue) -> None:
        self._queue = queue

    def collect(self) -> Iterator[Metric]:
        depth = cat.QUEUE_DEPTH.gauge()
        depth.add_metric([], self._queue.depth())
        yield depth
        capacity = cat.QUEUE_CAPACITY.gauge()
        capacity.add_metric([], self._queue.capacity)
        yield capacity
        yield cat.RECORDS_DROPPED.of(self._queue.stats.dropped)
        yield cat.RECORDS_ANALYSED.of(self._queue.stats.analysed)
