"""The "Model detail" board: one model (the ``model`` variable) across its replicas — traffic and
latency, drift per feature with the verdict, one feature (the ``feature`` variable) against its
reference, data quality, predictions, performance once labels arrive, segments, and the model
server's resources."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.models import dashboard as md
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from ...metrics import catalogue as cat
from ..config import MixinConfig
from ..promql import ratio_or_zero
from .board import RATE_INTERVAL, Board, Target, query_variable

UID = "modelmon-model"
FILE = "modelmon-model.json"
TITLE = "modelmon / Model detail"
DEFAULT_METHOD = "jensen_shannon"  # defined for numeric and categorical features alike
RANGE = "$__range"  # the dashboard's time range: the live distribution is counted over it
VERDICT: list[dict[str, Any]] = [{"type": "value", "options": {
    "0": {"text": "no drift", "color": "green", "index": 0},
    "1": {"text": "drift", "color": "red", "index": 1}}}]
HEALTH: list[dict[str, Any]] = [{"type": "value", "options": {
    "0": {"text": "down", "color": "red", "index": 0},
    "1": {"text": "up", "color": "green", "index": 1}}}]


def model_detail(config: MixinConfig) -> md.Dashboard:
    b = Board(config)
    r = RATE_INTERVAL
    # single-valued variables: matched exactly (a model name may hold a regex's '.')
    model = 'model="$model"'
    feature = 'feature="$feature"'
    method = 'method="$method"'
    b.note(f"_{TITLE}: the model chosen above, all its replicas._ The feature rows show the "
           "feature chosen above against its reference profile. What each alert means and what "
           f"to do: [runbook]({config.runbook_url}).")

    requests = b.sel(cat.REQUESTS, "", model)
    # the routes the fleet's request rate and error ratio (and their alerts) count
    routes = tuple(m for m in (config.traffic.route_matcher,) if m)
    counted = b.sel(cat.REQUESTS, "", model, *routes)
    errors = b.sel(cat.REQUESTS, "", model, *routes, 'code=~"5.."')
    latency = b.sel(cat.REQUEST_DURATION, "bucket", model)
    top_q = max(config.traffic.quantiles)

    # --- at a glance ----------------------------------------------------------------------------
    b.row("At a glance")
    scope = f"({config.traffic.route_matcher or 'all routes'}, as the fleet board and the alerts)"
    b.stat("Requests/s", f"Requests per second to the model, all replicas {scope}.",
           f"sum(rate({counted}[{r}]))", "req/s", "reqps", decimals=1, w=3)
    b.stat("5xx ratio", "Share of requests answered 5xx (model errors and the sidecar's 502/504), "
           f"all replicas {scope}; 0 when there are none.",
           ratio_or_zero(f"sum(rate({errors}[{r}]))", f"sum(rate({counted}[{r}]))"), "5xx",
           "percentunit", decimals=2, w=3,
           thresholds=(config.traffic.error_ratio_warning, config.traffic.error_ratio_critical))
    b.stat(f"p{top_q * 100:g} latency", f"The {top_q:g} quantile of request latency, all replicas.",
           f"histogram_quantile({top_q:g}, sum by (le) (rate({latency}[{r}])))", "latency", "s",
           decimals=3, w=3, thresholds=(config.latency_slo.threshold_seconds,))
    b.stat("Healthy replicas", "Replicas whose model server passes its health probe.",
           f"sum(\n{b.per_model(b.sel(cat.UPSTREAM_UP))}\n)",
           "healthy", "short", w=3, thresholds=(1,), reverse=True)
    b.stat("Drifting features", "Features whose in-process verdict reports drift on any replica.",
           f"count(max by (feature) ({b.sel(cat.DRIFT_DETECTED, '', model)}) == 1) or vector(0)",
           "features", "short", w=3, thresholds=(1,))
    b.stat("Model age", "Time since the model was trained (models[].trained_at, else the "
           "artefact's modification time).",
           f"time() - max({b.sel(cat.MODEL_TRAINED, '', model)})", "age", "s", decimals=1, w=3)
    b.stat("Since last prediction", "Time since any replica last saw a prediction.",
           f"time() - max({b.sel(cat.LAST_PREDICTION, '', model)})", "idle", "s", decimals=1, w=3)
    b.stat("Accuracy (window)", "Accuracy of the joined predictions in the sidecars' performance "
           "window, the mean over replicas.", f"avg({b.sel(cat.ACCURACY, '', model)})", "accuracy",
           "percentunit", decimals=1, w=3, thresholds=(config.performance.accuracy_min,), reverse=True,
           no_value="no labels")
    up = b.per_model(b.sel(cat.UPSTREAM_UP))
    b.table("Replicas", "Each replica (scrape target) serving the model: its version, reference "
            "profile, health and load.", [
                ("Model server", f"max by (instance) (\n{up}\n)", ""),
                ("Requests/s", f"sum by (instance) (rate({requests}[{r}]))", "reqps"),
                ("Drifting features",
                 f"sum by (instance) ({b.sel(cat.DRIFT_DETECTED, '', model)})", "short", 0),
                ("Model memory (RSS)", f"max by (instance) (\n{b.per_model(b.sel(cat.MODEL_MEMORY_RSS))}\n)",
                 "bytes"),
            ], keep=("instance",), sort_by="instance", descending=False, w=12, h=6,
            mappings={"Model server": HEALTH})
    t = b.targets()
    versions = f"group by ({t}, version) ({b.sel(cat.MODEL_INFO, '', model)})"
    b.table("Versions and reference profiles", "The model version each replica serves "
            "(modelmon_model_info) and the reference profile its drift is computed against "
            "(modelmon_reference_profile_info): during a rollout they differ between replicas. "
            "A replica without a profile shows its version alone.",
            [("", f"{versions}\n* on ({t}) group_left (profile_hash, profile_model_version, created_at)\n"
                  f"group by ({t}, profile_hash, profile_model_version, created_at) "
                  f"({b.sel(cat.PROFILE_INFO, '', model)})\nor\n{versions}", "")],
            keep=("instance", "version", "profile_hash", "profile_model_version", "created_at"),
            sort_by="instance", descending=False, w=12, h=6)

    # --- traffic and latency --------------------------------------------------------------------
    b.row("Traffic and latency")
    b.timeseries("Requests by code", f"{cat.REQUESTS.help} All replicas.",
                 [(f"sum by (code) (rate({requests}[{r}]))", "{{code}}")], "reqps")
    b.timeseries("Latency quantiles", "Request latency as the sidecar sees it (receiving the "
                 "request to sending the last byte), all replicas. Line: the latency SLO's threshold.",
                 [(f"histogram_quantile({qt:g}, sum by (le) (rate({latency}[{r}])))", f"p{qt * 100:g}")
                  for qt in config.traffic.quantiles], "s",
                 thresholds=(config.latency_slo.threshold_seconds,))
    b.heatmap("Latency distribution", "Requests per second in each latency bucket "
              f"({cat.REQUEST_DURATION.exposed_name}), all replicas.",
              f"sum by (le) (rate({latency}[{r}]))", "s", w=8)
    overhead = b.sel(cat.OVERHEAD, "bucket", model)
    b.timeseries("Sidecar overhead", f"{cat.OVERHEAD.help}",
                 [(f"histogram_quantile({qt:g}, sum by (le) (rate({overhead}[{r}])))", f"p{qt * 100:g}")
                  for qt in (0.5, 0.99)], "s")
    b.timeseries("Upstream errors by reason", cat.UPSTREAM_ERRORS.help,
                 [(f"sum by (reason) (rate({b.sel(cat.UPSTREAM_ERRORS, '', model)}[{r}]))",
                   "{{reason}}")], "reqps")
    b.timeseries("Requests in flight", cat.IN_FLIGHT.help,
                 [(f"sum({b.sel(cat.IN_FLIGHT, '', model)})", "in flight")], "short")

    # --- drift --------------------------------------------------------------------------------
    b.row("Drift")
    score = b.sel(cat.DRIFT_SCORE, "", model, method)
    b.timeseries("Drift score by feature ($method)", f"{cat.DRIFT_SCORE.help} The highest replica "
                 "per feature; choose the method above.",
                 [(f"max by (feature) ({score})", "{{feature}}")], "short", w=12, h=9)
    b.table("Features ranked by drift ($method)", "Every monitored feature, most drifted first: "
            "its score (method chosen above), the verdict of the sidecar's calibrated test, the "
            "smallest p-value of its tests and the values in the window (the highest replica).", [
                ("Score", f"max by (feature) ({score})", "short"),
                ("Verdict", f"max by (feature) ({b.sel(cat.DRIFT_DETECTED, '', model)})", ""),
                ("p-value", f"min by (feature) ({b.sel(cat.DRIFT_P_VALUE, '', model)})", "sci", 2),
                ("Window values", f"max by (feature) ({b.sel(cat.WINDOW_SAMPLES, '', model)})", "short", 0),
            ], keep=("feature",), sort_by="Score", w=12, h=9, decimals=4,
            mappings={"Verdict": VERDICT})

    # --- one feature against its reference -------------------------------------------------------
    b.row("Feature $feature against its reference")
    live = b.sel(cat.FEATURE_VALUE, "bucket", model, feature)
    live_n = b.sel(cat.FEATURE_VALUE, "count", model, feature)
    b.bars("Live share per bin", "Share of the feature's finite values in each reference bin "
           "(upper bound shown), all replicas, over the dashboard's time range. Compare with the "
           "reference beside it.",
           [Target(f"sum by (le) (increase({live}[{RANGE}]))\n/ ignoring (le) group_left\n"
                   f"sum(increase({live_n}[{RANGE}]))", "{{le}}", True, PromQueryFormat.HEATMAP)],
           "percentunit", max_=1, h=11)
    ref = b.sel(cat.REFERENCE_VALUE, "bucket", model, feature)
    ref_n = b.sel(cat.REFERENCE_VALUE, "count", model, feature)
    b.bars("Reference share per bin", "Share of the reference profile's values in each bin "
           "(modelmon_reference_value: static counts from the training data).",
           [Target(f"max by (le) ({ref})\n/ ignoring (le) group_left\nmax({ref_n})", "{{le}}", True,
                   PromQueryFormat.HEATMAP)], "percentunit", max_=1, h=11)
    b.timeseries("Window mean against the reference mean", "Mean of the feature's values in the "
                 "sidecars' sliding window (each replica) and in the reference profile.",
                 [(f"{b.sel(cat.FEATURE_WINDOW_MEAN, '', model, feature)}", "live {{instance}}"),
                  (f"max({b.sel(cat.REFERENCE_MEAN, '', model, feature)})", "reference")], "short",
                 min_=None)
    categories = b.sel(cat.FEATURE_CATEGORY, "", model, feature)
    b.table("Category shares against the reference", "A categorical feature's share of values "
            "per category over the dashboard's time range, all replicas, beside the reference "
            "profile's share (__other__: categories outside the reference's top ones).", [
                ("Live share", f"sum by (category) (increase({categories}[{RANGE}]))\n"
                               f"/ ignoring (category) group_left\nsum(increase({categories}[{RANGE}]))",
                 "percentunit"),
                ("Reference share", f"max by (category) "
                                    f"({b.sel(cat.REFERENCE_CATEGORY, '', model, feature)})", "percentunit"),
            ], keep=("category",), sort_by="Reference share", w=24, h=7, decimals=3)

    # --- data quality ------------------------------------------------------------------------------
    b.row("Data quality")
    q = config.quality
    missing = b.sel(cat.MISSING_RATIO, "", model)
    b.timeseries("Missing above the reference", "Share of rows in the window where a feature was "
                 "NaN, null or absent, minus the reference's missing share, the worst replica. "
                 "Line: ModelmonFeatureMissingHigh's margin.",
                 [(f"max by (feature) (\n{missing}\n-\n{b.sel(cat.REFERENCE_MISSING_RATIO, '', model)}\n)",
                   "{{feature}}")], "percentunit", min_=None, thresholds=(q.missing_margin,))
    b.timeseries("Out of the reference range", f"{cat.OUT_OF_RANGE_RATIO.help} The worst replica. "
                 "Line: ModelmonFeatureOutOfRange's threshold.",
                 [(f"max by (feature) ({b.sel(cat.OUT_OF_RANGE_RATIO, '', model)})", "{{feature}}")],
                 "percentunit", thresholds=(q.out_of_range_margin,))
    unseen = b.sel(cat.QUALITY_EVENTS, "", model, 'kind="unseen_category"')
    values = f"sum by (feature) (rate({b.sel(cat.FEATURE_CATEGORY, '', model)}[{r}]))"
    b.timeseries("Unseen categories", "Share of a categorical feature's values that the reference "
                 "never saw, all replicas. Line: ModelmonUnseenCategories' margin (over the "
                 "reference's __other__ share).",
                 [(ratio_or_zero(f"sum by (feature) (rate({unseen}[{r}]))", values), "{{feature}}")],
                 "percentunit", thresholds=(q.unseen_margin,))
    b.timeseries("Data-quality events by kind", cat.QUALITY_EVENTS.help,
                 [(f"sum by (feature, kind) (rate({b.sel(cat.QUALITY_EVENTS, '', model)}[{r}]))",
                   "{{feature}} {{kind}}")], "cps", w=12)
    b.timeseries("Payload errors by reason", cat.PAYLOAD_ERRORS.help,
                 [(f"sum by (reason) (rate({b.sel(cat.PAYLOAD_ERRORS, '', model)}[{r}]))", "{{reason}}")],
                 "cps", w=12)

    # --- predictions -----------------------------------------------------------------------------
    b.row("Predictions")
    role = 'role="output"'
    outputs = f"group by ({t}, model, feature) ({b.sel(cat.FEATURE_INFO, '', model, role)})"
    predicted = (f"sum by (feature, category) (\n  rate({b.sel(cat.FEATURE_CATEGORY, '', model)}[{r}])\n"
                 f"  and on ({t}, model, feature)\n  {outputs}\n)")
    b.timeseries("Predicted class shares", "Share of predictions per class (categorical outputs), "
                 "all replicas.",
                 [(f"{predicted}\n/ ignoring (category) group_left\nsum by (feature) (\n{predicted}\n)",
                   "{{feature}} = {{category}}")], "percentunit", max_=1)
    b.timeseries("Numeric predictions: window mean", "Mean of numeric outputs in the sliding window "
                 "(each replica) against the reference mean.",
                 [(f"{b.sel(cat.FEATURE_WINDOW_MEAN, '', model)}\nand on ({t}, model, feature)\n"
                   f"{outputs}", "{{feature}} {{instance}}"),
                  (f"max by (feature) (\n  {b.sel(cat.REFERENCE_MEAN, '', model)}\n"
                   f"  and on ({t}, model, feature)\n  {outputs}\n)", "{{feature}} reference")],
                 "short", min_=None)
    b.timeseries("Prediction drift ($method)", "Drift score of the outputs (prediction drift), the "
                 "highest replica.",
                 [(f"max by (feature) (\n  {score}\n  and on ({t}, model, feature)\n  {outputs}\n)",
                   "{{feature}}")], "short")

    # --- performance -----------------------------------------------------------------------------
    b.row("Performance (once labels arrive)")
    joined = b.sel(cat.LABELS_JOINED, "", model)
    b.timeseries("Accuracy", "Accuracy in each sidecar's performance window (classification). "
                 "Line: ModelmonAccuracyLow's threshold.",
                 [(f"{b.sel(cat.ACCURACY, '', model)}", "{{instance}}")], "percentunit", max_=1,
                 thresholds=(config.performance.accuracy_min,))
    b.timeseries("F1 score by class", cat.F1.help,
                 [(f"avg by (class) ({b.sel(cat.F1, '', model)})", "{{class}}")], "percentunit", max_=1)
    b.timeseries("Precision and recall by class", "Precision and recall of each class in the "
                 "performance window, the mean over replicas.",
                 [(f"avg by (class) ({b.sel(cat.PRECISION, '', model)})", "precision {{class}}"),
                  (f"avg by (class) ({b.sel(cat.RECALL, '', model)})", "recall {{class}}")],
                 "percentunit", max_=1)
    b.timeseries("Regression error", "MAE, RMSE and mean error (bias) of joined regression "
                 "predictions in the performance window, in the label's unit, the mean over replicas.",
                 [(f"avg({b.sel(cat.MAE, '', model)})", "MAE"),
                  (f"avg({b.sel(cat.RMSE, '', model)})", "RMSE"),
                  (f"avg({b.sel(cat.BIAS, '', model)})", "mean error")], "short", min_=None)
    b.timeseries("Label coverage", "Labels joined per record analysed, all replicas: the share of "
                 "predictions whose ground truth has arrived.",
                 [(f"sum(rate({joined}[{r}]))\n/\nsum(rate({b.sel(cat.RECORDS_ANALYSED, '', model)}[{r}]))",
                   "labelled")], "percentunit", max_=1)
    delay = b.sel(cat.LABEL_DELAY, "bucket", model)
    b.timeseries("Label delay", f"{cat.LABEL_DELAY.help} Quantiles over all replicas.",
                 [(f"histogram_quantile({qt:g}, sum by (le) (rate({delay}[{r}])))", f"p{qt * 100:g}")
                  for qt in (0.5, 0.9)], "s")

    # --- segments ----------------------------------------------------------------------------------
    b.row("Segments (models[].segments)")

    def per_group(num: cat.MetricSpec, den: cat.MetricSpec, num_suffix: str = "",
                  den_suffix: str = "") -> str:
        # A group without a positive (or correct) prediction has no such series: 0, not absent;
        # but only for a model that counts them at all (a positive class, classification).
        below = f"sum by (segment, value) (rate({b.sel(den, den_suffix, model)}[{r}]))"
        above = b.sel(num, num_suffix, model)
        return ratio_or_zero(f"sum by (segment, value) (rate({above}[{r}]))", below, above)

    b.timeseries("Positive-prediction rate by group", "Share of a group's predictions that are "
                 "the positive class (models[].positive_class): unequal rates between groups are "
                 "what disparate impact measures.",
                 [(per_group(cat.SEGMENT_POSITIVE, cat.SEGMENT_PREDICTIONS), "{{segment}}={{value}}")],
                 "percentunit", max_=1)
    b.timeseries("Accuracy by group", "Share of a group's joined predictions that matched their "
                 "label (classification).",
                 [(per_group(cat.SEGMENT_CORRECT, cat.SEGMENT_LABELS), "{{segment}}={{value}}")],
                 "percentunit", max_=1)
    b.timeseries("MAE by group", "Mean absolute error of a group's joined predictions "
                 "(regression), in the label's unit.",
                 [(per_group(cat.SEGMENT_ABS_ERROR, cat.SEGMENT_ABS_ERROR, "sum", "count"),
                   "{{segment}}={{value}}")], "short")

    # --- model server resources ------------------------------------------------------------------
    b.row("Model server resources")
    b.timeseries("Model memory (RSS)", f"{cat.MODEL_MEMORY_RSS.help} Each replica.",
                 [(f"max by (instance) (\n{b.per_model(b.sel(cat.MODEL_MEMORY_RSS))}\n)", "{{instance}}")],
                 "bytes")
    in_model = 'cgroup="model"'
    b.timeseries("Container memory / limit", "Memory charged to the model container's cgroup "
                 "against its limit, each replica (absent without a limit or when the model's cgroup "
                 "is not visible). Lines: ModelmonMemoryNearLimit's thresholds.",
                 [(f"max by (instance) (\n{b.per_model(b.sel(cat.CGROUP_MEMORY_USAGE, '', in_model))}\n"
                   f"/\n{b.per_model(b.sel(cat.CGROUP_MEMORY_LIMIT, '', in_model))}\n)", "{{instance}}")],
                 "percentunit", max_=1,
                 thresholds=(config.resources.memory_warning, config.resources.memory_critical))
    b.timeseries("Model CPU", f"{cat.MODEL_CPU.help} In cores, each replica.",
                 [(f"max by (instance) (\n{b.per_model(f'rate({b.sel(cat.MODEL_CPU)}[{r}])')}\n)",
                   "{{instance}}")], "percentunit")

    scope = b.vars.matchers()
    feature_info = f"{cat.FEATURE_INFO.exposed_name}{{{scope}, {model}}}"
    scores = f"{cat.DRIFT_SCORE.exposed_name}{{{scope}, {model}}}"
    extra = (
        query_variable("feature", f"label_values({feature_info}, feature)",
                       "The feature the 'against its reference' row shows", multi=False),
        query_variable("method", f"label_values({scores}, method)",
                       "The drift score the drift panels show (psi, jensen_shannon, hellinger; "
                       "wasserstein for numeric features)", multi=False)
        .current(md.VariableOption(selected=True, text=DEFAULT_METHOD, value=DEFAULT_METHOD)),
    )
    return b.build(TITLE, UID, "One model in detail: traffic, drift, data quality, predictions, "
                   "performance, segments and resources.",
                   b.variables(model_multi=False, extra=extra))

