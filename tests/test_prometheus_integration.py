"""A real Prometheus server scrapes a real sidecar; the series arrive through its HTTP API."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from helpers import free_port, stop, wait_http

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """Yields (config path, base URL); the test writes the config, then starts the server."""
    assert PROMETHEUS, "prometheus is not installed: run ./scripts/install-system-deps"
    yield tmp_path / "prometheus.yml", f"http://127.0.0.1:{free_port()}"


def start_prometheus(config: Path, url: str, targets: list[str]) -> subprocess.Popen[bytes]:
    assert PROMETHEUS is not None
    config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: modelmon
    static_configs:
      - targets: {targets!r}
""")
    port = url.rsplit(":", 1)[1]
    return subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=(config.parent / "prometheus.log").open("wb"), stderr=subprocess.STDOUT,
    )


async def query(session: aiohttp.ClientSession, url: str, promql: str) -> list[dict]:  # type: ignore[type-arg]
    async with session.get(url + "/api/v1/query", params={"query": promql}) as resp:
        body = await resp.json()
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


async def wait_for(session: aiohttp.ClientSession, url: str, promql: str,
                   timeout: float = 30) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        result = await query(session, url, promql)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no result for {promql} within {timeout}s")
        await asyncio.sleep(0.5)


async def test_prometheus_scrapes_the_sidecar(
    upstream: TestServer, start_sidecar: StartSidecar, prometheus: tuple[Path, str]
) -> None:
    running: Running = await start_sidecar(str(upstream.make_url("")),
                                           models=[{"name": "iris", "version": "3"}])
    config, url = prometheus
    proc = start_prometheus(config, url, [f"127.0.0.1:{running.listeners.admin_port}"])
    try:
        await asyncio.to_thread(wait_http, url + "/-/ready", 30, proc)
        body = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [1, 2]}]}
        for _ in range(5):
            async with running.session.post(running.traffic_url + "/v2/models/iris/infer", json=body) as r:
                assert r.status == 200
        async with aiohttp.ClientSession() as s:
            up = await wait_for(s, url, 'up{job="modelmon"} == 1')
            assert up[0]["metric"]["instance"] == f"127.0.0.1:{running.listeners.admin_port}"
            requests = await wait_for(s, url, 'modelmon_requests_total'
                                      '{model="iris",route="/v2/models/{model}/infer",code="200"} >= 5')
            assert float(requests[0]["value"][1]) == 5
            p99 = await wait_for(s, url, "histogram_quantile(0.99, sum by (le) "
                                 '(modelmon_request_duration_seconds_bucket{model="iris"}))')
            assert 0 < float(p99[0]["value"][1]) <= 60
            info = await wait_for(s, url, 'modelmon_model_info{model="iris"}')
            assert info[0]["metric"]["version"] == "3"
            for metric in ("modelmon_upstream_up", "modelmon_analysis_queue_capacity",
                           "modelmon_build_info", "modelmon_process_resident_memory_bytes"):
                assert await wait_for(s, url, metric), metric
            # The exposition is clean: the target is healthy with no scrape error.
            async with s.get(url + "/api/v1/targets") as resp:
                targets = (await resp.json())["data"]["activeTargets"]
            assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
            scraped = await query(s, url, 'scrape_samples_scraped{job="modelmon"}')
            assert float(scraped[0]["value"][1]) > 20
    finally:
        stop(proc)
