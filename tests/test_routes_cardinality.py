"""Route templates and bounded label values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modelmon.config import RouteConfig
from modelmon.metrics.cardinality import OVERFLOW, BoundedLabelValues
from modelmon.proxy.routes import RouteMatch, RouteTable


@pytest.mark.parametrize(("path", "expected"), [
    ("/v2/models/iris/infer", RouteMatch("/v2/models/{model}/infer", "iris", True)),
    ("/v2/models/iris/versions/3/infer", RouteMatch("/v2/models/{model}/infer", "iris", True)),
    ("/v1/models/iris:predict", RouteMatch("/v1/models/{model}:predict", "iris", True)),
    ("/v1/models/iris/versions/2:predict", RouteMatch("/v1/models/{model}:predict", "iris", True)),
    ("/v1/models/iris:explain", RouteMatch("/v1/models/{model}:explain", "iris", False)),
    ("/v2/models/iris/ready", RouteMatch("/v2/models/{model}/ready", "iris", False)),
    ("/v2/models/iris", RouteMatch("/v2/models/{model}", "iris", False)),
    ("/invocations", RouteMatch("/invocations", None, True)),
    ("/api/v1.0/predictions", RouteMatch("/api/v1.0/predictions", None, True)),
    ("/v2/health/ready", RouteMatch("/v2/health/ready", None, False)),
    ("/some/random/path", RouteMatch("other", None, False)),
    ("/v2/models/a/b/c/d", RouteMatch("other", None, False)),
])
def test_builtin_routes(path: str, expected: RouteMatch) -> None:
    assert RouteTable().match(path) == expected


def test_configured_routes_come_first() -> None:
    table = RouteTable([
        RouteConfig(path=r"/score/(?P<model>[a-z]+)", name="/score/{model}"),
        RouteConfig(path=r"/v2/models/special/infer", name="special", model="sp", inference=False),
    ])
    assert table.match("/score/abc") == RouteMatch("/score/{model}", "abc", True)
    assert table.match("/v2/models/special/infer") == RouteMatch("special", "sp", False)
    assert table.match("/score/ABC") == RouteMatch("other", None, False)


@given(st.text(max_size=200))
def test_any_path_maps_to_a_bounded_template(path: str) -> None:
    templates = {"other", "/invocations", "/predict", "/api/v1.0/predictions", "/", "/ping", "/health",
                 "/v2", "/v1/models", "/v2/health/ready", "/v2/health/live",
                 "/v2/models/{model}/infer", "/v1/models/{model}:predict", "/v1/models/{model}:explain",
                 "/v2/models/{model}/ready", "/v2/models/{model}", "/v1/models/{model}"}
    assert RouteTable().match(path).route in templates


def test_bounded_label_values() -> None:
    labels = BoundedLabelValues(3, preset=["a"])
    assert [labels.get(v) for v in ["b", "c", "d", "a", "b", "e"]] == ["b", "c", OVERFLOW, "a", "b", OVERFLOW]
    assert len(labels) == 3


@given(st.lists(st.text(max_size=80), max_size=300))
def test_bounded_label_values_never_exceed_cap(values: list[str]) -> None:
    labels = BoundedLabelValues(5)
    seen = {labels.get(v) for v in values}
    assert len(seen - {OVERFLOW}) <= 5
    assert all(v == OVERFLOW or (0 < len(v) <= 63 and " " not in v) for v in seen)
