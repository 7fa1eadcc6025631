"""The join buffer as it was before it was made compact, kept verbatim (but for its name) as
the reference the compact one is tested against (tests/test_labels.py) and the baseline it is
measured against (tests/bench/bench_join_buffer.py)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from modelmon.labels import PendingLabel, Prediction
from modelmon.metrics.instruments import counter_vec


class OrderedDictJoinBuffer:
    """Predictions and labels in OrderedDicts under their key strings."""

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        self.predictions: OrderedDict[str, Prediction] = OrderedDict()
        self.aliases: OrderedDict[str, tuple[str, float]] = OrderedDict()
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
