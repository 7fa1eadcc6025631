"""A sliding time window of counts: a ring of sub-windows, plus cumulative totals."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray


class SlidingCounts:
    """Counts of shape ``shape`` over the last ``window`` seconds, kept as ``slots`` sub-windows.

    The window therefore moves in steps of ``window / slots`` seconds: a count stays in the
    window for between ``window - step`` and ``window`` seconds. ``total`` holds the cumulative
    counts since start (the Prometheus counters).
    """

    def __init__(self, shape: tuple[int, ...], window: float, slots: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._step = window / slots
        self._slots = slots
        self._clock = clock
        self._ring: NDArray[np.float64] = np.zeros((slots, *shape))
        self.total: NDArray[np.float64] = np.zeros(shape)
        self._tick = int(clock() // self._step)

    def _advance(self) -> int:
        tick = int(self._clock() // self._step)
        if tick != self._tick:
            stale = min(tick - self._tick, self._slots)
            for t in range(tick - stale + 1, tick + 1):
                self._ring[t % self._slots] = 0.0
            self._tick = tick
        return tick % self._slots

    def add(self, counts: NDArray[np.float64]) -> None:
        self._ring[self._advance()] += counts
        self.total += counts

    def add_at(self, index: tuple[int, ...] | int, amount: float) -> None:
        slot = self._advance()
        self._ring[slot][index] += amount
        self.total[index] += amount

    def window(self) -> NDArray[np.float64]:
        self._advance()
        return np.asarray(self._ring.sum(axis=0))
