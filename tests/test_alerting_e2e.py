"""End to end, with the real tools: the demo model server, the sidecar in front of it, a real
Prometheus evaluating the mixin's generated rules and alerts, and a real Alertmanager running the
generated alertmanager.yml, whose PagerDuty receiver points at a local Events API v2 stand-in
(tests/pagerduty_receiver.py) that validates every event.

The rules come from `modelmon mixin --config` with a configuration of this test's own: the alerts
it exercises get `for` durations of seconds (and a 10 s error-ratio window), Alertmanager groups
within a second, and the feature-drift alert is made critical so that it pages. Everything else
keeps its default, so no other alert can fire within the test's minute.

The story: healthy traffic, nothing pages (the Watchdog reaches its heartbeat receiver); the
model server stops -> ModelmonUpstreamDown (the replica) and ModelmonModelDown (the model: its only
replica is down) and ModelmonHighErrorRatio page, the warning twin of the latter is inhibited; the
inputs drift meanwhile -> ModelmonFeatureDrift fires in Prometheus but is inhibited by the
model-wide outage (ModelmonModelDown; a replica's ModelmonUpstreamDown inhibits nothing) and does
not page; the model comes back -> the outage resolves and the
drift, no longer inhibited, pages, while the model's outputs (`probability` and `class`, outputs by
their role in the profile, not by their names) drift as ModelmonPredictionDrift, not as input
drift; the inputs recover -> every page is resolved.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml
from helpers import free_port, stop, wait_http
from modelmon.demo.model import FEATURES, STDS, sample_features
from modelmon.demo.model_server import MODEL_NAME, prepare_model, training_profile
from modelmon.mixin import ALERTMANAGER_FILE, ALERTS_FILE, RULES_FILE, Mixin, load_mixin_config
from pagerduty_receiver import Event, PagerDutyReceiver, wait_until

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

ROUTING_KEY = "e2e0modelmon0pagerduty0key000032"  # an integration key is 32 characters
RUNBOOK = "https://runbooks.e2e.test/modelmon/runbook.md"
DASHBOARD = "https://grafana.e2e.test/d/modelmon-model/modelmon-model"
UPSTREAM_DOWN, ERROR_RATIO, FEATURE_DRIFT = "ModelmonUpstreamDown", "ModelmonHighErrorRatio", "ModelmonFeatureDrift"
PREDICTION_DRIFT = "ModelmonPredictionDrift"
MODEL_DOWN = "ModelmonModelDown"  # no replica serves: the inhibition source of the model's alerts
OUTPUTS = ("probability", "class")  # the demo model's, by their role in its profile
GROUP_WAIT = GROUP_INTERVAL = 1  # seconds, Alertmanager's
STEP_TIMEOUT = 40  # seconds for any one step; the whole test is bounded by TEST_TIMEOUT
TEST_TIMEOUT = 180


def mixin_config(receiver_url: str, key_file: Path) -> dict[str, Any]:
    """Seconds instead of minutes for the alerts under test; every other key at its default."""
    return {
        "runbook_url": RUNBOOK,
        "dashboard_url": DASHBOARD,
        "availability": {"upstream_down": {"severity": "critical", "for": "2s"},
                         "model_down": {"severity": "critical", "for": "2s"}},
        "traffic": {"rate_window": "10s",
                    "high_error_ratio_critical": {"severity": "critical", "for": "2s"},
                    # later than the critical one, as by default, so that it reaches the
                    # Alertmanager already inhibited: the ratio crosses 5% ~1.5 s before 20%
                    "high_error_ratio_warning": {"severity": "warning", "for": "6s"}},
        # no name pattern: the demo model's outputs, `probability` and `class`, are outputs by
        # their role in its profile (modelmon_feature_info)
        "drift": {"feature_drift": {"severity": "critical", "for": "2s"}},
        "alertmanager": {
            "pagerduty_url": f"{receiver_url}/v2/enqueue",
            "routing_key_file": str(key_file),
            "warning_webhook_url": f"{receiver_url}/webhook/warning",
            "info_webhook_url": f"{receiver_url}/webhook/info",
            "heartbeat_url": f"{receiver_url}/webhook/heartbeat",
            "group_wait": f"{GROUP_WAIT}s",
            "group_interval": f"{GROUP_INTERVAL}s",
            "repeat_interval": "1h",
            "page_repeat_interval": "1h",
            "heartbeat_interval": "1h",
        },
    }


def sidecar_config(ports: dict[str, int], model_dir: Path, profile: Path, pid_file: Path) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "traffic_port": ports["traffic"], "admin_port": ports["admin"],
                   "shutdown_grace_seconds": 2},
        "upstream": {"url": f"http://127.0.0.1:{ports['model']}", "probe_interval_seconds": 0.2,
                     "probe_timeout_seconds": 0.5, "connect_timeout_seconds": 1, "read_timeout_seconds": 5},
        "models": [{"name": MODEL_NAME, "version": "1", "artifact_path": str(model_dir),
                    "profile": str(profile), "prediction_output": "class", "task": "classification",
                    "positive_class": "1"}],
        "resources": {"pid_file": str(pid_file), "interval_seconds": 1},
        # an 8 s window: drift shows within seconds of the inputs moving and clears as quickly;
        # the injected shift is gross (p ~ 0): a small alpha keeps healthy traffic from paging
        "drift": {"window_seconds": 8, "sub_windows": 4, "interval_seconds": 0.5,
                  "numeric_threshold": 1e-4, "categorical_threshold": 1e-4},
    }


def prometheus_config(ports: dict[str, int], rules_dir: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_dir / RULES_FILE), str(rules_dir / ALERTS_FILE)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [{"job_name": "modelmon",
                            "static_configs": [{"targets": [f"127.0.0.1:{ports['admin']}"]}]}],
    }


class Processes:
    """The servers of the test, each logging to a file; all stopped at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.started: list[str] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.running[name] = proc
        if name not in self.started:
            self.started.append(name)
        return proc

    def stop(self, name: str) -> None:
        proc = self.running.pop(name, None)
        if proc is not None:
            stop(proc, timeout=5)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)

    def logs(self, lines: int = 40) -> str:
        out = []
        for name in self.started:
            text = (self.tmp / f"{name}.log").read_text(errors="replace").splitlines()
            out.append(f"--- {name}.log (last {lines} lines) ---\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
async def receiver() -> AsyncIterator[PagerDutyReceiver]:
    server = PagerDutyReceiver()
    await server.start()
    yield server
    await server.close()


@dataclass
class Traffic:
    """Inference requests through the sidecar, 10 rows every 0.1 s; ``drifted`` shifts the
    amount by two standard deviations; ``push`` also sends the rows to the push API (the model
    is down: its records reach the sidecar as mirrored traffic would)."""

    proxy_url: str
    admin_url: str
    drifted: bool = False
    push: bool = False
    statuses: Counter[int] = field(default_factory=Counter)
    push_failures: list[str] = field(default_factory=list)

    async def run(self, stopped: asyncio.Event) -> None:
        rng = np.random.default_rng(3)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stopped.is_set():
                rows = sample_features(rng, 10)
                if self.drifted:
                    rows[:, 0] += 2 * STDS[0]
                instances = [dict(zip(FEATURES, map(float, row), strict=True)) for row in rows]
                try:
                    async with session.post(f"{self.proxy_url}/v1/models/{MODEL_NAME}:predict",
                                            json={"instances": instances}) as resp:
                        await resp.read()
                        self.statuses[resp.status] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    self.statuses[0] += 1
                if self.push:
                    records = [{"features": row} for row in instances]
                    async with session.post(f"{self.admin_url}/v1/records", json={"records": records}) as resp:
                        if resp.status != 202:
                            self.push_failures.append(f"{resp.status} {await resp.text()}")
                await asyncio.sleep(0.1)


class Timeline:
    """When each step of the story completed, printed with the test's output (on failure too)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps: list[tuple[float, str]] = []

    def mark(self, step: str) -> None:
        self.steps.append((time.monotonic() - self.started, step))

    def __str__(self) -> str:
        return "\n".join(f"{at:6.1f}s  {step}" for at, step in self.steps)


class Stack:
    """Queries against the running Prometheus and Alertmanager."""

    def __init__(self, session: aiohttp.ClientSession, prometheus: str, alertmanager: str) -> None:
        self.session = session
        self.prometheus = prometheus
        self.alertmanager = alertmanager

    async def query(self, promql: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.prometheus}/api/v1/query", params={"query": promql}) as resp:
            body = await resp.json()
        assert body["status"] == "success", body
        return body["data"]["result"]  # type: ignore[no-any-return]

    async def am_alerts(self, alertname: str) -> list[dict[str, Any]]:
        async with self.session.get(f"{self.alertmanager}/api/v2/alerts",
                                    params={"filter": f'alertname="{alertname}"'}) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()  # type: ignore[no-any-return]

    async def inhibited(self, alertname: str, severity: str, by: str, by_severity: str = "critical") -> bool:
        """Whether Alertmanager holds ``alertname`` as suppressed by the firing alert ``by``."""
        sources = {a["fingerprint"] for a in await self.am_alerts(by)
                   if a["labels"]["severity"] == by_severity and a["status"]["state"] != "unprocessed"}
        targets = [a for a in await self.am_alerts(alertname) if a["labels"]["severity"] == severity]
        return bool(sources and targets) and all(
            a["status"]["state"] == "suppressed" and set(a["status"]["inhibitedBy"]) & sources
            for a in targets)


def not_paged(receiver: PagerDutyReceiver, alertname: str) -> bool:
    """True, or fail at once if ``alertname`` paged (an inhibited alert must not)."""
    assert receiver.find("trigger", alertname) == [], f"{alertname} paged\n{receiver.describe()}"
    return True


def not_notified(receiver: PagerDutyReceiver, alertname: str) -> bool:
    """True, or fail at once if ``alertname`` reached the warning webhook."""
    sent = [m for _, m in receiver.webhooks.get("warning", []) if m["commonLabels"].get("alertname") == alertname]
    assert sent == [], f"{alertname} reached the warning webhook: {sent}"
    return True


def group_key_hash(alertname: str) -> str:
    """Alertmanager's dedup key: the SHA-256 of the aggregation group's key, i.e. the route's
    matchers from the root, then the group_by labels (alertname, model) of the group."""
    key = (f'{{}}/{{alertname=~"Modelmon.+"}}/{{severity=~"critical"}}:'
           f'{{alertname="{alertname}", model="{MODEL_NAME}"}}')
    return hashlib.sha256(key.encode()).hexdigest()


async def test_outage_and_drift_page_through_pagerduty_and_resolve(
    tmp_path: Path, processes: Processes, receiver: PagerDutyReceiver
) -> None:
    assert PROMETHEUS, "prometheus is not installed: run ./scripts/install-system-deps"
    assert ALERTMANAGER, "prometheus-alertmanager is not installed: run ./scripts/install-system-deps"
    timeline = Timeline()
    try:
        await asyncio.wait_for(_scenario(tmp_path, processes, receiver, timeline), TEST_TIMEOUT)
    except BaseException:
        print(receiver.describe())
        print(processes.logs())
        raise
    finally:  # pytest keeps the last runs' tmp_path, for a look afterwards
        (tmp_path / "pagerduty-events.json").write_text(json.dumps(
            [{"at": round(e.at - timeline.started, 3), **e.body} for e in receiver.events], indent=2))
        print(timeline)


async def _scenario(tmp: Path, processes: Processes, receiver: PagerDutyReceiver, timeline: Timeline) -> None:
    assert PROMETHEUS is not None and ALERTMANAGER is not None
    ports = {name: free_port() for name in ("model", "traffic", "admin", "prometheus", "alertmanager")}
    prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
    alertmanager_url = f"http://127.0.0.1:{ports['alertmanager']}"

    # --- the generated files, from a mixin configuration of our own --------------------------
    key_file = tmp / "pagerduty-routing-key"
    key_file.write_text(ROUTING_KEY + "\n")  # as `echo KEY > file` writes it
    mixin_yaml = tmp / "mixin.yaml"
    mixin_yaml.write_text(yaml.safe_dump(mixin_config(receiver.url, key_file)))
    generated = tmp / "generated"
    subprocess.run([sys.executable, "-m", "modelmon", "mixin", "--config", str(mixin_yaml),
                    "--out", str(generated)], check=True, capture_output=True, timeout=60)
    mixin = Mixin(load_mixin_config(mixin_yaml))
    pagerduty = yaml.safe_load((generated / ALERTMANAGER_FILE).read_text())["receivers"][0]["pagerduty_configs"][0]
    assert pagerduty["url"] == f"{receiver.url}/v2/enqueue"
    assert pagerduty["routing_key_file"] == str(key_file) and "routing_key" not in pagerduty  # no secret inline

    # --- model server, sidecar, Prometheus, Alertmanager ------------------------------------
    model_dir, pid_file, profile = tmp / "model", tmp / "model.pid", tmp / "profile.json"
    prepare_model(model_dir)
    training_profile().save(profile)
    model_argv = [sys.executable, "-m", "modelmon.demo.model_server", "--host", "127.0.0.1",
                  "--port", str(ports["model"]), "--model-dir", str(model_dir), "--pid-file", str(pid_file)]
    sidecar_yaml = tmp / "sidecar.yaml"
    sidecar_yaml.write_text(yaml.safe_dump(sidecar_config(ports, model_dir, profile, pid_file)))
    prometheus_yml = tmp / "prometheus.yml"
    prometheus_yml.write_text(yaml.safe_dump(prometheus_config(ports, generated)))
    servers = {
        "model": (model_argv, f"http://127.0.0.1:{ports['model']}/v2/health/ready"),
        "sidecar": ([sys.executable, "-m", "modelmon", "serve", "--config", str(sidecar_yaml)],
                    f"http://127.0.0.1:{ports['admin']}/readyz"),
        "alertmanager": ([ALERTMANAGER, f"--config.file={generated / ALERTMANAGER_FILE}",
                          f"--storage.path={tmp / 'alertmanager-data'}",
                          f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                          f"--web.external-url={alertmanager_url}",
                          "--cluster.listen-address=", "--log.level=debug"],
                         f"{alertmanager_url}/-/ready"),
        "prometheus": ([PROMETHEUS, f"--config.file={prometheus_yml}",
                        f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                        f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                        f"--web.external-url={prometheus_url}", "--log.level=warn",
                        # firing alerts are sent again every 2 s, not every minute: the first
                        # sends may come before the Alertmanager is discovered (and are dropped)
                        "--rules.alert.resend-delay=2s"],
                       f"{prometheus_url}/-/ready"),
    }
    for name, (argv, _) in servers.items():
        processes.start(name, argv)
    await asyncio.gather(*(asyncio.to_thread(wait_http, url, 30, processes.running[name])
                           for name, (_, url) in servers.items()))
    timeline.mark("model server, sidecar, Prometheus and Alertmanager ready")

    traffic = Traffic(f"http://127.0.0.1:{ports['traffic']}", f"http://127.0.0.1:{ports['admin']}")
    stopped = asyncio.Event()
    traffic_task = asyncio.create_task(traffic.run(stopped))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        stack = Stack(session, prometheus_url, alertmanager_url)
        try:
            await _story(stack, processes, receiver, traffic, model_argv, ports, timeline, mixin)
        finally:
            stopped.set()
            await asyncio.wait_for(traffic_task, 10)
    _check_events(receiver, alertmanager_url, {a.name: a.summary for a in mixin.alerts})
    assert traffic.statuses[200] > 0 and traffic.statuses[502] > 0, traffic.statuses
    assert traffic.push_failures == []


async def _story(stack: Stack, processes: Processes, receiver: PagerDutyReceiver, traffic: Traffic,
                 model_argv: list[str], ports: dict[str, int], timeline: Timeline, mixin: Mixin) -> None:
    # --- healthy: a drift verdict on healthy data, the Watchdog's heartbeat, no page ---------
    job = f'job="modelmon", model="{MODEL_NAME}"'
    await wait_until(lambda: stack.query(f'modelmon_model_drift_detected{{{job}}} == 0 and on () '
                                         f'count(modelmon_drift_p_value{{{job}, feature="amount"}}) > 0'),
                     STEP_TIMEOUT, "drift verdict on healthy traffic in Prometheus")
    heartbeats = await wait_until(lambda: receiver.webhooks.get("heartbeat"), STEP_TIMEOUT,
                                  "Watchdog heartbeat")
    _, heartbeat = heartbeats[0]
    assert heartbeat["receiver"] == "modelmon-heartbeat" and heartbeat["status"] == "firing"
    assert [a["labels"]["alertname"] for a in heartbeat["alerts"]] == ["ModelmonWatchdog"]
    assert await stack.query('ALERTS{alertstate="firing", alertname!="ModelmonWatchdog"}') == []
    assert receiver.events == []
    # each monitored feature's role, as the demo model's profile has it (its target is not monitored)
    roles = {r["metric"]["feature"]: r["metric"]["role"]
             for r in await stack.query(f"modelmon_feature_info{{{job}}}")}
    assert roles == {**dict.fromkeys(FEATURES, "input"), **dict.fromkeys(OUTPUTS, "output")}, roles
    timeline.mark("healthy: drift verdict in Prometheus, Watchdog heartbeat, roles, no page")

    # --- the model server stops: the outage pages, and so does the error ratio --------------
    processes.stop("model")
    timeline.mark("model server stopped")
    await receiver.wait_for("trigger", UPSTREAM_DOWN, STEP_TIMEOUT)
    timeline.mark(f"{UPSTREAM_DOWN} paged")
    await receiver.wait_for("trigger", MODEL_DOWN, STEP_TIMEOUT)
    timeline.mark(f"{MODEL_DOWN} paged; the inputs drift")
    # ... while the inputs drift (the records still arrive: mirrored traffic, the push API)
    traffic.drifted = traffic.push = True
    await receiver.wait_for("trigger", ERROR_RATIO, STEP_TIMEOUT)
    timeline.mark(f"{ERROR_RATIO} paged")
    await wait_until(lambda: not_notified(receiver, ERROR_RATIO) and stack.inhibited(
        ERROR_RATIO, "warning", by=ERROR_RATIO), STEP_TIMEOUT,
        "warning ModelmonHighErrorRatio inhibited by its critical twin")
    timeline.mark(f"warning {ERROR_RATIO} inhibited")
    await wait_until(lambda: stack.query(f'ALERTS{{alertname="{FEATURE_DRIFT}", alertstate="firing", '
                                         f'feature="amount"}}'),
                     STEP_TIMEOUT, "ModelmonFeatureDrift firing in Prometheus")
    timeline.mark(f"{FEATURE_DRIFT} firing in Prometheus")
    await wait_until(lambda: not_paged(receiver, FEATURE_DRIFT) and stack.inhibited(
        FEATURE_DRIFT, "critical", by=MODEL_DOWN), STEP_TIMEOUT,
        "ModelmonFeatureDrift inhibited by ModelmonModelDown")
    timeline.mark(f"{FEATURE_DRIFT} inhibited in Alertmanager")
    # Alertmanager flushes a new group after group_wait and then every group_interval: give it
    # two chances to send what it must not
    await asyncio.sleep(GROUP_WAIT + 2 * GROUP_INTERVAL + 0.5)
    assert await stack.inhibited(FEATURE_DRIFT, "critical", by=MODEL_DOWN)
    assert not_paged(receiver, FEATURE_DRIFT) and not_notified(receiver, ERROR_RATIO)
    timeline.mark("neither inhibited alert was sent")

    # --- the model server is back: the outage resolves, the drift pages ----------------------
    processes.start("model", model_argv)
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{ports['model']}/v2/health/ready", 30,
                            processes.running["model"])
    traffic.push = False
    timeline.mark("model server back")
    await receiver.wait_for("resolve", UPSTREAM_DOWN, STEP_TIMEOUT)
    timeline.mark(f"{UPSTREAM_DOWN} resolved")
    await receiver.wait_for("resolve", MODEL_DOWN, STEP_TIMEOUT)
    timeline.mark(f"{MODEL_DOWN} resolved")
    await receiver.wait_for("trigger", FEATURE_DRIFT, STEP_TIMEOUT)
    timeline.mark(f"{FEATURE_DRIFT} paged")
    # the outputs drift too, now that the model answers the drifted inputs: prediction drift, by
    # the alerts' own expressions, and never input drift
    alert_expr = {a.name: a.expr for a in mixin.alerts}

    async def drifted(alertname: str) -> set[str]:
        return {r["metric"]["feature"] for r in await stack.query(alert_expr[alertname])}

    await wait_until(lambda: drifted(PREDICTION_DRIFT), STEP_TIMEOUT,
                     "the outputs' drift in ModelmonPredictionDrift's expression")
    predicted, inputs = await drifted(PREDICTION_DRIFT), await drifted(FEATURE_DRIFT)
    assert predicted and predicted <= set(OUTPUTS), predicted
    assert "amount" in inputs and inputs <= set(FEATURES), inputs
    firing = {r["metric"]["feature"] for r in await stack.query(
        f'ALERTS{{alertname="{FEATURE_DRIFT}", alertstate="firing"}}')}
    assert firing <= set(FEATURES), firing
    timeline.mark(f"outputs {sorted(predicted)} in {PREDICTION_DRIFT}, not {FEATURE_DRIFT}; the inputs recover")

    # --- the inputs recover: the drift page and the error-ratio page resolve ----------------
    traffic.drifted = False
    await receiver.wait_for("resolve", FEATURE_DRIFT, STEP_TIMEOUT)
    timeline.mark(f"{FEATURE_DRIFT} resolved")
    await receiver.wait_for("resolve", ERROR_RATIO, STEP_TIMEOUT)
    timeline.mark(f"{ERROR_RATIO} resolved")


def _check_events(receiver: PagerDutyReceiver, alertmanager_url: str, summaries: dict[str, str]) -> None:
    """Every event is valid, carries the routing key, severity, summary, dedup key and links;
    every alert opened was resolved; nothing else paged."""
    assert receiver.rejected == [], receiver.rejected
    assert receiver.dropped == [], [e.body for e in receiver.dropped]  # resolves of no open alert
    assert receiver.open_alerts == {}, receiver.describe()
    by_alert: dict[str, list[Event]] = {}
    for event in receiver.events:
        by_alert.setdefault(event.payload["class"], []).append(event)
    assert set(by_alert) == {UPSTREAM_DOWN, MODEL_DOWN, ERROR_RATIO, FEATURE_DRIFT}, receiver.describe()
    for alertname, events in by_alert.items():
        actions = [e.action for e in events]
        # a group can be notified again while it fires (an alert joins it), then resolves once
        assert actions[-1] == "resolve" and set(actions[:-1]) == {"trigger"}, (alertname, actions)
        # one incident per Alertmanager group, trigger and resolve alike
        assert {e.dedup_key for e in events} == {group_key_hash(alertname)}, (alertname, events)
        runbook = f"{RUNBOOK}#{alertname.lower()}"
        dashboard = f"{DASHBOARD}?var-model={MODEL_NAME}"
        for event in events:
            body, payload, details = event.body, event.payload, event.details
            assert body["routing_key"] == ROUTING_KEY  # from routing_key_file, whitespace trimmed
            assert body["client"] == "modelmon Alertmanager"
            assert body["client_url"] == alertmanager_url
            # the affected system, not Alertmanager's default (the client's name)
            assert payload["source"] == f"modelmon/{MODEL_NAME}", (alertname, payload)
            assert payload["group"] == "modelmon", (alertname, payload)
            assert body["links"] == [{"href": runbook, "text": "Runbook"},
                                     {"href": dashboard, "text": "Dashboard"}], alertname
            assert payload["summary"] == f"{alertname} ({MODEL_NAME}): {summaries[alertname]}"
            assert payload["severity"] == "critical"
            assert payload["class"] == alertname and payload["component"] == MODEL_NAME
            assert payload["source"]
            assert details["model"] == MODEL_NAME
            assert details["runbook_url"] == runbook and details["dashboard_url"] == dashboard
        trigger = events[0]
        assert trigger.details["description"], alertname
        if alertname == FEATURE_DRIFT:
            assert trigger.details["feature"] == "amount"
            assert trigger.details["description"].startswith(
                f"Feature amount of model {MODEL_NAME} no longer looks like its reference profile")
            # the smallest p-value: underflowed to 0 by a gross shift, and then not written "0"
            assert re.fullmatch(r"amount: (< 1e-300|[0-9.]+(e[-+][0-9]+)?)", trigger.details["value"]), \
                trigger.details["value"]
            assert trigger.details["value"] != "amount: 0"
            for event in events:  # never an output
                assert set(filter(None, event.details["feature"].split(", "))) <= set(FEATURES), event.details
        elif alertname in (UPSTREAM_DOWN, MODEL_DOWN):
            assert trigger.details["feature"] == "" and trigger.details["value"] == ""  # a constant
        else:
            assert trigger.details["feature"] == ""
            assert trigger.details["value"].endswith("%")  # the error ratio, as a percentage
        # a resolve lists no firing alert
        assert events[-1].details["description"] == "" and events[-1].details["value"] == ""
    # one incident per alert: distinct dedup keys
    assert len({events[0].dedup_key for events in by_alert.values()}) == len(by_alert) == 4
