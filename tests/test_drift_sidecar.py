"""Drift end to end in the running sidecar: pushed and proxied records move the metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from modelmon.profile import Profile, categorical_feature, numeric_feature
from prometheus_client.parser import text_string_to_metric_families


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    profile = Profile("churn", "7", 10_000, (
        numeric_feature("age", np.where(np.arange(10_000) < 100, np.nan, rng.normal(40, 10, 10_000))),
        categorical_feature("plan", rng.choice(["basic", "pro"], 10_000, p=[0.7, 0.3]).tolist()),
        numeric_feature("p", rng.random(10_000), role="output"),
    ))
    path = tmp_path / "profile.json"
    profile.save(path)
    return path


def drift_config(profile_path: Path, **extra: object) -> dict:  # type: ignore[type-arg]
    return {"models": [{"name": "churn", "profile": str(profile_path), **extra}],
            "drift": {"interval_seconds": 0.1, "min_samples": 50}}


async def scrape(running: Running) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(running.admin_url + "/metrics") as resp:
        text = await resp.text()
    return {(x.name, tuple(sorted(x.labels.items()))): x.value
            for f in text_string_to_metric_families(text) for x in f.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:  # type: ignore[type-arg]
    return samples.get((name, tuple(sorted(labels.items()))))


async def push(running: Running, records: list[dict]) -> None:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records",
                                                    json={"model": "churn", "records": records}) as r:
        assert r.status == 202, await r.text()


async def test_pushed_records_drive_drift_and_quality_metrics(
    start_sidecar: StartSidecar, profile_path: Path
) -> None:
    running = await start_sidecar(None, **drift_config(profile_path))
    rng = np.random.default_rng(1)
    records = [{"features": {"age": float(a), "plan": "pro"}, "prediction": float(p)}
               for a, p in zip(rng.normal(55, 10, 300), rng.random(300), strict=True)]
    records += [{"features": {"age": None, "plan": "gold"}},
                {"features": {"plan": "basic"}, "prediction": 2.0}]
    await push(running, records)
    await running.drain()
    await running.sidecar.compute_drift()
    m = await scrape(running)
    assert value(m, "modelmon_drift_detected", model="churn", feature="age") == 1
    assert value(m, "modelmon_drift_detected", model="churn", feature="plan") == 1
    assert value(m, "modelmon_drift_detected", model="churn", feature="p") == 0
    assert value(m, "modelmon_model_drift_detected", model="churn") == 1
    assert value(m, "modelmon_drift_window_samples", model="churn", feature="age") == 300
    assert value(m, "modelmon_drift_p_value", model="churn", feature="age", test="ks") < 1e-10
    assert value(m, "modelmon_drift_score", model="churn", feature="age", method="psi") > 0.5
    assert value(m, "modelmon_data_quality_events_total", model="churn", feature="age", kind="null") == 1
    assert value(m, "modelmon_data_quality_events_total", model="churn", feature="age", kind="absent") == 1
    assert value(m, "modelmon_data_quality_events_total", model="churn", feature="plan",
                 kind="unseen_category") == 1
    assert value(m, "modelmon_data_quality_events_total", model="churn", feature="p", kind="above_max") == 1
    assert value(m, "modelmon_feature_missing_ratio", model="churn", feature="age") == pytest.approx(2 / 302)
    assert value(m, "modelmon_reference_missing_ratio", model="churn", feature="age") == pytest.approx(0.01)
    assert value(m, "modelmon_reference_missing_ratio", model="churn", feature="plan") == 0.0
    # Raw histograms in the reference bins, and the reference ratios beside them.
    assert value(m, "modelmon_feature_value_count", model="churn", feature="age") == 300
    assert value(m, "modelmon_feature_value_bucket", model="churn", feature="age", le="+Inf") == 300
    assert value(m, "modelmon_reference_bucket_ratio", model="churn", feature="age", le="+Inf") == 1.0
    assert value(m, "modelmon_feature_category_total", model="churn", feature="plan", category="pro") == 300
    assert value(m, "modelmon_feature_category_total", model="churn", feature="plan",
                 category="__other__") == 1
    assert value(m, "modelmon_reference_category_ratio", model="churn", feature="plan",
                 category="basic") == pytest.approx(0.7, abs=0.02)
    info = [k for k in m if k[0] == "modelmon_reference_profile_info"]
    assert len(info) == 1 and dict(info[0][1])["profile_hash"].startswith("sha256:")
    assert value(m, "modelmon_drift_last_success_timestamp_seconds", model="churn") > 0


async def test_reference_ratio_buckets_match_profile_edges(start_sidecar: StartSidecar,
                                                           profile_path: Path) -> None:
    running = await start_sidecar(None, **drift_config(profile_path))
    await push(running, [{"features": {"age": 40.0, "plan": "basic"}}])
    await running.drain()
    m = await scrape(running)
    les = sorted(float(dict(k[1])["le"]) for k in m if k[0] == "modelmon_reference_bucket_ratio"
                 and dict(k[1])["feature"] == "age")
    edges = running.sidecar.analysis.drift_models["churn"].features[0].edges  # type: ignore[union-attr]
    assert les[:-1] == pytest.approx(list(edges)) and les[-1] == float("inf")
    ratios = [v for _, v in sorted((float(dict(k[1])["le"]), v) for k, v in m.items()
                                   if k[0] == "modelmon_reference_bucket_ratio"
                                   and dict(k[1])["feature"] == "age")]
    assert ratios == sorted(ratios) and 0 < ratios[0] < 0.02 and ratios[-1] == 1.0  # first edge: 1st pct


async def test_raw_histograms_can_be_switched_off(start_sidecar: StartSidecar, profile_path: Path) -> None:
    running = await start_sidecar(None, **drift_config(profile_path, export_histograms=False))
    await push(running, [{"features": {"age": 40.0, "plan": "basic"}}])
    await running.drain()
    m = await scrape(running)
    assert not any(k[0].startswith(("modelmon_feature_value", "modelmon_reference_bucket")) for k in m)
    assert value(m, "modelmon_data_quality_events_total", model="churn", feature="age", kind="null") is None


async def test_proxied_v1_and_v2_traffic_is_analysed(
    upstream: TestServer, start_sidecar: StartSidecar, profile_path: Path
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), **drift_config(profile_path))
    v1 = {"instances": [{"age": 30, "plan": "basic"}, {"age": 50, "plan": "pro"}, {"plan": "basic"}]}
    async with running.session.post(running.traffic_url + "/v1/models/churn:predict", json=v1) as r:
        assert r.status == 200
    v1_rows = {"instances": [[30, "basic"], [41, "pro"], [1, 2, 3]]}  # positional, one bad row
    async with running.session.post(running.traffic_url + "/v1/models/churn:predict", json=v1_rows) as r:
        assert r.status == 200
    v2 = {"inputs": [{"name": "age", "shape": [2], "datatype": "FP64", "data": [20, 25]},
                     {"name": "plan", "shape": [2], "datatype": "BYTES", "data": ["pro", "pro"]}]}
    async with running.session.post(running.traffic_url + "/v2/models/churn/infer", json=v2) as r:
        assert r.status == 200
    await running.drain()
    monitor = running.sidecar.analysis.drift_models["churn"]
    age, plan, p = (monitor.cumulative_bins(i).sum() for i in range(3))
    assert (age, plan) == (2 + 2 + 2, 3 + 2 + 2)
    assert p == 3 + 3 + 2  # the upstream's predictions (1) and V2 output "p" (0.5) are outputs
    m = await scrape(running)
    assert value(m, "modelmon_payload_errors_total", model="churn", reason="row_length_mismatch") == 1
    assert value(m, "modelmon_data_quality_events_total", model="churn", feature="age", kind="absent") == 2
