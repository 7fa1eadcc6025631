"""Sliding time windows of counts: a ring of ``slots`` sub-windows of ``window / slots``
seconds each, the oldest cleared as time moves on. The window therefore moves in steps: a count
stays in it for between ``window - step`` and ``window`` seconds.

One ring, two kinds of counts: dense NumPy arrays (:class:`SlidingCounts`, the drift engine's
bins and quality counts) and keyed counts (:class:`SlidingCounter`, the performance window's
confusion and error sums, whose keys are only known as they arrive).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray


class SlidingWindow:
    """The ring's clock: which sub-window is current, and clearing the ones time has passed."""

    def __init__(self, window: float, slots: int, clock: Callable[[], float] = time.time) -> None:
        self._step = window / slots
        self._slots = slots
        self._clock = clock
        self._tick = int(clock() // self._step)

    def _advance(self) -> int:
        """The current sub-window's index, after clearing those that fell out of the window."""
        tick = int(self._clock() // self._step)
        if tick != self._tick:
            stale = min(tick - self._tick, self._slots)
            for t in range(tick - stale + 1, tick + 1):
                self._clear(t % self._slots)
            self._tick = tick
        return tick % self._slots

    def _clear(self, slot: int) -> None:
        raise NotImplementedError


class SlidingCounts(SlidingWindow):
    """Counts of shape ``shape`` over the window; ``total`` holds the cumulative counts since
    start (the Prometheus counters)."""

    def __init__(self, shape: tuple[int, ...], window: float, slots: int,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(window, slots, clock)
        self._ring: NDArray[np.float64] = np.zeros((slots, *shape))
        self.total: NDArray[np.float64] = np.zeros(shape)

    def _clear(self, slot: int) -> None:
        self._ring[slot] = 0.0

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


K = TypeVar("K", bound=Hashable)


class SlidingCounter(SlidingWindow, Generic[K]):
    """Keyed counts over the window, as a ring of dicts."""

    def __init__(self, window: float, slots: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(window, slots, clock)
        self._ring: list[dict[K, float]] = [{} for _ in range(slots)]

    def _clear(self, slot: int) -> None:
        self._ring[slot] = {}

    def add(self, key: K, amount: float = 1.0) -> None:
        slot = self._ring[self._advance()]
        slot[key] = slot.get(key, 0.0) + amount

    def totals(self) -> dict[K, float]:
        self._advance()
        out: dict[K, float] = {}
        for slot in self._ring:
            for key, value in slot.items():
                out[key] = out.get(key, 0.0) + value
        return out
