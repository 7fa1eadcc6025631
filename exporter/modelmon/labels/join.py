"""The join buffer: predictions waiting for labels and labels waiting for predictions."""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ..metrics.instruments import counter_vec
from .index import NO_KEY, HashIndex
from .keys import PendingLabel, Prediction, held

# In JoinBuffer._value: "the predicted value is the float in JoinBuffer._number".
_FLOAT: Any = object()


class JoinBuffer:
    """Predictions waiting for labels and labels waiting for predictions, each bounded by
    ``max_entries`` (oldest evicted first) and ``ttl`` seconds. A prediction held under several
    keys (request header id, payload id) is stored once and joins at most once: a later label
    under any of its keys is a duplicate, as long as the join is among the last ``max_entries``.
    A key held by two predictions finds the newer.

    At 1,000 requests/s the buffer is always full, so a held prediction is kept compact (a third
    of a tuple in OrderedDicts under its key strings: tests/bench/bench_join_buffer.py). Its fields sit
    in arrays at a slot number, with no Python object of its own (the tuple is built again on
    the way out), and its keys are indexed by their 64-bit ``hash()`` alone, not kept. Two keys
    with the same hash would pass for one: with 10^5 keys indexed, one lookup in ~10^14.

    What one entry holds is bounded whatever clients send, so ``max_entries`` bounds the bytes,
    not only the entries: a predicted value or label is kept as ``held()`` makes it (at most 112
    bytes: long or non-ASCII text becomes a Digest), waiting labels too are indexed by their
    key's hash alone, and model names and segment values are strings shared by all entries
    (bounded label values). A held prediction takes at most 450 bytes with its two keys and,
    once joined, its keys remembered (plus 40 + 8 per segment feature for its segment tuple),
    a waiting label at most 450 (tests/test_labels.py checks the worst case).
    """

    def __init__(self, max_entries: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._clock = clock
        # Each key's hash -> the slot of the prediction held under it (>= 0), or -2 - the ring
        # position of the recent join it took part in (<= -2).
        self._index = HashIndex()
        # Held predictions, a slot each: arrays grown to max_entries + 1 slots (the spare takes
        # the newest prediction before the oldest makes room), then reused.
        self._key = array("q")  # hash of the first key
        self._alias = array("q")  # hash of the second key, or NO_KEY
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
        alias = NO_KEY
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
            if alias != NO_KEY:
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
            if alias != NO_KEY:
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
            self._joined_key.append(NO_KEY)
            self._joined_alias.append(NO_KEY)
        else:
            index.discard(self._joined_key[pos], marker)
            alias = self._joined_alias[pos]
            if alias != NO_KEY:
                index.discard(alias, marker)
                if self._joined_more:
                    for h in self._joined_more.pop(pos, ()):
                        index.discard(h, marker)
        for h in keys:  # a key another prediction is held under stays that prediction's
            index.claim(h, marker, slot)
        self._joined_key[pos] = keys[0]
        self._joined_alias[pos] = keys[1] if len(keys) > 1 else NO_KEY
        if len(keys) > 2:
            self._joined_more[pos] = tuple(keys[2:])
        self._next_join = (pos + 1) % self.max_entries


