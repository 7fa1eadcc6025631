"""Tiny in-memory instruments for the hot path.

The proxy updates plain dicts and lists (no locks: everything runs on one event loop);
collectors turn them into metric families at scrape time. This costs a dict lookup and a
bisect per request instead of prometheus_client's per-child locking.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

from prometheus_client.utils import floatToGoString


class Histogram:
    """Bucket counts with Prometheus ``le`` semantics (a value equal to a bound is in it)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, cumulative count), ...]`` ending with ``+Inf``, as HistogramMetricFamily wants."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        return out


class HistogramVec:
    """Histograms keyed by a tuple of label values."""

    __slots__ = ("_bounds", "children")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.children: dict[tuple[str, ...], Histogram] = {}

    def labels(self, *values: str) -> Histogram:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Histogram(self._bounds)
        return child


def counter_vec() -> defaultdict[tuple[str, ...], float]:
    """Counters keyed by a tuple of label values."""
    return defaultdict(float)
