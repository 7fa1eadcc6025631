"""The "Fleet overview" board: every model at a glance, summed over its replicas by the recording
rules the alerts use, so the board shows what the alerts see."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as md

from ...metrics import catalogue as cat
from ..config import MixinConfig, seconds
from ..rules import RecordingRules
from . import model as model_board
from .board import Board, Target

UID = "modelmon-fleet"
FILE = "modelmon-fleet.json"
TITLE = "modelmon / Fleet overview"
TOP = 10  # features in the "worst drifting" views


def fleet_overview(config: MixinConfig, rules: RecordingRules) -> md.Dashboard:
    b = Board(config)
    model = 'model=~"$model"'
    m = "{{model}}"
    g = b.by("model")
    quantile = max(config.traffic.quantiles)
    # every quantile's rule records the same name; the quantile label tells them apart
    slowest = b.rec(rules.latency_quantiles[0], model, f'quantile="{quantile:g}"')
    rw = config.traffic.rate_window
    pw = config.performance.window
    dw = config.drift.window
    detail = (f"/d/{model_board.UID}/modelmon-model?var-model=${{__data.fields.model}}"
              "&${datasource:queryparam}&${__url_time_range}"
              + "".join(f"&${{{label}:queryparam}}" for label in b.vars.labels))
    b.note(f"_{TITLE}: every model, summed over its replicas by the recording rules the alerts "
           f"use._ Click a model for its detail board. What each alert means: "
           f"[runbook]({config.runbook_url}).")

    # --- now ------------------------------------------------------------------------------------
    b.row("Now")
    info = b.sel(cat.MODEL_INFO, "", model)
    b.stat("Models served", "Models the selected sidecars serve (modelmon_model_info).",
           f"count(group {g} ({info}))", "models", "short")
    b.stat("Sidecars up", "Scrape targets that answered their last scrape (Prometheus's `up`).",
           f"sum({b.raw('up')})", "up", "short", thresholds=(1,), reverse=True)
    b.stat("Sidecars down", "Scrape targets that did not answer their last scrape.",
           f"count({b.raw('up')} == 0) or vector(0)", "down", "short", thresholds=(1,))
    b.stat("Models drifting", "Models whose in-process verdict (modelmon_model_drift_detected, "
           "corrected across the model's features) reports drift on at least one replica.",
           f"count(max {g} ({b.sel(cat.MODEL_DRIFT_DETECTED, '', model)}) == 1) or vector(0)",
           "drifting", "short", thresholds=(1,))
    alerts = b.alerts('alertname=~"Modelmon.+"', 'alertname!="ModelmonWatchdog"',
                             'alertstate="firing"')
    b.stat("modelmon alerts firing", "modelmon alerts firing now (Prometheus's ALERTS series; the "
           "Watchdog, always firing, is left out).", f"count({alerts}) or vector(0)", "firing",
           "short", thresholds=(1,))
    b.stat("Requests/s", f"Requests per second to every selected model ({rules.request_rate.record}).",
           f"sum({b.rec(rules.request_rate, model)})", "req/s", "reqps", decimals=1)

    # 1 per replica whose model server passes its probe, 0 per one that fails: summed, 0 (not
    # nothing) when every replica is down
    served = b.per_model(b.sel(cat.UPSTREAM_UP))
    in_model = 'cgroup="model"'
    memory = b.per_model(f"{b.sel(cat.CGROUP_MEMORY_USAGE, '', in_model)}\n/\n"
                         f"{b.sel(cat.CGROUP_MEMORY_LIMIT, '', in_model)}")
    b.table("Models", "One row per model, summed over its replicas. Rates and ratios over "
            f"{rw} (traffic) and {pw} (performance), from the recording rules; the age of the model "
            "and of its last prediction from the sidecars. Click a model for its detail board.", [
                ("Requests/s", f"sum {g} ({b.rec(rules.request_rate, model)})", "reqps"),
                ("5xx ratio", f"max {g} ({b.rec(rules.error_ratio, model)})", "percentunit"),
                (f"p{quantile * 100:g} latency",
                 f"max {g} ({slowest})", "s"),
                ("Healthy replicas", f"sum {g} (\n{served}\n)", "short", 0),
                ("Memory / limit", f"max {g} (\n{memory}\n)", "percentunit"),
                ("Model age", f"time() - max {g} ({b.sel(cat.MODEL_TRAINED, '', model)})", "s"),
                ("Since last prediction", f"time() - max {g} ({b.sel(cat.LAST_PREDICTION, '', model)})", "s"),
                ("Drifting features", f"sum {g} (max {b.by('model', 'feature')} "
                                      f"({b.sel(cat.DRIFT_DETECTED, '', model)}))", "short", 0),
                (f"Accuracy {pw}", f"max {g} ({b.rec(rules.accuracy, model)})", "percentunit"),
                (f"MAE {pw}", f"max {g} ({b.rec(rules.mae, model)})", "short"),
                (f"Labelled {pw}", f"max {g} ({b.rec(rules.join_ratio, model)})", "percentunit"),
            ], keep=(*b.agg, "model"), sort_by="Requests/s", h=9,
            links={"model": ("Model detail", detail)})

    # --- traffic --------------------------------------------------------------------------------
    b.row("Traffic")
    t = config.traffic
    b.timeseries("Requests/s by model", f"Inference requests per second, all replicas ({rw} rate).",
                 [(b.rec(rules.request_rate, model), m)], "reqps")
    b.timeseries("5xx ratio by model", "Share of requests answered 5xx: model errors and the "
                 f"sidecar's 502/504 ({rw}). Lines: the warning and critical alert thresholds.",
                 [(b.rec(rules.error_ratio, model), m)], "percentunit",
                 thresholds=(t.error_ratio_warning, t.error_ratio_critical))
    b.timeseries(f"p{quantile * 100:g} latency by model", f"The {quantile:g} quantile of request "
                 f"latency, all replicas ({rw}). Line: the latency SLO's threshold.",
                 [(slowest, m)], "s",
                 thresholds=(config.latency_slo.threshold_seconds,))

    # --- health and resources -----------------------------------------------------------------
    b.row("Health and resources")
    b.timeseries("Healthy replicas by model", "Replicas whose model server passes its health "
                 "probe (modelmon_upstream_up), per model.",
                 [(f"sum {g} (\n{served}\n)", m)], "short", decimals=0)
    r = config.resources
    b.timeseries("Model memory / limit", "Memory charged to the model container's cgroup against "
                 "its limit, the fullest replica per model. Lines: the alert thresholds.",
                 [(f"max {g} (\n{memory}\n)", m)], "percentunit", max_=1,
                 thresholds=(r.memory_warning, r.memory_critical))
    f = config.freshness
    b.timeseries("Since last prediction", "Seconds since any replica last saw a prediction. Line: "
                 "ModelmonNoPredictions' threshold.",
                 [(f"time() - max {g} ({b.sel(cat.LAST_PREDICTION, '', model)})", m)], "s",
                 thresholds=(seconds(f.no_predictions_after),))
    b.bars("Model age", "Time since the model was trained (models[].trained_at, else the "
           f"artefact's modification time). ModelmonModelStale fires after {f.model_max_age}.",
           [Target(f"time() - max {g} ({b.sel(cat.MODEL_TRAINED, '', model)})", m, True)], "s",
           w=24, h=5, decimals=1)

    # --- drift ----------------------------------------------------------------------------------
    b.row("Drift")
    # one method per kind of feature: the recorded PSI and Jensen-Shannon of categorical
    # features share the record name and are on other scales
    methods = f'method=~"{rules.ks.labels["method"]}|{rules.tvd.labels["method"]}"'
    fleet = b.rec(rules.drift_score, model, methods)
    top = f"topk({TOP}, max {b.by('model', 'feature')} ({fleet}))"
    b.table(f"Worst drifting features (fleet, {dw})", "The features furthest from their reference, "
            f"all replicas' values of the last {dw} together: the Kolmogorov-Smirnov statistic for "
            "numeric features, the total-variation distance for categorical ones "
            "(the recording rules of ModelmonFleetDrift; 0 = identical, 1 = disjoint). "
            "Replicas drifting: how many replicas' own verdict reports drift now.", [
                ("Fleet drift score", top, "short"),
                ("Replicas drifting", f"sum {b.by('model', 'feature')} "
                                      f"({b.sel(cat.DRIFT_DETECTED, '', model)})\n"
                                      f"and {b.on('model', 'feature')}\n{top}", "short", 0),
            ], keep=(*b.agg, "model", "feature"), sort_by="Fleet drift score", w=12, h=9,
            links={"model": ("Model detail", detail)})
    b.timeseries(f"Worst drifting features over time (fleet, {dw})", "The same fleet drift score "
                 f"over time, the {TOP} highest. Line: ModelmonFleetDrift's threshold.",
                 [(top, "{{model}} {{feature}}")], "short", w=12, h=9,
                 thresholds=(min(config.drift.ks_threshold, config.drift.tvd_threshold),))

    # --- performance ----------------------------------------------------------------------------
    b.row("Performance (models with labels)")
    p = config.performance
    b.timeseries(f"Accuracy ({pw})", "Share of joined classification predictions that matched "
                 "their label, all replicas. Line: ModelmonAccuracyLow's threshold.",
                 [(b.rec(rules.accuracy, model), m)], "percentunit", max_=1,
                 thresholds=(p.accuracy_min,))
    b.timeseries(f"MAE ({pw})", "Mean absolute error of joined regression predictions, in the "
                 "label's unit, all replicas.", [(b.rec(rules.mae, model), m)], "short")
    b.timeseries(f"Labelled predictions ({pw})", "Labels joined per record analysed: the share "
                 "of predictions whose ground truth has arrived (label coverage).",
                 [(b.rec(rules.join_ratio, model), m)], "percentunit", max_=1)

    # --- alerts ---------------------------------------------------------------------------------
    b.row("Alerts")
    active = b.alerts('alertname=~"Modelmon.+"', 'alertname!="ModelmonWatchdog"')
    b.table("modelmon alerts now", "modelmon alerts pending or firing (Prometheus's ALERTS "
            "series): pending until the condition has held for the alert's `for`. Each is "
            f"explained in the [runbook]({config.runbook_url}).",
            [("", active, "")], keep=("alertname", "alertstate", "severity", *b.agg, "model",
                                      "feature", "instance"), sort_by="severity", h=8,
            descending=False,
            links={"alertname": ("Runbook", f"{config.runbook_url}#${{__data.fields.alertname}}"),
                   "model": ("Model detail", detail)})
    return b.build(TITLE, UID, "Every model the modelmon sidecars serve, at a glance.",
                   b.variables())
