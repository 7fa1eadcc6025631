"""What every protocol adapter produces, and the helpers they share.

An adapter turns a decoded request (and its response) into an :class:`Extracted`: input
columns (named, or positional when the wire format has no names), output columns, and the
request id. Adapters never raise on odd payloads: they raise :class:`PayloadError` with a short
reason, which the pipeline counts by model and reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Column = list[Any] | NDArray[Any]


class _Absent:
    """Marks a row that lacked a feature (as opposed to an explicit null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()

# Open Inference Protocol tensor datatypes -> NumPy dtypes (BYTES stay Python strings).
V2_DTYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": object,
}
MAX_TENSOR_ELEMENTS = 50_000_000


class PayloadError(Exception):
    """The payload does not have the shape its protocol promises; ``reason`` is a short label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


@dataclass
class Extracted:
    rows: int
    # Named input columns, one value per row; rows that lacked the feature hold ABSENT and
    # are counted in ``absent``.
    inputs: dict[str, Column] = field(default_factory=dict)
    absent: dict[str, int] = field(default_factory=dict)
    # Unnamed inputs (rows as lists, a 2-D tensor): one column per position, one value per
    # row; ``positional_absent`` rows (of the wrong length) hold ABSENT in every position.
    positional: list[Column] | None = None
    positional_absent: int = 0
    # Output columns, one value per row; a probability vector per row is kept as a list.
    outputs: dict[str, Column] = field(default_factory=dict)
    # Class names for the positions of probability vectors (Seldon's output "names").
    class_names: list[str] | None = None
    request_id: str | None = None
    row_ids: list[str | None] | None = None
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str, count: int = 1) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + count


def columns_from_dicts(rows: Sequence[Any], out: Extracted) -> None:
    """Rows as objects -> named columns (every key seen, first 1,000 distinct keys); a row that
    is not an object is counted and lacks every feature."""
    bad = sum(1 for r in rows if not isinstance(r, dict))
    if bad:
        out.error("row_not_object", bad)
    seen: dict[str, None] = {}
    for r in rows:
        if isinstance(r, dict):
            for k in r:
                if len(seen) >= 1000:
                    break
                seen.setdefault(k, None)
    for key in seen:
        column = [r.get(key, ABSENT) if isinstance(r, dict) else ABSENT for r in rows]
        missing = sum(1 for v in column if v is ABSENT)
        out.inputs[str(key)] = column
        if missing:
            out.absent[str(key)] = missing


def columns_from_lists(rows: Sequence[Any], out: Extracted) -> None:
    """Rows as equally long lists -> positional columns; rows of another length are counted
    and lack every feature."""
    if not rows:
        out.positional = []
        return
    if all(not isinstance(r, (list, dict)) for r in rows):  # a single feature, one scalar per row
        out.positional = [list(rows)]
        return
    width = len(rows[0]) if isinstance(rows[0], list) else 0
    ok = [isinstance(r, list) and len(r) == width for r in rows]
    bad = ok.count(False)
    if bad:
        out.error("row_length_mismatch", bad)
        out.positional_absent = bad
        out.positional = [[r[i] if good else ABSENT for r, good in zip(rows, ok, strict=True)]
                          for i in range(width)]
    else:
        out.positional = [[r[i] for r in rows] for i in range(width)]


def tensor(t: Any, where: str = "tensor") -> tuple[str | None, NDArray[Any]]:
    """An Open Inference Protocol tensor object -> (name, array of its shape); data may be flat
    or nested, BYTES elements are strings."""
    if not isinstance(t, dict):
        raise PayloadError("bad_tensor", f"{where} is not an object")
    shape, data, datatype = t.get("shape"), t.get("data"), t.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):
        raise PayloadError("bad_tensor", f"{where}: shape must be a list of non-negative integers")
    if any(s > 2**64 - 1 for s in shape):  # the spec: each dimension fits an unsigned 64-bit integer
        raise PayloadError("bad_tensor", f"{where}: shape {shape} is not representable")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise PayloadError("tensor_too_large")
    dtype = V2_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise PayloadError("bad_datatype", f"{where}: datatype {datatype!r}")
    if not isinstance(data, list):
        data = [data]
    try:
        if dtype is object:
            flat = np.asarray(data, dtype=object).ravel()
        elif dtype is np.bool_:
            flat = np.asarray(data, dtype=np.bool_).ravel()
        elif np.issubdtype(dtype, np.integer) and (ints := np.asarray(data)).dtype.kind in "iu":
            flat = ints.ravel()  # JSON integers stay exact (int64/uint64), not rounded through float64
        else:  # floats; integers mixing signs beyond int64, or beyond 64 bits: as floats
            flat = np.asarray(data, dtype=np.float64).ravel()
    except (TypeError, ValueError, OverflowError):
        raise PayloadError("bad_tensor_data", f"{where}: data does not fit datatype {datatype}") from None
    if flat.size != math.prod(shape):
        raise PayloadError("tensor_shape_mismatch",
                           f"{where}: {flat.size} elements for shape {shape}")
    try:
        shaped = flat.reshape(shape)
    except (ValueError, OverflowError):  # beyond NumPy's index range or dimension count
        raise PayloadError("bad_tensor", f"{where}: shape {shape} is not representable") from None
    name = t.get("name")
    return (name if isinstance(name, str) else None), shaped


_FLOAT_DATATYPES = frozenset(("FP16", "FP32", "FP64"))


def plain_float_tensor(t: Any) -> tuple[str | None, int, int, list[float]] | None:
    """``(name, rows, values per row, data)`` for a float tensor sent the common way — flat
    ``data`` of JSON floats filling a ``[rows, ...]`` shape — else None. Such a tensor needs no
    NumPy: for single-row requests NumPy's per-call cost was most of the analysis."""
    if not isinstance(t, dict):
        return None
    shape, data, datatype = t.get("shape"), t.get("data"), t.get("datatype")
    if not isinstance(datatype, str) or datatype not in _FLOAT_DATATYPES:
        return None
    if not isinstance(shape, list) or not shape or not isinstance(data, list):
        return None
    size = 1
    for s in shape:
        if type(s) is not int or s <= 0:
            return None
        size *= s
    if len(data) != size or size > MAX_TENSOR_ELEMENTS:
        return None
    for v in data:
        if type(v) is not float:
            return None
    name = t.get("name")
    return (name if isinstance(name, str) else None), shape[0], size // shape[0], data


def tensor_columns(t: Any, where: str) -> tuple[str | None, int, list[Column]]:
    """An input tensor -> (name, rows, one column per position): ``[n]`` and ``[n, 1]`` give one
    column, ``[n, k]`` k columns (a 2-D tensor holds k features side by side)."""
    plain = plain_float_tensor(t)
    if plain is not None:
        name, rows, width, data = plain
        return name, rows, [data] if width == 1 else [data[j::width] for j in range(width)]
    name, arr = tensor(t, where)
    rows = rows_of(arr)
    values = arr.reshape(rows, math.prod(arr.shape[1:])) if arr.ndim else arr.reshape(1, 1)
    return name, rows, list(values.T)  # one view per column


def tensor_rows(t: Any, where: str) -> tuple[str | None, int, Column]:
    """An output tensor -> (name, rows, its values per row): see :func:`per_row`."""
    plain = plain_float_tensor(t)
    if plain is not None:
        name, rows, width, data = plain
        return name, rows, data if width == 1 else [data[r * width:(r + 1) * width] for r in range(rows)]
    name, arr = tensor(t, where)
    return name, rows_of(arr), per_row(arr)


def rows_of(array: NDArray[Any]) -> int:
    return int(array.shape[0]) if array.ndim else 1


def per_row(array: NDArray[Any]) -> Column:
    """A tensor's values per row: scalars for [n] or [n, 1], lists for [n, k > 1]."""
    if array.ndim <= 1:
        return array.reshape(-1)
    flat = array.reshape(array.shape[0], math.prod(array.shape[1:]))
    if flat.shape[1] == 1:
        return flat[:, 0]
    return [row.tolist() for row in flat]


def request_id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 256:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        return text if len(text) <= 256 else None
    return None
