"""What the sidecar knows about the models it watches: names, versions, age, last use."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import Metric

from ..config import ModelConfig
from ..metrics import catalogue as cat
from ..metrics.cardinality import BoundedLabelValues

log = logging.getLogger("modelmon.models")


def artifact_mtime(path: str) -> float | None:
    """Modification time of a model artefact: a file's own, or the newest entry directly
    inside a directory (KServe mounts models as a directory). None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    newest = st.st_mtime
    if os.path.isdir(path):
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    try:
                        newest = max(newest, entry.stat().st_mtime)
                    except OSError:
                        continue
        except OSError:
            pass
    return newest


class ModelRegistry:
    def __init__(
        self,
        models: Sequence[ModelConfig],
        default_model: str,
        max_models: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configs = {m.name: m for m in models}
        self.default_model = default_model
        self.names = BoundedLabelValues(max_models, preset=[*self._configs, default_model])
        self._clock = clock
        self.last_prediction: dict[str, float] = {}
        self.trained: dict[str, float] = {}
        self.refresh_trained()

    def label(self, name: str | None) -> str:
        """The bounded model label value for a name taken from a route or a payload."""
        return self.default_model if name is None else self.names.get(name)

    def saw_prediction(self, model: str, at: float | None = None) -> None:
        self.last_prediction[model] = self._clock() if at is None else at

    def read_trained(self) -> dict[str, float]:
        """The training times as configured, else the artefacts' mtimes (they change when a
        model is reloaded). Only reads: safe in a worker thread; the caller assigns the result
        on the loop (``trained.update``)."""
        out: dict[str, float] = {}
        for name, cfg in self._configs.items():
            ts = cfg.trained_timestamp()
            if ts is None and cfg.artifact_path:
                ts = artifact_mtime(cfg.artifact_path)
                if ts is None:
                    log.warning("model %s: artefact %s not readable", name, cfg.artifact_path)
            if ts is not None:
                out[name] = ts
        return out

    def refresh_trained(self) -> None:
        """Re-read the training times (on the loop's thread)."""
        self.trained.update(self.read_trained())

    def versions(self) -> dict[str, str]:
        return {name: cfg.version for name, cfg in self._configs.items()}


class ModelCollector(cat.CatalogueCollector):
    owns = (cat.MODEL_INFO, cat.MODEL_TRAINED, cat.LAST_PREDICTION,)

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        r = self._registry
        info = cat.MODEL_INFO.info()
        for name, version in r.versions().items():
            info.add_metric([], {"model": name, "version": version})
        yield info
        trained = cat.MODEL_TRAINED.gauge()
        for name, ts in list(r.trained.items()):
            trained.add_metric([name], ts)
        yield trained
        last = cat.LAST_PREDICTION.gauge()
        for name, ts in list(r.last_prediction.items()):
            last.add_metric([name], ts)
        yield last
