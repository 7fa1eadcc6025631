"""Exporting drift: the collector for every model with a profile, and profile/config helpers."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .. import catalogue as cat
from ..profile import OTHER, CategoricalFeature, NumericFeature, Profile
from .columns import QUALITY_KINDS
from .engine import ModelDrift

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
    ``export_histograms``: model -> whether to export the raw bins)."""

    def __init__(self, monitors: dict[str, ModelDrift], export_histograms: dict[str, bool]) -> None:
        self._monitors = monitors
        self._export_histograms = export_histograms

    def collect(self) -> Iterator[Metric]:
        monitors = list(self._monitors.items())
        for _, monitor in monitors:
            monitor.flush()  # rows still queued for binning count in this scrape
        yield from self._profiles(monitors)
        yield from self._histograms(monitors)
        yield from self._windowed(monitors)
        yield from self._quality(monitors)

    def _profiles(self, monitors: Sequence[tuple[str, ModelDrift]]) -> Iterator[Metric]:
        info = cat.PROFILE_INFO.info()
        for model, m in monitors:
            info.add_metric([], {"model": model, "profile_hash": m.profile.hash,
                                 "profile_model_version": m.profile.model_version,
                                 "created_at": m.profile.created_at})
        yield info

    def _histograms(self, monitors: Sequence[tuple[str, ModelDrift]]) -> Iterator[Metric]:
        values = cat.FEATURE_VALUE.histogram()
        categories = cat.FEATURE_CATEGORY.counter()
        ref_buckets = cat.REFERENCE_BUCKET.gauge()
        ref_categories = cat.REFERENCE_CATEGORY.gauge()
        for model, m in monitors:
            if not self._export_histograms.get(model, True):
                continue
            for pos, f in enumerate(m.features):
                counts = m.cumulative_bins(pos)
                if isinstance(f, NumericFeature):
                    les = [floatToGoString(e) for e in f.edges] + ["+Inf"]  # type: ignore[no-untyped-call]
                    cumulative = counts.cumsum()
                    values.add_metric([model, f.name], list(zip(les, cumulative.tolist(), strict=True)),
                                      float(m.value_sums[pos]))
                    for le, ratio in zip(les, m.reference_cumulative(f), strict=True):
                        ref_buckets.add_metric([model, f.name, le], ratio)
                else:
                    total = sum(f.counts)
                    for name, count, ref in zip((*f.categories, OTHER), counts.tolist(), f.counts,
                                                strict=True):
                        categories.add_metric([model, f.name, name], count)
                        ref_categories.add_metric([model, f.name, name], ref / total if total else 0.0)
        yield values
        yield categories
        yield ref_buckets
        yield ref_categories

    def _windowed(self, monitors: Sequence[tuple[str, ModelDrift]]) -> Iterator[Metric]:
        scores = cat.DRIFT_SCORE.gauge()
        p_values = cat.DRIFT_P_VALUE.gauge()
        detected = cat.DRIFT_DETECTED.gauge()
        model_detected = cat.MODEL_DRIFT_DETECTED.gauge()
        samples = cat.WINDOW_SAMPLES.gauge()
        missing = cat.MISSING_RATIO.gauge()
        out_of_range = cat.OUT_OF_RANGE_RATIO.gauge()
        last = cat.DRIFT_LAST_SUCCESS.gauge()
        duration = cat.DRIFT_COMPUTE_DURATION.gauge()
        for model, m in monitors:
            snap = m.snapshot
            if snap is None:
                continue
            last.add_metric([model], snap.computed_at)
            duration.add_metric([model], snap.duration)
            if snap.model_detected is not None:
                model_detected.add_metric([model], float(snap.model_detected))
            for f in snap.features:
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
        yield from (scores, p_values, detected, model_detected, samples, missing, out_of_range,
                    last, duration)

    def _quality(self, monitors: Sequence[tuple[str, ModelDrift]]) -> Iterator[Metric]:
        events = cat.QUALITY_EVENTS.counter()
        reference_missing = cat.REFERENCE_MISSING_RATIO.gauge()
        for model, m in monitors:
            for f in m.features:
                rows = f.count + f.missing
                reference_missing.add_metric([model, f.name], f.missing / rows if rows else 0.0)
            totals = m.quality.total
            for pos, f in enumerate(m.features):
                for k, kind in enumerate(QUALITY_KINDS):
                    if totals[pos, k]:
                        events.add_metric([model, f.name, kind], float(totals[pos, k]))
        yield events
        yield reference_missing
