"""The mixin's configuration: every threshold, ``for``, window, selector, severity, link and SLO
in one typed block -- what a jsonnet monitoring mixin keeps in ``_config``.

Frozen msgspec structs, read by the sidecar's own loader (:func:`modelmon.config.build`: unknown
keys and wrong types are errors naming the key); each field's meaning is given with its default
(:func:`doc`), and ``example_yaml()`` writes every key with its default and its meaning
(``alertmanager/mixin.example.yaml``).
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import yaml

from ..config import ConfigError, build, merge, read_config_file
from ..metrics import catalogue as cat

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[str, ...] = typing.get_args(Severity)
# What Prometheus and Alertmanager parse (prometheus/common model.ParseDuration): "0", or units
# from the largest to the smallest, each at most once ("1h30m"; not "30m1h" or "1h1h").
_DURATION_RE = re.compile(r"^(?:0|(?=[0-9])(?:[0-9]+y)?(?:[0-9]+w)?(?:[0-9]+d)?(?:[0-9]+h)?(?:[0-9]+m)?"
                          r"(?:[0-9]+s)?(?:[0-9]+ms)?)$")
_DURATION_PART = re.compile(r"([0-9]+)(y|w|d|h|ms|m|s)")
# Durations that may be 0 where Prometheus and Alertmanager accept it: an alert's `for` (fires at
# the first evaluation) and a route's group_wait (the first notification at once; the generator's
# own heartbeat route has 0s). Alertmanager refuses a zero group_interval or repeat_interval, and
# a range vector (every window) must be longer than zero.
_MAY_BE_ZERO = ("for", "for_critical", "for_warning", "group_wait")
_UNIT_SECONDS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHER_RE = re.compile(rf'\s*({_LABEL_NAME})\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_LABEL_NAME_RE = re.compile(rf"^{_LABEL_NAME}$")


_PENDING_DOCS: list[str] = []


def doc(default: Any, text: str) -> Any:
    """A field's default, its meaning noted for :func:`documented` (the class decorator that
    follows the class body, in field order): the example YAML is written from them."""
    if isinstance(default, list | dict):
        raise TypeError("use a tuple or a struct default")
    _PENDING_DOCS.append(text)
    if isinstance(default, msgspec.Struct):
        return msgspec.field(default_factory=lambda: default)
    return default


C = TypeVar("C", bound=type)


def documented(cls: C) -> C:
    """Attach the texts given with each field's default (:func:`doc`) to the struct."""
    names = [f.name for f in msgspec.structs.fields(cls)]
    if len(_PENDING_DOCS) != len(names):
        raise TypeError(f"{cls.__name__}: every field needs doc(default, text)")
    cls.__field_docs__ = dict(zip(names, _PENDING_DOCS, strict=True))  # type: ignore[attr-defined]
    _PENDING_DOCS.clear()
    return cls


def field_doc(struct: type, name: str) -> str:
    """The meaning of one field of a mixin configuration struct."""
    return str(getattr(struct, "__field_docs__", {}).get(name, ""))


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A section of the mixin configuration: immutable, and a key it does not know is an error."""


def seconds(duration: str) -> float:
    """A Prometheus duration (``1h30m``, ``7d``) in seconds."""
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(duration))


def parse_matchers(text: str) -> list[tuple[str, str, str]]:
    """``job="a", namespace=~"b.*"`` -> ``[("job", "=", "a"), ...]``; ConfigError if malformed."""
    out: list[tuple[str, str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _MATCHER_RE.match(text, pos)
        if m is None:
            raise ValueError(f"not a label matcher list at {text[pos:]!r}")
        out.append((m.group(1), m.group(2), m.group(3)))
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"expected ',' at {text[pos:]!r}")
            pos += 1
    return out


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


@documented
class AlertSettings(_Section, frozen=True, forbid_unknown_fields=True,
                    rename={"for_": "for"}):
    """When one alert fires: its severity and how long its condition must hold."""

    severity: Severity = doc("warning", "critical (pages), warning (chat/webhook) or info (low urgency)")
    for_: str = doc("15m", "how long the condition must hold before the alert fires")


def _alert(severity: Severity, for_: str) -> Any:
    return doc(AlertSettings(severity, for_), "severity and for")


@documented
class Availability(_Section, frozen=True, forbid_unknown_fields=True):
    target_down: AlertSettings = _alert("warning", "5m")
    target_absent: AlertSettings = _alert("critical", "10m")
    metrics_absent: AlertSettings = _alert("warning", "10m")
    upstream_down: AlertSettings = _alert("critical", "2m")
    dependency_down: AlertSettings = _alert("warning", "5m")
    model_down: AlertSettings = _alert("critical", "5m")
    model_info_lookback: str = doc(
        "1d", "how far back a target's models are read (last_over_time): to name them on "
              "target-down and upstream-down alerts for this long into an outage, and the models "
              "ModelmonModelDown watches (one gone for longer is forgotten)")


@documented
class Traffic(_Section, frozen=True, forbid_unknown_fields=True):
    rate_window: str = doc("5m", "window of the request-rate, error-ratio and latency-quantile rules")
    route_matcher: str = doc('route!="other"', "which requests the request rate and error ratio count "
                                               "(empty: all; default: the inference routes, as the "
                                               "latency SLO: a probe or scan of unknown paths is no "
                                               "model error)")
    quantiles: tuple[float, ...] = doc((0.5, 0.9, 0.99), "latency quantiles recorded per model")
    error_ratio_warning: float = doc(0.05, "5xx share of requests above which ModelmonHighErrorRatio warns")
    error_ratio_critical: float = doc(0.2, "5xx share above which ModelmonHighErrorRatio pages")
    min_request_rate: float = doc(0.05, "requests/s a model needs before its error ratio can alert")
    high_error_ratio_warning: AlertSettings = _alert("warning", "10m")
    high_error_ratio_critical: AlertSettings = _alert("critical", "5m")


@documented
class BurnWindow(_Section, frozen=True, forbid_unknown_fields=True):
    """One multi-window burn-rate condition (Google SRE workbook, chapter 5)."""

    long: str = doc("1h", "long window")
    short: str = doc("5m", "short window (1/12 of the long one)")
    factor: float = doc(14.4, "burn-rate factor: the error budget spent this many times too fast")
    severity: Literal["critical", "warning"] = doc("critical", "severity of the alert this window pair fires")


@documented
class LatencySLO(_Section, frozen=True, forbid_unknown_fields=True):
    objective: float = doc(0.99, "share of requests that must be served within threshold_seconds")
    threshold_seconds: float = doc(1.0, "the latency bound; must be a bucket boundary of "
                                        "modelmon_request_duration_seconds")
    route_matcher: str = doc('route!="other"', "which requests count (empty: all; default: the "
                                               "inference routes)")
    burn_windows: tuple[BurnWindow, ...] = doc(
        (BurnWindow("1h", "5m", 14.4, "critical"), BurnWindow("6h", "30m", 6.0, "critical"),
         BurnWindow("1d", "2h", 3.0, "warning"), BurnWindow("3d", "6h", 1.0, "warning")),
        "the window pairs: a severity fires when both its long and short windows burn faster than "
        "factor x (1 - objective)")
    min_request_rate: float = doc(0.05, "requests/s a model needs over both windows of a pair "
                                        "before that pair can alert (one slow cold start of an "
                                        "idle model must not page)")
    for_critical: str = doc("2m", "for of the critical (fast-burn) alert")
    for_warning: str = doc("15m", "for of the warning (slow-burn) alert")


@documented
class Drift(_Section, frozen=True, forbid_unknown_fields=True):
    window: str = doc("1h", "window of the fleet drift rules (counts summed over every replica)")
    feature_drift: AlertSettings = _alert("warning", "15m")
    prediction_drift: AlertSettings = _alert("warning", "15m")
    ks_threshold: float = doc(0.1, "fleet KS statistic (numeric features) above which "
                                   "ModelmonFleetDrift fires")
    tvd_threshold: float = doc(0.1, "fleet total-variation distance (categorical features) above which "
                                    "ModelmonFleetDrift fires")
    min_samples: int = doc(1000, "values a feature needs in the fleet window before ModelmonFleetDrift "
                                 "can fire")
    smoothing: float = doc(0.0001, "added to every category's share (both sides, then renormalised) "
                                   "before the fleet PSI and Jensen-Shannon rules take logarithms")
    fleet_drift: AlertSettings = _alert("warning", "30m")


@documented
class Quality(_Section, frozen=True, forbid_unknown_fields=True):
    missing_margin: float = doc(0.05, "missing ratio above the reference's by this much fires "
                                      "ModelmonFeatureMissingHigh")
    out_of_range_margin: float = doc(0.05, "out-of-range ratio above this (the reference's is 0 by "
                                           "definition) fires ModelmonFeatureOutOfRange")
    unseen_margin: float = doc(0.05, "share of unseen categories above the reference's __other__ share "
                                     "by this much fires ModelmonUnseenCategories")
    unseen_window: str = doc("15m", "rate window of ModelmonUnseenCategories")
    missing_high: AlertSettings = _alert("warning", "15m")
    out_of_range: AlertSettings = _alert("warning", "15m")
    unseen_categories: AlertSettings = _alert("warning", "15m")


@documented
class Performance(_Section, frozen=True, forbid_unknown_fields=True):
    window: str = doc("1h", "window of the fleet performance and fairness rules")
    min_labels: int = doc(100, "labels joined in the window before performance alerts can fire")
    accuracy_min: float = doc(0.8, "fleet accuracy below this fires ModelmonAccuracyLow")
    f1_min: float = doc(0.5, "a class's fleet F1 score below this fires ModelmonClassF1Low")
    min_class_support: int = doc(50, "labels of a class in the window before its F1 can alert")
    mae_factor: float = doc(1.5, "MAE over the window above this many times its baseline fires "
                                 "ModelmonRegressionErrorHigh")
    mae_baseline_window: str = doc("7d", "window of the MAE baseline")
    mae_max: float | None = doc(None, "an absolute MAE bound, in the label's unit (null: none)")
    accuracy_low: AlertSettings = _alert("warning", "30m")
    f1_low: AlertSettings = _alert("warning", "30m")
    regression_error_high: AlertSettings = _alert("warning", "30m")
    labels_lookback: str = doc("1d", "the usual share of predictions that get a label is measured "
                                     "over this window")
    labels_collapse_factor: float = doc(0.1, "ModelmonLabelsNotArriving fires when the share of "
                                             "predictions joined to a label falls below this many "
                                             "times its usual value")
    labels_not_arriving: AlertSettings = _alert("warning", "1h")


@documented
class Fairness(_Section, frozen=True, forbid_unknown_fields=True):
    disparate_impact_min: float = doc(0.8, "lowest / highest positive-prediction rate between the groups "
                                           "of a segment below this fires (the four-fifths rule)")
    accuracy_gap_max: float = doc(0.1, "largest accuracy difference between groups above this fires")
    min_group_predictions: int = doc(100, "predictions a group needs in the window to count")
    min_group_labels: int = doc(100, "labels a group needs in the window to count for accuracy")
    disparate_impact: AlertSettings = _alert("warning", "1h")
    accuracy_gap: AlertSettings = _alert("warning", "1h")


@documented
class Freshness(_Section, frozen=True, forbid_unknown_fields=True):
    model_max_age: str = doc("30d", "a model trained longer ago fires ModelmonModelStale")
    no_predictions_after: str = doc("15m", "no prediction for this long fires ModelmonNoPredictions")
    model_stale: AlertSettings = _alert("info", "1h")
    no_predictions: AlertSettings = _alert("warning", "5m")


@documented
class Resources(_Section, frozen=True, forbid_unknown_fields=True):
    memory_warning: float = doc(0.9, "cgroup memory usage / limit above which ModelmonMemoryNearLimit warns")
    memory_critical: float = doc(0.97, "usage / limit above which it pages")
    memory_near_limit_warning: AlertSettings = _alert("warning", "15m")
    memory_near_limit_critical: AlertSettings = _alert("critical", "5m")
    filling_up_window: str = doc("1h", "trend window of ModelmonMemoryFillingUp")
    filling_up_horizon: str = doc("4h", "ModelmonMemoryFillingUp fires if the trend reaches the limit "
                                        "within this long")
    memory_filling_up: AlertSettings = _alert("warning", "30m")


@documented
class Sidecar(_Section, frozen=True, forbid_unknown_fields=True):
    window: str = doc("10m", "rate window of the dropped-record and payload-error ratios")
    dropped_ratio: float = doc(0.01, "records dropped per record analysed above which "
                                     "ModelmonDroppedRecords fires")
    payload_error_ratio: float = doc(0.05, "payload errors per record analysed above which "
                                           "ModelmonPayloadErrors fires")
    drift_stalled_after: str = doc("5m", "drift statistics older than this fire ModelmonDriftScoringStalled")
    dropped_records: AlertSettings = _alert("warning", "15m")
    payload_errors: AlertSettings = _alert("warning", "15m")
    drift_scoring_stalled: AlertSettings = _alert("warning", "5m")


@documented
class Alertmanager(_Section, frozen=True, forbid_unknown_fields=True):
    pagerduty_url: str = doc("https://events.pagerduty.com/v2/enqueue",
                             "PagerDuty Events API v2 endpoint (point it at a local receiver to test)")
    routing_key_file: str = doc("/etc/alertmanager/secrets/pagerduty-routing-key",
                                "file holding the PagerDuty integration (routing) key")
    page_severities: tuple[Severity, ...] = doc(
        ("critical",), "severities that page through PagerDuty. Changing it changes the route's matchers, "
                       "so the dedup key of every open PagerDuty incident: resolve them first (README)")
    pagerduty_source: str = doc(
        "", "PagerDuty's payload.source, the affected system: a Go template over the notification "
            "(.CommonLabels, ...); empty: the aggregation labels the group's alerts share, then its "
            "model (else its instance), e.g. modelmon/churn")
    warning_webhook_url: str = doc("http://127.0.0.1:9095/modelmon/warning",
                                   "webhook (chat bridge) receiving warning alerts")
    info_webhook_url: str | None = doc(None, "webhook for info alerts (null: they go nowhere)")
    heartbeat_url: str = doc("http://127.0.0.1:9095/modelmon/heartbeat",
                             "dead man's switch endpoint that the Watchdog pings")
    group_wait: str = doc("30s", "first notification of a new group after this long (0s: at once)")
    group_interval: str = doc("5m", "a changed group is notified again after this long")
    repeat_interval: str = doc("4h", "a still-firing group is notified again after this long")
    page_repeat_interval: str = doc("1h", "repeat interval of the PagerDuty route")
    heartbeat_interval: str = doc("1m", "how often the Watchdog's heartbeat is sent")


@documented
class MixinConfig(_Section, frozen=True, forbid_unknown_fields=True):
    selector: str = doc('job="modelmon"',
                        "label matchers added to every selector, so the rules coexist with other "
                        "exporters in one Prometheus")
    aggregation_labels: tuple[str, ...] = doc(
        ("job",), "labels every fleet aggregation keeps (add cluster or namespace when one Prometheus "
                  "sees several); must include every label the selector names")
    runbook_url: str = doc("https://modelmon.example/docs/runbook.md",
                           "where docs/runbook.md is published; each alert links to its section")
    dashboard_url: str = doc("https://grafana.example/d/modelmon-model/modelmon-model",
                             "the per-model dashboard; alerts link to it with var-model set")
    watchdog_severity: Literal["none", "info"] = doc(
        "none", "severity label of the Watchdog (routed by name, not severity)")
    availability: Availability = doc(Availability(), "targets, metrics, model server, dependencies")
    traffic: Traffic = doc(Traffic(), "request rate, errors, latency quantiles")
    latency_slo: LatencySLO = doc(LatencySLO(), "the latency SLO and its burn-rate alerts")
    drift: Drift = doc(Drift(), "in-process verdicts and the fleet drift rules")
    quality: Quality = doc(Quality(), "missing, out-of-range and unseen values")
    performance: Performance = doc(Performance(), "accuracy, F1, MAE once labels arrive")
    fairness: Fairness = doc(Fairness(), "per-segment positive rate and accuracy")
    freshness: Freshness = doc(Freshness(), "model age and last prediction")
    resources: Resources = doc(Resources(), "cgroup memory")
    sidecar: Sidecar = doc(Sidecar(), "the sidecar's own pipeline")
    alertmanager: Alertmanager = doc(Alertmanager(), "routing and receivers")

    def validate(self) -> None:
        _validate(self, "")
        try:
            matchers = parse_matchers(self.selector)
        except ValueError as exc:
            _fail("selector", str(exc))
        if not matchers:
            _fail("selector", "needs at least one matcher (e.g. job=\"modelmon\")")
        for name, _op, _value in matchers:
            if name not in self.aggregation_labels:
                _fail("aggregation_labels", f"must include {name!r}, which the selector names "
                                            "(recorded series keep only these labels)")
        for label in self.aggregation_labels:
            if not _LABEL_NAME_RE.match(label) or label in ("model", "feature", "instance", "le"):
                _fail("aggregation_labels", f"{label!r} is not a target label name")
        slo = self.latency_slo
        _route_matcher("latency_slo.route_matcher", slo.route_matcher, cat.REQUEST_DURATION)
        _route_matcher("traffic.route_matcher", self.traffic.route_matcher, cat.REQUESTS)
        if not 0 < slo.objective < 1:
            _fail("latency_slo.objective", f"must be between 0 and 1, got {slo.objective}")
        for i, w in enumerate(slo.burn_windows):
            if w.factor * (1 - slo.objective) >= 1:
                _fail(f"latency_slo.burn_windows[{i}].factor",
                      f"{w.factor:g} x (1 - objective {slo.objective:g}) = "
                      f"{w.factor * (1 - slo.objective):.4g}: the alert would need more than 100% "
                      "of the requests to be slow and can never fire; lower the factor or raise the "
                      "objective")
            if w.factor <= 0:
                _fail(f"latency_slo.burn_windows[{i}].factor", f"must be above 0, got {w.factor:g}")
        if slo.threshold_seconds not in cat.LATENCY_BUCKETS:
            _fail("latency_slo.threshold_seconds",
                  f"{slo.threshold_seconds} is not a bucket boundary of "
                  f"{cat.REQUEST_DURATION.name} (one of "
                  f"{', '.join(f'{b:g}' for b in cat.LATENCY_BUCKETS)})")
        if not any(w.severity == "critical" for w in slo.burn_windows) or not any(
                w.severity == "warning" for w in slo.burn_windows):
            _fail("latency_slo.burn_windows", "needs at least one critical and one warning window pair")
        for i, w in enumerate(slo.burn_windows):
            if w.severity not in ("critical", "warning"):
                _fail(f"latency_slo.burn_windows[{i}].severity", "must be critical or warning")
            if seconds(w.short) >= seconds(w.long):
                _fail(f"latency_slo.burn_windows[{i}].short", "must be shorter than long")
        windows = {"performance.window": self.performance.window,
                   "performance.mae_baseline_window": self.performance.mae_baseline_window,
                   "performance.labels_lookback": self.performance.labels_lookback}
        if len({seconds(w) for w in windows.values()}) < len(windows):
            _fail("performance", f"{', '.join(windows)} must differ (they name recorded series)")
        if self.resources.memory_warning >= self.resources.memory_critical:
            _fail("resources.memory_warning", "must be below resources.memory_critical")
        if self.traffic.error_ratio_warning >= self.traffic.error_ratio_critical:
            _fail("traffic.error_ratio_warning", "must be below traffic.error_ratio_critical")
        if not self.traffic.quantiles:
            _fail("traffic.quantiles", "needs at least one quantile (e.g. [0.5, 0.9, 0.99])")
        for i, q in enumerate(self.traffic.quantiles):
            if not 0 < q < 1:
                _fail(f"traffic.quantiles[{i}]", f"must be between 0 and 1, got {q}")
            if q in self.traffic.quantiles[:i]:
                _fail(f"traffic.quantiles[{i}]", f"{q:g} is listed twice (it names a recorded series)")
        if not self.alertmanager.page_severities:
            _fail("alertmanager.page_severities", "needs at least one severity (e.g. [critical]): "
                                                  "otherwise nothing pages")
        for i, s in enumerate(self.alertmanager.page_severities):
            if s not in SEVERITIES:
                _fail(f"alertmanager.page_severities[{i}]", f"must be one of {', '.join(SEVERITIES)}")
            if s in self.alertmanager.page_severities[:i]:
                _fail(f"alertmanager.page_severities[{i}]", f"{s} is listed twice")
        if self.drift.smoothing <= 0:
            _fail("drift.smoothing", f"must be above 0 (the fleet PSI and Jensen-Shannon take the "
                                     f"logarithm of smoothed shares; 0 makes them infinite), got "
                                     f"{self.drift.smoothing:g}")
        if self.watchdog_severity not in ("none", "info"):
            _fail("watchdog_severity", "must be none or info")


def _route_matcher(key: str, text: str, spec: cat.MetricSpec) -> None:
    """A matcher list over the labels of ``spec``."""
    if not text:
        return
    try:
        matchers = parse_matchers(text)
    except ValueError as exc:
        _fail(key, str(exc))
    for name, _op, _value in matchers:
        if name not in spec.labels:
            _fail(key, f"{name!r} is not a label of {spec.name} (one of {', '.join(spec.labels)})")


def _validate(node: Any, path: str) -> None:
    """Durations, severities, ratios and counts of every section, by field name and type."""
    for f in msgspec.structs.fields(node):
        value = getattr(node, f.name)
        key = f"{path}.{f.encode_name}" if path else f.encode_name
        if isinstance(value, AlertSettings):
            if value.severity not in SEVERITIES:
                _fail(f"{key}.severity", f"must be one of {', '.join(SEVERITIES)}, got {value.severity!r}")
            _duration(f"{key}.for", value.for_, zero=True)
        elif isinstance(value, msgspec.Struct):
            _validate(value, key)
        elif isinstance(value, tuple) and value and isinstance(value[0], msgspec.Struct):
            for i, item in enumerate(value):
                _validate(item, f"{key}[{i}]")
        elif f.name in ("window", "long", "short") or f.name.endswith(
                ("_window", "_lookback", "_after", "_age", "_horizon", "_interval", "for_critical",
                 "for_warning", "group_wait")):
            _duration(key, value, zero=f.name in _MAY_BE_ZERO)
        elif isinstance(value, float) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                _fail(key, f"must be a finite number >= 0, got {value}")
            if (f.name.endswith(("_min", "_max", "_ratio", "_warning", "_critical", "_margin",
                                 "_threshold")) and f.name != "mae_max" and value > 1):
                _fail(key, f"is a ratio: must be <= 1, got {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0:
            _fail(key, f"must be >= 0, got {value}")


def _duration(key: str, value: str, zero: bool = False) -> None:
    if not isinstance(value, str) or not _DURATION_RE.match(value):
        _fail(key, f"must be a Prometheus duration such as 0s, 5m or 1h30m (units from the largest "
                   f"to the smallest, each once), got {value!r}")
    if not zero and seconds(value) <= 0:
        _fail(key, f"must be longer than 0, got {value!r}")


def load_mixin_config(path: str | Path | None = None, data: dict[str, Any] | None = None) -> MixinConfig:
    """The configuration from a YAML file (or a mapping); defaults for every key not given."""
    if path is not None:
        data = read_config_file(path)
    drift = (data or {}).get("drift")
    if isinstance(drift, dict) and "output_features" in drift:
        raise ConfigError(
            "drift.output_features: removed: ModelmonFeatureDrift and ModelmonPredictionDrift now tell "
            "inputs from outputs by the profile's roles (modelmon_feature_info{role}, exported by "
            "the sidecar); delete the key")
    # over the defaults, so that a partial section (an alert's `for` alone) keeps the rest
    config = build(merge(as_dict(MixinConfig()), data or {}), MixinConfig)
    config.validate()
    return config


def as_dict(node: Any) -> Any:
    """The configuration as plain YAML data, ``for`` spelled as in the file."""
    return msgspec.to_builtins(node)


def example_yaml(config: MixinConfig | None = None) -> str:
    """Every key with its value (the defaults unless ``config`` is given) and its meaning."""
    config = config or MixinConfig()
    lines = [
        "# generated by `modelmon mixin --example-config` from exporter/modelmon/mixin/config.py"
        " - do not edit",
        "# The modelmon mixin's configuration: every key at its default. Copy it, change what you",
        "# need (keys left out keep their defaults) and run",
        "#   modelmon mixin --config mixin.yaml --out DIR",
        "# to write the recording rules, alerts, alertmanager.yml and runbook.md into DIR.",
    ]
    _emit(config, 0, lines)
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _emit(node: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for f in msgspec.structs.fields(node):
        value = getattr(node, f.name)
        name = f.encode_name
        text = field_doc(type(node), f.name)
        if isinstance(value, AlertSettings):
            lines.append(f"{pad}{name}: {{severity: {value.severity}, for: {value.for_}}}")
        elif isinstance(value, msgspec.Struct):
            lines.append(f"{pad}# {text}")
            lines.append(f"{pad}{name}:")
            _emit(value, indent + 2, lines)
        elif isinstance(value, tuple) and value and isinstance(value[0], msgspec.Struct):
            lines.extend(f"{pad}# {part}" for part in _wrap(text, 96 - indent))
            lines.append(f"{pad}{name}:")
            for item in value:
                fields = ", ".join(f"{k.encode_name}: {_scalar(getattr(item, k.name))}"
                                   for k in msgspec.structs.fields(item))
                lines.append(f"{pad}  - {{{fields}}}")
        else:
            entry = f"{pad}{name}: {_scalar(list(value) if isinstance(value, tuple) else value)}"
            comment = _wrap(text, 96 - indent)
            if len(entry) + 3 + len(comment[0]) <= 110 and len(comment) == 1:
                lines.append(f"{entry}  # {comment[0]}")
            else:
                lines.extend(f"{pad}# {part}" for part in comment)
                lines.append(entry)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]
