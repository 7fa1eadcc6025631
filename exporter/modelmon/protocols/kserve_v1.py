"""KServe V1 / TensorFlow Serving REST: ``{"instances": [...]}`` (rows as lists or objects) or
``{"inputs": ...}`` (columnar: an object of columns, or a list of rows); response
``{"predictions": [...]}`` (scalars, probability vectors, or objects of named outputs).

Binary values sent as ``{"b64": "..."}`` objects (TensorFlow Serving's encoding,
https://www.tensorflow.org/tfx/serving/api_rest#encoding_binary_values) are not read: a payload
error ``base64_value``."""

from __future__ import annotations

from typing import Any

from .base import (
    ABSENT,
    Extracted,
    PayloadError,
    columns_from_dicts,
    columns_from_lists,
    reject_base64,
    request_id,
)


def extract(request: Any, response: Any) -> Extracted:
    if not isinstance(request, dict):
        raise PayloadError("not_an_object")
    if isinstance(request.get("instances"), list):
        rows = request["instances"]
        out = Extracted(len(rows))
        rows_into(rows, out)
    elif "inputs" in request:
        inputs = request["inputs"]
        if isinstance(inputs, dict):  # columnar: {"feature": [v, v, ...]}
            lengths = {len(v) if isinstance(v, list) else 1 for v in inputs.values()}
            if len(lengths) > 1:
                raise PayloadError("column_length_mismatch")
            n = lengths.pop() if lengths else 0
            out = Extracted(n)
            for name, values in inputs.items():
                out.inputs[str(name)] = values if isinstance(values, list) else [values]
            reject_base64(out)
        elif isinstance(inputs, list):
            out = Extracted(len(inputs))
            rows_into(inputs, out)
        else:
            raise PayloadError("bad_inputs")
    else:
        raise PayloadError("no_instances", "expected 'instances' or 'inputs'")
    out.request_id = request_id(request.get("id"))
    if isinstance(response, dict) and "predictions" not in response and "outputs" in response:
        outputs_into(response["outputs"], out)  # TF Serving's answer to a columnar request
    else:
        predictions_into(response, out, "predictions")
    return out


def rows_into(rows: list[Any], out: Extracted) -> None:
    if rows and all(isinstance(r, dict) for r in rows):
        columns_from_dicts(rows, out)
    else:
        columns_from_lists(rows, out)
    reject_base64(out)


def predictions_into(response: Any, out: Extracted, key: str) -> None:
    """``{key: [...]}`` or a bare list -> output columns, checked against the row count."""
    if response is None:
        return
    predictions = response.get(key) if isinstance(response, dict) else response
    if not isinstance(predictions, list):
        out.error("no_predictions")
        return
    if len(predictions) != out.rows:
        out.error("prediction_count_mismatch")
        return
    if predictions and all(isinstance(p, dict) for p in predictions):
        holder = Extracted(len(predictions))
        columns_from_dicts(predictions, holder)
        for name, values in holder.inputs.items():
            out.outputs[name] = [None if v is ABSENT else v for v in values]
        return
    out.outputs["prediction"] = predictions


def outputs_into(outputs: Any, out: Extracted) -> None:
    """TF Serving columnar response: ``outputs`` is the single output's values, or an object of
    named output columns."""
    if not isinstance(outputs, dict):
        predictions_into(outputs, out, "outputs")
        return
    for name, values in outputs.items():
        if not isinstance(values, list) or len(values) != out.rows:
            out.error("prediction_count_mismatch")
            continue
        out.outputs[str(name)] = values
