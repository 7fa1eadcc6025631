"""Shared fixtures: a real upstream model server and a real sidecar on 127.0.0.1 ports."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from modelmon.config import PROXY_ENGINES, Config, load_config
from modelmon.sidecar.listeners import Listeners
from modelmon.sidecar.state import Sidecar
from prometheus_client import CollectorRegistry

ENGINES = PROXY_ENGINES  # every engine the configuration offers


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines: run the module's sidecar tests against every proxy engine")
    config.addinivalue_line(
        "markers", "only_engine(name): this test is about one engine's own behaviour")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests in modules marked ``pytest.mark.engines`` that start a sidecar run once per
    proxy engine (``proxy.engine``); elsewhere the configured default engine serves."""
    if metafunc.definition.get_closest_marker("engines") and "engine" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("only_engine")
        metafunc.parametrize("engine", only.args if only else ENGINES, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str | None:
    """The proxy engine under test (None: the configured default)."""
    return getattr(request, "param", None)


def upstream_app() -> web.Application:
    """A model server with the odd behaviours a proxy must survive."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path_qs": request.raw_path,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_hex": body.hex(),
            },
            headers={"X-Upstream": "yes", "Set-Cookie": "a=1"},
        )

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        body = None if code in (204, 304) else f"status {code}".encode()
        return web.Response(status=code, body=body, headers={"X-Code": str(code)})

    async def binary(request: web.Request) -> web.Response:
        size = int(request.query.get("size", "1024"))
        return web.Response(body=bytes(i % 251 for i in range(size)),
                            content_type="application/octet-stream")

    async def chunked(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "5"))
        size = int(request.query.get("size", "10"))
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(n):
            await resp.write(bytes([65 + i % 26]) * size)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def sse(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "3"))
        delay = float(request.query.get("delay", "0.2"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i in range(n):
            await resp.write(f"data: event {i}\n\n".encode())
            await asyncio.sleep(delay)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("delay", "1")))
        return web.json_response({"slept": True})

    async def reset(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0.1)
        return web.Response()

    async def midreset(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"partial")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        return resp

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"predictions": [1]}'),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    async def infer(request: web.Request) -> web.Response:
        payload = await request.json()
        rows = payload["inputs"][0]["shape"][0]
        return web.json_response({"outputs": [{"name": "p", "shape": [rows], "datatype": "FP64",
                                               "data": [0.5] * rows}]})

    async def predict(request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        if "instances" not in payload:
            return web.json_response({"error": "instances missing"}, status=400)
        return web.json_response({"predictions": [1] * len(payload["instances"])})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/echo{tail:.*}", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_route("*", "/binary", binary)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/sse", sse)
    app.router.add_route("*", "/slow", slow)
    app.router.add_get("/reset", reset)
    app.router.add_get("/midreset", midreset)
    app.router.add_get("/gzip", gzipped)
    app.router.add_post("/v2/models/{name}/infer", infer)
    app.router.add_post("/v1/models/{name}:predict", predict)
    app.router.add_get("/v2/health/ready", ready)
    return app


@pytest.fixture
async def upstream() -> AsyncIterator[TestServer]:
    server = TestServer(upstream_app(), host="127.0.0.1")
    await server.start_server(auto_decompress=False)
    yield server
    await server.close()


@dataclass
class Running:
    sidecar: Sidecar
    listeners: Listeners
    session: aiohttp.ClientSession

    @property
    def engine(self) -> str:
        return self.sidecar.config.proxy.engine

    @property
    def traffic_url(self) -> str:
        return f"http://127.0.0.1:{self.listeners.traffic_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.listeners.admin_port}"

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.sidecar.registry.get_sample_value(name, labels or {})

    async def drain(self) -> None:
        await self.sidecar.queue.join(timeout=5)
        await asyncio.sleep(0.01)
        for monitor in self.sidecar.analysis.drift_models.values():
            monitor.flush()  # as a scrape or the drift schedule would


StartSidecar = Callable[..., Awaitable[Running]]


def sidecar_config(upstream_url: str | None, engine: str | None = None, **overrides: Any) -> Config:
    base: dict[str, Any] = {
        # metrics_share_seconds 0: a scrape right after a change sees it (concurrent ones share)
        "server": {"host": "127.0.0.1", "traffic_port": 0, "admin_port": 0,
                   "shutdown_grace_seconds": 5, "metrics_share_seconds": 0},
        "upstream": {"url": upstream_url, "probe_interval_seconds": 0.2,
                     "read_timeout_seconds": 2, "connect_timeout_seconds": 1},
        "resources": {"interval_seconds": 0.2},
        "proxy": {} if engine is None else {"engine": engine},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(base.get(section), dict):
            base[section] = {**base[section], **values}
        else:
            base[section] = values
    return load_config(overrides=base)


@pytest.fixture
async def start_sidecar(engine: str | None) -> AsyncIterator[StartSidecar]:
    started: list[Running] = []

    async def go(upstream_url: str | None, **overrides: Any) -> Running:
        sidecar = Sidecar(sidecar_config(upstream_url, engine, **overrides), CollectorRegistry())
        await sidecar.start()
        listeners = Listeners(sidecar)
        await listeners.start()
        running = Running(sidecar, listeners, aiohttp.ClientSession(auto_decompress=False))
        started.append(running)
        return running

    yield go
    for running in started:
        await running.session.close()
        await running.listeners.stop()
        await running.sidecar.close()


@pytest.fixture
async def proxied(upstream: TestServer, start_sidecar: StartSidecar) -> Running:
    return await start_sidecar(str(upstream.make_url("")))


# --- raw HTTP on both sides, for what aiohttp's client and server will not produce -------------

RAW_RESPONSES: dict[str, list[bytes | float | str | None]] = {
    # path -> byte strings to write (a float: sleep that long); the connection closes after
    "/close-delimited": [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst,", 0.05,
                         b"second", None],
    "/early-hints": [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    "/conn-named": [b"HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
                    b"X-Kept: 2\r\nContent-Length: 2\r\n\r\nok"],
    "/reason": [b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nok"],
    "/early-answer": [b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\n"
                      b"too big!", None],
    "/garbage": [b"this is not HTTP\r\n\r\n", None],
    # answers, then drops the next request on the same connection unanswered (an idle timeout
    # racing with the request); "drop" is handled in RawUpstream._serve
    "/then-drop": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "drop"],
    "/head-chunked": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Head: yes\r\n\r\n"],  # to HEAD
    # framing corner cases, each compared as received directly and through the proxy
    "/framing/304-length": [b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n"],
    "/framing/304": [b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=5\r\n\r\n"],
    "/framing/204": [b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"],
    "/framing/empty": [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
    "/framing/cookies": [b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\n"
                         b"Content-Length: 3\r\n\r\nabc"],
    "/framing/partial": [b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-3/10\r\n"
                         b"Content-Length: 4\r\n\r\n0123"],
    "/framing/redirect": [b"HTTP/1.1 301 Moved Permanently\r\nLocation: /there\r\nContent-Length: 5\r\n\r\nmoved"],
    "/framing/gzip-chunked": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                              b"5\r\n\x1f\x8b\x08\x00\x00\r\n0\r\n\r\n"],
    "/framing/chunked": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"],
    "/framing/chunked-gzip": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"
                              b"3\r\nabc\r\n0\r\n\r\n", None],  # close-delimited
    "/framing/no-reason": [b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok"],
}


class RawUpstream:
    """A bare keep-alive HTTP/1.1 server answering RAW_RESPONSES by path (``None``: close now,
    without reading the request body). Records every request head it reads."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []  # the bodies read (requests it answered after reading)
        self.paths: list[list[str]] = []  # per connection, the paths it served
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served: list[str] = []
        self.paths.append(served)
        drop = False
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                path = head.split(b" ", 2)[1].decode()
                served.append(path)
                if drop:
                    return
                steps = RAW_RESPONSES.get(path, [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"])
                if None not in steps:
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    self.bodies.append(await reader.readexactly(length))
                for step in steps:
                    if step is None:
                        writer.close()
                        return
                    if step == "drop":
                        drop = True
                    elif isinstance(step, float):
                        await asyncio.sleep(step)
                    elif isinstance(step, bytes):
                        writer.write(step)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    server = RawUpstream()
    await server.start()
    yield server
    await server.close()


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


async def read_response(reader: asyncio.StreamReader, head_request: bool = False) -> RawResponse:
    """Read one HTTP/1.x response (Content-Length, chunked or close-delimited)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    _, status, reason = [*lines[0].split(" ", 2), ""][:3]
    headers = [(k, v.strip()) for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)]
    r = RawResponse(int(status), reason, headers, b"")
    if head_request or r.status in (204, 304) or 100 <= r.status < 200:
        return r
    if (r.header("Transfer-Encoding") or "").lower().rstrip().endswith("chunked"):
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        r.body = bytes(body)
    elif r.header("Content-Length") is not None:
        r.body = await reader.readexactly(int(r.header("Content-Length") or 0))
    else:
        r.body = await reader.read()
    return r
