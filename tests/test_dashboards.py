"""The generated Grafana dashboards: committed JSON is fresh, every query parses and names only
known series, and every query returns data from a real Prometheus scraping a real sidecar."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import promql_parser
import pytest
from aiohttp.test_utils import TestServer
from conftest import StartSidecar
from helpers import stop, wait_http
from modelmon import catalogue as cat
from modelmon.mixin import Mixin, MixinConfig
from modelmon.mixin.dashboards import BOARDS, SIDECAR_FILE, dashboards
from modelmon.profile import Profile, categorical_feature, numeric_feature
from test_mixin import catalogue_series, selectors
from test_prometheus_integration import prometheus, query, start_prometheus

__all__ = ["prometheus"]  # the fixture, imported for the live test

ROOT = Path(__file__).resolve().parents[1]
# Series not in the catalogue that a dashboard may read: Prometheus's own per-target series and
# client_python's standard process collector.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}
STANDARD = re.compile(r"^(process|python)_[a-z_]+$")


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p.get("type") != "row"]


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel query."""
    return [(p["title"], t["expr"]) for p in panels(board) for t in p.get("targets") or []]


def fill(expr: str, variables: dict[str, str]) -> str:
    """The query as Grafana sends it: variables substituted ($__rate_interval by a window that
    holds several 1 s scrapes)."""
    out = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    for name, value in variables.items():
        out = out.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in out, out
    return out


def load(config: MixinConfig | None = None, name: str = SIDECAR_FILE) -> dict[str, Any]:
    return json.loads(dashboards(config or MixinConfig())[name])  # type: ignore[no-any-return]


def all_boards(config: MixinConfig | None = None) -> dict[str, dict[str, Any]]:
    return {name: json.loads(text) for name, text in dashboards(config or MixinConfig()).items()}


def test_committed_dashboards_are_fresh() -> None:
    generated = dashboards(MixinConfig())
    assert set(generated) == set(BOARDS) == {p.name for p in (ROOT / "grafana").glob("*.json")}
    for name, text in generated.items():
        assert (ROOT / "grafana" / name).read_text(encoding="utf-8") == text, (
            f"grafana/{name} is stale: run make generate")


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_structure(name: str) -> None:
    board = load(name=name)
    assert board["uid"] == BOARDS[name]
    assert "do not edit" in board["description"]
    names = [v["name"] for v in board["templating"]["list"]]
    assert names[:3] == ["datasource", "job", "model"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & mine, p["title"]
        cells |= mine
    for p in panels(board):
        if p["type"] == "text":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["description"], p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
        defaults = p["fieldConfig"]["defaults"]
        units = [defaults.get("unit")] + [prop["value"] for o in p["fieldConfig"].get("overrides", [])
                                         for prop in o["properties"] if prop["id"] == "unit"]
        if p["type"] == "heatmap":
            units = [p["options"]["yAxis"]["unit"]]
        if p["type"] != "table":  # a table's value columns: a unit, or a value mapping
            assert any(units), p["title"]
    # rates over Grafana's own interval (the fleet board reads recording rules: no rate at all)
    rate_windows = [e for _, e in queries(board) if "rate(" in e]
    assert all("[$__rate_interval]" in e for e in rate_windows)
    assert rate_windows or name == "modelmon-fleet.json"
    links = {link["title"]: link for link in board["links"]}
    assert links["modelmon"]["type"] == "dashboards" and links["modelmon"]["tags"] == ["modelmon"]
    assert links["modelmon"]["includeVars"] and links["modelmon"]["keepTime"]
    assert links["Runbook"]["url"] == MixinConfig().runbook_url
    assert "modelmon" in board["tags"]


def test_boards_link_to_each_other_and_alerts_to_the_model_board() -> None:
    boards = all_boards()
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    fleet = json.dumps(boards["modelmon-fleet.json"])
    assert "/d/modelmon-model/modelmon-model?var-model=${__data.fields.model}" in fleet
    assert "var-model=" in MixinConfig().dashboard_url or MixinConfig().dashboard_url.endswith(
        "/d/modelmon-model/modelmon-model")
    assert "/d/" + boards["modelmon-model.json"]["uid"] + "/" in MixinConfig().dashboard_url
    model = boards["modelmon-model.json"]
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert not variables["model"].get("multi") and not variables["feature"].get("multi")
    assert variables["method"]["current"]["value"] == "jensen_shannon"


def test_fleet_panels_read_the_recording_rules() -> None:
    """The fleet board shows what the alerts see: its traffic, drift and performance panels read
    the recorded series, not the raw ones."""
    rules = Mixin(MixinConfig()).rules
    fleet = load(name="modelmon-fleet.json")
    exprs = dict(queries(fleet))
    for title, rule in (("Requests/s by model", rules.request_rate), ("5xx ratio by model", rules.error_ratio),
                        ("Accuracy (1h)", rules.accuracy), ("MAE (1h)", rules.mae),
                        ("Labelled predictions (1h)", rules.join_ratio)):
        assert exprs[title].startswith(rule.record + "{"), title
    assert rules.drift_score in exprs["Worst drifting features over time (fleet, 1h)"]


def test_namespace_variable_when_configured() -> None:
    for name, board in all_boards(MixinConfig(aggregation_labels=("job", "namespace"))).items():
        assert [v["name"] for v in board["templating"]["list"]][:4] == [
            "datasource", "job", "namespace", "model"], name
        assert all('namespace=~"$namespace"' in e for _, e in queries(board) if "{" in e), name


@pytest.mark.parametrize("config", [MixinConfig(), MixinConfig(
    selector='job="mm", cluster="eu"', aggregation_labels=("job", "cluster", "namespace"))])
def test_every_query_parses_and_names_known_series(config: MixinConfig) -> None:
    known = catalogue_series() | PROMETHEUS_OWN | {r.record for g in Mixin(config).rules.groups()
                                                    for r in g.rules}
    variables = {"job": "mm", "namespace": "ns", "model": ".*", "datasource": "x", "feature": "f",
                 "method": "psi"}
    exprs = [(title, expr) for board in all_boards(config).values() for title, expr in
             queries(board) + [(v["name"], v["query"]["query"].removeprefix("label_values(")
                               .rsplit(",", 1)[0]) for v in board["templating"]["list"]
                               if v["type"] == "query"]]
    assert len(exprs) >= 100
    for title, expr in exprs:
        found = selectors(fill(expr, variables))
        assert found, title
        for sel in found:
            assert sel.name in known or STANDARD.match(sel.name), (title, sel.name)
            names = {m.name for m in sel.matchers.matchers}
            assert "job" in names, (title, expr)
            if "cluster" in config.aggregation_labels:
                assert "cluster" in names, (title, expr)
                if title not in ("job", "namespace"):  # the variables that choose it
                    assert "namespace" in names, (title, expr)
    promql_parser.parse("up")  # the parser is the one the rules tests use


@pytest.mark.integration
async def test_every_sidecar_health_query_returns_data(
    upstream: TestServer, start_sidecar: StartSidecar, prometheus: tuple[Path, str], tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    profile = Profile("churn", "1", 2000, (
        numeric_feature("age", rng.normal(40, 10, 2000)),
        categorical_feature("plan", rng.choice(["basic", "pro"], 2000).tolist()),
    ))
    profile.save(tmp_path / "p.json")
    running = await start_sidecar(str(upstream.make_url("")), models=[{"name": "churn", "profile": str(tmp_path / "p.json")}],
                                  drift={"interval_seconds": 0.2})
    config, url = prometheus
    proc = start_prometheus(config, url, [f"127.0.0.1:{running.listeners.admin_port}"])
    board = load()
    variables = {"job": "modelmon", "model": ".*"}
    try:
        await asyncio.to_thread(wait_http, url + "/-/ready", 30, proc)
        async with aiohttp.ClientSession() as s:
            records = [{"model": "churn", "features": {"age": float(a), "plan": "pro"}}
                       for a in rng.normal(45, 10, 300)]
            push = running.admin_url + "/v1/records"
            deadline = time.monotonic() + 15
            pending = queries(board)
            while pending:
                # traffic throughout: pushed records, a body that is no JSON, and a proxied
                # request with a row of the wrong length (a payload error)
                rows = {"instances": [[30, "basic"], [1, 2, 3]]}
                async with running.session.post(running.traffic_url + "/v1/models/churn:predict",
                                                json=rows) as r:
                    assert r.status == 200
                async with s.post(push, json={"model": "churn", "records": records}) as r:
                    assert r.status == 202, await r.text()
                async with s.post(push, data=b"{not json", headers={"Content-Type": "application/json"}):
                    pass
                await running.drain()
                still = []
                for title, expr in pending:
                    if not await query(s, url, fill(expr, variables)):
                        still.append((title, expr))
                pending = still
                if pending and time.monotonic() > deadline:
                    raise AssertionError(f"no data for: {pending}")
                await asyncio.sleep(0.5)
    finally:
        stop(proc)
    assert cat.PAYLOAD_ERRORS.exposed_name in json.dumps(board)
