"""The upstream side: one keep-alive connection per call at a time (responses parsed with
llhttp), and the pool that bounds them by ``upstream.max_connections``."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from ..common import UpstreamError, log
from .wire import (
    BINARY_HEADER_KEY,
    CRLF,
    HOP,
    MAX_HEAD_BYTES,
    P_CLIENT,
    P_UPSTREAM,
    RESPONDING,
    SEP,
    UPSTREAM_IDLE_SECONDS,
    WAITING,
    HeadDone,
    ReadGate,
    Stray,
    codings,
    logger,
    perf,
    unframed,
)

if TYPE_CHECKING:
    from .call import Call


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one call at a time."""

    __slots__ = ("call", "chunked", "conn_tokens", "done", "encoding", "has_id", "head_bytes",
                 "header_length", "idle_since", "in_feed", "in_head", "informational", "last_io",
                 "length", "out", "parser", "parts", "pool", "read",
                 "reason", "received", "sent", "served", "stray", "te_codings",
                 "transfer_encoded", "transport")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.call: Call | None = None
        self.out: list[bytes] = []
        self.read = ReadGate()  # reading from the upstream: paused while the client does not read
        self.last_io = 0.0
        self.idle_since = 0.0
        self.served = 0  # calls this connection carried
        self.received = 0  # bytes received for the current call
        self.sent = 0  # bytes handed to the transport for the current call
        self.in_feed = False
        # Set when the current call's response completed during a read: whether the connection
        # may be reused. The pool gets it back only after the read, so that bytes following the
        # response in the same read are seen as stray (self.stray) and not as the next response.
        self.done: bool | None = None
        self.stray = False
        # Inside the response head (from the call's start to its final, non-1xx head), and the
        # bytes received meanwhile: bounded like a request head, so that an upstream sending a
        # field (or 1xx responses) without end cannot make us buffer without bound.
        self.in_head = False
        self.head_bytes = 0
        self._reset()

    def _reset(self) -> None:
        self.reason = b""
        self.parts: list[bytes] = []
        self.conn_tokens: list[bytes] = []
        self.length: bytes | None = None
        self.chunked = False  # the last transfer coding is chunked
        self.transfer_encoded = False  # a Transfer-Encoding field was sent
        self.te_codings: list[bytes] = []
        self.encoding = b""
        self.header_length: bytes | None = None  # Inference-Header-Content-Length
        self.has_id = False
        self.informational = False

    @property
    def inner_chunked(self) -> bool:
        """Chunked applied before another transfer coding (the body is close-delimited)."""
        return b"chunked" in unframed(self.te_codings)

    def begin(self, call: Call) -> None:
        self.call = call
        self.served += 1
        self.received = 0
        self.sent = 0
        self.in_head = True
        self.head_bytes = 0
        self.last_io = perf()

    def flush(self) -> None:
        out = self.out
        if out:
            self.out = []
            self.last_io = perf()
            if self.transport is not None:
                data = out[0] if len(out) == 1 else b"".join(out)
                self.sent += len(data)
                self.transport.write(data)

    def resume(self, reason: int) -> None:
        if self.read.resume(reason):
            self.last_io = perf()  # time spent paused is not the upstream's silence

    # --- transport events -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = self.read.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        call = self.call
        if call is None:  # nothing was asked: a broken upstream; do not reuse
            self._stray_bytes()
            return
        now = perf()
        call.waited += now - call.wait_mark
        self.last_io = now
        self.received += len(data)
        client = call.client
        self.in_feed = True
        try:
            if self.in_head and self.head_bytes + len(data) > MAX_HEAD_BYTES:
                # Exact like the request side: up to one byte past the limit, then judge.
                cut = MAX_HEAD_BYTES - self.head_bytes + 1
                self.head_bytes += cut
                self.parser.feed_data(data[:cut])
                if self.in_head:
                    if self.call is call:
                        self._invalid(call, "response header fields too large")
                elif len(data) > cut:
                    self.parser.feed_data(data[cut:])
            else:
                if self.in_head:
                    self.head_bytes += len(data)
                self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, HeadDone):
                call.response_complete(False)
            elif not isinstance(cause, Stray):
                logger.error("proxy: response handling failed", exc_info=cause or exc)
                self._invalid(call, f"response handling failed: {cause or exc}")
        except httptools.HttpParserError as exc:
            if self.done is not None:  # not HTTP, after a complete response
                self.stray = True
            else:
                self._invalid(call, f"invalid response from the upstream: {exc}")
        finally:
            self.in_feed = False
        done = self.done
        if done is not None:  # the response is complete: only now may the next call use us
            self.done = None
            if self.stray:
                self._stray_bytes()
            self.pool.release(self, done and not self.stray)
        elif self.call is call:
            call.wait_mark = perf()
        if client.out:
            client.flush()

    def _stray_bytes(self) -> None:
        """Bytes arrived outside a response we wait for (an upstream that answered twice, or
        sent garbage): they could be taken for the next call's response, so the connection is
        never used again."""
        self.stray = True
        log.warning("stray", "upstream sent bytes outside a response: connection closed")
        if self.transport is not None:
            self.transport.abort()

    def call_done(self, reusable: bool) -> None:
        """The call is finished with this connection (its response is complete)."""
        self.call = None
        if self.in_feed:
            self.done = reusable  # released by data_received once the read is processed
        else:
            self.pool.release(self, reusable)

    def _invalid(self, call: Call, detail: str) -> None:
        err = UpstreamError("reset", 502, detail)
        if call.phase == RESPONDING:
            call.broke_off(err)
        else:
            call.fail(err)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.read.transport = None
        self.pool.lost(self)
        call = self.call
        self.call = None
        if call is not None and call.up is self:
            call.upstream_lost(exc, self.received == 0, self.sent == 0)
            call.client.flush()

    def pause_writing(self) -> None:
        call = self.call
        if call is not None:
            call.client.pause(P_UPSTREAM)

    def resume_writing(self) -> None:
        call = self.call
        if call is not None:
            call.client.resume(P_UPSTREAM)

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.call is None:  # a second response after the one we waited for
            self.stray = True
            raise Stray
        self._reset()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in HOP:
            if lname == b"connection":
                self.conn_tokens.append(value)
            elif lname == b"transfer-encoding":
                self.transfer_encoded = True
                self.te_codings += codings(value)
                self.chunked = bool(self.te_codings) and self.te_codings[-1] == b"chunked"
            return
        if lname == b"content-length":
            self.length = value
            return
        if lname == b"content-encoding":
            self.encoding = value
        elif lname == self.pool.id_lower:
            self.has_id = True
        elif lname == BINARY_HEADER_KEY:
            self.header_length = value if self.header_length in (None, value) else b""
        self.parts += (name, SEP, value, CRLF)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, not passed on
            self.informational = True
            return
        self.in_head = False
        call = self.call
        if call is None:
            return
        call.response_head(self, status)
        if call.is_head:
            raise HeadDone

    def on_body(self, data: bytes) -> None:
        call = self.call
        if call is not None:
            call.response_body(data)

    def on_message_complete(self) -> None:
        if self.informational:
            return
        call = self.call
        if call is not None:
            call.response_complete(self.parser.should_keep_alive())


class UpstreamPool:
    """Keep-alive connections to the upstream, at most ``limit`` open (or opening) at once;
    calls beyond wait in line for one."""

    def __init__(self, id_lower: bytes | None, host: str, port: int,
                 ssl_context: ssl.SSLContext | None, limit: int, connect_timeout: float) -> None:
        self.id_lower = id_lower  # the request id header, lower-cased: responses may echo it
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.idle: list[UpstreamConnection] = []  # LIFO: the warmest connection first
        self.busy: set[UpstreamConnection] = set()
        self.count = 0  # open or opening
        self.waiters: deque[Call] = deque()
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def acquire(self, call: Call, fresh: bool = False) -> None:
        """Give ``call`` a connection: the warmest idle one (unless ``fresh``: a new one), a new
        one below the limit, or a place in line."""
        idle = self.idle
        while idle and not fresh:
            up = idle.pop()
            if up.transport is not None and not up.transport.is_closing():
                self.busy.add(up)
                call.attach(up, True)
                return
        if self.count < self.limit:
            self._connect(call)
        else:
            self.waiters.append(call)

    def _connect(self, call: Call) -> None:
        self.count += 1
        task = asyncio.get_running_loop().create_task(self._open(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, call: Call) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.count -= 1
            if isinstance(exc, asyncio.TimeoutError):
                err = UpstreamError("timeout", 504, "upstream did not answer in time")
            else:
                err = UpstreamError("connect", 502, f"cannot connect to upstream: {exc}")
            if call.phase == WAITING:
                call.fail(err)
            self._serve_waiter()
            return
        except asyncio.CancelledError:
            self.count -= 1
            raise
        if self.closed:
            if up.transport is not None:
                up.transport.close()
            return
        if call.phase == WAITING:
            self.busy.add(up)
            call.attach(up, False)
            if up.out:
                up.flush()
            call.client.flush()
        else:  # the call is gone (client hung up): keep the connection for the next one
            self.busy.add(up)
            self.release(up, True)

    def _serve_waiter(self) -> None:
        """A slot came free: open a connection for the first call still waiting."""
        while self.waiters and self.count < self.limit and not self.closed:
            call = self.waiters.popleft()
            if call.phase == WAITING:
                self._connect(call)
                return

    def release(self, up: UpstreamConnection, reusable: bool) -> None:
        self.busy.discard(up)
        up.call = None
        up.out = []
        transport = up.transport
        if not reusable or self.closed or transport is None or transport.is_closing():
            if transport is not None:
                if reusable:
                    transport.close()
                else:
                    transport.abort()
            return
        up.resume(P_CLIENT)
        while self.waiters:
            call = self.waiters.popleft()
            if call.phase == WAITING:
                self.busy.add(up)
                call.attach(up, True)
                if up.out:
                    up.flush()
                call.client.flush()
                return
        up.idle_since = perf()
        self.idle.append(up)

    def lost(self, up: UpstreamConnection) -> None:
        """An upstream connection closed (by either side)."""
        self.count -= 1
        self.busy.discard(up)
        if up in self.idle:
            self.idle.remove(up)
        self._serve_waiter()

    def sweep(self, now: float, read_timeout: float) -> None:
        for up in list(self.busy):
            if up.read.reasons:  # the client does not read: its silence, not the upstream's
                up.last_io = now
                if now - up.read.since > read_timeout and up.call is not None:
                    up.call.timed_out()  # a client that stopped reading must not pin it
            elif now - up.last_io > read_timeout and up.call is not None:
                up.call.timed_out()
        limit = now - read_timeout
        for call in self.waiters:  # waiting for a connection counts as waiting for the upstream
            if call.phase == WAITING and call.wait_mark < limit:
                call.timed_out()
        if self.idle:
            limit = now - UPSTREAM_IDLE_SECONDS
            for up in [u for u in self.idle if u.idle_since < limit]:
                self.idle.remove(up)
                if up.transport is not None:
                    up.transport.close()

    def close(self) -> None:
        self.closed = True
        for up in [*self.idle, *self.busy]:
            if up.transport is not None:
                up.transport.abort()
        self.idle.clear()
        for task in self._tasks:
            task.cancel()
        for call in self.waiters:
            if call.phase == WAITING:
                call.fail(UpstreamError("connect", 502, "the proxy is shutting down"))
        self.waiters.clear()
