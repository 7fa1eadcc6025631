"""Generates docs/metrics.md from the metric catalogue: ``python -m modelmon.metrics.docs``."""

from __future__ import annotations

from . import catalogue as cat

HEADER = """<!-- generated from exporter/modelmon/metrics/catalogue.py by `make generate` - do not edit -->
# Metrics reference

Every metric modelmon exports, generated from the catalogue in code. Counters carry the
`_total` suffix on `/metrics`; summaries expose `_sum` and `_count`; histograms expose
`_bucket` and `_count` (equal to the `+Inf` bucket), and `_sum` only while it is a counter: no
bucket edge and no value seen below zero (OpenMetrics 1.0: a sum that can fall must not be
exposed; a feature's `_sum` is dropped for good once a negative value arrives, and the window
mean is `modelmon_feature_window_mean`). OpenMetrics' text format ties `_count` to `_sum`; modelmon keeps
`_count` on every histogram, which Prometheus reads in both formats.

| name | type | labels | meaning |
|---|---|---|---|
"""


def metrics_markdown() -> str:
    rows = []
    for spec in cat.ALL:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
        help_text = spec.help
        if spec.buckets:
            help_text += " Buckets: " + ", ".join(f"{b:g}" for b in spec.buckets) + " s."
        rows.append(f"| `{spec.exposed_name}` | {spec.kind.value} | {labels} | {help_text} |")
    return HEADER + "\n".join(rows) + "\n\n" + cat.PROCESS_METRICS_NOTE + "\n"


if __name__ == "__main__":
    print(metrics_markdown(), end="")
