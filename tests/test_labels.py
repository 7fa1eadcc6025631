"""Delayed ground truth: the join buffer, POST /v1/labels, performance and segment metrics."""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import random
import sys
import tracemalloc
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from hypothesis import given, settings
from hypothesis import strategies as st
from join_buffer_reference import OrderedDictJoinBuffer
from modelmon.analysis.analyser import Analysis
from modelmon.analysis.queue import Decoded
from modelmon.config import Config
from modelmon.labels import JoinBuffer, LabelStats, ModelPerformance, PerformanceCollector, Prediction
from modelmon.labels.index import HashIndex
from modelmon.labels.keys import Digest, comparison_key, held
from modelmon.sidecar.push import MAX_LABEL_CHARS


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def prediction(at: float, predicted: object = 1) -> Prediction:
    return ("m", predicted, at, ())


def test_label_after_prediction_joins_once() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    assert buf.add_prediction(["a"], prediction(clock.now)) is None
    outcome, found = buf.add_label("a", 1)
    assert outcome == "joined" and found is not None and found[1] == 1
    assert buf.add_label("a", 1) == ("duplicate", None)
    assert buf.pending_predictions == 0 and not buf.labels


def test_label_before_prediction_waits_for_it() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    assert buf.add_label("b", "cat") == ("unmatched", None)
    clock.now += 30
    waiting = buf.add_prediction(["b"], prediction(clock.now))
    assert waiting is not None and waiting[0] == "cat"
    assert not buf.labels and buf.pending_predictions == 0


def test_expiry_after_ttl_on_both_sides() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 60, clock)
    buf.add_prediction(["old"], prediction(clock.now))
    buf.add_label("early", 1)
    clock.now += 61
    buf.add_prediction(["new"], prediction(clock.now))
    buf.expire()
    assert buf.pending_predictions == 1 and not buf.labels
    assert buf.expired[("prediction",)] == 1 and buf.expired[("label",)] == 1
    assert buf.add_label("old", 1) == ("unmatched", None)  # its prediction expired
    assert buf.add_label("new", 1)[0] == "joined"


def test_out_of_order_labels() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    for i in range(5):
        buf.add_prediction([f"r{i}"], prediction(clock.now, i))
    joined = [buf.add_label(f"r{i}", i) for i in (3, 0, 4, 1, 2)]
    assert [(o, p[1] if p else None) for o, p in joined] == \
        [("joined", 3), ("joined", 0), ("joined", 4), ("joined", 1), ("joined", 2)]


def test_shared_entry_under_two_keys_joins_once() -> None:
    clock = Clock()
    buf = JoinBuffer(100, 3600, clock)
    buf.add_prediction(["header-id", "payload-id"], prediction(clock.now))
    assert buf.pending_predictions == 1  # stored once
    assert buf.add_label("payload-id", 1)[0] == "joined"
    assert buf.add_label("header-id", 1) == ("duplicate", None)
    buf.add_prediction(["h2", "p2"], prediction(clock.now))
    assert buf.add_label("h2", 1)[0] == "joined"
    assert buf.add_label("p2", 1) == ("duplicate", None)


def test_memory_bound_under_a_flood_of_unmatched_ids() -> None:
    clock = Clock()
    buf = JoinBuffer(1000, 3600, clock)
    for i in range(50_000):
        buf.add_label(f"nobody-{i}", 1)
        buf.add_prediction([f"never-labelled-{i}"], prediction(clock.now))
    assert len(buf.labels) == 1000 and buf.pending_predictions == 1000
    assert buf.evicted[("label",)] == 49_000 and buf.evicted[("prediction",)] == 49_000
    # The newest survive: a label for a recent prediction still joins.
    assert buf.add_label("never-labelled-49999", 1)[0] == "joined"


# --- what one entry holds is bounded, whatever clients send ------------------------------------

# The documented bound (README "Ground truth and performance", labels.max_entries): bytes an entry
# of either buffer takes at most — a held prediction with two keys and, once joined, its keys
# remembered; a waiting label — plus, for a prediction, 40 + 8 per segment feature.
ENTRY_BOUND = 450


def traced_bytes(fill: Callable[[], object]) -> int:
    """Bytes still allocated after ``fill()`` (traced from before it ran; what it let go of is
    not counted), with whatever it returned still alive."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del kept
    return used


def test_unmatched_labels_of_100_kb_stay_within_the_entry_bound() -> None:
    """1,000 unmatched labels whose value is a 100 KB string held 100 MB; the buffer now keeps
    such a value as its digest (and POST /v1/labels rejects it: see the end-to-end test)."""
    clock = Clock()
    buf = JoinBuffer(1000, 86400, clock)

    def fill() -> None:
        for i in range(1000):  # each value fresh, as a request's would be, and let go after
            buf.add_label(f"{i:08x}-" + "k" * 247, chr(65 + i % 26) * 100_000 + str(i))

    used = traced_bytes(fill)
    assert buf.pending_labels == 1000
    assert used / 1000 <= ENTRY_BOUND, used
    # What is kept still compares as the value: the prediction equal to it is scored correct.
    perf = ModelPerformance("m", "classification", [], 20, None, [], 10, 3600, 12, clock)
    for i, predicted in ((7, "H" * 100_000 + "7"), (8, "I" * 100_000 + "9")):
        label = buf.add_prediction([f"{i:08x}-" + "k" * 247], prediction(clock.now, predicted))
        assert label is not None and type(label[0]) is Digest
        perf.joined(prediction(clock.now, predicted), label[0], clock.now)
    assert perf.correct == 1 and perf.joins == 2


def test_predictions_with_10_kb_outputs_stay_within_the_entry_bound() -> None:
    """5,000 predictions whose output is a 10 KB string (pushed records, through the analysis,
    two keys each) held 50 MB; now each is held as a digest."""
    analysis = Analysis(Config(), clock=lambda: 1e9)

    def fill() -> None:
        for b in range(50):
            records = [{"id": f"p{b}-{i}", "features": {"x": 1.0}, "prediction": f"{b}-{i}-" + "y" * 10_000}
                       for i in range(100)]
            decoded = Decoded("m", "push", records=orjson.loads(orjson.dumps(records)), received_at=1e9)
            analysis.analyse(decoded)

    used = traced_bytes(fill)
    assert analysis.buffer.pending_predictions == 5000
    assert used / 5000 <= ENTRY_BOUND, used
    assert analysis.receive_label("p3-4", "3-4-" + "y" * 10_000) == "joined"
    assert analysis.receive_label("p3-5", "3-4-" + "y" * 10_000) == "joined"
    perf = analysis.performances()["m"]
    assert (perf.joins, perf.correct) == (2, 1)


def test_a_full_buffer_of_the_largest_held_values_stays_within_the_entry_bound() -> None:
    """The worst case: every prediction held under two 256-character keys with the largest value
    kept as given (63 ASCII characters), after as many joins (all remembered); every waiting
    label as large. The index and the arrays are measured where they are least full (the
    index just grown: 2,049 entries x 4 keys)."""
    clock = Clock()
    n = 2049
    rng = random.Random(5)

    def key() -> str:
        return f"{rng.getrandbits(64):016x}" + "é" * 240

    buf = JoinBuffer(n, 86400, clock)

    def fill() -> None:
        for i in range(n):
            keys = [key(), key()]
            buf.add_prediction(keys, prediction(clock.now, f"{i:063d}"))
            assert buf.add_label(keys[i % 2], 1)[0] == "joined"
        for i in range(2 * n):
            buf.add_prediction([key(), key()], prediction(clock.now, f"{i:063d}"))

    used = traced_bytes(fill)
    assert buf.pending_predictions == n
    assert used / n <= ENTRY_BOUND, used
    labels = JoinBuffer(n, 86400, clock)
    used = traced_bytes(lambda: [labels.add_label(key(), f"{i:063d}") for i in range(3 * n)] and None)
    assert labels.pending_labels == n
    assert used / n <= ENTRY_BOUND, used


def test_held_predictions_share_their_segment_value_strings() -> None:
    perf = ModelPerformance("m", "classification", [], 20, None, ["region"], 10, 600, 6, Clock())
    first, again = (perf.segment_values(["".join(["e", "u"])])[0] for _ in range(2))  # fresh strings
    assert first == again == "eu" and first is again


LONG = "y" * 10_000


@pytest.mark.parametrize("value", [LONG, "é" * 20, "x" * 64, "ok", 10**63, -(10**100), 10**5000, 2**64 - 1,
                                   [[1, 2]] * 5000, {"a": LONG}, np.int64(7), b"raw", 0.5, True, None],
                         ids=lambda v: type(v).__name__)
def test_held_values_are_bounded_and_compare_as_what_they_stand_for(value: object) -> None:
    kept = held(value)
    assert sys.getsizeof(kept) <= 112  # a 63-character ASCII string; a Digest takes 73
    assert comparison_key(kept) == comparison_key(value)
    assert held(kept) == kept or kept is None


def test_long_text_keys_differ_beyond_any_prefix() -> None:
    assert comparison_key(LONG + "a") != comparison_key(LONG + "b")
    assert comparison_key(LONG + "a") == comparison_key("".join([LONG, "a"]))
    assert comparison_key("é") != comparison_key("e") and type(comparison_key("é")) is Digest
    digest = Digest.of(LONG)
    assert digest != bytes(digest) and digest != LONG and "10000 characters" in repr(digest)


def test_long_predictions_score_by_their_whole_value() -> None:
    """Text too long to be a class label folds into __other__ in the confusion matrix, but is
    scored correct only when it equals its label entirely (it used to count as correct whenever
    both folded)."""
    clock = Clock()
    buf = JoinBuffer(10, 3600, clock)
    perf = ModelPerformance("m", "classification", [], 20, None, ["region"], 10, 3600, 12, clock)
    answer = "The answer is " + "x" * 500
    cases = [("same", answer, answer), ("prefix", answer + "!", answer), ("shorter", answer[:-1], answer),
             ("cap", "c99", "c98")]
    for key, predicted, _ in cases:
        buf.add_prediction([key], ("m", predicted, clock.now, ("eu",)))
    for key, _, label in cases:
        outcome, found = buf.add_label(key, label)
        assert outcome == "joined" and found is not None
        perf.joined(found, label, clock.now)
    assert perf.correct == 1 and perf.joins == 4
    assert perf.confusion[("__other__", "__other__")] == 3
    assert perf.windowed()["accuracy"] == 0.25
    assert perf.segments[("region", "eu", "correct")] == 1


# --- the compact join buffer: slot reuse, its hash index, and its contract against references ---


def test_eviction_takes_the_oldest_held_whatever_its_slot() -> None:
    clock = Clock()
    buf = JoinBuffer(3, 3600, clock)
    for k in "abc":
        buf.add_prediction([k], prediction(clock.now, k))
    assert buf.add_label("b", 1)[0] == "joined"  # frees a slot in the middle
    buf.add_prediction(["d"], prediction(clock.now, "d"))  # takes b's slot: room, nothing evicted
    assert buf.evicted[("prediction",)] == 0 and buf.pending_predictions == 3
    for k in "efg":  # evict a, c, then d: in arrival order, whatever slot each sits in
        buf.add_prediction([k], prediction(clock.now, k))
    assert buf.evicted[("prediction",)] == 3 and buf.pending_predictions == 3
    outcomes = [buf.add_label(k, 1) for k in "acdefg"]
    assert [o for o, _ in outcomes] == ["unmatched"] * 3 + ["joined"] * 3
    assert [p[1] for _, p in outcomes if p is not None] == ["e", "f", "g"]


def test_aliases_go_with_their_evicted_prediction() -> None:
    clock = Clock()
    buf = JoinBuffer(2, 3600, clock)
    for i in (1, 2, 3):  # the third evicts h1/p1
        buf.add_prediction([f"h{i}", f"p{i}"], prediction(clock.now, i))
    assert buf.add_label("p1", 1) == ("unmatched", None)
    assert buf.add_label("h1", 1) == ("unmatched", None)
    assert buf.pending_labels == 2 and buf.pending_predictions == 2
    assert buf.add_label("p2", 1)[0] == "joined"
    buf.add_prediction(["h4", "p4"], prediction(clock.now, 4))  # reuses h2's slot
    assert buf.add_label("h2", 1) == ("duplicate", None)  # the join is remembered, not the slot
    found = buf.add_label("p4", 1)[1]
    assert found is not None and found[1] == 4


def test_expiry_follows_arrival_order_not_slots() -> None:
    clock = Clock()
    start = clock.now
    buf = JoinBuffer(4, 60, clock)
    for i, k in enumerate("abcd"):
        buf.add_prediction([k], prediction(start + i, k))
    buf.add_label("a", 1)
    buf.add_label("b", 1)
    for i, k in enumerate("ef"):  # into the freed slots of a and b, after c and d in age
        buf.add_prediction([k], prediction(start + 10 + i, k))
    clock.now = start + 65  # c (t+2) and d (t+3) are past the TTL, e and f not
    buf.expire()
    assert buf.expired[("prediction",)] == 2 and buf.pending_predictions == 2
    assert [buf.add_label(k, 1)[0] for k in "cdef"] == ["unmatched", "unmatched", "joined", "joined"]


def test_more_than_two_keys_hold_one_prediction() -> None:
    clock = Clock()
    buf = JoinBuffer(2, 3600, clock)
    buf.add_prediction(["h", "p", "x"], prediction(clock.now, 7))
    assert buf.pending_predictions == 1
    found = buf.add_label("x", 1)[1]
    assert found is not None and found[1] == 7
    assert buf.add_label("h", 1) == buf.add_label("p", 1) == ("duplicate", None)
    buf.add_prediction(["h2", "p2", "x2"], prediction(clock.now, 8))
    for i in range(2):
        buf.add_prediction([f"n{i}"], prediction(clock.now, i))  # evicts h2/p2/x2
    assert [buf.add_label(k, 1)[0] for k in ("x2", "p2", "h2")] == ["unmatched"] * 3


@pytest.mark.parametrize("value", [0.25, -0.0, math.inf, 1, 10**30, -(10**61), True, False, "cat", "x" * 63,
                                   None, np.float64(0.5)])
def test_predicted_values_come_back_as_given(value: object) -> None:
    clock = Clock()
    buf = JoinBuffer(10, 3600, clock)
    held: Prediction = ("m", value, clock.now + 0.125, ("eu",))
    buf.add_prediction(["k"], held)
    outcome, found = buf.add_label("k", 1)
    assert outcome == "joined" and found == held
    assert found is not None and type(found[1]) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, found[1]) == math.copysign(1, value)
    buf.add_prediction(["n"], ("m", math.nan, clock.now, ()))
    nan = buf.add_label("n", 1)[1]
    assert nan is not None and math.isnan(nan[1])


def test_hash_index_matches_a_dict_through_collisions_and_growth() -> None:
    rng = random.Random(7)
    # Hashes sharing their low bits pile up in long runs, wrapping at the table's end.
    pool = [(rng.getrandbits(40) << 20 | rng.choice([3, 5, 6, 7, 1023])) * rng.choice([1, -1]) for _ in range(60)]
    pool = [h for h in pool if h != -1]  # hash() is never -1
    index, model = HashIndex(), dict[int, int]()
    for step in range(5000):
        h, value = rng.choice(pool), rng.randrange(50) - rng.choice([0, 60])
        op = rng.random()
        if op < 0.45:
            assert index.put(h, value) == model.get(h, -1)
            model[h] = value
        elif op < 0.8:  # mostly the value it maps to, sometimes another: then it stays
            owner = model.get(h, value) if rng.random() < 0.7 else value
            index.discard(h, owner)
            if model.get(h) == owner:
                del model[h]
        else:
            owner = rng.randrange(50)
            index.claim(h, -2 - value % 10, owner)
            if h not in model or model[h] < 0 or model[h] == owner:
                model[h] = -2 - value % 10
        assert [index.get(k) for k in pool] == [model.get(k, -1) for k in pool], step
        assert len(index) == len(model)


class ModelBuffer:
    """The join buffer's contract in plain dicts, written for clarity: a key belongs to the newest
    prediction held under it, or else to the join it took part in while that join is among the
    last max_entries."""

    def __init__(self, max_entries: int, ttl: float, clock: Clock) -> None:
        self.max_entries, self.ttl, self.clock = max_entries, ttl, clock
        self.held: OrderedDict[int, tuple[tuple[str, ...], Prediction]] = OrderedDict()  # oldest first
        self.owner: dict[str, tuple[str, int]] = {}  # key -> ("held", id) or ("joined", join id)
        self.joins: OrderedDict[int, tuple[str, ...]] = OrderedDict()
        self.labels: OrderedDict[str, tuple[object, float]] = OrderedDict()
        self.expired: Counter[tuple[str, ...]] = Counter()
        self.evicted: Counter[tuple[str, ...]] = Counter()
        self.ids = itertools.count()

    def _drop(self, entry: int) -> None:
        keys, _ = self.held.pop(entry)
        for k in keys:
            if self.owner.get(k) == ("held", entry):
                del self.owner[k]

    def _join(self, keys: tuple[str, ...], entry: int | None) -> None:
        if len(self.joins) == self.max_entries:
            old, old_keys = self.joins.popitem(last=False)
            for k in old_keys:
                if self.owner.get(k) == ("joined", old):
                    del self.owner[k]
        join = next(self.ids)
        self.joins[join] = keys
        for k in keys:  # a key another prediction is held under stays that prediction's
            owner = self.owner.get(k)
            if owner is None or owner[0] == "joined" or owner == ("held", entry):
                self.owner[k] = ("joined", join)

    def expire(self) -> None:
        deadline = self.clock() - self.ttl
        while self.held and next(iter(self.held.values()))[1][2] < deadline:
            self._drop(next(iter(self.held)))
            self.expired[("prediction",)] += 1
        while self.labels and next(iter(self.labels.values()))[1] < deadline:
            self.labels.popitem(last=False)
            self.expired[("label",)] += 1

    def add_prediction(self, keys: list[str], prediction: Prediction) -> object:
        for key in keys:
            label = self.labels.pop(key, None)
            if label is not None:
                self._join(tuple(keys), None)
                return label
        if not keys:
            return None
        previous = self.owner.get(keys[0])
        entry = next(self.ids)
        self.held[entry] = (tuple(keys), prediction)
        for k in keys:
            self.owner[k] = ("held", entry)
        if previous is not None and previous[0] == "held" and self.held[previous[1]][0][0] == keys[0]:
            self._drop(previous[1])  # held again under the same first key: replaced
        elif len(self.held) > self.max_entries:
            self._drop(next(iter(self.held)))
            self.evicted[("prediction",)] += 1
        return None

    def add_label(self, key: str, label: object) -> tuple[str, Prediction | None]:
        owner = self.owner.get(key)
        if owner is not None and owner[0] == "held":
            keys, found = self.held.pop(owner[1])
            self._join(keys, owner[1])
            return "joined", found
        if owner is not None:
            return "duplicate", None
        if key in self.labels:
            self.labels.move_to_end(key)
        elif len(self.labels) >= self.max_entries:
            self.labels.popitem(last=False)
            self.evicted[("label",)] += 1
        self.labels[key] = (label, self.clock())
        return "unmatched", None


VALUES = st.sampled_from([0.5, -0.0, 1.25, 0, 1, 7, True, False, "cat", "dog", None])
STEPS = st.one_of(
    st.tuples(st.just("predict"), st.lists(st.integers(0, 7), min_size=0, max_size=3), VALUES),
    st.tuples(st.just("label"), st.integers(0, 7), VALUES),
    st.tuples(st.just("tick"), st.sampled_from([1.0, 7.0, 40.0])),
    st.tuples(st.just("expire")),
)


def same(got: object, want: object, n: int, step: tuple[Any, ...]) -> None:
    assert repr(got) == repr(want), (n, step)  # repr: 1 and True, 0.0 and -0.0 differ


def run_against(reference: Any, buf: JoinBuffer, clock: Clock, steps: list[tuple[Any, ...]],
                keys_of: Callable[[int, list[int]], list[str]], label_key: Callable[[int, int], str]) -> None:
    used: set[str] = set()
    for n, step in enumerate(steps):
        if step[0] == "predict":
            keys = keys_of(n, step[1])
            used.update(keys)
            held: Prediction = ("m", step[2], clock.now, ())
            same(buf.add_prediction(keys, held), reference.add_prediction(keys, held), n, step)
        elif step[0] == "label":
            key = label_key(n, step[1])
            used.add(key)
            same(buf.add_label(key, step[2]), reference.add_label(key, step[2]), n, step)
        elif step[0] == "tick":
            clock.now += step[1]
        else:
            buf.expire()
            reference.expire()
        held_by_reference = reference.held if isinstance(reference, ModelBuffer) else reference.predictions
        assert buf.pending_predictions == len(held_by_reference), (n, step)
        assert buf.pending_labels == len(reference.labels)
    for kind in ("prediction", "label"):
        assert buf.evicted[(kind,)] == reference.evicted[(kind,)]
        assert buf.expired[(kind,)] == reference.expired[(kind,)]
    for key in sorted(used):  # what each key answers to at the end: held, joined or forgotten
        same(buf.add_label(key, 0), reference.add_label(key, 0), len(steps), ("label", key))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([1, 2, 3, 5]), st.sampled_from([10.0, 60.0]), st.lists(STEPS, max_size=80))
def test_join_buffer_matches_the_ordereddict_one_for_single_keys(max_entries: int, ttl: float,
                                                                 steps: list[tuple[Any, ...]]) -> None:
    """With one key a prediction, each key held at most once (labels for any key, before or
    after its prediction, repeated or never matched), the outcomes, the returned predictions,
    the sizes and the counters are those of the OrderedDict buffer the compact one replaced."""
    clock = Clock()
    run_against(OrderedDictJoinBuffer(max_entries, ttl, clock), JoinBuffer(max_entries, ttl, clock), clock,
                steps, lambda n, _: [f"k{n}"], lambda n, i: f"k{n + i - 6}")  # the last few or the next


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([1, 2, 3, 5]), st.sampled_from([10.0, 60.0]), st.lists(STEPS, max_size=80))
def test_join_buffer_matches_its_model_for_any_keys(max_entries: int, ttl: float,
                                                    steps: list[tuple[Any, ...]]) -> None:
    """Up to three keys a prediction from a pool of eight, reused, repeated, shared between
    predictions and joins: the compact buffer behaves as the plain-dict model."""
    clock = Clock()
    run_against(ModelBuffer(max_entries, ttl, clock), JoinBuffer(max_entries, ttl, clock), clock,
                steps, lambda _, ks: [f"k{i}" for i in ks], lambda _, i: f"k{i}")


def test_performance_collector_reports_the_buffer_sizes() -> None:
    clock = Clock()
    buf = JoinBuffer(10, 3600, clock)
    buf.add_prediction(["a", "b"], prediction(clock.now))
    buf.add_prediction(["c"], prediction(clock.now))
    buf.add_label("early", 1)
    collector = PerformanceCollector(dict, buf, LabelStats())
    entries = {s.labels["kind"]: s.value for m in collector.collect() for s in m.samples
               if s.name == "modelmon_join_buffer_entries"}
    assert entries == {"prediction": 2, "label": 1}


def reference_classification(actual: list[str], predicted: list[str]) -> dict[str, object]:
    """Accuracy and per-class precision/recall/F1 computed independently with NumPy."""
    a, p = np.array(actual), np.array(predicted)
    out: dict[str, object] = {"accuracy": float((a == p).mean())}
    for c in sorted(set(actual) | set(predicted)):
        tp = float(((a == c) & (p == c)).sum())
        prec = tp / (p == c).sum() if (p == c).any() else None
        rec = tp / (a == c).sum() if (a == c).any() else None
        f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if prec is not None and rec is not None else None)
        out[c] = (prec, rec, f1)
    return out


def test_classification_metrics_match_an_independent_computation() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "auto", [], 20, None, [], 10, 3600, 12, clock)
    rng = np.random.default_rng(0)
    actual = rng.choice(["a", "b", "c"], 500).tolist()
    predicted = [x if rng.random() < 0.7 else str(rng.choice(["a", "b", "c"])) for x in actual]
    for y, p in zip(actual, predicted, strict=True):
        perf.joined(prediction(clock.now, p), y, clock.now)
    w = perf.windowed()
    ref = reference_classification(actual, predicted)
    assert perf.task == "classification"
    assert w["accuracy"] == pytest.approx(ref["accuracy"])
    for c, values in w["classes"].items():
        assert values == pytest.approx(ref[c])
    assert sum(perf.confusion.values()) == 500


def test_regression_metrics_match_numpy() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "auto", [], 20, None, [], 10, 3600, 12, clock)
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 300)
    p = y + rng.normal(0.5, 1, 300)
    for yi, pi in zip(y, p, strict=True):
        perf.joined(prediction(clock.now, float(pi)), float(yi), clock.now)
    w = perf.windowed()
    assert perf.task == "regression"
    assert w["mae"] == pytest.approx(np.abs(p - y).mean())
    assert w["rmse"] == pytest.approx(math.sqrt(((p - y) ** 2).mean()))
    assert w["bias"] == pytest.approx((p - y).mean())
    assert perf.regression[("n",)] == 300


def test_performance_window_slides() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "classification", [], 20, None, [], 10, 600, 6, clock)
    perf.joined(prediction(clock.now, "a"), "b", clock.now)
    clock.now += 700
    perf.joined(prediction(clock.now, "a"), "a", clock.now)
    assert perf.windowed()["accuracy"] == 1.0  # the old miss left the window
    assert sum(perf.confusion.values()) == 2  # the counters keep everything


def test_classes_are_bounded() -> None:
    clock = Clock()
    perf = ModelPerformance("m", "classification", ["x"], 3, None, [], 10, 600, 6, clock)
    for i in range(50):
        perf.joined(prediction(clock.now, f"c{i}"), f"c{i}", clock.now)
    labels = {k for pair in perf.confusion for k in pair}
    assert labels <= {"x", "c0", "c1", "__other__"}


# --- end to end ------------------------------------------------------------------------------


async def post_labels(running: Running, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/labels", data=body,
                                                    headers={"Content-Type": content_type}) as r:
        return r.status, await r.json()


async def test_labels_join_proxied_predictions_by_generated_id(
    upstream: TestServer, start_sidecar: StartSidecar
) -> None:
    running = await start_sidecar(str(upstream.make_url("")), models=[{"name": "iris", "segments": ["region"],
                                                                        "positive_class": "1"}])
    ids = []
    for region in ["eu", "eu", "us"]:
        body = {"instances": [{"x": 1.0, "region": region}]}
        async with running.session.post(running.traffic_url + "/v1/models/iris:predict", json=body) as r:
            assert r.status == 200
            ids.append(r.headers["X-Request-ID"])  # generated and returned to the client
    async with running.session.post(running.traffic_url + "/v1/models/iris:predict",
                                    json={"instances": [{"x": 2.0, "region": "us"}]},
                                    headers={"X-Request-ID": "client-chosen"}) as r:
        assert r.headers.get("X-Request-ID") is None  # the client knows its own id; nothing added
    ids.append("client-chosen")
    await running.drain()
    labels = [{"id": ids[0], "label": 1}, {"id": ids[1], "label": 0}, {"id": ids[2], "label": 1},
              {"id": "client-chosen", "label": 1}, {"id": "unknown", "label": 1}, {"id": ids[0], "label": 1},
              {"label": 1}]
    status, body = await post_labels(running, orjson.dumps({"labels": labels}))
    assert status == 202
    assert (body["joined"], body["unmatched"], body["duplicate"], body["rejected"]) == (4, 1, 1, 1)
    assert "'id' is required" in body["errors"][0]["error"]
    s = running.sample
    assert s("modelmon_labels_total", {"outcome": "joined"}) == 4
    assert s("modelmon_labels_total", {"outcome": "unmatched"}) == 1
    assert s("modelmon_labels_total", {"outcome": "duplicate"}) == 1
    assert s("modelmon_labels_total", {"outcome": "invalid"}) == 1
    assert s("modelmon_labels_joined_total", {"model": "iris"}) == 4
    assert s("modelmon_label_delay_seconds_count", {"model": "iris"}) == 4
    # The upstream predicts 1 for everything: 3 of 4 correct.
    assert s("modelmon_confusion_total", {"model": "iris", "actual": "1", "predicted": "1"}) == 3
    assert s("modelmon_confusion_total", {"model": "iris", "actual": "0", "predicted": "1"}) == 1
    assert s("modelmon_classification_accuracy", {"model": "iris"}) == 0.75
    assert s("modelmon_classification_correct_total", {"model": "iris"}) == 3
    assert s("modelmon_classification_precision", {"model": "iris", "class": "1"}) == 0.75
    seg = {"model": "iris", "segment": "region"}
    assert s("modelmon_segment_predictions_total", {**seg, "value": "eu"}) == 2
    assert s("modelmon_segment_positive_predictions_total", {**seg, "value": "us"}) == 2
    assert s("modelmon_segment_correct_predictions_total", {**seg, "value": "eu"}) == 1
    assert s("modelmon_segment_correct_predictions_total", {**seg, "value": "us"}) == 2
    assert s("modelmon_join_buffer_entries", {"kind": "label"}) == 1  # "unknown" waits


async def test_v2_payload_ids_and_batches_join_per_row(upstream: TestServer,
                                                       start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")))
    body = {"id": "batch-7", "inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP64", "data": [1, 2, 3]}]}
    async with running.session.post(running.traffic_url + "/v2/models/reg/infer", json=body) as r:
        assert r.status == 200
    await running.drain()
    # The upstream answers 0.5 for every row; per-row keys are "<id>:<row>".
    labels = [{"id": "batch-7:0", "label": 1.5}, {"id": "batch-7:1", "label": 0.25}, {"id": "batch-7:2", "label": 0.5}]
    status, body = await post_labels(running, b"\n".join(orjson.dumps(x) for x in labels), "application/x-ndjson")
    assert status == 202 and body["joined"] == 3
    s = running.sample
    reg = {"model": "reg"}
    # errors (prediction - label): -1.0, 0.25, 0.0
    for name in ("absolute_error", "squared_error", "overprediction", "underprediction"):
        assert s(f"modelmon_regression_{name}_count", reg) == 3
    assert s("modelmon_regression_absolute_error_sum", reg) == pytest.approx(1.0 + 0.25 + 0.0)
    assert s("modelmon_regression_squared_error_sum", reg) == pytest.approx(1.0 + 0.0625)
    assert s("modelmon_regression_overprediction_sum", reg) == pytest.approx(0.25)
    assert s("modelmon_regression_underprediction_sum", reg) == pytest.approx(1.0)
    assert s("modelmon_regression_mean_absolute_error", reg) == pytest.approx(1.25 / 3)
    assert s("modelmon_regression_root_mean_squared_error", reg) == pytest.approx((1.0625 / 3) ** 0.5)
    assert s("modelmon_regression_mean_error", reg) == pytest.approx(-0.75 / 3)


async def test_labels_arriving_before_their_predictions(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None)
    status, body = await post_labels(running, orjson.dumps([{"id": "r1", "label": "spam"}]))
    assert status == 202 and body["unmatched"] == 1
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records", json={
            "model": "mail", "records": [{"id": "r1", "features": {"len": 3}, "prediction": "spam"}]}) as r:
        assert r.status == 202
    await running.drain()
    assert running.sample("modelmon_labels_joined_total", {"model": "mail"}) == 1
    assert running.sample("modelmon_confusion_total", {"model": "mail", "actual": "spam", "predicted": "spam"}) == 1


@pytest.mark.parametrize(("payload", "status", "error"), [
    (b"{bad", 400, "invalid_json"),
    (b'{"labels": [{"id": "a"}]}', 400, "invalid_labels"),
    (b'{"labels": [{"id": "a", "label": [1, 2]}]}', 400, "invalid_labels"),
    (b'{"labels": [{"id": "a", "label": 1, "extra": 1}]}', 400, "invalid_labels"),
    (b'{"rows": []}', 400, "invalid_batch"),
])
async def test_bad_label_batches_are_named(start_sidecar: StartSidecar, payload: bytes, status: int,
                                           error: str) -> None:
    running = await start_sidecar(None)
    got, body = await post_labels(running, payload)
    assert (got, body["error"]) == (status, error)


async def test_over_long_labels_and_ids_beyond_64_bits_are_per_item_errors(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None)
    labels = [orjson.dumps({"id": "a", "label": "x" * 100_000}),
              orjson.dumps({"id": "b", "label": "y" * MAX_LABEL_CHARS}),  # the longest accepted
              b'{"id": 123456789012345678901234567890, "label": 1}',  # orjson cannot even write it
              orjson.dumps({"id": 18446744073709551615, "label": 1})]  # 2^64 - 1: still an integer
    status, body = await post_labels(running, b'{"labels": [' + b", ".join(labels) + b"]}")
    assert status == 202
    assert (body["unmatched"], body["rejected"]) == (2, 2)
    assert [e["index"] for e in body["errors"]] == [0, 2]
    assert body["errors"][0]["error"].startswith(f"'label' is too long: 100000 characters, at most {MAX_LABEL_CHARS}")
    assert "beyond 64 bits" in body["errors"][1]["error"] and "send it as a string" in body["errors"][1]["error"]
    assert running.sample("modelmon_labels_total", {"outcome": "invalid"}) == 2
    assert running.sample("modelmon_join_buffer_entries", {"kind": "label"}) == 2


async def test_probability_vectors_give_argmax_classes(start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(None, models=[{"name": "clf", "classes": ["neg", "pos"]}])
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records", json={
            "model": "clf", "records": [{"id": "p1", "features": {"x": 1}, "prediction": [0.2, 0.8]},
                                        {"id": "p2", "features": {"x": 2}, "prediction": [0.9, 0.1]}]}) as r:
        assert r.status == 202
    await running.drain()
    status, _ = await post_labels(running, orjson.dumps([{"id": "p1", "label": "pos"}, {"id": "p2", "label": "pos"}]))
    assert status == 202
    s = running.sample
    assert s("modelmon_confusion_total", {"model": "clf", "actual": "pos", "predicted": "pos"}) == 1
    assert s("modelmon_confusion_total", {"model": "clf", "actual": "pos", "predicted": "neg"}) == 1


async def test_unparseable_payloads_are_counted_by_reason(upstream: TestServer,
                                                          start_sidecar: StartSidecar) -> None:
    running = await start_sidecar(str(upstream.make_url("")))
    bad = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3]}]}
    async with running.session.post(running.traffic_url + "/v2/models/m/infer", json=bad) as r:
        assert r.status == 200  # the (lenient) upstream answers; the sidecar relays it untouched
    async with running.session.post(running.traffic_url + "/v1/models/m:predict", json={"instances": [[1]]}) as r:
        assert r.status == 200
    async with running.session.post(running.traffic_url + "/v1/models/m:predict", json={"rows": [1]}) as r:
        assert r.status == 400  # the upstream rejects it; the analysis counts it
    await running.drain()
    await asyncio.sleep(0)
    errors = {s.labels["reason"]: s.value for m in running.sidecar.registry.collect()
              if m.name == "modelmon_payload_errors" for s in m.samples}
    assert errors.get("tensor_shape_mismatch") == 1
    assert "no_instances" not in errors  # a 4xx response carries no prediction: not analysed


@pytest.mark.parametrize("generate", [True, False])
async def test_generated_request_id_reaches_model_and_client(upstream: TestServer, start_sidecar: StartSidecar,
                                                             generate: bool) -> None:
    running = await start_sidecar(str(upstream.make_url("")), labels={"generate_ids": generate}, proxy={
        "routes": [{"path": "/echo", "name": "echo", "model": "m"}]})
    async with running.session.post(running.traffic_url + "/echo", json={"instances": [[1]]}) as r:
        seen = {k.lower(): v for k, v in (await r.json())["headers"]}
        returned = r.headers.get("X-Request-ID")
    if generate:
        assert returned is not None and len(returned) == 32 and seen["x-request-id"] == returned
    else:
        assert returned is None and "x-request-id" not in seen
    # Non-inference routes are never touched.
    async with running.session.get(running.traffic_url + "/echo/other") as r:
        assert "X-Request-ID" not in r.headers
        assert "x-request-id" not in {k.lower() for k, _ in (await r.json())["headers"]}


@pytest.mark.parametrize("predicted", [10**400, {"a": 1}, [1, 2]], ids=["huge_int", "object", "array"])
def test_a_prediction_neither_class_nor_number_joins_without_error(predicted: object) -> None:
    """Such predictions wait in the join buffer until their label; then neither a float
    conversion nor a repr may raise (that was a 500 for POST /v1/labels)."""
    clock = Clock()
    regression = ModelPerformance("m", "regression", [], 20, None, [], 10, 600, 6, clock)
    regression.joined(prediction(clock.now, predicted), 2.5, clock.now)
    assert regression.regression == {("invalid",): 1}
    classification = ModelPerformance("m", "classification", [], 20, None, [], 10, 600, 6, clock)
    classification.joined(prediction(clock.now, predicted), "a", clock.now)
    assert dict(classification.confusion) == {("a", "__other__"): 1}
