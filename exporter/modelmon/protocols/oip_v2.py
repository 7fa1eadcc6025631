"""Open Inference Protocol (KServe V2, Triton, MLServer, Seldon V2): named ``inputs`` tensors
with ``shape``, ``datatype`` and flat or nested ``data``; request ``id``; response ``outputs``.

Requests and responses in Triton's and KServe's binary tensor data extension
(https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md,
what ``tritonclient`` and KServe's ``InferenceRESTClient`` send for NumPy inputs by default) arrive
as :class:`~.base.BinaryBody`: the JSON object is read as above, and the values of every tensor
with ``parameters.binary_data_size`` come from the bytes after it, giving the same columns as the
JSON form of the same values.
"""

from __future__ import annotations

from typing import Any

from .base import (
    BinaryBody,
    Extracted,
    PayloadError,
    binary_sections,
    request_id,
    tensor_columns,
    tensor_rows,
)


def extract(request: Any, response: Any) -> Extracted:
    binary = None
    if isinstance(request, BinaryBody):
        if request.error is not None:
            raise PayloadError(request.error)
        request, binary = request.header, request.data
    if not isinstance(request, dict):
        raise PayloadError("not_an_object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise PayloadError("no_inputs", "expected a non-empty 'inputs' list of tensors")
    sections = binary_sections(inputs, binary, "inputs")
    tensors = [tensor_columns(t, f"inputs[{i}]", sections[i]) for i, t in enumerate(inputs)]
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
    response_binary = None
    if isinstance(response, BinaryBody):
        if response.error is not None:
            out.error(response.error)
            return out
        response, response_binary = response.header, response.data
    if isinstance(response, dict):
        outputs_into(response.get("outputs"), out, response_binary)
    return out


def outputs_into(outputs: Any, out: Extracted, binary: memoryview | None = None) -> None:
    if outputs is None:
        return
    if not isinstance(outputs, list):
        out.error("bad_outputs")
        return
    try:
        sections = binary_sections(outputs, binary, "outputs")
    except PayloadError as exc:  # the outputs' bytes cannot be told apart
        out.error(exc.reason)
        return
    for i, t in enumerate(outputs):
        try:
            name, rows, values = tensor_rows(t, f"outputs[{i}]", sections[i])
        except PayloadError as exc:
            out.error(exc.reason)
            continue
        if rows != out.rows:
            out.error("prediction_count_mismatch")
            continue
        out.outputs[name or f"output_{i}"] = values
