"""The Helm chart (helm/modelmon/), rendered by Helm's own engine (helm-python-sdk: Helm v4's Go
SDK through its C ABI, no helm binary) for the default values and every ci/*-values.yaml:
lint, every manifest against the Kubernetes API's strict schemas (kubernetes-validate) and the
Prometheus Operator's CRDs (a copy of ../shared/crds), the rules through promtool, the dashboards and the
routing against what `modelmon mixin` generates, the values schema against `modelmon
check-config`, and the pod the chart builds (sidecar placement, probes, drain, hardening)."""

from __future__ import annotations

import argparse
import base64
import copy
import functools
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import jsonschema
import kubernetes_validate
import msgspec
import pytest
import yaml
from modelmon.config import ConfigError, config_schema, load_config
from modelmon.mixin import MixinConfig
from test_config import ACROSS_KEYS, ERROR_CASES, SCHEMA_CASES

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "modelmon"
CRDS = Path(__file__).parent / "fixtures" / "crds"  # a copy of ../shared/crds (README there)
SHARED_CRDS = ROOT.parent / "shared" / "crds"
FIXTURES = Path(__file__).parent / "fixtures" / "helm"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "churn", "models"
FULLNAME = "churn-modelmon"
# The oldest Kubernetes the chart's defaults target (native sidecars on by default: 1.29; the
# sleep action of preStop: 1.30) and the newest kubernetes-validate knows.
KUBE_OLDEST, KUBE_NEWEST = "1.30.0", kubernetes_validate.utils.latest_version()
TOKEN_PATH = "/var/run/secrets/modelmon/token"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML reads a bare `=` (an AlertmanagerConfig matchType, as Helm's toYaml writes it and
    the operator's CRD lists it) as YAML 1.1's `value` tag; Kubernetes' YAML 1.2 reads a string."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe


def load_all(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]  # a SafeLoader subclass: safe


class _StrictLoader(_Loader):
    """Refuses a mapping key given twice: Helm keeps the last one silently, but kustomize's Helm
    support, Flux's post-renderers and other strict YAML readers refuse the manifest."""


def _unique_keys(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    keys = [loader.construct_object(k) for k, _ in node.value]
    twice = sorted({str(k) for k in keys if keys.count(k) > 1})
    if twice:
        raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {twice}", node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys)


def load_all_strict(text: str) -> list[Any]:
    return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d]  # a SafeLoader subclass: safe


@functools.cache
def _chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART))


def scenario(name: str | None) -> dict[str, Any]:
    if name is None:
        return {}
    values: dict[str, Any] = load((CHART / "ci" / name).read_text())
    return values


def render(values: dict[str, Any], kube_version: str | None = None) -> dict[str, str]:
    """Template name -> rendered text (non-empty ones). ``kube_version`` sets what
    `.Capabilities.KubeVersion` says, as on a cluster of that version: helm-python-sdk's render
    takes it in its native options, which its Python signature does not expose yet."""
    chart = _chart()
    if kube_version is None:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    else:
        from helm_python import _native

        options = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": kube_version}
        out = json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values),
                                             json.dumps(options)))
    return {name.split("/", 1)[-1]: text for name, text in out.items() if text.strip()}


@functools.cache
def _rendered(name: str | None) -> dict[str, str]:
    return render(scenario(name))


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return [doc for name, text in rendered.items() if name != "templates/NOTES.txt" for doc in load_all_strict(text)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


def sidecar_of(spec: dict[str, Any]) -> dict[str, Any]:
    containers = spec.get("initContainers", []) + spec.get("containers", [])
    found: list[dict[str, Any]] = [c for c in containers if c["name"] in ("modelmon", "transformer-container")]
    assert len(found) == 1
    return found[0]


def notes_patch(rendered: dict[str, str]) -> dict[str, Any]:
    notes = rendered["templates/NOTES.txt"]
    begin, end = "# --- modelmon-patch.yaml (begin) ---", "# --- modelmon-patch.yaml (end) ---"
    patch: dict[str, Any] = load(notes[notes.index(begin) + len(begin):notes.index(end)])
    return patch


@functools.cache
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_chart", ROOT / "scripts" / "generate_chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- generation -----------------------------------------------------------------------------------

def test_the_chart_files_equal_a_fresh_generation() -> None:
    """files/ (rules, dashboards, routing, sidecar defaults), values.schema.json and
    helm/README.md (values table, attach patches) are written by scripts/generate_chart.py."""
    gen = generator()
    stale = gen.stale(gen.generate())
    assert not stale, f"run make generate: {[str(p.relative_to(ROOT)) for p in stale]}"


def test_the_chart_ships_exactly_the_generated_rules_and_dashboards() -> None:
    rules = CHART / "files" / "rules"
    for name in ("modelmon.rules.yml", "modelmon.alerts.yml"):
        assert (rules / name).read_text() == (ROOT / "alertmanager" / name).read_text()
    boards = sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
    assert boards == sorted(p.name for p in (ROOT / "grafana").glob("*.json"))
    for name in boards:
        assert (CHART / "files" / "dashboards" / name).read_text() == (ROOT / "grafana" / name).read_text()


def test_the_app_version_is_the_package_version() -> None:
    import tomllib

    chart = load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


# --- lint and render ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [None, *SCENARIOS])
def test_lint_is_clean(name: str | None) -> None:
    report = helm_python.lint(str(CHART), scenario(name), strict=True, namespace=NAMESPACE)
    assert report["errors"] == [], report
    # only Helm's note that the chart has no icon (there is no project icon to point at)
    assert [m for m in report["messages"] if m["error"] != "icon is recommended"] == [], report


def test_a_cluster_older_than_native_sidecars_gets_the_fallback_or_a_clear_refusal() -> None:
    """Lint logs a template's `fail` instead of reporting it, so the refusal is checked by
    rendering as on a 1.28 cluster."""
    classic = helm_python.lint(str(CHART), scenario("classic-sidecar-values.yaml"), strict=True,
                               kube_version="v1.28.0")
    assert classic["errors"] == [], classic
    with pytest.raises(helm_python.HelmRenderError) as info:
        render({}, kube_version="v1.28.0")
    assert ("sidecar.native: native sidecars need Kubernetes >= 1.29 (this cluster: v1.28.0); "
            "set sidecar.native=false") in str(info.value)


def test_the_crd_copy_equals_the_workspaces() -> None:
    """The CRDs the tests validate against are the workspace's (where the checkout has one)."""
    if not SHARED_CRDS.is_dir():
        pytest.skip("no ../shared/crds beside this checkout: the copy is all there is")
    shared = {p.name: p.read_bytes() for p in SHARED_CRDS.glob("*.yaml")}
    assert shared == {p.name: p.read_bytes() for p in CRDS.glob("*.yaml")}


@functools.cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """The Prometheus Operator's CRD schemas (../shared/crds/README.md: Draft7Validator and
    iter_errors; the `value` tag read as a string), made strict as the API server's field
    validation is (kubectl's default): an unknown field is an error, not pruned."""
    def strict(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: strict(v) for k, v in node.items()}
            if "properties" in node and "additionalProperties" not in node \
                    and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
        elif isinstance(node, list):
            node = [strict(v) for v in node]
        return node

    out = {}
    paths = sorted(CRDS.glob("*.yaml"))
    assert len(paths) == 4, paths
    for path in paths:
        crd = load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: kubernetes-validate's job
            out[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = \
                jsonschema.Draft7Validator(schema)
    return out


def validate(doc: dict[str, Any], versions: tuple[str, ...] = (KUBE_OLDEST, KUBE_NEWEST)) -> list[str]:
    """What is wrong with a manifest: Kubernetes' own kinds against the API's strict schemas of
    each version, the operator's kinds against their CRDs."""
    what = f"{doc['kind']} {doc['metadata']['name']}"
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        validator = _crd_validators()[(doc["apiVersion"], doc["kind"])]
        problems = [f"{what}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(doc)]
        metadata = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]}
        return problems + validate(metadata, versions)
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{what} ({version}): {'.'.join(map(str, exc.path))}: {exc.message}")
    return problems


_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+))([eE][-+]?[0-9]+|[mkMGTPE]i?|)$")
_FACTORS = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(value: Any) -> float:
    found = _QUANTITY.match(str(value))
    assert found, value
    number, suffix = found.groups()
    return float(number) * (float(f"1{suffix}") if suffix[:1] in "eE" and suffix else _FACTORS[suffix])


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    spec = spec.get("template", {}).get("spec", spec) if doc["kind"] != "Pod" else spec
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def api_server_problems(doc: dict[str, Any]) -> list[str]:
    """What the API server's validation refuses that the OpenAPI schemas cannot say: a probe
    with more or fewer than one handler, a liveness or startup probe with successThreshold other
    than 1, a request above its limit, two ports of a Service with one number."""
    what = f"{doc['kind']} {doc['metadata']['name']}"
    problems = []
    for c in _containers(doc) if doc["kind"] in ("Deployment", "Pod") else []:
        for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
            if kind in c:
                handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if h in c[kind]]
                if len(handlers) != 1:
                    problems.append(f"{what}: {c['name']}.{kind}: {len(handlers)} handlers {handlers}")
                if kind != "readinessProbe" and c[kind].get("successThreshold", 1) != 1:
                    problems.append(f"{what}: {c['name']}.{kind}.successThreshold must be 1")
        requests, limits = c.get("resources", {}).get("requests", {}), c.get("resources", {}).get("limits", {})
        for name in set(requests) & set(limits):
            if quantity(requests[name]) > quantity(limits[name]):
                problems.append(f"{what}: {c['name']}: requests.{name} {requests[name]} > limits {limits[name]}")
    if doc["kind"] == "Service":
        ports = [(p["port"], p.get("protocol", "TCP")) for p in doc["spec"]["ports"]]
        if len(set(ports)) != len(ports):
            problems.append(f"{what}: a port given twice: {ports}")
    return problems


@pytest.mark.parametrize("name", [None, *SCENARIOS])
def test_every_manifest_is_valid(name: str | None) -> None:
    docs = manifests(_rendered(name))
    assert docs
    problems = [p for doc in docs for p in validate(doc) + api_server_problems(doc)]
    assert not problems, "\n".join(problems)
    for doc in docs:
        assert doc["metadata"].get("namespace", NAMESPACE) in (NAMESPACE, "monitoring")


def test_validation_can_fail() -> None:
    """The validators see mistakes: an unknown field, in a Kubernetes kind and in a CRD kind."""
    docs = manifests(_rendered(None))
    deployment = copy.deepcopy(one(docs, "Deployment"))
    deployment["spec"]["template"]["spec"]["initContainers"][0]["restartPolicyy"] = "Always"
    assert validate(deployment)
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["portt"] = "x"
    assert validate(monitor)
    # and what only the API server sees: two handlers, a request above its limit, a port twice
    deployment = copy.deepcopy(one(docs, "Deployment"))
    model = deployment["spec"]["template"]["spec"]["containers"][0]
    model["readinessProbe"]["tcpSocket"] = {"port": "model"}
    model["resources"]["requests"]["memory"] = "1.5Gi"
    assert validate(deployment) == [] and len(api_server_problems(deployment)) == 2
    service = copy.deepcopy(one(docs, "Service"))
    service["spec"]["ports"][0]["port"] = service["spec"]["ports"][1]["port"]
    assert api_server_problems(service)
    with pytest.raises(yaml.constructor.ConstructorError, match="keys given twice"):
        load_all_strict("metadata:\n  labels:\n    a: x\n    a: y\n")


@pytest.mark.parametrize(("name", "kube", "versions"), [
    ("classic-sidecar-values.yaml", "v1.28.0", ("1.25.0", "1.28.0")),  # the fallback
    (None, "v1.29.0", ("1.29.0",)),  # the first release with native sidecars (on by default)
])
def test_older_clusters_get_manifests_they_accept(name: str | None, kube: str, versions: tuple[str, ...]) -> None:
    """Below 1.30 preStop has no sleep action: the chart runs `sleep` in the container instead."""
    docs = manifests(render(scenario(name), kube_version=kube))
    problems = [p for doc in docs if not doc["apiVersion"].startswith("monitoring.coreos.com/")
                for p in validate(doc, versions)]
    assert not problems, "\n".join(problems)
    spec = pod_spec(docs)
    assert spec["containers"][0]["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", str(
        scenario(name).get("termination", {}).get("preStopSeconds", 5))]}}


# --- what the chart is for: rules, dashboards, routing ---------------------------------------------

def test_the_prometheusrule_carries_exactly_the_generated_rules_and_passes_promtool(tmp_path: Path) -> None:
    rule = one(manifests(_rendered(None)), "PrometheusRule")
    generated = [group for name in ("modelmon.rules.yml", "modelmon.alerts.yml")
                 for group in load((ROOT / "alertmanager" / name).read_text())["groups"]]
    assert rule["spec"]["groups"] == generated
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    count = sum(len(g["rules"]) for g in generated)
    assert f"SUCCESS: {count} rules found" in result.stdout
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


@pytest.mark.parametrize("name", [None, "native-sidecar-values.yaml"])
def test_the_dashboard_configmaps_equal_grafana(name: str | None) -> None:
    values = scenario(name)
    boards = [d for d in manifests(_rendered(name)) if d["kind"] == "ConfigMap"
              and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = {p.name: p.read_text() for p in (ROOT / "grafana").glob("*.json")}
    assert {k: v for b in boards for k, v in b["data"].items()} == files
    namespace = values.get("dashboards", {}).get("namespace", NAMESPACE)
    assert {b["metadata"]["namespace"] for b in boards} == {namespace}
    assert [b["metadata"].get("annotations") for b in boards] == \
        [values.get("dashboards", {}).get("annotations")] * len(files)


def _as_alertmanager(spec: dict[str, Any]) -> dict[str, Any]:
    """An AlertmanagerConfig spec back in alertmanager.yml's words (the inverse of the chart's
    conversion, written independently of scripts/generate_chart.py)."""
    def matchers(items: list[dict[str, str]]) -> list[str]:
        return [f'{m["name"]}{m["matchType"]}{json.dumps(m["value"])}' for m in items]

    def route(r: dict[str, Any]) -> dict[str, Any]:
        names = {"groupBy": "group_by", "groupWait": "group_wait", "groupInterval": "group_interval",
                 "repeatInterval": "repeat_interval", "receiver": "receiver", "continue": "continue"}
        out = {names[k]: v for k, v in r.items() if k in names}
        if "matchers" in r:
            out["matchers"] = matchers(r["matchers"])
        if "routes" in r:
            out["routes"] = [route(x) for x in r["routes"]]
        return out

    def receiver(r: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"name": r["name"]}
        for c in r.get("pagerdutyConfigs", []):
            pd = {"routing_key_file": "/etc/alertmanager/secrets/pagerduty-routing-key", "url": c["url"],
                  "send_resolved": c["sendResolved"]}
            pd |= {k: c[k] for k in ("severity", "description", "source", "client", "component", "group", "class")}
            pd |= {"client_url": c["clientURL"], "details": {d["key"]: d["value"] for d in c["details"]},
                   "links": [{"href": link["href"], "text": link["alt"]} for link in c["pagerDutyLinkConfigs"]]}
            out.setdefault("pagerduty_configs", []).append(pd)
        for c in r.get("webhookConfigs", []):
            out.setdefault("webhook_configs", []).append({"url": c["url"], "send_resolved": c["sendResolved"]})
        return out

    return {"route": route(spec["route"]),
            "inhibit_rules": [{"source_matchers": matchers(i["sourceMatch"]),
                               "target_matchers": matchers(i["targetMatch"]), "equal": i["equal"]}
                              for i in spec["inhibitRules"]],
            "receivers": [receiver(r) for r in spec["receivers"]]}


def test_the_alertmanagerconfig_is_the_generated_routing(tmp_path: Path) -> None:
    values = scenario("native-sidecar-values.yaml")
    config = one(manifests(_rendered("native-sidecar-values.yaml")), "AlertmanagerConfig")
    generated = load((ROOT / "alertmanager" / "alertmanager.yml").read_text())
    back = _as_alertmanager(config["spec"])
    # the Modelmon subtree, with the timing it inherits from the generated root made explicit
    root = generated["route"]
    subtree = root["routes"][0] | {k: root[k] for k in ("group_wait", "group_interval", "repeat_interval")}
    assert back["route"] == subtree
    assert back["inhibit_rules"] == generated["inhibit_rules"]
    pagerduty = next(r for r in config["spec"]["receivers"] if r["name"] == "modelmon-pagerduty")
    assert pagerduty["pagerdutyConfigs"][0]["routingKey"] == {"name": "pagerduty-modelmon", "key": "routing-key"}
    by_name = {r["name"]: r for r in back["receivers"]}
    for receiver in generated["receivers"]:
        if "pagerduty_configs" in receiver:
            assert by_name[receiver["name"]] == receiver
        else:  # the URLs are the chart's values; a receiver without one sends nothing
            url = values["alertmanagerConfig"]["webhookUrls"].get(receiver["name"])
            expected = [{"url": url, "send_resolved": c["send_resolved"]} for c in
                        receiver.get("webhook_configs", [{"send_resolved": True}])] if url else None
            assert by_name[receiver["name"]].get("webhook_configs") == expected, receiver["name"]
    # and Alertmanager itself takes the routing back (templates, matchers, receivers)
    (tmp_path / "pagerduty-routing-key").write_text("0123456789abcdef0123456789abcdef\n")
    for r in back["receivers"]:
        for c in r.get("pagerduty_configs", []):
            c["routing_key_file"] = str(tmp_path / "pagerduty-routing-key")
    whole = {"route": {"receiver": "modelmon-warning", "routes": [back["route"]]},
             "inhibit_rules": back["inhibit_rules"], "receivers": back["receivers"]}
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(whole))
    result = subprocess.run(["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrapes_carry_the_job_the_rules_select() -> None:
    job = re.fullmatch(r'job="([^"]+)"', MixinConfig().selector)
    assert job, MixinConfig().selector
    values = load((CHART / "values.yaml").read_text())
    assert values["monitoring"]["job"] == job[1]
    for name, kind, key in [(None, "ServiceMonitor", "endpoints"), ("podmonitor-values.yaml", "PodMonitor",
                                                                     "podMetricsEndpoints")]:
        monitor = one(manifests(_rendered(name)), kind)
        endpoint = monitor["spec"][key][0]
        assert endpoint["port"] == "modelmon-admin" and endpoint["path"] == "/metrics"
        assert {"action": "replace", "targetLabel": "job", "replacement": job[1]} in endpoint["relabelings"]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # /metrics behind the token (podmonitor scenario): Prometheus sends it from the Secret
    endpoint = one(manifests(_rendered("podmonitor-values.yaml")), "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": f"{FULLNAME}-token", "key": "token"}}


# --- the values schema ----------------------------------------------------------------------------

def _schema_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm_python.HelmValuesError) as info:
        _chart().validate_schema(values)
    return str(info.value)


@pytest.mark.parametrize(("values", "message"), [
    # unknown keys: at the top, in the chart's own objects, in the sidecar's configuration, in a
    # Kubernetes object passed through
    ({"replicas": 2}, "at '': additional properties 'replicas' not allowed"),
    ({"service": {"typ": "NodePort"}}, "at '/service': additional properties 'typ' not allowed"),
    ({"config": {"server": {"admin_prot": 9500}}}, "at '/config/server': additional properties 'admin_prot' not allowed"),
    ({"config": {"upstreams": {}}}, "at '/config': additional properties 'upstreams' not allowed"),
    ({"model": {"resources": {"limts": {"cpu": 1}}}}, "at '/model/resources': additional properties 'limts' not allowed"),
    # wrong types
    ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
    ({"config": {"upstream": {"preserve_host": "yes"}}}, "at '/config/upstream/preserve_host': got string, want boolean"),
    ({"sidecar": {"securityContext": {"runAsUser": "root"}}}, "at '/sidecar/securityContext/runAsUser': got string, want null or integer"),
    # enumerations
    ({"mode": "helmfile"}, "at '/mode': value must be one of 'deployment', 'attach'"),
    ({"config": {"proxy": {"engine": "nginx"}}}, "at '/config/proxy/engine': value must be one of 'aiohttp', 'fast'"),
    # ranges
    ({"service": {"port": 0}}, "at '/service/port': minimum: got 0, want 1"),
    ({"config": {"server": {"admin_port": 70000}}}, "at '/config/server/admin_port': maximum: got 70,000, want 65,535"),
    ({"config": {"models": [{"name": "churn", "segments": list("abcdefghijk")}]}}, "at '/config/models/0/segments': maxItems"),
    # patterns
    ({"config": {"models": [{"name": "has space"}]}}, "at '/config/models/0/name': 'has space' does not match pattern"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "at '/serviceMonitor/interval': '30 seconds' does not match pattern"),
    ({"profiles": {"churn json": "{}"}}, "invalid propertyName 'churn json'"),
    # a key the chart needs, removed (Helm deletes a key set to null)
    ({"replicaCount": None}, "at '': missing property 'replicaCount'"),
    # what the API server would refuse later: label syntax, int32 fields, a liveness probe's
    # successThreshold
    ({"podLabels": {"team": "ML Platform"}}, "at '/podLabels/team': 'ML Platform' does not match pattern"),
    ({"commonLabels": {"team name": "ml"}}, "invalid propertyName 'team name'"),
    ({"replicaCount": 3000000000}, "at '/replicaCount': maximum"),
    ({"sidecar": {"livenessProbe": {"successThreshold": 2}}}, "at '/sidecar/livenessProbe/successThreshold'"),
])
def test_the_schema_refuses_each_kind_of_mistake_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    assert message in _schema_error(values)


def test_helm_install_refuses_what_the_schema_refuses() -> None:
    with pytest.raises(helm_python.HelmValuesError, match="additional properties 'typo' not allowed"):
        render({"config": {"typo": 1}})


def test_the_schema_refuses_unknown_keys_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def objects(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if "properties" in node:
                yield path, node
            for key, value in node.items():
                yield from objects(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from objects(value, f"{path}/{i}")

    found = list(objects(schema))
    assert len(found) > 100
    assert [p for p, node in found if node.get("additionalProperties") is not False] == []


def test_the_config_part_of_the_schema_is_generated_from_the_config_types() -> None:
    """modelmon.config.config_schema(), its definitions renamed and "(?!\\n)$" written "$" (the
    same end of text in Go's RE2, which Helm uses, as in ECMA 262)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    expected = json.loads(json.dumps(config_schema()["$defs"]).replace(r"(?!\\n)$", "$").replace(
        '"#/$defs/', '"#/$defs/modelmon.config.'))
    assert {k[len("modelmon.config."):]: v for k, v in schema["$defs"].items()
            if k.startswith("modelmon.config.")} == expected
    assert schema["properties"]["config"]["$ref"] == "#/$defs/modelmon.config.Config"


CONFIG_CASES = SCHEMA_CASES + [text for text, _ in ERROR_CASES if not text.startswith("- ")]


@pytest.mark.parametrize("text", CONFIG_CASES)
def test_the_chart_and_check_config_accept_and_refuse_the_same_configurations(tmp_path: Path, text: str) -> None:
    """tests/test_config.py's cases as `config:` values: Helm's schema validation and
    check-config's loader agree, except on the checks across keys, which only check-config
    makes (README, Configuration). A configuration both accept renders into a ConfigMap that
    check-config reads back as the same configuration (plus the token file the chart sets)."""
    document = json.loads(json.dumps(load(text), default=lambda v: v.isoformat())) or {}  # as Helm reads YAML
    try:
        _chart().validate_schema({"config": document})
        by_chart = True
    except helm_python.HelmValuesError:
        by_chart = False
    original = tmp_path / "original.yaml"
    original.write_text(text)
    try:
        load_config(original)  # what `modelmon check-config original.yaml` runs
        by_loader = True
    except ConfigError:
        by_loader = False
    if text in ACROSS_KEYS:
        assert by_chart and not by_loader, text
        return
    assert by_chart == by_loader, text
    if not by_loader:
        return
    # the chart sets the token file, unless the configuration names its own (then auth is off)
    own_token = isinstance(document.get("auth"), dict) and "token_file" in document["auth"]
    expected = load_config(original, overrides=None if own_token else {"auth": {"token_file": TOKEN_PATH}})
    try:
        rendered = render({"config": document, "auth": {"enabled": not own_token}})
    except helm_python.HelmRenderError as exc:  # a setting the chart refuses itself, by name
        # health behind the token (the kubelet cannot send it), or /metrics behind a token file of
        # one's own (auth.enabled=false: no Secret for Prometheus to send it from)
        assert re.search(r"config\.auth\.protect: (health|metrics with auth\.enabled=false)", str(exc)), exc
        return
    configmap = one(manifests(rendered), "ConfigMap", f"{FULLNAME}-config")
    path = tmp_path / "modelmon.yaml"
    path.write_text(configmap["data"]["modelmon.yaml"])
    assert msgspec.to_builtins(load_config(path)) == msgspec.to_builtins(expected), text


def test_check_config_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    for name in (None, "native-sidecar-values.yaml", "classic-sidecar-values.yaml", "podmonitor-values.yaml"):
        configmap = one(manifests(_rendered(name)), "ConfigMap", f"{FULLNAME}-config")
        path = tmp_path / f"{name}.yaml"
        path.write_text(configmap["data"]["modelmon.yaml"])
        result = subprocess.run([sys.executable, "-m", "modelmon", "check-config", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


def test_the_chart_passes_only_flags_modelmon_serve_takes() -> None:
    result = subprocess.run([sys.executable, "-m", "modelmon", "serve", "--help"], capture_output=True,
                            text=True, timeout=60)
    flags = {a for name in [None, *SCENARIOS] for a in sidecar_args(name) if a.startswith("--")}
    assert flags and all(flag in result.stdout for flag in flags), (flags, result.stdout)


def sidecar_args(name: str | None) -> list[str]:
    rendered = _rendered(name)
    if "templates/deployment.yaml" in rendered:
        args: list[str] = sidecar_of(pod_spec(manifests(rendered)))["args"]
        return args
    patch = notes_patch(rendered)["spec"]
    spec = patch.get("predictor") or patch["template"]["spec"]
    return list(sidecar_of(spec)["args"])


@pytest.mark.parametrize(("values", "message"), [
    ({"podMonitor": {"enabled": True}}, "serviceMonitor.enabled and podMonitor.enabled: enable one of them"),
    ({"service": {"enabled": False}}, "serviceMonitor.enabled needs service.enabled"),
    ({"mode": "attach"}, "attach.name: name the Deployment or InferenceService"),
    ({"mode": "attach", "attach": {"name": "churn"}}, "attach.selector: give the labels of the Deployment's pods"),
    ({"mode": "attach", "attach": {"kind": "InferenceService", "name": "churn"}, "config": {"upstream": {"url": None}}},
     "config.upstream.url: null (receive-only) cannot be attached to an InferenceService"),
    ({"model": {"port": 8000}}, "config.server.traffic_port and model.port are both 8000"),
    ({"config": {"server": {"admin_port": 8080}}}, "config.server.admin_port and model.port are both 8080"),
    ({"config": {"auth": {"token_file": "/etc/token"}}}, "config.auth.token_file: the chart sets it when auth.enabled"),
    ({"config": {"auth": {"protect": ["writes", "health"]}}}, "config.auth.protect: health would put the kubelet's probes"),
    ({"existingConfigMap": {"name": "mine"}, "config": {"drift": {"window_seconds": 60}}},
     "config.drift: with existingConfigMap.name set, the configuration is in that ConfigMap"),
    ({"existingConfigMap": {"name": "mine"}, "config": {"server": {"log_level": "debug"}}},
     "config.server.log_level: with existingConfigMap.name set"),
    ({"termination": {"gracePeriodSeconds": 20}}, "termination.gracePeriodSeconds: 20 is too short for "
     "termination.preStopSeconds (5) + the sidecar's server.shutdown_grace_seconds (20) + 5 s for its analysis "
     "queue: give at least 30"),
    ({"alertmanagerConfig": {"enabled": True}}, "alertmanagerConfig.pagerduty.routingKeySecret.name: name the Secret"),
    # what the sidecar itself refuses at start, across keys the pod is built around
    ({"config": {"server": {"admin_port": 8000}}}, "config.server.traffic_port and config.server.admin_port are both 8000"),
    ({"config": {"auth": {"protect": ["metrics"]}}}, "config.auth.protect: must include writes"),
    ({"auth": {"enabled": False}, "config": {"auth": {"token_file": "/t", "protect": ["writes", "metrics"]}}},
     "config.auth.protect: metrics with auth.enabled=false"),
    ({"config": {"server": {"host": "127.0.0.1"}}}, "config.server.host: 127.0.0.1 is the loopback interface"),
    ({"config": {"drift": {"numeric_method": "ks", "effect_threshold": 0.25}}},
     "config.drift.effect_threshold: is a rule of the auto verdict"),
    ({"config": {"server": {"host": "::1"}}}, "config.server.host: ::1 is the loopback interface"),
    ({"service": {"port": 9400}}, "service.port and service.adminPort are both 9400"),
    # the rules and dashboards the chart ships select one job
    ({"monitoring": {"job": "churn"}}, 'monitoring.job: "churn" is not the job the rules and dashboards'),
    # Helm merges given maps into the defaults: a larger request keeps the default limit
    ({"sidecar": {"resources": {"requests": {"cpu": "2"}}}},
     "sidecar.resources: requests.cpu (2) is above limits.cpu (1), which Kubernetes refuses"),
    ({"sidecar": {"resources": {"requests": {"memory": "0.5Gi"}}}},
     "sidecar.resources: requests.memory (0.5Gi) is above limits.memory (256Mi)"),
    ({"model": {"resources": {"requests": {"cpu": "1500m"}, "limits": {"cpu": 1}}}},
     "model.resources: requests.cpu (1500m) is above limits.cpu (1)"),
    # labels the selectors and Helm depend on
    ({"podLabels": {"app.kubernetes.io/name": "churn"}}, "podLabels.app.kubernetes.io/name: the chart sets this label"),
    ({"commonLabels": {"app.kubernetes.io/instance": "x"}}, "commonLabels.app.kubernetes.io/instance: the chart sets"),
    ({"service": {"labels": {"app.kubernetes.io/managed-by": "argocd"}}}, "service.labels.app.kubernetes.io/managed-by"),
    # environment variables over what the chart decides (the flags: the next test)
    ({"sidecar": {"env": [{"name": "MODELMON_SERVER__SHUTDOWN_GRACE_SECONDS", "value": "60"}]}},
     "sidecar.env: MODELMON_SERVER__SHUTDOWN_GRACE_SECONDS overrides server.shutdown_grace_seconds"),
    ({"sidecar": {"env": [{"name": "MODELMON_server", "value": "{admin_port: 9500}"}]}},
     "sidecar.env: MODELMON_server overrides server."),
    ({"sidecar": {"env": [{"name": "MODELMON_AUTH__PROTECT", "value": "[writes, health]"}]}},
     "sidecar.env: MODELMON_AUTH__PROTECT overrides auth.protect"),
    ({"sidecar": {"env": [{"name": "MODELMON_UPSTREAM__URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}},
     "sidecar.env: MODELMON_UPSTREAM__URL overrides upstream.url"),
    ({"sidecar": {"env": [{"name": "MODELMON_CONFIG", "value": "/x.yaml"}]}}, "sidecar.env: MODELMON_CONFIG"),
    ({"config": {"resources": {"process_name": "model_server"}}}, "config.resources.process_name or pid_file: the sidecar"),
    ({"mode": "attach", "attach": {"name": "churn", "selector": {"app": "churn"}},
      "config": {"resources": {"pid_file": "/run/model/pid"}}}, "set shareProcessNamespace=true"),
    ({"profiles": {"churn.json": "{}"}, "existingProfilesConfigMap": "mine"},
     "profiles and existingProfilesConfigMap: give the reference profiles one way"),
    ({"config": {"server": {"shutdown_grace_seconds": 1e20}}}, "config.server.shutdown_grace_seconds: longer than"),
])
def test_settings_across_keys_are_refused_with_what_to_do(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError) as info:
        render(values)
    assert message in str(info.value)


def _serve_options() -> list[argparse.Action]:
    from modelmon.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in subparsers.choices["serve"]._actions if a.option_strings]


@pytest.mark.parametrize("option", [o for a in _serve_options() for o in a.option_strings
                                    if o not in ("-h", "--help", "--log-level")])
def test_extra_args_cannot_override_what_the_chart_passes(option: str) -> None:
    """Every flag of `modelmon serve` but --log-level sets something the chart builds the pod
    around (the ports the probes and Service use, the upstream, the token, the configuration
    file, the models): in sidecar.extraArgs it is refused, spelt out, as --flag=value, or
    abbreviated as argparse takes it."""
    action = next(a for a in _serve_options() if option in a.option_strings)
    takes_value = action.nargs != 0
    forms = [[option, "9500"] if takes_value else [option]]
    if option.startswith("--"):
        forms += [[f"{option}=9500"] if takes_value else [], [option[:6]] + (["9500"] if takes_value else [])]
    else:
        forms += [[f"{option}9500"]]
    for args in [f for f in forms if f]:
        with pytest.raises(helm_python.HelmRenderError, match=r"sidecar\.extraArgs: "):
            render({"sidecar": {"extraArgs": args}})


def test_labels_from_several_values_are_written_once() -> None:
    """A label given by the chart and by values, or by two values (commonLabels under
    monitoring.labels under serviceMonitor.labels), is one key: manifests() reads them
    strictly, as kustomize and Flux do; the more specific value wins."""
    docs = manifests(render({
        "commonLabels": {"app.kubernetes.io/part-of": "ml-platform", "team": "ml"},
        "serviceMonitor": {"labels": {"release": "prom-b"}},
        "service": {"labels": {"app.kubernetes.io/version": "2.3.1"}},
        "dashboards": {"labels": {"grafana_dashboard": "1", "team": "dash"}},
        "podLabels": {"app.kubernetes.io/instance": "churn", "tier": "model"},
        "monitoring": {"labels": {"release": "kube-prometheus-stack", "team": "obs"}, "scrapeAnnotations": True},
        "podAnnotations": {"prometheus.io/path": "/metrics", "checksum/modelmon-config": "x", "team": "ml"},
    }))
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/modelmon-config"] != "x" and annotations["team"] == "ml"
    monitor = one(docs, "ServiceMonitor")["metadata"]["labels"]
    assert (monitor["release"], monitor["team"], monitor["app.kubernetes.io/part-of"]) == ("prom-b", "obs", "ml-platform")
    assert one(docs, "PrometheusRule")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert one(docs, "Service")["metadata"]["labels"]["app.kubernetes.io/version"] == "2.3.1"
    assert {d["metadata"]["labels"]["team"] for d in docs if d["kind"] == "ConfigMap"
            and d["metadata"]["name"].endswith("-dashboard")} == {"dash"}
    pod = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod == {"app.kubernetes.io/name": "modelmon", "app.kubernetes.io/instance": "churn", "tier": "model"}


def test_what_the_chart_does_not_decide_passes_through() -> None:
    spec = pod_spec(manifests(render({
        "sidecar": {"extraArgs": ["--log-level", "debug"],
                    "env": [{"name": "MODELMON_SERVER__LOG_LEVEL", "value": "debug"}, {"name": "TZ", "value": "UTC"}]},
        "config": {"server": {"host": "::"}},
        "monitoring": {"job": "churn"}, "prometheusRule": {"enabled": False}, "dashboards": {"enabled": False},
        "commonLabels": {"app.kubernetes.io/part-of": "ml-platform", "app.kubernetes.io/name": "modelmon"},
    })))
    sidecar = sidecar_of(spec)
    assert sidecar["args"][-2:] == ["--log-level", "debug"]
    assert {"name": "TZ", "value": "UTC"} in sidecar["env"]


# --- the pod ----------------------------------------------------------------------------------------

def test_native_sidecar_starts_first_and_stops_last() -> None:
    spec = pod_spec(manifests(_rendered(None)))
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == "modelmon" and sidecar["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["model"]
    assert "lifecycle" not in sidecar  # SIGTERM reaches it after the model has exited
    assert spec["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert sidecar["startupProbe"]["httpGet"] == {"path": "/healthz", "port": 9400}


def test_classic_sidecar_is_a_second_container_with_the_same_drain() -> None:
    spec = pod_spec(manifests(_rendered("classic-sidecar-values.yaml")))
    assert "initContainers" not in spec
    assert [c["name"] for c in spec["containers"]] == ["model", "modelmon"]
    sidecar = spec["containers"][1]
    assert "restartPolicy" not in sidecar
    assert sidecar["lifecycle"] == spec["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 10}}}
    assert spec["shareProcessNamespace"] is True


@pytest.mark.parametrize(("values", "grace", "drain"), [
    ({}, 5 + 20 + 10, "20"),  # the sidecar's default shutdown_grace_seconds, from its config types
    ({"config": {"server": {"shutdown_grace_seconds": 7.5}}, "termination": {"preStopSeconds": 0}}, 0 + 8 + 10, "7.5"),
    ({"config": {"server": {"shutdown_grace_seconds": 45}}, "termination": {"gracePeriodSeconds": 70}}, 70, "45"),
])
def test_the_grace_period_covers_prestop_and_the_sidecars_drain(values: dict[str, Any], grace: int, drain: str) -> None:
    spec = pod_spec(manifests(render(values)))
    assert spec["terminationGracePeriodSeconds"] == grace
    sidecar = sidecar_of(spec)
    assert {"name": "MODELMON_SERVER__SHUTDOWN_GRACE_SECONDS", "value": drain} in sidecar["env"]
    defaults = json.loads((CHART / "files" / "sidecar-defaults.json").read_text())
    assert defaults["server"]["shutdown_grace_seconds"] == 20.0


@pytest.mark.parametrize("name", [None, *SCENARIOS])
def test_probes_ports_and_service_follow_the_sidecars_configuration(name: str | None) -> None:
    values = scenario(name)
    server = values.get("config", {}).get("server", {})
    admin, traffic = server.get("admin_port", 9400), server.get("traffic_port", 8000)
    rendered = _rendered(name)
    docs = manifests(rendered)
    args = sidecar_args(name)
    assert args[args.index("--admin-port") + 1] == str(admin)
    assert args[args.index("--traffic-port") + 1] == str(traffic)
    patch = notes_patch(rendered)["spec"] if values.get("mode") == "attach" else None
    spec = pod_spec(docs) if patch is None else (patch.get("predictor") or patch["template"]["spec"])
    sidecar = sidecar_of(spec)
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": admin}  # never the model
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": admin}
    assert {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {"modelmon-http": traffic, "modelmon-admin": admin}
    service = one(docs, "Service")
    ports = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert ports["modelmon-admin"] == admin
    if values.get("attach", {}).get("kind") == "InferenceService":
        assert "http" not in ports  # KServe's own Service sends the traffic to transformer-container
        assert spec["containers"][0]["name"] == "transformer-container"
        assert spec["containers"][0]["ports"][0]["containerPort"] == traffic  # KServe targets the first port
    elif values.get("service", {}).get("bypassSidecar"):
        assert ports["http"] == values.get("model", {}).get("port", 8080)
    else:
        assert ports["http"] == traffic


@pytest.mark.parametrize("name", [None, *SCENARIOS])
def test_hardened_defaults(name: str | None) -> None:
    rendered = _rendered(name)
    docs = manifests(rendered)
    if scenario(name).get("mode") == "attach":
        patch = notes_patch(rendered)["spec"]
        spec, pod_context = (patch.get("predictor") or patch["template"]["spec"]), {}
    else:
        spec = pod_spec(docs)
        pod_context = spec["securityContext"]
        assert spec["automountServiceAccountToken"] is False
        assert pod_context["runAsNonRoot"] is True and pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, container["name"]
        assert context.get("seccompProfile", pod_context.get("seccompProfile")) == {"type": "RuntimeDefault"}
    sidecar = sidecar_of(spec)
    assert set(sidecar["resources"]["requests"]) == set(sidecar["resources"]["limits"]) == {"cpu", "memory"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)[-1]
    assert (str(sidecar["securityContext"]["runAsUser"]), str(sidecar["securityContext"]["runAsGroup"])) == user


def test_the_sidecars_resources_cite_measured_figures() -> None:
    """Every figure values.yaml gives for the sidecar's requests and limits is one README's
    Performance section measured."""
    text = (CHART / "values.yaml").read_text()
    comment = text[text.index("# -- Resource requests and limits, sized"):text.index("  resources:\n    requests:\n      cpu: 200m")]
    readme = (ROOT / "README.md").read_text()
    performance = readme[readme.index("## Performance"):readme.index("## Development")]
    figures = re.findall(r"\d[\d,.]*(?:\u2013\d[\d,.]*)?(?= (?:MB|CPU-s|requests/s))", comment)  # \u2013: en dash
    assert len(figures) >= 6, figures
    assert [f for f in figures if f not in performance] == [], figures
    assert "measured" in comment


def test_the_service_goes_through_the_sidecar_and_the_networkpolicy_keeps_the_admin_port_for_prometheus() -> None:
    policy = one(manifests(_rendered(None)), "NetworkPolicy")
    traffic, admin = policy["spec"]["ingress"]
    assert traffic == {"ports": [{"port": 8000, "protocol": "TCP"}]}  # the model only through the sidecar
    assert admin == {"ports": [{"port": 9400, "protocol": "TCP"}], "from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}
    bypassed = one(manifests(_rendered("podmonitor-values.yaml")), "NetworkPolicy")["spec"]["ingress"]
    assert {"port": 8080, "protocol": "TCP"} in bypassed[0]["ports"]
    assert bypassed[1]["from"][1] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "label-pushers"}}}


def test_selectors_select_the_pods() -> None:
    docs = manifests(_rendered(None))
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for doc, selector in [(one(docs, "Service"), lambda d: d["spec"]["selector"]),
                          (one(docs, "NetworkPolicy"), lambda d: d["spec"]["podSelector"]["matchLabels"]),
                          (one(docs, "PodDisruptionBudget"), lambda d: d["spec"]["selector"]["matchLabels"])]:
        assert selector(doc).items() <= labels.items(), doc["kind"]
    monitor = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= one(docs, "Service")["metadata"]["labels"].items()


def test_the_push_api_token_comes_from_a_secret() -> None:
    docs = manifests(_rendered(None))
    secret = one(docs, "Secret")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert re.fullmatch(r"[A-Za-z0-9]{48}", token)  # one line the sidecar's token reader takes
    spec = pod_spec(docs)
    sidecar = sidecar_of(spec)
    assert sidecar["args"][sidecar["args"].index("--auth-token-file") + 1] == TOKEN_PATH
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "modelmon-token")
    assert mount == {"name": "modelmon-token", "mountPath": "/var/run/secrets/modelmon", "readOnly": True}  # no subPath: rotation reaches it
    volume = next(v for v in spec["volumes"] if v["name"] == "modelmon-token")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "token", "path": "token"}]
    # a Secret of one's own, and no token at all (an explicit choice)
    own = pod_spec(manifests(_rendered("existing-configmap-values.yaml")))
    assert not [d for d in manifests(_rendered("existing-configmap-values.yaml")) if d["kind"] == "Secret"]
    volume = next(v for v in own["volumes"] if v["name"] == "modelmon-token")
    assert volume["secret"]["secretName"] == "churn-push-token" and volume["secret"]["items"][0]["key"] == "bearer"
    off = manifests(render({"auth": {"enabled": False}}))
    assert not [d for d in off if d["kind"] == "Secret"]
    assert "--auth-token-file" not in sidecar_of(pod_spec(off))["args"]


def test_an_existing_configmap_replaces_the_rendered_configuration() -> None:
    docs = manifests(_rendered("existing-configmap-values.yaml"))
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config")]
    spec = pod_spec(docs)
    sidecar = sidecar_of(spec)
    assert sidecar["args"][:2] == ["--config", "/etc/modelmon/config/config.yaml"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["modelmon-config"]["configMap"]["name"] == "churn-modelmon-config"
    assert volumes["modelmon-profiles"]["configMap"]["name"] == "churn-profiles"
    assert spec["terminationGracePeriodSeconds"] == 5 + 10 + 10


def test_profiles_from_values_are_mounted_where_the_configuration_names_them() -> None:
    values = scenario("native-sidecar-values.yaml")
    docs = manifests(_rendered("native-sidecar-values.yaml"))
    profiles = one(docs, "ConfigMap", f"{FULLNAME}-profiles")
    assert profiles["data"] == values["profiles"]
    assert json.loads(profiles["data"]["churn.json"])["format"] == "modelmon.profile"
    sidecar = sidecar_of(pod_spec(docs))
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == "modelmon-profiles")
    assert values["config"]["models"][0]["profile"] == f"{mount['mountPath']}/churn.json"


def test_a_configuration_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(manifests(render(values)), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/modelmon-config"])

    assert checksum({}) != checksum({"config": {"drift": {"window_seconds": 600}}})
    assert checksum({}) != checksum({"profiles": {"a.json": "{}"}})
    assert checksum({}) == checksum({"replicaCount": 3})


def test_the_default_model_is_the_demo_server_in_the_sidecars_image() -> None:
    """The defaults run as they are: the demo model server shipped in the package (and so in the
    image), answering the readiness path the defaults probe."""
    values = load((CHART / "values.yaml").read_text())
    module = values["model"]["command"][values["model"]["command"].index("-m") + 1]
    source = ROOT / "exporter" / (module.replace(".", "/") + ".py")
    assert source.exists(), f"the default model command names {module}, which is gone"
    text = source.read_text()
    for flag in values["model"]["args"][::2]:
        assert f'"{flag}"' in text, flag
    spec = pod_spec(manifests(_rendered(None)))
    assert f'"{spec["containers"][0]["readinessProbe"]["httpGet"]["path"]}"' in text
    assert spec["containers"][0]["image"] == sidecar_of(spec)["image"]


def test_your_models_probe_and_resources_replace_the_demos() -> None:
    """The demo's readiness probe and resources are not defaults Helm would merge a model's own
    into (a tcpSocket probe beside the demo's httpGet, a 2Gi request under the demo's 256Mi
    limit: both refused by the API server); `{}` means none, as documented."""
    demo = pod_spec(manifests(_rendered(None)))["containers"][0]
    assert demo["readinessProbe"] == {"httpGet": {"path": "/v2/health/ready", "port": "model"}, "periodSeconds": 5}
    assert demo["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
    image = {"repository": "registry.example.com/churn-model", "tag": "2.3.1"}
    docs = manifests(render({"model": {"image": image, "readinessProbe": {"tcpSocket": {"port": "model"}},
                                       "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}}))
    model = pod_spec(docs)["containers"][0]
    assert model["readinessProbe"] == {"tcpSocket": {"port": "model"}}
    assert model["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}
    assert [p for doc in docs for p in validate(doc) + api_server_problems(doc)] == []
    none = pod_spec(manifests(render({"model": {"image": image}})))["containers"][0]
    assert "readinessProbe" not in none and "resources" not in none
    # and the demo's, replaced rather than merged
    own = pod_spec(manifests(render({"model": {"readinessProbe": {"exec": {"command": ["true"]}}}})))["containers"][0]
    assert own["readinessProbe"] == {"exec": {"command": ["true"]}}


# The shortest forms Go writes these in (1e-05, 5e-05, 1e+21) have no decimal point: YAML 1.1,
# which the sidecar reads, takes them as strings.
EXPONENT_FLOATS = {"drift": {"numeric_threshold": 1e-05, "categorical_threshold": 5e-05},
                   "upstream": {"probe_timeout_seconds": 2.5e-06}, "labels": {"ttl_seconds": 1e21},
                   "server": {"shutdown_grace_seconds": 5e-05}}


def test_numbers_reach_the_sidecar_as_numbers(tmp_path: Path) -> None:
    """Floats of the configuration, in the ConfigMap and in the drain's environment variable,
    are read back by the sidecar (check-config's loader, and its reader of MODELMON_*
    variables) as the same numbers; integers Helm holds as floats print as integers."""
    config = copy.deepcopy(EXPONENT_FLOATS)
    config["ingest"] = {"max_records": 10000000}  # a float to Helm, whole: an integer again
    docs = manifests(render({"config": config, "replicaCount": 1000000,
                             "podDisruptionBudget": {"maxUnavailable": 2000000}}))
    path = tmp_path / "modelmon.yaml"
    path.write_text(one(docs, "ConfigMap", f"{FULLNAME}-config")["data"]["modelmon.yaml"])
    assert load(path.read_text())["ingest"]["max_records"] == 10000000
    assert isinstance(load(path.read_text())["ingest"]["max_records"], int)
    loaded = msgspec.to_builtins(load_config(path))
    for section, keys in EXPONENT_FLOATS.items():
        for key, value in keys.items():
            assert loaded[section][key] == value, (section, key)
    env = {e["name"]: e["value"] for e in sidecar_of(pod_spec(docs))["env"]}
    from_env = load_config(None, env=env)
    assert from_env.server.shutdown_grace_seconds == 5e-05
    whole = sidecar_of(pod_spec(manifests(render({"config": {"server": {"shutdown_grace_seconds": 1000000}}}))))
    assert {"name": "MODELMON_SERVER__SHUTDOWN_GRACE_SECONDS", "value": "1000000"} in whole["env"]
    assert one(docs, "Deployment")["spec"]["replicas"] == 1000000
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 2000000
    assert [p for doc in docs for p in validate(doc)] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_sidecar_starts_from_what_the_chart_renders_and_answers_its_probes(tmp_path: Path) -> None:
    """`modelmon serve` run as the pod runs it: the rendered ConfigMap and token Secret at the
    mounted paths (under tmp_path), the container's args and env; the startup, liveness and
    readiness probes answer 200 on the port and path they name (receive-only: no model needed),
    and /metrics needs the token the PodMonitor sends."""
    admin, traffic = _free_port(), _free_port()
    config = copy.deepcopy(EXPONENT_FLOATS)
    config["server"] |= {"admin_port": admin, "traffic_port": traffic}
    config["upstream"] |= {"url": None}
    config["auth"] = {"protect": ["writes", "metrics"]}
    values = {"config": config, "serviceMonitor": {"enabled": False}, "podMonitor": {"enabled": True}}
    docs = manifests(render(values))
    sidecar = sidecar_of(pod_spec(docs))
    root = str(tmp_path)
    files = {"/etc/modelmon/config/modelmon.yaml": one(docs, "ConfigMap", f"{FULLNAME}-config")["data"]["modelmon.yaml"],
             TOKEN_PATH: base64.b64decode(one(docs, "Secret")["data"]["token"]).decode()}
    for path, text in files.items():
        (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path.lstrip("/")).write_text(text.replace(TOKEN_PATH, root + TOKEN_PATH))
    args = [a.replace("/etc/modelmon", root + "/etc/modelmon").replace(TOKEN_PATH, root + TOKEN_PATH)
            for a in sidecar["args"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    env |= {e["name"]: e["value"] for e in sidecar["env"]}
    process = subprocess.Popen([sys.executable, "-m", "modelmon", "serve", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def status(port: int, path: str, token: str | None = None) -> int | None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    try:
        startup = sidecar["startupProbe"]
        for _ in range(startup["failureThreshold"] * startup["periodSeconds"] * 10):
            if status(startup["httpGet"]["port"], startup["httpGet"]["path"]) == 200:
                break
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            time.sleep(0.1)
        else:
            pytest.fail("the startup probe never passed")
        for probe in ("livenessProbe", "readinessProbe"):
            assert status(sidecar[probe]["httpGet"]["port"], sidecar[probe]["httpGet"]["path"]) == 200, probe
        assert status(admin, "/metrics") == 401
        assert status(admin, "/metrics", files[TOKEN_PATH]) == 200
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_names_and_keys_stay_strings() -> None:
    """Values YAML 1.1 would read as something else when written bare (yes, on, null, 1234,
    0) reach the manifests as the strings they are."""
    values = {"auth": {"secretKey": "yes"}, "profiles": {"on": "{}", "1.0": "{}"}, "model": {"name": "null"},
              "fullnameOverride": "1234", "networkPolicy": {"monitoringNamespace": "123"},
              "serviceMonitor": {"interval": "0"}, "priorityClassName": "true",
              "serviceAccount": {"name": "0x10"}}
    out = _chart().render(values, name="2024", namespace="1e3")
    docs = manifests({k: v for k, v in out.items() if not k.endswith("NOTES.txt") and v.strip()})
    assert [p for doc in docs for p in validate(doc) + api_server_problems(doc)] == []
    assert list(one(docs, "Secret")["data"]) == ["yes"]
    assert sorted(one(docs, "ConfigMap", "1234-profiles")["data"]) == ["1.0", "on"]
    spec = pod_spec(docs)
    assert spec["containers"][0]["name"] == "null" and spec["priorityClassName"] == "true"
    assert spec["serviceAccountName"] == "0x10"
    assert one(docs, "Deployment")["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "2024"
    admin = one(docs, "NetworkPolicy")["spec"]["ingress"][1]["from"][0]
    assert admin["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "123"
    monitor = one(docs, "ServiceMonitor")["spec"]
    assert monitor["namespaceSelector"]["matchNames"] == ["1e3"] and monitor["endpoints"][0]["interval"] == "0"


# --- mode attach: the patches for a Deployment and an InferenceService ------------------------------

def _merge_deployment(deployment: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """kubectl's strategic merge of this patch: maps merged, containers and volumes merged by
    name (the fixture has none of the patch's names, so they are added)."""
    out = copy.deepcopy(deployment)
    template, spec = out["spec"]["template"], patch["spec"]["template"]
    template["metadata"].setdefault("annotations", {}).update(spec["metadata"]["annotations"])
    for key, value in spec["spec"].items():
        if key in ("initContainers", "containers", "volumes"):
            names = {item["name"] for item in template["spec"].get(key, [])}
            assert not names & {item["name"] for item in value}
            template["spec"][key] = template["spec"].get(key, []) + value
        else:
            template["spec"][key] = value
    return out


def test_attach_to_a_deployment() -> None:
    rendered = _rendered("attach-deployment-values.yaml")
    docs = manifests(rendered)
    assert not [d for d in docs if d["kind"] in ("Deployment", "ServiceAccount")]
    patched = _merge_deployment(load((FIXTURES / "deployment.yaml").read_text()), notes_patch(rendered))
    assert validate(patched) == []
    spec = patched["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["modelmon"] and spec["initContainers"][0]["restartPolicy"] == "Always"
    labels = patched["spec"]["template"]["metadata"]["labels"]
    for doc, selector in [(one(docs, "Service"), one(docs, "Service")["spec"]["selector"]),
                          (one(docs, "NetworkPolicy"), one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"])]:
        assert selector == {"app": "churn"} and selector.items() <= labels.items(), doc["kind"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["modelmon-config"]["configMap"]["name"] == one(docs, "ConfigMap", f"{FULLNAME}-config")["metadata"]["name"]
    assert volumes["modelmon-token"]["secret"]["secretName"] == one(docs, "Secret")["metadata"]["name"]
    notes = rendered["templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} patch deployment churn --patch-file modelmon-patch.yaml" in notes
    # every port of the workload but the admin port stays open as it was: its own ports work on
    ingress = one(docs, "NetworkPolicy")["spec"]["ingress"]
    assert ingress[0]["ports"] == [{"port": 1, "endPort": 9399, "protocol": "TCP"},
                                   {"port": 9401, "endPort": 65535, "protocol": "TCP"},
                                   {"port": 1, "endPort": 65535, "protocol": "UDP"}]
    assert "from" not in ingress[0] and ingress[1]["ports"] == [{"port": 9400, "protocol": "TCP"}]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]  # the workload keeps its own


def test_attach_to_a_kserve_inferenceservice() -> None:
    rendered = _rendered("attach-kserve-values.yaml")
    docs = manifests(rendered)
    patch = notes_patch(rendered)
    isvc = load((FIXTURES / "inferenceservice.yaml").read_text())
    predictor = isvc["spec"]["predictor"] | patch["spec"]["predictor"]  # a JSON merge patch; no lists before
    assert "containers" not in isvc["spec"]["predictor"] and "volumes" not in isvc["spec"]["predictor"]
    [sidecar] = predictor["containers"]
    assert sidecar["name"] == "transformer-container"  # where KServe sends the traffic (and mounts the model)
    # the pod KServe builds: its kserve-container from the model spec, then the predictor's containers
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "churn-predictor", "labels": {"serving.kserve.io/inferenceservice": "churn"},
                        "annotations": predictor["annotations"]},
           "spec": {"containers": [{"name": "kserve-container", "image": "kserve/sklearnserver:v0.15.0",
                                    "args": ["--http_port=8080"]}, *predictor["containers"]],
                    "volumes": predictor["volumes"],
                    "terminationGracePeriodSeconds": predictor["terminationGracePeriodSeconds"]}}
    assert validate(pod) == []
    selector = one(docs, "PodMonitor")["spec"]["selector"]["matchLabels"]
    assert selector == {"serving.kserve.io/inferenceservice": "churn"}
    assert one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == selector
    assert sidecar["args"][sidecar["args"].index("--upstream") + 1] == "http://127.0.0.1:8080"
    notes = rendered["templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} patch inferenceservice churn --type merge --patch-file modelmon-patch.yaml" in notes


def test_the_readme_shows_the_patches_the_chart_renders() -> None:
    readme = (ROOT / "helm" / "README.md").read_text()
    for marker, values_file in [("attach-deployment", "attach-deployment-values.yaml"),
                                ("attach-kserve", "attach-kserve-values.yaml")]:
        block = readme.split(f"<!-- {marker}:begin -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
        shown = load(block.strip().removeprefix("```yaml").removesuffix("```"))
        assert shown == notes_patch(_rendered(values_file)), marker


# --- NOTES.txt and the documentation of the values ---------------------------------------------------

@pytest.mark.parametrize("name", [None, *SCENARIOS])
def test_the_notes_say_where_the_metrics_dashboards_and_alerts_are(name: str | None) -> None:
    values = scenario(name)
    notes = _rendered(name)["templates/NOTES.txt"]
    for heading in ("METRICS", "DASHBOARDS", "ALERTS"):
        assert f"\n{heading}\n" in notes
    assert "/metrics" in notes and "port-forward" in notes
    if values.get("podMonitor", {}).get("enabled"):
        assert f"PodMonitor {FULLNAME}" in notes
    elif values.get("serviceMonitor", {}).get("enabled", True):
        assert f"ServiceMonitor {FULLNAME} (port modelmon-admin) as job=\"modelmon\"" in notes
    else:
        assert "prometheus.io/scrape" in notes
    if values.get("dashboards", {}).get("enabled", True):
        assert "grafana_dashboard=1" in notes and f"{FULLNAME}-fleet-dashboard" in notes
    else:
        assert "import grafana/*.json" in notes
    if values.get("prometheusRule", {}).get("enabled", True):
        counts = [sum(len(g["rules"]) for g in load((ROOT / "alertmanager" / f).read_text())["groups"])
                  for f in ("modelmon.rules.yml", "modelmon.alerts.yml")]
        assert f"PrometheusRule {FULLNAME}: {counts[0]} recording rules and {counts[1]} alerts" in notes
    if values.get("alertmanagerConfig", {}).get("enabled"):
        assert "routes critical alerts to PagerDuty" in notes
    # the command that reads /metrics sends the token when /metrics needs it
    [curl] = [line for line in notes.splitlines() if "/metrics" in line and "curl" in line]
    protected = "metrics" in values.get("config", {}).get("auth", {}).get("protect", [])
    assert ('-H "Authorization: Bearer $(kubectl' in curl) == protected, curl


def test_the_notes_name_the_objects_the_chart_creates() -> None:
    """With a name long enough to be shortened, the NOTES name what exists."""
    rendered = render({"fullnameOverride": "churn-model-monitoring-for-the-retention-team-eu-west"})
    names = {d["metadata"]["name"] for d in manifests(rendered)}
    notes = rendered["templates/NOTES.txt"]
    dashboards = {n for n in names if n.endswith("-dashboard")}
    assert len(dashboards) == 3 and all(n in notes for n in dashboards), (dashboards, notes)
    assert all(n in names for n in re.findall(r"(?:ServiceMonitor|PrometheusRule|secret) ([a-z0-9.-]*[a-z0-9])", notes))


def test_the_notes_read_a_token_whose_key_has_a_dot() -> None:
    notes = render({"auth": {"secretKey": "push.token"}})["templates/NOTES.txt"]
    assert f"get secret {FULLNAME}-token -o jsonpath='{{.data.push\\.token}}' | base64 -d" in notes


def test_values_yaml_documents_every_key_and_the_readme_lists_them() -> None:
    gen = generator()
    text = (CHART / "values.yaml").read_text()
    docs = dict(gen.documented_keys(text))
    assert gen.check_documented(load(text), docs) == []
    table = (ROOT / "helm" / "README.md").read_text().split("<!-- values:begin -->")[1].split("<!-- values:end -->")[0]
    assert [p for p in docs if f"| `{p}` |" not in table] == []
    # the check finds an undocumented key
    assert gen.check_documented(load(text) | {"extra": 1}, docs) == ["values.yaml: extra has no '# --' comment"]


def _yaml_blocks(text: str) -> list[Any]:
    return [load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


def test_the_readmes_examples_render_valid_manifests() -> None:
    """helm/README.md's install example (with a profile, as --set-file gives it) renders valid
    manifests, and its attach examples are the ci scenarios the tests render."""
    readme = (ROOT / "helm" / "README.md").read_text()
    install = _yaml_blocks(readme[readme.index("## Install"):readme.index("What the pod looks like")])[0]
    profile = one(manifests(_rendered("native-sidecar-values.yaml")), "ConfigMap", f"{FULLNAME}-profiles")
    docs = manifests(render(install | {"profiles": {"churn.json": profile["data"]["churn.json"]}}))
    assert [p for doc in docs for p in validate(doc)] == []
    assert sidecar_of(pod_spec(docs))["args"][:2] == ["--config", "/etc/modelmon/config/modelmon.yaml"]
    for section, name in [("## Add the sidecar to a Deployment you run", "attach-deployment-values.yaml"),
                          ("## Add the sidecar to a KServe InferenceService", "attach-kserve-values.yaml")]:
        shown = _yaml_blocks(readme[readme.index(section):])[0]
        assert shown == scenario(name), name


def test_receive_only_sidecar_leaves_the_traffic_to_the_model() -> None:
    """`config.upstream.url: null`: the sidecar only takes pushed records; the Service and the
    NetworkPolicy send the traffic to the model itself."""
    docs = manifests(render({"config": {"upstream": {"url": None}}}))
    sidecar = sidecar_of(pod_spec(docs))
    assert "--no-upstream" in sidecar["args"] and "--upstream" not in sidecar["args"]
    assert [p["name"] for p in sidecar["ports"]] == ["modelmon-admin"]
    assert {p["name"]: p["targetPort"] for p in one(docs, "Service")["spec"]["ports"]}["http"] == 8080
    assert one(docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    configmap = one(docs, "ConfigMap", f"{FULLNAME}-config")
    assert load(configmap["data"]["modelmon.yaml"])["upstream"] == {"url": None}
