"""Exporting drift: the collector for every model with a profile, and profile/config helpers."""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .. import catalogue as cat
from ..exposition import FrozenFamily
from ..profile import OTHER, CategoricalFeature, NumericFeature, Profile
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


class DriftCollector(Collector):
    """Exports the drift state of every model with a profile (``monitors``: model -> ModelDrift;
    ``export_histograms``: model -> whether to export the raw bins).

    ``collect_steps()`` builds the families a few features at a time, with a ``None`` between
    steps where a scrape gives the event loop back (see ``modelmon.exposition``); ``collect()``
    is the same, in one go. The reference profile's families never change: they are built once
    and frozen, so a scrape formats them once per exposition format."""

    def __init__(self, monitors: dict[str, ModelDrift], export_histograms: dict[str, bool]) -> None:
        self._monitors = monitors
        self._export_histograms = export_histograms
        # Built now, off the serving path (the profile's hash alone takes ~5 ms for 100 features).
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
        values = cat.FEATURE_VALUE.histogram()
        categories = cat.FEATURE_CATEGORY.counter()
        yield from self._histograms(monitors, static.les, values, categories)
        yield values
        yield categories
        yield static.ref_buckets
        yield static.ref_categories
        windowed = (cat.DRIFT_SCORE.gauge(), cat.DRIFT_P_VALUE.gauge(), cat.DRIFT_DETECTED.gauge(),
                    cat.MODEL_DRIFT_DETECTED.gauge(), cat.WINDOW_SAMPLES.gauge(),
                    cat.MISSING_RATIO.gauge(), cat.OUT_OF_RANGE_RATIO.gauge(),
                    cat.DRIFT_LAST_SUCCESS.gauge(), cat.DRIFT_COMPUTE_DURATION.gauge())
        yield from self._windowed(monitors, *windowed)
        yield from windowed
        events = cat.QUALITY_EVENTS.counter()
        yield from self._quality(monitors, events)
        yield events
        yield static.reference_missing

    # --- the reference profile's families: built once ---------------------------------------------

    def _static_key(self, monitors: Sequence[tuple[str, ModelDrift]]) -> tuple[object, ...]:
        return tuple((model, id(m), self._export_histograms.get(model, True)) for model, m in monitors)

    def _build_static(self, monitors: Sequence[tuple[str, ModelDrift]], key: tuple[object, ...]
                      ) -> Generator[None, None, _StaticFamilies]:
        info = cat.PROFILE_INFO.info()
        ref_buckets = cat.REFERENCE_BUCKET.gauge()
        ref_categories = cat.REFERENCE_CATEGORY.gauge()
        reference_missing = cat.REFERENCE_MISSING_RATIO.gauge()
        les: dict[tuple[str, int], list[str]] = {}
        for model, m in monitors:
            info.add_metric([], {"model": model, "profile_hash": m.profile.hash,
                                 "profile_model_version": m.profile.model_version,
                                 "created_at": m.profile.created_at})
            for f in m.features:
                rows = f.count + f.missing
                reference_missing.add_metric([model, f.name], f.missing / rows if rows else 0.0)
            if not self._export_histograms.get(model, True):
                continue
            for pos, f in enumerate(m.features):
                if pos and pos % FEATURES_PER_STEP == 0:
                    yield
                if isinstance(f, NumericFeature):
                    les[model, pos] = [floatToGoString(e) for e in f.edges] + ["+Inf"]  # type: ignore[no-untyped-call]
                    for le, ratio in zip(les[model, pos], m.reference_cumulative(f), strict=True):
                        ref_buckets.add_metric([model, f.name, le], ratio)
                else:
                    total = sum(f.counts)
                    for name, ref in zip((*f.categories, OTHER), f.counts, strict=True):
                        ref_categories.add_metric([model, f.name, name], ref / total if total else 0.0)
        return _StaticFamilies(key, FrozenFamily(info), FrozenFamily(ref_buckets),
                               FrozenFamily(ref_categories), FrozenFamily(reference_missing), les)

    # --- live families: a step every FEATURES_PER_STEP features ------------------------------------

    def _histograms(self, monitors: Sequence[tuple[str, ModelDrift]],
                    les: dict[tuple[str, int], list[str]], values: HistogramMetricFamily,
                    categories: CounterMetricFamily) -> Iterator[None]:
        for model, m in monitors:
            if not self._export_histograms.get(model, True):
                continue
            bins = m.bins.total.copy()  # counts and sums as of one instant, whatever runs between steps
            sums = m.value_sums.copy()
            for pos, f in enumerate(m.features):
                if pos and pos % FEATURES_PER_STEP == 0:
                    yield
                start = m.offsets[pos]
                counts = bins[start:start + len(f.counts)]
                if isinstance(f, NumericFeature):
                    values.add_metric([model, f.name],
                                      list(zip(les[model, pos], counts.cumsum().tolist(), strict=True)),
                                      float(sums[pos]))
                else:
                    for name, count in zip((*f.categories, OTHER), counts.tolist(), strict=True):
                        categories.add_metric([model, f.name, name], count)

    def _windowed(self, monitors: Sequence[tuple[str, ModelDrift]], scores: GaugeMetricFamily,
                  p_values: GaugeMetricFamily, detected: GaugeMetricFamily,
                  model_detected: GaugeMetricFamily, samples: GaugeMetricFamily,
                  missing: GaugeMetricFamily, out_of_range: GaugeMetricFamily,
                  last: GaugeMetricFamily, duration: GaugeMetricFamily) -> Iterator[None]:
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
                for test, value in f.p_values.items():
                    p_values.add_metric([model, f.name, test], value)
                if f.detected is not None:
                    detected.add_metric([model, f.name], float(f.detected))
                if f.missing_ratio is not None:
                    missing.add_metric([model, f.name], f.missing_ratio)
                if f.out_of_range_ratio is not None:
                    out_of_range.add_metric([model, f.name], f.out_of_range_ratio)

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
    ref_buckets: FrozenFamily
    ref_categories: FrozenFamily
    reference_missing: FrozenFamily
    les: dict[tuple[str, int], list[str]]  # (model, feature position) -> the bins' "le" values

