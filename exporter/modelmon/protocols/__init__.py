"""Protocol adapters: from inference payloads (and pushed records) to feature and output columns.

The protocol is taken from the model's config (``models[].protocol``), else from the route
(``/v2/models/{model}/infer`` is the Open Inference Protocol, ``/v1/models/{model}:predict``
KServe V1, ``/invocations`` MLflow, ``/api/v1.0/predictions`` Seldon), else sniffed from the
payload's keys where that is unambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..config import PROTOCOLS
from . import kserve_v1, mlflow, oip_v2, seldon
from .base import ABSENT, Batch, BinaryBody, Column, Extracted, PayloadError, columns_from_dicts, request_id
from .generic import GenericSpec, JsonPath
from .generic import extract as generic_extract

ROUTE_PROTOCOLS = {
    "/v2/models/{model}/infer": "oip_v2",
    "/v1/models/{model}:predict": "kserve_v1",
    "/invocations": "mlflow",
    "/api/v1.0/predictions": "seldon",
}
_ADAPTERS: dict[str, Callable[[Any, Any], Extracted]] = {
    "kserve_v1": kserve_v1.extract, "oip_v2": oip_v2.extract, "mlflow": mlflow.extract,
    "seldon": seldon.extract,
}
MAX_PROBABILITY_SUFFIX = "_max_probability"

__all__ = ["ABSENT", "PROTOCOLS", "BinaryBody", "Extracted", "Extractor", "FeatureMapper", "GenericSpec",
           "JsonPath", "PayloadError", "records_extracted", "sniff"]


def sniff(payload: Any) -> str | None:
    """The protocol a request body looks like, or None."""
    if isinstance(payload, BinaryBody):
        payload = payload.header
    if not isinstance(payload, dict):
        return None
    if "dataframe_split" in payload or "dataframe_records" in payload:
        return "mlflow"
    if "instances" in payload:
        return "kserve_v1"
    inputs = payload.get("inputs")
    if isinstance(inputs, list) and inputs and all(
            isinstance(t, dict) and "datatype" in t and "shape" in t for t in inputs):
        return "oip_v2"
    if inputs is not None:
        return "kserve_v1"
    data = payload.get("data")
    if isinstance(data, dict) and ("ndarray" in data or "tensor" in data):
        return "seldon"
    return None


class Extractor:
    """Extracts one model's proxied payloads; never raises anything but PayloadError."""

    def __init__(self, protocol: str = "auto", generic: GenericSpec | None = None) -> None:
        if protocol == "generic" and generic is None:
            raise ValueError("the generic protocol needs JSON paths")
        self.protocol = protocol
        self._generic = generic

    def extract(self, route: str, request: Any, response: Any) -> Extracted:
        protocol = self.protocol
        if protocol == "auto":  # the route decides where it is unambiguous, else the payload
            protocol = ROUTE_PROTOCOLS.get(route) or sniff(request) or ""
        try:
            if isinstance(request, BinaryBody) and request.error is not None:
                raise PayloadError(request.error)
            if protocol != "oip_v2" and (isinstance(request, BinaryBody) or isinstance(response, BinaryBody)):
                # the binary tensor extension belongs to the Open Inference Protocol
                raise PayloadError("binary_unsupported_protocol",
                                   f"binary tensors under {protocol or 'auto'}")
            if protocol == "generic":
                assert self._generic is not None
                return generic_extract(request, response, self._generic)
            adapter = _ADAPTERS.get(protocol)
            if adapter is None:
                raise PayloadError("unrecognised_payload")
            return adapter(request, response)
        except PayloadError:
            raise
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError,
                OverflowError) as exc:
            # Defence in depth: a payload shape the adapter did not foresee is a payload error.
            raise PayloadError("malformed_payload", f"{type(exc).__name__}: {exc}") from None


def records_extracted(records: Sequence[dict[str, Any]]) -> Extracted:
    """Pushed records (validated by the push API) -> columns; ``id`` per record."""
    out = Extracted(len(records))
    columns_from_dicts([r["features"] for r in records], out)
    predictions = [r.get("prediction") for r in records]
    if any(isinstance(p, dict) for p in predictions):
        holder = Extracted(len(records))
        columns_from_dicts([p if isinstance(p, dict) else {} for p in predictions], holder)
        out.outputs = {k: [None if v is ABSENT else v for v in col] for k, col in holder.inputs.items()}
    elif any(p is not None for p in predictions):
        out.outputs["prediction"] = predictions
    out.row_ids = [request_id(r.get("id")) for r in records]
    return out


def _argmax(vector: Any, class_names: Sequence[str] | None) -> tuple[Any, float | None]:
    # Plain Python: probability vectors are short, and NumPy's per-call cost would dominate.
    if not isinstance(vector, list) or not vector:
        return None, None
    try:
        values = [float(v) for v in vector]
    except (TypeError, ValueError, OverflowError):
        return None, None
    if not all(math.isfinite(v) for v in values):
        return None, None
    best = max(range(len(values)), key=values.__getitem__)  # the first of equal maxima
    label: Any = class_names[best] if class_names and best < len(class_names) else best
    return label, values[best]


class FeatureMapper:
    """Maps extracted columns to one model's feature names (from the profile or config) and
    derives outputs: a probability vector per row becomes its argmax class (``<output>``) and
    its maximum probability (``<output>_max_probability``)."""

    def __init__(self, input_names: Sequence[str], output_names: Sequence[str],
                 class_names: Sequence[str] | None = None, prediction_output: str | None = None) -> None:
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.class_names = list(class_names) if class_names else None
        self.prediction_output = prediction_output

    def outputs(self, ex: Extracted) -> dict[str, Column]:
        """Output columns with probability vectors resolved (one value per row)."""
        derived: dict[str, Column] = {}
        classes = ex.class_names or self.class_names
        for name, values in ex.outputs.items():
            seq = values.tolist() if isinstance(values, np.ndarray) else values
            if any(isinstance(v, list) for v in seq):
                pairs = [_argmax(v, classes) for v in seq]
                derived[name] = [p[0] for p in pairs]
                derived[name + MAX_PROBABILITY_SUFFIX] = [math.nan if p[1] is None else p[1]
                                                          for p in pairs]
            else:
                derived[name] = seq
        # One unnamed output and one profiled output: they are the same thing.
        if len(self.output_names) == 1 and self.output_names[0] not in derived and derived:
            first = next(iter(derived))
            derived[self.output_names[0]] = derived[first]
        return derived

    def prediction(self, outputs: dict[str, Column]) -> Column | None:
        """The column performance is measured on."""
        if self.prediction_output is not None:
            return outputs.get(self.prediction_output)
        for name in self.output_names:
            if name in outputs:
                return outputs[name]
        return next(iter(outputs.values()), None)

    def named_inputs(self, ex: Extracted) -> dict[str, Column]:
        """Row-aligned input columns by feature name (positional ones named from the profile
        or ``models[].feature_names``); ABSENT marks rows without the feature."""
        columns = dict(ex.inputs)
        if ex.positional and len(ex.positional) == len(self.input_names):
            for name, column in zip(self.input_names, ex.positional, strict=True):
                columns.setdefault(name, column)
        return columns

    def batch(self, ex: Extracted, outputs: dict[str, Column]) -> Batch:
        """The drift engine's view: values of the rows that had each feature, and absent counts."""
        batch = Batch(ex.rows, schema_errors=dict(ex.errors))
        if ex.positional and ex.rows and len(ex.positional) != len(self.input_names):
            batch.schema_errors["feature_count_mismatch"] = ex.rows
        positional = set(self.input_names) - set(ex.inputs) if ex.positional else set()
        for name, column in self.named_inputs(ex).items():
            missing = ex.positional_absent if name in positional else ex.absent.get(name, 0)
            if missing:
                seq = column.tolist() if isinstance(column, np.ndarray) else column
                column = [v for v in seq if v is not ABSENT]
                batch.absent[name] = missing
            batch.columns[name] = column
        for name in self.output_names:
            values = outputs.get(name)
            if values is None:
                continue
            seq = values.tolist() if isinstance(values, np.ndarray) else values
            present = [v for v in seq if v is not None]
            batch.columns[name] = present
            batch.absent.pop(name, None)
            if len(present) < len(seq):
                batch.absent[name] = len(seq) - len(present)
        return batch
