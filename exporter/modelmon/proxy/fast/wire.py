"""The fast engine's wire vocabulary: limits, byte strings of HTTP/1.1 framing, the
call phases and pause reasons, and the small helpers every connection uses."""

from __future__ import annotations

import logging
import time
from http import HTTPStatus
from typing import TYPE_CHECKING

from ..common import BINARY_HEADER, HOP_BY_HOP, UpstreamError, error_body

if TYPE_CHECKING:
    import asyncio


logger = logging.getLogger("modelmon.proxy")
perf = time.perf_counter

HOP = frozenset(h.encode() for h in HOP_BY_HOP)
# Fields a Connection header may name without effect: removing them would change how the rest
# of the message is framed (Content-Length) or where it goes (Host).
KEPT = frozenset({b"content-length", b"host"})
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
BINARY_HEADER_KEY = BINARY_HEADER.lower().encode()  # binary tensor data: the JSON object's length
ROUTE_CACHE_SIZE = 4096

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CRLF = b"\r\n"
SEP = b": "
CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"

# modelmon_proxy_client_connections_closed_total{reason} of a refused request
REJECT_REASONS = {400: "invalid_request", 408: "head_timeout", 414: "head_too_large",
                   429: "pipeline_limit", 431: "head_too_large", 500: "internal_error"}

# Reasons for not reading from a connection (bits of ReadGate.reasons). From a client:
P_UPSTREAM = 1  # the upstream's write buffer is full
P_BUFFER = 2  # request body buffered while waiting for an upstream connection
P_PIPELINE = 4  # a pipelined request waits for the one before it
P_DONE = 8  # nothing more will be read (upgrade request, rejected request)
# From an upstream:
P_CLIENT = 16  # the client's write buffer is full


class ReadGate:
    """Flow control, written once for both sides of a call: reading from one transport stops
    while any reason holds (a bit in ``reasons``) and starts again when the last one clears.

    ``transport`` is set once the connection is admitted and cleared when it is lost; while it
    is ``None`` the reasons are still kept (so ``reasons & P_DONE`` still says "read nothing")
    but no transport is touched. ``since`` is when reading last stopped (the upstream sweep
    tells a client that does not read from an upstream that does not answer by it).
    """

    __slots__ = ("reasons", "since", "transport")

    def __init__(self) -> None:
        self.reasons = 0
        self.since = 0.0
        self.transport: asyncio.Transport | None = None

    def pause(self, reason: int) -> None:
        if not self.reasons:
            self.since = perf()
            if self.transport is not None:
                self.transport.pause_reading()
        self.reasons |= reason

    def resume(self, reason: int) -> bool:
        """Clear ``reason``; True when that started reading again (time spent paused is then
        not the peer's silence: the caller restarts its clock)."""
        if not self.reasons & reason:
            return False
        self.reasons &= ~reason
        if self.reasons or self.transport is None:
            return False
        self.transport.resume_reading()
        return True

# Call phases: PARSED -> [RECEIVING] -> WAITING -> SENDING -> RESPONDING -> DONE.
# RECEIVING: the body is still coming and is held (up to BODY_BUFFER) before an upstream
# connection is taken, so that a client trickling its body cannot pin one (nginx buffers
# request bodies before proxying for the same reason).
PARSED, RECEIVING, WAITING, SENDING, RESPONDING, DONE = range(6)
# response framing towards the client
NONE, LENGTH, CHUNKS, TO_CLOSE = range(4)

STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    key = (status, reason)
    line = STATUS_LINES.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(STATUS_LINES) < 512:
            STATUS_LINES[key] = line
    return line


def simple_response(status: int, body: bytes, headers: bytes = b"", close: bool = False) -> bytes:
    return (status_line(status, HTTPStatus(status).phrase.encode())
            + b"Content-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n" % len(body)
            + headers + (CLOSE if close else b"") + CRLF + body)


def error_response(err: UpstreamError, close: bool) -> bytes:
    """The sidecar's own 502/504: the body both engines send (common.error_body)."""
    return simple_response(err.status, error_body(err),
                           b"X-Modelmon-Error: " + err.reason.encode() + CRLF, close)


def drop_named(parts: list[bytes], tokens: list[bytes]) -> list[bytes]:
    """Remove the fields a Connection header names from a flat [name, ": ", value, CRLF] list."""
    named = {t.strip().lower() for value in tokens for t in value.split(b",")}
    named -= HOP
    named -= KEPT  # framing and routing: never removed (the body would be sent unframed)
    if not named:
        return parts
    out: list[bytes] = []
    for i in range(0, len(parts), 4):
        if parts[i].lower() not in named:
            out += parts[i:i + 4]
    return out


def codings(value: bytes) -> list[bytes]:
    """The transfer codings of a Transfer-Encoding field value, lowercased, in order."""
    return [c for c in (t.strip().lower() for t in value.split(b",")) if c]


def unframed(codings: list[bytes]) -> list[bytes]:
    """``codings`` without a final chunked (RFC 9112 section 6.1): the proxy undoes that one and
    frames the body itself; every other coding stays on the body, in order."""
    return codings[:-1] if codings and codings[-1] == b"chunked" else codings


def transfer_encoding(codings: list[bytes], chunked: bool = True) -> bytes:
    """The Transfer-Encoding field for a body with ``codings`` applied, re-framed by us."""
    if not codings:
        return CHUNKED if chunked else b""
    return b"Transfer-Encoding: " + b", ".join([*codings, b"chunked"] if chunked else codings) + CRLF


class Reject(Exception):
    """A request the proxy refuses before it reaches the upstream."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class HeadDone(Exception):
    """Stops the response parser after the head of a response to HEAD (llhttp would wait for
    the body its Content-Length announces)."""


class Stray(Exception):
    """Stops the response parser at a message that follows the complete response."""




def lost_detail(exc: Exception | None) -> str:
    if exc is None:
        return "upstream connection failed: the upstream closed the connection"
    return f"upstream connection failed: {type(exc).__name__}: {exc}"


