"""The analyser the pipeline runs for every item: protocol extraction, then drift, the join
buffer and segments, per model."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import Metric

from ..config import Config, ModelConfig
from ..labels import JoinBuffer, LabelStats, ModelPerformance, Prediction
from ..metrics import catalogue as cat
from ..metrics.instruments import counter_vec
from ..protocols import (
    ABSENT,
    Extracted,
    Extractor,
    FeatureMapper,
    GenericSpec,
    JsonPath,
    PayloadError,
    records_extracted,
)
from ..reference.profile import CategoricalFeature, Profile, category_key, load_profile
from .queue import Decoded

log = logging.getLogger("modelmon.analysis")


@dataclass
class ModelAnalysis:
    extractor: Extractor
    mapper: FeatureMapper
    performance: ModelPerformance
    drift: Any = None  # drift.engine.ModelDrift when the model has a profile


class Analysis:
    """Implements the pipeline's Analyser; also the target of ``POST /v1/labels``."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        lc = config.labels
        self.buffer = JoinBuffer(lc.max_entries, lc.ttl_seconds, clock)
        self.label_stats = LabelStats()
        self.payload_errors = counter_vec()  # (model, reason)
        self.models: dict[str, ModelAnalysis] = {}
        self.drift_models: dict[str, Any] = {}
        self.export_histograms: dict[str, bool] = {}
        self.export_reference: dict[str, bool] = {}
        self._configs = {m.name: m for m in config.models}
        for model in config.models:
            self.models[model.name] = self._build(model)

    def _build(self, model: ModelConfig) -> ModelAnalysis:
        profile: Profile | None = load_profile(model.profile) if model.profile else None
        generic = None
        if model.generic is not None:
            g = model.generic
            generic = GenericSpec(JsonPath(g.features), JsonPath(g.predictions) if g.predictions else None,
                                  JsonPath(g.request_id) if g.request_id else None)
        lc = self.config.labels
        classes = list(model.classes)
        inputs = list(model.feature_names)
        outputs: list[str] = []
        drift = None
        if profile is not None:
            from ..drift.engine import ModelDrift
            from ..drift.service import cap_categories

            limits = self.config.limits
            drift = ModelDrift(model.name, cap_categories(profile, limits.max_categories),
                               self.config.drift, limits.max_features, self._clock)
            if drift.dropped_features:
                log.warning("model %s: monitoring the first %d of %d profile features "
                            "(limits.max_features)", model.name, len(drift.features),
                            len(drift.features) + drift.dropped_features)
            self.drift_models[model.name] = drift
            self.export_histograms[model.name] = model.export_histograms
            self.export_reference[model.name] = model.export_reference
            inputs = inputs or [f.name for f in profile.inputs()]
            outputs = [f.name for f in profile.outputs()]
            targets = [f for f in profile.features if f.role == "target"]
            if not classes and targets and isinstance(targets[0], CategoricalFeature):
                classes = list(targets[0].categories)
        # Labels and predictions are counted under their canonical keys (category_key: JSON
        # true and a profile's or config's "True" are one class): so are the configured ones.
        classes = list(dict.fromkeys(category_key(c) for c in classes))
        positive = None if model.positive_class is None else category_key(model.positive_class)
        performance = ModelPerformance(
            model.name, model.task, classes, lc.max_classes, positive, model.segments,
            lc.max_segment_values, lc.window_seconds, lc.sub_windows, self._clock)
        return ModelAnalysis(Extractor(model.protocol, generic),
                             FeatureMapper(inputs, outputs, model.classes or None, model.prediction_output),
                             performance, drift)

    def model(self, name: str) -> ModelAnalysis:
        """The model's analysis; models seen only in routes (already bounded) get defaults."""
        found = self.models.get(name)
        if found is None:
            found = self.models[name] = self._build(ModelConfig(name=name))
        return found

    # --- the pipeline's Analyser ---------------------------------------------------------------

    def analyse(self, decoded: Decoded) -> int:
        """Analyse one decoded exchange or batch of pushed records; returns the rows its adapter
        found (the count of ``modelmon_analysis_records_total``), 1 for a payload it could not
        read."""
        m = self.model(decoded.model)
        try:
            if decoded.records is not None:
                ex = records_extracted(decoded.records)
            else:
                ex = m.extractor.extract(decoded.route, decoded.request, decoded.response)
        except PayloadError as exc:
            self.payload_errors[(decoded.model, exc.reason)] += 1
            return 1
        outputs = m.mapper.outputs(ex)
        errors = ex.errors
        if m.drift is not None:
            batch = m.mapper.batch(ex, outputs)
            errors = batch.schema_errors
            m.drift.add(batch)
        for reason, count in errors.items():
            self.payload_errors[(decoded.model, reason)] += count
        self._hold_predictions(decoded, m, ex, outputs)
        return ex.rows

    def _hold_predictions(self, decoded: Decoded, m: ModelAnalysis, ex: Extracted,
                          outputs: dict[str, Any]) -> None:
        predicted = m.mapper.prediction(outputs)
        if predicted is None or ex.rows == 0:
            return
        predicted_rows = predicted.tolist() if hasattr(predicted, "tolist") else list(predicted)
        segments = self._segment_rows(m, ex)
        keys = self._keys(decoded, ex)
        now = decoded.received_at
        for i in range(min(ex.rows, len(predicted_rows))):
            seg = segments[i] if segments else ()
            m.performance.predicted(seg, predicted_rows[i])
            prediction: Prediction = (decoded.model, predicted_rows[i], now, seg)
            label = self.buffer.add_prediction(keys[i], prediction)
            if label is not None:  # the label came first
                m.performance.joined(prediction, label[0], max(label[1], now))

    def _segment_rows(self, m: ModelAnalysis, ex: Extracted) -> list[tuple[str, ...]]:
        names = m.performance.segment_features
        if not names:
            return []
        columns = m.mapper.named_inputs(ex)
        cols = [columns.get(n) for n in names]
        rows = []
        for i in range(ex.rows):
            raw = []
            for col in cols:
                v: Any = col[i] if col is not None and i < len(col) else None
                if v is ABSENT:
                    v = None
                raw.append(v.item() if hasattr(v, "item") else v)  # NumPy scalars from tensors
            rows.append(m.performance.segment_values(raw))
        return rows

    @staticmethod
    def _keys(decoded: Decoded, ex: Extracted) -> list[Sequence[str]]:
        """Join keys per row: the record's own id (pushed), else the request's ids (header and
        payload), suffixed ``:<row>`` for batches of more than one row."""
        if ex.row_ids is not None:
            return [[rid] if rid else [] for rid in ex.row_ids]
        base = [k for k in dict.fromkeys((decoded.request_id, ex.request_id)) if k]
        if ex.rows == 1:
            return [base]
        return [[f"{k}:{i}" for k in base] for i in range(ex.rows)]

    # --- labels ----------------------------------------------------------------------------------

    def receive_label(self, key: str, label: Any) -> str:
        """Join one label; returns the outcome (joined, unmatched, duplicate)."""
        self.buffer.expire()
        outcome, prediction = self.buffer.add_label(key, label)
        self.label_stats.received[(outcome,)] += 1
        if prediction is not None:
            self.model(prediction[0]).performance.joined(prediction, label, self._clock())
        return outcome

    def count_invalid_labels(self, count: int) -> None:
        self.label_stats.received[("invalid",)] += count

    def expire(self) -> None:
        self.buffer.expire()

    def performances(self) -> dict[str, ModelPerformance]:
        return {name: m.performance for name, m in list(self.models.items())}


class AnalysisCollector(cat.CatalogueCollector):
    owns = (cat.PAYLOAD_ERRORS,)

    def __init__(self, analysis: Analysis) -> None:
        self._analysis = analysis

    def collect(self) -> Iterator[Metric]:
        yield cat.PAYLOAD_ERRORS.of(self._analysis.payload_errors)

