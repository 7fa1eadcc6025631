"""From payloads to feature columns: pushed records, KServe V1 and Open Inference Protocol V2.

Columns are keyed by the profile's feature names. Positional inputs (rows as lists, a 2-D
tensor) map to the profile's input features in profile order; named inputs (rows as objects,
one tensor per feature) map by name. Predictions map to the profile's output features. Nothing
here raises on odd payloads: what cannot be mapped is counted in ``Batch.schema_errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .drift.columns import Batch
from .profile import Feature


class FeatureMap:
    """The names the payload values are mapped to, taken from a profile."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.inputs = [f.name for f in features if f.role == "input"]
        self.outputs = [f.name for f in features if f.role == "output"]


def _rows_from_dicts(rows: list[dict[str, Any]], names: list[str], batch: Batch) -> None:
    for name in names:
        present = [r[name] for r in rows if name in r]
        batch.columns[name] = present
        if len(present) < len(rows):
            batch.absent[name] = len(rows) - len(present)


def _rows_from_lists(rows: list[Any], names: list[str], batch: Batch) -> None:
    width = len(names)
    good = [r for r in rows if isinstance(r, list) and len(r) == width]
    if len(good) < len(rows):
        batch.schema_errors["row_length_mismatch"] = len(rows) - len(good)
    if not good:
        return
    for i, name in enumerate(names):
        batch.columns[name] = [r[i] for r in good]
    # Rows of the wrong shape carry no usable values: count them as absent for every feature.
    if len(good) < len(rows):
        for name in names:
            batch.absent[name] = len(rows) - len(good)


def records_batch(records: list[dict[str, Any]], fmap: FeatureMap) -> Batch:
    """Pushed records: ``features`` objects and optional ``prediction`` (scalar or object)."""
    batch = Batch(len(records))
    _rows_from_dicts([r["features"] for r in records], fmap.inputs, batch)
    if fmap.outputs:
        predictions = [r["prediction"] for r in records if "prediction" in r]
        _predictions(predictions, fmap, batch)
        if len(predictions) < len(records):
            for name in fmap.outputs:
                batch.absent[name] = batch.absent.get(name, 0) + len(records) - len(predictions)
    return batch


def _predictions(values: list[Any], fmap: FeatureMap, batch: Batch) -> None:
    if not values:
        return
    if all(isinstance(v, dict) for v in values):
        _rows_from_dicts(values, fmap.outputs, batch)
        return
    batch.columns[fmap.outputs[0]] = values


def request_batch(payload: Any, response: Any, fmap: FeatureMap) -> Batch | None:
    """A proxied inference call (KServe V1 or Open Inference Protocol V2), or None if the payload
    is not recognised."""
    if not isinstance(payload, dict):
        return None
    if "instances" in payload and isinstance(payload["instances"], list):
        rows = payload["instances"]
        batch = Batch(len(rows))
        if rows and all(isinstance(r, dict) for r in rows):
            _rows_from_dicts(rows, fmap.inputs, batch)
        else:
            _rows_from_lists(rows, fmap.inputs, batch)
        if fmap.outputs and isinstance(response, dict) and isinstance(response.get("predictions"), list):
            preds = response["predictions"]
            if len(preds) == len(rows):
                _predictions(preds, fmap, batch)
            else:
                batch.schema_errors["prediction_count_mismatch"] = 1
        return batch
    inputs = payload.get("inputs")
    if isinstance(inputs, list) and inputs and all(isinstance(t, dict) for t in inputs):
        return _v2_batch(inputs, response, fmap)
    return None


def _tensor(t: dict[str, Any]) -> np.ndarray | None:
    shape = t.get("shape")
    data = t.get("data")
    if not isinstance(shape, list) or not isinstance(data, list):
        return None
    try:
        arr = np.asarray(data, dtype=object if t.get("datatype") == "BYTES" else np.float64)
        return arr.reshape([int(s) for s in shape])
    except (TypeError, ValueError):
        return None


def _v2_batch(inputs: list[dict[str, Any]], response: Any, fmap: FeatureMap) -> Batch | None:
    tensors = [(t.get("name"), _tensor(t)) for t in inputs]
    if any(arr is None or arr.ndim == 0 for _, arr in tensors):
        batch = Batch(0)
        batch.schema_errors["bad_tensor"] = 1
        return batch
    arrays = [(name, arr) for name, arr in tensors if arr is not None]
    rows = int(arrays[0][1].shape[0])
    batch = Batch(rows)
    by_name = {name: arr for name, arr in arrays if name in fmap.inputs}
    if by_name:
        for name, arr in by_name.items():
            if arr.shape[0] == rows:
                batch.columns[name] = arr.reshape(rows, -1)[:, 0]
        for name in fmap.inputs:
            if name not in by_name:
                batch.absent[name] = rows
    elif len(arrays) == 1 and arrays[0][1].ndim == 2 and arrays[0][1].shape[1] == len(fmap.inputs):
        matrix = arrays[0][1]
        for i, name in enumerate(fmap.inputs):
            batch.columns[name] = matrix[:, i]
    else:
        batch.schema_errors["tensor_shape_mismatch"] = 1
        return batch
    if fmap.outputs and isinstance(response, dict) and isinstance(response.get("outputs"), list):
        outputs = [o for o in response["outputs"] if isinstance(o, dict)]
        named = {o.get("name"): _tensor(o) for o in outputs}
        for name in fmap.outputs:
            out = named.get(name)
            if out is None and len(fmap.outputs) == 1 and outputs:
                out = _tensor(outputs[0])
            if out is not None and out.ndim >= 1 and out.shape[0] == rows:
                batch.columns[name] = out.reshape(rows, -1)[:, 0]
    return batch
