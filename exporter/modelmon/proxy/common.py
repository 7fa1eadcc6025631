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

from ..logs import RateLimitedLog

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
    """Generated request ids: 32 random hex digits like ``uuid4().hex``, ten times cheaper: the
    random bytes come from the OS 4 KiB at a time rather than in one system call per id."""

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




def error_body(err: UpstreamError) -> bytes:
    """The JSON body of the sidecar's own 502/504 (both engines, byte for byte)."""
    return json.dumps({"error": "upstream_unavailable", "reason": err.reason, "detail": str(err)}).encode()
