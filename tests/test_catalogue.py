"""One source of truth: every exported metric is in the catalogue, and the docs match it."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from hypothesis import given
from hypothesis import strategies as st
from modelmon.metrics import catalogue as cat
from modelmon.metrics.docs import metrics_markdown
from modelmon.reference.profile import Profile, categorical_feature, numeric_feature
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).parent.parent


def test_docs_metrics_md_is_generated_from_the_catalogue() -> None:
    committed = (ROOT / "docs" / "metrics.md").read_text()
    assert committed == metrics_markdown(), "docs/metrics.md is stale: run `make generate`"


def test_catalogue_names_follow_conventions() -> None:
    names = [spec.name for spec in cat.ALL]
    assert len(names) == len(set(names))
    for spec in cat.ALL:
        assert spec.name.startswith("modelmon_")
        assert not spec.name.endswith("_total"), "the _total suffix is added for counters"
        assert not any(unit in spec.name for unit in ("_ms", "_milliseconds", "_percent", "_mb"))
        assert spec.help.endswith(".") and len(spec.help) > 20
        if spec.kind is cat.Kind.HISTOGRAM:
            assert spec.buckets == tuple(sorted(set(spec.buckets)))


async def test_every_exported_metric_is_in_the_catalogue(proxied: Running) -> None:
    async with proxied.session.post(proxied.traffic_url + "/v1/models/m:predict",
                                    json={"instances": [[1]]}) as resp:
        assert resp.status == 200
    await proxied.drain()
    async with aiohttp.ClientSession() as s, s.get(proxied.admin_url + "/metrics") as resp:
        text = await resp.text()
    exported = {f.name for f in text_string_to_metric_families(text)}
    # The text parser keeps the _info suffix of info metrics (typed gauge there).
    catalogued = {spec.exposed_name if spec.kind is cat.Kind.INFO else spec.name for spec in cat.ALL}
    # client_python's standard collectors, under the standard names (no modelmon_ prefix)
    process = {f"process_{n}" for n in (
        "cpu_seconds", "resident_memory_bytes", "virtual_memory_bytes", "open_fds", "max_fds",
        "start_time_seconds")} | {"python_gc_objects_collected", "python_gc_objects_uncollectable",
                                  "python_gc_collections", "python_info"}
    assert exported - process <= catalogued, exported - process - catalogued
    assert process <= exported, "the sidecar's own process and runtime metrics are missing"
    for name in process:
        assert name in cat.PROCESS_METRICS_NOTE


def _collector_classes() -> list[type[cat.CatalogueCollector]]:
    # the collectors are found as subclasses: every module that defines one must be imported
    import modelmon.drift.service
    import modelmon.sidecar.listeners

    assert modelmon.drift.service and modelmon.sidecar.listeners

    found: list[type[cat.CatalogueCollector]] = []
    todo = [cat.CatalogueCollector]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.append(sub)
            todo.append(sub)
    return found


def test_every_catalogue_entry_has_exactly_one_owner() -> None:
    owners: dict[str, list[str]] = {}
    for collector in _collector_classes():
        for spec in collector.owns:
            owners.setdefault(spec.name, []).append(collector.__name__)
    assert {name: o for name, o in owners.items() if len(o) != 1} == {}
    assert set(owners) == {spec.name for spec in cat.ALL}, set(owners) ^ {spec.name for spec in cat.ALL}


@pytest.fixture
async def busy_sidecar(upstream: TestServer, start_sidecar: StartSidecar, tmp_path: Path) -> Running:
    """A sidecar exporting nearly everything: proxied traffic, a profile, a bearer token, pushed
    classifications and regressions with segments, and their labels."""
    rng = np.random.default_rng(0)
    profile = Profile("cls", "1", 1000, (numeric_feature("x", rng.normal(0, 1, 1000)),
                                         categorical_feature("region", ["eu", "us"] * 500)))
    profile.save(tmp_path / "p.json")
    (tmp_path / "token").write_text("t0ken")
    running = await start_sidecar(
        str(upstream.make_url("")), auth={"token_file": str(tmp_path / "token")},
        models=[{"name": "cls", "profile": str(tmp_path / "p.json"), "segments": ["region"],
                 "positive_class": "1"}, {"name": "reg", "segments": ["region"], "task": "regression"}],
        drift={"interval_seconds": 0.1, "min_samples": 10})
    async with running.session.post(running.traffic_url + "/v1/models/cls:predict",
                                    json={"instances": [{"x": 0.1, "region": "eu"}]}) as resp:
        assert resp.status == 200
    auth = {"Authorization": "Bearer t0ken"}
    records = [{"id": f"{m}{i}", "features": {"x": float(i), "region": ["eu", "us"][i % 2]},
                "prediction": i % 2 if m == "cls" else i / 2} for m in ("cls", "reg") for i in range(20)]
    for model in ("cls", "reg"):
        async with running.session.post(running.admin_url + "/v1/records", headers=auth, json={
                "model": model, "records": [r for r in records if r["id"].startswith(model)]}) as resp:
            assert resp.status == 202
    await running.drain()
    async with running.session.post(running.admin_url + "/v1/labels", headers=auth, json=[
            {"id": r["id"], "label": 1 if r["id"].startswith("cls") else 3.0} for r in records]) as resp:
        assert resp.status == 202
    async with running.session.post(running.admin_url + "/v1/labels", json=[]) as resp:
        assert resp.status == 401
    await running.sidecar.compute_drift()
    return running


async def test_collectors_export_only_what_they_declare(busy_sidecar: Running) -> None:
    """What each collector collects is among the families its describe() declares."""
    collectors = [c for c in busy_sidecar.sidecar.registry._collector_to_names
                  if isinstance(c, cat.CatalogueCollector)]
    assert {type(c) for c in collectors} == set(_collector_classes())
    seen: set[str] = set()
    for collector in collectors:
        declared = {f.name for f in collector.describe()}
        collected = {f.name for f in collector.collect() if f.samples}
        assert collected <= declared, (type(collector).__name__, collected - declared)
        seen |= collected
    # what a sidecar without dependencies, a found model process or a full join buffer leaves out
    absent = {s.name for s in (cat.DEPENDENCY_UP, cat.DEPENDENCY_PROBE_DURATION, cat.MODEL_MEMORY_RSS,
                               cat.MODEL_CPU, cat.CGROUP_MEMORY_LIMIT, cat.CGROUP_MEMORY_USAGE,
                               cat.JOIN_EXPIRED, cat.JOIN_EVICTED, cat.UPSTREAM_ERRORS,
                               cat.PAYLOAD_ERRORS, cat.RECORDS_DROPPED, cat.MODEL_PROCESS_UP,
                               cat.MODEL_TRAINED, cat.CLIENT_CONNECTIONS_CLOSED)}
    assert {s.name for s in cat.ALL} - absent <= seen, sorted({s.name for s in cat.ALL} - absent - seen)


def test_readme_documents_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/metrics.md" in readme


# Go's strconv.FormatFloat(x, 'g', -1, 64), as measured with Go (1.25) and published; negatives
# are the same digits with a sign. Prometheus 3 writes le this way, plus ".0" on integers.
GO_G = [(999999.0, "999999"), (1234567.0, "1.234567e+06"), (0.0001, "0.0001"), (0.00001, "1e-05"),
        (608863452348.1149, "6.088634523481149e+11"), (1e21, "1e+21"), (1e10, "1e+10"),
        (0.5, "0.5"), (2.5e-7, "2.5e-07"), (1e100, "1e+100")]


@pytest.mark.parametrize(("value", "go"), GO_G + [(-v, "-" + g) for v, g in GO_G])
def test_le_values_are_written_as_go_writes_them(value: float, go: str) -> None:
    expected = go if ("." in go or "e" in go) else go + ".0"
    assert cat.le_value(value) == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_le_values_round_trip_in_go_syntax(value: float) -> None:
    text = cat.le_value(value)
    assert float(text) == value
    assert re.fullmatch(r"-?(\d+\.\d+|\d(\.\d+)?e[+-]\d{2,3})", text), text
    mantissa = text.lstrip("-").split("e")[0]
    if "e" in text:  # exponent form only outside [1e-4, 1e6)
        assert not 1e-4 <= abs(value) < 1e6
    else:
        assert abs(value) == 0 or 1e-4 <= abs(value) < 1e6, mantissa


def test_the_default_sidecar_loads_neither_the_other_engine_nor_scipy_nor_psutil() -> None:
    """The fast engine never imports the aiohttp engine, SciPy (12 MiB resident) is loaded
    only with the first drift scoring (a sidecar without a profile never has it), and psutil
    only when a model process is watched."""
    import subprocess
    import sys

    code = ("import asyncio, sys\n"
            "from modelmon.config import load_config\n"
            "from modelmon.sidecar.listeners import Listeners\n"
            "from modelmon.sidecar.state import Sidecar\n"
            "async def main():\n"
            "    config = load_config(overrides={'server': {'host': '127.0.0.1', 'traffic_port': 0,"
            " 'admin_port': 0}, 'upstream': {'url': 'http://127.0.0.1:1'}})\n"
            "    async with Sidecar(config) as sidecar, Listeners(sidecar):\n"
            "        await asyncio.sleep(0.2)\n"
            "    print(sorted(m for m in sys.modules if m in ('scipy', 'psutil') or m.endswith('aiohttp_engine')))\n"
            "asyncio.run(main())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
