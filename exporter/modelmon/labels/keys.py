"""What the join buffer holds: a prediction's and a pending label's shapes, and values kept
as they are when short, as a fixed-size digest when not (bounded whatever a client sends)."""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

from ..reference.profile import category_key

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


def text_of(value: Any) -> str:
    try:
        return category_key(value)
    except ValueError:  # an int too long to print (over sys.get_int_max_str_digits digits)
        return f"0x{value:x}"


def comparison_key(value: Any) -> str | Digest:
    """What a label and a predicted value are compared by: the text they are counted under
    (``category_key``), or its Digest when that is longer than MAX_HELD_TEXT or not ASCII."""
    if type(value) is Digest:
        return value
    text = text_of(value)
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


