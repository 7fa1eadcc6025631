"""The aiohttp proxy engine: a low-level aiohttp server whose only handler forwards every
request to the model server unchanged, on aiohttp's client. The same behaviour and metrics as
the fast engine (:mod:`modelmon.proxy.fast`) at several times the CPU per request: a supported
fallback (``proxy.engine: aiohttp``) for what the fast engine does not do, and the reference the
tests hold the fast engine to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..analysis.queue import Exchange
from .common import (
    BINARY_HEADER,
    CLIENT_CLOSED,
    HOP_BY_HOP,
    BoundedCopy,
    ProxyContext,
    ProxySettings,
    RequestIds,
    UpstreamError,
    error_body,
    log,
)

# Headers aiohttp's client adds on its own unless told not to.
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Responses up to this size with a known length are read whole and sent in one write;
# larger or unknown-length ones (chunked, server-sent events) are streamed.
BUFFER_LIMIT = 256 * 1024
def binary_header(headers: Any) -> str | None:
    """The Inference-Header-Content-Length of a message: None without one, "" (no valid length:
    a payload error) when it is given twice with different values -- as the fast engine reads it."""
    values = set(headers.getall(BINARY_HEADER, ()))
    if not values:
        return None
    return values.pop() if len(values) == 1 else ""


def forwardable(headers: CIMultiDictProxy[str], drop_extra: tuple[str, ...] = ()) -> CIMultiDict[str]:
    """Copy ``headers`` minus hop-by-hop fields and those the Connection header names."""
    drop = set(HOP_BY_HOP)
    drop.update(h.lower() for h in drop_extra)
    for value in headers.getall("Connection", ()):
        drop.update(token.strip().lower() for token in value.split(","))
    out: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in drop:
            out.add(key, value)
    return out


def classify(exc: BaseException) -> UpstreamError:
    """Map a client-side exception to a counted reason and the status the client gets."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError("connect", 502, f"cannot connect to upstream: {exc.os_error}")
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError("timeout", 504, "upstream did not answer in time")
    return UpstreamError("reset", 502, f"upstream connection failed: {type(exc).__name__}: {exc}")


def error_response(err: UpstreamError) -> web.Response:
    return web.Response(body=error_body(err), status=err.status, content_type="application/json",
                        charset="utf-8", headers={"X-Modelmon-Error": err.reason})


class Proxy:
    def __init__(self, settings: ProxySettings, context: ProxyContext,
                 session: aiohttp.ClientSession) -> None:
        self._base = settings.upstream.rstrip("/")
        self._session = session
        self._routes = context.routes
        self._models = context.models
        self._stats = context.stats
        self._queue = context.queue
        self._cap = settings.max_analysis_bytes
        self._drop_headers = () if settings.preserve_host else ("host",)
        # Inference calls without this header get a generated id, sent upstream and returned
        # to the client, so delayed labels can be joined to the prediction (None: off).
        self._id_header = settings.id_header
        self._ids = RequestIds()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        start = time.perf_counter()
        match = self._routes.match(request.path)
        model = self._models.label(match.model)
        analyse = match.inference
        in_flight = self._stats.in_flight
        in_flight[(model,)] += 1
        waited = 0.0  # seconds spent waiting on the upstream
        status = CLIENT_CLOSED
        try:
            if (request.version >= (1, 1) and request.body_exists
                    and request.headers.get("Expect", "").lower() == "100-continue"):
                # aiohttp's low-level server leaves Expect to the handler (the application
                # router answers it); the upstream never sees it: it is hop-by-hop.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            copy, body = self._request_body(request, analyse)
            data: bytes | AsyncIterator[bytes] | aiohttp.StreamReader | None
            if isinstance(body, _WholeBody):
                data = await body.read()
                copy.add(data)
            else:
                data = body
            target = request.raw_path
            headers = forwardable(request.headers, self._drop_headers)
            if not target.startswith("/") and "://" in target:
                # absolute-form (RFC 9112 section 3.2.2): origin form under the base path,
                # its authority as Host
                absolute = URL(target, encoded=True)
                target = absolute.raw_path_qs
                if "host" not in self._drop_headers and absolute.raw_host:
                    headers["Host"] = absolute.raw_authority.rpartition("@")[2]
            url = URL(self._base + target, encoded=True)
            request_id: str | None = None
            extra: tuple[str, str] | None = None  # a generated id to return to the client
            if analyse and self._id_header is not None:
                request_id = request.headers.get(self._id_header)
                if request_id is None:
                    request_id = self._ids.next()
                    headers[self._id_header] = request_id
                    extra = (self._id_header, request_id)
            skip = [h for h in _AUTO_HEADERS if h not in request.headers]
            sent = time.perf_counter()
            try:
                upstream = await self._session.request(
                    request.method, url, headers=headers, data=data, allow_redirects=False,
                    skip_auto_headers=skip, auto_decompress=False,
                )
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                waited += time.perf_counter() - sent
                err = classify(exc)
                status = err.status
                return await self._fail(request, model, err)
            waited += time.perf_counter() - sent
            try:
                status = upstream.status
                response, response_body, w = await self._relay(request, upstream, model, analyse, extra)
                waited += w
            except _BrokeOff:
                return web.Response()  # the connection is cut already; aiohttp sends nothing
            except ConnectionResetError:  # includes aiohttp's ClientConnectionResetError
                status = CLIENT_CLOSED  # the client hung up while the response was being sent
                return web.Response()
            finally:
                upstream.release()
            if analyse and request.body_exists:  # a bodyless call carries nothing to analyse
                self._hand_off(model, match.route, status, copy.data(), response_body,
                               request.headers.get("Content-Encoding", ""),
                               upstream.headers.get("Content-Encoding", ""), request_id,
                               binary_header(request.headers), binary_header(upstream.headers))
            return response
        finally:
            in_flight[(model,)] -= 1
            elapsed = time.perf_counter() - start
            self._stats.finished(model, match.route, status, elapsed, elapsed - waited)

    def _request_body(
        self, request: web.BaseRequest, analyse: bool
    ) -> tuple[BoundedCopy, _WholeBody | AsyncIterator[bytes] | aiohttp.StreamReader | None]:
        """(copy for analysis, what to send upstream). Small inference bodies are read whole;
        everything else streams, with a bounded copy taken on the way for inference routes."""
        copy = BoundedCopy(self._cap)
        if not request.body_exists:
            return copy, None
        length = request.content_length
        if analyse and length is not None and length <= self._cap:
            return copy, _WholeBody(request)
        if not analyse or length is not None:  # not analysed, or known to be over the cap
            copy.parts = None
            return copy, request.content
        return copy, self._tee(request.content, copy)

    async def _tee(self, content: aiohttp.StreamReader, copy: BoundedCopy) -> AsyncIterator[bytes]:
        async for chunk in content.iter_any():
            copy.add(chunk)
            yield chunk

    async def _relay(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, model: str, analyse: bool,
        extra_header: tuple[str, str] | None = None,
    ) -> tuple[web.StreamResponse, bytes | None, float]:
        """Send the upstream's response to the client; returns (response, bounded copy of the
        body for analysis, seconds spent waiting on upstream reads)."""
        headers = forwardable(upstream.headers, ("content-length",))
        if extra_header is not None and extra_header[0] not in headers:
            headers[extra_header[0]] = extra_header[1]
        length = upstream.content_length
        waited = 0.0
        if request.method == "HEAD" or upstream.status in (204, 304):
            # No body follows, but Content-Length still describes the representation.
            bodyless = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
            if length is not None and upstream.status not in (204, 304):
                bodyless.content_length = length
            await bodyless.prepare(request)
            await bodyless.write_eof()
            return bodyless, None, waited
        if length is not None and length <= BUFFER_LIMIT:
            t = time.perf_counter()
            try:
                body = await upstream.read()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                err = classify(exc)
                return await self._fail(request, model, err), None, time.perf_counter() - t
            waited = time.perf_counter() - t
            response = web.Response(
                status=upstream.status, reason=upstream.reason, headers=headers, body=body
            )
            await response.prepare(request)
            await response.write_eof()
            return response, body if analyse else None, waited

        stream = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
        if length is not None:
            stream.content_length = length
        await stream.prepare(request)
        captured = BoundedCopy(self._cap) if analyse else None
        while True:
            t = time.perf_counter()
            try:
                chunk = await upstream.content.readany()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                # The status line is gone already: cut the connection so the client sees a
                # truncated response rather than a short one that looks complete.
                err = classify(exc)
                self._stats.upstream_errors[(model, err.reason)] += 1
                log.warning("midstream", "%s %s: upstream broke off mid-response: %s",
                            request.method, request.path, err)
                if request.transport is not None:
                    request.transport.abort()
                raise _BrokeOff from None
            waited += time.perf_counter() - t
            if not chunk:
                break
            if captured is not None:
                captured.add(chunk)
            await stream.write(chunk)
        await stream.write_eof()
        return stream, captured.data() if captured is not None else None, waited

    async def _fail(self, request: web.BaseRequest, model: str, err: UpstreamError) -> web.StreamResponse:
        self._stats.upstream_errors[(model, err.reason)] += 1
        log.warning(err.reason, "%s %s -> %d: %s", request.method, request.path, err.status, err)
        response = error_response(err)
        await response.prepare(request)
        await response.write_eof()
        return response

    def _hand_off(
        self, model: str, route: str, status: int, request_body: bytes | None,
        response_body: bytes | None, request_encoding: str, response_encoding: str,
        request_id: str | None = None, request_header_length: str | None = None,
        response_header_length: str | None = None,
    ) -> None:
        """Queue the exchange for analysis; never raises into the request path."""
        if not 200 <= status < 300:
            return  # an error response carries no prediction
        try:
            self._models.saw_prediction(model)
            if request_body is None or response_body is None:
                self._queue.drop("body_too_large", 1, f"model={model}: body over analysis.max_body_bytes")
                return
            self._queue.offer(Exchange(model, route, status, request_body, response_body,
                                       request_encoding, response_encoding, request_id,
                                       request_header_length=request_header_length,
                                       response_header_length=response_header_length))
        except Exception as exc:  # fail open
            log.warning("handoff", "analysis hand-off failed: %s", exc)


class _BrokeOff(Exception):
    """The upstream broke off after the response had started; the client connection is cut."""


class _WholeBody:
    """Marker: read the request body whole before forwarding (small inference bodies)."""

    __slots__ = ("request",)

    def __init__(self, request: web.BaseRequest) -> None:
        self.request = request

    async def read(self) -> bytes:
        return await self.request.read()
