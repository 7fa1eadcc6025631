"""Benchmark of the join buffer: memory per entry and time per operation of the compact
``JoinBuffer`` (slot arrays and an open-addressing index of key hashes) against the
OrderedDict one it replaced, copied here as ``OrderedDictJoinBuffer``.

Run it from the repository root::

    .venv/bin/python tests/bench/bench_join_buffer.py           # under a minute
    .venv/bin/python tests/bench/bench_join_buffer.py --quick   # about 20 seconds

Not a pytest test (pytest only collects ``test_*.py``). One process (plus one child per
implementation for the RSS check), seeded; max_entries = 20,000, the default.

Entries are realistic: a uuid4 request id (the header key, 36 characters) and a distinct
payload id (``req-`` and 16 hex digits, the alias) per prediction, a float predicted value, one
model name, no segments, prediction times a millisecond apart. Key strings are created fresh,
as a request's are: what a buffer keeps of them counts, and their hash is not cached yet.

- **Bytes per entry**, from ``tracemalloc`` (every Python allocation: key strings, tuples,
  floats, dict and OrderedDict tables, arrays), traced from before the buffer exists, divided
  by 20,000: after filling the buffer; in the steady state of an always-full buffer (40,000
  more predictions, each evicting the oldest); with one key per prediction; and with the
  buffer full of held predictions *and* of recent joins (20,000 joined, then 20,000 held),
  what a buffer whose labels do arrive settles at. As a cross-check, the RSS growth of a child
  process reaching the steady state (psutil; coarser and higher: it counts every page the
  allocator touched, including arenas that the short-lived key strings of 60,000 requests
  left partly used).
- **Nanoseconds per call**: ``time.perf_counter_ns`` over 20,000 calls in a row, garbage
  collector on, rounds alternating between the implementations, median over rounds:
  ``add_prediction`` into a full buffer (each evicts the oldest), with two keys, one key, and
  two keys with 1,000 early labels waiting; ``add_label`` joining a held prediction
  (alternately by header id and payload id, the ring of recent joins full); a duplicate label;
  an unmatched label.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelmon.labels import JoinBuffer, Prediction

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the reference buffer
from join_buffer_reference import OrderedDictJoinBuffer

N = 20_000
TTL = 86_400.0
T0 = 1_700_000_000.0


IMPLEMENTATIONS: dict[str, Callable[..., Any]] = {
    "before": OrderedDictJoinBuffer,
    "after": JoinBuffer,
}

Keys = tuple[str, str]


class KeyMaker:
    """Seeded realistic key pairs (uuid4 header id, payload id), fresh strings each call."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def __call__(self, n: int) -> list[Keys]:
        rng = self._rng
        return [(str(uuid.UUID(int=rng.getrandbits(128), version=4)), f"req-{rng.getrandbits(64):016x}")
                for _ in range(n)]


def clock() -> float:
    return T0 + 10 * N * 1e-3


def predictions(n: int, start: int) -> list[Prediction]:
    rng = random.Random(start)
    return [("model", rng.random(), T0 + (start + i) * 1e-3, ()) for i in range(n)]


def fill(buf: Any, keys: KeyMaker, n: int, start: int, one_key: bool = False,
         keep: list[Keys] | None = None) -> None:
    """Hold n predictions, making their keys and values one at a time: nothing else keeps them
    (unless ``keep`` collects the keys)."""
    rng = random.Random(start)
    for i in range(start, start + n):
        k = keys(1)[0]
        if keep is not None:
            keep.append(k)
        buf.add_prediction(k[:1] if one_key else k, ("model", rng.random(), T0 + i * 1e-3, ()))


# --- memory ---------------------------------------------------------------------------------------

def memory(make: Callable[..., Any]) -> dict[str, float]:
    """Bytes per entry at each point: traced memory over what was traced before the buffer
    existed (tracing runs throughout, so whatever the buffer lets go is subtracted too)."""
    out: dict[str, float] = {}
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]

    def now() -> float:
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - base) / N

    buf = make(N, TTL, clock)
    keys = KeyMaker(1)
    fill(buf, keys, N, 0)
    out["fill"] = now()
    fill(buf, keys, 2 * N, N)
    out["steady"] = now()
    del buf
    buf = make(N, TTL, clock)
    fill(buf, KeyMaker(2), N, 0, one_key=True)
    out["one_key"] = now()
    del buf
    buf = make(N, TTL, clock)
    keys = KeyMaker(3)
    held: list[Keys] = []
    fill(buf, keys, N, 0, keep=held)
    for i, k in enumerate(held):
        buf.add_label(k[i % 2], 1.0)
    del held
    fill(buf, keys, N, N)
    out["with_joins"] = now()
    del buf
    tracemalloc.stop()
    return out


def rss_child(name: str) -> None:
    import psutil

    gc.collect()
    before = psutil.Process().memory_info().rss
    buf = IMPLEMENTATIONS[name](N, TTL, clock)
    keys = KeyMaker(1)
    fill(buf, keys, N, 0)
    fill(buf, keys, 2 * N, N)
    gc.collect()
    print((psutil.Process().memory_info().rss - before) / N)


def rss(name: str) -> float | None:
    try:
        done = subprocess.run([sys.executable, __file__, "--rss-child", name], capture_output=True,
                              text=True, check=True, timeout=600)
        return float(done.stdout.strip())
    except (subprocess.SubprocessError, ValueError):
        return None


# --- time -----------------------------------------------------------------------------------------

def full_buffer(make: Callable[..., Any], seed: int, joins: bool = False) -> tuple[Any, list[Keys]]:
    """A full buffer (its keys returned), after N joins first if ``joins`` (the ring then full)."""
    buf = make(N, TTL, clock)
    keys = KeyMaker(seed)
    if joins:
        first = keys(N)
        for i, (k, p) in enumerate(zip(first, predictions(N, 0), strict=True)):
            buf.add_prediction(k, p)
            buf.add_label(k[i % 2], 1.0)
    held = keys(N)
    for k, p in zip(held, predictions(N, N), strict=True):
        buf.add_prediction(k, p)
    return buf, held


def scenarios() -> dict[str, Callable[[Callable[..., Any], int], Callable[[], None]]]:
    """Each sets up a state and returns the N calls to time."""

    def add_predictions(one_key: bool = False, waiting: int = 0) -> Callable[..., Callable[[], None]]:
        def setup(make: Callable[..., Any], seed: int) -> Callable[[], None]:
            buf, _ = full_buffer(make, seed)
            for i in range(waiting):
                buf.add_label(f"early-{i}", 1.0)
            keys = KeyMaker(seed + 1)(N)
            args = [k[:1] if one_key else k for k in keys]
            preds = predictions(N, 2 * N)
            add = buf.add_prediction

            def run() -> None:
                for i in range(N):
                    add(args[i], preds[i])
            return run
        return setup

    def add_labels(kind: str) -> Callable[..., Callable[[], None]]:
        def setup(make: Callable[..., Any], seed: int) -> Callable[[], None]:
            buf, held = full_buffer(make, seed, joins=True)
            if kind == "duplicate":
                for i, k in enumerate(held):
                    buf.add_label(k[i % 2], 1.0)
            # Fresh strings with the same text, as a label's key would be.
            texts = KeyMaker(seed + 1)(N) if kind == "unmatched" else held
            keys = ["".join(list(k[i % 2])) for i, k in enumerate(texts)]
            add = buf.add_label

            def run() -> None:
                for key in keys:
                    add(key, 1.0)
            return run
        return setup

    return {
        "add_prediction, full buffer, 2 keys": add_predictions(),
        "add_prediction, full buffer, 1 key": add_predictions(one_key=True),
        "add_prediction, 2 keys, 1,000 labels waiting": add_predictions(waiting=1000),
        "add_label, joins (ring of joins full)": add_labels("join"),
        "add_label, duplicate": add_labels("duplicate"),
        "add_label, unmatched": add_labels("unmatched"),
    }


def timings(rounds: int) -> dict[str, dict[str, float]]:
    """Median ns per call for each scenario and implementation, rounds alternating."""
    out: dict[str, dict[str, float]] = {}
    for label, setup in scenarios().items():
        runs: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
        for r in range(rounds):
            for name, make in IMPLEMENTATIONS.items():
                run = setup(make, 10 + r)
                gc.collect()
                t0 = time.perf_counter_ns()
                run()
                runs[name].append((time.perf_counter_ns() - t0) / N)
        out[label] = {name: statistics.median(values) for name, values in runs.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds, no RSS check")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    rounds = 3 if args.quick else 9
    print(f"Join buffer, max_entries={N:,}: uuid4 header id + payload id per prediction, float values")
    print(f"Python {sys.version.split()[0]}; before = OrderedDictJoinBuffer, after = JoinBuffer\n")
    before, after = IMPLEMENTATIONS
    mem = {name: memory(make) for name, make in IMPLEMENTATIONS.items()}
    print(f"{'bytes per entry (tracemalloc)':<52} {'before':>8} {'after':>8} {'before/after':>13}")
    for label, key in (("held prediction, 2 keys, buffer just filled", "fill"),
                       ("held prediction, 2 keys, steady state (evicting)", "steady"),
                       ("held prediction, 1 key, buffer just filled", "one_key"),
                       ("held prediction + recent join, 2 keys", "with_joins")):
        b, a = mem[before][key], mem[after][key]
        print(f"{label:<52} {b:>8.0f} {a:>8.0f} {b / a:>12.1f}x")
    if not args.quick:
        b_rss, a_rss = rss(before), rss(after)
        if b_rss is not None and a_rss is not None:
            print(f"{'RSS growth, 2 keys, steady state (psutil)':<52} {b_rss:>8.0f} {a_rss:>8.0f} "
                  f"{b_rss / a_rss:>12.1f}x")
    print(f"\n{'ns per call (median of ' + str(rounds) + ' rounds of 20,000)':<52} "
          f"{'before':>8} {'after':>8} {'after/before':>13}")
    for label, by_impl in timings(rounds).items():
        b, a = by_impl[before], by_impl[after]
        print(f"{label:<52} {b:>8.0f} {a:>8.0f} {a / b:>12.2f}x")


if __name__ == "__main__":
    main()
