"""Route templates: which paths are inference calls, and which model they address.

The ``route`` label is always a template (``/v2/models/{model}/infer``), never the raw path,
so label cardinality stays bounded whatever clients send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import RouteConfig

OTHER_ROUTE = "other"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: str
    model: str | None
    inference: bool


# (regex, template, is inference) for the protocols modelmon knows: KServe V1 / TF Serving,
# Open Inference Protocol (KServe V2, Triton, MLServer), MLflow and Seldon Core V1.
_BUILTIN: tuple[tuple[str, str, bool], ...] = (
    (r"/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/infer", "/v2/models/{model}/infer", True),
    (r"/v1/models/(?P<model>[^/:]+)(?:/versions/[^/:]+)?:predict", "/v1/models/{model}:predict", True),
    (r"/v1/models/(?P<model>[^/:]+)(?:/versions/[^/:]+)?:explain", "/v1/models/{model}:explain", False),
    (r"/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?/ready", "/v2/models/{model}/ready", False),
    (r"/v2/models/(?P<model>[^/]+)(?:/versions/[^/]+)?", "/v2/models/{model}", False),
    (r"/v1/models/(?P<model>[^/:]+)(?:/versions/[^/:]+)?", "/v1/models/{model}", False),
    (r"/api/v1\.0/predictions", "/api/v1.0/predictions", True),
)
_STATIC: dict[str, tuple[str, bool]] = {
    "/invocations": ("/invocations", True),  # MLflow scoring server
    "/predict": ("/predict", True),
    "/v2/health/ready": ("/v2/health/ready", False),
    "/v2/health/live": ("/v2/health/live", False),
    "/v2": ("/v2", False),
    "/v1/models": ("/v1/models", False),
    "/ping": ("/ping", False),
    "/health": ("/health", False),
    "/": ("/", False),
}


class RouteTable:
    """Matches request paths to route templates; configured routes take precedence."""

    def __init__(self, extra: Iterable[RouteConfig] = ()) -> None:
        self._extra = [
            (re.compile(r.path), r.name, r.model, r.inference) for r in extra
        ]
        self._builtin = [(re.compile(rx), tpl, inf) for rx, tpl, inf in _BUILTIN]

    def match(self, path: str) -> RouteMatch:
        for regex, name, model, inference in self._extra:
            m = regex.fullmatch(path)
            if m:
                return RouteMatch(name, m.groupdict().get("model") or model, inference)
        static = _STATIC.get(path)
        if static is not None:
            return RouteMatch(static[0], None, static[1])
        if path.startswith(("/v1/", "/v2/", "/api/")):
            for regex, template, inference in self._builtin:
                m = regex.fullmatch(path)
                if m:
                    return RouteMatch(template, m.groupdict().get("model"), inference)
        return RouteMatch(OTHER_ROUTE, None, False)
