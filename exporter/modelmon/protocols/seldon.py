"""Seldon Core V1: ``{"data": {"names": [...], "ndarray": [[...]]}}`` or
``{"data": {"names": [...], "tensor": {"shape": [...], "values": [...]}}}``; the response has
the same shape (its ``names`` name the output columns, e.g. the classes of a probability
vector).

Other forms are payload errors: ``binData``, ``strData`` and ``jsonData`` carry no table
(``no_data``), nor does a ``data`` holding a ``tftensor`` (``no_ndarray``); ``tensor.values``
other than numbers (a repeated double in prediction.proto) are ``bad_tensor_data``, not nulls.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Extracted, PayloadError, columns_from_lists, request_id


def _table(data: Any, where: str) -> tuple[list[str] | None, list[Any]]:
    if not isinstance(data, dict):
        raise PayloadError("no_data", f"{where}: expected a 'data' object")
    names = data.get("names")
    names = [str(n) for n in names] if isinstance(names, list) else None
    if isinstance(data.get("ndarray"), list):
        rows = data["ndarray"]
    elif isinstance(data.get("tensor"), dict):
        t = data["tensor"]
        shape, values = t.get("shape"), t.get("values")
        if not (isinstance(shape, list) and isinstance(values, list) and shape
                and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise PayloadError("bad_tensor", f"{where}: tensor needs shape and values")
        if math.prod(shape) != len(values):
            raise PayloadError("tensor_shape_mismatch")
        if not all(type(v) in (int, float) for v in values):  # a repeated double: no strings or nulls
            raise PayloadError("bad_tensor_data", f"{where}: tensor values must be numbers")
        try:
            array = np.asarray(values, dtype=np.float64)
            rows = array.reshape(shape[0], math.prod(shape[1:])).tolist()
        except (TypeError, ValueError, OverflowError):
            raise PayloadError("bad_tensor_data") from None
    else:
        raise PayloadError("no_ndarray", f"{where}: expected ndarray or tensor")
    return names, rows


def extract(request: Any, response: Any) -> Extracted:
    if not isinstance(request, dict):
        raise PayloadError("not_an_object")
    names, rows = _table(request.get("data"), "request")
    out = Extracted(len(rows))
    columns_from_lists(rows, out)
    if names is not None and out.positional is not None and len(names) == len(out.positional):
        out.inputs = dict(zip(names, out.positional, strict=True))
        if out.positional_absent:
            out.absent = dict.fromkeys(names, out.positional_absent)
        out.positional = None
        out.positional_absent = 0
    puid = request.get("meta", {}).get("puid") if isinstance(request.get("meta"), dict) else None
    out.request_id = request_id(puid) if isinstance(puid, str) else None
    if isinstance(response, dict) and "data" in response:
        try:
            out_names, out_rows = _table(response["data"], "response")
        except PayloadError as exc:
            out.error(exc.reason)
            return out
        if len(out_rows) != out.rows:
            out.error("prediction_count_mismatch")
        elif out_rows and all(isinstance(r, list) and len(r) > 1 for r in out_rows):
            out.outputs["prediction"] = out_rows  # a probability vector per row
            out.class_names = out_names
        else:
            out.outputs["prediction"] = [r[0] if isinstance(r, list) and r else r for r in out_rows]
    return out
