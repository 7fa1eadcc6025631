"""The fast proxy engine: an ``asyncio.Protocol`` HTTP/1.1 reverse proxy on llhttp (httptools).

Same behaviour and metrics as :class:`modelmon.proxy.Proxy` (the aiohttp engine), at a fraction
of the cost: no task, future or stream object per request. Every request and response runs
through parser callbacks:

- ``_ClientConn`` (one per client connection) parses requests with ``HttpRequestParser``;
  pipelined requests are answered strictly in order, one at a time;
- ``_Call`` (one per request) carries the request to the upstream and the response back,
  streaming both bodies, and does the accounting when it is done;
- ``_UpConn`` (one per upstream connection) parses responses with ``HttpResponseParser``;
  ``_Pool`` keeps them alive between requests, bounded by ``upstream.max_connections``.

Writes made while a read is processed are gathered and sent in one ``writelines`` at its
end, so a small request or response goes out in one system call. Back-pressure: when one
side's write buffer is over its high-water mark, reading from the other side pauses.
A sweep (every second at most) applies the read timeout between reads and closes idle
connections, instead of a timer per request.

Monitoring fails open: route matching, labels, accounting and the analysis hand-off are
guarded so that nothing they raise reaches the connection handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections import deque
from http import HTTPStatus
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

from .fds import client_connection_limit
from .models import ModelRegistry
from .pipeline import AnalysisQueue, Exchange
from .proxy import BINARY_HEADER, CLIENT_CLOSED, HOP_BY_HOP, RequestIds, UpstreamError, log
from .routes import OTHER_ROUTE, RouteMatch, RouteTable
from .traffic import TrafficStats

_logger = logging.getLogger("modelmon.proxy")
perf = time.perf_counter

_HOP = frozenset(h.encode() for h in HOP_BY_HOP)
# Fields a Connection header may name without effect: removing them would change how the rest
# of the message is framed (Content-Length) or where it goes (Host).
_KEPT = frozenset({b"content-length", b"host"})
# Pipelined requests parsed ahead of the one being answered, per connection (more: 429).
MAX_PIPELINED = 32
# Limits on what a client may send before its request is refused (aiohttp's line limits).
MAX_REQUEST_TARGET = 8190  # -> 414
MAX_FIELD_SIZE = 8190  # one header name + value -> 431
MAX_HEADERS = 128  # -> 431
MAX_HEAD_SIZE = 64 * 1024  # all header fields together -> 431
# Every byte of a request head (request line, fields, line ends), counted as it arrives rather
# than when a field completes, so that a field that never ends cannot be buffered without bound.
MAX_HEAD_BYTES = MAX_REQUEST_TARGET + MAX_HEAD_SIZE + 8 * 1024  # -> 431
# Request body buffered while no upstream connection is ready yet (beyond: pause the client).
BODY_BUFFER = 256 * 1024
# Idle keep-alive connections are closed after this long (aiohttp's server and client defaults).
CLIENT_IDLE_SECONDS = 75.0
UPSTREAM_IDLE_SECONDS = 4.0  # below common keep-alive timeouts of model servers (uvicorn: 5 s)
# A request whose reused upstream connection turns out closed before any byte of the answer is
# sent again once on another connection when that is safe (Go's Transport rule): nothing of it
# was written yet, or its method is idempotent (RFC 9110 section 9.2.2) or it carries an
# Idempotency-Key; and its body is small enough to have been kept.
REPLAY_LIMIT = 64 * 1024
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
IDEMPOTENCY_KEYS = frozenset({b"idempotency-key", b"x-idempotency-key"})
_BINARY_HEADER = BINARY_HEADER.lower().encode()  # binary tensor data: the JSON object's length
ROUTE_CACHE_SIZE = 4096

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CRLF = b"\r\n"
_SEP = b": "
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"

# modelmon_proxy_client_connections_closed_total{reason} of a refused request
_REJECT_REASONS = {400: "invalid_request", 408: "head_timeout", 414: "head_too_large",
                   429: "pipeline_limit", 431: "head_too_large", 500: "internal_error"}

# reasons for not reading from a client (bits)
_P_UPSTREAM = 1  # the upstream's write buffer is full
_P_BUFFER = 2  # request body buffered while waiting for an upstream connection
_P_PIPELINE = 4  # a pipelined request waits for the one before it
_P_DONE = 8  # nothing more will be read (upgrade request, rejected request)

# _Call phases: _PARSED -> [_RECEIVING] -> _WAITING -> _SENDING -> _RESPONDING -> _DONE.
# _RECEIVING: the body is still coming and is held (up to BODY_BUFFER) before an upstream
# connection is taken, so that a client trickling its body cannot pin one (nginx buffers
# request bodies before proxying for the same reason).
_PARSED, _RECEIVING, _WAITING, _SENDING, _RESPONDING, _DONE = range(6)
# response framing towards the client
_NONE, _LENGTH, _CHUNKS, _TO_CLOSE = range(4)

_status_lines: dict[tuple[int, bytes], bytes] = {}


def _status_line(status: int, reason: bytes) -> bytes:
    key = (status, reason)
    line = _status_lines.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_status_lines) < 512:
            _status_lines[key] = line
    return line


def _simple_response(status: int, body: bytes, headers: bytes = b"", close: bool = False) -> bytes:
    return (_status_line(status, HTTPStatus(status).phrase.encode())
            + b"Content-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n" % len(body)
            + headers + (_CLOSE if close else b"") + _CRLF + body)


def error_response(err: UpstreamError, close: bool) -> bytes:
    """The aiohttp engine's JSON error response, byte for byte in its body."""
    body = json.dumps({"error": "upstream_unavailable", "reason": err.reason, "detail": str(err)})
    return _simple_response(err.status, body.encode(),
                            b"X-Modelmon-Error: " + err.reason.encode() + _CRLF, close)


def _drop_named(parts: list[bytes], tokens: list[bytes]) -> list[bytes]:
    """Remove the fields a Connection header names from a flat [name, ": ", value, CRLF] list."""
    named = {t.strip().lower() for value in tokens for t in value.split(b",")}
    named -= _HOP
    named -= _KEPT  # framing and routing: never removed (the body would be sent unframed)
    if not named:
        return parts
    out: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in named:
            out += parts[i:i + 4]
    return out


def _codings(value: bytes) -> list[bytes]:
    """The transfer codings of a Transfer-Encoding field value, lowercased, in order."""
    return [c for c in (t.strip().lower() for t in value.split(b",")) if c]


def _unframed(codings: list[bytes]) -> list[bytes]:
    """``codings`` without a final chunked (RFC 9112 section 6.1): the proxy undoes that one and
    frames the body itself; every other coding stays on the body, in order."""
    return codings[:-1] if codings and codings[-1] == b"chunked" else codings


def _transfer_encoding(codings: list[bytes], chunked: bool = True) -> bytes:
    """The Transfer-Encoding field for a body with ``codings`` applied, re-framed by us."""
    if not codings:
        return _CHUNKED if chunked else b""
    return b"Transfer-Encoding: " + b", ".join([*codings, b"chunked"] if chunked else codings) + _CRLF


class _Reject(Exception):
    """A request the proxy refuses before it reaches the upstream."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class _HeadDone(Exception):
    """Stops the response parser after the head of a response to HEAD (llhttp would wait for
    the body its Content-Length announces)."""


class _Stray(Exception):
    """Stops the response parser at a message that follows the complete response."""


class FastProxy:
    """The traffic listener of the fast engine."""

    def __init__(
        self,
        upstream: str,
        routes: RouteTable,
        models: ModelRegistry,
        stats: TrafficStats,
        queue: AnalysisQueue,
        max_analysis_bytes: int,
        preserve_host: bool = True,
        id_header: str | None = "X-Request-ID",
        max_connections: int = 256,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_clients: int = 4096,
        head_timeout: float = 15.0,
        body_timeout: float = 60.0,
        request_buffering: bool = True,
    ) -> None:
        url = urlsplit(upstream)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {upstream!r}")
        self.routes = routes
        self.models = models
        self.stats = stats
        self.queue = queue
        self.cap = max_analysis_bytes
        self.preserve_host = preserve_host
        self.id_header = id_header.encode() if id_header else None
        self.id_lower = self.id_header.lower() if self.id_header else None
        self.ids = RequestIds()
        self.base = url.path.rstrip("/").encode()
        default_port = 443 if url.scheme == "https" else 80
        port = url.port or default_port
        hostport = url.hostname if port == default_port else f"{url.hostname}:{port}"
        if ":" in url.hostname:  # IPv6 literal
            hostport = f"[{url.hostname}]" if port == default_port else f"[{url.hostname}]:{port}"
        self.host_field = b"Host: " + hostport.encode("idna") + _CRLF
        self.read_timeout = read_timeout
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.request_buffering = request_buffering
        self.max_clients_configured = max_clients
        self.max_clients = max_clients  # fitted to the file descriptor limit in start()
        self.pool = _Pool(self, url.hostname, port,
                          ssl.create_default_context() if url.scheme == "https" else None,
                          max_connections, connect_timeout)
        self.clients: set[_ClientConn] = set()
        self.evicting = 0  # clients closed to make room whose connection_lost is still due
        self.closing = False
        self.address: tuple[str, int] = ("", 0)
        self._route_cache: dict[bytes, RouteMatch] = {}
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = min(1.0, read_timeout / 4, head_timeout / 4, body_timeout / 4)
        self._all_closed: asyncio.Event | None = None

    # --- listening ---------------------------------------------------------------------------

    async def start(self, host: str, port: int, backlog: int = 1024) -> None:
        self.max_clients = client_connection_limit(self.max_clients_configured, self.pool.limit)
        self.stats.client_connection_limit = self.max_clients
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _ClientConn(self), host, port,
                                                backlog=backlog)
        sock = self._server.sockets[0]
        self.address = cast(tuple[str, int], sock.getsockname()[:2])
        self._sweeper = loop.call_later(self._sweep_every, self._sweep)

    @property
    def port(self) -> int:
        return self.address[1]

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish within ``grace`` seconds, close idle
        keep-alive connections, then cut what is left."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        self._all_closed = asyncio.Event()
        for client in list(self.clients):
            if client.idle():
                client.close()
        if self.clients:
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("shutdown", "%d connection(s) still busy after the %.1fs grace period: "
                            "closing them", len(self.clients), grace)
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
        await asyncio.sleep(0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.pool.close()
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):  # connections are aborted already
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    def admit(self, client: _ClientConn) -> bool:
        """Whether a new connection may stay: below the limit, or once another has been closed
        to make room -- the one silent longest among those whose request has not reached the
        upstream (idle, still sending its head, or still sending a body that is held here).
        Requests the upstream has seen are never cut for a newcomer."""
        if len(self.clients) - self.evicting < self.max_clients:
            return True
        victim: _ClientConn | None = None
        since = 0.0
        for other in self.clients:
            if other.evicted or other.waiting:
                continue
            active = other.active
            if active is None:
                other_since = other.idle_since
            elif active.phase == _RECEIVING:
                other_since = other.last_read
            else:
                continue
            if victim is None or other_since < since:
                victim, since = other, other_since
        if victim is None:
            return False
        victim.evicted = True
        self.evicting += 1
        if victim.active is not None:  # its body was held here: the upstream never saw it
            victim.reject(503, "too many connections: request body too slow", "evicted",
                          b"Retry-After: 1\r\n")
        else:
            self.stats.connections_closed[("evicted",)] += 1
            victim.close()
        return True

    def client_gone(self, client: _ClientConn) -> None:
        if client in self.clients:
            self.clients.discard(client)
            self.stats.client_connections = len(self.clients)
            if client.evicted:
                self.evicting -= 1
        if self.closing and not self.clients and self._all_closed is not None:
            self._all_closed.set()

    def _sweep(self) -> None:
        """Read timeouts and idle connections, once every ``_sweep_every`` seconds."""
        now = perf()
        try:
            self.pool.sweep(now, self.read_timeout)
            limit = now - CLIENT_IDLE_SECONDS
            head_limit = now - self.head_timeout
            body_limit = now - self.body_timeout
            for client in list(self.clients):
                if client.head_since and client.head_since < head_limit and client.in_head:
                    client.head_timed_out()
                elif (client.parsing is not None and not client.in_head
                      and client.last_read < body_limit and not client.paused):
                    # a body that stopped coming (not one we stopped reading)
                    client.reject(408, "request body not received in time", "body_timeout")
                elif client.idle() and client.idle_since < limit and not client.head_since:
                    client.close()
        except Exception:  # pragma: no cover - fail open, keep sweeping
            _logger.exception("proxy sweep failed")
        if not self.closing:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    # --- monitoring helpers (never raise) -----------------------------------------------------

    def match(self, target: bytes) -> RouteMatch:
        end = target.find(b"?")
        raw = target if end < 0 else target[:end]
        found = self._route_cache.get(raw)
        if found is None:
            if raw.startswith(b"/"):
                path = raw.decode("latin-1")
            elif raw == b"*":
                path = "*"
            else:  # absolute form: http://host/path
                path = urlsplit(raw.decode("latin-1")).path or "/"
            if "%" in path:
                path = unquote(path)
            found = self.routes.match(path)
            if len(self._route_cache) >= ROUTE_CACHE_SIZE:
                self._route_cache.clear()
            self._route_cache[raw] = found
        return found


class _ClientConn(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    __slots__ = ("active", "body_seen", "closing", "evicted", "head_bytes", "head_since",
                 "head_size", "idle_since", "in_feed", "in_head", "last_read", "lost", "nheaders",
                 "out", "overhead", "parser", "parsing", "paused", "pending_reject", "srv",
                 "transport", "waiting", "write_paused")

    def __init__(self, srv: FastProxy) -> None:
        self.srv = srv
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: _Call | None = None  # the request being received
        self.active: _Call | None = None  # the request being answered
        self.waiting: deque[_Call] = deque()  # pipelined requests waiting their turn
        self.out: list[bytes] = []
        self.in_feed = False
        self.closing = False  # close once the active response is complete
        self.lost = False
        self.paused = 0
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
        srv = self.srv
        if srv.closing:
            self.transport.close()
            return
        if not srv.admit(self):  # every connection has a request in progress
            self.lost = True
            srv.stats.connections_closed[("limit",)] += 1
            log.warning("connection_limit", "client connection refused: %d connections, all busy "
                        "(proxy.max_connections)", len(srv.clients))
            self.transport.write(_simple_response(
                503, b'{"error": "too many connections"}', b"Retry-After: 1\r\n", close=True))
            self.transport.close()
            return
        srv.clients.add(self)
        srv.stats.client_connections = len(srv.clients)

    def data_received(self, data: bytes) -> None:
        if self.paused & _P_DONE:
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
            self.pause(_P_DONE)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self.reject(cause.status, str(cause))
            else:  # a bug of ours: do not leave the client hanging
                _logger.error("proxy: request handling failed", exc_info=cause or exc)
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
            if self.paused & _P_DONE:
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
        self.closing = True
        call = self.active
        if call is not None:
            call.client_gone()
        self.waiting.clear()
        self.srv.client_gone(self)

    def pause_writing(self) -> None:
        self.write_paused = True
        call = self.active
        if call is not None and call.up is not None:
            call.up.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        call = self.active
        if call is not None and call.up is not None:
            call.up.resume_reading()

    # --- helpers ------------------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None and not self.lost:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and self.transport is not None and not self.lost:
            self.last_read = perf()  # time spent paused is not the client's silence
            self.transport.resume_reading()

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
            self.srv.stats.connections_closed[("head_timeout",)] += 1
            self.close()
        else:
            self.reject(408, "request head not received in time")

    def reject(self, status: int, detail: str, reason: str | None = None,
               headers: bytes = b"") -> None:
        """Refuse what the client sent and close the connection after the responses owed;
        counted under ``reason`` (by default the status's)."""
        self.srv.stats.connections_closed[(reason or _REJECT_REASONS.get(status, "invalid_request"),)] += 1
        self.pause(_P_DONE)
        self.closing = True
        self.pending_reject = _simple_response(status, json.dumps({"error": detail}).encode(),
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

    def call_done(self, call: _Call) -> None:
        """``call``'s response is complete: close, or go on with the next request."""
        self.active = None
        if self.lost:
            return
        if not call.keep_alive:  # the client asked to close after this one: nothing more
            self.waiting.clear()
            self.pending_reject = None
        if self.closing or self.srv.closing:
            if self.pending_reject is not None and not self.waiting:
                self.out.append(self.pending_reject)
                self.pending_reject = None
            if not self.waiting or self.srv.closing:
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
            self.resume(_P_PIPELINE)
        self.active = call
        call.start()
        if call.up is not None and call.up.out:
            call.up.flush()
        self.flush()

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self.head_since:
            self.head_since = perf()
        self.parsing = _Call(self)
        self.head_size = 0
        self.nheaders = 0
        self.in_head = True

    def on_url(self, url: bytes) -> None:
        call = self.parsing
        assert call is not None
        call.target += url
        if len(call.target) > MAX_REQUEST_TARGET:
            raise _Reject(414, "request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        call = self.parsing
        assert call is not None
        if not self.in_head:  # a trailer field of a chunked body: not forwarded
            return
        size = len(name) + len(value)
        self.head_size += size
        self.nheaders += 1
        if size > MAX_FIELD_SIZE or self.head_size > MAX_HEAD_SIZE or self.nheaders > MAX_HEADERS:
            raise _Reject(431, "request header fields too large")
        lname = name.lower()
        if lname in _HOP:
            if lname == b"connection":
                call.conn_tokens.append(value)
            elif lname == b"transfer-encoding":
                call.chunked = True  # llhttp refuses a request whose last coding is not chunked
                call.te_codings += _codings(value)
            elif lname == b"expect":
                call.expect = value.lower() == b"100-continue"
            return
        if lname == b"host":
            call.has_host = True
            if not self.srv.preserve_host:
                return
        elif lname == b"content-length":
            call.length = value
        elif lname == b"content-encoding":
            call.encoding = value
        elif lname == self.srv.id_lower:
            call.request_id = value
        elif lname in IDEMPOTENCY_KEYS:
            call.replayable = True
        elif lname == _BINARY_HEADER:  # given twice, differently: no length (a payload error)
            call.header_length = value if call.header_length in (None, value) else b""
        call.parts += (name, _SEP, value, _CRLF)

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
            raise _Reject(400, "an upgrade request with a body is not supported")
        if self.active is None and not self.waiting:
            self.active = call
            call.start()
        else:
            if len(self.waiting) >= MAX_PIPELINED:
                raise _Reject(429, "too many pipelined requests")
            self.waiting.append(call)
            self.pause(_P_PIPELINE)

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


class _Call:
    """One request and its response."""

    __slots__ = (
        "analyse", "chunked", "client", "conn_tokens", "encoding", "expect", "extra_id",
        "has_body", "has_host", "head", "header_length", "http10", "is_head", "keep_alive",
        "length", "method", "model", "parts", "pending", "pending_size", "phase", "replay",
        "replay_size", "replayable", "req_copy", "req_copy_size", "req_done", "request_id",
        "resp_copy", "resp_copy_size", "resp_encoding", "resp_eof", "resp_header_length",
        "resp_mode", "retried", "route", "status", "t0", "target", "te_codings", "up",
        "wait_mark", "waited",
    )

    def __init__(self, client: _ClientConn) -> None:
        self.client = client
        self.target = b""
        self.parts: list[bytes] = []
        self.conn_tokens: list[bytes] = []
        self.chunked = False
        self.te_codings: list[bytes] = []  # every Transfer-Encoding coding, in order
        self.expect = False
        self.has_host = False
        self.length: bytes | None = None
        self.encoding = b""
        # Inference-Header-Content-Length of the request and of the response (binary tensors)
        self.header_length: bytes | None = None
        self.resp_header_length: bytes | None = None
        self.request_id: bytes | None = None
        self.extra_id: bytes | None = None  # a generated id, returned to the client
        self.method = b""
        self.http10 = False
        self.is_head = False
        self.keep_alive = True
        self.has_body = False
        self.phase = _PARSED
        self.req_done = False
        self.pending: list[bytes] = []  # framed body bytes not yet sent upstream
        self.pending_size = 0
        self.replay: list[bytes] | None = None  # the body sent so far on a reused connection
        self.replay_size = 0
        self.replayable = False  # safe to send twice: idempotent method or Idempotency-Key
        self.retried = False
        self.req_copy: list[bytes] | None = None
        self.req_copy_size = 0
        self.resp_copy: list[bytes] | None = None
        self.resp_copy_size = 0
        self.up: _UpConn | None = None
        self.head = b""
        self.status = CLIENT_CLOSED
        self.resp_mode = _NONE
        self.resp_eof = False
        self.resp_encoding = b""
        self.model = ""
        self.route = OTHER_ROUTE
        self.analyse = False
        self.t0 = 0.0
        self.waited = 0.0
        self.wait_mark = 0.0

    # --- the request ----------------------------------------------------------------------

    def parsed(self, parser: httptools.HttpRequestParser) -> None:
        """The request head is complete."""
        self.method = parser.get_method()
        self.is_head = self.method == b"HEAD"
        if self.method in IDEMPOTENT_METHODS:
            self.replayable = True
        client = self.client
        self.http10 = parser.get_http_version() == "1.0"  # per request: it may change
        self.keep_alive = parser.should_keep_alive()
        if self.chunked:
            self.has_body = True
        elif self.length is not None:
            try:
                self.has_body = int(self.length) > 0
            except ValueError:  # pragma: no cover - llhttp rejects invalid lengths
                self.has_body = False
        srv = client.srv
        target = self.target
        if not target.startswith(b"/") and target != b"*" and self.method != b"CONNECT":
            self._origin_form(srv.preserve_host)
        try:
            match = srv.match(self.target)
            self.model = srv.models.label(match.model)
            self.route = match.route
            self.analyse = match.inference
        except Exception as exc:  # fail open
            self.model, self.route, self.analyse = "default", OTHER_ROUTE, False
            log.warning("route", "route matching failed: %s", exc)
        if self.analyse and self.has_body:
            self.req_copy = []
        if self.conn_tokens:
            self.parts = _drop_named(self.parts, self.conn_tokens)
            if self.replayable and self.method not in IDEMPOTENT_METHODS:
                # replayable by its key only if the key still reaches the upstream
                self.replayable = any(self.parts[i].lower() in IDEMPOTENCY_KEYS
                                      for i in range(0, len(self.parts), 4))

    def _origin_form(self, preserve_host: bool) -> None:
        """An absolute-form target (``http://host/path?q``, RFC 9112 section 3.2.2) becomes
        origin-form, so that it gets the upstream's path prefix like any other; its authority
        replaces the Host field, as that section requires of the receiver. One without a valid
        host (``http://@/a``, ``http://[zz]/a``, a port beyond 65535) is refused with 400
        (RFC 9110 section 4.2.1: a recipient MUST reject an empty host as invalid)."""
        text = self.target.decode("latin-1")
        if "://" not in text:
            return  # not absolute-form either: forwarded as it came (the upstream judges it)
        try:
            url = urlsplit(text)
            if not url.scheme or not url.hostname:
                raise ValueError("no host")
            url.port  # noqa: B018 - raises ValueError when out of range
        except ValueError as exc:
            raise _Reject(400, f"invalid absolute request target: {exc}") from None
        origin = url.path or "/"
        if url.query:
            origin += "?" + url.query
        self.target = origin.encode("latin-1")
        if preserve_host:
            parts = self.parts
            self.parts = [f for i in range(0, len(parts), 4) if parts[i].lower() != b"host"
                          for f in parts[i:i + 4]]
            authority = url.netloc.rpartition("@")[2]  # without userinfo
            self.parts += (b"Host", _SEP, authority.encode("latin-1"), _CRLF)
            self.has_host = True

    def start(self) -> None:
        """Our turn: send the request upstream."""
        self.t0 = perf()
        client = self.client
        srv = client.srv
        srv.stats.in_flight[(self.model,)] += 1  # a defaultdict: cannot fail
        if self.expect and not self.req_done and not self.http10:
            client.out.append(_CONTINUE)
        target = self.target
        if srv.base and target.startswith(b"/"):
            target = srv.base + target
        head = [self.method, b" ", target, b" HTTP/1.1\r\n", *self.parts]
        if not self.has_host or not srv.preserve_host:
            head.append(srv.host_field)
        if self.chunked:
            head.append(_transfer_encoding(_unframed(self.te_codings)))
        if self.analyse and srv.id_header is not None and self.request_id is None:
            self.request_id = self.extra_id = srv.ids.next().encode()
            head += (srv.id_header, _SEP, self.extra_id, _CRLF)
        head.append(_CRLF)
        self.head = b"".join(head)
        self.wait_mark = perf()
        if (srv.request_buffering and self.has_body and not self.req_done
                and self.pending_size < BODY_BUFFER):
            self.phase = _RECEIVING  # until the body is complete or BODY_BUFFER of it is held
        else:
            self.phase = _WAITING
            srv.pool.acquire(self)

    def _body_held(self) -> None:
        """The held body is complete, or BODY_BUFFER of it is here: take an upstream connection.
        The body's receipt was the client's time, not the sidecar's (like the upstream's): the
        wait for a connection (pool sweep, read timeout) starts now."""
        now = perf()
        self.waited += now - self.wait_mark
        self.wait_mark = now
        self.phase = _WAITING
        self.client.srv.pool.acquire(self)

    def request_body(self, data: bytes) -> None:
        copy = self.req_copy
        if copy is not None:
            copy.append(data)
            self.req_copy_size += len(data)
            if self.req_copy_size > self.client.srv.cap:
                self.req_copy = None
        if self.phase == _DONE:
            return  # answered already (an error): the rest of the body is discarded
        if self.chunked:
            self._send(b"%x\r\n" % len(data))
            self._send(data)
            self._send(_CRLF)
        else:
            self._send(data)

    def request_complete(self) -> None:
        self.req_done = True
        if self.chunked and self.phase != _DONE:
            self._send(_LAST_CHUNK)
        if self.phase == _RECEIVING:
            self._body_held()

    def _send(self, data: bytes) -> None:
        up = self.up
        if up is not None:
            if self.phase == _SENDING:
                up.out.append(data)
                replay = self.replay
                if replay is not None:
                    replay.append(data)
                    self.replay_size += len(data)
                    if self.replay_size > REPLAY_LIMIT:
                        self.replay = None
                if not self.client.in_feed:
                    up.flush()
            # _RESPONDING: the upstream answered before reading the whole body; drop the rest
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= BODY_BUFFER:
            if self.phase == _RECEIVING:
                self._body_held()
            if self.up is None and self.pending_size > BODY_BUFFER:
                self.client.pause(_P_BUFFER)

    def attach(self, up: _UpConn, reused: bool) -> None:
        """An upstream connection is ready: send the head and whatever body arrived."""
        self.up = up
        self.phase = _SENDING
        up.begin(self)
        up.out.append(self.head)
        # What would be sent again on another connection: the body so far (the head is
        # rebuilt from self.head), kept only while it is small.
        if reused and not self.retried and self.pending_size <= REPLAY_LIMIT:
            self.replay = list(self.pending)
            self.replay_size = self.pending_size
        if self.pending:
            up.out += self.pending
            self.pending = []
            self.pending_size = 0
        client = self.client
        client.resume(_P_BUFFER)
        if client.write_paused:
            up.pause_reading()
        if not client.in_feed:
            up.flush()

    # --- the response ---------------------------------------------------------------------

    def response_head(self, up: _UpConn, status: int) -> None:
        self.status = status
        self.phase = _RESPONDING
        self.replay = None
        client = self.client
        parts = up.parts
        if up.conn_tokens:
            parts = _drop_named(parts, up.conn_tokens)
        head = [_status_line(status, up.reason), *parts]
        codings = _unframed(up.te_codings)
        if self.is_head or status in (204, 304):
            mode = _NONE
            # No body follows, but Content-Length still describes the representation (RFC 9110
            # section 8.6) -- except on a 204, which must not carry one.
            if up.length is not None and status != 204:
                head += (b"Content-Length", _SEP, up.length, _CRLF)
            if up.transfer_encoded and self.is_head:  # the framing a GET would get from us
                head.append(_transfer_encoding(codings, not self.http10 and not up.inner_chunked))
        elif up.length is not None and not up.transfer_encoded:
            mode = _LENGTH
            head += (b"Content-Length", _SEP, up.length, _CRLF)
        elif self.http10 or up.inner_chunked:
            # To an HTTP/1.0 client, or a body that carries chunked framing inside another
            # coding (chunked may be applied once only): delimited by closing the connection.
            mode = _TO_CLOSE
            if codings:  # the codings stay on the body; only a final chunked is undone
                head.append(_transfer_encoding(codings, False))
        else:
            mode = _CHUNKS
            head.append(_transfer_encoding(codings))
        self.resp_mode = mode
        self.resp_encoding = up.encoding
        self.resp_header_length = up.header_length
        # llhttp reads a body until the connection closes when neither a length nor chunked
        # framing delimits it (also: a last transfer coding other than chunked).
        self.resp_eof = mode != _NONE and not up.chunked and (up.length is None or up.transfer_encoded)
        if self.extra_id is not None and not up.has_id:
            head += (self.client.srv.id_header or b"", _SEP, self.extra_id, _CRLF)
        if not self.keep_alive or client.closing or client.srv.closing or mode == _TO_CLOSE:
            client.closing = True
            head.append(_CLOSE)
        elif self.http10:
            head.append(_KEEP_ALIVE)
        head.append(_CRLF)
        client.out.append(b"".join(head))
        if self.analyse and self.has_body and 200 <= status < 300 and mode != _NONE:
            self.resp_copy = []

    def response_body(self, data: bytes) -> None:
        copy = self.resp_copy
        if copy is not None:
            copy.append(data)
            self.resp_copy_size += len(data)
            if self.resp_copy_size > self.client.srv.cap:
                self.resp_copy = None
        mode = self.resp_mode
        if mode == _CHUNKS:
            self.client.out += (b"%x\r\n" % len(data), data, _CRLF)
        elif mode != _NONE:
            self.client.out.append(data)

    def response_complete(self, reusable: bool) -> None:
        client = self.client
        if self.resp_mode == _CHUNKS:
            client.out.append(_LAST_CHUNK)
        client.flush()
        up = self.up
        self.up = None
        if up is not None:
            up.call_done(reusable and self.req_done)
        self.finish(self.status, True)

    # --- failures -------------------------------------------------------------------------

    def fail(self, err: UpstreamError) -> None:
        """No response yet: answer with the error ourselves."""
        if self.phase == _DONE:
            return
        self._count(err, err.reason, "%s %s -> %d: %s", err.status)
        up = self.up
        self.up = None
        client = self.client
        if up is not None:
            client.srv.pool.release(up, False)
        if not client.lost:
            close = not self.keep_alive or client.closing or client.srv.closing
            if close:
                client.closing = True
            client.out.append(error_response(err, close))
            client.flush()
        self.finish(err.status, False)

    def broke_off(self, err: UpstreamError) -> None:
        """The response has started: cut the client connection so that the client sees a
        truncated response rather than a short one that looks complete."""
        if self.phase == _DONE:
            return
        self._count(err, "midstream", "%s %s: upstream broke off mid-response: %s")
        up = self.up
        self.up = None
        client = self.client
        if up is not None:
            client.srv.pool.release(up, False)
        client.closing = True
        client.flush()
        if client.transport is not None:
            client.transport.abort()
        self.finish(self.status, False)

    def _count(self, err: UpstreamError, key: str, msg: str, *extra: int) -> None:
        try:
            self.client.srv.stats.upstream_errors[(self.model, err.reason)] += 1
            path = self.target.split(b"?", 1)[0].decode("latin-1")
            log.warning(key, msg, self.method.decode(), path, *extra, err)
        except Exception:  # pragma: no cover - fail open
            pass

    def upstream_lost(self, exc: Exception | None, nothing_received: bool, nothing_sent: bool) -> None:
        if (self.phase == _SENDING and nothing_received and self.replay is not None
                and not self.client.lost and (nothing_sent or self.replayable)):
            # Most likely the upstream closed the idle connection as we reused it: again, once,
            # byte for byte. A request that may have reached the upstream and is not safe to
            # repeat is answered 502 instead (below): the model may have acted on it.
            self.retried = True
            self.up = None
            self.phase = _WAITING
            self.pending, self.pending_size = self.replay, self.replay_size
            self.replay = None
            self.client.srv.pool.acquire(self, fresh=True)  # not another idle one: it may be stale too
            return
        self.replay = None
        if self.phase == _RESPONDING:
            if exc is None and self.resp_eof:  # a close-delimited body ends with the connection
                self.response_complete(False)
            else:
                self.broke_off(UpstreamError("reset", 502, _lost_detail(exc)))
        elif self.phase == _SENDING:
            self.fail(UpstreamError("reset", 502, _lost_detail(exc)))

    def timed_out(self) -> None:
        self.waited += perf() - self.wait_mark
        err = UpstreamError("timeout", 504, "upstream did not answer in time")
        if self.phase == _RESPONDING:
            self.broke_off(err)
        else:
            self.fail(err)

    def abandon(self, status: int) -> None:
        """The request turned out unparseable mid-body: drop the exchange."""
        if self.phase == _DONE:
            return
        up = self.up
        self.up = None
        client = self.client
        if up is not None:
            client.srv.pool.release(up, False)
        if self.phase == _RESPONDING:  # too late to answer: cut
            client.pending_reject = None
            if client.transport is not None:
                client.transport.abort()
            status = self.status
        self.finish(status, False)

    def client_gone(self) -> None:
        """The client hung up before its response was complete (counted as 499)."""
        if self.phase == _DONE:
            return
        up = self.up
        self.up = None
        if up is not None:
            self.client.srv.pool.release(up, False)
        self.finish(CLIENT_CLOSED, False)

    # --- accounting -----------------------------------------------------------------------

    def finish(self, status: int, complete: bool) -> None:
        if self.phase == _DONE:
            return
        phase = self.phase
        self.phase = _DONE
        client = self.client
        srv = client.srv
        if phase in (_RECEIVING, _WAITING):  # neither is time spent in the sidecar
            self.waited += perf() - self.wait_mark
        client.resume(_P_UPSTREAM | _P_BUFFER)
        try:
            model = self.model
            srv.stats.in_flight[(model,)] -= 1
            elapsed = perf() - self.t0
            srv.stats.finished(model, self.route, status, elapsed, elapsed - self.waited)
        except Exception as exc:  # pragma: no cover - fail open
            log.warning("accounting", "request accounting failed: %s", exc)
        client.call_done(self)
        if complete and self.analyse and self.has_body:
            self._hand_off(srv)

    def _hand_off(self, srv: FastProxy) -> None:
        """Queue the exchange for analysis; never raises into the request path."""
        status = self.status
        if not 200 <= status < 300:
            return  # an error response carries no prediction
        try:
            srv.models.saw_prediction(self.model)
            req, resp = self.req_copy, self.resp_copy
            if req is None or resp is None:
                srv.queue.drop("body_too_large", 1,
                               f"model={self.model}: body over analysis.max_body_bytes")
                return
            exchange = Exchange(
                self.model, self.route, status, b"".join(req), b"".join(resp),
                self.encoding.decode("latin-1"), self.up_encoding(),
                self.request_id.decode("latin-1") if self.request_id is not None else None)
            if self.header_length is not None:
                exchange.request_header_length = self.header_length.decode("latin-1")
            if self.resp_header_length is not None:
                exchange.response_header_length = self.resp_header_length.decode("latin-1")
            srv.queue.offer(exchange)
        except Exception as exc:  # fail open
            log.warning("handoff", "analysis hand-off failed: %s", exc)

    def up_encoding(self) -> str:
        return self.resp_encoding.decode("latin-1") if self.resp_encoding else ""


def _lost_detail(exc: Exception | None) -> str:
    if exc is None:
        return "upstream connection failed: the upstream closed the connection"
    return f"upstream connection failed: {type(exc).__name__}: {exc}"


class _UpConn(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one call at a time."""

    __slots__ = ("call", "chunked", "conn_tokens", "done", "encoding", "has_id", "head_bytes",
                 "header_length", "idle_since", "in_feed", "in_head", "informational", "last_io",
                 "length", "out", "parser", "parts", "paused_since", "pool", "read_paused",
                 "reason", "received", "sent", "served", "stray", "te_codings",
                 "transfer_encoded", "transport")

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.call: _Call | None = None
        self.out: list[bytes] = []
        self.read_paused = False
        self.paused_since = 0.0
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
        return b"chunked" in _unframed(self.te_codings)

    def begin(self, call: _Call) -> None:
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

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.paused_since = perf()
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.last_io = perf()  # time spent paused is not the upstream's silence
            self.transport.resume_reading()

    # --- transport events -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

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
            if isinstance(cause, _HeadDone):
                call.response_complete(False)
            elif not isinstance(cause, _Stray):
                _logger.error("proxy: response handling failed", exc_info=cause or exc)
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

    def _invalid(self, call: _Call, detail: str) -> None:
        err = UpstreamError("reset", 502, detail)
        if call.phase == _RESPONDING:
            call.broke_off(err)
        else:
            call.fail(err)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pool.lost(self)
        call = self.call
        self.call = None
        if call is not None and call.up is self:
            call.upstream_lost(exc, self.received == 0, self.sent == 0)
            call.client.flush()

    def pause_writing(self) -> None:
        call = self.call
        if call is not None:
            call.client.pause(_P_UPSTREAM)

    def resume_writing(self) -> None:
        call = self.call
        if call is not None:
            call.client.resume(_P_UPSTREAM)

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.call is None:  # a second response after the one we waited for
            self.stray = True
            raise _Stray
        self._reset()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname in _HOP:
            if lname == b"connection":
                self.conn_tokens.append(value)
            elif lname == b"transfer-encoding":
                self.transfer_encoded = True
                self.te_codings += _codings(value)
                self.chunked = bool(self.te_codings) and self.te_codings[-1] == b"chunked"
            return
        if lname == b"content-length":
            self.length = value
            return
        if lname == b"content-encoding":
            self.encoding = value
        elif lname == self.pool.srv.id_lower:
            self.has_id = True
        elif lname == _BINARY_HEADER:
            self.header_length = value if self.header_length in (None, value) else b""
        self.parts += (name, _SEP, value, _CRLF)

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
            raise _HeadDone

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


class _Pool:
    """Keep-alive connections to the upstream, at most ``limit`` open (or opening) at once;
    calls beyond wait in line for one."""

    def __init__(self, srv: FastProxy, host: str, port: int, ssl_context: ssl.SSLContext | None,
                 limit: int, connect_timeout: float) -> None:
        self.srv = srv
        self.host = host
        self.port = port
        self.ssl = ssl_context
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.idle: list[_UpConn] = []  # LIFO: the warmest connection first
        self.busy: set[_UpConn] = set()
        self.count = 0  # open or opening
        self.waiters: deque[_Call] = deque()
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    def acquire(self, call: _Call, fresh: bool = False) -> None:
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

    def _connect(self, call: _Call) -> None:
        self.count += 1
        task = asyncio.get_running_loop().create_task(self._open(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, call: _Call) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(lambda: _UpConn(self), self.host, self.port, ssl=self.ssl),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.count -= 1
            if isinstance(exc, asyncio.TimeoutError):
                err = UpstreamError("timeout", 504, "upstream did not answer in time")
            else:
                err = UpstreamError("connect", 502, f"cannot connect to upstream: {exc}")
            if call.phase == _WAITING:
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
        if call.phase == _WAITING:
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
            if call.phase == _WAITING:
                self._connect(call)
                return

    def release(self, up: _UpConn, reusable: bool) -> None:
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
        up.resume_reading()
        while self.waiters:
            call = self.waiters.popleft()
            if call.phase == _WAITING:
                self.busy.add(up)
                call.attach(up, True)
                if up.out:
                    up.flush()
                call.client.flush()
                return
        up.idle_since = perf()
        self.idle.append(up)

    def lost(self, up: _UpConn) -> None:
        """An upstream connection closed (by either side)."""
        self.count -= 1
        self.busy.discard(up)
        if up in self.idle:
            self.idle.remove(up)
        self._serve_waiter()

    def sweep(self, now: float, read_timeout: float) -> None:
        for up in list(self.busy):
            if up.read_paused:  # the client does not read: its silence, not the upstream's
                up.last_io = now
                if now - up.paused_since > read_timeout and up.call is not None:
                    up.call.timed_out()  # a client that stopped reading must not pin it
            elif now - up.last_io > read_timeout and up.call is not None:
                up.call.timed_out()
        limit = now - read_timeout
        for call in self.waiters:  # waiting for a connection counts as waiting for the upstream
            if call.phase == _WAITING and call.wait_mark < limit:
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
            if call.phase == _WAITING:
                call.fail(UpstreamError("connect", 502, "the proxy is shutting down"))
        self.waiters.clear()
