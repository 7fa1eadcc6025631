"""Every alert of the mixin under `promtool test rules` (Prometheus' own rule engine): silent one
evaluation before its `for` has elapsed, firing right after with exact labels and annotations,
and silent on healthy input."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelmon.mixin import ALERTS_FILE, RULES_FILE, Mixin
from modelmon.mixin.config import seconds

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")

RUNBOOK = "https://modelmon.example/docs/runbook.md#"
DASHBOARD = "https://grafana.example/d/modelmon-model/modelmon-model"
A = 'instance="a:9400"'
B = 'instance="b:9400"'


def s(name: str, labels: str, values: str) -> dict[str, str]:
    """An input series of the modelmon job."""
    return {"series": f'{name}{{job="modelmon", {labels}}}' if labels else f'{name}{{job="modelmon"}}',
            "values": values}


@dataclass
class Fired:
    labels: dict[str, str]
    description: str
    value: str | None  # None: no value annotation (a constant 0 or 1 means nothing)


@dataclass
class Case:
    alert: str
    severity: str
    onset: int  # the first evaluation (minutes) at which the alert's expression returns it
    series: list[dict[str, str]]
    healthy: list[dict[str, str]]
    fired: list[Fired]
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


JM = {"job": "modelmon", "model": "churn"}


def info(instance: str, **roles: str) -> list[dict[str, str]]:
    """modelmon_feature_info of the model churn's features on one replica: feature -> role."""
    return [s("modelmon_feature_info", instance + f', model="churn", feature="{f}", role="{r}"', "1x20")
            for f, r in roles.items()]

JI = {"job": "modelmon", "instance": "a:9400"}
# both replicas of churn run the same reference profile
PROFILES = [s("modelmon_reference_profile_info", i + ', model="churn", profile_hash="3f2a9c", '
              'profile_model_version="3", created_at="2026-01-01T00:00:00Z"', "1x40") for i in (A, B)]

CASES = [
    Case("ModelmonWatchdog", "none", 0, [s("up", A, "1")], [], [Fired(
        {}, "This alert fires all the time. The heartbeat receiver raises an alarm when it stops "
            "arriving: then Prometheus, the modelmon rules or Alertmanager are down.", None)]),
    Case("ModelmonTargetAbsent", "critical", 0,
         [{"series": 'up{job="other", instance="x:1"}', "values": "1x20"}],
         [s("up", A, "1x20")],
         [Fired({}, 'No target matching job="modelmon" has been up for 10m: Prometheus has no '
                    "modelmon metrics and no other modelmon alert can fire.", None)]),
    Case("ModelmonMetricsAbsent", "warning", 0, [s("up", A, "1x20")],
         [s("up", A, "1x20"), s("modelmon_build_info", A + ', version="0.1.0"', "1x20")],
         [Fired(JI, "Target a:9400 is scraped successfully but exposes no modelmon_build_info: it "
                    "is probably not the sidecar's admin port.", None)]),
    # the target's models are still known from before it went down (last_over_time)
    Case("ModelmonTargetDown", "warning", 11,
         [s("up", A, "1x10 0x30"), s("modelmon_model_info", A + ', model="churn", version="3"', "1x10 _x30")],
         [s("up", A, "1x40"), s("modelmon_model_info", A + ', model="churn", version="3"', "1x40")],
         [Fired({**JI, "model": "churn"}, "Prometheus has failed to scrape the modelmon sidecar "
                "a:9400 (model churn) for 5m.", None)]),
    Case("ModelmonTargetDown", "warning", 0, [s("up", A, "0x20")], [s("up", A, "1x20")],
         [Fired(JI, "Prometheus has failed to scrape the modelmon sidecar a:9400 for 5m.", None)],
         name="a target that never named a model"),
    Case("ModelmonUpstreamDown", "critical", 0,
         [s("modelmon_upstream_up", A, "0x20"),
          s("modelmon_model_info", A + ', model="churn", version="3"', "1x20"),
          s("modelmon_model_info", A + ', model="fraud", version="1"', "1x20")],
         [s("modelmon_upstream_up", A, "1x20"),
          s("modelmon_model_info", A + ', model="churn", version="3"', "1x20")],
         [Fired({**JI, "model": m}, f"The model server behind a:9400 (model {m}) has failed its "
                "health probe for 2m.", None) for m in ("churn", "fraud")]),
    # model m2's only pod is evicted (or scaled to 0) at 10m: its target leaves discovery, while
    # m1 keeps the job up -- ModelmonTargetAbsent and ModelmonTargetDown cannot see it
    Case("ModelmonModelDown", "critical", 11,
         [s("up", A, "1x20"), s("modelmon_model_info", A + ', model="m1", version="1"', "1x20"),
          s("up", B, "1x10 stale"), s("modelmon_model_info", B + ', model="m2", version="1"', "1x10 stale")],
         [s("up", A, "1x20"), s("modelmon_model_info", A + ', model="m1", version="1"', "1x20"),
          s("up", B, "1x20"), s("modelmon_model_info", B + ', model="m2", version="1"', "1x20")],
         [Fired({"job": "modelmon", "model": "m2"}, "Model m2 has had no replica serving for 5m: every "
                "target that exposed it is gone from discovery, cannot be scraped, or its model server "
                "fails its health probe.", None)], name="its only target left discovery"),
    # every replica of churn has its model server down; one of two replicas of fraud has
    Case("ModelmonModelDown", "critical", 0,
         [s("up", A, "1x20"), s("modelmon_upstream_up", A, "0x20"),
          s("modelmon_model_info", A + ', model="churn", version="3"', "1x20"),
          s("up", B, "1x20"), s("modelmon_upstream_up", B, "0x20"),
          s("modelmon_model_info", B + ', model="churn", version="3"', "1x20"),
          s("up", 'instance="c:9400"', "1x20"), s("modelmon_upstream_up", 'instance="c:9400"', "0x20"),
          s("modelmon_model_info", 'instance="c:9400", model="fraud", version="1"', "1x20"),
          s("up", 'instance="d:9400"', "1x20"), s("modelmon_upstream_up", 'instance="d:9400"', "1x20"),
          s("modelmon_model_info", 'instance="d:9400", model="fraud", version="1"', "1x20")],
         [s("up", A, "1x20"), s("modelmon_upstream_up", A, "0x20"),
          s("modelmon_model_info", A + ', model="churn", version="3"', "1x20"),
          s("up", B, "1x20"), s("modelmon_upstream_up", B, "1x20"),
          s("modelmon_model_info", B + ', model="churn", version="3"', "1x20")],
         [Fired(JM, "Model churn has had no replica serving for 5m: every target that exposed it is "
                    "gone from discovery, cannot be scraped, or its model server fails its health "
                    "probe.", None)], name="every model server fails"),
    Case("ModelmonDependencyDown", "warning", 0,
         [s("modelmon_dependency_up", A + ', dependency="feature-store"', "0x20")],
         [s("modelmon_dependency_up", A + ', dependency="feature-store"', "1x20")],
         [Fired({**JI, "dependency": "feature-store"},
                "Dependency feature-store of a:9400 has failed its probe for 5m.", None)]),
    Case("ModelmonHighErrorRatio", "warning", 1,
         [s("modelmon_requests_total", A + ', model="churn", route="/predict", code="200"', "0+90x30"),
          s("modelmon_requests_total", A + ', model="churn", route="/predict", code="503"', "0+10x30")],
         [s("modelmon_requests_total", A + ', model="churn", route="/predict", code="200"', "0+100x30"),
          s("modelmon_requests_total", A + ', model="churn", route="/predict", code="404"', "0+50x30"),
          # 5xx outside the inference routes (a scan of unknown paths): not the model's errors
          s("modelmon_requests_total", A + ', model="churn", route="other", code="503"', "0+50x30")],
         [Fired(JM, "10% of model churn's requests failed with a 5xx over the last 5m (threshold 5%).",
                "10%")]),
    Case("ModelmonHighErrorRatio", "critical", 1,
         [s("modelmon_requests_total", A + ', model="churn", route="/predict", code="200"', "0+70x30"),
          s("modelmon_requests_total", B + ', model="churn", route="/predict", code="502"', "0+30x30")],
         [s("modelmon_requests_total", A + ', model="churn", route="/predict", code="200"', "0+100x30")],
         [Fired(JM, "30% of model churn's requests failed with a 5xx over the last 5m (threshold 20%).",
                "30%")]),
    Case("ModelmonLatencyBudgetBurn", "critical", 1,
         [s("modelmon_request_duration_seconds_count", A + ', model="churn", route="/predict"', "0+100000x20"),
          s("modelmon_request_duration_seconds_bucket", A + ', model="churn", route="/predict", le="1.0"',
            "0+50000x20")],
         [s("modelmon_request_duration_seconds_count", A + ', model="churn", route="/predict"', "0+100000x20"),
          s("modelmon_request_duration_seconds_bucket", A + ', model="churn", route="/predict", le="1.0"',
            "0+100000x20"),
          # slow, but not an inference route: outside the SLO
          s("modelmon_request_duration_seconds_count", A + ', model="churn", route="other"', "0+100000x20"),
          s("modelmon_request_duration_seconds_bucket", A + ', model="churn", route="other", le="1.0"',
            "0x20")],
         [Fired(JM, "50% of model churn's requests took longer than 1 s over the long window (1h or 6h; the short one, 5m or 30m, burns too): at "
                    "this rate the error budget of its SLO (99% within 1 s) runs out within days.",
                "50%")]),
    Case("ModelmonLatencyBudgetBurn", "warning", 1,
         [s("modelmon_request_duration_seconds_count", A + ', model="churn", route="/predict"', "0+100000x20"),
          s("modelmon_request_duration_seconds_bucket", A + ', model="churn", route="/predict", le="1.0"',
            "0+95000x20")],
         [s("modelmon_request_duration_seconds_count", A + ', model="churn", route="/predict"', "0+100000x20"),
          s("modelmon_request_duration_seconds_bucket", A + ', model="churn", route="/predict", le="1.0"',
            "0+100000x20")],
         [Fired(JM, "5% of model churn's requests took longer than 1 s over the long window (1d or 3d; the short one, 2h or 6h, burns too): at "
                    "this rate the error budget of its SLO (99% within 1 s) runs out before the "
                    "month ends.", "5%")]),
    # Inputs and outputs by the profile's roles (modelmon_feature_info), whatever their names: the
    # demo model's outputs are `probability` and `class`, which no name pattern told apart.
    Case("ModelmonFeatureDrift", "warning", 0,
         [s("modelmon_drift_p_value", A + ', model="churn", feature="age", method="chi2"', "0.000001x20"),
          s("modelmon_drift_p_value", A + ', model="churn", feature="age", method="ks"', "0.001x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="age"', "1x20"),
          s("modelmon_drift_detected", B + ', model="churn", feature="age"', "0x20"),
          *info(A, age="input", probability="output", **{"class": "output"}),
          *info(B, age="input", probability="output", **{"class": "output"}),
          # outputs: ModelmonPredictionDrift's
          s("modelmon_drift_p_value", A + ', model="churn", feature="probability", method="chi2"', "0.0001x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="probability"', "1x20"),
          s("modelmon_drift_p_value", B + ', model="churn", feature="class", method="chi2"', "0x20"),
          s("modelmon_drift_detected", B + ', model="churn", feature="class"', "1x20"),
          s("modelmon_model_drift_detected", A + ', model="churn"', "1x20")],
         # the feature's own test fires but the model-level verdict, corrected across features, does not
         [s("modelmon_drift_p_value", A + ', model="churn", feature="age", method="chi2"', "0.001x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="age"', "1x20"),
          *info(A, age="input"),
          s("modelmon_model_drift_detected", A + ', model="churn"', "0x20")],
         [Fired({**JM, "feature": "age"}, "Feature age of model churn no longer looks like its "
                "reference profile: the sidecar's drift test reports drift (smallest p-value 1e-06) "
                "and so does its model-level verdict.", "1e-06")]),
    # a sidecar from before the roles were exported: every feature counts as an input; a p-value
    # that underflows to 0 reads as such, not as "0"
    Case("ModelmonFeatureDrift", "warning", 0,
         [s("modelmon_drift_p_value", A + ', model="churn", feature="age", method="chi2"', "0x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="age"', "1x20"),
          s("modelmon_model_drift_detected", A + ', model="churn"', "1x20")],
         [],
         [Fired({**JM, "feature": "age"}, "Feature age of model churn no longer looks like its "
                "reference profile: the sidecar's drift test reports drift (smallest p-value < 1e-300) "
                "and so does its model-level verdict.", "< 1e-300")],
         name="no roles exported"),
    Case("ModelmonPredictionDrift", "warning", 0,
         [s("modelmon_drift_p_value", A + ', model="churn", feature="probability", method="chi2"', "0.0001x20"),
          s("modelmon_drift_p_value", A + ', model="churn", feature="probability", method="ks"', "0.01x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="probability"', "1x20"),
          s("modelmon_drift_p_value", A + ', model="churn", feature="class", method="chi2"', "0x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="class"', "1x20"),
          # an input, and a feature whose name says "prediction" but whose role is input
          s("modelmon_drift_detected", A + ', model="churn", feature="age"', "1x20"),
          s("modelmon_drift_p_value", A + ', model="churn", feature="age", method="chi2"', "0.0001x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="prediction"', "1x20"),
          s("modelmon_drift_p_value", A + ', model="churn", feature="prediction", method="chi2"', "0.0001x20"),
          *info(A, age="input", prediction="input", probability="output", **{"class": "output"})],
         [s("modelmon_drift_p_value", A + ', model="churn", feature="probability", method="chi2"', "0.3x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="probability"', "0x20"),
          s("modelmon_drift_p_value", A + ', model="churn", feature="score", method="chi2"', "0.0001x20"),
          s("modelmon_drift_detected", A + ', model="churn", feature="score"', "1x20"),
          *info(A, probability="output", score="input")],
         [Fired({**JM, "feature": "probability"}, "Output probability of model churn no longer looks "
                "like its reference profile: the sidecar's drift test reports drift (smallest "
                "p-value 0.0001).", "0.0001"),
          Fired({**JM, "feature": "class"}, "Output class of model churn no longer looks "
                "like its reference profile: the sidecar's drift test reports drift (smallest "
                "p-value < 1e-300).", "< 1e-300")]),
    Case("ModelmonFleetDrift", "warning", 1,
         [*PROFILES,
          s("modelmon_reference_value_bucket", A + ', model="churn", feature="age", le="0.0"', "50x40"),
          s("modelmon_reference_value_bucket", A + ', model="churn", feature="age", le="+Inf"', "100x40"),
          s("modelmon_reference_value_count", A + ', model="churn", feature="age"', "100x40"),
          *[s(name, i + ', model="churn", feature="age"' + le, values)
            for i in (A, B)
            for name, le, values in (
                ("modelmon_feature_value_bucket", ', le="0.0"', "0+100x40"),
                ("modelmon_feature_value_bucket", ', le="+Inf"', "0+1000x40"),
                ("modelmon_feature_value_count", "", "0+1000x40"))],
          *[s("modelmon_reference_category_ratio", A + f', model="churn", feature="plan", category="{c}"', v)
            for c, v in (("basic", "0.7x40"), ("pro", "0.3x40"), ("__other__", "0x40"))],
          *[s("modelmon_feature_category_total", i + f', model="churn", feature="plan", category="{c}"', v)
            for i in (A, B) for c, v in (("basic", "0+250x40"), ("pro", "0+750x40"), ("__other__", "0x40"))]],
         [*PROFILES,
          s("modelmon_reference_value_bucket", A + ', model="churn", feature="age", le="0.0"', "50x40"),
          s("modelmon_reference_value_bucket", A + ', model="churn", feature="age", le="+Inf"', "100x40"),
          s("modelmon_reference_value_count", A + ', model="churn", feature="age"', "100x40"),
          s("modelmon_feature_value_bucket", A + ', model="churn", feature="age", le="0.0"', "0+500x40"),
          s("modelmon_feature_value_bucket", A + ', model="churn", feature="age", le="+Inf"', "0+1000x40"),
          s("modelmon_feature_value_count", A + ', model="churn", feature="age"', "0+1000x40"),
          *[s("modelmon_reference_category_ratio", A + f', model="churn", feature="plan", category="{c}"', v)
            for c, v in (("basic", "0.7x40"), ("pro", "0.3x40"), ("__other__", "0x40"))],
          *[s("modelmon_feature_category_total", A + f', model="churn", feature="plan", category="{c}"', v)
            for c, v in (("basic", "0+1400x40"), ("pro", "0+600x40"), ("__other__", "0x40"))]],
         [Fired({**JM, "feature": "age", "method": "ks", "profile_hash": "3f2a9c"}, "Feature age of model churn has drifted "
                "across all its replicas over the last 1h: ks = 0.400.", "0.400"),
          Fired({**JM, "feature": "plan", "method": "tvd", "profile_hash": "3f2a9c"}, "Feature plan of model churn has drifted "
                "across all its replicas over the last 1h: tvd = 0.450.", "0.450")]),
    Case("ModelmonFeatureMissingHigh", "warning", 0,
         [s("modelmon_feature_missing_ratio", A + ', model="churn", feature="age"', "0.3x20"),
          s("modelmon_feature_missing_ratio", B + ', model="churn", feature="age"', "0.05x20"),
          s("modelmon_reference_missing_ratio", A + ', model="churn", feature="age"', "0.1x20"),
          s("modelmon_reference_missing_ratio", B + ', model="churn", feature="age"', "0.1x20")],
         [s("modelmon_feature_missing_ratio", A + ', model="churn", feature="age"', "0.12x20"),
          s("modelmon_reference_missing_ratio", A + ', model="churn", feature="age"', "0.1x20")],
         [Fired({**JM, "feature": "age"}, "30% of feature age's values for model churn are missing "
                "(NaN, null or absent), more than 5% above its reference's share.", "30%")]),
    Case("ModelmonFeatureOutOfRange", "warning", 0,
         [s("modelmon_feature_out_of_range_ratio", A + ', model="churn", feature="age"', "0.2x20")],
         [s("modelmon_feature_out_of_range_ratio", A + ', model="churn", feature="age"', "0.01x20")],
         [Fired({**JM, "feature": "age"}, "20% of feature age's values for model churn lie outside "
                "the reference's min..max.", "20%")]),
    Case("ModelmonUnseenCategories", "warning", 1,
         [s("modelmon_data_quality_events_total", A + ', model="churn", feature="plan", kind="unseen_category"',
            "0+30x30"),
          s("modelmon_feature_category_total", A + ', model="churn", feature="plan", category="basic"', "0+70x30"),
          s("modelmon_feature_category_total", A + ', model="churn", feature="plan", category="__other__"',
            "0+30x30"),
          s("modelmon_reference_category_ratio", A + ', model="churn", feature="plan", category="basic"', "0.9x30"),
          s("modelmon_reference_category_ratio", A + ', model="churn", feature="plan", category="__other__"',
            "0.1x30")],
         # as many unseen values as the reference had rare ones: normal
         [s("modelmon_data_quality_events_total", A + ', model="churn", feature="plan", kind="unseen_category"',
            "0+10x30"),
          s("modelmon_feature_category_total", A + ', model="churn", feature="plan", category="basic"', "0+90x30"),
          s("modelmon_feature_category_total", A + ', model="churn", feature="plan", category="__other__"',
            "0+10x30"),
          s("modelmon_reference_category_ratio", A + ', model="churn", feature="plan", category="__other__"',
            "0.1x30")],
         [Fired({**JM, "feature": "plan"}, "30% of feature plan's values for model churn over the last "
                "15m are categories outside the reference's top categories, more than 5% above the "
                "reference's own share of them.", "30%")]),
    Case("ModelmonAccuracyLow", "warning", 1,
         [s("modelmon_labels_joined_total", A + ', model="churn"', "0+100x40"),
          s("modelmon_labels_joined_total", B + ', model="churn"', "0+100x40"),
          s("modelmon_classification_correct_total", A + ', model="churn"', "0+50x40"),
          s("modelmon_classification_correct_total", B + ', model="churn"', "0+70x40")],
         [s("modelmon_labels_joined_total", A + ', model="churn"', "0+200x40"),
          s("modelmon_classification_correct_total", A + ', model="churn"', "0+190x40"),
          # too few labels to judge
          s("modelmon_labels_joined_total", A + ', model="fraud"', "0+1x40"),
          s("modelmon_classification_correct_total", A + ', model="fraud"', "0x40")],
         [Fired(JM, "Model churn was right on 60% of the predictions whose labels arrived over the "
                    "last 1h (threshold 80%).", "60%")]),
    Case("ModelmonClassF1Low", "warning", 1,
         [s("modelmon_confusion_total", A + f', model="churn", actual="{a}", predicted="{p}"', v)
          for a, p, v in (("1", "1", "0+10x40"), ("1", "0", "0+50x40"), ("0", "0", "0+100x40"),
                          ("0", "1", "0+40x40"))],
         [s("modelmon_confusion_total", A + f', model="churn", actual="{a}", predicted="{p}"', v)
          for a, p, v in (("1", "1", "0+55x40"), ("1", "0", "0+5x40"), ("0", "0", "0+100x40"),
                          ("0", "1", "0+5x40"))],
         [Fired({**JM, "class": "1"}, "Model churn's F1 score for class 1 was 0.182 over the last "
                "1h (threshold 0.5).", "0.182")]),
    # MAE 1 for two hours, then 10: 1.5 times its 7-day average 11 minutes later
    Case("ModelmonRegressionErrorHigh", "warning", 131,
         [s("modelmon_regression_absolute_error_count", A + ', model="churn"', "0+100x200"),
          s("modelmon_regression_absolute_error_sum", A + ', model="churn"', "0+100x120 13000+1000x79"),
          s("modelmon_labels_joined_total", A + ', model="churn"', "0+100x200")],
         [s("modelmon_regression_absolute_error_count", A + ', model="churn"', "0+100x200"),
          s("modelmon_regression_absolute_error_sum", A + ', model="churn"', "0+100x200"),
          s("modelmon_labels_joined_total", A + ', model="churn"', "0+100x200")],
         [Fired(JM, "Model churn's mean absolute error over the last 1h is 7.15, more than 1.5 times "
                    "its 7d average.", "7.15")]),
    # half the predictions get a label for three hours, then none
    Case("ModelmonLabelsNotArriving", "warning", 236,
         [s("modelmon_analysis_records_total", A + ', model="churn", source="proxy"', "0+100x300"),
          s("modelmon_labels_joined_total", A + ', model="churn"', "0+50x180 9000x120")],
         [s("modelmon_analysis_records_total", A + ', model="churn", source="proxy"', "0+100x300"),
          s("modelmon_labels_joined_total", A + ', model="churn"', "0+50x300")],
         [Fired(JM, "Only 0% of model churn's predictions were joined to a label over the last 1h, "
                    "under 0.1 times its share over the last 1d.", "0%")]),
    Case("ModelmonFairnessDisparateImpact", "warning", 1,
         [*[s("modelmon_segment_predictions_total", A + f', model="churn", segment="region", value="{g}"', v)
            for g, v in (("north", "0+200x70"), ("south", "0+200x70"), ("east", "0+1x70"))],
          *[s("modelmon_segment_positive_predictions_total", A + f', model="churn", segment="region", value="{g}"',
              v) for g, v in (("north", "0+100x70"), ("south", "0+60x70"))]],
         [*[s("modelmon_segment_predictions_total", A + f', model="churn", segment="region", value="{g}"', v)
            for g, v in (("north", "0+200x70"), ("south", "0+200x70"))],
          *[s("modelmon_segment_positive_predictions_total", A + f', model="churn", segment="region", value="{g}"',
              v) for g, v in (("north", "0+100x70"), ("south", "0+90x70"))]],
         [Fired({**JM, "segment": "region"}, "For model churn, the group of segment region with the "
                "lowest positive-prediction rate gets 0.600 times the rate of the highest over the "
                "last 1h (threshold 0.8).", "0.600")]),
    Case("ModelmonFairnessAccuracyGap", "warning", 1,
         [*[s("modelmon_segment_labels_total", A + f', model="churn", segment="region", value="{g}"', "0+200x70")
            for g in ("north", "south")],
          *[s("modelmon_segment_correct_predictions_total", A + f', model="churn", segment="region", value="{g}"',
              v) for g, v in (("north", "0+190x70"), ("south", "0+150x70"))]],
         [*[s("modelmon_segment_labels_total", A + f', model="churn", segment="region", value="{g}"', "0+200x70")
            for g in ("north", "south")],
          *[s("modelmon_segment_correct_predictions_total", A + f', model="churn", segment="region", value="{g}"',
              v) for g, v in (("north", "0+190x70"), ("south", "0+180x70"))]],
         [Fired({**JM, "segment": "region"}, "For model churn, accuracy differs by 20% between the best "
                "and the worst group of segment region over the last 1h (threshold 10%).", "20%")]),
    Case("ModelmonModelStale", "info", 0,
         [s("modelmon_model_trained_timestamp_seconds", A + ', model="churn"', "-3000000x70")],
         [s("modelmon_model_trained_timestamp_seconds", A + ', model="churn"', "0x70")],
         [Fired(JM, "Model churn was trained 34d 18h 20m 0s ago (limit 30d).", "34d 18h 20m 0s")]),
    Case("ModelmonNoPredictions", "warning", 16,
         [s("modelmon_model_last_prediction_timestamp_seconds", A + ', model="churn"', "0x30")],
         [s("modelmon_model_last_prediction_timestamp_seconds", A + ', model="churn"', "0+60x30")],
         [Fired(JM, "Model churn made its last prediction 21m 0s ago.", "21m 0s")]),
    Case("ModelmonMemoryNearLimit", "warning", 0,
         [s("modelmon_cgroup_memory_usage_bytes", A + ', cgroup="model"', "920x20"),
          s("modelmon_cgroup_memory_limit_bytes", A + ', cgroup="model"', "1000x20")],
         [s("modelmon_cgroup_memory_usage_bytes", A + ', cgroup="model"', "500x20"),
          s("modelmon_cgroup_memory_limit_bytes", A + ', cgroup="model"', "1000x20"),
          # no limit: nothing to be near
          s("modelmon_cgroup_memory_usage_bytes", A + ', cgroup="self"', "5000x20")],
         [Fired({**JI, "cgroup": "model"}, "The model cgroup of a:9400 uses 92% of its memory limit "
                "(threshold 90%).", "92%")]),
    Case("ModelmonMemoryNearLimit", "critical", 0,
         [s("modelmon_cgroup_memory_usage_bytes", A + ', cgroup="self"', "980x20"),
          s("modelmon_cgroup_memory_limit_bytes", A + ', cgroup="self"', "1000x20")],
         [s("modelmon_cgroup_memory_usage_bytes", A + ', cgroup="self"', "500x20"),
          s("modelmon_cgroup_memory_limit_bytes", A + ', cgroup="self"', "1000x20")],
         [Fired({**JI, "cgroup": "self"}, "The self cgroup of a:9400 uses 98% of its memory limit "
                "(threshold 97%).", "98%")]),
    Case("ModelmonMemoryFillingUp", "warning", 1,
         [s("modelmon_cgroup_memory_usage_bytes", A + ', cgroup="model"', "500000000+10000000x40"),
          s("modelmon_cgroup_memory_limit_bytes", A + ', cgroup="model"', "1000000000x40")],
         [s("modelmon_cgroup_memory_usage_bytes", A + ', cgroup="model"', "500000000x40"),
          s("modelmon_cgroup_memory_limit_bytes", A + ', cgroup="model"', "1000000000x40")],
         [Fired({**JI, "cgroup": "model"}, "The model cgroup of a:9400 grows at a rate that reaches its "
                "memory limit within 4h (projected 2.99GiB).", "2.99GiB")]),
    Case("ModelmonDroppedRecords", "warning", 1,
         [s("modelmon_analysis_records_total", A + ', model="churn", source="proxy"', "0+95x30"),
          s("modelmon_analysis_dropped_records_total", A + ', reason="queue_full"', "0+5x30")],
         [s("modelmon_analysis_records_total", A + ', model="churn", source="proxy"', "0+95x30")],
         [Fired({**JI, "reason": "queue_full"}, "Sidecar a:9400 dropped 5% of its records over the last "
                "10m (reason queue_full).", "5%")]),
    Case("ModelmonPayloadErrors", "warning", 1,
         [s("modelmon_analysis_records_total", A + ', model="churn", source="proxy"', "0+90x30"),
          s("modelmon_payload_errors_total", A + ', model="churn", reason="bad_tensor_data"', "0+10x30")],
         [s("modelmon_analysis_records_total", A + ', model="churn", source="proxy"', "0+90x30"),
          s("modelmon_payload_errors_total", A + ', model="churn", reason="bad_tensor_data"', "0x30")],
         [Fired({**JM, "reason": "bad_tensor_data"}, "10% of model churn's payloads over the last 10m "
                "could not be analysed (reason bad_tensor_data).", "10%")]),
    Case("ModelmonDriftScoringStalled", "warning", 6,
         [s("modelmon_drift_last_success_timestamp_seconds", A + ', model="churn"', "0x20")],
         [s("modelmon_drift_last_success_timestamp_seconds", A + ', model="churn"', "0+60x20")],
         [Fired({**JI, "model": "churn"}, "Sidecar a:9400 last computed the drift statistics of model "
                "churn 11m 0s ago.", "11m 0s")]),
]


def _minutes(duration: str | None) -> int:
    return 0 if duration is None else int(seconds(duration) // 60)


def test_every_alert_has_a_case() -> None:
    mixin = Mixin()
    assert {(a.name, a.severity) for a in mixin.alerts} == {(c.alert, c.severity) for c in CASES}


def _expected(mixin: Mixin, case: Case, fired: Fired) -> dict[str, Any]:
    rule = next(a for a in mixin.alerts if a.name == case.alert and a.severity == case.severity)
    dashboard = DASHBOARD + (f"?var-model={fired.labels['model']}" if "model" in fired.labels else "")
    return {
        "exp_labels": {**fired.labels, "severity": case.severity},
        "exp_annotations": {
            "summary": rule.summary,
            "description": fired.description,
            **({"value": fired.value} if fired.value is not None else {}),
            "runbook_url": RUNBOOK + case.alert.lower(),
            "dashboard_url": dashboard,
        },
    }


def _tests(mixin: Mixin) -> list[dict[str, Any]]:
    groups = []
    for case in CASES:
        rule = next(a for a in mixin.alerts if a.name == case.alert and a.severity == case.severity)
        fires_at = case.onset + _minutes(rule.for_)
        expected = [_expected(mixin, case, f) for f in case.fired]
        checks = [{"eval_time": f"{fires_at}m", "alertname": case.alert, "exp_alerts": expected}]
        if rule.for_ is not None:
            checks.insert(0, {"eval_time": f"{fires_at - 1}m", "alertname": case.alert, "exp_alerts": []})
        label = f"{case.alert} ({case.severity}{', ' + case.name if case.name else ''})"
        groups.append({"name": label, "interval": "1m", "input_series": case.series,
                       "alert_rule_test": checks})
        if case.healthy:
            groups.append({"name": label + " healthy", "interval": "1m", "input_series": case.healthy,
                           "alert_rule_test": [{"eval_time": f"{t}m", "alertname": case.alert, "exp_alerts": []}
                                               for t in sorted({fires_at, fires_at + 5})]})
    return groups


def run_promtool_tests(tmp_path: Path, mixin: Mixin, tests: list[dict[str, Any]]) -> None:
    files = mixin.files()
    for name in (RULES_FILE, ALERTS_FILE):
        (tmp_path / name).write_text(files[name])
    # Recording rules before the alerts that read them, at each evaluation (Prometheus runs groups
    # concurrently; an alert on a recorded series can lag one evaluation there).
    order = [g["name"] for name in (RULES_FILE, ALERTS_FILE) for g in yaml.safe_load(files[name])["groups"]]
    spec = {"rule_files": [RULES_FILE, ALERTS_FILE], "evaluation_interval": "1m",
            "group_eval_order": order, "tests": tests}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(spec, sort_keys=False, width=1000))
    result = subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]


def test_alerts_fire_after_for_with_exact_labels_and_annotations(tmp_path: Path) -> None:
    mixin = Mixin()
    run_promtool_tests(tmp_path, mixin, _tests(mixin))


def test_a_long_target_outage_is_one_alert_that_keeps_its_model(tmp_path: Path) -> None:
    """A 3 h outage: ModelmonTargetDown fires once (its activeAt never moves) and names the model
    throughout; it used to lose `model` after the 1 h lookback, resolve and fire again."""
    mixin = Mixin()
    case = Case("ModelmonTargetDown", "warning", 11, [], [], [])
    fired = [_expected(mixin, case, Fired({**JI, "model": "churn"}, "Prometheus has failed to scrape "
                                          "the modelmon sidecar a:9400 (model churn) for 5m.", None))]
    tests = [{
        "name": "3h outage", "interval": "1m",
        "input_series": [s("up", A, "1x10 0x200"),
                         s("modelmon_model_info", A + ', model="churn", version="3"', "1x10 stale")],
        "alert_rule_test": [{"eval_time": f"{t}m", "alertname": "ModelmonTargetDown", "exp_alerts": fired}
                            for t in (30, 72, 130, 190)],
        "promql_expr_test": [{
            "expr": 'ALERTS_FOR_STATE{alertname="ModelmonTargetDown"}', "eval_time": "190m",
            "exp_samples": [{"labels": 'ALERTS_FOR_STATE{alertname="ModelmonTargetDown", job="modelmon", '
                                       'instance="a:9400", model="churn", severity="warning"}',
                             "value": 11 * 60}]}],
    }]
    run_promtool_tests(tmp_path, mixin, tests)


def test_a_reused_target_address_names_only_the_model_it_serves_now(tmp_path: Path) -> None:
    """Kubernetes reuses pod addresses: a:9400 served m7 until 10m, then m8's pod from 20m, and
    goes down at 100m. ModelmonTargetDown names m8 only (before: m7 and m8, each with its own
    group, and for UpstreamDown its own page, for a day)."""
    mixin = Mixin()
    case = Case("ModelmonTargetDown", "warning", 0, [], [], [])
    fired = [_expected(mixin, case, Fired({**JI, "model": "m8"}, "Prometheus has failed to scrape "
                                          "the modelmon sidecar a:9400 (model m8) for 5m.", None))]
    tests = [{
        "name": "address reused", "interval": "1m",
        "input_series": [s("up", A, "1x10 _x9 1x80 0x60"),
                         s("modelmon_model_info", A + ', model="m7", version="1"', "1x10"),
                         s("modelmon_model_info", A + ', model="m8", version="1"', "_x20 1x80")],
        "alert_rule_test": [{"eval_time": f"{t}m", "alertname": "ModelmonTargetDown", "exp_alerts": fired}
                            for t in (110, 150)],
    }]
    run_promtool_tests(tmp_path, mixin, tests)


def test_the_latency_burn_needs_traffic_on_both_windows(tmp_path: Path) -> None:
    """One slow request (a cold start) of a model serving one request per 10 minutes burns
    "100%" of its 5m window: it must not page. The same share at real traffic does."""
    mixin = Mixin()
    count = " ".join(str(m // 10) for m in range(121))  # one request per 10 min
    fast = " ".join(str(m // 10 - (1 if m >= 100 else 0)) for m in range(121))  # the 10th is slow
    series = [s("modelmon_request_duration_seconds_count", A + ', model="m", route="/predict"', count),
              s("modelmon_request_duration_seconds_bucket", A + ', model="m", route="/predict", le="1.0"', fast)]
    tests = [{"name": "one slow request of an idle model", "interval": "1m", "input_series": series,
              "alert_rule_test": [{"eval_time": f"{t}m", "alertname": "ModelmonLatencyBudgetBurn",
                                   "exp_alerts": []} for t in (103, 105, 110)]}]
    run_promtool_tests(tmp_path, mixin, tests)

