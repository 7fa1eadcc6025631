"""The ground-truth metric families, built at scrape time from the join buffer and each
model's performance."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import Metric

from ..metrics import catalogue as cat
from .join import JoinBuffer
from .performance import LabelStats, ModelPerformance


class PerformanceCollector(cat.CatalogueCollector):
    owns = (
        cat.LABELS,
        cat.LABELS_JOINED,
        cat.JOIN_BUFFER_ENTRIES,
        cat.JOIN_EXPIRED,
        cat.JOIN_EVICTED,
        cat.LABEL_DELAY,
        cat.CONFUSION,
        cat.CORRECT,
        cat.REGRESSION_ABS_ERROR,
        cat.REGRESSION_SQ_ERROR,
        cat.REGRESSION_OVER,
        cat.REGRESSION_UNDER,
        cat.ACCURACY,
        cat.PRECISION,
        cat.RECALL,
        cat.F1,
        cat.MAE,
        cat.RMSE,
        cat.BIAS,
        cat.PERFORMANCE_SAMPLES,
        cat.SEGMENT_PREDICTIONS,
        cat.SEGMENT_POSITIVE,
        cat.SEGMENT_LABELS,
        cat.SEGMENT_CORRECT,
        cat.SEGMENT_ABS_ERROR,
    )

    def __init__(self, models: Callable[[], dict[str, ModelPerformance]], buffer: JoinBuffer,
                 stats: LabelStats) -> None:
        self._models = models
        self._buffer = buffer
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield cat.LABELS.of(self._stats.received)
        entries = cat.JOIN_BUFFER_ENTRIES.gauge()
        entries.add_metric(["prediction"], self._buffer.pending_predictions)
        entries.add_metric(["label"], self._buffer.pending_labels)
        yield entries
        yield cat.JOIN_EXPIRED.of(self._buffer.expired)
        yield cat.JOIN_EVICTED.of(self._buffer.evicted)
        yield from self._per_model()

    def _per_model(self) -> Iterator[Metric]:
        joined = cat.LABELS_JOINED.counter()
        delay = cat.LABEL_DELAY.histogram()
        confusion = cat.CONFUSION.counter()
        correct = cat.CORRECT.counter()
        errors = {stat: spec.summary() for stat, spec in _ERROR_SUMMARIES.items()}
        segment_events = {event: spec.counter() for event, spec in _SEGMENT_EVENTS.items()}
        segment_abs = cat.SEGMENT_ABS_ERROR.summary()
        accuracy = cat.ACCURACY.gauge()
        per_class = [spec.gauge() for spec in (cat.PRECISION, cat.RECALL, cat.F1)]
        regression = {key: spec.gauge() for key, spec in (("mae", cat.MAE), ("rmse", cat.RMSE),
                                                          ("bias", cat.BIAS))}
        samples = cat.PERFORMANCE_SAMPLES.gauge()
        for model, perf in self._models().items():
            if perf.joins:
                joined.add_metric([model], perf.joins)
                delay.add_metric([model], perf.delay.cumulative(), perf.delay.sum)
            for (actual, predicted), cell in list(perf.confusion.items()):
                confusion.add_metric([model, actual, predicted], cell)
            if perf.confusion:
                correct.add_metric([model], perf.correct)
            r = perf.regression
            if r.get(("n",)):
                for stat, summary in errors.items():
                    summary.add_metric([model], int(r[("n",)]), r[(stat,)])
            for (segment, group, event), count in list(perf.segments.items()):
                segment_events[event].add_metric([model, segment, group], count)
            for (segment, group), (n, total) in list(perf.segment_abs_error.items()):
                segment_abs.add_metric([model, segment, group], int(n), total)
            w = perf.windowed()
            if not w:
                continue
            samples.add_metric([model], w["samples"])
            if "accuracy" in w:
                accuracy.add_metric([model], w["accuracy"])
                for c, values in w["classes"].items():
                    for gauge, v in zip(per_class, values, strict=True):
                        if v is not None:
                            gauge.add_metric([model, c], v)
            else:
                for key, gauge in regression.items():
                    gauge.add_metric([model], w[key])
        yield from (joined, delay, confusion, correct, *errors.values(), *segment_events.values(),
                    segment_abs, accuracy, *per_class, *regression.values(), samples)


# The summaries of joined regressions, by the running sum each reads (ModelPerformance.regression).
_ERROR_SUMMARIES = {
    "absolute_error": cat.REGRESSION_ABS_ERROR,
    "squared_error": cat.REGRESSION_SQ_ERROR,
    "overprediction": cat.REGRESSION_OVER,
    "underprediction": cat.REGRESSION_UNDER,
}
_SEGMENT_EVENTS = {
    "predictions": cat.SEGMENT_PREDICTIONS,
    "positive_predictions": cat.SEGMENT_POSITIVE,
    "labels": cat.SEGMENT_LABELS,
    "correct": cat.SEGMENT_CORRECT,
}
