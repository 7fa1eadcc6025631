"""`modelmon demo` end to end: model server + sidecar + traffic, live metrics."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from helpers import free_port, wait_http
from prometheus_client.parser import text_string_to_metric_families


def test_demo_runs_and_metrics_move(tmp_path: Path) -> None:
    traffic, admin, model = free_port(), free_port(), free_port()
    log = tmp_path / "demo.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelmon", "demo", "--duration", "16", "--rps", "30", "--drift-after", "4",
         "--traffic-port", str(traffic), "--admin-port", str(admin), "--model-port", str(model)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{admin}/readyz", 60, proc)
        time.sleep(13)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as resp:
            text = resp.read().decode()
        assert proc.wait(60) == 0, log.read_text()
    finally:
        proc.kill()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("modelmon_requests_total", model="demo", route="/v1/models/{model}:predict", code="200") > 10
    assert value("modelmon_requests_total", model="demo", route="/v2/models/{model}/infer", code="200") > 10
    assert value("modelmon_analysis_records_total", model="demo", source="proxy") > 20
    assert value("modelmon_upstream_up") == 1
    assert value("modelmon_model_process_up") == 1
    assert value("modelmon_model_memory_rss_bytes") > 10e6
    assert value("modelmon_model_trained_timestamp_seconds", model="demo") > time.time() - 600
    # Drift and missing values were injected after 4 s; labels arrive 3-15 s after predictions.
    assert value("modelmon_drift_detected", model="demo", feature="amount") == 1
    assert value("modelmon_drift_detected", model="demo", feature="num_products") == 0
    assert value("modelmon_feature_missing_ratio", model="demo", feature="age") > 0
    assert value("modelmon_labels_joined_total", model="demo") > 50
    assert 0.5 < value("modelmon_classification_accuracy", model="demo") < 0.95
    assert value("modelmon_segment_predictions_total", model="demo", segment="region", value="eu") > 0
    out = log.read_text()
    assert f"http://127.0.0.1:{admin}/metrics" in out
    assert "traffic done: responses by status {200:" in out
    assert "400" not in out.split("traffic done")[1]


def test_the_healthy_demo_model_clears_the_accuracy_alert_threshold() -> None:
    """Healthy demo traffic must not fire ModelmonAccuracyLow at the mixin's default threshold,
    with a margin for the sampling noise of a window's labels."""
    import numpy as np
    from modelmon.demo.model import sample_features, train, true_labels
    from modelmon.mixin import MixinConfig

    model, _, _ = train()
    rng = np.random.default_rng(11)
    x = sample_features(rng, 20000)
    accuracy = float(((model.predict_proba(x) > 0.5) == true_labels(rng, x)).mean())
    assert accuracy > MixinConfig().performance.accuracy_min + 0.05, accuracy

