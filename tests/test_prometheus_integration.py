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


async def query(session: aiohttp.ClientSession, url: str, promql: str,  # type: ignore[type-arg]
                at: float | None = None) -> list[dict]:
    params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
    async with session.get(url + "/api/v1/query", params=params) as resp:
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
                           "modelmon_build_info", "process_resident_memory_bytes"):
                assert await wait_for(s, url, metric), metric
            # The exposition is clean: the target is healthy with no scrape error.
            async with s.get(url + "/api/v1/targets") as resp:
                targets = (await resp.json())["data"]["activeTargets"]
            assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
            scraped = await query(s, url, 'scrape_samples_scraped{job="modelmon"}')
            assert float(scraped[0]["value"][1]) > 20
    finally:
        stop(proc)


FLEET_KS = """
max by (model, feature) (abs(
    sum by (model, feature, le) (increase(modelmon_feature_value_bucket[5m]))
  / on (model, feature) group_left
    sum by (model, feature) (increase(modelmon_feature_value_count[5m]))
  - on (model, feature, le) group_left
    max by (model, feature, le) (modelmon_reference_value_bucket)
  / on (model, feature) group_left
    max by (model, feature) (modelmon_reference_value_count)
))"""

FLEET_TVD = """
0.5 * sum by (model, feature) (abs(
    sum by (model, feature, category) (increase(modelmon_feature_category_total[5m]))
  / on (model, feature) group_left
    sum by (model, feature) (increase(modelmon_feature_category_total[5m]))
  - on (model, feature, category) group_left
    max by (model, feature, category) (modelmon_reference_category_ratio)
))"""


async def test_fleet_drift_in_promql_matches_the_engine(
    start_sidecar: StartSidecar, prometheus: tuple[Path, str], tmp_path: Path
) -> None:
    """The PromQL in docs/drift.md, summed over two replicas, gives the engine's KS statistic
    and the categorical total-variation distance (up to increase()'s extrapolation, which
    scales each replica's counts by a slightly different factor)."""
    import numpy as np
    from modelmon.reference.profile import Profile, categorical_feature, numeric_feature

    rng = np.random.default_rng(0)
    profile = Profile("churn", "1", 10_000, (
        numeric_feature("age", rng.normal(40, 10, 10_000)),
        categorical_feature("plan", rng.choice(["basic", "pro"], 10_000, p=[0.7, 0.3]).tolist()),
        # edges at or below -1e6, where Python's and Go's float formatting differ
        numeric_feature("balance", rng.normal(-5e6, 1e6, 10_000)),
    ))
    profile.save(tmp_path / "p.json")
    overrides = {"models": [{"name": "churn", "profile": str(tmp_path / "p.json")}],
                 "drift": {"interval_seconds": 0.2}}
    # the fleet query reads the reference from whichever replicas export it
    replicas = [await start_sidecar(None, **overrides),
                await start_sidecar(None, **{**overrides, "models": [
                    {"name": "churn", "profile": str(tmp_path / "p.json"), "export_reference": False}]})]
    config, url = prometheus
    proc = start_prometheus(config, url, [f"127.0.0.1:{r.listeners.admin_port}" for r in replicas])
    try:
        await asyncio.to_thread(wait_http, url + "/-/ready", 30, proc)
        async with aiohttp.ClientSession() as s:
            await wait_for(s, url, 'count(modelmon_feature_value_count{feature="age"} == 0) == 2')
            ages, plans = rng.normal(45, 10, 800), rng.choice(["basic", "pro"], 800, p=[0.5, 0.5])
            balances = rng.normal(-4.5e6, 1e6, 800)
            for i, replica in enumerate(replicas):  # the replicas see different halves of the traffic
                part = slice(i * 400, (i + 1) * 400)
                records = [{"features": {"age": float(a), "plan": str(p), "balance": float(b)}}
                           for a, p, b in zip(ages[part], plans[part], balances[part], strict=True)]
                async with s.post(replica.admin_url + "/v1/records", json={"records": records}) as r:
                    assert r.status == 202
                await replica.drain()
            await wait_for(s, url, 'sum(modelmon_feature_value_count{feature="age"}) == 800')
            await asyncio.sleep(2.5)  # a couple more scrapes at the final values
            at = time.time()  # every query at one instant: the same samples, the same extrapolation
            fleet_ks = {r["metric"]["feature"]: float(r["value"][1]) for r in await query(s, url, FLEET_KS, at)}
            # increase() extrapolates each replica's counts by its own factor (its scrapes fall
            # at other times): the fleet statistic is that of the counts so weighted
            weights = {r["metric"]["instance"]: float(r["value"][1]) / 400 for r in await query(
                s, url, 'increase(modelmon_feature_value_count{feature="age"}[5m])', at)}
            # the live and reference le values are the same strings: every bucket joins
            joined = await wait_for(s, url, 'count by (feature) (modelmon_feature_value_bucket{feature="balance"}'
                                            ' * on (model, feature, le) group_left '
                                            'max by (model, feature, le) (modelmon_reference_value_bucket))')
            buckets = await wait_for(s, url, 'count(max by (le) '
                                             '(modelmon_feature_value_bucket{feature="balance"}))')
            tvd = float((await query(s, url, FLEET_TVD, at))[0]["value"][1])
    finally:
        stop(proc)
    # Independently: the binned KS of the (so weighted) combined counts against the profile's.
    w = [weights[f"127.0.0.1:{r.listeners.admin_port}"] for r in replicas]
    assert all(1.0 <= x < 2.0 for x in w), w  # an extrapolation, not lost or double counts
    halves = [slice(0, 400), slice(400, 800)]
    assert set(fleet_ks) == {"age", "balance"}
    for pos, (feature, values) in enumerate((("age", ages), ("balance", balances))):
        ref = profile.features[0 if pos == 0 else 2]
        edges = np.asarray(ref.edges)  # type: ignore[union-attr]
        live = sum(wi * np.searchsorted(np.sort(values[h]), edges, side="right") for wi, h in zip(w, halves, strict=True))
        live_cdf = live / sum(wi * 400 for wi in w)
        ref_cdf = np.cumsum(ref.counts)[:-1] / sum(ref.counts)
        expected_ks = float(np.max(np.abs(live_cdf - ref_cdf)))
        assert fleet_ks[feature] == pytest.approx(expected_ks, abs=1e-9), feature
        assert expected_ks > 0.1  # a real shift, so the agreement means something
    # and the engine agrees with the unweighted combination, up to the weights' effect
    from modelmon.drift.columns import Batch
    from modelmon.drift.engine import DriftSettings, ModelDrift

    combined = ModelDrift("churn", profile, DriftSettings(), 10)
    combined.observe(Batch(800, columns={"age": ages, "plan": plans.tolist(), "balance": balances}))
    scores = {f.name: f.scores for f in combined.compute().features}
    for feature in ("age", "balance"):
        assert fleet_ks[feature] == pytest.approx(scores[feature]["ks"], abs=abs(w[0] - w[1]) + 1e-9)
    edges = profile.features[2].edges  # type: ignore[union-attr]
    assert min(edges) <= -1e6 and float(buckets[0]["value"][1]) == len(edges) + 1
    assert float(joined[0]["value"][1]) == 2 * (len(edges) + 1)  # both replicas, every bucket
    ref_pro = profile.features[1].counts[1] / 10_000
    pro = [float((plans[h] == "pro").sum()) for h in halves]
    live_pro = (w[0] * pro[0] + w[1] * pro[1]) / (w[0] * 400 + w[1] * 400)
    expected_tvd = abs(live_pro - ref_pro)
    assert tvd == pytest.approx(expected_tvd, abs=1e-9)
    assert expected_tvd > 0.1
