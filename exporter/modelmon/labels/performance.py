"""The performance maths of joined predictions, per model: classification (confusion
counters, windowed accuracy, precision, recall, F1), regression (error summaries, windowed
MAE, RMSE, bias) and per-segment counts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..metrics import catalogue as cat
from ..metrics.cardinality import OVERFLOW, BoundedLabelValues
from ..metrics.instruments import Histogram, counter_vec
from ..reference.profile import category_key
from ..window import SlidingCounter
from .keys import Digest, Prediction, comparison_key, text_of


def infer_task(label: Any, predicted: Any) -> str:
    """classification for text, booleans and integers; regression for other numbers."""
    for value in (label, predicted):
        if isinstance(value, float) and not value.is_integer():
            return "regression"
    return "classification"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range (the stdlib JSON parser keeps it)
        return None
    return number if math.isfinite(number) else None


class ModelPerformance:
    """One model's performance counters, cumulative and windowed."""

    def __init__(self, model: str, task: str, classes: Sequence[str], max_classes: int,
                 positive_class: str | None, segments: Sequence[str], max_segment_values: int,
                 window: float, slots: int, clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.task = task  # "auto" until the first label decides
        self.classes = BoundedLabelValues(max_classes, preset=classes)
        self.positive_class = positive_class
        self.segment_features = list(segments)
        self._segment_values = [BoundedLabelValues(max_segment_values) for _ in segments]
        self.confusion = counter_vec()  # (actual, predicted)
        # (stat,): n, error, absolute_error, squared_error, overprediction, underprediction,
        # invalid (labels or predictions that are not numbers)
        self.regression = counter_vec()
        self.segments = counter_vec()  # (segment, value, event)
        # (segment, value) -> [joined regressions, sum of their absolute errors]
        self.segment_abs_error: dict[tuple[str, str], list[float]] = {}
        self.joins = 0
        self.correct = 0
        self.window: SlidingCounter[tuple[str, ...]] = SlidingCounter(window, slots, clock)
        self.delay = Histogram(cat.LABEL_DELAY.buckets)

    def class_label(self, value: Any) -> str:
        return OVERFLOW if value is None or type(value) is Digest else self.classes.get(text_of(value))

    def segment_values(self, row: Sequence[Any]) -> tuple[str, ...]:
        return tuple(values.get(category_key(v)) if v is not None else "__missing__"
                     for values, v in zip(self._segment_values, row, strict=True))

    def predicted(self, segments: tuple[str, ...], predicted: Any) -> None:
        """Count a prediction in its segments (at prediction time)."""
        positive = self.positive_class is not None and predicted is not None and \
            category_key(predicted) == self.positive_class
        for name, value in zip(self.segment_features, segments, strict=True):
            self.segments[(name, value, "predictions")] += 1
            if positive:
                self.segments[(name, value, "positive_predictions")] += 1

    def joined(self, prediction: Prediction, label: Any, now: float) -> None:
        _, predicted_value, at, segments = prediction
        self.joins += 1
        self.delay.observe(max(0.0, now - at))
        if self.task == "auto":
            self.task = infer_task(label, predicted_value)
        for name, value in zip(self.segment_features, segments, strict=True):
            self.segments[(name, value, "labels")] += 1
        if self.task == "classification":
            actual, predicted = self.class_label(label), self.class_label(predicted_value)
            self.confusion[(actual, predicted)] += 1
            self.window.add(("confusion", actual, predicted))
            # Two class labels are equal if their values are; values that fold into __other__
            # (past the class cap, too long: held as Digests) are compared by their keys.
            if (actual == predicted if actual != OVERFLOW and predicted != OVERFLOW else
                    predicted_value is not None and comparison_key(label) == comparison_key(predicted_value)):
                self.correct += 1
                self.window.add(("correct",))
                for name, value in zip(self.segment_features, segments, strict=True):
                    self.segments[(name, value, "correct")] += 1
            return
        y, p = _number(label), _number(predicted_value)
        if y is None or p is None:
            self.regression[("invalid",)] += 1
            return
        err = p - y
        for stat, amount in (("n", 1.0), ("error", err), ("absolute_error", abs(err)),
                             ("squared_error", err * err)):
            self.regression[(stat,)] += amount
            self.window.add(("regression", stat), amount)
        self.regression[("overprediction",) if err > 0 else ("underprediction",)] += abs(err)
        for name, value in zip(self.segment_features, segments, strict=True):
            entry = self.segment_abs_error.setdefault((name, value), [0.0, 0.0])
            entry[0] += 1
            entry[1] += abs(err)

    def windowed(self) -> dict[str, Any]:
        """Accuracy and per-class precision/recall/F1, or MAE/RMSE/bias, over the window."""
        totals = self.window.totals()
        if self.task == "classification":
            cells = {(k[1], k[2]): v for k, v in totals.items() if k[0] == "confusion"}
            n = sum(cells.values())
            if not n:
                return {}
            correct = totals.get(("correct",), 0.0)
            per_class: dict[str, tuple[float | None, float | None, float | None]] = {}
            for c in sorted({a for a, _ in cells} | {p for _, p in cells}):
                tp = cells.get((c, c), 0.0)
                predicted = sum(v for (_, p), v in cells.items() if p == c)
                actual = sum(v for (a, _), v in cells.items() if a == c)
                precision = tp / predicted if predicted else None
                recall = tp / actual if actual else None
                f1 = (2 * precision * recall / (precision + recall)
                      if precision is not None and recall is not None and precision + recall else
                      (0.0 if precision is not None and recall is not None else None))
                per_class[c] = (precision, recall, f1)
            return {"samples": n, "accuracy": correct / n, "classes": per_class}
        stats = {k[1]: v for k, v in totals.items() if k[0] == "regression"}
        n = stats.get("n", 0.0)
        if not n:
            return {}
        return {"samples": n, "mae": stats["absolute_error"] / n,
                "rmse": math.sqrt(stats["squared_error"] / n), "bias": stats["error"] / n}


class LabelStats:
    def __init__(self) -> None:
        self.received = counter_vec()  # (outcome,)


