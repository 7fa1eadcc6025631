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


@dataclass
class Batch:
    """Feature columns of one micro-batch of one model, keyed by profile feature name.

    ``columns[name]`` holds the values of the rows that had the feature (``None`` for an
    explicit null); ``absent[name]`` counts the rows that lacked it altogether, so
    ``len(columns[name]) + absent[name] == rows``.
    """

    rows: int
    columns: dict[str, Column | Sequence[Any]] = field(default_factory=dict)
    absent: dict[str, int] = field(default_factory=dict)
    schema_errors: dict[str, int] = field(default_factory=dict)  # counted by the caller


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
    # Triton's bfloat16: binary only in Triton's clients; JSON numbers are read as floats.
    "BF16": np.float32,
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


def reject_base64(out: Extracted) -> None:
    """TensorFlow Serving's (and KServe V1's, MLflow's) binary values, ``{"b64": "..."}`` objects
    in place of a value or a whole instance: not features this reads (``base64_value``), rather
    than a feature named ``b64`` or objects counted as wrong types."""
    if "b64" in out.inputs:
        raise PayloadError("base64_value", "instances of {\"b64\": ...}")
    for column in (*out.inputs.values(), *(out.positional or ())):
        if dict in map(type, column) and any(type(v) is dict and "b64" in v for v in column):
            raise PayloadError("base64_value", "values of {\"b64\": ...}")


def tensor(t: Any, where: str = "tensor", binary: memoryview | None = None
           ) -> tuple[str | None, NDArray[Any]]:
    """An Open Inference Protocol tensor object -> (name, array of its shape).

    Its values come from ``data`` (flat or nested, row-major; BYTES elements are strings) or,
    when ``binary`` is given, from those bytes of a message in the binary tensor data extension
    (see :func:`binary_values`). Values in a form this does not read are a PayloadError, never
    nulls: no ``data`` (``no_tensor_data``; ``binary_without_header`` or ``shared_memory_tensor``
    when the parameters say where the values went instead), a ``parameters.content_type`` other
    than ``np``, ``str`` or ``datetime`` (``base64_value``, ``unknown_content_type``), elements
    of another kind than the datatype's (``bad_tensor_data``: strings in a numeric tensor,
    objects or lists in a BYTES tensor, anything but true/false/0/1 in a BOOL tensor). An
    explicit JSON null stays a null."""
    if not isinstance(t, dict):
        raise PayloadError("bad_tensor", f"{where} is not an object")
    shape, datatype = t.get("shape"), t.get("datatype")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):
        raise PayloadError("bad_tensor", f"{where}: shape must be a list of non-negative integers")
    if any(s > 2**64 - 1 for s in shape):  # the spec: each dimension fits an unsigned 64-bit integer
        raise PayloadError("bad_tensor", f"{where}: shape {shape} is not representable")
    size = math.prod(shape)
    if size > MAX_TENSOR_ELEMENTS:
        raise PayloadError("tensor_too_large")
    dtype = V2_DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise PayloadError("bad_datatype", f"{where}: datatype {datatype!r}")
    parameters = t.get("parameters")
    if isinstance(parameters, dict):
        content_type = parameters.get("content_type")
        if not _read_as_is(content_type):
            raise PayloadError("base64_value" if content_type == "base64" else "unknown_content_type",
                               f"{where}: content_type {content_type!r}")
    if binary is not None:
        flat = binary_values(str(datatype), binary, size, where)
    else:
        data = t.get("data")
        if data is None:
            if isinstance(parameters, dict) and "binary_data_size" in parameters:
                raise PayloadError("binary_without_header",
                                   f"{where}: binary_data_size without Inference-Header-Content-Length")
            if isinstance(parameters, dict) and "shared_memory_region" in parameters:
                raise PayloadError("shared_memory_tensor", f"{where}: data in a shared-memory region")
            if size:
                raise PayloadError("no_tensor_data", f"{where}: no data")
            data = []
        flat = json_values(data, dtype, where)
    if flat.size != size:
        raise PayloadError("tensor_shape_mismatch",
                           f"{where}: {flat.size} elements for shape {shape}")
    try:
        shaped = flat.reshape(shape)
    except (ValueError, OverflowError):  # beyond NumPy's index range or dimension count
        raise PayloadError("bad_tensor", f"{where}: shape {shape} is not representable") from None
    name = t.get("name")
    return (name if isinstance(name, str) else None), shaped


# parameters.content_type values whose data is read as it stands (MLServer's codecs: NumPy
# arrays, UTF-8 strings, ISO 8601 date-times as strings); "base64" and the rest are not.
READ_CONTENT_TYPES = frozenset(("np", "str", "datetime"))


def _read_as_is(content_type: Any) -> bool:
    return content_type is None or (isinstance(content_type, str) and content_type in READ_CONTENT_TYPES)


_NUMBER_TYPES = (int, float, bool)  # bool: JSON true/false in a numeric tensor count as 1/0
_SCALAR_TYPES = frozenset((str, int, float, bool, type(None)))


def json_values(data: Any, dtype: Any, where: str) -> NDArray[Any]:
    """A tensor's JSON ``data`` (flat or nested) -> a flat array, checked against the datatype."""
    if not isinstance(data, list):
        data = [data]
    try:
        if dtype is object:  # BYTES: strings (numbers and booleans are read as they stand)
            flat = np.asarray(data, dtype=object).ravel()
            if not (_SCALAR_TYPES.issuperset(map(type, data))  # flat data: the list itself
                    or _SCALAR_TYPES.issuperset(map(type, flat.tolist()))):  # ragged, objects
                raise PayloadError("bad_tensor_data", f"{where}: BYTES elements must be strings")
            return flat
        arr = np.asarray(data)
        kind = arr.dtype.kind
        if not arr.size:
            return arr.astype(np.bool_ if dtype is np.bool_ else np.float64).ravel()
        if dtype is np.bool_:
            if kind == "b":
                return arr.ravel()
            if kind in "iu" and bool(((arr == 0) | (arr == 1)).all()):
                return arr.astype(np.bool_).ravel()
            if kind == "O":
                return _objects(arr, (bool,), where)
        elif kind in "iu" and np.issubdtype(dtype, np.integer):
            return arr.ravel()  # JSON integers stay exact (int64/uint64), not rounded through float64
        elif kind in "biuf":  # floats; integers in a float tensor or beyond 64 bits: as floats
            return arr.astype(np.float64).ravel()
        elif kind == "O":  # nulls among the numbers, or integers beyond 64 bits
            return _objects(arr, _NUMBER_TYPES, where)
    except (TypeError, ValueError, OverflowError):  # ragged nesting
        pass
    raise PayloadError("bad_tensor_data", f"{where}: data does not fit the datatype")


def _objects(arr: NDArray[Any], allowed: tuple[type, ...], where: str) -> NDArray[Any]:
    """Elements of an object array (nulls among values, huge integers): each of ``allowed`` or
    None; as float64 when there is no null (a BOOL tensor keeps its booleans)."""
    flat = arr.ravel()
    nulls = False
    for v in flat:
        if v is None:
            nulls = True
        elif not isinstance(v, allowed):
            raise PayloadError("bad_tensor_data", f"{where}: data does not fit the datatype")
    if nulls or allowed == (bool,):
        return flat  # explicit nulls stay nulls (a numeric feature counts them as null)
    return np.asarray(flat.tolist(), dtype=np.float64)


# --- the binary tensor data extension -------------------------------------------------------------
#
# Triton's and KServe's HTTP/REST binary tensor data extension
# (https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md):
# a message whose header Inference-Header-Content-Length is N is an N-byte JSON object (the
# usual request or response) followed by the raw bytes of the tensors whose parameters carry
# ``binary_data_size``, in the order the JSON lists them. Values are little-endian, row-major,
# unpadded, each in its datatype's native size; BOOL is one byte (0 or 1); a BYTES element is
# a 4-byte little-endian unsigned length followed by that many bytes. N = 0 is a "raw binary
# request": one input's bytes without any JSON, its shape and datatype known to the server only.

@dataclass(slots=True)
class BinaryBody:
    """A message in the binary tensor data extension: the decoded JSON object and the bytes after
    it; ``error`` names why it cannot be read (the header value or the body's length is wrong)."""

    header: Any
    data: memoryview
    error: str | None = None


# datatype -> (little-endian wire dtype, the dtype the JSON form of the same values decodes to)
_BINARY_DTYPES: dict[str, tuple[str, Any]] = {
    "UINT8": ("<u1", np.int64), "UINT16": ("<u2", np.int64), "UINT32": ("<u4", np.int64),
    "UINT64": ("<u8", None), "INT8": ("<i1", np.int64), "INT16": ("<i2", np.int64),
    "INT32": ("<i4", np.int64), "INT64": ("<i8", np.int64), "FP16": ("<f2", np.float64),
    "FP32": ("<f4", np.float64), "FP64": ("<f8", np.float64),
}


def binary_sections(tensors: Sequence[Any], data: memoryview | None, where: str) -> list[memoryview | None]:
    """Each tensor's slice of a binary message's bytes (None: its values are in its JSON ``data``).

    Raises PayloadError when the sizes are unreadable (``binary_size_invalid``), run past the
    body (``binary_truncated``), or leave bytes over (``binary_length_mismatch``); sizes without a
    binary message are ``binary_without_header`` (left to :func:`tensor`)."""
    sections: list[memoryview | None] = []
    offset = 0
    for i, t in enumerate(tensors):
        parameters = t.get("parameters") if isinstance(t, dict) else None
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None or data is None:
            sections.append(None)
            continue
        if type(size) is not int or size < 0:
            raise PayloadError("binary_size_invalid", f"{where}[{i}]: binary_data_size {size!r}")
        if offset + size > len(data):
            raise PayloadError("binary_truncated",
                               f"{where}[{i}]: {size} bytes past the end of the body")
        sections.append(data[offset:offset + size])
        offset += size
    if data is not None and offset != len(data):
        raise PayloadError("binary_length_mismatch",
                           f"{len(data) - offset} bytes after the tensors' binary_data_size")
    return sections


def binary_values(datatype: str, raw: memoryview, size: int, where: str) -> NDArray[Any]:
    """A tensor's bytes in the binary extension -> the flat array its JSON form would give:
    floats as float64, integers as int64 (UINT64 past int64 as uint64), BOOL as booleans, BYTES
    as strings (UTF-8; other bytes cannot be JSON strings either: ``bytes_not_utf8``). Bytes
    that do not hold ``size`` elements are ``binary_size_mismatch``."""
    if datatype == "BYTES":
        return _binary_strings(raw, size, where)
    if datatype == "BOOL":
        width, wire, target = 1, "<u1", None
    elif datatype == "BF16":  # the upper half of an IEEE float32
        width, wire, target = 2, "<u2", None
    else:
        wire, target = _BINARY_DTYPES[datatype]
        width = np.dtype(wire).itemsize
    if len(raw) != size * width:
        raise PayloadError("binary_size_mismatch",
                           f"{where}: {len(raw)} bytes for {size} {datatype} elements")
    values = np.frombuffer(raw, dtype=wire)
    if datatype == "BOOL":
        if size and int(values.max()) > 1:
            raise PayloadError("bad_tensor_data", f"{where}: BOOL bytes other than 0 and 1")
        return values.astype(np.bool_)
    if datatype == "BF16":
        return (values.astype("<u4") << 16).view("<f4").astype(np.float64)
    if target is None:  # UINT64: as JSON integers decode, int64 while every value fits
        return values.astype(np.int64) if not size or int(values.max()) < 2**63 else values.astype(np.uint64)
    return values.astype(target)


def _binary_strings(raw: memoryview, size: int, where: str) -> NDArray[Any]:
    if size * 4 > len(raw):  # every element has its 4-byte length
        raise PayloadError("binary_size_mismatch",
                           f"{where}: {len(raw)} bytes cannot hold {size} BYTES elements")
    out = np.empty(size, dtype=object)
    end, pos, count = len(raw), 0, 0
    try:
        while pos < end:
            if pos + 4 > end or count >= size:
                break
            length = int.from_bytes(raw[pos:pos + 4], "little")
            pos += 4
            if pos + length > end:
                break
            out[count] = str(raw[pos:pos + length], "utf-8")
            pos += length
            count += 1
    except UnicodeDecodeError:
        raise PayloadError("bytes_not_utf8", f"{where}: a BYTES element is not UTF-8 text") from None
    if pos != end or count != size:
        raise PayloadError("binary_size_mismatch",
                           f"{where}: BYTES elements do not fill binary_data_size for {size} elements")
    return out


_FLOAT_DATATYPES = frozenset(("FP16", "FP32", "FP64", "BF16"))


def plain_float_tensor(t: Any) -> tuple[str | None, int, int, list[float]] | None:
    """``(name, rows, values per row, data)`` for a float tensor sent the common way — flat
    ``data`` of JSON floats filling a ``[rows, ...]`` shape, of a content type read as it stands — else None.
    Such a tensor needs no NumPy: for single-row requests NumPy's per-call cost was most of the
    analysis."""
    if not isinstance(t, dict):
        return None
    shape, data, datatype = t.get("shape"), t.get("data"), t.get("datatype")
    if not isinstance(datatype, str) or datatype not in _FLOAT_DATATYPES:
        return None
    parameters = t.get("parameters")
    if parameters and not (isinstance(parameters, dict) and _read_as_is(parameters.get("content_type"))):
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


def tensor_columns(t: Any, where: str, binary: memoryview | None = None
                   ) -> tuple[str | None, int, list[Column]]:
    """An input tensor -> (name, rows, one column per position): ``[n]`` and ``[n, 1]`` give one
    column, ``[n, k]`` k columns (a 2-D tensor holds k features side by side). ``binary``: its
    bytes in a binary extension message."""
    plain = plain_float_tensor(t) if binary is None else None
    if plain is not None:
        name, rows, width, data = plain
        return name, rows, [data] if width == 1 else [data[j::width] for j in range(width)]
    name, arr = tensor(t, where, binary)
    rows = rows_of(arr)
    values = arr.reshape(rows, math.prod(arr.shape[1:])) if arr.ndim else arr.reshape(1, 1)
    return name, rows, list(values.T)  # one view per column


def tensor_rows(t: Any, where: str, binary: memoryview | None = None) -> tuple[str | None, int, Column]:
    """An output tensor -> (name, rows, its values per row): see :func:`per_row`."""
    plain = plain_float_tensor(t) if binary is None else None
    if plain is not None:
        name, rows, width, data = plain
        return name, rows, data if width == 1 else [data[r * width:(r + 1) * width] for r in range(rows)]
    name, arr = tensor(t, where, binary)
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
