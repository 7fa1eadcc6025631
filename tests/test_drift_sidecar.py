"""Drift end to end in the running sidecar: pushed and proxied records move the metrics."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from modelmon.reference.profile import NumericFeature, Profile, categorical_feature, numeric_feature
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
    assert value(m, "modelmon_drift_p_value", model="churn", feature="age", method="ks") < 1e-10
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
    # the reference: 9,900 valid ages of 10,000, a histogram of counts like the live one
    assert value(m, "modelmon_reference_value_bucket", model="churn", feature="age", le="+Inf") == 9900
    assert value(m, "modelmon_reference_value_count", model="churn", feature="age") == 9900
    assert value(m, "modelmon_reference_mean", model="churn", feature="age") == pytest.approx(40, abs=0.5)
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
    les = sorted(float(dict(k[1])["le"]) for k in m if k[0] == "modelmon_reference_value_bucket"
                 and dict(k[1])["feature"] == "age")
    edges = running.sidecar.analysis.drift_models["churn"].features[0].edges  # type: ignore[union-attr]
    assert les[:-1] == pytest.approx(list(edges)) and les[-1] == float("inf")
    live_les = sorted(float(dict(k[1])["le"]) for k in m if k[0] == "modelmon_feature_value_bucket"
                      and dict(k[1])["feature"] == "age")
    assert live_les == les
    total = value(m, "modelmon_reference_value_count", model="churn", feature="age")
    assert total is not None
    ratios = [v / total for _, v in sorted((float(dict(k[1])["le"]), v) for k, v in m.items()
                                           if k[0] == "modelmon_reference_value_bucket"
                                           and dict(k[1])["feature"] == "age")]
    assert ratios == sorted(ratios) and 0 < ratios[0] < 0.02 and ratios[-1] == 1.0  # first edge: 1st pct


@pytest.mark.parametrize(("live", "reference"), [(False, True), (True, False), (False, False)])
async def test_live_and_reference_bins_can_be_switched_off(start_sidecar: StartSidecar, profile_path: Path,
                                                           live: bool, reference: bool) -> None:
    running = await start_sidecar(None, **drift_config(profile_path, export_histograms=live,
                                                       export_reference=reference))
    await push(running, [{"features": {"age": 40.0, "plan": "basic"}}])
    await running.drain()
    m = await scrape(running)
    live_names = ("modelmon_feature_value", "modelmon_feature_category")
    reference_names = ("modelmon_reference_value", "modelmon_reference_mean", "modelmon_reference_category")
    assert any(k[0].startswith(live_names) for k in m) == live
    assert any(k[0].startswith(reference_names) for k in m) == reference
    assert value(m, "modelmon_data_quality_events_total", model="churn", feature="age", kind="null") is None
    assert value(m, "modelmon_reference_missing_ratio", model="churn", feature="age") == pytest.approx(0.01)
    # the roles stay whatever is switched off: the alerts tell input from output drift by them
    assert value(m, "modelmon_feature_info", model="churn", feature="p", role="output") == 1


async def test_each_monitored_feature_is_exported_with_its_role(start_sidecar: StartSidecar,
                                                                tmp_path: Path) -> None:
    """modelmon_feature_info{model,feature,role}: one series per monitored feature, its role as
    the profile says (whatever its name: the demo model's outputs are `probability` and `class`);
    a target is not monitored and not exported."""
    rng = np.random.default_rng(4)
    profile = Profile("demo", "1", 1000, (
        numeric_feature("amount", rng.normal(0, 1, 1000)),
        categorical_feature("region", ["eu", "us"] * 500),
        numeric_feature("probability", rng.random(1000), role="output"),
        categorical_feature("class", ["0", "1"] * 500, role="output"),
        categorical_feature("label", ["0", "1"] * 500, role="target"),
    ))
    profile.save(tmp_path / "demo.json")
    running = await start_sidecar(None, models=[{"name": "demo", "profile": str(tmp_path / "demo.json")}])
    m = await scrape(running)
    info = {dict(labels)["feature"]: (dict(labels)["role"], v) for (name, labels), v in m.items()
            if name == "modelmon_feature_info"}
    assert info == {"amount": ("input", 1), "region": ("input", 1), "probability": ("output", 1),
                    "class": ("output", 1)}
    async with aiohttp.ClientSession() as s, s.get(
            running.admin_url + "/metrics", headers={"Accept": "application/openmetrics-text"}) as resp:
        text = await resp.text()
    assert "# TYPE modelmon_feature info\n" in text
    assert 'modelmon_feature_info{feature="probability",model="demo",role="output"} 1.0\n' in text


async def test_a_feature_with_negative_edges_keeps_its_count_and_gets_a_window_mean(
        start_sidecar: StartSidecar, tmp_path: Path) -> None:
    """An N(0,1) feature: bins with negative edges. Its histogram keeps _count (before: _count and
    _sum both dropped); _sum is left out as OpenMetrics requires, and the window mean is a gauge."""
    rng = np.random.default_rng(1)
    profile = Profile("z", "1", 5000, (numeric_feature("x", rng.normal(0, 1, 5000)),
                                       numeric_feature("pos", rng.random(5000))))
    path = tmp_path / "z.json"
    profile.save(path)
    running = await start_sidecar(None, models=[{"name": "z", "profile": str(path)}],
                                  drift={"interval_seconds": 0.1, "min_samples": 50})
    x = rng.normal(0.5, 1, 200)
    pos = rng.random(200)
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records", json={
            "model": "z", "records": [{"features": {"x": a, "pos": b}} for a, b in zip(x.tolist(), pos.tolist(), strict=True)]}) as r:
        assert r.status == 202
    await running.drain()
    await running.sidecar.compute_drift()
    m = await scrape(running)
    assert value(m, "modelmon_feature_value_count", model="z", feature="x") == 200
    assert value(m, "modelmon_feature_value_bucket", model="z", feature="x", le="+Inf") == 200
    assert value(m, "modelmon_feature_value_sum", model="z", feature="x") is None
    assert value(m, "modelmon_reference_value_count", model="z", feature="x") == 5000
    assert value(m, "modelmon_reference_value_sum", model="z", feature="x") is None
    assert value(m, "modelmon_feature_window_mean", model="z", feature="x") == pytest.approx(float(np.mean(x)))
    # no negative edge: _sum is there, and agrees with the window mean
    assert value(m, "modelmon_feature_value_sum", model="z", feature="pos") == pytest.approx(float(pos.sum()))
    assert value(m, "modelmon_feature_window_mean", model="z", feature="pos") == pytest.approx(float(np.mean(pos)))


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


def numeric_series(edges: int, negative: bool) -> int:
    """README "Series budget": a numeric feature's series per replica (data-quality counters
    not included: one per kind that occurred)."""
    live = edges + 1 + 1 + (0 if negative else 1)  # buckets with +Inf, _count, _sum
    reference = edges + 1 + 1 + (0 if negative else 1) + 1  # the same, and the reference mean
    # scores and the Wasserstein distance's two confidence bounds, p-values (chi2, ks, location,
    # scale); detected, samples, missing, out of range, mean
    windowed = 5 + 2 + 4 + 5
    return live + reference + windowed + 1 + 1  # and the reference missing ratio, the feature info


def categorical_series(categories: int) -> int:
    """README "Series budget": a categorical feature's series per replica (its top categories
    and __other__, live and reference)."""
    # scores, p-value, detected/samples/missing, reference missing ratio, feature info
    return 2 * (categories + 1) + 3 + 1 + 3 + 1 + 1


async def test_the_series_budget_is_what_the_readme_says(start_sidecar: StartSidecar, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    profile = Profile("b", "1", 5000, (numeric_feature("pos", rng.random(5000)),
                                       numeric_feature("neg", rng.normal(0, 1, 5000)),
                                       categorical_feature("cat", [f"c{i % 20}" for i in range(5000)])))
    profile.save(tmp_path / "b.json")
    running = await start_sidecar(None, models=[{"name": "b", "profile": str(tmp_path / "b.json")}],
                                  drift={"interval_seconds": 0.1, "min_samples": 10})
    records = [{"features": {"pos": float(a), "neg": float(b), "cat": f"c{i % 20}"}}
               for i, (a, b) in enumerate(zip(rng.random(100), rng.normal(0, 1, 100), strict=True))]
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records",
                                                    json={"model": "b", "records": records}) as r:
        assert r.status == 202
    await running.drain()
    await running.sidecar.compute_drift()
    m = await scrape(running)
    per_feature: dict[str, int] = {}
    for name, labels in m:
        feature = dict(labels).get("feature")
        if feature is not None and name != "modelmon_data_quality_events_total":
            per_feature[feature] = per_feature.get(feature, 0) + 1
    edges = {f.name: len(f.edges) for f in profile.features if isinstance(f, NumericFeature)}
    assert per_feature == {"pos": numeric_series(edges["pos"], negative=False),
                           "neg": numeric_series(edges["neg"], negative=True),
                           "cat": categorical_series(20)}
    # with the defaults (20 bins: 21 edges with the 1st and 99th percentiles; top 20 categories)
    assert edges["pos"] == 21
    assert (numeric_series(21, False), numeric_series(21, True), categorical_series(20)) == (67, 65, 51)


async def test_a_negative_value_drops_the_sum_of_a_feature_whose_bins_are_positive(
        start_sidecar: StartSidecar, profile_path: Path) -> None:
    """`p` (uniform on [0, 1)): its _sum is a counter until a value below zero arrives; then it
    would fall, so it is no longer exported (before: exported, and Prometheus saw a reset)."""
    running = await start_sidecar(None, **drift_config(profile_path))
    await push(running, [{"features": {"p": 0.5}}, {"features": {"p": 0.25}}])
    await running.drain()
    m = await scrape(running)
    assert value(m, "modelmon_feature_value_sum", model="churn", feature="p") == pytest.approx(0.75)
    assert value(m, "modelmon_reference_value_sum", model="churn", feature="p") is not None
    await push(running, [{"features": {"p": -1e6}}])
    await running.drain()
    m = await scrape(running)
    assert value(m, "modelmon_feature_value_sum", model="churn", feature="p") is None
    assert value(m, "modelmon_feature_value_count", model="churn", feature="p") == 3
    await push(running, [{"features": {"p": 0.5}}])  # for good
    await running.drain()
    m = await scrape(running)
    assert value(m, "modelmon_feature_value_sum", model="churn", feature="p") is None
    # a reference with values below zero never had one
    assert value(m, "modelmon_reference_value_sum", model="churn", feature="age") is not None
