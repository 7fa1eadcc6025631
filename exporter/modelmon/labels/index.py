"""The join buffer's hash index: key hashes to slot numbers in two flat arrays."""

from __future__ import annotations

from array import array

# hash() never returns -1 in CPython (it is the C API's error value): -1 marks "no key".
NO_KEY = -1


class HashIndex:
    """Key hashes to ints, in two flat arrays kept at most half full: 24 to 48 bytes a key, where
    a dict costs 100 to 160 (an int object for the key, one for the value, and its table).
    Open addressing with linear probing; a deletion shifts the cells after it back, so no
    tombstones pile up. (-1, an impossible hash, marks an empty cell.)"""

    __slots__ = ("_count", "_hashes", "_limit", "_mask", "_values")

    def __init__(self) -> None:
        self._allocate(8)

    def _allocate(self, size: int) -> None:
        self._count = 0
        self._hashes = array("q", [NO_KEY]) * size
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


