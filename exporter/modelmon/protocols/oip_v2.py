"""Open Inference Protocol (KServe V2, Triton, MLServer, Seldon V2): named ``inputs`` tensors
with ``shape``, ``datatype`` and flat or nested ``data``; request ``id``; response ``outputs``."""

from __future__ import annotations

from typing import Any

from .base import Extracted, PayloadError, request_id, tensor_columns, tensor_rows


def extract(request: Any, response: Any) -> Extracted:
    if not isinstance(request, dict):
        raise PayloadError("not_an_object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise PayloadError("no_inputs", "expected a non-empty 'inputs' list of tensors")
    tensors = [tensor_columns(t, f"inputs[{i}]") for i, t in enumerate(inputs)]
    rows = tensors[0][1]
    if any(n != rows for _, n, _ in tensors):
        raise PayloadError("tensor_batch_mismatch", "input tensors differ in batch size")
    out = Extracted(rows)
    positional: list[Any] = []
    for i, (name, _, columns) in enumerate(tensors):
        if len(columns) == 1:
            out.inputs[name or f"input_{i}"] = columns[0]
        else:  # a [n, k] tensor holds k features side by side
            positional.extend(columns)
    if positional:
        out.positional = positional
    out.request_id = request_id(request.get("id"))
    if isinstance(response, dict):
        outputs_into(response.get("outputs"), out)
    return out


def outputs_into(outputs: Any, out: Extracted) -> None:
    if outputs is None:
        return
    if not isinstance(outputs, list):
        out.error("bad_outputs")
        return
    for i, t in enumerate(outputs):
        try:
            name, rows, values = tensor_rows(t, f"outputs[{i}]")
        except PayloadError as exc:
            out.error(exc.reason)
            continue
        if rows != out.rows:
            out.error("prediction_count_mismatch")
            continue
        out.outputs[name or f"output_{i}"] = values
