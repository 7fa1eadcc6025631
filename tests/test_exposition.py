"""/metrics off the proxy's critical path: a scrape (and a drift scoring pass) runs on the event
loop in short steps with the loop given back between them, concurrent scrapes share one
rendering, and what is served is exactly what prometheus_client renders."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from conftest import Running, StartSidecar
from modelmon.analysis.queue import Decoded
from modelmon.config import load_config
from modelmon.drift.engine import FEATURES_PER_STEP, ModelDrift
from modelmon.drift.service import DriftCollector
from modelmon.metrics import exposition
from modelmon.metrics.exposition import CHUNK_SAMPLES, FrozenFamily, MetricsEndpoint, format_steps
from modelmon.reference.profile import Feature, Profile, categorical_feature, load_profile, numeric_feature
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

T = TypeVar("T")
FEATURES = 100
NUMERIC = 90  # and 10 categorical
ACCEPTS = (
    "",  # text 0.0.4
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=underscores",
    "application/openmetrics-text;version=1.0.0",
    "application/openmetrics-text",
    # what Prometheus 2.x sends
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;"
    "q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
)


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    features: tuple[Feature, ...] = tuple(numeric_feature(f"f{i}", rng.normal(0, 3, 5_000))
                                          for i in range(NUMERIC))
    features += tuple(categorical_feature(f"c{i}", rng.integers(0, 12, 5_000).tolist())
                      for i in range(FEATURES - NUMERIC))
    features += (numeric_feature("p", rng.random(5_000), role="output"),)
    path = tmp_path_factory.mktemp("profile") / "wide.json"
    Profile("wide", "1", 5_000, features).save(path)
    return path


def records(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [{"features": {**{f"f{i}": float(v) for i, v in enumerate(rng.normal(1, 3, NUMERIC))},
                          **{f"c{i}": int(c) for i, c in enumerate(rng.integers(0, 14, FEATURES - NUMERIC))}},
             "prediction": float(rng.random())} for _ in range(n)]


async def wide_sidecar(start_sidecar: StartSidecar, profile_path: Path, **server: Any) -> Running:
    """A receive-only sidecar with a 100-feature model, 300 rows pushed, scored, and 40 more
    queued for binning (which the next scrape bins first)."""
    # resources read once (at start): their gauges stay put between two renderings
    running = await start_sidecar(None, models=[{"name": "wide", "profile": str(profile_path)}],
                                  drift={"min_samples": 50}, resources={"interval_seconds": 3600},
                                  **({"server": server} if server else {}))
    async with running.session.post(running.admin_url + "/v1/records",
                                    json={"model": "wide", "records": records(300)}) as r:
        assert r.status == 202
    await running.drain()
    await running.sidecar.compute_drift()
    monitor = running.sidecar.analysis.drift_models["wide"]
    for record in records(40, seed=2):  # one row at a time: stays queued
        running.sidecar.analysis.analyse(Decoded("wide", "push", records=[record]))
    assert monitor._pending_rows == 40
    return running


async def loop_turns_during(work: Awaitable[T]) -> tuple[T, int]:
    """Await ``work`` while counting the event loop's iterations (a task that yields once per
    iteration): how often the loop got to run other callbacks meanwhile."""
    turns = 0
    done = False

    async def tick() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    start = turns
    result = await work
    done = True
    await ticker
    return result, turns - start


def without_process_lines(text: str) -> list[str]:
    """The exposition minus the process_* families (CPU time, memory: they move between two
    renderings)."""
    return [line for line in text.splitlines() if not line.startswith(VOLATILE)
            and not line.startswith(tuple("# HELP " + v for v in VOLATILE))
            and not line.startswith(tuple("# TYPE " + v for v in VOLATILE))]


# families that move between two renderings by themselves (CPU time, memory, GC counts)
VOLATILE = ("process_", "python_gc_")


def plain(registry: CollectorRegistry, accept: str) -> str:
    encoder, _ = choose_encoder(accept)
    return encoder(registry).decode()


async def get(running: Running, accept: str, query: str = "",
              encoding: str = "identity") -> aiohttp.ClientResponse:
    headers = {"Accept-Encoding": encoding}
    if accept:
        headers["Accept"] = accept
    resp = await running.session.get(running.admin_url + "/metrics" + query, headers=headers)
    await resp.read()
    return resp


# --- a scrape gives the loop back ---------------------------------------------------------------


def metrics_handler(app: web.Application) -> Any:
    """The admin app's GET /metrics handler, to call without the HTTP exchange around it."""
    for resource in app.router.resources():
        if resource.canonical == "/metrics":
            return next(route.handler for route in resource if route.method == "GET")
    raise AssertionError("no /metrics route")


async def test_a_100_feature_scrape_gives_the_loop_back_and_renders_what_prometheus_client_does(
    start_sidecar: StartSidecar, profile_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await wide_sidecar(start_sidecar, profile_path)
    monkeypatch.setattr(exposition, "SLICE_SECONDS", 0.0)  # give the loop back after every step
    app = running.sidecar.admin().app()
    handler = metrics_handler(app)
    for accept in ACCEPTS:
        request = make_mocked_request("GET", "/metrics", headers={"Accept": accept} if accept else {},
                                      app=app)
        response, turns = await loop_turns_during(handler(request))
        body = response.body.decode()
        series = sum(1 for line in body.splitlines() if not line.startswith("#"))
        assert series > 5_000
        # prometheus_client's handler rendered the ~5,600 series in one callback (30-50 ms): the
        # loop did not turn once. Now it turns after every step (CHUNK_SAMPLES series formatted,
        # FEATURES_PER_STEP features binned or built): some 200 times.
        assert turns >= 100, (accept, turns)
        # Identical to prometheus_client's own rendering of the same registry, line for line.
        assert response.headers["Content-Type"] == choose_encoder(accept)[1]
        assert without_process_lines(body) == without_process_lines(plain(running.sidecar.registry, accept))
    assert running.sidecar.analysis.drift_models["wide"]._pending_rows == 0  # the scrape binned them


async def test_rendered_families_parse_and_equal_the_plain_ones(
    start_sidecar: StartSidecar, profile_path: Path
) -> None:
    running = await wide_sidecar(start_sidecar, profile_path)
    served = {f.name: f for f in parse_text((await (await get(running, "")).read()).decode())}
    expected = {f.name: f for f in parse_text(plain(running.sidecar.registry, ""))}
    assert served.keys() == expected.keys()
    for name, family in expected.items():
        if not name.startswith(VOLATILE):
            assert served[name] == family, name
    assert len(served["modelmon_feature_value"].samples) > NUMERIC * 20  # bins, count, sum
    # OpenMetrics: client_python's strict parser wants _count only beside _sum, which a histogram
    # with negative bins must not carry; modelmon keeps _count (Prometheus reads it). So the
    # families without negative bins are parsed, the others compared line for line.
    om = "application/openmetrics-text"
    served_text = (await (await get(running, om)).read()).decode()
    assert without_process_lines(served_text) == without_process_lines(plain(running.sidecar.registry, om))
    negative = {s.labels["feature"] for s in served["modelmon_feature_value"].samples
                if s.name.endswith("_bucket") and float(s.labels["le"]) < 0}
    assert negative, "the wide profile has features with negative bins"
    kept = "\n".join(line for line in served_text.splitlines()
                     if not any(f'feature="{f}"' in line for f in negative)
                     or (not line.startswith("modelmon_feature_value")
                     and not line.startswith("modelmon_reference_value")))
    families = {f.name: f for f in parse_om(kept + "\n")}
    assert "modelmon_feature_value" in families


class ManySamples:
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("many", "A family with many samples.", labels=["i"])
        for i in range(1000):
            family.add_metric([str(i)], i / 7)
        yield family


def test_each_step_formats_at_most_a_chunk_of_samples(profile_path: Path) -> None:
    """The unit of work between two chances for the loop: one family of up to CHUNK_SAMPLES
    samples, or CHUNK_SAMPLES samples of a bigger one (counted through the encoder)."""
    registry = CollectorRegistry()
    monitor = ModelDrift("wide", load_profile(profile_path),
                         load_config(overrides={"upstream": {"url": None}}).drift, 1000)
    monitor.flush()
    registry.register(DriftCollector({"wide": monitor}, {"wide": True}))
    registry.register(ManySamples())
    for accept in ACCEPTS:
        real, content_type = choose_encoder(accept)
        encoded: list[int] = []

        def encoder(families: Any, encoded: list[int] = encoded, real: Any = real) -> bytes:
            encoded.append(sum(len(f.samples) for f in families.collect()))
            return bytes(real(families))

        out: list[bytes] = []
        steps = format_steps(registry, encoder, content_type, None, out)
        for _ in steps:
            assert sum(encoded) <= CHUNK_SAMPLES
            encoded.clear()
        assert b"".join(out) == real(registry)


# --- concurrent scrapes share a rendering ------------------------------------------------------


async def test_concurrent_scrapes_share_one_rendering(start_sidecar: StartSidecar,
                                                      profile_path: Path) -> None:
    running = await wide_sidecar(start_sidecar, profile_path)
    metrics = running.sidecar.metrics
    before = metrics.renders
    responses = await asyncio.gather(*(get(running, ACCEPTS[-1], encoding="gzip") for _ in range(20)))
    assert metrics.renders == before + 1
    bodies = {await r.read() for r in responses}
    assert len(bodies) == 1 and all(r.headers["Content-Encoding"] == "gzip" for r in responses)
    await get(running, ACCEPTS[-1])  # metrics_share_seconds 0 (tests): a later scrape renders
    assert metrics.renders == before + 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_scrapes_within_the_share_interval_get_the_same_rendering() -> None:
    registry = CollectorRegistry()
    counter = Counter("hits", "Hits.", registry=registry)
    clock = FakeClock()
    endpoint = MetricsEndpoint(registry, share_seconds=1.0, clock=clock)
    app = web.Application()
    app.router.add_get("/metrics", endpoint.handle)
    async with TestClient(TestServer(app)) as client:

        async def scrape(accept: str = "") -> str:
            async with client.get("/metrics", headers={"Accept": accept} if accept else {}) as r:
                return await r.text()

        counter.inc()
        assert "hits_total 1.0" in await scrape()
        counter.inc()
        clock.now += 0.9
        assert "hits_total 1.0" in await scrape()  # the rendering of 0.9 s ago
        assert "hits_total 2.0" in await scrape("application/openmetrics-text")  # its own
        clock.now += 0.2
        assert "hits_total 2.0" in await scrape()
        assert endpoint.renders == 3
        # a filter renders on its own too
        assert "hits_total 2.0" in await scrape() and endpoint.renders == 3
        async with client.get("/metrics?name[]=hits_total") as r:
            assert (await r.text()).count("hits_total") == 3  # HELP, TYPE, the sample
        assert endpoint.renders == 4


# --- content negotiation and compression as prometheus_client's handler ---------------------------


async def test_compression_and_name_filter_as_prometheus_clients_handler(
    start_sidecar: StartSidecar, profile_path: Path
) -> None:
    running = await wide_sidecar(start_sidecar, profile_path)
    registry = running.sidecar.registry
    resp = await get(running, "", encoding="gzip")
    assert resp.headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(await resp.read()).decode()
    assert without_process_lines(text) == without_process_lines(plain(registry, ""))
    resp = await get(running, "", encoding="deflate, gzip")  # aiohttp's choice: deflate first
    assert resp.headers["Content-Encoding"] == "deflate"
    assert without_process_lines(zlib.decompress(await resp.read()).decode()) == without_process_lines(
        plain(registry, ""))
    resp = await get(running, "")
    assert "Content-Encoding" not in resp.headers
    names = ["modelmon_drift_score", "modelmon_feature_value_bucket", "modelmon_reference_value_bucket"]
    query = "?" + "&".join(f"name[]={n}" for n in names)
    served = {f.name: f for f in parse_text((await (await get(running, "", query)).read()).decode())}
    # What RestrictedRegistry serves (with auto_describe on, as in production; the tests'
    # registries have it off and so would serve nothing).
    expected = {}
    for family in parse_text(generate_latest(registry).decode()):
        samples = [s for s in family.samples if s.name in names]
        if samples:
            expected[family.name] = Metric(family.name, family.documentation, family.type)
            expected[family.name].samples = samples
    assert served == expected and len(served) == 3


async def test_reference_families_are_formatted_once_per_format(
    start_sidecar: StartSidecar, profile_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await wide_sidecar(start_sidecar, profile_path)
    for accept in ("", "application/openmetrics-text"):
        await get(running, accept)
    collector = next(c for c in running.sidecar.registry._collector_to_names
                     if isinstance(c, DriftCollector))
    frozen = [f for f in collector.collect() if isinstance(f, FrozenFamily)]
    assert {f.name for f in frozen} == {"modelmon_reference_profile", "modelmon_feature",
                                        "modelmon_reference_value",
                                        "modelmon_reference_mean", "modelmon_reference_category_ratio",
                                        "modelmon_reference_missing_ratio"}
    for family in frozen:
        assert set(family.rendered) == {choose_encoder("")[1], choose_encoder("application/openmetrics-text")[1]}
    # Formatted from the cache from now on: not through the encoder again.
    calls: list[str] = []
    real = exposition._format_family

    def spy(family: Any, *args: Any) -> Any:
        calls.append(family.name)
        return real(family, *args)

    monkeypatch.setattr(exposition, "_format_family", spy)
    await get(running, "")
    assert calls and not {f.name for f in frozen} & set(calls)


# --- drift scoring gives the loop back ---------------------------------------------------------


async def test_a_100_feature_scoring_pass_gives_the_loop_back(
    start_sidecar: StartSidecar, profile_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await wide_sidecar(start_sidecar, profile_path)
    monitor = running.sidecar.analysis.drift_models["wide"]
    monkeypatch.setattr(exposition, "SLICE_SECONDS", 0.0)
    stats = running.sidecar.scoring_slices
    slices_before = stats.slices
    _, turns = await loop_turns_during(running.sidecar.compute_drift())
    # Binning the 40 queued rows and scoring: FEATURES_PER_STEP features a step, the loop given
    # back after each (it was one callback of ~2.5 ms, plus ~3 ms to bin 255 queued rows).
    steps = 2 * ((FEATURES + 1) // FEATURES_PER_STEP)  # binning and scoring (the output too)
    assert turns >= steps and stats.slices - slices_before >= steps
    assert monitor._pending_rows == 0
    sliced = monitor.snapshot
    assert sliced is not None and sliced.duration > 0
    assert monitor.compute().features == sliced.features  # the same figures in one go
    assert sum(f.detected is not None for f in sliced.features) == FEATURES + 1
