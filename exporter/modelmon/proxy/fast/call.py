"""One request and its response (:class:`Call`), through its phases::

    PARSED ──head complete──► RECEIVING ──body complete, or BODY_BUFFER of it held──┐
       │  (request_buffering, a body still coming)                                   │
       └──no body, or buffering off───────────────────────────────────────► WAITING ◄┘
                                                                     (pool.acquire)  │
          ┌──────── upstream lost before any response byte, safe to send again ─────┤
          │         (an idle connection the upstream had closed: once, fresh)       ▼
          └──────────────────────────────────────────────────────────────────── SENDING
                                                      (attach: head + held body out) │
                                                                  response head read ▼
                                                                              RESPONDING
                                                                  response complete, │
                                                     client gone, or an error answer ▼
                                                                                  DONE

The time in WAITING (for an upstream connection) counts as the sidecar's overhead, the upload
in RECEIVING as the client's. At DONE the call does its accounting (traffic counters, the
latency and overhead histograms) and hands an analysis copy of the exchange to the queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httptools

from ...analysis.queue import Exchange
from ..common import CLIENT_CLOSED, BoundedCopy, UpstreamError, log
from ..routes import OTHER_ROUTE
from .wire import (
    BODY_BUFFER,
    CHUNKS,
    CLOSE,
    CONTINUE,
    CRLF,
    DONE,
    IDEMPOTENCY_KEYS,
    IDEMPOTENT_METHODS,
    KEEP_ALIVE,
    LAST_CHUNK,
    LENGTH,
    NONE,
    P_BUFFER,
    P_CLIENT,
    P_UPSTREAM,
    PARSED,
    RECEIVING,
    REPLAY_LIMIT,
    RESPONDING,
    SENDING,
    SEP,
    TO_CLOSE,
    WAITING,
    Reject,
    drop_named,
    error_response,
    lost_detail,
    perf,
    status_line,
    transfer_encoding,
    unframed,
)

if TYPE_CHECKING:
    from .client import ClientConnection
    from .shared import Shared
    from .upstream import UpstreamConnection


class Call:
    """One request and its response."""

    __slots__ = (
        "analyse", "chunked", "client", "conn_tokens", "encoding", "expect", "extra_id",
        "has_body", "has_host", "head", "header_length", "http10", "is_head", "keep_alive",
        "length", "method", "model", "parts", "pending", "pending_size", "phase", "replay",
        "replay_size", "replayable", "req_copy", "req_done", "request_id",
        "resp_copy", "resp_encoding", "resp_eof", "resp_header_length",
        "resp_mode", "retried", "route", "shared", "status", "t0", "target", "te_codings", "up",
        "wait_mark", "waited",
    )

    def __init__(self, client: ClientConnection, shared: Shared) -> None:
        self.client = client
        self.shared = shared
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
        self.phase = PARSED
        self.req_done = False
        self.pending: list[bytes] = []  # framed body bytes not yet sent upstream
        self.pending_size = 0
        self.replay: list[bytes] | None = None  # the body sent so far on a reused connection
        self.replay_size = 0
        self.replayable = False  # safe to send twice: idempotent method or Idempotency-Key
        self.retried = False
        self.req_copy: BoundedCopy | None = None  # taken for inference routes
        self.resp_copy: BoundedCopy | None = None
        self.up: UpstreamConnection | None = None
        self.head = b""
        self.status = CLIENT_CLOSED
        self.resp_mode = NONE
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
        self.http10 = parser.get_http_version() == "1.0"  # per request: it may change
        self.keep_alive = parser.should_keep_alive()
        if self.chunked:
            self.has_body = True
        elif self.length is not None:
            try:
                self.has_body = int(self.length) > 0
            except ValueError:  # pragma: no cover - llhttp rejects invalid lengths
                self.has_body = False
        shared = self.shared
        target = self.target
        if not target.startswith(b"/") and target != b"*" and self.method != b"CONNECT":
            self._origin_form(shared.preserve_host)
        try:
            match = shared.match(self.target)
            self.model = shared.models.label(match.model)
            self.route = match.route
            self.analyse = match.inference
        except Exception as exc:  # fail open
            self.model, self.route, self.analyse = "default", OTHER_ROUTE, False
            log.warning("route", "route matching failed: %s", exc)
        if self.analyse and self.has_body:
            self.req_copy = BoundedCopy(self.shared.cap)
        if self.conn_tokens:
            self.parts = drop_named(self.parts, self.conn_tokens)
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
            raise Reject(400, f"invalid absolute request target: {exc}") from None
        origin = url.path or "/"
        if url.query:
            origin += "?" + url.query
        self.target = origin.encode("latin-1")
        if preserve_host:
            parts = self.parts
            self.parts = [f for i in range(0, len(parts), 4) if parts[i].lower() != b"host"
                          for f in parts[i:i + 4]]
            authority = url.netloc.rpartition("@")[2]  # without userinfo
            self.parts += (b"Host", SEP, authority.encode("latin-1"), CRLF)
            self.has_host = True

    def start(self) -> None:
        """Our turn: send the request upstream."""
        self.t0 = perf()
        client = self.client
        shared = self.shared
        shared.stats.in_flight[(self.model,)] += 1  # a defaultdict: cannot fail
        if self.expect and not self.req_done and not self.http10:
            client.out.append(CONTINUE)
        target = self.target
        if shared.base and target.startswith(b"/"):
            target = shared.base + target
        head = [self.method, b" ", target, b" HTTP/1.1\r\n", *self.parts]
        if not self.has_host or not shared.preserve_host:
            head.append(shared.host_field)
        if self.chunked:
            head.append(transfer_encoding(unframed(self.te_codings)))
        if self.analyse and shared.id_header is not None and self.request_id is None:
            self.request_id = self.extra_id = shared.ids.next().encode()
            head += (shared.id_header, SEP, self.extra_id, CRLF)
        head.append(CRLF)
        self.head = b"".join(head)
        self.wait_mark = perf()
        if (shared.request_buffering and self.has_body and not self.req_done
                and self.pending_size < BODY_BUFFER):
            self.phase = RECEIVING  # until the body is complete or BODY_BUFFER of it is held
        else:
            self.phase = WAITING
            shared.pool.acquire(self)

    def _body_held(self) -> None:
        """The held body is complete, or BODY_BUFFER of it is here: take an upstream connection.
        The body's receipt was the client's time, not the sidecar's (like the upstream's): the
        wait for a connection (pool sweep, read timeout) starts now."""
        now = perf()
        self.waited += now - self.wait_mark
        self.wait_mark = now
        self.phase = WAITING
        self.shared.pool.acquire(self)

    def request_body(self, data: bytes) -> None:
        if self.req_copy is not None:
            self.req_copy.add(data)
        if self.phase == DONE:
            return  # answered already (an error): the rest of the body is discarded
        if self.chunked:
            self._send(b"%x\r\n" % len(data))
            self._send(data)
            self._send(CRLF)
        else:
            self._send(data)

    def request_complete(self) -> None:
        self.req_done = True
        if self.chunked and self.phase != DONE:
            self._send(LAST_CHUNK)
        if self.phase == RECEIVING:
            self._body_held()

    def _send(self, data: bytes) -> None:
        up = self.up
        if up is not None:
            if self.phase == SENDING:
                up.out.append(data)
                replay = self.replay
                if replay is not None:
                    replay.append(data)
                    self.replay_size += len(data)
                    if self.replay_size > REPLAY_LIMIT:
                        self.replay = None
                if not self.client.in_feed:
                    up.flush()
            # RESPONDING: the upstream answered before reading the whole body; drop the rest
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= BODY_BUFFER:
            if self.phase == RECEIVING:
                self._body_held()
            if self.up is None and self.pending_size > BODY_BUFFER:
                self.client.pause(P_BUFFER)

    def attach(self, up: UpstreamConnection, reused: bool) -> None:
        """An upstream connection is ready: send the head and whatever body arrived."""
        self.up = up
        self.phase = SENDING
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
        client.resume(P_BUFFER)
        if client.write_paused:
            up.read.pause(P_CLIENT)
        if not client.in_feed:
            up.flush()

    # --- the response ---------------------------------------------------------------------

    def response_head(self, up: UpstreamConnection, status: int) -> None:
        self.status = status
        self.phase = RESPONDING
        self.replay = None
        client = self.client
        parts = up.parts
        if up.conn_tokens:
            parts = drop_named(parts, up.conn_tokens)
        head = [status_line(status, up.reason), *parts]
        codings = unframed(up.te_codings)
        if self.is_head or status in (204, 304):
            mode = NONE
            # No body follows, but Content-Length still describes the representation (RFC 9110
            # section 8.6) -- except on a 204, which must not carry one.
            if up.length is not None and status != 204:
                head += (b"Content-Length", SEP, up.length, CRLF)
            if up.transfer_encoded and self.is_head:  # the framing a GET would get from us
                head.append(transfer_encoding(codings, not self.http10 and not up.inner_chunked))
        elif up.length is not None and not up.transfer_encoded:
            mode = LENGTH
            head += (b"Content-Length", SEP, up.length, CRLF)
        elif self.http10 or up.inner_chunked:
            # To an HTTP/1.0 client, or a body that carries chunked framing inside another
            # coding (chunked may be applied once only): delimited by closing the connection.
            mode = TO_CLOSE
            if codings:  # the codings stay on the body; only a final chunked is undone
                head.append(transfer_encoding(codings, False))
        else:
            mode = CHUNKS
            head.append(transfer_encoding(codings))
        self.resp_mode = mode
        self.resp_encoding = up.encoding
        self.resp_header_length = up.header_length
        # llhttp reads a body until the connection closes when neither a length nor chunked
        # framing delimits it (also: a last transfer coding other than chunked).
        self.resp_eof = mode != NONE and not up.chunked and (up.length is None or up.transfer_encoded)
        if self.extra_id is not None and not up.has_id:
            head += (self.shared.id_header or b"", SEP, self.extra_id, CRLF)
        if not self.keep_alive or client.closing or self.shared.closing or mode == TO_CLOSE:
            client.closing = True
            head.append(CLOSE)
        elif self.http10:
            head.append(KEEP_ALIVE)
        head.append(CRLF)
        client.out.append(b"".join(head))
        if self.analyse and self.has_body and 200 <= status < 300 and mode != NONE:
            self.resp_copy = BoundedCopy(self.shared.cap)

    def response_body(self, data: bytes) -> None:
        if self.resp_copy is not None:
            self.resp_copy.add(data)
        mode = self.resp_mode
        if mode == CHUNKS:
            self.client.out += (b"%x\r\n" % len(data), data, CRLF)
        elif mode != NONE:
            self.client.out.append(data)

    def response_complete(self, reusable: bool) -> None:
        client = self.client
        if self.resp_mode == CHUNKS:
            client.out.append(LAST_CHUNK)
        client.flush()
        up = self.up
        self.up = None
        if up is not None:
            up.call_done(reusable and self.req_done)
        self.finish(self.status, True)

    # --- failures -------------------------------------------------------------------------

    def fail(self, err: UpstreamError) -> None:
        """No response yet: answer with the error ourselves."""
        if self.phase == DONE:
            return
        self._count(err, err.reason, "%s %s -> %d: %s", err.status)
        up = self.up
        self.up = None
        client = self.client
        if up is not None:
            self.shared.pool.release(up, False)
        if not client.lost:
            close = not self.keep_alive or client.closing or self.shared.closing
            if close:
                client.closing = True
            client.out.append(error_response(err, close))
            client.flush()
        self.finish(err.status, False)

    def broke_off(self, err: UpstreamError) -> None:
        """The response has started: cut the client connection so that the client sees a
        truncated response rather than a short one that looks complete."""
        if self.phase == DONE:
            return
        self._count(err, "midstream", "%s %s: upstream broke off mid-response: %s")
        up = self.up
        self.up = None
        client = self.client
        if up is not None:
            self.shared.pool.release(up, False)
        client.closing = True
        client.flush()
        if client.transport is not None:
            client.transport.abort()
        self.finish(self.status, False)

    def _count(self, err: UpstreamError, key: str, msg: str, *extra: int) -> None:
        try:
            self.shared.stats.upstream_errors[(self.model, err.reason)] += 1
            path = self.target.split(b"?", 1)[0].decode("latin-1")
            log.warning(key, msg, self.method.decode(), path, *extra, err)
        except Exception:  # pragma: no cover - fail open
            pass

    def upstream_lost(self, exc: Exception | None, nothing_received: bool, nothing_sent: bool) -> None:
        if (self.phase == SENDING and nothing_received and self.replay is not None
                and not self.client.lost and (nothing_sent or self.replayable)):
            # Most likely the upstream closed the idle connection as we reused it: again, once,
            # byte for byte. A request that may have reached the upstream and is not safe to
            # repeat is answered 502 instead (below): the model may have acted on it.
            self.retried = True
            self.up = None
            self.phase = WAITING
            self.pending, self.pending_size = self.replay, self.replay_size
            self.replay = None
            self.shared.pool.acquire(self, fresh=True)  # not another idle one: it may be stale too
            return
        self.replay = None
        if self.phase == RESPONDING:
            if exc is None and self.resp_eof:  # a close-delimited body ends with the connection
                self.response_complete(False)
            else:
                self.broke_off(UpstreamError("reset", 502, lost_detail(exc)))
        elif self.phase == SENDING:
            self.fail(UpstreamError("reset", 502, lost_detail(exc)))

    def timed_out(self) -> None:
        self.waited += perf() - self.wait_mark
        err = UpstreamError("timeout", 504, "upstream did not answer in time")
        if self.phase == RESPONDING:
            self.broke_off(err)
        else:
            self.fail(err)

    def abandon(self, status: int) -> None:
        """The request turned out unparseable mid-body: drop the exchange."""
        if self.phase == DONE:
            return
        up = self.up
        self.up = None
        client = self.client
        if up is not None:
            self.shared.pool.release(up, False)
        if self.phase == RESPONDING:  # too late to answer: cut
            client.pending_reject = None
            if client.transport is not None:
                client.transport.abort()
            status = self.status
        self.finish(status, False)

    def client_gone(self) -> None:
        """The client hung up before its response was complete (counted as 499)."""
        if self.phase == DONE:
            return
        up = self.up
        self.up = None
        if up is not None:
            self.shared.pool.release(up, False)
        self.finish(CLIENT_CLOSED, False)

    # --- accounting -----------------------------------------------------------------------

    def finish(self, status: int, complete: bool) -> None:
        if self.phase == DONE:
            return
        phase = self.phase
        self.phase = DONE
        client = self.client
        shared = self.shared
        if phase in (RECEIVING, WAITING):  # neither is time spent in the sidecar
            self.waited += perf() - self.wait_mark
        client.resume(P_UPSTREAM | P_BUFFER)
        try:
            model = self.model
            shared.stats.in_flight[(model,)] -= 1
            elapsed = perf() - self.t0
            shared.stats.finished(model, self.route, status, elapsed, elapsed - self.waited)
        except Exception as exc:  # pragma: no cover - fail open
            log.warning("accounting", "request accounting failed: %s", exc)
        client.call_done(self)
        if complete and self.analyse and self.has_body:
            self._hand_off(shared)

    def _hand_off(self, shared: Shared) -> None:
        """Queue the exchange for analysis; never raises into the request path."""
        status = self.status
        if not 200 <= status < 300:
            return  # an error response carries no prediction
        try:
            shared.models.saw_prediction(self.model)
            req = self.req_copy.data() if self.req_copy is not None else None
            resp = self.resp_copy.data() if self.resp_copy is not None else None
            if req is None or resp is None:
                shared.queue.drop("body_too_large", 1,
                               f"model={self.model}: body over analysis.max_body_bytes")
                return
            exchange = Exchange(
                self.model, self.route, status, req, resp,
                self.encoding.decode("latin-1"), self.up_encoding(),
                self.request_id.decode("latin-1") if self.request_id is not None else None)
            if self.header_length is not None:
                exchange.request_header_length = self.header_length.decode("latin-1")
            if self.resp_header_length is not None:
                exchange.response_header_length = self.resp_header_length.decode("latin-1")
            shared.queue.offer(exchange)
        except Exception as exc:  # fail open
            log.warning("handoff", "analysis hand-off failed: %s", exc)

    def up_encoding(self) -> str:
        return self.resp_encoding.decode("latin-1") if self.resp_encoding else ""


