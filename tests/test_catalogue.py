"""One source of truth: every exported metric is in the catalogue, and the docs match it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from conftest import Running
from modelmon import catalogue as cat
from modelmon.docs import metrics_markdown
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
    process = {f"modelmon_process_{n}" for n in (
        "cpu_seconds", "resident_memory_bytes", "virtual_memory_bytes", "open_fds", "max_fds",
        "start_time_seconds")}
    assert exported - process <= catalogued, exported - process - catalogued
    assert exported & process, "the sidecar's own process metrics are missing"
    for name in exported & process:
        assert name in cat.PROCESS_METRICS_NOTE


def test_readme_documents_every_metric() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/metrics.md" in readme
