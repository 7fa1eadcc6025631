"""Turning raw feature values into numbers or category keys, counting what is wrong with them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..protocols.base import Batch  # what the adapters hand the engine
from ..reference.profile import MISSING_TEXT, category_key, decimal_floats

# Data-quality event kinds, in the order of the quality matrix columns.
QUALITY_KINDS = ("nan", "inf", "null", "absent", "wrong_type", "below_min", "above_max",
                 "unseen_category")
Q = {kind: i for i, kind in enumerate(QUALITY_KINDS)}

Column = Sequence[Any] | NDArray[Any]

__all__ = ["QUALITY_KINDS", "Batch", "Column", "Q", "category_codes", "numeric_values"]


def numeric_values(values: Column) -> tuple[NDArray[np.float64], int, int]:
    """(float64 array with NaN for unusable entries, nulls, wrong types). A numeric feature takes
    JSON numbers (and booleans as 1/0); null and text spelling a missing value (``""``, ``NA``,
    ...: ``profile.MISSING_TEXT``, missing in a reference from CSV too) are nulls; other strings,
    lists and objects are wrong types. A float that is exactly a float32's value (a client's
    ``tolist()`` of a float32 array, binary FP32 tensors) is that float32's shortest decimal,
    as in the reference (``profile.decimal_floats``): 0.699999988079071 is 0.7. Fast path: one
    C-level conversion when every value is a number; per-value fallback otherwise."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return _numbers(values.ravel()), 0, 0
    seq = values.tolist() if isinstance(values, np.ndarray) else values
    try:
        arr = np.asarray(seq)
    except ValueError:  # ragged nested lists
        arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "biuf":
        return _numbers(arr), 0, 0
    out = np.empty(len(seq))
    nulls = wrong = 0
    for i, v in enumerate(seq):
        if isinstance(v, _NUMBERS):  # bool is an int: true/false count as 1/0
            try:
                out[i] = v
            except OverflowError:  # an integer beyond float range
                out[i] = math.inf if v > 0 else -math.inf
        else:
            out[i] = math.nan
            if v is None or (type(v) is str and v.strip() in MISSING_TEXT):
                nulls += 1
            else:
                wrong += 1
    return decimal_floats(out), nulls, wrong


def _numbers(arr: NDArray[Any]) -> NDArray[np.float64]:
    if arr.dtype.kind == "f":  # integers and booleans are exact, and no float32's fraction
        return decimal_floats(arr)
    return arr.astype(np.float64)


_NUMBERS = (int, float, np.integer, np.floating, np.bool_)


def category_codes(values: Column, index: Mapping[str, int], other: int
                   ) -> tuple[NDArray[np.int64], int, int, int, int]:
    """(codes of valid values, nulls, NaNs, wrong types, unseen). Values are looked up by their
    canonical key (``profile.category_key``: ``True`` and ``true``, ``3.0`` and ``3`` are one
    category), ``index`` maps keys to codes. Unseen categories (not among the reference's
    top-K) are coded ``other``: counted, never dropped. Text spelling a missing value is null,
    as the profile builder reads it."""
    seq = values.tolist() if isinstance(values, np.ndarray) else values
    codes: list[int] = []
    nulls = nans = wrong = unseen = 0
    for v in seq:
        # The common case first: text that is a reference category as it stands (keys are
        # their own keys, so no other spelling can mean another category).
        code = index.get(v) if type(v) is str else None
        if code is not None:
            codes.append(code)
        elif v is None:
            nulls += 1
        elif isinstance(v, float) and math.isnan(v):
            nans += 1
        elif isinstance(v, str | int | float | bytes | np.generic):
            if type(v) is str and v.strip() in MISSING_TEXT:
                nulls += 1
                continue
            code = index.get(category_key(v))
            if code is None:
                unseen += 1
                code = other
            codes.append(code)
        else:
            wrong += 1
    return np.asarray(codes, dtype=np.int64), nulls, nans, wrong, unseen
