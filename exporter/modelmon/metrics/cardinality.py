"""Bounded label values: user-controlled names never grow the series count without limit."""

from __future__ import annotations

from collections.abc import Iterable

from ..config import MODEL_NAME_RE

OVERFLOW = "__other__"


class BoundedLabelValues:
    """Admits label values first come, first served up to ``cap``; the rest fold into
    ``__other__``. Preset values (e.g. configured models) are always admitted and count
    towards the cap. Values that are not valid names fold too, so raw paths, ids or
    arbitrary bytes can never become label values. An admitted value is returned as the
    string first admitted, so that whatever holds many of them (the join buffer) shares one."""

    __slots__ = ("_cap", "_known")

    def __init__(self, cap: int, preset: Iterable[str] = ()) -> None:
        self._known: dict[str, str] = {v: v for v in preset}
        self._cap = max(cap, len(self._known))

    def get(self, value: str) -> str:
        known = self._known.get(value)
        if known is not None:
            return known
        if len(self._known) >= self._cap or not MODEL_NAME_RE.match(value):
            return OVERFLOW
        self._known[value] = value
        return value

    def __contains__(self, value: object) -> bool:
        return value in self._known

    def __len__(self) -> int:
        return len(self._known)
