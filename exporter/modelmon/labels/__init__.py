"""Ground truth: delayed labels joined to predictions, and the performance they feed.

Every analysed prediction is held under its request id (bounded, with a TTL) until its label
arrives through ``POST /v1/labels`` — minutes or days later. Labels that arrive first wait in a
bounded buffer of their own for their prediction. A join updates, per model:

- classification: a confusion matrix (bounded classes) as counters, from which accuracy,
  precision, recall and F1 follow in PromQL across replicas, plus windowed in-process gauges;
- regression: summaries (a sum and a count) of the absolute error, the squared error, and the
  over- and under-prediction (MAE, RMSE, bias in PromQL), plus windowed gauges;
- segments: per value of each configured segment feature, predictions, positive predictions,
  labels, correct predictions and absolute error, so disparities between groups are visible.
"""

from .collector import PerformanceCollector
from .join import JoinBuffer
from .keys import PendingLabel, Prediction
from .performance import LabelStats, ModelPerformance, infer_task

__all__ = ["JoinBuffer", "LabelStats", "ModelPerformance", "PendingLabel", "PerformanceCollector",
           "Prediction", "infer_task"]
