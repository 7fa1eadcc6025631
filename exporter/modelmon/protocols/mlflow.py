"""MLflow scoring server (``/invocations``): ``dataframe_split`` ({columns, data}),
``dataframe_records`` (rows as objects), ``instances`` or ``inputs`` (tensor input); response
``{"predictions": [...]}`` (MLflow 2) or a bare list (MLflow 1)."""

from __future__ import annotations

from typing import Any

from . import kserve_v1
from .base import Extracted, PayloadError, columns_from_dicts, columns_from_lists


def extract(request: Any, response: Any) -> Extracted:
    if not isinstance(request, dict):
        raise PayloadError("not_an_object")
    if "dataframe_split" in request:
        split = request["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise PayloadError("bad_dataframe_split", "expected {columns, data}")
        rows = split["data"]
        out = Extracted(len(rows))
        columns_from_lists(rows, out)
        names = split.get("columns")
        if isinstance(names, list) and out.positional is not None and rows:
            if len(names) != len(out.positional):
                out.error("column_count_mismatch")
            else:
                out.inputs = {str(n): col for n, col in zip(names, out.positional, strict=True)}
                if out.positional_absent:
                    out.absent = {str(n): out.positional_absent for n in names}
                out.positional = None
                out.positional_absent = 0
    elif "dataframe_records" in request:
        rows = request["dataframe_records"]
        if not isinstance(rows, list):
            raise PayloadError("bad_dataframe_records")
        out = Extracted(len(rows))
        columns_from_dicts(rows, out)
    elif "instances" in request or "inputs" in request:
        return kserve_v1.extract(request, response)
    else:
        raise PayloadError("no_mlflow_input",
                           "expected dataframe_split, dataframe_records, instances or inputs")
    kserve_v1.predictions_into(response, out, "predictions")
    return out
