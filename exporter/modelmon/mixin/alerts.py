"""Alerting rules, with the runbook text of each alert beside its expression.

Every alert has a ``severity`` label, a fixed ``summary``, a templated ``description`` naming the
model (and feature, class, segment) and the value, a ``value`` annotation (the value alone,
formatted for its meaning -- a percentage, a p-value, a duration -- for PagerDuty's details; none
where the value means nothing: the up/down and absent alerts, whose value is a constant 0 or 1),
``runbook_url`` (its section of docs/runbook.md), ``dashboard_url`` and a ``for`` -- the Watchdog
excepted, which fires always.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..metrics import catalogue as cat
from .config import AlertSettings, MixinConfig, seconds
from .promql import PromQL, indent, matcher
from .rules import OTHER, PROFILE_HASH, RecordingRules

# The concerns an outage of the model makes meaningless: their alerts are inhibited by
# ModelmonModelDown of the same model -- no replica serves it. A per-replica outage
# (ModelmonTargetDown, ModelmonUpstreamDown) pages but inhibits nothing: one crash-looping
# replica of ten must not mute the fleet-wide drift, quality and performance alerts of the model.
OUTAGE_SOURCES = ("ModelmonModelDown",)
SILENCED_BY_OUTAGE = ("drift", "quality", "performance", "fairness", "freshness")


@dataclass(frozen=True)
class Alert:
    name: str
    group: str
    concern: str
    severity: str
    for_: str | None
    expr: str
    summary: str
    description: str
    value: str | None  # the value as the description shows it (a Go template of $value); None:
    # the alert's value is a constant (0 or 1) that says nothing the alert does not
    meaning: str
    confirm: tuple[str, ...]
    actions: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _pct(x: float) -> str:
    return f"{x * 100:g}%"


PCT = "{{ $value | humanizePercentage }}"
NUM = '{{ printf "%.3f" $value }}'
# The sidecar's p-values reach 0 where the tail probability underflows a float64 (below ~1e-300):
# written so, not as "0", which reads as a certainty.
P_VALUE = '{{ if gt $value 0.0 }}{{ printf "%.2g" $value }}{{ else }}< 1e-300{{ end }}'


def build_alerts(config: MixinConfig, r: RecordingRules) -> list[Alert]:
    """Every alert of the mixin, in the order of the rules file."""
    c = config
    q: PromQL = r.q
    gm = q.by("model")
    om = q.on("model")
    gf = q.by("model", "feature")
    of = q.on("model", "feature")
    oi = q.on("instance")
    alerts: list[Alert] = []

    def add(name: str, group: str, concern: str, s: AlertSettings | tuple[str, str | None], expr: str,
            summary: str, description: str, value: str | None, meaning: str, confirm: tuple[str, ...],
            actions: tuple[str, ...]) -> None:
        severity, for_ = (s.severity, s.for_) if isinstance(s, AlertSettings) else s
        alerts.append(Alert(name, group, concern, severity, for_, expr.strip(), summary, description,
                            value, meaning, confirm, actions))

    def with_models(expr: str) -> str:
        """``expr`` (one series per target) once per model the target serves, with a ``model``
        label, so that inhibition can match on it; targets serving no named model as they are.
        The target's models are those it exported last (within 5m of its last scrape that had
        any): an address reused within the lookback by another model's pod (Kubernetes reuses
        pod IPs) names the new model only, not every model it served that day."""
        # when each of its models was last exported: now if it still is (the subquery's 1m steps
        # would miss a series younger than a minute), else the last 1m step that saw it
        seen = (f"(timestamp({q.sel(cat.MODEL_INFO)}) or max_over_time(timestamp({q.sel(cat.MODEL_INFO)})"
                f"[{c.availability.model_info_lookback}:1m]))")
        models = (f"group {q.by('instance', 'model')} (\n  {seen}\n  >= {oi} group_left\n"
                  f"  max {q.by('instance')} ({seen}) - 300\n)")  # '-' binds before '>='

        return f"(\n  {expr}\n)\n* {oi} group_right\n{models}\nor {oi}\n{expr}"

    av = c.availability
    # --- availability ------------------------------------------------------------------------
    add("ModelmonWatchdog", "modelmon-availability", "meta", (c.watchdog_severity, None), "vector(1)",
        "The alerting pipeline works: this alert always fires.",
        "This alert fires all the time. The heartbeat receiver raises an alarm when it stops "
        "arriving: then Prometheus, the modelmon rules or Alertmanager are down.",
        None,
        "A dead man's switch. It is always firing; Alertmanager routes it to the heartbeat receiver "
        "(a dead man's switch service) every few minutes. If that service stops hearing from it, the "
        "alerting pipeline itself is broken and no other alert can reach you.",
        ("vector(1)", 'ALERTS{alertname="ModelmonWatchdog", alertstate="firing"}'),
        ("Nothing, while it fires. If the heartbeat service says it stopped: check that Prometheus is "
         "up and evaluating the `modelmon-availability` group (Status > Rules), that it can reach "
         "Alertmanager (Status > Runtime), and Alertmanager's log for notification errors.",))

    add("ModelmonTargetAbsent", "modelmon-availability", "availability", av.target_absent,
        f"absent({q.up()} == 1)",
        "No modelmon sidecar is being scraped.",
        f"No target matching {c.selector} has been up for {av.target_absent.for_}: Prometheus has no "
        "modelmon metrics and no other modelmon alert can fire.",
        None,
        "Prometheus has no target of the modelmon job that is up: either none is discovered (the "
        "ServiceMonitor or scrape config is missing, wrong, or its selector matches no pod) or all "
        "of them are down. Every other modelmon alert is blind meanwhile.",
        (f"up{{{c.selector}}}", "count by (job) (up)"),
        ("Look at Prometheus' Status > Targets for the job. If it is not listed, check the scrape "
         "configuration (ServiceMonitor labels and namespace selector, port name `admin`).",
         "If it is listed but down, see ModelmonTargetDown.",
         "If the selector of the mixin is wrong for your setup, set `selector` in the mixin config."))

    add("ModelmonMetricsAbsent", "modelmon-availability", "availability", av.metrics_absent,
        f"{q.up()} == 1\nunless {oi}\n{q.sel(cat.BUILD_INFO)}",
        "A modelmon target answers without modelmon metrics.",
        "Target {{ $labels.instance }} is scraped successfully but exposes no modelmon_build_info: "
        "it is probably not the sidecar's admin port.",
        None,
        "The target is up, but what it serves is not modelmon's /metrics: typically the scrape "
        "points at the traffic port (and so at the model server behind it) instead of the admin "
        "port, or at another process.",
        (f"{q.up()} == 1", f"{q.sel(cat.BUILD_INFO)}"),
        ("Check the target's port: modelmon serves /metrics on the admin port (9400 by default), "
         "never on the traffic port.", "Fix the ServiceMonitor or scrape config."))

    add("ModelmonTargetDown", "modelmon-availability", "availability", av.target_down,
        with_models(f"{q.up()} == 0"),
        "Prometheus cannot scrape a modelmon sidecar.",
        "Prometheus has failed to scrape the modelmon sidecar {{ $labels.instance }}"
        "{{ with $labels.model }} (model {{ . }}){{ end }} for "
        f"{av.target_down.for_}.",
        None,
        "Scrapes of one sidecar fail: the pod is gone or restarting, the admin port does not "
        "answer, or /metrics needs a bearer token Prometheus does not send (auth.protect: metrics). "
        f"The alert names the target's models (seen within {av.model_info_lookback}). It inhibits "
        "nothing: the other replicas still serve; when none does, ModelmonModelDown fires and "
        "silences the model's drift, quality and performance alerts.",
        (f"{q.up()} == 0", 'scrape_duration_seconds{' + c.selector + '}'),
        ("Status > Targets in Prometheus shows the scrape error.",
         "`kubectl describe pod` / `kubectl logs -c modelmon` for restarts and start-up errors "
         "(`invalid config: ...` exits 2).",
         "A `401` means /metrics is protected: give the scrape config `authorization: "
         "{credentials_file: ...}`.",
         "The sidecar's /healthz answers while its loop runs; if it hangs, restart the pod."))

    add("ModelmonUpstreamDown", "modelmon-availability", "availability", av.upstream_down,
        with_models(f"{q.sel(cat.UPSTREAM_UP)} == 0"),
        "A model server fails its health probe.",
        "The model server behind {{ $labels.instance }}{{ with $labels.model }} (model {{ . }})"
        "{{ end }} has failed its health probe for " f"{av.upstream_down.for_}.",
        None,
        "The sidecar probes the model server's health endpoint (upstream.health_path) every "
        "upstream.probe_interval_seconds; it has failed for a while. Inference calls through this "
        "replica fail or will; its readiness probe (/readyz) fails too. It inhibits nothing: "
        "when no replica of the model is left serving, ModelmonModelDown fires and silences the "
        "model's drift, quality and performance alerts.",
        (f"{q.sel(cat.UPSTREAM_UP)} == 0",
         f"increase({q.sel(cat.UPSTREAM_PROBES, extra=matcher('result', '=', 'failure'))}[10m])",
         f"sum {q.by('instance', 'reason')} (rate({q.sel(cat.UPSTREAM_ERRORS)}[5m]))"),
        ("Check the model container: `kubectl logs` and restarts (OOMKilled? see "
         "ModelmonMemoryNearLimit).",
         "Probe the health endpoint yourself from the pod: `curl localhost:8080/v2/health/ready`.",
         "If the model is fine but the probe path is wrong, fix upstream.health_path."))

    model_info = q.sel(cat.MODEL_INFO)
    seen = f"group {gm} (last_over_time({model_info}[{av.model_info_lookback}]))"
    serving = (f"{model_info}\nand {oi}\n({q.up()} == 1)\n"
               f"unless {oi}\n({q.sel(cat.UPSTREAM_UP)} == 0)")
    add("ModelmonModelDown", "modelmon-availability", "availability", av.model_down,
        f"{seen}\nunless {om}\n(\n{indent(serving)}\n)",
        "No replica of a model is serving.",
        "Model {{ $labels.model }} has had no replica serving for " f"{av.model_down.for_}: every "
        "target that exposed it is gone from discovery, cannot be scraped, or its model server "
        "fails its health probe.",
        None,
        f"A model seen in the last {av.model_info_lookback} (modelmon_model_info) has no target "
        "left that is up, exposes it and whose model server passes its health probe: its pods were "
        "evicted, scaled to zero or are pending, every sidecar is down, or every model server is. "
        "ModelmonTargetAbsent only sees the whole job vanish, and ModelmonTargetDown only targets "
        "Prometheus still discovers; this alert sees one model vanish while others share the job. "
        "While it fires the model's drift, quality, performance, fairness and freshness alerts are "
        "inhibited: they would be computed from stale or missing data. A model retired on purpose "
        f"fires it until the lookback ({av.model_info_lookback}, availability.model_info_lookback) "
        "forgets it: silence it for that long.",
        (f"{seen}", f"{model_info}", f"{q.up()}", f"{q.sel(cat.UPSTREAM_UP)}"),
        ("Which: `kubectl get deploy,pods -l <the model's labels>` - replicas 0, evicted or Pending "
         "pods (resources, node pressure, quota), a failed rollout.",
         "If the pods run: ModelmonTargetDown and ModelmonUpstreamDown of its replicas say whether "
         "the sidecars or the model servers fail.",
         "Scaled to zero or retired on purpose: silence the alert until the lookback forgets the "
         "model."))

    add("ModelmonDependencyDown", "modelmon-availability", "availability", av.dependency_down,
        f"{q.sel(cat.DEPENDENCY_UP)} == 0",
        "A dependency of a model is unreachable.",
        "Dependency {{ $labels.dependency }} of {{ $labels.instance }} has failed its probe for "
        f"{av.dependency_down.for_}.",
        None,
        "A declared dependency (health.dependencies: a feature store, a database, a downstream "
        "service) does not answer its HTTP or TCP probe from this sidecar.",
        (f"{q.sel(cat.DEPENDENCY_UP)} == 0", f"{q.sel(cat.DEPENDENCY_PROBE_DURATION)}"),
        ("Check the dependency itself and the network path from the pod (NetworkPolicy, DNS).",
         "Watch the model's error ratio: whether users are affected depends on how the model "
         "handles the dependency's absence."))

    # --- traffic ----------------------------------------------------------------------------------
    t = c.traffic
    five_xx = q.sel(cat.REQUESTS, extra=matcher('code', '=~', '5..'))
    for threshold, s in ((t.error_ratio_warning, t.high_error_ratio_warning),
                         (t.error_ratio_critical, t.high_error_ratio_critical)):
        add("ModelmonHighErrorRatio", "modelmon-traffic", "traffic", s,
            f"{q.rec(r.error_ratio)} > {_fmt(threshold)}\nand {om}\n{q.rec(r.request_rate)} > "
            f"{_fmt(t.min_request_rate)}",
            "A model answers too many requests with a server error.",
            "{{ $value | humanizePercentage }} of model {{ $labels.model }}'s requests failed with "
            f"a 5xx over the last {t.rate_window} (threshold {_pct(threshold)}).",
            PCT,
            "The share of the model's requests answered with a 5xx status, over every replica, "
            f"is above {_pct(t.error_ratio_warning)} (warning) or {_pct(t.error_ratio_critical)} "
            "(critical). It includes the sidecar's own 502 (model unreachable, reset) and 504 "
            f"(timeout). It counts the requests {t.route_matcher or 'of every route'} "
            "(traffic.route_matcher; by default the inference routes, as the latency SLO: a 5xx "
            "of an unknown path is a scan or a misrouted client, not the model failing).",
            (f"{q.rec(r.error_ratio)}",
             f"sum {q.by('model', 'code')} (rate({five_xx}[{t.rate_window}]))",
             f"sum {q.by('model', 'reason')} (rate({q.sel(cat.UPSTREAM_ERRORS)}[{t.rate_window}]))"),
            ("502/504 with modelmon_upstream_errors_total rising: the model server is unreachable, "
             "resets or is too slow (upstream.read_timeout_seconds) - see ModelmonUpstreamDown.",
             "500 from the model itself: read the model server's logs; a new model version or "
             "malformed inputs (ModelmonPayloadErrors, data-quality alerts) are the usual causes.",
             "One replica or all? Compare by instance: "
             "sum by (instance, code) (rate(modelmon_requests_total[5m]))."))

    slo = c.latency_slo
    budget = 1 - slo.objective
    for severity in ("critical", "warning"):
        pairs = [w for w in slo.burn_windows if w.severity == severity]
        conds = []
        for w in pairs:
            bound = _fmt(w.factor * budget)
            enough = _fmt(slo.min_request_rate)
            conds.append(f"(\n  {q.rec(r.slow_ratio[w.long])} > {bound}\n  and {om}\n"
                         f"  {q.rec(r.slow_ratio[w.short])} > {bound}\n  and {om}\n"
                         f"  {q.rec(r.slo_request_rate[w.long])} > {enough}\n  and {om}\n"
                         f"  {q.rec(r.slo_request_rate[w.short])} > {enough}\n)")
        add("ModelmonLatencyBudgetBurn", "modelmon-latency-slo", "traffic",
            (severity, slo.for_critical if severity == "critical" else slo.for_warning),
            "\nor\n".join(conds),
            "A model burns its latency error budget too fast.",
            "{{ $value | humanizePercentage }} of model {{ $labels.model }}'s requests took longer "
            f"than {slo.threshold_seconds:g} s over the long window "
            f"({' or '.join(w.long for w in pairs)}; the short one, "
            f"{' or '.join(w.short for w in pairs)}, burns too): at this rate the error budget of its SLO "
            f"({_pct(slo.objective)} within {slo.threshold_seconds:g} s) runs out "
            f"{'within days' if severity == 'critical' else 'before the month ends'}.",
            PCT,
            f"The latency SLO: {_pct(slo.objective)} of requests ({slo.route_matcher or 'all routes'}) "
            f"within {slo.threshold_seconds:g} s, measured over every replica by the sidecar from "
            "the first byte received to the last byte sent. A multi-window, multi-burn-rate alert "
            "(Google SRE workbook, chapter 5): it fires when both a long and a short window burn "
            "the error budget faster than a factor - " + "; ".join(
                f"{w.long} and {w.short} at {w.factor:g}x ({w.severity})" for w in slo.burn_windows)
            + ". The long window makes it significant, the short one makes it stop soon after the "
            f"problem does. A pair only counts while the model serves more than "
            f"{_fmt(slo.min_request_rate)} requests/s over both its windows "
            "(latency_slo.min_request_rate): a few slow requests of an idle model (a cold start) "
            "are no burn.",
            (
                *(q.rec(r.slow_ratio[w]) for w in (pairs[0].long, pairs[0].short)),
                f"{q.rec(r.latency_quantiles[-1])}",
                f"histogram_quantile(0.99, sum {q.by('instance', 'le')} (rate("
                f"{q.sel(cat.REQUEST_DURATION, 'bucket')}[5m])))",
                f"histogram_quantile(0.99, sum {q.by('model', 'le')} (rate("
                f"{q.sel(cat.OVERHEAD, 'bucket')}[5m])))"),
            ("Is it the model or the sidecar? modelmon_sidecar_overhead_seconds should stay in "
             "the sub-millisecond buckets; if it does, the model server is slow.",
             "One replica or all? A single slow replica (noisy neighbour, CPU throttling) shows "
             "in the per-instance quantile.",
             "Load: compare the request rate with its usual level; scale out if saturated.",
             "A new model version or larger inputs (drift alerts) can change latency."))

    # --- drift ----------------------------------------------------------------------------------
    d = c.drift
    # Inputs and outputs by the profile's roles (modelmon_feature_info{role}), whatever their
    # names. A feature no replica gives a role (a sidecar from before the roles were exported)
    # counts as an input: its drift alerts, as ModelmonFeatureDrift, rather than not at all.
    outputs = f"group {gf} ({q.sel(cat.FEATURE_INFO, extra=matcher('role', '=', 'output'))})"

    def verdict(output: bool) -> str:
        expr = (f"min {gf} ({q.sel(cat.DRIFT_P_VALUE)})\nand {of}\n"
                f"(max {gf} ({q.sel(cat.DRIFT_DETECTED)}) == 1)\n"
                f"{'and' if output else 'unless'} {of}\n{outputs}")
        if not output:  # gated by the model-level verdict, corrected across the model's features
            expr += f"\nand {om}\n(max {gm} ({q.sel(cat.MODEL_DRIFT_DETECTED)}) == 1)"
        return expr

    confirm_verdict = (
        f"{q.sel(cat.DRIFT_DETECTED)} == 1",
        f"{q.sel(cat.FEATURE_INFO)}",
        f"{q.sel(cat.DRIFT_P_VALUE)}",
        f"{q.sel(cat.DRIFT_SCORE)}",
        f"{q.sel(cat.FEATURE_WINDOW_MEAN)} - {q.on('instance', 'model', 'feature')} group_left "
        f"{q.sel(cat.REFERENCE_MEAN)}",
    )
    actions_drift = (
        "Find what changed: the feature's window mean against the reference mean, its "
        "distribution in the dashboard (live bins against the reference bins), the missing and "
        "out-of-range ratios (a broken upstream pipeline often looks like drift).",
        "Is it real-world change or a bug? A step change at a deploy time of a client or feature "
        "pipeline points at a bug; a gradual change at the world.",
        "If the model's performance suffers (accuracy, MAE), retrain on recent data and rebuild "
        "the reference profile (`modelmon profile`) with it.",
        "If the change is expected and harmless, rebuild the reference profile so the alert "
        "compares against the new normal.")
    add("ModelmonFeatureDrift", "modelmon-drift", "drift", d.feature_drift, verdict(output=False),
        "An input feature's distribution has drifted from its reference.",
        "Feature {{ $labels.feature }} of model {{ $labels.model }} no longer looks like its "
        "reference profile: the sidecar's drift test reports drift (smallest p-value "
        + P_VALUE + ") and so does its model-level verdict.",
        P_VALUE,
        "The sidecar tests each feature's sliding window (drift.window_seconds, 1 h by default) "
        "against the reference profile: location, scale and chi-square tests on a numeric "
        "feature's bins (weighted Bonferroni, alpha 0.008), a chi-square test on a categorical "
        "one at alpha 0.005 (docs/drift.md). This alert fires for an input feature whose verdict "
        "is drift on some replica while the model-level verdict (corrected across all the model's "
        "features, so that a model with many features does not alarm more often) agrees. Inputs "
        "are the profile's role=input features (`modelmon_feature_info{role=\"input\"}`), and any "
        "feature no sidecar gives a role (one older than the role export). The value is the "
        "smallest p-value of the feature's tests (`< 1e-300` where it underflows).",
        confirm_verdict, actions_drift)
    add("ModelmonPredictionDrift", "modelmon-drift", "drift", d.prediction_drift, verdict(output=True),
        "A model's predictions have drifted from their reference.",
        "Output {{ $labels.feature }} of model {{ $labels.model }} no longer looks like its "
        "reference profile: the sidecar's drift test reports drift (smallest p-value "
        + P_VALUE + ").",
        P_VALUE,
        "The distribution of a model output (a predicted class, a score, a probability: the "
        "profile's role=output features, `modelmon_feature_info{role=\"output\"}`, whatever their "
        "names) has moved away from the reference profile's outputs. The model now answers "
        "differently: because its inputs drifted, or because the model changed. The value is the "
        "smallest p-value of the output's tests (`< 1e-300` where it underflows).",
        confirm_verdict,
        ("Check for input drift at the same time (ModelmonFeatureDrift): inputs that moved explain "
         "outputs that moved.",
         "Check for a new model version (modelmon_model_info) or a reloaded artefact "
         "(modelmon_model_trained_timestamp_seconds) at the time the drift began.",
         "Where labels arrive, check performance: prediction drift with stable accuracy may be "
         "harmless (the world changed and the model follows).",
         *actions_drift[2:]))
    ks_bound, tvd_bound = _fmt(d.ks_threshold), _fmt(d.tvd_threshold)
    ofp = q.on("model", "feature", PROFILE_HASH)
    add("ModelmonFleetDrift", "modelmon-drift", "drift", d.fleet_drift,
        f"(\n  {q.rec(r.drift_score, matcher('method', '=', 'ks'))} > {ks_bound}\n  and {ofp}\n"
        f"  {q.rec(r.numeric_count)} >= {d.min_samples}\n)\nor\n"
        f"(\n  {q.rec(r.drift_score, matcher('method', '=', 'tvd'))} > {tvd_bound}\n  and {ofp}\n"
        f"  {q.rec(r.categorical_count)} >= {d.min_samples}\n)",
        "A feature has drifted across the whole fleet of a model.",
        "Feature {{ $labels.feature }} of model {{ $labels.model }} has drifted across all its "
        "replicas over the last " f"{d.window}: " "{{ $labels.method }} = " + NUM + ".",
        NUM,
        "Computed by the recording rules from the counts of every replica summed (the sidecars' "
        f"own verdicts see one replica each): the Kolmogorov-Smirnov statistic of a numeric "
        f"feature above {ks_bound}, or the total-variation distance of a categorical one above "
        f"{tvd_bound}, with at least {d.min_samples} values in the last {d.window}. Both are "
        "effect sizes (the largest gap between the cumulative shares; half the summed gaps "
        "between category shares), so this alert reports large changes, whatever the traffic. "
        "The counts are summed per reference profile (`profile_hash`, from "
        "modelmon_reference_profile_info): during a rollout, replicas running the old profile and "
        "replicas running the new one are compared each with their own reference, never mixed, "
        "and the alert names the profile.",
        (f"{q.rec(r.drift_score)}", f"{q.rec(r.numeric_count)}", f"{q.rec(r.categorical_count)}"),
        actions_drift)

    # --- data quality ----------------------------------------------------------------------------
    qu = c.quality
    add("ModelmonFeatureMissingHigh", "modelmon-data-quality", "quality", qu.missing_high,
        f"max {gf} ({q.sel(cat.MISSING_RATIO)})\n> {of}\n"
        f"(max {gf} ({q.sel(cat.REFERENCE_MISSING_RATIO)}) + {_fmt(qu.missing_margin)})",
        "A feature arrives missing far more often than in its reference.",
        "{{ $value | humanizePercentage }} of feature {{ $labels.feature }}'s values for model "
        "{{ $labels.model }} are missing (NaN, null or absent), more than "
        f"{_pct(qu.missing_margin)} above its reference's share.",
        PCT,
        "The share of rows in the sliding window where the feature was NaN, null or absent "
        f"exceeds the reference's missing share by more than {_pct(qu.missing_margin)}. A feature "
        "that never arrives reads 1.0. Usually an upstream data pipeline or a client changed.",
        (f"{q.sel(cat.MISSING_RATIO)}", f"{q.sel(cat.REFERENCE_MISSING_RATIO)}",
         f"sum {q.by('model', 'feature', 'kind')} "
         f"(rate({q.sel(cat.QUALITY_EVENTS, extra=matcher('kind', '=~', 'nan|null|absent'))}[15m]))"),
        ("The kind tells where to look: `absent` (a client stopped sending the feature, or "
         "renamed it), `null` (the upstream source has no value), `nan` (a computation failed).",
         "Find which client: compare by instance, and the sidecar's records by source.",
         "Fix the producer; the model imputes or mispredicts meanwhile - watch its performance."))
    add("ModelmonFeatureOutOfRange", "modelmon-data-quality", "quality", qu.out_of_range,
        f"max {gf} ({q.sel(cat.OUT_OF_RANGE_RATIO)}) > {_fmt(qu.out_of_range_margin)}",
        "A numeric feature arrives outside its reference range.",
        "{{ $value | humanizePercentage }} of feature {{ $labels.feature }}'s values for model "
        "{{ $labels.model }} lie outside the reference's min..max.",
        PCT,
        "The share of a numeric feature's values in the sliding window below the reference's "
        f"minimum or above its maximum exceeds {_pct(qu.out_of_range_margin)} (it is 0 in the "
        "reference by definition). A unit change (cm for m, cents for euros), a new population, "
        "or sentinel values (-1, 9999).",
        (f"{q.sel(cat.OUT_OF_RANGE_RATIO)}",
         f"sum {q.by('model', 'feature', 'kind')} "
         f"(rate({q.sel(cat.QUALITY_EVENTS, extra=matcher('kind', '=~', 'below_min|above_max'))}[15m]))",
         f"{q.sel(cat.FEATURE_WINDOW_MEAN)}"),
        ("below_min against above_max and the window mean say which way it moved.",
         "Check the producer for a unit or encoding change; the model extrapolates on such "
         "values."))
    uw = qu.unseen_window
    add("ModelmonUnseenCategories", "modelmon-data-quality", "quality", qu.unseen_categories,
        f"sum {gf} (rate({q.sel(cat.QUALITY_EVENTS, extra=matcher('kind', '=', 'unseen_category'))}[{uw}]))\n"
        f"/ {of}\nsum {gf} (rate({q.sel(cat.FEATURE_CATEGORY)}[{uw}]))\n> {of}\n"
        f"(max {gf} ({q.sel(cat.REFERENCE_CATEGORY, extra=matcher('category', '=', OTHER))})"
        f" + {_fmt(qu.unseen_margin)})",
        "A categorical feature receives categories its reference did not have.",
        "{{ $value | humanizePercentage }} of feature {{ $labels.feature }}'s values for model "
        "{{ $labels.model }} over the last " f"{uw} are categories outside the reference's top "
        "categories, more than " f"{_pct(qu.unseen_margin)} above the reference's own share of them.",
        PCT,
        "Categorical values not among the reference profile's top categories are counted as "
        "unseen (and in `__other__`). The reference has its own share of such rare values "
        f"(`{cat.REFERENCE_CATEGORY.name}{{category=\"{OTHER}\"}}`); this alert fires when the live "
        f"share exceeds it by more than {_pct(qu.unseen_margin)}: new product codes, a renamed "
        "category, a changed spelling or case.",
        (f"sum {q.by('model', 'feature', 'category')} (rate({q.sel(cat.FEATURE_CATEGORY)}[{uw}]))",
         f"{q.sel(cat.REFERENCE_CATEGORY)}"),
        ("Find the new values in the producer's data (modelmon counts them as `__other__` only, "
         "to bound cardinality).",
         "A renamed or re-cased category is a bug upstream; genuinely new categories mean the "
         "model needs retraining and the profile rebuilding."))

    # --- performance --------------------------------------------------------------------------
    p = c.performance
    pw = p.window
    enough = f"and {om}\n{q.rec(r.joined)} >= {p.min_labels}"
    confirm_perf = (f"{q.rec(r.accuracy)}", f"{q.rec(r.joined)}", f"{q.sel(cat.ACCURACY)}")
    actions_perf = (
        "Check for drift first (ModelmonFeatureDrift, ModelmonFleetDrift): a change in the inputs "
        "is the usual cause.",
        "Check the labels: a change in how ground truth is produced (a new labelling rule, "
        "labels posted for the wrong ids) looks like a performance drop.",
        "Check for a new model version (modelmon_model_info) deployed when it began; roll back "
        "if so.",
        "Otherwise retrain on recent labelled data.")
    add("ModelmonAccuracyLow", "modelmon-performance", "performance", p.accuracy_low,
        f"{q.rec(r.accuracy)} < {_fmt(p.accuracy_min)}\n{enough}",
        "A classifier's accuracy is below its threshold.",
        "Model {{ $labels.model }} was right on {{ $value | humanizePercentage }} of the "
        f"predictions whose labels arrived over the last {pw} (threshold {_pct(p.accuracy_min)}).",
        PCT,
        f"Accuracy over every replica, from the predictions joined to a label in the last {pw}: "
        f"correct / joined, with at least {p.min_labels} labels. Labels arrive late, so this "
        "reflects predictions made up to the label delay earlier.",
        confirm_perf, actions_perf)
    add("ModelmonClassF1Low", "modelmon-performance", "performance", p.f1_low,
        f"{q.rec(r.f1)} < {_fmt(p.f1_min)}\nand {q.on('model', 'class')}\n"
        f"{q.rec(r.actual)} >= {p.min_class_support}",
        "A classifier's F1 score for a class is below its threshold.",
        "Model {{ $labels.model }}'s F1 score for class {{ $labels.class }} was " + NUM
        + f" over the last {pw} (threshold {_fmt(p.f1_min)}).",
        NUM,
        f"The F1 score of one class over every replica (2 TP / (predicted + actual)) in the "
        f"last {pw}, for classes with at least {p.min_class_support} labels. Accuracy hides a "
        "minority class the model stopped finding; this does not.",
        (f"{q.rec(r.precision)}", f"{q.rec(r.recall)}", f"{q.rec(r.f1)}",
         f"sum {q.by('model', 'actual', 'predicted')} (increase({q.sel(cat.CONFUSION)}[{pw}]))"),
        ("Precision or recall? Low recall: the model misses the class (the confusion matrix "
         "shows what it predicts instead); low precision: it predicts it too often.",
         *actions_perf))
    mae_expr = f"{q.rec(r.mae)} > {om} ({_fmt(p.mae_factor)} * {q.rec(r.mae_baseline)})"
    if p.mae_max is not None:
        mae_expr = f"(\n  {mae_expr}\n  or\n  {q.rec(r.mae)} > {_fmt(p.mae_max)}\n)"
    add("ModelmonRegressionErrorHigh", "modelmon-performance", "performance", p.regression_error_high,
        f"{mae_expr}\n{enough}",
        "A regression model's error is far above its usual level.",
        "Model {{ $labels.model }}'s mean absolute error over the last " f"{pw} is "
        "{{ printf \"%.4g\" $value }}, more than " f"{_fmt(p.mae_factor)} times its "
        f"{p.mae_baseline_window} average" + (f" or above {_fmt(p.mae_max)}" if p.mae_max is not None else "")
        + ".",
        '{{ printf "%.4g" $value }}',
        f"The mean absolute error of the joined regressions over every replica in the last {pw} "
        f"exceeds {_fmt(p.mae_factor)} times its average over {p.mae_baseline_window}"
        + (f" (or the absolute bound {_fmt(p.mae_max)})" if p.mae_max is not None else "")
        + f", with at least {p.min_labels} labels. The bound is relative because an error has the "
        "label's unit; set performance.mae_max for an absolute one.",
        (f"{q.rec(r.mae)}", f"{q.rec(r.mae_baseline)}", f"{q.rec(r.rmse)}", f"{q.rec(r.bias)}"),
        ("The bias (mean error) says whether the model now predicts too high or too low: a "
         "systematic shift points at drifted inputs or a changed target.",
         *actions_perf))
    add("ModelmonLabelsNotArriving", "modelmon-performance", "performance", p.labels_not_arriving,
        f"{q.rec(r.join_ratio)}\n< {om}\n({_fmt(p.labels_collapse_factor)} * {q.rec(r.join_ratio_usual)})",
        "Ground-truth labels have stopped arriving for a model.",
        "Only {{ $value | humanizePercentage }} of model {{ $labels.model }}'s predictions were "
        f"joined to a label over the last {pw}, under {_fmt(p.labels_collapse_factor)} times its "
        f"share over the last {p.labels_lookback}.",
        PCT,
        "The share of analysed predictions joined to a ground-truth label has collapsed against "
        f"its level over the last {p.labels_lookback}. Performance alerts are blind meanwhile. "
        "It resolves by itself once the lookback forgets the labels, so act on it.",
        (f"{q.rec(r.join_ratio)}", f"{q.rec(r.join_ratio_usual)}",
         f"sum {q.by('outcome')} (rate({q.sel(cat.LABELS)}[{pw}]))",
         f"sum {q.by('kind')} (rate({q.sel(cat.JOIN_EXPIRED)}[{pw}]))"),
        ("Is the label producer running and posting to POST /v1/labels? modelmon_labels_total "
         "by outcome: nothing at all, or `unmatched` (ids that do not match: a changed request "
         "id header or id format), or `invalid`.",
         "Refused pushes: modelmon_auth_refused_requests_total (a rotated token) and "
         "modelmon_ingest_requests_total by code.",
         "Labels later than labels.ttl_seconds expire unjoined: modelmon_join_expired_total."))

    # --- fairness ----------------------------------------------------------------------------------
    fa = c.fairness
    confirm_fair = (f"{q.rec(r.positive_rate)}", f"{q.rec(r.segment_accuracy)}",
                    f"{q.rec(r.disparate_impact)}", f"{q.rec(r.accuracy_gap)}")
    actions_fair = (
        "See which groups: the per-group positive rates and accuracies of the segment.",
        "Check group sizes and drift per group: a group whose inputs drifted (a new region, a "
        "new channel) is often the one that lost out.",
        "Escalate to the model's owners: a fairness regression may need retraining with the "
        "group better represented, or a threshold per group, and a decision beyond on-call.")
    add("ModelmonFairnessDisparateImpact", "modelmon-fairness", "fairness", fa.disparate_impact,
        f"{q.rec(r.disparate_impact)} < {_fmt(fa.disparate_impact_min)}",
        "A model's positive-prediction rates differ too much between groups.",
        "For model {{ $labels.model }}, the group of segment {{ $labels.segment }} with the lowest "
        "positive-prediction rate gets " + NUM + " times the rate of the highest over the "
        f"last {pw} (threshold {_fmt(fa.disparate_impact_min)}).",
        NUM,
        "Disparate impact: the lowest positive-prediction rate among the groups of a segment "
        "feature (models[].segments) divided by the highest, over every replica, for groups with "
        f"at least {fa.min_group_predictions} predictions in the last {pw}. Below "
        f"{_fmt(fa.disparate_impact_min)} the four-fifths rule of thumb flags adverse impact.",
        confirm_fair, actions_fair)
    add("ModelmonFairnessAccuracyGap", "modelmon-fairness", "fairness", fa.accuracy_gap,
        f"{q.rec(r.accuracy_gap)} > {_fmt(fa.accuracy_gap_max)}",
        "A model's accuracy differs too much between groups.",
        "For model {{ $labels.model }}, accuracy differs by {{ $value | humanizePercentage }} "
        "between the best and the worst group of segment {{ $labels.segment }} over the last "
        f"{pw} (threshold {_pct(fa.accuracy_gap_max)}).",
        PCT,
        "The largest difference in accuracy between the groups of a segment feature, over every "
        f"replica, for groups with at least {fa.min_group_labels} labels in the last {pw}.",
        confirm_fair, actions_fair)

    # --- freshness ---------------------------------------------------------------------------------
    fr = c.freshness
    add("ModelmonModelStale", "modelmon-freshness", "lifecycle", fr.model_stale,
        f"time() - max {gm} ({q.sel(cat.MODEL_TRAINED)}) > {seconds(fr.model_max_age):g}",
        "A model has not been retrained for a long time.",
        "Model {{ $labels.model }} was trained {{ $value | humanizeDuration }} ago (limit "
        f"{fr.model_max_age}).",
        "{{ $value | humanizeDuration }}",
        "The model's training time (models[].trained_at, or the artefact's modification time) "
        f"is older than {fr.model_max_age}. Not an incident: a reminder that the retraining "
        "schedule slipped.",
        (f"(time() - {q.sel(cat.MODEL_TRAINED)}) / 86400", f"{q.sel(cat.MODEL_INFO)}"),
        ("Check the retraining pipeline; deploy the fresh model.",
         "If the artefact was reloaded but the age did not change, models[].trained_at in the "
         "sidecar's config is pinned: update it or use models[].artifact_path."))
    add("ModelmonNoPredictions", "modelmon-freshness", "freshness", fr.no_predictions,
        f"time() - max {gm} ({q.sel(cat.LAST_PREDICTION)}) > {seconds(fr.no_predictions_after):g}",
        "A model has made no prediction for a while.",
        "Model {{ $labels.model }} made its last prediction {{ $value | humanizeDuration }} ago.",
        "{{ $value | humanizeDuration }}",
        f"No replica has seen a prediction of this model (a proxied inference response or a pushed "
        f"record) for {fr.no_predictions_after}. Either traffic stopped (clients, routing), or it "
        "no longer goes through the sidecar, or every call fails before a response.",
        (f"time() - {q.sel(cat.LAST_PREDICTION)}", f"{q.rec(r.request_rate)}",
         f"sum {q.by('model', 'route', 'code')} (rate({q.sel(cat.REQUESTS)}[5m]))"),
        ("Requests still arriving but no predictions: they fail (see the error ratio) or use a "
         "route the sidecar does not recognise as inference (route=\"other\": add it to "
         "proxy.routes).",
         "No requests at all: check the clients and the Service/Ingress routing to the sidecar's "
         "traffic port.",
         "For a model that is idle at night, raise freshness.no_predictions_after."))

    # --- resources --------------------------------------------------------------------------------
    res = c.resources
    gcg = q.by("instance", "cgroup")
    ocg = q.on("instance", "cgroup")
    usage_ratio = (f"max {gcg} ({q.sel(cat.CGROUP_MEMORY_USAGE)})\n/ {ocg}\n"
                   f"max {gcg} ({q.sel(cat.CGROUP_MEMORY_LIMIT)})")
    for threshold, s in ((res.memory_warning, res.memory_near_limit_warning),
                         (res.memory_critical, res.memory_near_limit_critical)):
        add("ModelmonMemoryNearLimit", "modelmon-resources", "resources", s,
            f"{usage_ratio}\n> {_fmt(threshold)}",
            "A container is close to its memory limit.",
            "The {{ $labels.cgroup }} cgroup of {{ $labels.instance }} uses "
            "{{ $value | humanizePercentage }} of its memory limit (threshold " f"{_pct(threshold)}).",
            PCT,
            "Memory charged to the cgroup against its limit: `cgroup=\"model\"` is the model "
            "server's container (when visible from the sidecar), `cgroup=\"self\"` the sidecar's "
            "own. At the limit the kernel OOM-kills the container: the replica restarts and its "
            "in-flight requests fail.",
            (f"{q.sel(cat.CGROUP_MEMORY_USAGE)}", f"{q.sel(cat.CGROUP_MEMORY_LIMIT)}",
             f"{q.sel(cat.MODEL_MEMORY_RSS)}"),
            ("Growing steadily (a leak, caches) or a step (a bigger model, larger batches)? Look "
             "at the usage over a day.",
             "Raise the container's memory limit, or fix the growth; for the sidecar, lower "
             "labels.max_entries or analysis.queue_size."))
    add("ModelmonMemoryFillingUp", "modelmon-resources", "resources", res.memory_filling_up,
        f"max {gcg} (predict_linear({q.sel(cat.CGROUP_MEMORY_USAGE)}[{res.filling_up_window}], "
        f"{seconds(res.filling_up_horizon):g}))\n> {ocg}\nmax {gcg} ({q.sel(cat.CGROUP_MEMORY_LIMIT)})",
        "A container's memory is growing towards its limit.",
        "The {{ $labels.cgroup }} cgroup of {{ $labels.instance }} grows at a rate that reaches "
        f"its memory limit within {res.filling_up_horizon} (projected " "{{ $value | humanize1024 }}B).",
        "{{ $value | humanize1024 }}B",
        f"A linear fit of the cgroup's memory over the last {res.filling_up_window} reaches its "
        f"limit within {res.filling_up_horizon}: a leak or unbounded growth, caught before "
        "ModelmonMemoryNearLimit.",
        (f"{q.sel(cat.CGROUP_MEMORY_USAGE)}", f"deriv({q.sel(cat.CGROUP_MEMORY_USAGE)}[1h])"),
        ("Find what grows: the model server's RSS (modelmon_model_memory_rss_bytes) or the "
         "sidecar's (process_resident_memory_bytes).", "Plan a restart before the limit, and fix "
         "the leak."))

    # --- the sidecar ----------------------------------------------------------------------------
    sc = c.sidecar
    sw = sc.window
    add("ModelmonDroppedRecords", "modelmon-sidecar", "sidecar", sc.dropped_records,
        f"sum {q.by('instance', 'reason')} (rate({q.sel(cat.RECORDS_DROPPED)}[{sw}]))\n"
        f"/ {oi} group_left\n"
        f"sum {q.by('instance')} "
        f"(rate({q.sel(cat.RECORDS_ANALYSED)}[{sw}]) or rate({q.sel(cat.RECORDS_DROPPED)}[{sw}]))\n"
        f"> {_fmt(sc.dropped_ratio)}",
        "The sidecar is dropping records instead of analysing them.",
        "Sidecar {{ $labels.instance }} dropped {{ $value | humanizePercentage }} of its records "
        f"over the last {sw} (reason " "{{ $labels.reason }}).",
        PCT,
        "Records (proxied exchanges or pushed records) that were not analysed, as a share of all "
        "records: drift, quality and performance metrics miss them. Traffic itself is never "
        "affected (the analysis fails open).",
        (f"sum {q.by('instance', 'reason')} (rate({q.sel(cat.RECORDS_DROPPED)}[{sw}]))",
         f"{q.sel(cat.QUEUE_DEPTH)} / {q.on('instance')} {q.sel(cat.QUEUE_CAPACITY)}"),
        ("`queue_full`: the analysis cannot keep up - raise analysis.queue_size, give the "
         "sidecar more CPU, or reduce features analysed.",
         "`body_too_large`: bodies above analysis.max_body_bytes.",
         "`invalid_json` / `invalid_record`: clients send malformed payloads.",
         "`analysis_error`: a bug - the sidecar logs it once per 10 s with the exception."))
    add("ModelmonPayloadErrors", "modelmon-sidecar", "sidecar", sc.payload_errors,
        f"sum {q.by('model', 'reason')} (rate({q.sel(cat.PAYLOAD_ERRORS)}[{sw}]))\n"
        f"/ {om} group_left\n"
        f"sum {gm} (rate({q.sel(cat.RECORDS_ANALYSED)}[{sw}]) or rate({q.sel(cat.PAYLOAD_ERRORS)}[{sw}]))\n"
        f"> {_fmt(sc.payload_error_ratio)}",
        "Many payloads of a model cannot be read.",
        "{{ $value | humanizePercentage }} of model {{ $labels.model }}'s payloads over the last "
        f"{sw} could not be analysed (reason " "{{ $labels.reason }}).",
        PCT,
        "Payloads or records the sidecar could not (fully) read - an unrecognised protocol, "
        "tensors of the wrong shape, features that do not match the profile - as a share of the "
        "model's records. The traffic passed through untouched, but drift and quality do not "
        "see it.",
        (f"sum {q.by('model', 'reason')} (rate({q.sel(cat.PAYLOAD_ERRORS)}[{sw}]))",),
        ("The reason names the problem (README, Protocols): e.g. `binary_raw_request`, "
         "`base64_value`, rows of the wrong length.",
         "A client or model version changed its payload format: set models[].protocol, "
         "models[].feature_names or rebuild the profile to match."))
    add("ModelmonDriftScoringStalled", "modelmon-sidecar", "sidecar", sc.drift_scoring_stalled,
        f"time() - max {q.by('instance', 'model')} ({q.sel(cat.DRIFT_LAST_SUCCESS)}) > "
        f"{seconds(sc.drift_stalled_after):g}",
        "A sidecar has stopped computing drift statistics.",
        "Sidecar {{ $labels.instance }} last computed the drift statistics of model "
        "{{ $labels.model }} {{ $value | humanizeDuration }} ago.",
        "{{ $value | humanizeDuration }}",
        "Drift is scored every drift.interval_seconds (15 s) in the background; it has not "
        f"succeeded for {sc.drift_stalled_after}. The drift gauges are frozen at old values and "
        "drift alerts cannot be trusted.",
        (f"time() - {q.sel(cat.DRIFT_LAST_SUCCESS)}", f"{q.sel(cat.DRIFT_COMPUTE_DURATION)}"),
        ("Read the sidecar's log for an exception in the drift scheduler.",
         "A compute duration near the interval means the model has too many features for it: "
         "raise drift.interval_seconds.", "Restart the sidecar if it is stuck."))
    return alerts
