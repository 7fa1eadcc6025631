"""Exporting drift: the collector for every model with a profile, and profile/config helpers."""

from __future__ import annotations

import logging
import math
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..metrics import catalogue as cat
from ..metrics.exposition import FrozenFamily
from ..reference.profile import OTHER, CategoricalFeature, NumericFeature, Profile
from .columns import QUALITY_KINDS
from .engine import FEATURES_PER_STEP, ModelDrift

log = logging.getLogger("modelmon.drift")


def cap_categories(profile: Profile, max_categories: int) -> Profile:
    """Fold categories beyond the cap into the "other" bucket (bounded label values)."""
    features = []
    for f in profile.features:
        if isinstance(f, CategoricalFeature) and len(f.categories) > max_categories:
            log.warning("model %s feature %s: %d categories, keeping the top %d (limits.max_categories)",
                        profile.model, f.name, len(f.categories), max_categories)
            kept = f.counts[:max_categories]
            f = replace(f, categories=f.categories[:max_categories],
                        counts=(*kept, sum(f.counts) - sum(kept)))
        features.append(f)
    return replace(profile, features=tuple(features))


class DriftCollector(cat.CatalogueCollector):
    """Exports the drift state of every model with a profile (``monitors``: model -> ModelDrift;
    ``export_histograms``: model -> whether to export the live bins; ``export_reference``:
    model -> whether to export the reference's).

    ``collect_steps()`` builds the families a few features at a time, with a ``None`` between
    steps where a scrape gives the event loop back (see ``modelmon.metrics.exposition``); ``collect()``
    is the same, in one go. The reference profile's families never change: they are built once
    and frozen, so a scrape formats them once per exposition format. Among them
    ``modelmon_feature_info{role}``, one per monitored feature, exported with or without the
    reference's bins: the mixin's alerts tell input from output drift by it."""

    owns = (
        cat.PROFILE_INFO,
        cat.FEATURE_INFO,
        cat.FEATURE_VALUE,
        cat.FEATURE_CATEGORY,
        cat.FEATURE_WINDOW_MEAN,
        cat.REFERENCE_VALUE,
        cat.REFERENCE_MEAN,
        cat.REFERENCE_CATEGORY,
        cat.REFERENCE_MISSING_RATIO,
        cat.DRIFT_SCORE,
        cat.DRIFT_SCORE_LOWER,
        cat.DRIFT_SCORE_UPPER,
        cat.DRIFT_P_VALUE,
        cat.DRIFT_DETECTED,
        cat.MODEL_DRIFT_DETECTED,
        cat.WINDOW_SAMPLES,
        cat.MISSING_RATIO,
        cat.OUT_OF_RANGE_RATIO,
        cat.QUALITY_EVENTS,
        cat.DRIFT_LAST_SUCCESS,
        cat.DRIFT_COMPUTE_DURATION,
    )

    def __init__(self, monitors: dict[str, ModelDrift], export_histograms: dict[str, bool],
                 export_reference: dict[str, bool] | None = None) -> None:
        self._monitors = monitors
        self._export_histograms = export_histograms
        self._export_reference = export_reference if export_reference is not None else {}
        # Built now, off the serving path (hashing a large profile takes milliseconds).
        now = list(monitors.items())
        self._static = _result(self._build_static(now, self._static_key(now)))

    def collect(self) -> Iterator[Metric]:
        return (family for family in self.collect_steps() if family is not None)

    def collect_steps(self) -> Iterator[Metric | None]:
        monitors = list(self._monitors.items())
        for _, monitor in monitors:
            yield from monitor.flush_steps()  # rows still queued for binning count in this scrape
        static = self._static
        key = self._static_key(monitors)
        if static.key != key:  # models came or went since
            static = self._static = yield from self._build_static(monitors, key)
        yield static.info
        yield static.features
        values = cat.FEATURE_VALUE.histogram()
        categories = cat.FEATURE_CATEGORY.counter()
        yield from self._histograms(monitors, static.les, values, categories)
        yield values
        yield categories
        yield static.ref_values
        yield static.ref_means
        yield static.ref_categories
        windowed = (cat.DRIFT_SCORE.gauge(), cat.DRIFT_SCORE_LOWER.gauge(), cat.DRIFT_SCORE_UPPER.gauge(),
                    cat.DRIFT_P_VALUE.gauge(), cat.DRIFT_DETECTED.gauge(),
                    cat.MODEL_DRIFT_DETECTED.gauge(), cat.WINDOW_SAMPLES.gauge(),
                    cat.MISSING_RATIO.gauge(), cat.OUT_OF_RANGE_RATIO.gauge(),
                    cat.FEATURE_WINDOW_MEAN.gauge(),
                    cat.DRIFT_LAST_SUCCESS.gauge(), cat.DRIFT_COMPUTE_DURATION.gauge())
        yield from self._windowed(monitors, *windowed)
        yield from windowed
        events = cat.QUALITY_EVENTS.counter()
        yield from self._quality(monitors, events)
        yield events
        yield static.reference_missing

    # --- the reference profile's families: built once ---------------------------------------------

    def _static_key(self, monitors: Sequence[tuple[str, ModelDrift]]) -> tuple[object, ...]:
        return tuple((model, id(m), self._export_histograms.get(model, True),
                      self._export_reference.get(model, True)) for model, m in monitors)

    def _build_static(self, monitors: Sequence[tuple[str, ModelDrift]], key: tuple[object, ...]
                      ) -> Generator[None, None, _StaticFamilies]:
        info = cat.PROFILE_INFO.info()
        features = cat.FEATURE_INFO.info()
        ref_values = cat.REFERENCE_VALUE.histogram()
        ref_means = cat.REFERENCE_MEAN.gauge()
        ref_categories = cat.REFERENCE_CATEGORY.gauge()
        reference_missing = cat.REFERENCE_MISSING_RATIO.gauge()
        les: dict[tuple[str, int], list[str]] = {}
        for model, m in monitors:
            info.add_metric([], {"model": model, "profile_hash": m.profile.hash,
                                 "profile_model_version": m.profile.model_version,
                                 "created_at": m.profile.created_at})
            for f in m.features:  # the monitored ones: inputs and outputs, targets are not
                features.add_metric([], {"model": model, "feature": f.name, "role": f.role})
                rows = f.count + f.missing
                reference_missing.add_metric([model, f.name], f.missing / rows if rows else 0.0)
            reference = self._export_reference.get(model, True)
            if not reference and not self._export_histograms.get(model, True):
                continue
            for pos, f in enumerate(m.features):
                if pos and pos % FEATURES_PER_STEP == 0:
                    yield
                if isinstance(f, NumericFeature):
                    # The same le strings on both histograms, as Go writes them (what Prometheus 3
                    # normalises le to, on histograms only: hence the reference is a histogram
                    # too, not a gauge).
                    les[model, pos] = [cat.le_value(e) for e in f.edges] + ["+Inf"]
                    if reference:
                        cumulative = np.cumsum(f.counts, dtype=np.float64).tolist()
                        cat.add_histogram(ref_values, [model, f.name],
                                          list(zip(les[model, pos], cumulative, strict=True)),
                                          0.0 if not cumulative[-1] else
                                          f.mean * cumulative[-1] if f.min >= 0 else None)
                        if cumulative[-1] > 0:
                            ref_means.add_metric([model, f.name], f.mean)
                elif reference:
                    total = sum(f.counts)
                    for name, ref in zip((*f.categories, OTHER), f.counts, strict=True):
                        ref_categories.add_metric([model, f.name, name], ref / total if total else 0.0)
        return _StaticFamilies(key, FrozenFamily(info), FrozenFamily(features), FrozenFamily(ref_values),
                               FrozenFamily(ref_means), FrozenFamily(ref_categories),
                               FrozenFamily(reference_missing), les)

    # --- live families: a step every FEATURES_PER_STEP features ------------------------------------

    def _histograms(self, monitors: Sequence[tuple[str, ModelDrift]],
                    les: dict[tuple[str, int], list[str]], values: HistogramMetricFamily,
                    categories: CounterMetricFamily) -> Iterator[None]:
        for model, m in monitors:
            if not self._export_histograms.get(model, True):
                continue
            bins = m.bins.total.copy()  # counts and sums as of one instant, whatever runs between steps
            sums = m.sums.total.copy()
            negative = m.negative.copy()
            for pos, f in enumerate(m.features):
                if pos and pos % FEATURES_PER_STEP == 0:
                    yield
                start = m.offsets[pos]
                counts = bins[start:start + len(f.counts)]
                if isinstance(f, NumericFeature):
                    # _sum only while it is a counter: no value below zero seen, none overflowed
                    total = float(sums[pos])
                    cat.add_histogram(values, [model, f.name],
                                      list(zip(les[model, pos], counts.cumsum().tolist(), strict=True)),
                                      None if negative[pos] or not math.isfinite(total) else total)
                else:
                    for name, count in zip((*f.categories, OTHER), counts.tolist(), strict=True):
                        categories.add_metric([model, f.name, name], count)

    def _windowed(self, monitors: Sequence[tuple[str, ModelDrift]], scores: GaugeMetricFamily,
                  lower: GaugeMetricFamily, upper: GaugeMetricFamily, p_values: GaugeMetricFamily,
                  detected: GaugeMetricFamily, model_detected: GaugeMetricFamily, samples: GaugeMetricFamily,
                  missing: GaugeMetricFamily, out_of_range: GaugeMetricFamily,
                  mean: GaugeMetricFamily, last: GaugeMetricFamily,
                  duration: GaugeMetricFamily) -> Iterator[None]:
        for model, m in monitors:
            snap = m.snapshot  # immutable: the scoring pass replaces it whole
            if snap is None:
                continue
            last.add_metric([model], snap.computed_at)
            duration.add_metric([model], snap.duration)
            if snap.model_detected is not None:
                model_detected.add_metric([model], float(snap.model_detected))
            for i, f in enumerate(snap.features):
                if i and i % FEATURES_PER_STEP == 0:
                    yield
                samples.add_metric([model, f.name], f.samples)
                for method, value in f.scores.items():
                    scores.add_metric([model, f.name, method], value)
                for method, (low, high) in f.score_bounds.items():
                    lower.add_metric([model, f.name, method], low)
                    upper.add_metric([model, f.name, method], high)
                for test, value in f.p_values.items():
                    p_values.add_metric([model, f.name, test], value)
                if f.detected is not None:
                    detected.add_metric([model, f.name], float(f.detected))
                if f.missing_ratio is not None:
                    missing.add_metric([model, f.name], f.missing_ratio)
                if f.out_of_range_ratio is not None:
                    out_of_range.add_metric([model, f.name], f.out_of_range_ratio)
                if f.mean is not None:
                    mean.add_metric([model, f.name], f.mean)

    def _quality(self, monitors: Sequence[tuple[str, ModelDrift]],
                 events: CounterMetricFamily) -> Iterator[None]:
        for model, m in monitors:
            totals = m.quality.total.tolist()  # as of one instant
            for pos, f in enumerate(m.features):
                if pos and pos % FEATURES_PER_STEP == 0:
                    yield
                for kind, count in zip(QUALITY_KINDS, totals[pos], strict=True):
                    if count:
                        events.add_metric([model, f.name, kind], float(count))


_T = TypeVar("_T")


def _result(steps: Generator[None, None, _T]) -> _T:
    """Run ``steps`` to the end; their result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class _StaticFamilies:
    key: tuple[object, ...]
    info: FrozenFamily
    features: FrozenFamily  # modelmon_feature_info: each monitored feature's role
    ref_values: FrozenFamily
    ref_means: FrozenFamily
    ref_categories: FrozenFamily
    reference_missing: FrozenFamily
    les: dict[tuple[str, int], list[str]]  # (model, feature position) -> the bins' "le" values

