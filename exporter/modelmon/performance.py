"""Delayed ground truth: the join buffer, and the performance it feeds.

Every analysed prediction is held under its request id (bounded, with a TTL) until its label
arrives through ``POST /v1/labels`` — minutes or days later. Labels that arrive first wait in a
bounded buffer of their own for their prediction. A join updates, per model:

- classification: a confusion matrix (bounded classes) as counters, from which accuracy,
  precision, recall and F1 follow in PromQL across replicas, plus windowed in-process gauges;
- regression: sums of error, absolute error and squared error and a count (MAE, RMSE, bias in
  PromQL), plus windowed gauges;
- segments: per value of each configured segment feature, predictions, positive predictions,
  labels, correct predictions and absolute error, so disparities between groups are visible.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from . import catalogue as cat
from .cardinality import OVERFLOW, BoundedLabelValues
from .instruments import Histogram, counter_vec
from .profile import category_key

Key = tuple[str, ...]


class SlidingCounter:
    """Keyed counts over the last ``window`` seconds, as a ring of ``slots`` dicts."""

    def __init__(self, window: float, slots: int, clock: Callable[[], float] = time.time) -> None:
        self._step = window / slots
        self._ring: list[dict[Key, float]] = [{} for _ in range(slots)]
        self._clock = clock
        self._tick = int(clock() // self._step)

    def _current(self) -> dict[Key, float]:
        tick = int(self._clock() // self._step)
        slots = len(self._ring)
        if tick != self._tick:
            for t in range(tick - min(tick - self._tick, slots) + 1, tick + 1):
                self._ring[t % slots] = {}
            self._tick = tick
        return self._ring[tick % slots]

    def add(self, key: Key, amount: float = 1.0) -> None:
        slot = self._current()
        slot[key] = slot.get(key, 0.0) + amount

    def totals(self) -> dict[Key, float]:
        self._current()
        out: dict[Key, float] = {}
        for slot in self._ring:
            for key, value in slot.items():
                out[key] = out.get(key, 0.0) + value
        return out


# A held prediction: (model, predicted value, prediction time, segment values). Plain tuples of
# atomic values: ~40% smaller than objects, and the garbage collector stops scanning them, so a
# full join buffer does not lengthen collection pauses.
Prediction = tuple[str, Any, float, tuple[str, ...]]
# A label waiting for its prediction: (label, arrival time).
PendingLabel = tuple[Any, float]
# A prediction's second key (e.g. the payload id beside the header id): (first key, time).
_Alias = tuple[str, float]


class JoinBuffer:
    """Predictions waiting for labels and labels waiting for predictions, each bounded by
    ``max_entries`` (oldest evicted first) and ``ttl`` seconds. A prediction held under several
    keys is stored once; its other keys point to the first, so it joins at most once."""

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self.predictions: OrderedDict[str, Prediction] = OrderedDict()
        self.aliases: OrderedDict[str, _Alias] = OrderedDict()
        self.labels: OrderedDict[str, PendingLabel] = OrderedDict()
        self._joined: OrderedDict[str, None] = OrderedDict()  # recent joins, to spot duplicates
        self.expired = counter_vec()  # (kind,)
        self.evicted = counter_vec()  # (kind,)

    def expire(self) -> None:
        deadline = self._clock() - self.ttl
        while self.predictions and next(iter(self.predictions.values()))[2] < deadline:
            self.predictions.popitem(last=False)
            self.expired[("prediction",)] += 1
        while self.aliases and next(iter(self.aliases.values()))[1] < deadline:
            self.aliases.popitem(last=False)
        while self.labels and next(iter(self.labels.values()))[1] < deadline:
            self.labels.popitem(last=False)
            self.expired[("label",)] += 1

    def _bounded_put(self, store: OrderedDict[str, Any], kind: str | None, key: str, value: Any) -> None:
        if key in store:
            store.move_to_end(key)
        elif len(store) >= self.max_entries:
            store.popitem(last=False)
            if kind is not None:
                self.evicted[(kind,)] += 1
        store[key] = value

    def add_prediction(self, keys: Sequence[str], prediction: Prediction) -> PendingLabel | None:
        """Hold a prediction under its keys; returns the label if one was already waiting."""
        for key in keys:
            label = self.labels.pop(key, None)
            if label is not None:
                self._remember_join(key)
                return label
        if keys:
            self._bounded_put(self.predictions, "prediction", keys[0], prediction)
            for key in keys[1:]:
                self._bounded_put(self.aliases, None, key, (keys[0], prediction[2]))
        return None

    def add_label(self, key: str, label: Any) -> tuple[str, Prediction | None]:
        """Offer a label: ("joined", prediction), ("duplicate", None) or ("unmatched", None) —
        an unmatched label waits for its prediction until the TTL."""
        alias = self.aliases.pop(key, None)
        first = alias[0] if alias is not None else key
        prediction = self.predictions.pop(first, None)
        if prediction is not None:
            self._remember_join(first)
            return "joined", prediction
        if first in self._joined:
            return "duplicate", None
        self._bounded_put(self.labels, "label", key, (label, self._clock()))
        return "unmatched", None

    def _remember_join(self, key: str) -> None:
        self._joined[key] = None
        if len(self._joined) > self.max_entries:
            self._joined.popitem(last=False)


def infer_task(label: Any, predicted: Any) -> str:
    """classification for text, booleans and integers; regression for other numbers."""
    for value in (label, predicted):
        if isinstance(value, float) and not value.is_integer():
            return "regression"
    return "classification"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


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
        self.regression = counter_vec()  # (stat,): n, error, absolute_error, squared_error
        self.segments = counter_vec()  # (segment, value, event)
        self.segment_abs_error = counter_vec()  # (segment, value)
        self.joins = 0
        self.correct = 0
        self.window = SlidingCounter(window, slots, clock)
        self.delay = Histogram(cat.LABEL_DELAY.buckets)

    def class_label(self, value: Any) -> str:
        return self.classes.get(category_key(value)) if value is not None else OVERFLOW

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
            if actual == predicted:
                self.correct += 1
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
        for name, value in zip(self.segment_features, segments, strict=True):
            self.segment_abs_error[(name, value)] += abs(err)

    def windowed(self) -> dict[str, Any]:
        """Accuracy and per-class precision/recall/F1, or MAE/RMSE/bias, over the window."""
        totals = self.window.totals()
        if self.task == "classification":
            cells = {(k[1], k[2]): v for k, v in totals.items() if k[0] == "confusion"}
            n = sum(cells.values())
            if not n:
                return {}
            correct = sum(v for (a, p), v in cells.items() if a == p)
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


class PerformanceCollector(Collector):
    def __init__(self, models: Callable[[], dict[str, ModelPerformance]], buffer: JoinBuffer,
                 stats: LabelStats) -> None:
        self._models = models
        self._buffer = buffer
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield cat.LABELS.of(self._stats.received)
        entries = cat.JOIN_BUFFER_ENTRIES.gauge()
        entries.add_metric(["prediction"], len(self._buffer.predictions))
        entries.add_metric(["label"], len(self._buffer.labels))
        yield entries
        yield cat.JOIN_EXPIRED.of(self._buffer.expired)
        yield cat.JOIN_EVICTED.of(self._buffer.evicted)
        yield from self._per_model()

    def _per_model(self) -> Iterator[Metric]:
        joined = cat.LABELS_JOINED.counter()
        delay = cat.LABEL_DELAY.histogram()
        confusion = cat.CONFUSION.counter()
        correct = cat.CORRECT.counter()
        samples_total = cat.REGRESSION_SAMPLES.counter()
        abs_error = cat.REGRESSION_ABS_ERROR.counter()
        sq_error = cat.REGRESSION_SQ_ERROR.counter()
        error = cat.REGRESSION_ERROR.gauge()
        segments = cat.SEGMENT_EVENTS.counter()
        segment_abs = cat.SEGMENT_ABS_ERROR.counter()
        accuracy = cat.ACCURACY.gauge()
        per_class = cat.CLASS_METRIC.gauge()
        regression = cat.REGRESSION_METRIC.gauge()
        samples = cat.PERFORMANCE_SAMPLES.gauge()
        for model, perf in self._models().items():
            if perf.joins:
                joined.add_metric([model], perf.joins)
                delay.add_metric([model], perf.delay.cumulative(), perf.delay.sum)
            for (actual, predicted), value in list(perf.confusion.items()):
                confusion.add_metric([model, actual, predicted], value)
            if perf.confusion:
                correct.add_metric([model], perf.correct)
            if perf.regression:
                r = perf.regression
                samples_total.add_metric([model], r[("n",)])
                abs_error.add_metric([model], r[("absolute_error",)])
                sq_error.add_metric([model], r[("squared_error",)])
                error.add_metric([model], r[("error",)])
            for key, count in list(perf.segments.items()):
                segments.add_metric([model, *key], count)
            for key, total in list(perf.segment_abs_error.items()):
                segment_abs.add_metric([model, *key], total)
            w = perf.windowed()
            if not w:
                continue
            samples.add_metric([model], w["samples"])
            if "accuracy" in w:
                accuracy.add_metric([model], w["accuracy"])
                for c, values in w["classes"].items():
                    for metric, v in zip(("precision", "recall", "f1"), values, strict=True):
                        if v is not None:
                            per_class.add_metric([model, c, metric], v)
            else:
                for metric in ("mae", "rmse", "bias"):
                    regression.add_metric([model, metric], w[metric])
        yield from (joined, delay, confusion, correct, samples_total, abs_error, sq_error, error, segments,
                    segment_abs, accuracy, per_class, regression, samples)
