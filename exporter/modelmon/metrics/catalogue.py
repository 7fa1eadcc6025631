"""The metric catalogue: every metric modelmon exports, defined once.

Collectors build their families from these specs at scrape time; the metrics
reference in ``docs/metrics.md`` (and later the rules and dashboards) is
generated from the same list, so a name can never drift between them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    Sample,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

PREFIX = "modelmon_"

# Inference latency: 1 ms (a tiny tabular model) to 60 s (a large generative call).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
# Time spent inside the sidecar itself: tens of microseconds when all is well.
OVERHEAD_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)
PROBE_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


class Kind(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"
    INFO = "info"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its full name (without ``_total``/``_info`` suffix), type, help and labels."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    @property
    def exposed_name(self) -> str:
        """The name as it appears on ``/metrics`` (counters gain ``_total``, infos ``_info``)."""
        if self.kind is Kind.COUNTER:
            return self.name + "_total"
        if self.kind is Kind.INFO:
            return self.name + "_info"
        return self.name

    def counter(self) -> CounterMetricFamily:
        assert self.kind is Kind.COUNTER, self.name
        return CounterMetricFamily(self.name, self.help, labels=list(self.labels))

    def gauge(self) -> GaugeMetricFamily:
        assert self.kind is Kind.GAUGE, self.name
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))

    def histogram(self) -> HistogramMetricFamily:
        assert self.kind is Kind.HISTOGRAM, self.name
        return HistogramMetricFamily(self.name, self.help, labels=list(self.labels))

    def summary(self) -> SummaryMetricFamily:
        """A summary without quantiles: ``_sum`` and ``_count`` (add_metric(labels, count, sum))."""
        assert self.kind is Kind.SUMMARY, self.name
        return SummaryMetricFamily(self.name, self.help, labels=list(self.labels))

    def empty(self) -> Metric:
        """The family with no samples: what a collector's ``describe()`` declares."""
        return {Kind.COUNTER: self.counter, Kind.GAUGE: self.gauge, Kind.HISTOGRAM: self.histogram,
                Kind.SUMMARY: self.summary, Kind.INFO: self.info}[self.kind]()

    def of(self, samples: Mapping[tuple[str, ...], float]) -> CounterMetricFamily | GaugeMetricFamily:
        """A counter or gauge family holding ``samples`` (label values -> value), read from a
        snapshot so the dict may keep changing while the scrape runs."""
        family = self.counter() if self.kind is Kind.COUNTER else self.gauge()
        for labels, value in list(samples.items()):
            family.add_metric(labels, value)
        return family

    def info(self) -> InfoMetricFamily:
        assert self.kind is Kind.INFO, self.name
        # Info labels are passed as the value dict of add_metric([], {...}).
        return InfoMetricFamily(self.name, self.help)


def le_value(edge: float) -> str:
    """A bucket edge as Prometheus writes ``le``: Go's ``strconv.FormatFloat(edge, 'g', -1, 64)``
    (shortest round-trip digits; exponent form below 1e-4 and from 1e6 in magnitude, with at
    least two exponent digits), ``.0`` added to a plain integer, ``+Inf``/``-Inf``/``NaN``.

    This is what client_golang exposes and what Prometheus 3 normalises every histogram ``le``
    to, so live and reference buckets join whatever the server's version. client_python's
    ``floatToGoString`` differs for negative edges at or below -1e6 ("-1234567.0") and for
    magnitudes from 1e10 ("1e+010")."""
    if math.isinf(edge):
        return "+Inf" if edge > 0 else "-Inf"
    if math.isnan(edge):
        return "NaN"
    text = repr(edge)  # Python's shortest round-trip digits, the same digits as Go's
    if "e" in text or abs(edge) < 1e6:
        # Below 1e6 both write fixed notation the same way (Python ends integers in ".0" as
        # Prometheus does); below 1e-4 and from 1e16 both write exponent notation alike.
        return text
    # 1e6 <= |edge| < 1e16: Python writes "1234567.0", Go "1.234567e+06"
    minus = "-" if edge < 0 else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    digits = (whole + fraction).rstrip("0")
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{minus}{mantissa}e+{len(whole) - 1:02d}"


def add_histogram(family: HistogramMetricFamily, labels: list[str],
                  buckets: list[tuple[str, float]], sum_value: float | None) -> None:
    """Add one histogram to ``family``: its cumulative ``buckets`` (``le`` strings, +Inf last),
    ``_count`` (the +Inf bucket) always, and ``_sum`` when given (the caller passes None once a
    value below zero was seen) and no bucket threshold is negative.

    OpenMetrics 1.0 (Histogram): with negative thresholds the MetricPoint MUST NOT carry a sum,
    as it would no longer be a counter. client_python's ``add_metric`` then drops ``_count`` as
    well; the count is still a counter, and every query of the form
    ``rate(x_bucket) / ignoring(le) rate(x_count)`` needs it, so it is kept here."""
    family.add_metric(labels, buckets, None)
    names = dict(zip(family._labelnames, labels, strict=True))  # client_python's own field
    family.samples.append(Sample(family.name + "_count", names, buckets[-1][1], None))
    if sum_value is not None and float(buckets[0][0]) >= 0:
        family.samples.append(Sample(family.name + "_sum", names, sum_value, None))


def _m(
    name: str, kind: Kind, help: str, labels: Iterable[str] = (), buckets: tuple[float, ...] = ()
) -> MetricSpec:
    return MetricSpec(PREFIX + name, kind, help, tuple(labels), buckets)


C, G, H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM

# --- traffic through the proxy -------------------------------------------------------------
REQUESTS = _m(
    "requests", C,
    "Requests proxied to the model server, by model, route template and HTTP status code.",
    ("model", "route", "code"),
)
REQUEST_DURATION = _m(
    "request_duration_seconds", H,
    "Time from receiving a request to sending the last byte of its response, as seen by the sidecar.",
    ("model", "route"), LATENCY_BUCKETS,
)
OVERHEAD = _m(
    "sidecar_overhead_seconds", H,
    "Time a request spent in the sidecar itself (request duration minus time waiting on the upstream).",
    ("model", "route"), OVERHEAD_BUCKETS,
)
IN_FLIGHT = _m(
    "requests_in_flight", G, "Requests currently being proxied, by model.", ("model",),
)
UPSTREAM_ERRORS = _m(
    "upstream_errors", C,
    "Requests that failed to reach the model server or broke off, by model and reason "
    "(connect, timeout, reset).",
    ("model", "reason"),
)
CLIENT_CONNECTIONS = _m(
    "proxy_client_connections", G, "Client connections open on the traffic port (fast engine).",
)
CLIENT_CONNECTIONS_LIMIT = _m(
    "proxy_client_connections_limit", G,
    "Most client connections the traffic port holds at once (proxy.max_connections, lowered to fit "
    "the process's file descriptor limit); beyond it idle or slow connections are closed to make "
    "room (fast engine).",
)
CLIENT_CONNECTIONS_CLOSED = _m(
    "proxy_client_connections_closed", C,
    "Client connections the proxy closed to protect itself, by reason: limit (refused at the "
    "connection limit, 503), evicted (idle, or slow to send its request head, closed to make room), "
    "head_timeout (no complete request head within proxy.request_head_timeout_seconds, 408), "
    "body_timeout (a request body silent for proxy.request_body_timeout_seconds, 408), "
    "head_too_large (414/431, also trailer fields), pipeline_limit (more than 32 pipelined "
    "requests queued, 429), invalid_request (400), internal_error (500) (fast engine).",
    ("reason",),
)

# --- health ----------------------------------------------------------------------------------
UPSTREAM_UP = _m(
    "upstream_up", G, "1 if the last probe of the model server's health endpoint succeeded, else 0.",
)
UPSTREAM_PROBE_DURATION = _m(
    "upstream_probe_duration_seconds", G, "Duration of the last probe of the model server's health endpoint.",
)
UPSTREAM_PROBES = _m(
    "upstream_probes", C, "Probes of the model server's health endpoint, by result (success, failure).",
    ("result",),
)
DEPENDENCY_UP = _m(
    "dependency_up", G, "1 if the last probe of a declared dependency succeeded, else 0.", ("dependency",),
)
DEPENDENCY_PROBE_DURATION = _m(
    "dependency_probe_duration_seconds", G, "Duration of the last probe of a declared dependency.",
    ("dependency",),
)

# --- resources ---------------------------------------------------------------------------------
MODEL_PROCESS_UP = _m(
    "model_process_up", G,
    "1 if the model server's process was found (pid file, process name or shared process namespace).",
)
MODEL_MEMORY_RSS = _m(
    "model_memory_rss_bytes", G, "Resident memory of the model server's process and its children.",
)
MODEL_CPU = _m(
    "model_cpu_seconds", C, "CPU time (user + system) of the model server's process and its children.",
)
CGROUP_MEMORY_USAGE = _m(
    "cgroup_memory_usage_bytes", G,
    "Memory charged to a cgroup (memory.current or memory.usage_in_bytes); "
    "cgroup=model when the model's cgroup is visible, cgroup=self for the sidecar's own.",
    ("cgroup",),
)
CGROUP_MEMORY_LIMIT = _m(
    "cgroup_memory_limit_bytes", G,
    "Memory limit of a cgroup; absent when the cgroup has no limit.", ("cgroup",),
)

# --- models ------------------------------------------------------------------------------------
MODEL_INFO = _m(
    "model", Kind.INFO, "The model served, with its version (from config).", ("model", "version"),
)
MODEL_TRAINED = _m(
    "model_trained_timestamp_seconds", G,
    "When the model was trained or built (config trained_at, else the artefact's modification time).",
    ("model",),
)
LAST_PREDICTION = _m(
    "model_last_prediction_timestamp_seconds", G,
    "When the sidecar last saw a prediction (a proxied inference response or a pushed record).",
    ("model",),
)

# --- analysis pipeline ---------------------------------------------------------------------------
QUEUE_DEPTH = _m("analysis_queue_depth", G, "Items waiting in the analysis queue.")
QUEUE_CAPACITY = _m("analysis_queue_capacity", G, "Capacity of the analysis queue.")
RECORDS_DROPPED = _m(
    "analysis_dropped_records", C,
    "Records not analysed, by reason (queue_full, body_too_large, invalid_encoding: a body "
    "that does not inflate or an unknown content coding, invalid_json, invalid_record, "
    "analysis_error).",
    ("reason",),
)
RECORDS_ANALYSED = _m(
    "analysis_records", C, "Records (rows) analysed, as the protocol adapters read them, by model and "
    "source (proxy, push); a payload they cannot read counts as one.", ("model", "source"),
)
INGEST_REQUESTS = _m(
    "ingest_requests", C,
    "Push API requests, by handler (the path: /v1/records, /v1/labels) and HTTP status code.",
    ("handler", "code"),
)
AUTH_REFUSED = _m(
    "auth_refused_requests", C,
    "Admin-port requests refused for want of the bearer token (auth.token_file), by handler "
    "(the path: /v1/records, /v1/labels, /metrics, ...) and reason (missing_token, "
    "invalid_request, invalid_token, token_unavailable).",
    ("handler", "reason"),
)

# --- drift and data quality (models with a reference profile) ---------------------------------
PROFILE_INFO = _m(
    "reference_profile", Kind.INFO,
    "The reference profile a model's drift is computed against: its content hash, the model "
    "version it was built for and when.",
    ("model", "profile_hash", "profile_model_version", "created_at"),
)
FEATURE_INFO = _m(
    "feature", Kind.INFO,
    "A feature of the reference profile that the sidecar monitors, with its role in the profile: "
    "input (a model input) or output (a prediction: a class, score, probability or regression "
    "value). Static; targets (ground truth) are not monitored. Join on it to tell input drift "
    "from prediction drift.",
    ("model", "feature", "role"),
)
FEATURE_VALUE = _m(
    "feature_value", H,
    "Finite values of a numeric feature or output, counted cumulatively in the reference "
    "profile's bins (le = the profile's bin edges, the same as modelmon_reference_value's). "
    "_count always; _sum only while no value below zero was seen, in the reference or live "
    "(OpenMetrics: a sum that can fall is no counter), see modelmon_feature_window_mean.",
    ("model", "feature"),
)
FEATURE_WINDOW_MEAN = _m(
    "feature_window_mean", G,
    "Mean of a numeric feature's finite values in the sliding window (compare with "
    "modelmon_reference_mean); absent while the window holds none.",
    ("model", "feature"),
)
FEATURE_CATEGORY = _m(
    "feature_category", C,
    "Values of a categorical feature or output by category: the reference's top categories, "
    "others and unseen ones as __other__.",
    ("model", "feature", "category"),
)
REFERENCE_VALUE = _m(
    "reference_value", H,
    "The reference profile's values of a numeric feature, as a histogram of counts in its bins "
    "(static; le as on modelmon_feature_value, so both get the same le treatment by Prometheus 2 "
    "and 3): the reference share at or below an edge is _bucket / _count. _sum only when no "
    "reference value is below zero.",
    ("model", "feature"),
)
REFERENCE_MEAN = _m(
    "reference_mean", G, "Mean of a numeric feature's values in the reference profile (static).",
    ("model", "feature"),
)
REFERENCE_CATEGORY = _m(
    "reference_category_ratio", G, "Share of the reference data in each category.",
    ("model", "feature", "category"),
)
DRIFT_SCORE = _m(
    "drift_score", G,
    "Drift of a feature in the sliding window against the reference, by method (psi, "
    "jensen_shannon, hellinger, ks, wasserstein normalised by the reference std). "
    "Computed on a schedule; absent below the minimum sample count.",
    ("model", "feature", "method"),
)
DRIFT_SCORE_LOWER = _m(
    "drift_score_lower_bound", G,
    "Lower bound of the 95% confidence interval of a drift score in the sliding window, by "
    "method (wasserstein: the normalised Wasserstein distance, both samples' noise counted). "
    "Absent below the minimum sample count.",
    ("model", "feature", "method"),
)
DRIFT_SCORE_UPPER = _m(
    "drift_score_upper_bound", G,
    "Upper bound of the 95% confidence interval of a drift score in the sliding window, by "
    "method (as modelmon_drift_score_lower_bound).",
    ("model", "feature", "method"),
)
DRIFT_P_VALUE = _m(
    "drift_p_value", G,
    "p-value of a drift test in the sliding window, by method (chi2 on the merged bins, ks on "
    "the binned CDFs; numeric features also location and scale: rank tests on the bins with "
    "normal and squared normal scores).",
    ("model", "feature", "method"),
)
DRIFT_DETECTED = _m(
    "drift_detected", G,
    "1 if the feature's default verdict reports drift in the sliding window, else 0; absent "
    "below the minimum sample count.",
    ("model", "feature"),
)
MODEL_DRIFT_DETECTED = _m(
    "model_drift_detected", G,
    "1 if any feature drifted after a Bonferroni correction across the model's features, else 0.",
    ("model",),
)
WINDOW_SAMPLES = _m(
    "drift_window_samples", G, "Valid values of a feature in the sliding window.", ("model", "feature"),
)
MISSING_RATIO = _m(
    "feature_missing_ratio", G,
    "Share of rows in the sliding window where the feature was NaN, null or absent.", ("model", "feature"),
)
REFERENCE_MISSING_RATIO = _m(
    "reference_missing_ratio", G,
    "Share of the reference data where the feature was missing, to compare with "
    "modelmon_feature_missing_ratio.",
    ("model", "feature"),
)
OUT_OF_RANGE_RATIO = _m(
    "feature_out_of_range_ratio", G,
    "Share of a numeric feature's values in the sliding window outside the reference min..max.",
    ("model", "feature"),
)
QUALITY_EVENTS = _m(
    "data_quality_events", C,
    "Data-quality events per feature, by kind (nan, inf, null, absent, wrong_type, below_min, "
    "above_max, unseen_category).",
    ("model", "feature", "kind"),
)
PAYLOAD_ERRORS = _m(
    "payload_errors", C,
    "Payloads or records that could not be (fully) analysed, by model and reason: unrecognised "
    "or malformed payloads, tensors of the wrong shape, rows of the wrong length, features that "
    "do not match the profile. The traffic itself passed through untouched.",
    ("model", "reason"),
)
DRIFT_LAST_SUCCESS = _m(
    "drift_last_success_timestamp_seconds", G, "When the drift statistics were last computed.",
    ("model",),
)
DRIFT_COMPUTE_DURATION = _m(
    "drift_compute_duration_seconds", G, "Time the last drift computation took.", ("model",),
)

# --- ground truth and performance ----------------------------------------------------------
DELAY_BUCKETS: tuple[float, ...] = (
    1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0, 86400.0,
    2 * 86400.0, 7 * 86400.0, 30 * 86400.0,
)
LABELS = _m(
    "labels", C,
    "Ground-truth labels received, by outcome on arrival: joined (its prediction was waiting), "
    "unmatched (held until its prediction arrives or the TTL passes), duplicate, invalid.",
    ("outcome",),
)
LABELS_JOINED = _m(
    "labels_joined", C, "Labels joined to their prediction (on arrival or later), by model.", ("model",),
)
JOIN_BUFFER_ENTRIES = _m(
    "join_buffer_entries", G, "Predictions waiting for a label and labels waiting for a prediction.",
    ("kind",),
)
JOIN_EXPIRED = _m(
    "join_expired", C, "Predictions or labels dropped from the join buffer after the TTL, unjoined.",
    ("kind",),
)
JOIN_EVICTED = _m(
    "join_evicted", C, "Predictions or labels evicted from the full join buffer (oldest first).",
    ("kind",),
)
LABEL_DELAY = _m(
    "label_delay_seconds", H, "Time from a prediction to the arrival of its label.", ("model",),
    DELAY_BUCKETS,
)
CONFUSION = _m(
    "confusion", C,
    "Joined classification predictions by actual and predicted class (bounded classes; "
    "others as __other__): accuracy, precision, recall and F1 follow in PromQL.",
    ("model", "actual", "predicted"),
)
CORRECT = _m(
    "classification_correct", C,
    "Joined classification predictions that matched their label (accuracy = this / labels_joined).",
    ("model",),
)
REGRESSION_ABS_ERROR = _m(
    "regression_absolute_error", Kind.SUMMARY,
    "|prediction - label| of joined regression predictions: MAE over a range is "
    "rate(_sum) / rate(_count); _count counts the joined regressions.",
    ("model",),
)
REGRESSION_SQ_ERROR = _m(
    "regression_squared_error", Kind.SUMMARY,
    "(prediction - label)^2 of joined regression predictions: RMSE over a range is "
    "sqrt(rate(_sum) / rate(_count)).",
    ("model",),
)
REGRESSION_OVER = _m(
    "regression_overprediction", Kind.SUMMARY,
    "max(prediction - label, 0) of joined regression predictions; with "
    "modelmon_regression_underprediction the bias over a range is (rate(over_sum) - "
    "rate(under_sum)) / rate(_count).",
    ("model",),
)
REGRESSION_UNDER = _m(
    "regression_underprediction", Kind.SUMMARY,
    "max(label - prediction, 0) of joined regression predictions (see "
    "modelmon_regression_overprediction).",
    ("model",),
)
ACCURACY = _m(
    "classification_accuracy", G, "Accuracy of the predictions joined in the sliding window.", ("model",),
)
PRECISION = _m(
    "classification_precision", G,
    "Precision of a class over the predictions joined in the sliding window; absent while the "
    "class was never predicted.",
    ("model", "class"),
)
RECALL = _m(
    "classification_recall", G,
    "Recall of a class over the predictions joined in the sliding window; absent while no label "
    "was of the class.",
    ("model", "class"),
)
F1 = _m(
    "classification_f1_score", G,
    "F1 score of a class over the predictions joined in the sliding window (absent when its "
    "precision or recall is).",
    ("model", "class"),
)
MAE = _m(
    "regression_mean_absolute_error", G,
    "Mean absolute error of the predictions joined in the sliding window, in the label's unit.",
    ("model",),
)
RMSE = _m(
    "regression_root_mean_squared_error", G,
    "Root mean squared error of the predictions joined in the sliding window, in the label's unit.",
    ("model",),
)
BIAS = _m(
    "regression_mean_error", G,
    "Mean of (prediction - label) of the predictions joined in the sliding window (the bias; "
    "positive: the model predicts too high).",
    ("model",),
)
PERFORMANCE_SAMPLES = _m(
    "performance_window_samples", G, "Joined predictions in the performance sliding window.", ("model",),
)
SEGMENT_PREDICTIONS = _m(
    "segment_predictions", C,
    "Predictions per value of a configured segment feature (models[].segments).",
    ("model", "segment", "value"),
)
SEGMENT_POSITIVE = _m(
    "segment_positive_predictions", C,
    "Predictions of models[].positive_class per value of a configured segment feature: the "
    "positive-prediction rate of a group is this / modelmon_segment_predictions_total.",
    ("model", "segment", "value"),
)
SEGMENT_LABELS = _m(
    "segment_labels", C, "Labels joined to a prediction, per value of a configured segment feature.",
    ("model", "segment", "value"),
)
SEGMENT_CORRECT = _m(
    "segment_correct_predictions", C,
    "Joined classification predictions that matched their label, per value of a configured "
    "segment feature: a group's accuracy is this / modelmon_segment_labels_total.",
    ("model", "segment", "value"),
)
SEGMENT_ABS_ERROR = _m(
    "segment_absolute_error", Kind.SUMMARY,
    "|prediction - label| of joined regression predictions per value of a configured segment "
    "feature: a group's MAE is rate(_sum) / rate(_count).",
    ("model", "segment", "value"),
)

# --- the sidecar itself ----------------------------------------------------------------------
BUILD_INFO = _m(
    "build", Kind.INFO, "modelmon's version (the Python it runs on: python_info).", ("version",),
)

ALL: tuple[MetricSpec, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricSpec))


class CatalogueCollector(Collector):
    """A collector of catalogue metrics. ``owns`` lists the entries it exports -- each entry has
    exactly one owner, and a collector exports nothing else (tests/test_catalogue.py) -- and
    ``describe()`` declares them, so that the registry knows its names without a collection."""

    owns: ClassVar[tuple[MetricSpec, ...]] = ()

    def describe(self) -> list[Metric]:
        return [spec.empty() for spec in self.owns]

# The sidecar's own process and runtime metrics come from client_python's collectors under their
# standard names, the ones every process dashboard and alert expects.
PROCESS_METRICS_NOTE = (
    "The sidecar's own process and runtime metrics come from prometheus_client's standard "
    "collectors under their standard names: process_cpu_seconds_total, "
    "process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds, "
    "process_max_fds, process_start_time_seconds (ProcessCollector); python_gc_objects_collected_total, "
    "python_gc_objects_uncollectable_total, python_gc_collections_total (GCCollector); "
    "python_info (PlatformCollector: the Python version and implementation)."
)
