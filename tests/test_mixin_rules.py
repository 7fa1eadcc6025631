"""The recording rules' values under `promtool test rules`, against the same statistics computed
in Python from the raw counts of two replicas combined (numpy, scipy)."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from modelmon.metrics import catalogue as cat
from modelmon.mixin import ALERTS_FILE, RULES_FILE, Mixin
from prometheus_client.utils import floatToGoString
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")

MINUTES = 60  # counters grow for an hour, one sample a minute: increase over [1h] is exact
REPLICAS = ("a:9400", "b:9400")
TOLERANCE = 1e-9


class Inputs:
    """Input series of two replicas, each counter growing by a fixed amount a minute."""

    def __init__(self) -> None:
        self.series: list[dict[str, str]] = []

    def counter(self, name: str, instance: str, labels: dict[str, str], per_minute: float) -> None:
        self._add(name, instance, labels, f"0+{per_minute:g}x{MINUTES}")

    def gauge(self, name: str, instance: str, labels: dict[str, str], value: float) -> None:
        self._add(name, instance, labels, f"{value!r}x{MINUTES}")

    def _add(self, name: str, instance: str, labels: dict[str, str], values: str) -> None:
        text = ", ".join(f'{k}="{v}"' for k, v in {"job": "modelmon", "instance": instance, **labels}.items())
        self.series.append({"series": f"{name}{{{text}}}", "values": values})


class Expect:
    def __init__(self) -> None:
        self.checks: list[tuple[str, dict[str, str], float]] = []

    def value(self, record: str, labels: dict[str, str], expected: float) -> None:
        self.checks.append((record, {"job": "modelmon", **labels}, expected))


def _selector(record: str, labels: dict[str, str]) -> str:
    return record + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def run(tmp_path: Path, inputs: Inputs, expect: Expect, absent: list[str] = ()) -> None:  # type: ignore[assignment]
    mixin = Mixin()
    files = mixin.files()
    for name in (RULES_FILE, ALERTS_FILE):
        (tmp_path / name).write_text(files[name])
    order = [g["name"] for name in (RULES_FILE, ALERTS_FILE) for g in yaml.safe_load(files[name])["groups"]]
    at = f"{MINUTES}m"
    tests: list[dict[str, Any]] = [
        {"expr": f"abs({_selector(record, labels)} - {expected!r}) <= bool {TOLERANCE}", "eval_time": at,
         "exp_samples": [{"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
                          "value": 1}]}
        for record, labels, expected in expect.checks
    ] + [{"expr": selector, "eval_time": at, "exp_samples": []} for selector in absent]

    def promtool(exprs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        spec = {"rule_files": [RULES_FILE, ALERTS_FILE], "evaluation_interval": "1m", "group_eval_order": order,
                "tests": [{"interval": "1m", "input_series": inputs.series, "promql_expr_test": exprs}]}
        (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
        return subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    result = promtool(tests)
    if result.returncode != 0:  # show what the rules computed, beside what was expected
        shown = promtool([{"expr": _selector(r, lab), "eval_time": at, "exp_samples": []}
                          for r, lab, _ in expect.checks])
        expected = "\n".join(f"{_selector(r, lab)} = {v!r}" for r, lab, v in expect.checks)
        pytest.fail(f"{result.stdout[-8000:]}\nexpected:\n{expected}\ncomputed:\n{shown.stdout[-12000:]}")


PROFILE = {"profile_hash": "3f2a9c", "profile_model_version": "3", "created_at": "2026-01-01T00:00:00Z"}


def profile_info(inputs: Inputs, instance: str, profile_hash: str = PROFILE["profile_hash"]) -> None:
    inputs.gauge("modelmon_reference_profile_info", instance,
                 {"model": "churn", **PROFILE, "profile_hash": profile_hash}, 1.0)


def test_fleet_drift_equals_the_statistics_of_the_combined_counts(tmp_path: Path) -> None:
    inputs, expect = Inputs(), Expect()
    for r in REPLICAS:  # both replicas run the same reference profile
        profile_info(inputs, r)
    ph = {"profile_hash": PROFILE["profile_hash"]}
    rng = np.random.default_rng(7)
    # numeric: the reference from replica a only; edges below zero and in exponent form
    for feature, edges in (("age", [-1.5, -0.5, 0.0, 0.5, 1.5]), ("income", [1e5, 1e6, 2.5e6, 1e7])):
        les = [cat.le_value(e) for e in edges] + ["+Inf"]
        reference = rng.integers(5, 60, len(les))
        live = {r: rng.integers(0, 9, len(les)) for r in REPLICAS}
        for le, count in zip(les, np.cumsum(reference), strict=True):
            inputs.gauge("modelmon_reference_value_bucket", "a:9400", {"model": "churn", "feature": feature,
                                                                       "le": le}, float(count))
        inputs.gauge("modelmon_reference_value_count", "a:9400", {"model": "churn", "feature": feature},
                     float(reference.sum()))
        for r in REPLICAS:
            for le, count in zip(les, np.cumsum(live[r]), strict=True):
                inputs.counter("modelmon_feature_value_bucket", r, {"model": "churn", "feature": feature, "le": le},
                               float(count))
            inputs.counter("modelmon_feature_value_count", r, {"model": "churn", "feature": feature},
                           float(live[r].sum()))
        combined = MINUTES * sum(live.values())
        ks = float(np.max(np.abs(np.cumsum(combined) / combined.sum() - np.cumsum(reference) / reference.sum())))
        assert ks > 0.05
        expect.value("model_feature:modelmon_drift_score:increase1h",
                     {"model": "churn", "feature": feature, "method": "ks", **ph}, ks)
        expect.value("model_feature:modelmon_feature_value:count_increase1h",
                     {"model": "churn", "feature": feature, **ph}, float(combined.sum()))

    # categorical: the reference from both replicas (the rules must not count it twice)
    categories = ["basic", "pro", "enterprise", "__other__"]
    reference = np.array([600, 300, 90, 10])
    live = {"a:9400": np.array([5, 4, 1, 0]), "b:9400": np.array([3, 6, 2, 1])}
    for r in REPLICAS:
        for c, ref, n in zip(categories, reference, live[r], strict=True):
            inputs.gauge("modelmon_reference_category_ratio", r, {"model": "churn", "feature": "plan", "category": c},
                         float(ref / reference.sum()))
            inputs.counter("modelmon_feature_category_total", r, {"model": "churn", "feature": "plan", "category": c},
                           float(n))
    counts = MINUTES * (live["a:9400"] + live["b:9400"])
    p, q = reference / reference.sum(), counts / counts.sum()
    eps = Mixin().config.drift.smoothing
    ps, qs = (p + eps) / (1 + len(p) * eps), (q + eps) / (1 + len(q) * eps)
    plan = {"model": "churn", "feature": "plan", **ph}
    expect.value("model_feature:modelmon_drift_score:increase1h", {**plan, "method": "tvd"},
                 0.5 * float(np.abs(q - p).sum()))
    expect.value("model_feature:modelmon_drift_score:increase1h", {**plan, "method": "psi"},
                 float(entropy(qs, ps) + entropy(ps, qs)))
    expect.value("model_feature:modelmon_drift_score:increase1h", {**plan, "method": "jensen_shannon"},
                 float(jensenshannon(ps, qs, base=2)))
    expect.value("model_feature:modelmon_feature_category:count_increase1h", plan, float(counts.sum()))
    for c, share in zip(categories, qs, strict=True):
        expect.value("model_feature_category:modelmon_feature_category:smoothed_share_increase1h",
                     {**plan, "category": c}, float(share))
    run(tmp_path, inputs, expect)


def test_fleet_drift_compares_each_replica_with_its_own_profile_during_a_rollout(tmp_path: Path) -> None:
    """A rollout: replica a runs the old profile (edges 0.5, 1; categories basic, pro), replica b
    a rebuilt one (edges 0.7, 1.2; categories pro, enterprise). Each replica's live values match
    its own reference exactly: no drift. Summed together (the old rules) the mixed bucket sets
    read as KS 0.4, and the categories of one profile as unseen by the other."""
    inputs, expect = Inputs(), Expect()
    for r, h in (("a:9400", "old"), ("b:9400", "new")):
        profile_info(inputs, r, h)
    x = {"model": "churn", "feature": "x"}
    for r, h, edges, cumulative in (("a:9400", "old", ("0.5", "1.0", "+Inf"), (3, 7, 10)),
                                    ("b:9400", "new", ("0.7", "1.2", "+Inf"), (5, 8, 10))):
        for le, n in zip(edges, cumulative, strict=True):
            inputs.counter("modelmon_feature_value_bucket", r, {**x, "le": le}, n)
            inputs.gauge("modelmon_reference_value_bucket", r, {**x, "le": le}, 100.0 * n)
        inputs.counter("modelmon_feature_value_count", r, x, 10)
        inputs.gauge("modelmon_reference_value_count", r, x, 1000.0)
        expect.value("model_feature:modelmon_drift_score:increase1h", {**x, "method": "ks", "profile_hash": h}, 0.0)
        expect.value("model_feature:modelmon_feature_value:count_increase1h", {**x, "profile_hash": h}, 600.0)
    plan = {"model": "churn", "feature": "plan"}
    for r, h, shares in (("a:9400", "old", {"basic": 0.6, "pro": 0.4}),
                         ("b:9400", "new", {"pro": 0.5, "enterprise": 0.5})):
        for c, share in shares.items():
            inputs.gauge("modelmon_reference_category_ratio", r, {**plan, "category": c}, share)
            inputs.counter("modelmon_feature_category_total", r, {**plan, "category": c}, 10 * share)
        expect.value("model_feature:modelmon_drift_score:increase1h", {**plan, "method": "tvd", "profile_hash": h},
                     0.0)
    run(tmp_path, inputs, expect)


def test_performance_and_fairness_from_the_counters(tmp_path: Path) -> None:
    inputs, expect = Inputs(), Expect()
    m = {"model": "churn"}
    classes = ["0", "1", "2"]  # class 2 is never predicted: recall 0, precision absent, F1 0
    confusion = {"a:9400": np.array([[30, 3, 0], [5, 10, 0], [2, 0, 0]]),
                 "b:9400": np.array([[20, 4, 0], [0, 6, 0], [1, 0, 0]])}  # [actual, predicted]
    for r, matrix in confusion.items():
        for i, actual in enumerate(classes):
            for j, predicted in enumerate(classes):
                if matrix[i, j]:
                    inputs.counter("modelmon_confusion_total", r, {**m, "actual": actual, "predicted": predicted},
                                   float(matrix[i, j]))
        inputs.counter("modelmon_labels_joined_total", r, m, float(matrix.sum()))
        inputs.counter("modelmon_classification_correct_total", r, m, float(np.trace(matrix)))
    total = MINUTES * sum(confusion.values())
    expect.value("model:modelmon_classification_accuracy:increase1h", m, float(np.trace(total) / total.sum()))
    tp, predicted, actual = np.diag(total), total.sum(axis=0), total.sum(axis=1)
    for k, c in enumerate(classes):
        labels = {**m, "class": c}
        if predicted[k]:
            expect.value("model_class:modelmon_classification_precision:increase1h", labels,
                         float(tp[k] / predicted[k]))
        expect.value("model_class:modelmon_classification_recall:increase1h", labels, float(tp[k] / actual[k]))
        precision = tp[k] / predicted[k] if predicted[k] else 0.0
        recall = tp[k] / actual[k]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        expect.value("model_class:modelmon_classification_f1_score:increase1h", labels, float(f1))

    # a regression model beside it
    reg = {"model": "price"}
    errors = {"a:9400": (10, 30.0, 200.0, 20.0, 10.0), "b:9400": (10, 50.0, 120.0, 30.0, 20.0)}
    for r, (n, abs_sum, sq_sum, over, under) in errors.items():
        for spec, value in ((cat.REGRESSION_ABS_ERROR, abs_sum), (cat.REGRESSION_SQ_ERROR, sq_sum),
                            (cat.REGRESSION_OVER, over), (cat.REGRESSION_UNDER, under)):
            inputs.counter(spec.name + "_sum", r, reg, value)
            inputs.counter(spec.name + "_count", r, reg, float(n))
    n = sum(e[0] for e in errors.values())
    expect.value("model:modelmon_regression_mean_absolute_error:increase1h", reg,
                 sum(e[1] for e in errors.values()) / n)
    expect.value("model:modelmon_regression_root_mean_squared_error:increase1h", reg,
                 math.sqrt(sum(e[2] for e in errors.values()) / n))
    expect.value("model:modelmon_regression_mean_error:increase1h", reg,
                 (sum(e[3] for e in errors.values()) - sum(e[4] for e in errors.values())) / n)

    # fairness: per group (predictions, positives, labels, correct) a minute, per replica
    groups = {
        ("region", "north"): {"a:9400": (10, 5, 8, 7), "b:9400": (10, 3, 8, 6)},
        ("region", "south"): {"a:9400": (8, 2, 6, 6), "b:9400": (8, 0, 6, 3)},
        ("region", "east"): {"a:9400": (1, 1, 1, 0)},  # under min_group_*: left out
        ("channel", "web"): {"a:9400": (20, 10, 20, 18)},
        ("channel", "app"): {"b:9400": (5, 0, 5, 0)},  # no positive, no correct series at all
    }
    config = Mixin().config.fairness
    rates: dict[str, dict[str, float]] = {}
    accuracies: dict[str, dict[str, float]] = {}
    for (segment, value), per in groups.items():
        labels = {**m, "segment": segment, "value": value}
        for r, (pred, pos, lab, corr) in per.items():
            inputs.counter("modelmon_segment_predictions_total", r, labels, pred)
            inputs.counter("modelmon_segment_labels_total", r, labels, lab)
            if pos:
                inputs.counter("modelmon_segment_positive_predictions_total", r, labels, pos)
            if corr:
                inputs.counter("modelmon_segment_correct_predictions_total", r, labels, corr)
        pred, pos, lab, corr = (MINUTES * sum(v[i] for v in per.values()) for i in range(4))
        if pred >= config.min_group_predictions:
            rates.setdefault(segment, {})[value] = pos / pred
            expect.value("model_segment_value:modelmon_segment_positive_rate:increase1h", labels, pos / pred)
        if lab >= config.min_group_labels:
            accuracies.setdefault(segment, {})[value] = corr / lab
            expect.value("model_segment_value:modelmon_segment_accuracy:increase1h", labels, corr / lab)
    assert set(rates["region"]) == {"north", "south"} and rates["channel"]["app"] == 0
    for segment in ("region", "channel"):
        r, acc = rates[segment].values(), accuracies[segment].values()
        expect.value("model_segment:modelmon_segment_disparate_impact:increase1h", {**m, "segment": segment},
                     min(r) / max(r))
        expect.value("model_segment:modelmon_segment_accuracy_gap:increase1h", {**m, "segment": segment},
                     max(acc) - min(acc))
    run(tmp_path, inputs, expect, absent=[
        'model_class:modelmon_classification_precision:increase1h{class="2"}',
        'model_segment_value:modelmon_segment_positive_rate:increase1h{value="east"}',
        'model:modelmon_classification_accuracy:increase1h{model="price"}'])


def histogram_quantile(q: float, bounds: list[float], cumulative: list[float]) -> float:
    """Prometheus' histogram_quantile on classic buckets (bounds end with +Inf): linear
    interpolation within the bucket holding the rank."""
    rank = q * cumulative[-1]
    b = next(i for i, c in enumerate(cumulative) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    start, count = (bounds[b - 1], cumulative[b] - cumulative[b - 1]) if b else (0.0, cumulative[0])
    if b:
        rank -= cumulative[b - 1]
    return start + (bounds[b] - start) * rank / count


def test_traffic_rules(tmp_path: Path) -> None:
    inputs, expect = Inputs(), Expect()
    m = {"model": "churn"}
    codes = {"a:9400": {"200": 50, "500": 5}, "b:9400": {"200": 40, "503": 5, "404": 3}}
    for r, per in codes.items():
        for code, n in per.items():
            inputs.counter("modelmon_requests_total", r, {**m, "route": "/predict", "code": code}, n)
    total = sum(sum(per.values()) for per in codes.values())
    expect.value("model:modelmon_requests:rate5m", m, total / 60)
    expect.value("model:modelmon_requests:error_ratio_rate5m", m, 10 / total)
    # a model that never answered 5xx has a ratio of 0, not an absent one
    inputs.counter("modelmon_requests_total", "a:9400", {"model": "healthy", "route": "/predict",
                                                         "code": "200"}, 30)
    expect.value("model:modelmon_requests:error_ratio_rate5m", {"model": "healthy"}, 0.0)

    bounds = [*cat.LATENCY_BUCKETS, math.inf]
    per_bucket = {"a:9400": [0, 0, 1, 3, 10, 20, 8, 4, 2, 1, 0, 0, 0, 0, 0, 1],
                  "b:9400": [0, 0, 0, 1, 2, 5, 12, 9, 6, 3, 1, 0, 0, 0, 0, 0]}
    for r, counts in per_bucket.items():
        for bound, c in zip(bounds, np.cumsum(counts), strict=True):
            # the sidecar writes le with prometheus_client's floatToGoString; the rules with le_value
            assert floatToGoString(bound) == cat.le_value(bound)
            inputs.counter("modelmon_request_duration_seconds_bucket", r,
                           {**m, "route": "/predict", "le": floatToGoString(bound)}, float(c))
        inputs.counter("modelmon_request_duration_seconds_count", r, {**m, "route": "/predict"},
                       float(sum(counts)))
    combined = np.cumsum(np.array(per_bucket["a:9400"]) + np.array(per_bucket["b:9400"])).astype(float).tolist()
    for q in Mixin().config.traffic.quantiles:
        expect.value("model_quantile:modelmon_request_duration_seconds:histogram_quantile_rate5m",
                     {**m, "quantile": f"{q:g}"}, histogram_quantile(q, bounds, combined))
    within = combined[cat.LATENCY_BUCKETS.index(Mixin().config.latency_slo.threshold_seconds)]
    for window in ("5m", "1h"):
        expect.value(f"model:modelmon_request_duration_seconds:slow_ratio_rate{window}", m,
                     1 - within / combined[-1])
    run(tmp_path, inputs, expect)
