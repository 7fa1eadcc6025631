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
import promql_parser
import pytest
import yaml
from dashboard_previews import VIEWS, fill, render_all
from dashboard_stack import live_stack
from modelmon.metrics import catalogue as cat
from modelmon.mixin import Mixin, MixinConfig
from modelmon.mixin.dashboards import BOARDS, SIDECAR_FILE, dashboards
from test_mixin import catalogue_series, selectors
from test_prometheus_integration import query

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
        # a join of per-target series keeps the aggregation labels (a model in two namespaces
        # stays two rows)
        for title, expr in queries(board):
            for clause in re.findall(r"(?:on|group by) \((instance[^)]*)\)", expr):
                assert "namespace" in clause, (name, title, clause)


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


def _points(result: list[dict[str, Any]]) -> list[tuple[list[tuple[str, str]], str]]:
    return sorted((sorted(r["metric"].items()), r["value"][1]) for r in result)


def _labels(result: list[dict[str, Any]]) -> list[dict[str, str]]:
    return sorted(({k: v for k, v in r["metric"].items() if k != "__name__"} for r in result),
                  key=lambda m: sorted(m.items()))


async def _check_scoping(s: aiohttp.ClientSession, prometheus: str, boards: dict[str, dict[str, Any]]) -> None:
    """The job variable's "All" (.*) shows what the configured job shows, though another job
    scrapes the same series; every table query returns exactly the labels its table keeps."""
    at = time.time() - 1  # both at one evaluation time: equal results, values included
    for view in VIEWS:
        for panel in panels(boards[view.board]):
            for target in panel.get("targets") or []:
                chosen = await query(s, prometheus, fill(target["expr"], view.variables), at)
                every = await query(s, prometheus, fill(target["expr"], {**view.variables, "job": ".*"}), at)
                assert _points(chosen) == _points(every), (view.board, panel["title"], target["expr"])
                if panel["type"] != "table" or not chosen:
                    continue
                organize = next(t["options"] for t in panel["transformations"] if t["id"] == "organize")
                values = set(organize["renameByName"])
                keep = {name for name in organize["indexByName"] if name not in values}
                for labels in _labels(chosen):
                    if values:  # ALERTS (no value column) keeps a few of its labels
                        assert set(labels) == keep, (view.board, panel["title"], labels)


# Queries that may return nothing in the live run, each with its reason: (board, panel title,
# a series the query reads).
ALLOWED_EMPTY = {
    ("modelmon-fleet.json", "Models", cat.CGROUP_MEMORY_LIMIT.exposed_name):
        "no cgroup=\"model\" series: the demo model server runs in the sidecar's own cgroup",
    ("modelmon-fleet.json", "Model memory / limit", cat.CGROUP_MEMORY_LIMIT.exposed_name):
        "no cgroup=\"model\" series: the demo model server runs in the sidecar's own cgroup",
    ("modelmon-model.json", "Container memory / limit", cat.CGROUP_MEMORY_LIMIT.exposed_name):
        "no cgroup=\"model\" series: the demo model server runs in the sidecar's own cgroup",
    ("modelmon-model.json", "Upstream errors by reason", cat.UPSTREAM_ERRORS.exposed_name):
        "the model server never fails to answer (connect, timeout, reset): a rare condition",
    ("modelmon-sidecar.json", "Dropped records by reason", cat.RECORDS_DROPPED.exposed_name):
        "nothing is dropped: the analysis queue never fills and no body is too large",
}


def allowed_empty(board: str, title: str, expr: str) -> bool:
    return any(b == board and t == title and name in expr for b, t, name in ALLOWED_EMPTY)


def test_allowed_empty_queries_exist() -> None:
    """Every exception names a query that exists (a renamed panel cannot hide behind it)."""
    boards = all_boards()
    for board, title, name in ALLOWED_EMPTY:
        assert any(t == title and name in e for t, e in queries(boards[board])), (board, title)


@pytest.mark.integration
async def test_every_panel_query_returns_data_and_every_panel_draws(tmp_path: Path) -> None:
    """A real Prometheus with the generated rules scrapes a sidecar under demo traffic that
    drifts, carries NaNs, gets labels, plus a pushed regression model and a careless client.
    Every panel query of every board, with the variables filled in as the previews fill them,
    must parse and return data; then every panel of every preview must draw something."""
    boards = all_boards()
    pending = [(view, title, expr) for view in VIEWS for title, expr in queries(boards[view.board])]
    with_data: set[tuple[str, str]] = set()
    async with live_stack(tmp_path, drift_after=5) as stack, aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 120
        while True:
            still = []
            for view, title, expr in pending:
                result = await query(s, stack.prometheus, fill(expr, view.variables))
                if any(r["value"][1] != "NaN" for r in result):  # 0/0 is not data
                    with_data.add((view.board, expr))
                else:
                    still.append((view, title, expr))
            pending = still
            missing = {(v.board, t, e) for v, t, e in pending if (v.board, e) not in with_data
                       and not allowed_empty(v.board, t, e)}
            if not missing:
                break
            if time.monotonic() > deadline:
                raise AssertionError("no data for:\n" + "\n".join(f"{b} / {t}: {e}" for b, t, e in
                                                                   sorted(missing)))
            await asyncio.sleep(1)
        # a series that appeared in the last second has no point on the range query's last step
        # yet: let every series collect a few points before drawing
        await asyncio.sleep(3)
        await _check_scoping(s, stack.prometheus, boards)
        drawn = await render_all(stack.prometheus, boards, VIEWS, stack.started, time.time(), tmp_path)
    for png, panels_drawn in drawn.items():
        assert (tmp_path / png).stat().st_size > 50_000, png
        for p in panels_drawn:
            assert not p.errors, (png, p.title, p.errors)
    # a panel draws in at least one view unless all its queries are allowed to be empty
    drew = {(v.board, p.title) for v in VIEWS for p in drawn[v.png] if p.values}
    for view in VIEWS:
        for p in panels(boards[view.board]):
            if p["type"] == "text" or (view.board, p["title"]) in drew:
                continue
            assert all(allowed_empty(view.board, p["title"], t["expr"]) for t in p["targets"]), (
                view.board, p["title"])


def test_provisioning_file_and_install_steps_agree() -> None:
    """Grafana's file provider (apiVersion 1) loads the boards from the directory the README's
    steps copy them into; the kube-prometheus-stack steps name every board and the sidecar's
    label."""
    provider_file = ROOT / "grafana" / "provisioning" / "modelmon-dashboards.yaml"
    data = yaml.safe_load(provider_file.read_text(encoding="utf-8"))
    assert data["apiVersion"] == 1
    [provider] = data["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    path = provider["options"]["path"]
    assert path.startswith("/")
    guide = (ROOT / "grafana" / "README.md").read_text(encoding="utf-8")
    assert f"sudo cp grafana/modelmon-*.json {path}/" in guide
    assert "cp grafana/provisioning/modelmon-dashboards.yaml /etc/grafana/provisioning/dashboards/" in guide
    assert "grafana_dashboard=1" in guide
    for name in BOARDS:
        assert f"--from-file=grafana/{name}" in guide, name
        assert f"`{name}`" in guide, name
    for png in {v.png for v in VIEWS}:
        assert f"(previews/{png})" in guide, png
        assert (ROOT / "grafana" / "previews" / png).is_file(), png
    size = sum((ROOT / "grafana" / name).stat().st_size for name in BOARDS)
    assert size < 256 * 1024  # the README's claim about kubectl apply's annotation limit


def test_fleet_drift_panels_rank_one_bounded_score_per_feature() -> None:
    """The fleet drift rules record KS (numeric) and TVD, PSI and Jensen-Shannon (categorical)
    under one name: the fleet board ranks KS and TVD only, both in [0, 1], never PSI."""
    rules = Mixin(MixinConfig()).rules
    fleet = load(name="modelmon-fleet.json")
    reading = [(t, e) for t, e in queries(fleet) if rules.drift_score in e]
    assert len(reading) >= 3
    for title, expr in reading:
        for sel in selectors(fill(expr, {"job": "modelmon", "model": ".*"})):
            if sel.name != rules.drift_score:
                continue
            [method] = [m for m in sel.matchers.matchers if m.name == "method"]
            allowed = {"ks", "tvd", "psi", "jensen_shannon"}
            assert {m for m in allowed if re.fullmatch(method.value, m)} == {"ks", "tvd"}, title
