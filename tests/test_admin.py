"""The admin listener: /metrics exposition, /healthz, /readyz, landing page."""

from __future__ import annotations

import asyncio
import gzip
import socket

import aiohttp
from conftest import Running, StartSidecar
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families


async def get(url: str, decompress: bool = True, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(auto_decompress=decompress) as s, s.get(url, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_metrics_text_format_parses(proxied: Running) -> None:
    async with proxied.session.get(proxied.traffic_url + "/v2/health/ready") as resp:
        assert resp.status == 200
    status, headers, body = await get(proxied.admin_url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert "modelmon_requests" in families
    assert "modelmon_build_info" in families or "modelmon_build" in families
    # the standard process and runtime families, under their standard names
    assert {"process_resident_memory_bytes", "process_open_fds", "python_gc_objects_collected",
            "python_info"} <= families.keys()
    assert not [name for name in families if name.startswith("modelmon_process")]
    names = {f.name for f in families.values()}
    assert all(n.startswith(("modelmon_", "process_", "python_")) for n in names), names


async def test_metrics_openmetrics_negotiation(proxied: Running) -> None:
    status, headers, body = await get(proxied.admin_url + "/metrics",
                                      Accept="application/openmetrics-text; version=1.0.0")
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name for f in parse_openmetrics(text)}
    assert {"modelmon_build", "modelmon_analysis_queue_capacity"} <= families


async def test_metrics_gzip(proxied: Running) -> None:
    status, headers, body = await get(proxied.admin_url + "/metrics", False, **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"modelmon_analysis_queue_capacity 1024.0" in gzip.decompress(body)


async def test_landing_page_links(proxied: Running) -> None:
    status, _, body = await get(proxied.admin_url + "/")
    assert status == 200
    for link in (b'href="/metrics"', b'href="/healthz"', b'href="/readyz"'):
        assert link in body


async def test_healthz_does_not_depend_on_the_model(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar("http://127.0.0.1:1")
    status, _, _ = await get(running.admin_url + "/healthz")
    assert status == 200
    status, _, body = await get(running.admin_url + "/readyz")
    assert status == 503 and b"upstream unreachable" in body


async def test_healthz_fails_when_the_analysis_hand_off_stalls(start_sidecar: StartSidecar) -> None:
    """Records waiting with none drained for analysis.stall_seconds: 503 (the loop answers, but
    analysis is stuck); an idle queue, or one that drains, is healthy however long it idles."""
    running = await start_sidecar(None, analysis={"stall_seconds": 0.3})
    await asyncio.sleep(0.4)  # idle longer than the threshold: still healthy
    status, _, _ = await get(running.admin_url + "/healthz")
    assert status == 200
    running.sidecar.queue.stop()  # the hand-off stuck
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records",
                      json=[{"model": "m", "features": {"x": 1.0}}]) as resp:
        assert resp.status == 202
    status, _, _ = await get(running.admin_url + "/healthz")
    assert status == 200  # waiting, but not for long yet
    await asyncio.sleep(0.4)
    status, _, body = await get(running.admin_url + "/healthz")
    assert status == 503 and b"analysis stalled" in body
    running.sidecar.queue.start(running.sidecar.analysers)  # draining again
    await running.drain()
    status, _, _ = await get(running.admin_url + "/healthz")
    assert status == 200


async def test_readyz_follows_the_upstream(proxied: Running) -> None:
    status, _, _ = await get(proxied.admin_url + "/readyz")
    assert status == 200
    await asyncio.sleep(0.3)
    assert proxied.sample("modelmon_upstream_up") == 1
    assert proxied.sample("modelmon_upstream_probes_total", {"result": "success"}) >= 1
    assert proxied.sample("modelmon_upstream_probe_duration_seconds") > 0


async def test_upstream_going_down_is_seen(upstream, start_sidecar: StartSidecar) -> None:  # type: ignore[no-untyped-def]
    running = await start_sidecar(str(upstream.make_url("")))
    await asyncio.sleep(0.3)
    assert running.sample("modelmon_upstream_up") == 1
    await upstream.close()
    await asyncio.sleep(0.5)
    assert running.sample("modelmon_upstream_up") == 0
    status, _, _ = await get(running.admin_url + "/readyz")
    assert status == 503


async def test_receive_only_mode_is_ready_without_upstream(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None)
    assert running.listeners.traffic_port == 0  # no proxy listener
    status, _, _ = await get(running.admin_url + "/readyz")
    assert status == 200
    assert running.sample("modelmon_upstream_up") is None


async def test_a_model_that_starts_after_the_sidecar_is_ready_at_the_next_readyz(
        start_sidecar: StartSidecar) -> None:
    """With a native sidecar the model always starts later: /readyz must not keep its first
    failed probe until the next periodic one (30 s here)."""
    from aiohttp import web

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    running = await start_sidecar(f"http://127.0.0.1:{port}",
                                  upstream={"probe_interval_seconds": 30})
    status, _, _ = await get(running.admin_url + "/readyz")
    assert status == 503
    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ready)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        status, _, _ = await get(running.admin_url + "/readyz")  # within a second: the cached answer
        assert status == 503
        await asyncio.sleep(1.1)
        status, _, body = await get(running.admin_url + "/readyz")
        assert status == 200, body
    finally:
        await runner.cleanup()
