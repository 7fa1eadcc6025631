"""Protocol adapters: golden payloads from the published specs, and property-based fuzzing.

Golden fixtures live in ``tests/fixtures/protocols/<protocol>/<case>.json``::

    {"description": ..., "source": "<spec URL or doc name>",
     "route": ...,            # auto/ only: the route template (or raw route) the payload came on
     "generic_spec": {...},   # generic/ only: the JSON paths (features, predictions, request_id)
     "regression": ...,       # present where the fixture pins a bug that was found and fixed
     "request": ..., "response": ...,
     "expected": {"rows": n, "inputs": {...}, "absent": {...}, "positional": [...],
                  "positional_absent": n, "outputs": {...}, "class_names": [...],
                  "request_id": ..., "row_ids": [...], "errors": {...}}
               | {"error": "<PayloadError reason>"},
     "mapper": {"input_names": [...], "output_names": [...], "class_names": [...],
                "outputs": {...}, "batch": {"columns": {...}, "absent": {...}, "schema_errors": {...}}}}

Fields left out of ``expected`` must have their empty default (so the comparison is exact);
``"$ABSENT"`` stands for the ABSENT marker; NaN compares equal to NaN; booleans only equal
booleans, and numbers compare by value (tensor integers come back as floats).
``records/`` fixtures hold a list of pushed records as ``request`` (``records_extracted``).

Fixtures with a ``regression`` note pin bugs these tests found (since fixed); the fuzz tests
marked ``# REGRESSION`` found the same bugs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelmon.drift.columns import Batch
from modelmon.protocols import (
    ABSENT,
    ROUTE_PROTOCOLS,
    Extracted,
    Extractor,
    FeatureMapper,
    GenericSpec,
    JsonPath,
    PayloadError,
    records_extracted,
)
from modelmon.protocols.base import V2_DTYPES

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "protocols"
FIXTURES = sorted(FIXTURE_DIR.glob("*/*.json"))
ABSENT_MARK = "$ABSENT"
ROUTE_OF = {protocol: route for route, protocol in ROUTE_PROTOCOLS.items()}
FIXTURE_PROTOCOLS = {"kserve_v1", "oip_v2", "mlflow", "seldon", "generic", "auto", "records"}
# Every field of Extracted with its empty default.
FIELDS: dict[str, Any] = {
    "rows": None, "inputs": {}, "absent": {}, "positional": None, "positional_absent": 0,
    "outputs": {}, "class_names": None, "request_id": None, "row_ids": None, "errors": {},
}


# --- comparison helpers -------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """NumPy arrays and scalars -> Python values, ABSENT -> "$ABSENT", recursively."""
    if value is ABSENT:
        return ABSENT_MARK
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def mismatch(actual: Any, expected: Any, path: str = "$") -> str | None:
    """Where ``actual`` differs from ``expected`` (None when equal): NaN == NaN, bool only
    equals bool, numbers compare exactly by value."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        if type(actual) is not type(expected) or actual != expected:
            return f"{path}: {actual!r} != expected {expected!r}"
        return None
    if _is_number(expected):
        if not _is_number(actual):
            return f"{path}: {actual!r} is not a number (expected {expected!r})"
        if isinstance(expected, float) and math.isnan(expected):
            return None if isinstance(actual, float) and math.isnan(actual) else f"{path}: {actual!r} != NaN"
        return None if actual == expected else f"{path}: {actual!r} != expected {expected!r}"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: {actual!r} is not an object"
        if set(actual) != set(expected):
            return f"{path}: keys {sorted(actual)} != expected {sorted(expected)}"
        for key in expected:
            found = mismatch(actual[key], expected[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{path}: {actual!r} is not a list"
        if len(actual) != len(expected):
            return f"{path}: length {len(actual)} != expected {len(expected)} ({actual!r})"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            found = mismatch(a, e, f"{path}[{i}]")
            if found:
                return found
        return None
    if type(actual) is not type(expected) or actual != expected:
        return f"{path}: {actual!r} != expected {expected!r}"
    return None


def as_plain(ex: Extracted) -> dict[str, Any]:
    return {name: plain(getattr(ex, name)) for name in FIELDS}


def batch_plain(batch: Batch) -> dict[str, Any]:
    return {"rows": batch.rows, "columns": plain(batch.columns), "absent": dict(batch.absent),
            "schema_errors": dict(batch.schema_errors)}


# --- invariants (shared by golden and fuzz tests) -----------------------------------------------

def count_absent(column: Any) -> int:
    return sum(1 for v in (column.tolist() if isinstance(column, np.ndarray) else column) if v is ABSENT)


def check_extracted(ex: Extracted) -> None:
    assert isinstance(ex, Extracted)
    assert isinstance(ex.rows, int) and ex.rows >= 0
    for name, column in ex.inputs.items():
        assert isinstance(name, str)
        assert len(column) == ex.rows, f"input {name!r}: {len(column)} values for {ex.rows} rows"
        assert count_absent(column) == ex.absent.get(name, 0), \
            f"input {name!r}: {count_absent(column)} ABSENT markers, absent count {ex.absent.get(name, 0)}"
    assert set(ex.absent) <= set(ex.inputs), f"absent counts for unknown inputs {set(ex.absent) - set(ex.inputs)}"
    assert all(isinstance(n, int) and n > 0 for n in ex.absent.values()), ex.absent
    assert isinstance(ex.positional_absent, int) and 0 <= ex.positional_absent <= ex.rows
    if ex.positional is not None:
        for i, column in enumerate(ex.positional):
            assert len(column) == ex.rows, f"positional[{i}]: {len(column)} values for {ex.rows} rows"
            assert count_absent(column) == ex.positional_absent, \
                f"positional[{i}]: {count_absent(column)} ABSENT markers, positional_absent {ex.positional_absent}"
    else:
        assert ex.positional_absent == 0
    for name, column in ex.outputs.items():
        assert isinstance(name, str)
        assert len(column) == ex.rows, f"output {name!r}: {len(column)} values for {ex.rows} rows"
        assert count_absent(column) == 0, f"output {name!r} holds ABSENT"
    for reason, count in ex.errors.items():
        assert isinstance(reason, str) and reason
        assert isinstance(count, int) and count > 0, f"error {reason!r} counted {count}"
    if ex.request_id is not None:
        assert isinstance(ex.request_id, str) and 0 < len(ex.request_id) <= 256, \
            f"request_id of {len(ex.request_id)} chars (ids are 1..256 chars, base.request_id)"
    if ex.row_ids is not None:
        assert len(ex.row_ids) == ex.rows


def check_mapped(ex: Extracted, outputs: dict[str, Any], batch: Batch) -> None:
    for name, column in outputs.items():
        assert len(column) == ex.rows, f"mapped output {name!r}: {len(column)} values for {ex.rows} rows"
    assert batch.rows == ex.rows
    for name, values in batch.columns.items():
        assert count_absent(values) == 0, f"batch column {name!r} holds ABSENT"
        absent = batch.absent.get(name, 0)
        assert len(values) + absent == ex.rows, \
            f"batch column {name!r}: {len(values)} values + {absent} absent != {ex.rows} rows"
    assert set(batch.absent) <= set(batch.columns), batch.absent
    assert all(n > 0 for n in batch.absent.values()), batch.absent
    assert all(isinstance(n, int) and n > 0 for n in batch.schema_errors.values()), batch.schema_errors


# --- golden fixtures ----------------------------------------------------------------------------

def load(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text())
    return fixture


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def generic_spec(paths: dict[str, str | None]) -> GenericSpec:
    def jp(key: str) -> JsonPath | None:
        expression = paths.get(key)
        return JsonPath(expression) if expression else None

    features = jp("features")
    assert features is not None
    return GenericSpec(features, jp("predictions"), jp("request_id"))


def run_fixture(fixture: dict[str, Any], protocol: str, by_route: bool = False) -> Extracted:
    request, response = fixture["request"], fixture["response"]
    if protocol == "records":
        return records_extracted(request)
    if protocol == "generic":
        return Extractor("generic", generic_spec(fixture["generic_spec"])).extract("/predict", request, response)
    if protocol == "auto":
        return Extractor("auto").extract(fixture["route"], request, response)
    if by_route:
        return Extractor("auto").extract(ROUTE_OF[protocol], request, response)
    return Extractor(protocol).extract("/unrouted", request, response)


def test_fixture_files_are_well_formed() -> None:
    assert FIXTURES, f"no fixtures under {FIXTURE_DIR}"
    found = {p.parent.name for p in FIXTURES}
    assert found == FIXTURE_PROTOCOLS, f"fixture directories {sorted(found)}"
    for path in FIXTURES:
        fixture = load(path)
        name = fixture_id(path)
        assert {"description", "source", "request", "response", "expected"} <= set(fixture), name
        assert fixture["description"] and fixture["source"], name
        expected = fixture["expected"]
        if "error" in expected:
            assert set(expected) == {"error"} and "mapper" not in fixture, name
        else:
            assert "rows" in expected and set(expected) <= set(FIELDS), f"{name}: {set(expected) - set(FIELDS)}"
        assert ("generic_spec" in fixture) == (path.parent.name == "generic"), name
        assert ("route" in fixture) == (path.parent.name == "auto"), name


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
def test_golden_fixture(path: Path) -> None:
    fixture = load(path)
    protocol = path.parent.name
    expected = fixture["expected"]
    bug = f"\nREGRESSION: {fixture['regression']}" if "regression" in fixture else ""
    try:
        ex = run_fixture(fixture, protocol)
    except PayloadError as exc:
        assert "error" in expected, f"unexpected PayloadError({exc.reason!r}): {exc}{bug}"
        assert exc.reason == expected["error"], f"PayloadError {exc.reason!r} != {expected['error']!r}{bug}"
        return
    except Exception as exc:  # anything but PayloadError is a failure worth showing
        pytest.fail(f"extraction raised {type(exc).__name__}: {exc}{bug}")
    assert "error" not in expected, f"expected PayloadError({expected['error']!r}), got {ex}{bug}"
    want = {name: expected.get(name, default) for name, default in FIELDS.items()}
    diff = mismatch(as_plain(ex), want)
    assert diff is None, f"{diff}\nactual: {as_plain(ex)}{bug}"
    check_extracted(ex)

    spec = fixture.get("mapper")
    if spec is None:
        return
    mapper = FeatureMapper(spec["input_names"], spec["output_names"], spec.get("class_names"),
                           spec.get("prediction_output"))
    try:
        outputs = mapper.outputs(ex)
        batch = mapper.batch(ex, outputs)
    except Exception as exc:
        pytest.fail(f"FeatureMapper raised {type(exc).__name__}: {exc}{bug}")
    diff = mismatch(plain(outputs), spec["outputs"], "$outputs")
    assert diff is None, f"{diff}\nactual outputs: {plain(outputs)}{bug}"
    want_batch = {"rows": ex.rows, "columns": spec["batch"]["columns"],
                  "absent": spec["batch"].get("absent", {}),
                  "schema_errors": spec["batch"].get("schema_errors", {})}
    diff = mismatch(batch_plain(batch), want_batch, "$batch")
    assert diff is None, f"{diff}\nactual batch: {batch_plain(batch)}{bug}"
    check_mapped(ex, outputs, batch)


def outcome(run: Callable[[], Extracted]) -> Any:
    try:
        return as_plain(run())
    except PayloadError as exc:
        return {"payload_error": exc.reason}
    except Exception as exc:
        return {"raised": type(exc).__name__}


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.parent.name in ROUTE_OF], ids=fixture_id)
def test_golden_fixture_same_through_route_template(path: Path) -> None:
    """Extractor("auto") on the protocol's route template dispatches to the same adapter."""
    fixture = load(path)
    protocol = path.parent.name
    direct = outcome(lambda: run_fixture(fixture, protocol))
    routed = outcome(lambda: run_fixture(fixture, protocol, by_route=True))
    assert mismatch(routed, direct) is None, f"{routed} != {direct}"


# --- fuzzing: strategies ------------------------------------------------------------------------
# Arbitrary JSON (None/bool/int incl. huge/float incl. NaN and inf/str, lists, objects), and for
# each protocol structured near-misses: its top-level keys holding mostly well-formed values,
# sometimes arbitrary JSON; tensors with random shape, datatype and data.

KEY_WORDS = ["a", "b", "x", "prediction", "predictions", "instances", "inputs", "outputs", "data",
             "names", "ndarray", "tensor", "shape", "values", "datatype", "name", "id", "meta",
             "puid", "dataframe_split", "dataframe_records", "columns", "features", "label",
             "score", "f", "p", "items", ""]
KEYS = st.sampled_from(KEY_WORDS) | st.text(max_size=6)
# Python's JSON parser (the sidecar's fallback for NaN/Infinity literals) keeps big integers exact.
INTS = st.integers() | st.sampled_from([2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**400, -(10**400)])
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
SCALARS = st.none() | st.booleans() | INTS | FLOATS | st.text(max_size=8)
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=5)
                    | st.dictionaries(KEYS, children, max_size=5), max_leaves=25)
BATCH = st.integers(0, 4)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], one_in: int = 6) -> st.SearchStrategy[Any]:
    """``usual``, but one draw in ``one_in`` (about) from ``odd``."""
    return st.integers(0, one_in - 1).flatmap(lambda i: odd if i == 0 else usual)


PROBABILITY = st.lists(mostly(st.floats(0, 1), FLOATS | INTS | SCALARS), max_size=4)
PREDICTION = mostly(SCALARS | PROBABILITY | st.dictionaries(KEYS, SCALARS | PROBABILITY, max_size=3), JSON)
ROW = mostly(st.lists(SCALARS, max_size=4) | st.dictionaries(KEYS, SCALARS, max_size=4) | SCALARS, JSON)


def rows_of(n: int) -> st.SearchStrategy[Any]:
    rectangular = st.integers(0, 4).flatmap(
        lambda w: st.lists(st.lists(SCALARS, min_size=w, max_size=w), min_size=n, max_size=n))
    objects = st.lists(st.dictionaries(KEYS, SCALARS, max_size=4), min_size=n, max_size=n)
    return mostly(rectangular | objects | st.lists(SCALARS, min_size=n, max_size=n)
                  | st.lists(ROW, min_size=n, max_size=n), JSON)


def columns_of(n: int) -> st.SearchStrategy[Any]:
    return st.dictionaries(KEYS, mostly(st.lists(SCALARS, min_size=n, max_size=n), SCALARS | JSON), max_size=4)


def predictions_of(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.lists(PREDICTION, min_size=n, max_size=n), st.lists(PREDICTION, max_size=5) | JSON, 4)


def kserve_request(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({"instances": rows_of(n)}, optional={"id": JSON, "signature_name": JSON})
                  | st.fixed_dictionaries({"inputs": columns_of(n) | rows_of(n)}, optional={"id": JSON}),
                  st.fixed_dictionaries({}, optional={"instances": JSON, "inputs": JSON, "id": JSON}) | JSON)


def kserve_response(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({"predictions": predictions_of(n)}) | predictions_of(n),
                  st.none() | JSON | st.fixed_dictionaries({}, optional={"predictions": JSON, "outputs": JSON}), 4)


ELEMENTS: dict[str, st.SearchStrategy[Any]] = {
    "BOOL": st.booleans(), "BYTES": st.text(max_size=4),
    "FP16": FLOATS, "FP32": FLOATS, "FP64": FLOATS,
}
# Shapes a JSON body can carry but an array cannot have (negative, bool, float, huge, too many dims).
ODD_SHAPES = st.sampled_from([[-1, 2], [10**30], [0, 10**30], [2**63, 0], [0, 2**64], [1] * 70,
                              [True, 2], [2.0]])


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def v2_tensor(draw: st.DrawFn, rows: int) -> Any:
    """An Open Inference Protocol tensor: mostly well-formed (random shape and datatype, data of
    the right size, flat or nested), sometimes off by one element, with an impossible shape,
    other odd fields, or not a tensor at all."""
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return draw(JSON)
    if kind == 1:  # no elements, but a shape no array can have
        return {"name": "odd", "shape": draw(ODD_SHAPES), "datatype": draw(st.sampled_from(sorted(V2_DTYPES))),
                "data": []}
    datatype = draw(st.sampled_from(sorted(V2_DTYPES)))
    shape: list[int] = draw(st.lists(st.integers(0, 3), max_size=3))
    batch_first = draw(st.integers(0, 3)) > 0  # usually the request's batch size first
    if shape and batch_first:
        shape[0] = rows
    size = math.prod(shape) + draw(st.sampled_from([0, 0, 0, 0, 0, 1, -1]))
    element = ELEMENTS.get(datatype, mostly(st.integers(-300, 300), INTS))
    flat = draw(st.lists(mostly(element, SCALARS, 8), min_size=max(size, 0), max_size=max(size, 0)))
    data: Any = _nest(flat, shape) if size == math.prod(shape) and draw(st.booleans()) else flat
    tensor: dict[str, Any] = {
        "name": draw(mostly(st.sampled_from(["x", "y", "input-0", "probabilities"]) | st.text(max_size=3), SCALARS)),
        "shape": draw(mostly(st.just(shape), ODD_SHAPES | JSON, 12)),
        "datatype": draw(mostly(st.just(datatype), st.sampled_from(["FLOAT32", "fp32", ""]) | JSON, 12)),
        "data": draw(mostly(st.just(data), JSON, 12)),
    }
    for key in list(tensor):
        if draw(st.integers(0, 19)) == 0:
            del tensor[key]
    if draw(st.integers(0, 9)) == 0:
        tensor["parameters"] = draw(JSON)
    return tensor


def oip_request(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({"inputs": st.lists(v2_tensor(n), min_size=1, max_size=3)},
                                        optional={"id": mostly(st.text(max_size=4), JSON), "parameters": JSON,
                                                  "outputs": JSON}),
                  st.fixed_dictionaries({}, optional={"inputs": JSON | st.lists(v2_tensor(n), max_size=2),
                                                      "id": JSON}) | JSON)


def oip_response(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({"outputs": st.lists(v2_tensor(n), max_size=3)},
                                        optional={"id": JSON, "model_name": JSON}),
                  st.none() | JSON | st.fixed_dictionaries({}, optional={"outputs": JSON}))


def mlflow_request(n: int) -> st.SearchStrategy[Any]:
    split = mostly(st.fixed_dictionaries({"data": rows_of(n)}, optional={
        "columns": mostly(st.lists(KEYS, max_size=5), st.lists(SCALARS, max_size=5) | JSON), "index": JSON}), JSON)
    records = mostly(st.lists(mostly(st.dictionaries(KEYS, SCALARS, max_size=4), SCALARS | JSON),
                              min_size=n, max_size=n), JSON)
    return mostly(st.fixed_dictionaries({"dataframe_split": split}, optional={"params": JSON})
                  | st.fixed_dictionaries({"dataframe_records": records}, optional={"params": JSON}),
                  kserve_request(n) | JSON, 4)


@st.composite
def seldon_tensor(draw: st.DrawFn, n: int) -> Any:
    shape = draw(mostly(st.just([n]) | st.integers(0, 3).map(lambda w: [n, w]),
                        ODD_SHAPES | st.lists(st.integers(-1, 3), max_size=3) | JSON))
    regular = isinstance(shape, list) and all(isinstance(s, int) for s in shape) and 0 <= math.prod(shape) <= 50
    size = math.prod(shape) if regular else draw(st.integers(0, 6))
    size = max(size + draw(st.sampled_from([0, 0, 0, 0, 1, -1])), 0)
    values = draw(mostly(st.lists(mostly(FLOATS | st.integers(-5, 5), INTS | SCALARS | JSON),
                                  min_size=size, max_size=size), JSON, 10))
    tensor = {"shape": shape, "values": values}
    for key in list(tensor):
        if draw(st.integers(0, 11)) == 0:
            del tensor[key]
    return tensor


def seldon_data(n: int) -> st.SearchStrategy[Any]:
    names = mostly(st.lists(KEYS, max_size=4), st.lists(SCALARS, max_size=4) | JSON)
    ndarray = mostly(rows_of(n) | predictions_of(n), JSON)
    return mostly(st.fixed_dictionaries({"names": names, "ndarray": ndarray})
                  | st.fixed_dictionaries({"names": names, "tensor": seldon_tensor(n)}),
                  st.fixed_dictionaries({}, optional={"names": names, "ndarray": JSON, "tensor": JSON}) | JSON)


def seldon_request(n: int) -> st.SearchStrategy[Any]:
    meta = mostly(st.fixed_dictionaries({"puid": st.text(max_size=12) | st.text(min_size=250, max_size=300)}),
                  JSON)
    return mostly(st.fixed_dictionaries({"data": seldon_data(n)}, optional={"meta": meta}),
                  st.fixed_dictionaries({}, optional={"strData": JSON, "jsonData": JSON, "meta": meta}) | JSON)


def seldon_response(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({"data": seldon_data(n)}, optional={"meta": JSON}), st.none() | JSON, 4)


GENERIC_SPECS = [
    GenericSpec(JsonPath("$.f"), JsonPath("$.p"), JsonPath("$.id")),
    GenericSpec(JsonPath("$.items[*].x"), JsonPath("$.out[*]"), JsonPath("$.meta[0].id")),
    GenericSpec(JsonPath("$"), None, None),
    GenericSpec(JsonPath("$['a b'][1]"), JsonPath("$"), JsonPath("$['id']")),
]


def generic_request(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({}, optional={
        "f": rows_of(n) | columns_of(n), "id": JSON, "meta": JSON, "a b": JSON,
        "items": st.lists(mostly(st.fixed_dictionaries({}, optional={"x": SCALARS | PROBABILITY}), JSON),
                          min_size=n, max_size=n),
    }) | rows_of(n), JSON)


def generic_response(n: int) -> st.SearchStrategy[Any]:
    return mostly(st.fixed_dictionaries({}, optional={"p": predictions_of(n), "out": predictions_of(n)})
                  | predictions_of(n), st.none() | JSON, 4)


CASES: dict[str, tuple[Callable[[int], st.SearchStrategy[Any]], Callable[[int], st.SearchStrategy[Any]]]] = {
    "kserve_v1": (kserve_request, kserve_response),
    "oip_v2": (oip_request, oip_response),
    "mlflow": (mlflow_request, kserve_response),
    "seldon": (seldon_request, seldon_response),
    "generic": (generic_request, generic_response),
}


def exchange(protocol: str) -> st.SearchStrategy[tuple[Any, Any]]:
    request, response = CASES[protocol]
    return BATCH.flatmap(lambda n: st.tuples(request(n), response(n)))


ANY_EXCHANGE = st.one_of(*(exchange(p) for p in CASES), st.tuples(JSON, JSON))
ROUTES = st.sampled_from([*ROUTE_PROTOCOLS, "/predict", "", "/v2/models/{model}/ready", "/v1/models/{model}:explain"])

RECORD = st.fixed_dictionaries(
    {"features": mostly(st.dictionaries(KEYS, SCALARS | PROBABILITY, max_size=4), JSON)},
    optional={"prediction": PREDICTION, "id": mostly(st.text(max_size=5) | st.integers(), JSON),
              "model": JSON, "timestamp": JSON})

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# --- fuzzing: properties ------------------------------------------------------------------------

def extract_or_none(extractor: Extractor, route: str, request: Any, response: Any) -> Extracted | None:
    """The extraction, or None on PayloadError; any other exception fails the test."""
    try:
        ex = extractor.extract(route, request, response)
    except PayloadError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return None
    check_extracted(ex)
    return ex


def check_mapper(data: st.DataObject, ex: Extracted) -> None:
    """FeatureMapper on an extraction never raises, and its batch keeps the Batch contract."""
    width = len(ex.positional or [])
    positional_names = [f"f{i}" for i in range(width)]
    input_pool = sorted({*ex.inputs, *positional_names, "a", "x"})
    input_names = data.draw(st.just(positional_names) | st.just([])
                            | st.lists(st.sampled_from(input_pool), max_size=5, unique=True), label="input_names")
    # The configured names are distinct (a profile cannot name an input like an output); the
    # payload's own keys may still collide with an output name.
    output_pool = sorted({*ex.outputs, *(n + "_max_probability" for n in ex.outputs), "prediction", "label"}
                         - set(input_names))
    output_names = data.draw(st.lists(st.sampled_from(output_pool), max_size=3, unique=True)
                             if output_pool else st.just([]), label="output_names")
    class_names = data.draw(st.none() | st.lists(st.text(max_size=3), max_size=4), label="class_names")
    prediction_output = data.draw(st.none() | st.sampled_from(output_pool) if output_pool else st.none(),
                                  label="prediction_output")
    mapper = FeatureMapper(input_names, output_names, class_names, prediction_output)
    outputs = mapper.outputs(ex)
    batch = mapper.batch(ex, outputs)
    mapper.prediction(outputs)
    check_mapped(ex, outputs, batch)


# REGRESSION: found these (fixed) bugs: BUG-1 (seldon:
# OverflowError escapes Extractor), BUG-2 (OverflowError out of FeatureMapper.outputs for a huge
# integer in a prediction vector), BUG-4 (a payload input key named like an output breaks the
# batch's len(values) + absent == rows), BUG-8 (request ids over 256 chars: Seldon puid, huge
# integer ids) and BUG-10 (stale positional_absent after names are applied).
@pytest.mark.parametrize("protocol", sorted(CASES))
@FUZZ
@given(data=st.data())
def test_fuzz_protocol_never_raises_and_keeps_invariants(protocol: str, data: st.DataObject) -> None:
    request, response = data.draw(exchange(protocol), label="exchange")
    spec = data.draw(st.sampled_from(GENERIC_SPECS), label="spec") if protocol == "generic" else None
    ex = extract_or_none(Extractor(protocol, spec), "/unrouted", request, response)
    if ex is not None:
        check_mapper(data, ex)


# REGRESSION (fixed): the same bugs as above (BUG-1, 2, 4, 8, 10), reached through route templates and sniffing.
@FUZZ
@given(data=st.data(), route=ROUTES)
def test_fuzz_auto_on_every_route_never_raises(data: st.DataObject, route: str) -> None:
    request, response = data.draw(ANY_EXCHANGE, label="exchange")
    ex = extract_or_none(Extractor("auto"), route, request, response)
    if ex is not None:
        check_mapper(data, ex)


# REGRESSION (fixed): BUG-2 (a pushed prediction vector holding a huge integer), BUG-4 (a pushed feature
# named like the output) and BUG-8 (a huge integer record id).
@FUZZ
@given(data=st.data(), records=st.lists(RECORD, max_size=6))
def test_fuzz_records_extracted(data: st.DataObject, records: list[dict[str, Any]]) -> None:
    ex = records_extracted(records)
    check_extracted(ex)
    assert ex.rows == len(records)
    assert ex.row_ids is not None
    check_mapper(data, ex)


VALID_REQUESTS: dict[str, Any] = {
    "kserve_v1": {"instances": [[1.0, "a"], [2.0, "b"]]},
    "oip_v2": {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
    "mlflow": {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}},
    "seldon": {"data": {"names": ["a", "b"], "ndarray": [[1, 2], [3, 4]]}},
    "generic": {"f": [{"a": 1}, {"a": 2}]},
}


# REGRESSION (fixed): oip_v2 - BUG-3 (an output tensor with an unrepresentable shape such as [0, 10**30]
# makes tensor()'s reshape raise ValueError past outputs_into: malformed_payload); seldon - BUG-1
# (a huge integer in the response tensor: OverflowError). Either way a valid request is lost.
@pytest.mark.parametrize("protocol", sorted(VALID_REQUESTS))
@FUZZ
@given(data=st.data())
def test_fuzz_response_never_fails_a_valid_request(protocol: str, data: st.DataObject) -> None:
    """A response (odd or not) only adds outputs or counted errors: it never turns a valid
    request into a payload error, and never changes the extracted inputs."""
    request = VALID_REQUESTS[protocol]
    response = data.draw(CASES[protocol][1](2) | JSON, label="response")
    extractor = Extractor(protocol, GENERIC_SPECS[0] if protocol == "generic" else None)
    alone = extractor.extract("/unrouted", request, None)
    try:
        ex = extractor.extract("/unrouted", request, response)
    except PayloadError as exc:
        pytest.fail(f"a valid request failed because of its response: PayloadError({exc.reason!r}): {exc}")
    check_extracted(ex)
    assert ex.rows == alone.rows == 2
    assert mismatch(plain(ex.inputs), plain(alone.inputs)) is None
    assert mismatch(plain(ex.positional), plain(alone.positional)) is None


# --- float tensors sent flat take a path without NumPy; it must agree with the NumPy path ------

def _extracted_json(ex: Any) -> str:
    return json.dumps(plain({"rows": ex.rows, "inputs": ex.inputs, "positional": ex.positional,
                              "outputs": ex.outputs, "errors": ex.errors}), sort_keys=True)


@st.composite
def float_tensor(draw: st.DrawFn, rows: int, name: str) -> dict[str, Any]:
    shape = [rows, *draw(st.lists(st.integers(1, 4), max_size=2))]
    data = draw(st.lists(st.floats(width=64), min_size=math.prod(shape), max_size=math.prod(shape)))
    return {"name": name, "shape": shape, "datatype": draw(st.sampled_from(["FP16", "FP32", "FP64"])),
            "data": data}


@given(st.integers(1, 3).flatmap(lambda rows: st.tuples(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*(float_tensor(rows, n) for n in names))),
    float_tensor(rows, "out"))))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_flat_float_tensors_extract_as_the_numpy_path_does(tensors: Any) -> None:
    import modelmon.protocols.base as base

    inputs, output = tensors
    request, response = {"inputs": list(inputs)}, {"outputs": [output]}
    assert base.plain_float_tensor(inputs[0]) is not None  # the fast path is taken
    fast = _extracted_json(Extractor("oip_v2").extract("", request, response))
    original = base.plain_float_tensor
    base.plain_float_tensor = lambda t: None  # type: ignore[assignment]
    try:
        via_numpy = _extracted_json(Extractor("oip_v2").extract("", request, response))
    finally:
        base.plain_float_tensor = original
    assert fast == via_numpy


@pytest.mark.parametrize("tensor", [
    {"shape": [1, 2], "datatype": "FP32", "data": [1, 2.0]},  # a JSON integer among the floats
    {"shape": [1, 2], "datatype": "INT64", "data": [1.0, 2.0]},
    {"shape": [1, 2], "datatype": "FP32", "data": [[1.0, 2.0]]},  # nested
    {"shape": [2], "datatype": "FP32", "data": [1.0]},  # wrong size
    {"shape": [0, 2], "datatype": "FP32", "data": []},
    {"shape": [], "datatype": "FP32", "data": [1.0]},
    {"shape": [True, 1], "datatype": "FP32", "data": [1.0]},
    {"shape": [1], "datatype": ["FP32"], "data": [1.0]},  # found by the fuzz test: unhashable
])
def test_other_tensors_take_the_numpy_path(tensor: dict[str, Any]) -> None:
    from modelmon.protocols.base import plain_float_tensor

    assert plain_float_tensor(tensor) is None
