"""Delayed ground truth: the join buffer, and the performance it feeds.

Every analysed prediction is held under its request id (bounded, with a TTL) until its label
arrives through ``POST /v1/labels`` — minutes or days later. Labels that arrive first wait in a
bounded buffer of their own for their prediction. A join updates, per model:

- classification: a confusion matrix (bounded classes) as counters, from which accuracy,
  precision, recall and F1 follow in PromQL across replicas, plus windowed in-process gauges;
- regression: summaries (a sum and a count) of the absolute error, the squared error, and the
  over- and under-prediction (MAE, RMSE, bias in PromQL), plus windowed gauges;
- segments: per value of each configured segment feature, predictions, positive predictions,
  labels, correct predictions and absolute error, so disparities between groups are visible.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from hashlib import blake2b
from typing import Any

from prometheus_client.core import Metric

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


# A held prediction: (model, predicted value, prediction time, segment values).
Prediction = tuple[str, Any, float, tuple[str, ...]]
# A label waiting for its prediction: (label, arrival time).
PendingLabel = tuple[Any, float]

# The longest text a buffer keeps as it is: the longest class label value (``MODEL_NAME_RE``,
# ASCII). Longer or non-ASCII text can never be a class label, only be compared: it is kept
# as its Digest, so what one entry holds is bounded whatever a client sends.
MAX_HELD_TEXT = 63


class Digest(bytes):
    """Text too long to keep, as kept: its 16-byte BLAKE2b digest and its length in characters
    (80 bytes in all, whatever the length). Equal only to the Digest of the same text (two
    different texts collide with probability 2^-128); never a class label."""

    __slots__ = ()

    @classmethod
    def of(cls, text: str) -> Digest:
        return cls(blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                   + len(text).to_bytes(8, "little"))

    @property
    def length(self) -> int:
        return int.from_bytes(self[16:], "little")

    def __eq__(self, other: object) -> bool:
        return type(other) is Digest and bytes.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = bytes.__hash__

    def __repr__(self) -> str:
        return f"<text of {self.length} characters, blake2b {self[:8].hex()}>"

    __str__ = __repr__


def _text(value: Any) -> str:
    try:
        return category_key(value)
    except ValueError:  # an int too long to print (over sys.get_int_max_str_digits digits)
        return f"0x{value:x}"


def comparison_key(value: Any) -> str | Digest:
    """What a label and a predicted value are compared by: the text they are counted under
    (``category_key``), or its Digest when that is longer than MAX_HELD_TEXT or not ASCII."""
    if type(value) is Digest:
        return value
    text = _text(value)
    return text if len(text) <= MAX_HELD_TEXT and text.isascii() else Digest.of(text)


_INT_KEPT = 1 << 64  # ints of up to 64 bits (all that JSON parsers give as ints) are kept as they are


def held(value: Any) -> Any:
    """What a buffer keeps of a predicted value or a label: at most 112 bytes (a 63-character
    string), whatever it was. Floats, booleans, None, ints printed in at most MAX_HELD_TEXT digits
    and short ASCII strings are kept as they are; anything else as its comparison key (short
    text, or a Digest), so that ``comparison_key(held(v)) == comparison_key(v)`` always: holding a
    value never changes what it is equal to."""
    if value is None or isinstance(value, float):  # bool is an int
        return value
    if type(value) is str:
        return value if len(value) <= MAX_HELD_TEXT and value.isascii() else Digest.of(value)
    if isinstance(value, int) and -_INT_KEPT < value < _INT_KEPT:
        return value
    key = comparison_key(value)
    return value if isinstance(value, int) and type(key) is str else key


# hash() never returns -1 in CPython (it is the C API's error value): -1 marks "no key".
_NONE = -1
# In JoinBuffer._value: "the predicted value is the float in JoinBuffer._number".
_FLOAT: Any = object()


class _HashIndex:
    """Key hashes to ints, in two flat arrays kept at most half full: 24 to 48 bytes a key, where
    a dict costs 100 to 160 (an int object for the key, one for the value, and its table).
    Open addressing with linear probing; a deletion shifts the cells after it back, so no
    tombstones pile up. (-1, an impossible hash, marks an empty cell.)"""

    __slots__ = ("_count", "_hashes", "_limit", "_mask", "_values")

    def __init__(self) -> None:
        self._allocate(8)

    def _allocate(self, size: int) -> None:
        self._count = 0
        self._hashes = array("q", [_NONE]) * size
        self._values = array("i", [0]) * size
        self._mask = size - 1
        self._limit = size // 2

    def __len__(self) -> int:
        return self._count

    def get(self, h: int) -> int:
        """The value of ``h``, or -1."""
        hashes, mask = self._hashes, self._mask
        i = h & mask
        k = hashes[i]
        while k != h:
            if k == -1:
                return -1
            i = (i + 1) & mask
            k = hashes[i]
        return self._values[i]

    def put(self, h: int, value: int) -> int:
        """Map ``h`` to ``value``; returns its previous value, or -1."""
        hashes, mask = self._hashes, self._mask
        i = h & mask
        k = hashes[i]
        while k != -1:
            if k == h:
                previous = self._values[i]
                self._values[i] = value
                return previous
            i = (i + 1) & mask
            k = hashes[i]
        hashes[i] = h
        self._values[i] = value
        self._count += 1
        if self._count > self._limit:
            self._grow()
        return -1

    def claim(self, h: int, value: int, owner: int) -> None:
        """Map ``h`` to ``value``, unless it maps to a value >= 0 other than ``owner``."""
        hashes, mask = self._hashes, self._mask
        i = h & mask
        k = hashes[i]
        while k != h:
            if k == -1:
                self.put(h, value)
                return
            i = (i + 1) & mask
            k = hashes[i]
        current = self._values[i]
        if current < 0 or current == owner:
            self._values[i] = value

    def discard(self, h: int, value: int) -> None:
        """Remove ``h`` if it maps to ``value`` (not if it has been mapped elsewhere since)."""
        hashes, mask = self._hashes, self._mask
        i = h & mask
        k = hashes[i]
        while k != h:
            if k == -1:
                return
            i = (i + 1) & mask
            k = hashes[i]
        values = self._values
        if values[i] != value:
            return
        self._count -= 1
        # A lookup stops at the first empty cell: move back into the hole each later cell of
        # the run whose home cell is not between the hole and it.
        j = (i + 1) & mask
        k = hashes[j]
        while k != -1:
            if (j - k) & mask >= (j - i) & mask:
                hashes[i] = k
                values[i] = values[j]
                i = j
            j = (j + 1) & mask
            k = hashes[j]
        hashes[i] = -1

    def _grow(self) -> None:
        hashes, values = self._hashes, self._values
        self._allocate(2 * len(hashes))
        for h, v in zip(hashes, values, strict=True):
            if h != -1:
                self.put(h, v)


class JoinBuffer:
    """Predictions waiting for labels and labels waiting for predictions, each bounded by
    ``max_entries`` (oldest evicted first) and ``ttl`` seconds. A prediction held under several
    keys (request header id, payload id) is stored once and joins at most once: a later label
    under any of its keys is a duplicate, as long as the join is among the last ``max_entries``.
    A key held by two predictions finds the newer.

    At 1,000 requests/s the buffer is always full, so a held prediction is kept compact: about
    150 bytes, not 450 to 550 as a tuple in OrderedDicts under its key strings. Its fields sit
    in arrays at a slot number, with no Python object of its own (the tuple is built again on
    the way out), and its keys are indexed by their 64-bit ``hash()`` alone, not kept. Two keys
    with the same hash would pass for one: with 10^5 keys indexed, one lookup in ~10^14.

    What one entry holds is bounded whatever clients send, so ``max_entries`` bounds the bytes,
    not only the entries: a predicted value or label is kept as ``held()`` makes it (at most 112
    bytes: long or non-ASCII text becomes a Digest), waiting labels too are indexed by their
    key's hash alone, and model names and segment values are strings shared by all entries
    (bounded label values). A held prediction takes at most 450 bytes with its two keys and,
    once joined, its keys remembered (plus 40 + 8 per segment feature for its segment tuple),
    a waiting label at most 450: ~150 and ~250 with float values (tests/test_labels.py
    measures the worst case).
    """

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        # Each key's hash -> the slot of the prediction held under it (>= 0), or -2 - the ring
        # position of the recent join it took part in (<= -2).
        self._index = _HashIndex()
        # Held predictions, a slot each: arrays grown to max_entries + 1 slots (the spare takes
        # the newest prediction before the oldest makes room), then reused.
        self._key = array("q")  # hash of the first key
        self._alias = array("q")  # hash of the second key, or _NONE
        self._more_keys: dict[int, tuple[int, ...]] = {}  # slot -> further keys' hashes (rare)
        self._model: list[str] = []
        self._number = array("d")  # the predicted value if a float: 8 bytes, not a 32-byte float
        self._value: list[Any] = []  # else the value itself (_FLOAT if in _number)
        self._at = array("d")
        self._segments: list[tuple[str, ...]] = []
        # Held slots from oldest to newest, a doubly linked list: eviction and expiry take the
        # oldest, a join unlinks from the middle. Free slots chain through _newer.
        self._older = array("i")
        self._newer = array("i")
        self._oldest = self._newest = self._free = -1
        self._held = 0
        # Recent joins, to tell duplicates: a ring of the key hashes of the last max_entries.
        self._joined_key = array("q")
        self._joined_alias = array("q")
        self._joined_more: dict[int, tuple[int, ...]] = {}
        self._next_join = 0
        self.labels: OrderedDict[int, PendingLabel] = OrderedDict()  # under their key's hash
        self.expired = counter_vec()  # (kind,)
        self.evicted = counter_vec()  # (kind,)

    @property
    def pending_predictions(self) -> int:
        """Predictions held, waiting for their label."""
        return self._held

    @property
    def pending_labels(self) -> int:
        """Labels waiting for their prediction."""
        return len(self.labels)

    def expire(self) -> None:
        deadline = self._clock() - self.ttl
        at = self._at
        while self._oldest >= 0 and at[self._oldest] < deadline:
            self._release(self._oldest)
            self.expired[("prediction",)] += 1
        labels = self.labels
        while labels and next(iter(labels.values()))[1] < deadline:
            labels.popitem(last=False)
            self.expired[("label",)] += 1

    def add_prediction(self, keys: Sequence[str], prediction: Prediction) -> PendingLabel | None:
        """Hold a prediction under its keys; returns the label if one was already waiting."""
        labels = self.labels
        if labels:
            for key in keys:
                label = labels.pop(hash(key), None)
                if label is not None:
                    self._remember_join([hash(k) for k in keys], -1)
                    return label
        if not keys:
            return None
        slot = self._free
        if slot < 0:
            slot = self._new_slot()
        newer = self._newer
        self._free = newer[slot]
        index = self._index
        first = hash(keys[0])
        previous = index.put(first, slot)
        self._key[slot] = first
        alias = _NONE
        if len(keys) > 1:
            alias = hash(keys[1])
            index.put(alias, slot)
            if len(keys) > 2:
                self._more_keys[slot] = more = tuple(hash(k) for k in keys[2:])
                for h in more:
                    index.put(h, slot)
        self._alias[slot] = alias
        model, predicted, at, segments = prediction
        self._model[slot] = model
        if type(predicted) is float:  # not bools, ints or float subclasses: they come back as given
            self._number[slot] = predicted
            self._value[slot] = _FLOAT
        else:
            self._value[slot] = held(predicted)  # bounded: long text as its Digest
        self._at[slot] = at
        self._segments[slot] = segments
        newest = self._newest
        self._older[slot] = newest
        newer[slot] = -1
        if newest >= 0:
            newer[newest] = slot
        else:
            self._oldest = slot
        self._newest = slot
        self._held += 1
        if previous >= 0 and self._key[previous] == first:
            self._release(previous)  # held again under the same first key: this replaces it
        elif self._held > self.max_entries:
            self._release(self._oldest)
            self.evicted[("prediction",)] += 1
        return None

    def add_label(self, key: str, label: Any) -> tuple[str, Prediction | None]:
        """Offer a label: ("joined", prediction), ("duplicate", None) or ("unmatched", None) —
        an unmatched label waits for its prediction until the TTL."""
        slot = self._index.get(hash(key))
        if slot >= 0:
            value = self._value[slot]
            prediction = (self._model[slot], self._number[slot] if value is _FLOAT else value,
                          self._at[slot], self._segments[slot])
            keys = [self._key[slot]]
            alias = self._alias[slot]
            if alias != _NONE:
                keys += [alias, *self._more_keys.get(slot, ())]
            self._remember_join(keys, slot)
            self._release(slot, unindex=False)  # its keys now point to the join
            return "joined", prediction
        if slot <= -2:
            return "duplicate", None
        labels = self.labels
        h = hash(key)
        if h in labels:
            labels.move_to_end(h)
        elif len(labels) >= self.max_entries:
            labels.popitem(last=False)
            self.evicted[("label",)] += 1
        labels[h] = (held(label), self._clock())
        return "unmatched", None

    def _new_slot(self) -> int:
        for ints in (self._key, self._alias, self._older, self._newer):
            ints.append(-1)
        self._number.append(0.0)
        self._at.append(0.0)
        self._model.append("")
        self._value.append(None)
        self._segments.append(())
        return len(self._key) - 1

    def _release(self, slot: int, unindex: bool = True) -> None:
        """Take a held prediction out: unlink it, unindex its keys (unless joined) and free it."""
        older, newer = self._older, self._newer
        before, after = older[slot], newer[slot]
        if before >= 0:
            newer[before] = after
        else:
            self._oldest = after
        if after >= 0:
            older[after] = before
        else:
            self._newest = before
        alias = self._alias[slot]
        more = self._more_keys.pop(slot, ()) if self._more_keys else ()
        if unindex:
            index = self._index
            index.discard(self._key[slot], slot)
            if alias != _NONE:
                index.discard(alias, slot)
                for h in more:
                    index.discard(h, slot)
        self._value[slot] = None  # let go of a large predicted value now
        newer[slot] = self._free
        self._free = slot
        self._held -= 1

    def _remember_join(self, keys: list[int], slot: int) -> None:
        """Record a join of a prediction under ``keys`` (held in ``slot``, or -1 if never held)
        at the newest place in the ring of recent joins, forgetting the oldest once it is full."""
        index = self._index
        pos = self._next_join
        marker = -2 - pos
        if pos == len(self._joined_key):  # the ring is still growing
            self._joined_key.append(_NONE)
            self._joined_alias.append(_NONE)
        else:
            index.discard(self._joined_key[pos], marker)
            alias = self._joined_alias[pos]
            if alias != _NONE:
                index.discard(alias, marker)
                if self._joined_more:
                    for h in self._joined_more.pop(pos, ()):
                        index.discard(h, marker)
        for h in keys:  # a key another prediction is held under stays that prediction's
            index.claim(h, marker, slot)
        self._joined_key[pos] = keys[0]
        self._joined_alias[pos] = keys[1] if len(keys) > 1 else _NONE
        if len(keys) > 2:
            self._joined_more[pos] = tuple(keys[2:])
        self._next_join = (pos + 1) % self.max_entries


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
        self.window = SlidingCounter(window, slots, clock)
        self.delay = Histogram(cat.LABEL_DELAY.buckets)

    def class_label(self, value: Any) -> str:
        return OVERFLOW if value is None or type(value) is Digest else self.classes.get(_text(value))

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
