"""What both proxy engines share: the hop-by-hop headers (RFC 9110 section 7.6.1), the
status of a call the client gave up on, the binary tensor header, request ids, upstream errors
and the JSON body of the sidecar's own error responses, and the rate-limited log.

Monitoring fails open. Measuring, route matching and the hand-off to analysis are cheap and
cannot change what the client receives; the analysis itself happens later, off the request
path, through the bounded queue.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..logs import RateLimitedLog

if TYPE_CHECKING:
    from ..analysis.queue import AnalysisQueue
    from ..collectors.models import ModelRegistry
    from ..collectors.traffic import TrafficStats
    from ..config import Config
    from .routes import RouteTable

log = RateLimitedLog(logging.getLogger("modelmon.proxy"))

# RFC 9110 section 7.6.1: connection-specific fields are not forwarded. "Expect" is answered by
# our own server before the body is read, so it must not reach the upstream a second time.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect",
})
# Client closed the connection before the response was sent (nginx's convention).
CLIENT_CLOSED = 499
# Triton's and KServe's binary tensor data extension: the length of the JSON object that starts
# the body, the tensors' raw bytes following it (request and response alike).
BINARY_HEADER = "Inference-Header-Content-Length"


class RequestIds:
    """Generated request ids: 32 random hex digits like ``uuid4().hex``, at a fraction of its cost:
    the random bytes come from the OS 4 KiB at a time rather than in one system call per id
    (docs/architecture.md, Decisions)."""

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> str:
        pos = self._pos
        if pos >= len(self._pool):
            self._pool = os.urandom(4096)
            pos = 0
        self._pos = pos + 16
        return self._pool[pos:pos + 16].hex()


class UpstreamError(Exception):
    def __init__(self, reason: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status




class BoundedCopy:
    """The copy of a body the analysis gets, kept only while it is at most ``cap`` bytes (the
    configuration's analysis.max_body_bytes): past that it is dropped -- the body itself passes
    through untouched, and the exchange is counted as not analysed (body_too_large)."""

    __slots__ = ("cap", "parts", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] | None = []
        self.size = 0

    def add(self, data: bytes) -> None:
        parts = self.parts
        if parts is not None:
            self.size += len(data)
            if self.size > self.cap:
                self.parts = None
            else:
                parts.append(data)

    def data(self) -> bytes | None:
        """The body, or None when it was too large to keep (``parts`` set to None: also when
        it was known to be from the start, and not copied at all)."""
        parts = self.parts
        if parts is None:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)


def error_body(err: UpstreamError) -> bytes:
    """The JSON body of the sidecar's own 502/504 (both engines, byte for byte)."""
    return json.dumps({"error": "upstream_unavailable", "reason": err.reason, "detail": str(err)}).encode()


@dataclass(frozen=True)
class ProxySettings:
    """What both engines are configured with, read once from the configuration."""

    upstream: str  # the model server's base URL
    max_analysis_bytes: int  # bodies beyond this are proxied but not analysed
    preserve_host: bool = True
    id_header: str | None = "X-Request-ID"  # None: no request ids generated
    max_connections: int = 256  # upstream connections
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_clients: int = 4096  # client connections (fast engine)
    head_timeout: float = 15.0  # fast engine
    body_timeout: float = 60.0  # fast engine
    request_buffering: bool = True  # fast engine

    @classmethod
    def of(cls, config: Config) -> ProxySettings:
        up, proxy = config.upstream, config.proxy
        assert up.url is not None, "no upstream configured"
        return cls(up.url, config.analysis.max_body_bytes, up.preserve_host,
                   config.labels.header if config.labels.generate_ids else None,
                   up.max_connections, up.connect_timeout_seconds, up.read_timeout_seconds,
                   proxy.max_connections, proxy.request_head_timeout_seconds,
                   proxy.request_body_timeout_seconds, proxy.request_buffering)


@dataclass(frozen=True)
class ProxyContext:
    """The sidecar's state a proxy reads (routes, models) and writes (traffic counters, the
    analysis queue), handed to it when it is made."""

    routes: RouteTable
    models: ModelRegistry
    stats: TrafficStats
    queue: AnalysisQueue
