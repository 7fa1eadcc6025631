"""A generic JSON adapter for custom servers, configured with JSON paths.

Paths are a small JSONPath subset: ``$`` the document, ``.key`` or ``['key']`` a member,
``[n]`` an element, ``[*]`` every element (mapping the rest of the path over them). Features may
select rows (objects or lists) or an object of columns; predictions one value (or vector) per
row; the request id a string or number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import kserve_v1
from .base import Extracted, PayloadError, request_id

_TOKEN = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+|\*)\]|\['([^']*)'\]")


class JsonPath:
    def __init__(self, expression: str) -> None:
        if not expression.startswith("$"):
            raise ValueError(f"JSON path must start with '$': {expression!r}")
        steps: list[str | int] = []
        pos = 1
        while pos < len(expression):
            m = _TOKEN.match(expression, pos)
            if m is None:
                raise ValueError(f"JSON path {expression!r}: cannot parse at {expression[pos:]!r}")
            key, index, quoted = m.groups()
            if key is not None or quoted is not None:
                steps.append(key if key is not None else quoted)
            elif index == "*":
                steps.append("*")
            else:
                steps.append(int(index))
            pos = m.end()
        self.expression = expression
        self._steps = steps

    def find(self, document: Any) -> Any:
        """The selected value, or None if the path does not exist."""
        return self._walk(document, self._steps)

    def _walk(self, node: Any, steps: list[str | int]) -> Any:
        for i, step in enumerate(steps):
            if step == "*":
                if not isinstance(node, list):
                    return None
                return [self._walk(item, steps[i + 1:]) for item in node]
            if isinstance(step, int):
                if not isinstance(node, list) or step >= len(node):
                    return None
                node = node[step]
            else:
                if not isinstance(node, dict) or step not in node:
                    return None
                node = node[step]
        return node


@dataclass(frozen=True)
class GenericSpec:
    features: JsonPath
    predictions: JsonPath | None = None
    request_id: JsonPath | None = None


def extract(request: Any, response: Any, spec: GenericSpec) -> Extracted:
    features = spec.features.find(request)
    if isinstance(features, list):
        out = Extracted(len(features))
        kserve_v1.rows_into(features, out)
    elif isinstance(features, dict):
        out = kserve_v1.extract({"inputs": features}, None)
    else:
        raise PayloadError("features_not_found", f"{spec.features.expression} selects nothing")
    if spec.request_id is not None:
        out.request_id = request_id(spec.request_id.find(request))
    if spec.predictions is not None and response is not None:
        found = spec.predictions.find(response)
        if found is None:
            out.error("no_predictions")
        else:
            kserve_v1.predictions_into(found, out, "predictions")
    return out
