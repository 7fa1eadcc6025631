"""One client connection: parses requests with llhttp and answers them strictly in order."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from ..common import log
from .call import Call
from .wire import (
    BINARY_HEADER_KEY,
    CRLF,
    HOP,
    IDEMPOTENCY_KEYS,
    MAX_FIELD_SIZE,
    MAX_HEAD_BYTES,
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    MAX_PIPELINED,
    MAX_REQUEST_TARGET,
    P_CLIENT,
    P_DONE,
    P_PIPELINE,
    REJECT_REASONS,
    SEP,
    ReadGate,
    Reject,
    codings,
    logger,
    perf,
    simple_response,
)

if TYPE_CHECKING:
    from .shared import Shared


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    __slots__ = ("active", "body_seen", "closing", "evicted", "head_bytes", "head_since",
                 "head_size", "idle_since", "in_feed", "in_head", "last_read", "lost", "nheaders",
                 "out", "overhead", "parser", "parsing", "pending_reject", "read", "shared",
                 "transport", "waiting", "write_paused")

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Call | None = None  # the request being received
        self.active: Call | None = None  # the request being answered
        self.waiting: deque[Call] = deque()  # pipelined requests waiting their turn
        self.out: list[bytes] = []
        self.in_feed = False
        self.closing = False  # close once the active response is complete
        self.lost = False
        self.read = ReadGate()  # reading from the client: paused for the reasons P_*
        self.write_paused = False
        self.idle_since = perf()
        self.pending_reject: bytes | None = None
        self.head_size = 0
        self.nheaders = 0
        # Between requests and inside a head (not in a body): bytes fed since the head began.
        self.in_head = True
        self.head_bytes = 0
        # When the head being received began (from connecting, for the first request); 0.0:
        # none is (idle between requests, or a request in progress).
        self.head_since = self.idle_since
        self.evicted = False  # closed to make room for a newer connection
        self.last_read = self.idle_since  # when bytes last came (the body deadline)
        # Bytes of a body's reads that carried no body byte (chunk framing, trailer fields):
        # bounded like a head, since llhttp holds an unfinished trailer field too.
        self.body_seen = False
        self.overhead = 0

    # --- transport events ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        shared = self.shared
        if shared.closing:
            self.transport.close()
            return
        if not shared.admit(self):  # every connection has a request in progress
            self.lost = True
            shared.stats.connections_closed[("limit",)] += 1
            log.warning("connection_limit", "client connection refused: %d connections, all busy "
                        "(proxy.max_connections)", len(shared.clients))
            self.transport.write(simple_response(
                503, b'{"error": "too many connections"}', b"Retry-After: 1\r\n", close=True))
            self.transport.close()
            return
        shared.clients.add(self)
        shared.stats.client_connections = len(shared.clients)
        self.read.transport = self.transport

    def data_received(self, data: bytes) -> None:
        if self.read.reasons & P_DONE:
            return
        self.last_read = perf()
        self.in_feed = True
        try:
            if self.in_head:
                self._feed_head(data)
            else:
                self.body_seen = False
                self.parser.feed_data(data)
                if self.body_seen or self.in_head:
                    self.overhead = 0
                else:
                    self.overhead += len(data)
                    if self.overhead > MAX_HEAD_BYTES:
                        self.reject(431, "request trailer fields too large")
        except httptools.HttpParserUpgrade:
            # An Upgrade (or CONNECT) request: its head is parsed and forwarded without the
            # Upgrade field; the connection closes after the response.
            self.closing = True
            self.pause(P_DONE)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Reject):
                self.reject(cause.status, str(cause))
            else:  # a bug of ours: do not leave the client hanging
                logger.error("proxy: request handling failed", exc_info=cause or exc)
                self.reject(500, "internal error in the proxy")
        except httptools.HttpParserError as exc:
            self.reject(400, f"invalid HTTP request: {exc}")
        finally:
            self.in_feed = False
        call = self.active
        if call is not None and call.up is not None and call.up.out:
            call.up.flush()
        if self.out:
            self.flush()

    def _feed_head(self, data: bytes) -> None:
        """Feed ``data`` while counting the bytes of a request head as they arrive: llhttp
        reports a field only once it is complete (and httptools gathers its pieces until then),
        so a field that never ends would otherwise be buffered without bound. The count is
        exact from the first read of a head on, and at most one read short before."""
        while data:
            room = MAX_HEAD_BYTES - self.head_bytes
            if len(data) > room:  # feed up to one byte past the limit, then judge
                piece, data = data[:room + 1], data[room + 1:]
            else:
                piece, data = data, b""
            self.head_bytes += len(piece)
            self.parser.feed_data(piece)
            if self.read.reasons & P_DONE:
                return
            if self.in_head:
                if self.head_bytes > MAX_HEAD_BYTES:
                    self.reject(431, "request header fields too large")
                    return
            elif data:  # the head is complete: the rest is body (and what follows it)
                self.parser.feed_data(data)
                return

    def eof_received(self) -> bool:
        return False  # a client that closes its side has hung up (nginx: 499)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.read.transport = None
        self.closing = True
        call = self.active
        if call is not None:
            call.client_gone()
        self.waiting.clear()
        self.shared.client_gone(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        call = self.active
        if call is not None and call.up is not None:
            call.up.read.pause(P_CLIENT)

    def resume_writing(self) -> None:
        self.write_paused = False
        call = self.active
        if call is not None and call.up is not None:
            call.up.resume(P_CLIENT)

    # --- helpers ------------------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        self.read.pause(reason)

    def resume(self, reason: int) -> None:
        if self.read.resume(reason):
            self.last_read = perf()  # time spent paused is not the client's silence

    def flush(self) -> None:
        out = self.out
        if out:
            self.out = []
            if not self.lost and self.transport is not None:
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def idle(self) -> bool:
        return self.active is None and not self.waiting

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def head_timed_out(self) -> None:
        """No complete request head within the deadline: 408 if any of it came, then close."""
        self.head_since = 0.0
        if self.parsing is None and self.idle():  # not a byte of it: just hang up
            self.shared.stats.connections_closed[("head_timeout",)] += 1
            self.close()
        else:
            self.reject(408, "request head not received in time")

    def reject(self, status: int, detail: str, reason: str | None = None,
               headers: bytes = b"") -> None:
        """Refuse what the client sent and close the connection after the responses owed;
        counted under ``reason`` (by default the status's)."""
        self.shared.stats.connections_closed[(reason or REJECT_REASONS.get(status, "invalid_request"),)] += 1
        self.pause(P_DONE)
        self.closing = True
        self.pending_reject = simple_response(status, json.dumps({"error": detail}).encode(),
                                               headers, close=True)
        parsing = self.parsing
        self.parsing = None
        if parsing is not None:
            if parsing in self.waiting:
                self.waiting.remove(parsing)
            elif parsing is self.active:  # its body broke off: it cannot complete
                parsing.abandon(status)  # call_done() sends the rejection
                return
        if self.active is None and not self.waiting:
            self.out.append(self.pending_reject)
            self.pending_reject = None
            self.flush()
            self.close()

    def call_done(self, call: Call) -> None:
        """``call``'s response is complete: close, or go on with the next request."""
        self.active = None
        if self.lost:
            return
        if not call.keep_alive:  # the client asked to close after this one: nothing more
            self.waiting.clear()
            self.pending_reject = None
        if self.closing or self.shared.closing:
            if self.pending_reject is not None and not self.waiting:
                self.out.append(self.pending_reject)
                self.pending_reject = None
            if not self.waiting or self.shared.closing:
                self.flush()
                self.close()
                return
        if self.waiting:
            asyncio.get_running_loop().call_soon(self._next)
        else:
            self.idle_since = perf()

    def _next(self) -> None:
        if self.lost or self.active is not None or not self.waiting:
            return
        call = self.waiting.popleft()
        if not self.waiting:
            self.resume(P_PIPELINE)
        self.active = call
        call.start()
        if call.up is not None and call.up.out:
            call.up.flush()
        self.flush()

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self.head_since:
            self.head_since = perf()
        self.parsing = Call(self, self.shared)
        self.head_size = 0
        self.nheaders = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        call = self.parsing
        assert call is not None
        call.target += url
        if len(call.target) > MAX_REQUEST_TARGET:
            raise Reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        call = self.parsing
        assert call is not None
        if not self.in_head:  # a trailer field of a chunked body: not forwarded
            return
        size = len(name) + len(value)
        self.head_size += size
        self.nheaders += 1
        if size > MAX_FIELD_SIZE or self.head_size > MAX_HEAD_SIZE or self.nheaders > MAX_HEADERS:
            raise Reject(431, "request header fields too large")
        lname = name.lower()
        if lname in HOP:
            if lname == b"connection":
                call.conn_tokens.append(value)
            elif lname == b"transfer-encoding":
                call.chunked = True  # llhttp refuses a request whose last coding is not chunked
                call.te_codings += codings(value)
            elif lname == b"expect":
                call.expect = value.lower() == b"100-continue"
            return
        if lname == b"host":
            call.has_host = True
            if not self.shared.preserve_host:
                return
        elif lname == b"content-length":
            call.length = value
        elif lname == b"content-encoding":
            call.encoding = value
        elif lname == self.shared.id_lower:
            call.request_id = value
        elif lname in IDEMPOTENCY_KEYS:
            call.replayable = True
        elif lname == BINARY_HEADER_KEY:  # given twice, differently: no length (a payload error)
            call.header_length = value if call.header_length in (None, value) else b""
        call.parts += (name, SEP, value, CRLF)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        self.head_since = 0.0
        call = self.parsing
        assert call is not None
        call.parsed(self.parser)
        if call.has_body and self.parser.should_upgrade():
            # llhttp takes what follows an upgrade's head for the new protocol, never as its
            # body: the body could not be forwarded (and an h2c upgrade with one is a known way
            # to smuggle a request past a proxy).
            raise Reject(400, "an upgrade request with a body is not supported")
        if self.active is None and not self.waiting:
            self.active = call
            call.start()
        else:
            if len(self.waiting) >= MAX_PIPELINED:
                raise Reject(429, "too many pipelined requests")
            self.waiting.append(call)
            self.pause(P_PIPELINE)

    def on_body(self, data: bytes) -> None:
        self.body_seen = True
        call = self.parsing
        if call is not None:
            call.request_body(data)

    def on_message_complete(self) -> None:
        self.in_head = True  # what comes next belongs to the next request's head
        call = self.parsing
        self.parsing = None
        if call is not None:
            call.request_complete()


