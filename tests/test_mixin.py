"""The mixin's generated files: current in the repository, built from catalogue names only, every
selector scoped, valid for promtool and amtool, routed and inhibited as documented (a real
Alertmanager answers which alerts it inhibits)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from helpers import free_port, stop, wait_http
from modelmon.config import ConfigError
from modelmon.metrics import catalogue as cat
from modelmon.mixin import (
    ALERTMANAGER_FILE,
    ALERTS_FILE,
    RULES_FILE,
    RUNBOOK_FILE,
    Mixin,
    MixinConfig,
    example_yaml,
    load_mixin_config,
)
from modelmon.mixin.config import Alertmanager, field_doc, parse_matchers
from modelmon.mixin.promql import series_name

ROOT = Path(__file__).parent.parent
PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
needs_amtool = pytest.mark.skipif(AMTOOL is None, reason="amtool is not installed")

# A configuration unlike the defaults: two matchers, a regex, an extra aggregation label.
CUSTOM = {
    "selector": 'job=~"ml-.*", namespace="prod"',
    "aggregation_labels": ["namespace", "job"],
    "latency_slo": {"threshold_seconds": 0.25, "objective": 0.995, "route_matcher": ""},
    "drift": {"window": "2h"},
    "performance": {"window": "30m", "mae_max": 12.5},
    "alertmanager": {"page_severities": ["critical", "warning"], "info_webhook_url": "http://127.0.0.1:1/info"},
}


# --- the committed files ------------------------------------------------------------------------

def test_committed_files_equal_a_fresh_generation() -> None:
    files = Mixin().files()
    for name in (RULES_FILE, ALERTS_FILE, ALERTMANAGER_FILE):
        assert (ROOT / "alertmanager" / name).read_text() == files[name], \
            f"alertmanager/{name} is stale: run `make generate`"
    assert (ROOT / "docs" / "runbook.md").read_text() == files[RUNBOOK_FILE], \
        "docs/runbook.md is stale: run `make generate`"
    assert (ROOT / "alertmanager" / "mixin.example.yaml").read_text() == example_yaml(), \
        "alertmanager/mixin.example.yaml is stale: run `make generate`"


def test_readme_lists_every_alert_with_its_severity_and_runbook_link() -> None:
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- alerts:begin -->\n(.*?)<!-- alerts:end -->", readme, re.S)
    assert table, "README.md has no generated alerts table"
    assert table.group(1) == Mixin().alerts_table("docs/runbook.md"), "README's alert table is stale"
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for a in Mixin().alerts:
        assert f"[{a.name}](docs/runbook.md#{a.name.lower()})" in table.group(1)
        assert f"\n## {a.name}\n" in runbook  # GitHub's anchor for it is the lowercased name
        assert f'\n<a id="{a.name}"></a>\n\n## {a.name}\n' in runbook  # and the exact name


def test_the_example_config_is_the_defaults() -> None:
    assert load_mixin_config(ROOT / "alertmanager" / "mixin.example.yaml") == MixinConfig()
    assert load_mixin_config(data={}) == MixinConfig()


# Alerts whose value is a constant 0 or 1 (up/down, absent): no `value` annotation
CONSTANT_VALUE = {"ModelmonWatchdog", "ModelmonTargetAbsent", "ModelmonMetricsAbsent", "ModelmonTargetDown",
                  "ModelmonUpstreamDown", "ModelmonModelDown", "ModelmonDependencyDown"}


# --- configuration --------------------------------------------------------------------------------

def test_a_partial_config_keeps_the_other_defaults() -> None:
    config = load_mixin_config(data={"traffic": {"error_ratio_critical": 0.3},
                                     "availability": {"upstream_down": {"for": "10m"}}})
    assert config.traffic.error_ratio_critical == 0.3
    assert config.traffic.error_ratio_warning == 0.05
    assert config.availability.upstream_down.for_ == "10m"
    assert config.availability.upstream_down.severity == "critical"


@pytest.mark.parametrize(("data", "message"), [
    ({"latency_slo": {"threshold_seconds": 0.3}},
     "latency_slo.threshold_seconds: 0.3 is not a bucket boundary of modelmon_request_duration_seconds"),
    ({"latency_slo": {"objective": 1.0}}, "latency_slo.objective: must be between 0 and 1"),
    ({"traffic": {"rate_window": "5 minutes"}}, "traffic.rate_window: must be a Prometheus duration"),
    ({"traffic": {"high_error_ratio_warning": {"for": "ten"}}}, "traffic.high_error_ratio_warning.for:"),
    ({"drift": {"feature_drift": {"severity": "page"}}}, "drift.feature_drift.severity: must be one of"),
    ({"drift": {"treshold": 1}}, "drift.treshold: unknown key"),
    ({"selector": "job=modelmon"}, "selector: not a label matcher list"),
    ({"selector": 'namespace="ml"'}, "aggregation_labels: must include 'namespace'"),
    ({"quality": {"missing_margin": 5}}, "quality.missing_margin: is a ratio"),
    ({"performance": {"mae_baseline_window": "1h"}}, "performance: performance.window"),
    # the name regex is gone: outputs are told by the profile's roles (modelmon_feature_info)
    ({"drift": {"output_features": "prediction"}},
     "drift.output_features: removed: ModelmonFeatureDrift and ModelmonPredictionDrift now tell "
     "inputs from outputs by the profile's roles (modelmon_feature_info{role}"),
    ({"alertmanager": {"group_interval": "0s"}}, "alertmanager.group_interval: must be longer than 0"),
    ({"alertmanager": {"repeat_interval": "0"}}, "alertmanager.repeat_interval: must be longer than 0"),
    ({"traffic": {"rate_window": "0s"}}, "traffic.rate_window: must be longer than 0"),
    # what Prometheus and Alertmanager refuse: units out of order or twice
    ({"alertmanager": {"group_wait": "30s1m"}}, "alertmanager.group_wait: must be a Prometheus duration"),
    ({"drift": {"feature_drift": {"for": "1h1h"}}}, "drift.feature_drift.for: must be a Prometheus duration"),
    ({"resources": {"memory_warning": 0.99}}, "resources.memory_warning: must be below"),
    # 14.4 x (1 - 0.9) = 1.44: the fast burn would need 144% of the requests slow
    ({"latency_slo": {"objective": 0.9}}, "latency_slo.burn_windows[0].factor: 14.4 x (1 - objective 0.9)"),
    ({"traffic": {"quantiles": []}}, "traffic.quantiles: needs at least one quantile"),
    ({"traffic": {"quantiles": [0.5, 0.9, 0.5]}}, "traffic.quantiles[2]: 0.5 is listed twice"),
    ({"latency_slo": {"route_matcher": 'path="/predict"'}},
     "latency_slo.route_matcher: 'path' is not a label of modelmon_request_duration_seconds"),
    ({"latency_slo": {"route_matcher": "route=other"}}, "latency_slo.route_matcher: not a label matcher list"),
    ({"alertmanager": {"page_severities": []}}, "alertmanager.page_severities: needs at least one severity"),
    ({"drift": {"smoothing": 0}}, "drift.smoothing: must be above 0"),
    ({"traffic": {"route_matcher": 'le="1"'}}, "traffic.route_matcher: 'le' is not a label of modelmon_requests"),
])
def test_invalid_config_names_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_mixin_config(data=data)
    assert message in str(err.value)


@pytest.mark.parametrize("duration", ["0s", "0", "0ms", "1h30m", "1d12h", "90s", "1500ms", "2w3d"])
def test_a_duration_alertmanager_accepts_is_accepted(duration: str) -> None:
    """group_wait and an alert's `for` may be 0 (Alertmanager and Prometheus accept it; the
    generated heartbeat route has group_wait: 0s); any duration Prometheus parses is accepted."""
    config = load_mixin_config(data={"alertmanager": {"group_wait": duration},
                                     "drift": {"feature_drift": {"for": duration}}})
    assert config.alertmanager.group_wait == duration and config.drift.feature_drift.for_ == duration
    alerts = yaml.safe_load(Mixin(config).files()[ALERTS_FILE])
    assert [r["for"] for g in alerts["groups"] for r in g["rules"]
            if r["alert"] == "ModelmonFeatureDrift"] == [duration]


@needs_amtool
def test_amtool_accepts_a_zero_group_wait(tmp_path: Path) -> None:
    path = tmp_path / ALERTMANAGER_FILE
    path.write_text(Mixin(load_mixin_config(data={"alertmanager": {"group_wait": "0s"}})).files()[ALERTMANAGER_FILE])
    result = _amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("url", "link"), [
    ("https://g.example/d/x/model", "https://g.example/d/x/model?var-model={{ . | urlquery }}"),
    ("https://g.example/d/x/model?orgId=2", "https://g.example/d/x/model?orgId=2&var-model={{ . | urlquery }}"),
])
def test_the_dashboard_link_adds_the_model_to_the_query(url: str, link: str) -> None:
    alerts = Mixin(load_mixin_config(data={"dashboard_url": url})).alerts_file()
    annotation = alerts["groups"][0]["rules"][1]["annotations"]["dashboard_url"]
    assert annotation == url + "{{ with $labels.model }}" + link.removeprefix(url) + "{{ end }}"


def test_the_latency_threshold_may_be_any_bucket_boundary() -> None:
    for bound in cat.LATENCY_BUCKETS:
        rules = yaml.safe_load(Mixin(load_mixin_config(data={"latency_slo": {"threshold_seconds": bound}}))
                               .files()[RULES_FILE])
        slow = [r["expr"] for g in rules["groups"] for r in g["rules"] if "slow_ratio" in r["record"]]
        assert slow and all(f'le="{cat.le_value(bound)}"' in expr for expr in slow)


# --- metric names and selectors, read by a PromQL parser ------------------------------------------

def catalogue_series() -> set[str]:
    suffixes = {cat.Kind.HISTOGRAM: ("bucket", "count", "sum"), cat.Kind.SUMMARY: ("count", "sum")}
    return {series_name(spec, suffix) for spec in cat.ALL for suffix in suffixes.get(spec.kind, ("",))}


def catalogue_labels() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for spec in cat.ALL:
        extra = {"le"} if spec.kind is cat.Kind.HISTOGRAM else set()
        for suffix in ("", "_total", "_info", "_bucket", "_count", "_sum"):
            out[spec.name + suffix] = set(spec.labels) | extra
    return out


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def matchers(selector: promql_parser.VectorSelector) -> set[tuple[str, str, str]]:
    ops = ((promql_parser.MatchOp.Equal, "="), (promql_parser.MatchOp.NotEqual, "!="),
           (promql_parser.MatchOp.Re, "=~"), (promql_parser.MatchOp.NotRe, "!~"))
    return {(m.name, next(text for op, text in ops if op == m.op), m.value)
            for m in selector.matchers.matchers}


def unknown_names(mixin: Mixin) -> list[str]:
    """Metric names that neither the catalogue, Prometheus (``up``) nor an earlier recording rule
    defines, in the rules and alerts files; and labels a catalogue metric does not have."""
    known = catalogue_series() | {"up"}
    labels = catalogue_labels()
    target = set(mixin.config.aggregation_labels) | {"instance"}
    problems = []
    files = mixin.files()
    for name in (RULES_FILE, ALERTS_FILE):
        for group in yaml.safe_load(files[name])["groups"]:
            for rule in group["rules"]:
                for sel in selectors(rule["expr"]):
                    if sel.name not in known:
                        problems.append(f"{rule.get('record') or rule['alert']}: {sel.name}")
                    elif sel.name in labels:
                        for label, _op, _value in matchers(sel):
                            if label not in labels[sel.name] | target:
                                problems.append(f"{sel.name} has no label {label}")
                if "record" in rule:
                    known.add(rule["record"])  # usable by the rules after it
    return problems


@pytest.mark.parametrize("config", [{}, CUSTOM], ids=["defaults", "custom"])
def test_every_metric_name_is_defined_by_the_catalogue_or_a_recording_rule(config: dict[str, Any]) -> None:
    mixin = Mixin(load_mixin_config(data=config))
    assert unknown_names(mixin) == []
    # and the check sees a name the catalogue does not define
    mixin.alerts[1] = mixin.alerts[1].__class__(
        **{**mixin.alerts[1].__dict__, "expr": 'rate(modelmon_requests_totl{job="modelmon"}[5m]) > 0'})
    assert unknown_names(mixin) == ["ModelmonTargetAbsent: modelmon_requests_totl"]


@pytest.mark.parametrize("config", [{}, CUSTOM], ids=["defaults", "custom"])
def test_every_selector_carries_the_configured_matchers(config: dict[str, Any]) -> None:
    mixin = Mixin(load_mixin_config(data=config))
    required = set(parse_matchers(mixin.config.selector))
    files = mixin.files()
    count = 0
    for name in (RULES_FILE, ALERTS_FILE):
        for group in yaml.safe_load(files[name])["groups"]:
            for rule in group["rules"]:
                found = selectors(rule["expr"])
                assert found or rule.get("alert") == "ModelmonWatchdog", rule  # vector(1)
                for sel in found:
                    assert required <= matchers(sel), (rule.get("record") or rule["alert"], sel.name)
                    count += 1
    assert count > 150


def test_runbook_queries_parse_and_use_known_names() -> None:
    mixin = Mixin()
    known = catalogue_series() | {"up", "ALERTS", "scrape_duration_seconds"} | {
        r.record for g in mixin.rules.groups() for r in g.rules}
    for a in mixin.alerts:
        for query in a.confirm:
            for sel in selectors(query):
                assert sel.name in known, (a.name, query)


def test_every_alert_has_severity_for_summary_description_and_runbook() -> None:
    mixin = Mixin()
    alerts = yaml.safe_load(mixin.files()[ALERTS_FILE])
    runbook = mixin.files()[RUNBOOK_FILE]
    names = set()
    for group in alerts["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            names.add(name)
            assert re.fullmatch(r"Modelmon[A-Z][A-Za-z0-9]+", name)
            assert rule["labels"]["severity"] in ({"none"} if name == "ModelmonWatchdog" else
                                                  {"critical", "warning", "info"})
            assert ("for" in rule) != (name == "ModelmonWatchdog")
            ann = rule["annotations"]
            constant = name in CONSTANT_VALUE
            assert set(ann) == {"summary", "description", "runbook_url", "dashboard_url"} | (
                set() if constant else {"value"}), name
            assert constant or "$value" in ann["value"], name
            assert "{{" not in ann["summary"]
            assert ann["runbook_url"] == f"https://modelmon.example/docs/runbook.md#{name.lower()}"
            assert f"\n## {name}\n" in runbook
            if name != "ModelmonWatchdog":
                assert "$labels" in ann["description"] or "$value" in ann["description"] or \
                    name == "ModelmonTargetAbsent", name
    assert len(names) >= 25


@needs_promtool
@pytest.mark.parametrize("config", [{}, CUSTOM], ids=["defaults", "custom"])
def test_promtool_check_rules(tmp_path: Path, config: dict[str, Any]) -> None:
    files = Mixin(load_mixin_config(data=config)).files()
    for name in (RULES_FILE, ALERTS_FILE):
        (tmp_path / name).write_text(files[name])
    result = subprocess.run([PROMTOOL, "check", "rules", RULES_FILE, ALERTS_FILE], cwd=tmp_path,  # type: ignore[list-item]
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2


# --- Alertmanager -------------------------------------------------------------------------------

def _amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, timeout=30)


@needs_amtool
@pytest.mark.parametrize("config", [{}, CUSTOM], ids=["defaults", "custom"])
def test_amtool_check_config(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / ALERTMANAGER_FILE
    path.write_text(Mixin(load_mixin_config(data=config)).files()[ALERTMANAGER_FILE])
    result = _amtool("check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout and "4 receivers" in result.stdout


def expected_receiver(severity: str, name: str, pages: tuple[str, ...]) -> str:
    if name == "ModelmonWatchdog":
        return "modelmon-heartbeat"
    if severity in pages:
        return "modelmon-pagerduty"
    return {"warning": "modelmon-warning", "info": "modelmon-info"}[severity]


@needs_amtool
@pytest.mark.parametrize("config", [{}, CUSTOM], ids=["defaults", "custom"])
def test_amtool_routes_every_alert_to_its_receiver(tmp_path: Path, config: dict[str, Any]) -> None:
    mixin = Mixin(load_mixin_config(data=config))
    path = tmp_path / ALERTMANAGER_FILE
    path.write_text(mixin.files()[ALERTMANAGER_FILE])
    pages = mixin.config.alertmanager.page_severities
    seen = set()
    for a in mixin.alerts:
        receiver = expected_receiver(a.severity, a.name, pages)
        seen.add(receiver)
        result = _amtool("config", "routes", "test", f"--config.file={path}",
                         f"--verify.receivers={receiver}", f"alertname={a.name}",
                         f"severity={a.severity}", "model=churn", "job=modelmon")
        assert result.returncode == 0, (a.name, a.severity, result.stdout + result.stderr)
    # an alert from elsewhere, with no severity, still reaches a human; a critical one of another
    # exporter does not page through modelmon's PagerDuty route (the subtree takes Modelmon* only)
    for labels in (("alertname=SomethingElse",), ("alertname=NodeDown", "severity=critical"),
                   ("alertname=Watchdog", "severity=none")):
        result = _amtool("config", "routes", "test", f"--config.file={path}",
                         "--verify.receivers=modelmon-warning", *labels)
        assert result.returncode == 0, result.stdout + result.stderr
    assert seen == ({"modelmon-heartbeat", "modelmon-pagerduty", "modelmon-warning", "modelmon-info"}
                    if not config else {"modelmon-heartbeat", "modelmon-pagerduty", "modelmon-info"})


def test_alertmanager_config_shape() -> None:
    """Group by alertname and model; PagerDuty through a routing key file, severity mapped,
    details and links; the URLs come from the mixin config (a test can point them at 127.0.0.1)."""
    config = load_mixin_config(data={"alertmanager": {"pagerduty_url": "http://127.0.0.1:8099/v2/enqueue",
                                                      "routing_key_file": "/tmp/key"}})
    am = Mixin(config).alertmanager()
    assert am["route"]["group_by"] == ["alertname", "model"]
    pd = am["receivers"][0]["pagerduty_configs"][0]
    assert pd["url"] == "http://127.0.0.1:8099/v2/enqueue" and pd["routing_key_file"] == "/tmp/key"
    assert "routing_key" not in pd and pd["send_resolved"] is True
    assert set(pd["details"]) >= {"model", "feature", "value", "runbook_url", "dashboard_url"}
    assert [link["text"] for link in pd["links"]] == ["Runbook", "Dashboard"]
    assert "critical" in pd["severity"] and "warning" in pd["severity"]


def _render(tmp_path: Path, template: str, alerts: list[dict[str, str]],
            annotations: list[dict[str, str]] | None = None) -> str:
    """``template`` rendered by Alertmanager's own template engine (amtool) for a notification of
    ``alerts`` (their labels), as Alertmanager would send it."""
    notes = annotations or [{} for _ in alerts]
    common = {k: v for k, v in alerts[0].items() if all(a.get(k) == v for a in alerts)}
    data = {"receiver": "modelmon-pagerduty", "status": "firing", "externalURL": "http://am:9093",
            "alerts": [{"status": "firing", "labels": a, "annotations": n} for a, n in zip(alerts, notes, strict=True)],
            "groupLabels": {k: v for k, v in common.items() if k in ("alertname", "model")},
            "commonLabels": common, "commonAnnotations": {}}
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "none.tmpl").write_text("")
    result = _amtool("template", "render", f"--template.glob={tmp_path / 'none.tmpl'}",
                     f"--template.data={tmp_path / 'data.json'}", f"--template.text={template}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.removesuffix("\n")


@needs_amtool
@pytest.mark.parametrize(("config", "alerts", "source", "group"), [
    ({}, [{"alertname": "ModelmonUpstreamDown", "job": "modelmon", "model": "churn", "instance": "a:9400"},
          {"alertname": "ModelmonUpstreamDown", "job": "modelmon", "model": "churn", "instance": "b:9400"}],
     "modelmon/churn", "modelmon"),
    # no model: the instance
    ({}, [{"alertname": "ModelmonMemoryNearLimit", "job": "modelmon", "instance": "a:9400", "cgroup": "model"}],
     "modelmon/a:9400", "modelmon"),
    # one model served under two jobs, grouped together (group_by: alertname, model)
    ({}, [{"alertname": "ModelmonHighErrorRatio", "job": "modelmon", "model": "churn"},
          {"alertname": "ModelmonHighErrorRatio", "job": "modelmon-canary", "model": "churn"}],
     "churn", ""),
    # absent() of a regex selector has no labels at all: PagerDuty still gets a source
    (CUSTOM, [{"alertname": "ModelmonTargetAbsent", "severity": "critical"}], "modelmon", ""),
    (CUSTOM, [{"alertname": "ModelmonFeatureDrift", "namespace": "prod", "job": "ml-churn", "model": "churn"}],
     "prod/ml-churn/churn", "prod/ml-churn"),
    ({"alertmanager": {"pagerduty_source": "{{ .CommonLabels.job }}"}},
     [{"alertname": "ModelmonUpstreamDown", "job": "modelmon", "model": "churn"}], "modelmon", "modelmon"),
], ids=["model", "instance", "two-jobs", "no-labels", "custom-labels", "configured"])
def test_pagerduty_source_names_the_affected_system(tmp_path: Path, config: dict[str, Any],
                                                    alerts: list[dict[str, str]], source: str, group: str) -> None:
    """Alertmanager's default source is the client ("modelmon Alertmanager"); PagerDuty wants the
    affected system: the job and model (or instance), never empty."""
    pd = Mixin(load_mixin_config(data=config)).alertmanager()["receivers"][0]["pagerduty_configs"][0]
    assert _render(tmp_path, pd["source"], alerts) == source
    assert _render(tmp_path, pd["group"], alerts) == group
    models = {a.get("model", "") for a in alerts}
    assert _render(tmp_path, pd["component"], alerts) == (models.pop() if len(models) == 1 else "")


@needs_amtool
def test_pagerduty_details_list_the_alerts_that_have_a_value(tmp_path: Path) -> None:
    """An alert without a value annotation (the up/down ones) or without a feature adds no empty
    item to the lists of PagerDuty's details."""
    details = Mixin().alertmanager()["receivers"][0]["pagerduty_configs"][0]["details"]
    labels = [{"alertname": "ModelmonFeatureDrift", "model": "churn", "feature": f} for f in ("age", "plan")]
    values = [{"value": "1e-06"}, {"value": "< 1e-300"}]
    assert _render(tmp_path, details["feature"], labels, values) == "age, plan"
    assert _render(tmp_path, details["value"], labels, values) == "age: 1e-06, plan: < 1e-300"
    down = [{"alertname": "ModelmonUpstreamDown", "model": "churn", "instance": i} for i in ("a:1", "b:1")]
    assert _render(tmp_path, details["feature"], down) == ""
    assert _render(tmp_path, details["value"], down) == ""


def test_the_dedup_key_and_what_orphans_incidents_are_documented() -> None:
    """PagerDuty's dedup key is Alertmanager's group key: the route's matchers and the group's
    labels. A routing change (page_severities) gives open incidents a new key: their resolve
    never arrives. README and runbook say so."""
    runbook = Mixin().files()[RUNBOOK_FILE]
    readme = (ROOT / "README.md").read_text()
    for text in (runbook, readme):
        flat = " ".join(text.split())
        assert "dedup key" in flat and "page_severities" in flat and "group_by" in flat
        assert "orphan" in flat
    assert '`{}/{alertname=~"Modelmon.+"}/{severity=~"critical"}`' in runbook
    custom = Mixin(load_mixin_config(data=CUSTOM)).files()[RUNBOOK_FILE]
    assert '`{}/{alertname=~"Modelmon.+"}/{severity=~"critical|warning"}`' in custom
    assert "dedup key" in field_doc(Alertmanager, "page_severities")  # and so in mixin.example.yaml


# --- inhibitions, by a real Alertmanager ---------------------------------------------------------

@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if ALERTMANAGER is None:
        pytest.skip("alertmanager is not installed")
    (tmp_path / "key").write_text("0123456789abcdef0123456789abcdef\n")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: notifications fail, harmlessly
    config = load_mixin_config(data={"alertmanager": {
        "pagerduty_url": closed + "/v2/enqueue", "routing_key_file": str(tmp_path / "key"),
        "warning_webhook_url": closed + "/warning", "heartbeat_url": closed + "/heartbeat"}})
    (tmp_path / ALERTMANAGER_FILE).write_text(Mixin(config).files()[ALERTMANAGER_FILE])
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={tmp_path / ALERTMANAGER_FILE}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address={url.removeprefix('http://')}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=(tmp_path / "alertmanager.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(url + "/-/ready", 30, proc)  # type: ignore[arg-type]
        yield url
    finally:
        stop(proc)  # type: ignore[arg-type]


def _post(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps([{"labels": labels} for labels in alerts]).encode()
    req = urllib.request.Request(url + "/api/v2/alerts", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def _states(url: str) -> dict[tuple[str, ...], str]:
    with urllib.request.urlopen(url + "/api/v2/alerts", timeout=5) as resp:
        alerts = json.load(resp)
    return {tuple(f"{k}={v}" for k, v in sorted(a["labels"].items())): a["status"]["state"] for a in alerts}


def _key(labels: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{k}={v}" for k, v in sorted(labels.items()))


def test_inhibitions_in_a_real_alertmanager(alertmanager: str) -> None:
    """amtool cannot test inhibition offline (`config routes test` covers routing only), so the
    generated config runs in the real Alertmanager, which reports each alert's inhibition."""
    job = {"job": "modelmon"}

    def alert(name: str, severity: str, **labels: str) -> dict[str, str]:
        return {"alertname": name, "severity": severity, **job, **labels}

    sources = [
        # no replica of churn or fraud serves: model-wide outages silence the model's alerts
        alert("ModelmonModelDown", "critical", model="churn"),
        alert("ModelmonModelDown", "critical", model="fraud"),
        # one replica of `spam` down (of several): a page that silences nothing of the model
        alert("ModelmonUpstreamDown", "critical", instance="d:9400", model="spam"),
        alert("ModelmonTargetDown", "warning", instance="e:9400", model="spam"),
        alert("ModelmonHighErrorRatio", "critical", model="churn"),
        alert("ModelmonMemoryNearLimit", "critical", instance="a:9400", cgroup="model"),
        alert("ModelmonTargetDown", "warning", instance="c:9400"),  # no model named
    ]
    inhibited = [
        alert("ModelmonFeatureDrift", "warning", model="churn", feature="age"),
        alert("ModelmonFleetDrift", "warning", model="churn", feature="age", method="ks"),
        alert("ModelmonFeatureMissingHigh", "warning", model="churn", feature="age"),
        alert("ModelmonAccuracyLow", "warning", model="fraud"),
        alert("ModelmonFairnessDisparateImpact", "warning", model="fraud", segment="region"),
        alert("ModelmonNoPredictions", "warning", model="churn"),
        alert("ModelmonHighErrorRatio", "warning", model="churn"),  # its critical twin fires
        alert("ModelmonMemoryNearLimit", "warning", instance="a:9400", cgroup="model"),
    ]
    active = [
        alert("ModelmonFeatureDrift", "warning", model="other", feature="age"),  # another model
        alert("ModelmonAccuracyLow", "warning", model="churn", job="modelmon-canary"),  # another job
        alert("ModelmonHighErrorRatio", "warning", model="fraud"),  # no critical twin for fraud
        alert("ModelmonMemoryNearLimit", "warning", instance="a:9400", cgroup="self"),  # another cgroup
        alert("ModelmonPayloadErrors", "warning", model="churn", reason="bad_tensor_data"),  # not silenced
        alert("ModelmonDriftScoringStalled", "warning", instance="a:9400", model="churn"),
        # a per-replica outage does not mute the fleet-wide alerts of its model
        alert("ModelmonFleetDrift", "warning", model="spam", feature="age", method="ks"),
        alert("ModelmonFeatureDrift", "warning", model="spam", feature="age"),
        alert("ModelmonAccuracyLow", "warning", model="spam"),
    ]
    _post(alertmanager, sources + inhibited + active)
    deadline = time.monotonic() + 10
    while True:
        states = _states(alertmanager)
        want = {**{_key(a): "active" for a in sources + active}, **{_key(a): "suppressed" for a in inhibited}}
        if {k: states.get(k) for k in want} == want or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {k: states.get(k) for k in want} == want


# --- the command line -------------------------------------------------------------------------

def test_cli_writes_the_files(tmp_path: Path) -> None:
    config = tmp_path / "mixin.yaml"
    config.write_text(yaml.safe_dump(CUSTOM))
    result = subprocess.run([sys.executable, "-m", "modelmon", "mixin", "--config", str(config),
                             "--out", str(tmp_path / "out"), "--example-config", str(tmp_path / "example.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = Mixin(load_mixin_config(config)).files()
    for name, text in expected.items():
        assert (tmp_path / "out" / name).read_text() == text
    assert load_mixin_config(tmp_path / "example.yaml") == load_mixin_config(config)
    assert 'namespace="prod"' in (tmp_path / "out" / RULES_FILE).read_text()

    config.write_text("latency_slo: {threshold_seconds: 0.3}\n")
    result = subprocess.run([sys.executable, "-m", "modelmon", "mixin", "--config", str(config),
                             "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "invalid mixin config: latency_slo.threshold_seconds" in result.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"a: " + b"[" * 3000 + b"]" * 3000, "nested too deeply"),
    (b"traffic: {rate_window: \xff\xfe}\n", "not UTF-8"),
    (b"? [a, b]\n: 1\n", "a key must be a scalar"),
    (b"- a list\n", "top level must be a mapping"),
])
def test_a_bad_mixin_file_gets_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    """The mixin's file is read as the sidecar's is: a reason, never a traceback."""
    bad = tmp_path / "mixin.yaml"
    bad.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_mixin_config(bad)
