"""Recording rules: the fleet view, per model (and feature, class, segment), summed over every
replica. Names follow ``level:metric:operations``; the level names the labels kept besides the
configured aggregation labels (``job`` by default), and the window is part of the operation.

What PromQL can and cannot compute here:

- numeric drift: the Kolmogorov-Smirnov statistic, from the cumulative ``le`` buckets of the
  live histogram (summed over replicas) against the reference histogram. PSI, Jensen-Shannon and
  total variation need per-bin shares, i.e. the difference of adjacent buckets, and PromQL has no
  way to pair a bucket with the one below it: they would need a non-cumulative series per bin.
  The in-process ``modelmon_drift_score`` has them per replica;
- categorical drift: per-category counts are not cumulative, so total variation, PSI and
  Jensen-Shannon all follow (PSI and JS on shares smoothed by ``drift.smoothing``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..metrics import catalogue as cat
from .config import MixinConfig, seconds
from .promql import PromQL, Rule, indent, ratio_or_zero

LN2 = math.log(2)
OTHER = "__other__"
PROFILE_HASH = "profile_hash"  # the fleet drift rules' series are per reference profile


def le_string(edge: float) -> str:
    """The ``le`` label value of a latency bucket boundary (Go's float format, as exposed)."""
    return cat.le_value(edge)


@dataclass(frozen=True)
class Group:
    name: str
    rules: tuple[Rule, ...]


class RecordingRules:
    """Every recording rule for one configuration; alerts refer to them by attribute."""

    def __init__(self, config: MixinConfig) -> None:
        self.c = config
        self.q = q = PromQL(config)
        t = config.traffic
        rw = t.rate_window
        g = q.by("model")

        # --- traffic -------------------------------------------------------------------------
        routes = t.route_matcher  # the inference routes by default, as the latency SLO counts
        requests = q.sel(cat.REQUESTS, extra=routes)
        self.request_rate = Rule(
            f"model:modelmon_requests:rate{rw}",
            f"sum {g} (rate({requests}[{rw}]))",
            help=f"requests per second ({routes or 'all routes'}), all replicas")
        errors = q.sel(cat.REQUESTS, extra=", ".join(m for m in (routes, 'code=~"5.."') if m))
        self.error_ratio = Rule(
            f"model:modelmon_requests:error_ratio_rate{rw}",
            # A model without any 5xx has no such series: recorded as 0, not left absent, so
            # dashboards show 0% and a query `== 0` finds it.
            ratio_or_zero(f"sum {g} (rate({errors}[{rw}]))", f"sum {g} (rate({requests}[{rw}]))"),
            help=f"share of requests ({routes or 'all routes'}) answered 5xx (model errors and the "
                 "sidecar's 502/504)")
        bucket = q.sel(cat.REQUEST_DURATION, "bucket")
        self.latency_quantiles = tuple(
            Rule(f"model_quantile:modelmon_request_duration_seconds:histogram_quantile_rate{rw}",
                 f"histogram_quantile({qt:g}, sum {q.by('model', 'le')} (rate({bucket}[{rw}])))",
                 {"quantile": f"{qt:g}"}, help=f"{qt:g} quantile of request latency, all replicas")
            for qt in t.quantiles)

        # --- latency SLO: share of requests slower than the threshold, per burn window --------
        slo = config.latency_slo
        route = slo.route_matcher
        le = le_string(slo.threshold_seconds)
        windows = sorted({w for b in slo.burn_windows for w in (b.long, b.short)}, key=seconds)
        self.slow_ratio: dict[str, Rule] = {}
        self.slo_request_rate: dict[str, Rule] = {}
        for w in windows:
            count = f"sum {g} (rate({q.sel(cat.REQUEST_DURATION, 'count', route)}[{w}]))"
            self.slo_request_rate[w] = Rule(
                f"model:modelmon_request_duration_seconds:rate{w}", count,
                help=f"requests per second the latency SLO counts, over {w} (the burn-rate "
                     "alerts' minimum-traffic guard)")
            within = ", ".join(m for m in (route, f'le="{le}"') if m)
            fast = f"sum {g} (rate({q.sel(cat.REQUEST_DURATION, 'bucket', within)}[{w}]))"
            self.slow_ratio[w] = Rule(
                f"model:modelmon_request_duration_seconds:slow_ratio_rate{w}",
                f"(\n{indent(count)}\n-\n{indent(fast)}\n)\n/\n{count}",
                help=f"share of requests slower than {slo.threshold_seconds:g} s over {w}")

        # --- drift, fleet-wide -----------------------------------------------------------------
        d = config.drift
        dw = d.window
        # Per reference profile: every replica's series are labelled with its profile's hash
        # (modelmon_reference_profile_info{profile_hash}) and summed per model, feature and hash.
        # During a rollout the replicas of a model run different profiles (other bucket edges,
        # other top categories): summed together they would show drift where each replica matches
        # its own reference. A replica gone (or restarted with another profile) drops out of the
        # join, with the counts of its window.
        gf = q.by("model", "feature", PROFILE_HASH)
        of = q.on("model", "feature", PROFILE_HASH)
        profile = f"group {q.by('instance', 'model', PROFILE_HASH)} ({q.sel(cat.PROFILE_INFO)})"

        def per_profile(expr: str) -> str:
            return f"{expr}\n* {q.on('instance', 'model')} group_left ({PROFILE_HASH})\n{profile}"

        live_count = f"increase({q.sel(cat.FEATURE_VALUE, 'count')}[{dw}])"
        self.numeric_count = Rule(
            f"model_feature:modelmon_feature_value:count_increase{dw}",
            f"sum {gf} (\n{indent(per_profile(live_count))}\n)",
            help="finite values of a numeric feature, all replicas running one reference profile")
        live_buckets = q.sel(cat.FEATURE_VALUE, "bucket")
        gl = q.by("model", "feature", "le", PROFILE_HASH)
        live_cdf = (f"sum {gl} (\n{indent(per_profile(f'increase({live_buckets}[{dw}])'))}\n)\n"
                    f"/ {of} group_left\n{q.rec(self.numeric_count)}")
        ref_cdf = (f"max {gl} (\n{indent(per_profile(q.sel(cat.REFERENCE_VALUE, 'bucket')))}\n)\n"
                   f"/ {of} group_left\n"
                   f"max {gf} (\n{indent(per_profile(q.sel(cat.REFERENCE_VALUE, 'count')))}\n)")
        score = f"model_feature:modelmon_drift_score:increase{dw}"
        self.drift_score = score
        self.ks = Rule(
            score,
            f"max {gf} (abs(\n  (\n{indent(live_cdf, 4)}\n  )\n"
            f"  - {q.on('model', 'feature', 'le', PROFILE_HASH)}\n  (\n{indent(ref_cdf, 4)}\n  )\n))",
            {"method": "ks"},
            help="Kolmogorov-Smirnov statistic of the binned live values of all replicas against "
                 "the reference")
        gc = q.by("model", "feature", "category", PROFILE_HASH)
        oc = q.on("model", "feature", "category", PROFILE_HASH)
        self.category_count = Rule(
            f"model_feature_category:modelmon_feature_category:increase{dw}",
            f"sum {gc} (\n{indent(per_profile(f'increase({q.sel(cat.FEATURE_CATEGORY)}[{dw}])'))}\n)",
            help="values per category, all replicas")
        self.categorical_count = Rule(
            f"model_feature:modelmon_feature_category:count_increase{dw}",
            f"sum {gf} ({q.rec(self.category_count)})",
            help="values of a categorical feature, all replicas")
        live_share = f"{q.rec(self.category_count)}\n/ {of} group_left\n{q.rec(self.categorical_count)}"
        ref_share = f"max {gc} (\n{indent(per_profile(q.sel(cat.REFERENCE_CATEGORY)))}\n)"
        self.tvd = Rule(
            score,
            f"0.5 * sum {gf} (abs(\n  (\n{indent(live_share, 4)}\n  )\n  - {oc}\n{indent(ref_share, 2)}\n))",
            {"method": "tvd"},
            help="total-variation distance between the live category shares of all replicas and "
                 "the reference's")
        eps = repr(d.smoothing)
        self.live_smoothed = Rule(
            f"model_feature_category:modelmon_feature_category:smoothed_share_increase{dw}",
            f"(\n  (\n{indent(live_share, 4)}\n  )\n  + {eps}\n)\n/ {of} group_left ()\n"
            f"(1 + {eps} * count {gf} ({q.rec(self.category_count)}))",
            help=f"live share of each category, smoothed: (share + {eps}) / (1 + categories x {eps})")
        self.ref_smoothed = Rule(
            "model_feature_category:modelmon_reference_category_ratio:smoothed",
            f"({ref_share} + {eps})\n/ {of} group_left ()\n(1 + {eps} * count {gf} ({ref_share}))",
            help="reference share of each category, smoothed the same way")
        qs, ps = q.rec(self.live_smoothed), q.rec(self.ref_smoothed)
        self.psi = Rule(
            score,
            f"sum {gf} (\n  ({qs} - {oc} {ps})\n  * {oc}\n  ln({qs} / {oc} {ps})\n)",
            {"method": "psi"},
            help="population stability index of the smoothed category shares, all replicas")
        mean = f"(({ps} + {oc} {qs}) / 2)"
        kl_p = f"sum {gf} ({ps} * {oc} ln({ps} / {oc} {mean}))"
        kl_q = f"sum {gf} ({qs} * {oc} ln({qs} / {oc} {mean}))"
        self.jensen_shannon = Rule(
            score,
            f"sqrt(clamp_min(\n  (0.5 * {kl_p}\n   + {of}\n   0.5 * {kl_q})\n  / {LN2!r},\n  0\n))",
            {"method": "jensen_shannon"},
            help="Jensen-Shannon distance (base 2) of the smoothed category shares, all replicas")

        # --- performance, once labels arrive ---------------------------------------------------
        p = config.performance
        pw = p.window
        self.joined = Rule(
            f"model:modelmon_labels_joined:increase{pw}",
            f"sum {g} (increase({q.sel(cat.LABELS_JOINED)}[{pw}]))",
            help="labels joined to a prediction, all replicas")
        self.accuracy = Rule(
            f"model:modelmon_classification_accuracy:increase{pw}",
            f"sum {g} (increase({q.sel(cat.CORRECT)}[{pw}]))\n/ {q.on('model')}\n{q.rec(self.joined)}",
            help="accuracy of the predictions joined in the window, all replicas")
        confusion = f"increase({q.sel(cat.CONFUSION)}[{pw}])"
        gk = q.by("model", "class")
        ok = q.on("model", "class")

        def per_class(label: str) -> str:
            return f'sum {gk} (label_replace({confusion}, "class", "$1", "{label}", "(.*)"))'

        self.predicted = Rule(f"model_class:modelmon_confusion:predicted_increase{pw}",
                              per_class("predicted"),
                              help="joined predictions of each predicted class")
        self.actual = Rule(f"model_class:modelmon_confusion:actual_increase{pw}", per_class("actual"),
                           help="joined predictions of each actual class (its support)")
        diagonal = (f'label_replace(group {q.by("model", "actual")} ({q.sel(cat.CONFUSION)}), '
                    f'"predicted", "$1", "actual", "(.*)")')
        self.true_positives = Rule(
            f"model_class:modelmon_confusion:true_positives_increase{pw}",
            f'sum {gk} (label_replace(\n  {confusion}\n  and {q.on("model", "actual", "predicted")}\n'
            f'  {diagonal},\n  "class", "$1", "actual", "(.*)"\n))\n'
            f"or\n{q.rec(self.predicted)} * 0\nor\n{q.rec(self.actual)} * 0",
            help="joined predictions whose predicted class was the actual one (0 for classes "
                 "never right)")
        tp = q.rec(self.true_positives)
        self.precision = Rule(f"model_class:modelmon_classification_precision:increase{pw}",
                              f"{tp}\n/ {ok}\n{q.rec(self.predicted)}",
                              help="precision of each class (absent while never predicted)")
        self.recall = Rule(f"model_class:modelmon_classification_recall:increase{pw}",
                           f"{tp}\n/ {ok}\n{q.rec(self.actual)}",
                           help="recall of each class (absent while never actual)")
        pred, act = q.rec(self.predicted), q.rec(self.actual)
        self.f1 = Rule(f"model_class:modelmon_classification_f1_score:increase{pw}",
                       f"2 * {tp}\n/ {ok}\n(\n  ({pred} or {act} * 0)\n  + {ok}\n  ({act} or {pred} * 0)\n)",
                       help="F1 score of each class: 2 TP / (predicted + actual); 0 for a class "
                            "never predicted")

        def mean_of(sum_expr: str, count_spec: cat.MetricSpec, window: str) -> str:
            return f"{sum_expr}\n/\nsum {g} (increase({q.sel(count_spec, 'count')}[{window}]))"

        def inc(spec: cat.MetricSpec, window: str) -> str:
            return f"sum {g} (increase({q.sel(spec, 'sum')}[{window}]))"

        self.mae = Rule(f"model:modelmon_regression_mean_absolute_error:increase{pw}",
                        mean_of(inc(cat.REGRESSION_ABS_ERROR, pw), cat.REGRESSION_ABS_ERROR, pw),
                        help="mean absolute error of the joined regressions, all replicas")
        bw = p.mae_baseline_window
        self.mae_baseline = Rule(f"model:modelmon_regression_mean_absolute_error:increase{bw}",
                                 mean_of(inc(cat.REGRESSION_ABS_ERROR, bw), cat.REGRESSION_ABS_ERROR, bw),
                                 help="the same over the baseline window")
        squared = mean_of(inc(cat.REGRESSION_SQ_ERROR, pw), cat.REGRESSION_SQ_ERROR, pw)
        self.rmse = Rule(f"model:modelmon_regression_root_mean_squared_error:increase{pw}",
                         f"sqrt(\n{indent(squared)}\n)",
                         help="root mean squared error of the joined regressions, all replicas")
        self.bias = Rule(f"model:modelmon_regression_mean_error:increase{pw}",
                         mean_of(f"(\n  {inc(cat.REGRESSION_OVER, pw)}\n  -\n"
                                 f"  {inc(cat.REGRESSION_UNDER, pw)}\n)", cat.REGRESSION_OVER, pw),
                         help="mean of prediction - label (bias), all replicas")
        lw = p.labels_lookback
        analysed = q.sel(cat.RECORDS_ANALYSED)

        def join_ratio(window: str) -> Rule:
            return Rule(f"model:modelmon_labels_joined:ratio_rate{window}",
                        f"sum {g} (rate({q.sel(cat.LABELS_JOINED)}[{window}]))\n/\n"
                        f"sum {g} (rate({analysed}[{window}]))",
                        help=f"labels joined per record analysed over {window}")

        self.join_ratio = join_ratio(pw)
        self.join_ratio_usual = join_ratio(lw)

        # --- fairness, per segment group --------------------------------------------------------
        fa = config.fairness
        gv = q.by("model", "segment", "value")
        gs = q.by("model", "segment")
        os_ = q.on("model", "segment")

        def seg(spec: cat.MetricSpec) -> str:
            return f"sum {gv} (increase({q.sel(spec)}[{pw}]))"

        self.positive_rate = Rule(
            f"model_segment_value:modelmon_segment_positive_rate:increase{pw}",
            f"(\n  {seg(cat.SEGMENT_POSITIVE)}\n  or\n  ({seg(cat.SEGMENT_PREDICTIONS)} * 0)\n"
            f"  and {os_} group {gs} ({q.sel(cat.SEGMENT_POSITIVE)})\n)\n"
            f"/\n({seg(cat.SEGMENT_PREDICTIONS)} >= {fa.min_group_predictions})",
            help=f"share of a group's predictions that were the positive class (groups with at least "
                 f"{fa.min_group_predictions} predictions)")
        self.segment_accuracy = Rule(
            f"model_segment_value:modelmon_segment_accuracy:increase{pw}",
            f"(\n  {seg(cat.SEGMENT_CORRECT)}\n  or\n  ({seg(cat.SEGMENT_LABELS)} * 0)\n"
            f"  and {os_} group {gs} ({q.sel(cat.SEGMENT_CORRECT)})\n)\n"
            f"/\n({seg(cat.SEGMENT_LABELS)} >= {fa.min_group_labels})",
            help=f"accuracy of a group's joined predictions (groups with at least "
                 f"{fa.min_group_labels} labels)")
        pr, sa = q.rec(self.positive_rate), q.rec(self.segment_accuracy)
        self.disparate_impact = Rule(
            f"model_segment:modelmon_segment_disparate_impact:increase{pw}",
            f"min {gs} ({pr})\n/\nmax {gs} ({pr})",
            help="lowest / highest positive-prediction rate between the groups of a segment")
        self.accuracy_gap = Rule(
            f"model_segment:modelmon_segment_accuracy_gap:increase{pw}",
            f"max {gs} ({sa})\n-\nmin {gs} ({sa})",
            help="largest accuracy difference between the groups of a segment")

    def groups(self) -> list[Group]:
        return [
            Group("modelmon-traffic.rules", (self.request_rate, self.error_ratio, *self.latency_quantiles)),
            Group("modelmon-latency-slo.rules",
                  (*self.slo_request_rate.values(), *self.slow_ratio.values())),
            Group("modelmon-drift.rules", (
                self.numeric_count, self.ks, self.category_count, self.categorical_count, self.tvd,
                self.live_smoothed, self.ref_smoothed, self.psi, self.jensen_shannon)),
            Group("modelmon-performance.rules", (
                self.joined, self.accuracy, self.predicted, self.actual, self.true_positives,
                self.precision, self.recall, self.f1, self.mae, self.mae_baseline, self.rmse,
                self.bias, self.join_ratio, self.join_ratio_usual)),
            Group("modelmon-fairness.rules", (
                self.positive_rate, self.segment_accuracy, self.disparate_impact, self.accuracy_gap)),
        ]
