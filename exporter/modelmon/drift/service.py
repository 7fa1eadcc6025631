"""Drift for every model with a profile: the analyser the pipeline calls, the scheduled
recomputation, and the collector that exports it all."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .. import catalogue as cat
from ..config import Config, ModelConfig
from ..pipeline import Decoded
from ..profile import OTHER, CategoricalFeature, NumericFeature, Profile, load_profile
from ..protocols import FeatureMap, records_batch, request_batch
from .columns import QUALITY_KINDS
from .engine import DriftSettings, ModelDrift

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


class DriftService:
    def __init__(self, config: Config) -> None:
        d = config.drift
        self.settings = DriftSettings(d.window_seconds, d.sub_windows, d.min_samples, d.numeric_method,
                                      d.numeric_threshold, d.categorical_method, d.categorical_threshold)
        self.monitors: dict[str, ModelDrift] = {}
        self.maps: dict[str, FeatureMap] = {}
        self.export_histograms: dict[str, bool] = {}
        for model in config.models:
            if model.profile:
                self.add(model, load_profile(model.profile), config.limits.max_features,
                         config.limits.max_categories)

    def add(self, model: ModelConfig, profile: Profile, max_features: int, max_categories: int) -> None:
        monitor = ModelDrift(model.name, cap_categories(profile, max_categories), self.settings,
                             max_features)
        if monitor.dropped_features:
            log.warning("model %s: profile has %d features, monitoring the first %d (limits.max_features)",
                        model.name, len(profile.features), max_features)
        self.monitors[model.name] = monitor
        self.maps[model.name] = FeatureMap(monitor.features)
        self.export_histograms[model.name] = model.export_histograms

    def analyse(self, decoded: Decoded) -> None:
        monitor = self.monitors.get(decoded.model)
        if monitor is None:
            return
        fmap = self.maps[decoded.model]
        if decoded.records is not None:
            batch = records_batch(decoded.records, fmap)
        else:
            found = request_batch(decoded.request, decoded.response, fmap)
            if found is None:
                monitor.schema_errors["unrecognised_payload"] = (
                    monitor.schema_errors.get("unrecognised_payload", 0.0) + 1)
                return
            batch = found
        monitor.observe(batch)

    def compute(self) -> None:
        """Recompute every model's statistics (the scheduler calls this)."""
        for monitor in self.monitors.values():
            monitor.compute()


class DriftCollector(Collector):
    def __init__(self, service: DriftService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        monitors = list(self._service.monitors.items())
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
            if not self._service.export_histograms.get(model, True):
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
        schema = cat.SCHEMA_VIOLATIONS.counter()
        for model, m in monitors:
            totals = m.quality.total
            for pos, f in enumerate(m.features):
                for k, kind in enumerate(QUALITY_KINDS):
                    if totals[pos, k]:
                        events.add_metric([model, f.name, kind], float(totals[pos, k]))
            for reason, count in list(m.schema_errors.items()):
                schema.add_metric([model, reason], count)
        yield events
        yield schema
