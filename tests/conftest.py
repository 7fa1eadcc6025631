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
from modelmon.app import Listeners, Sidecar
from modelmon.config import Config, load_config
from prometheus_client import CollectorRegistry

ENGINES = ("fast", "aiohttp")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines: run the module's sidecar tests against every proxy engine")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests in modules marked ``pytest.mark.engines`` that start a sidecar run once per
    proxy engine (``proxy.engine``); elsewhere the configured default engine serves."""
    if metafunc.definition.get_closest_marker("engines") and "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", ENGINES, indirect=True)


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


StartSidecar = Callable[..., Awaitable[Running]]


def sidecar_config(upstream_url: str | None, engine: str | None = None, **overrides: Any) -> Config:
    base: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "traffic_port": 0, "admin_port": 0,
                   "shutdown_grace_seconds": 5},
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
