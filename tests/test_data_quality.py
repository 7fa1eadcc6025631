"""Data-quality correctness (issue 9, section 2): each fault pinned by the value it must give.

The expected values come from references outside modelmon: Python's ``json`` module and RFC 8259
for the JSON dialect, Python's own text for the values a CSV file holds (pandas writes booleans
as ``True``/``False`` and the integers of a float column as ``3.0``: ``str()`` of the value),
pyarrow for Parquet, NumPy for ``.npz``, SciPy for the statistics.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats as ss
from aiohttp.test_utils import TestServer
from conftest import Running, StartSidecar
from hypothesis import given
from hypothesis import strategies as st
from modelmon import cli, jsondecode
from modelmon.analysis.queue import decode_body
from modelmon.drift import stats
from modelmon.drift.columns import QUALITY_KINDS, Batch
from modelmon.drift.engine import DriftSettings, FeatureDrift, ModelDrift
from modelmon.jsondecode import loads
from modelmon.reference.builder import build_profile
from modelmon.reference.profile import (
    CategoricalFeature,
    NumericFeature,
    Profile,
    categorical_feature,
    category_key,
    load_profile,
    numeric_feature,
)
from modelmon.sidecar.push import parse_batch
from prometheus_client.parser import text_string_to_metric_families

# --- helpers ------------------------------------------------------------------------------------


def save(profile: Profile, tmp_path: Path, name: str = "profile.json") -> Path:
    path = tmp_path / name
    profile.save(path)
    return path


def xyc_profile(tmp_path: Path) -> Path:
    """Inputs x, y (numeric) and c (categorical), output p."""
    rng = np.random.default_rng(0)
    return save(Profile("m", "1", 2000, (
        numeric_feature("x", rng.normal(0, 1, 2000)),
        numeric_feature("y", rng.normal(0, 1, 2000)),
        categorical_feature("c", rng.choice(["a", "b"], 2000).tolist()),
        numeric_feature("p", rng.random(2000), role="output"),
    )), tmp_path)


def settings(**over: Any) -> dict[str, Any]:
    return {"drift": {"interval_seconds": 3600, "min_samples": 100, **over}}


async def scrape(running: Running) -> tuple[int, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    async with aiohttp.ClientSession() as s, s.get(running.admin_url + "/metrics") as resp:
        status, text = resp.status, await resp.text()
    if status != 200:
        return status, {}
    return status, {(x.name, tuple(sorted(x.labels.items()))): x.value
                    for f in text_string_to_metric_families(text) for x in f.samples}


def sample(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def quality(monitor: ModelDrift, feature: str) -> dict[str, float]:
    pos = monitor.position[feature]
    return {k: float(v) for k, v in zip(QUALITY_KINDS, monitor.quality.total[pos], strict=True) if v}


def binned(monitor: ModelDrift, feature: str) -> float:
    return float(monitor.cumulative_bins(monitor.position[feature]).sum())


async def post(running: Running, path: str, body: bytes | str,
               content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.post(running.admin_url + path, data=body,
                                                    headers={"Content-Type": content_type}) as r:
        return r.status, await r.json()


def same(a: Any, b: Any) -> bool:
    """Equal as decoded JSON values, NaN equal to NaN, int and float kept apart."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- non-finite tokens: one JSON dialect at every entry point -------------------------------------

NAN_RECORDS = [{"features": {"x": math.nan, "y": math.inf, "c": "a"}},
               {"features": {"x": -math.inf, "y": 0.5, "c": "b"}}]


async def test_pushed_json_with_nan_tokens_is_accepted_and_counted(start_sidecar: StartSidecar,
                                                                   tmp_path: Path) -> None:
    """Python's json.dumps writes NaN/Infinity/-Infinity: the batch was a 400 and lost."""
    running = await start_sidecar(None, models=[{"name": "m", "profile": str(xyc_profile(tmp_path))}])
    status, body = await post(running, "/v1/records", json.dumps({"model": "m", "records": NAN_RECORDS}))
    assert (status, body["accepted"], body["rejected"]) == (202, 2, 0)
    await running.drain()
    monitor = running.sidecar.analysis.drift_models["m"]
    assert quality(monitor, "x") == {"nan": 1, "inf": 1}
    assert quality(monitor, "y") == {"inf": 1}
    assert binned(monitor, "y") == 1 and binned(monitor, "c") == 2
    status, m = await scrape(running)
    assert status == 200
    assert sample(m, "modelmon_data_quality_events_total", model="m", feature="x", kind="nan") == 1
    assert sample(m, "modelmon_data_quality_events_total", model="m", feature="x", kind="inf") == 1


async def test_ndjson_lines_with_nan_tokens_are_accepted(start_sidecar: StartSidecar, tmp_path: Path) -> None:
    running = await start_sidecar(None, models=[{"name": "m", "profile": str(xyc_profile(tmp_path))}])
    body = "\n".join(json.dumps({**r, "model": "m"}) for r in NAN_RECORDS) + "\n"
    status, result = await post(running, "/v1/records", body, "application/x-ndjson")
    assert (status, result["accepted"], result["rejected"]) == (202, 2, 0)
    await running.drain()
    monitor = running.sidecar.analysis.drift_models["m"]
    assert quality(monitor, "x") == {"nan": 1, "inf": 1}


async def test_labels_are_read_in_the_same_dialect_and_non_finite_ones_rejected(
        start_sidecar: StartSidecar) -> None:
    """A labels batch holding a NaN was a 400 for all of it; now the NaN label alone is refused
    (it is no ground truth) and the rest join."""
    running = await start_sidecar(None, models=[{"name": "m"}])
    status, body = await post(running, "/v1/records", json.dumps(
        {"model": "m", "records": [{"id": "a", "features": {"x": 1}, "prediction": 0.5},
                                   {"id": "b", "features": {"x": 2}, "prediction": 0.7}]}))
    assert status == 202
    await running.drain()
    labels = json.dumps({"labels": [{"id": "a", "label": 0.25}, {"id": "b", "label": math.nan}]})
    status, body = await post(running, "/v1/labels", labels)
    assert status == 202, body
    assert (body["joined"], body["rejected"]) == (1, 1)
    assert body["errors"][0]["index"] == 1 and "finite" in body["errors"][0]["error"]


TRICKY = [
    b'{"a": NaN, "b": [Infinity, -Infinity], "c": 1e400, "d": -1e400, "e": 1e-400}',
    b'{"big": 18446744073709551616, "top": 18446744073709551615, "low": -9223372036854775808,'
    b' "lower": -9223372036854775809, "huge": ' + b"9" * 5000 + b"}",
    b'\xef\xbb\xbf{"bom": true}',
    b'{"s": "\\ud83d\\ude00", "t": "caf\\u00e9", "u": null, "v": [1, 2.5, -0.0]}',
]
REFUSED = [b'{"a": NaN, "b": }', b'["\\ud800"]', b'{"a": nan}', b"[1] [2]", b"\xff[1]", b'{"a": inf}']


def expected(body: bytes) -> Any:
    """The dialect's values, from the stdlib parser (the reference for NaN/Infinity tokens):
    integers beyond 64 bits as the float of their digits (RFC 8259 section 6 allows limits)."""
    def parse_int(text: str) -> int | float:
        value = int(text) if len(text) < 4000 else None
        return value if value is not None and -(2**63) <= value < 2**64 else float(text)
    return json.loads(body.removeprefix(b"\xef\xbb\xbf").decode(), parse_int=parse_int)


@pytest.mark.parametrize("body", TRICKY, ids=range(len(TRICKY)))
def test_every_entry_point_reads_the_same_dialect(body: bytes, tmp_path: Path) -> None:
    want = expected(body)
    assert same(decode_body(body, "", 1 << 20), want)  # proxied bodies
    assert same(decode_body(gzip.compress(body), "gzip", 1 << 20), want)
    items, _, errors = parse_batch(b"[" + body.removeprefix(b"\xef\xbb\xbf") + b"]", ndjson=False)
    assert not errors and same(items[0], want)  # /v1/records and /v1/labels, JSON
    items, _, errors = parse_batch(body + b"\n" + body, ndjson=True)
    assert not errors and same(items, [want, want])  # NDJSON
    doc = json.loads(Profile("m", "1", 0, ()).to_json())
    (tmp_path / "p.json").write_bytes(json.dumps({**doc, "extra": None}).encode()[:-1]
                                      + b', "tricky": ' + body.removeprefix(b"\xef\xbb\xbf") + b"}")
    assert load_profile(tmp_path / "p.json").model == "m"  # profile files: the same decoder


@pytest.mark.parametrize("body", REFUSED, ids=range(len(REFUSED)))
def test_what_is_not_in_the_dialect_is_refused_everywhere(body: bytes) -> None:
    from modelmon.analysis.queue import AnalysisError

    with pytest.raises(AnalysisError):
        decode_body(body, "", 1 << 20)
    _, _, errors = parse_batch(body, ndjson=True)
    assert errors
    from modelmon.sidecar.push import BadRequest
    with pytest.raises(BadRequest):
        parse_batch(body, ndjson=False)


# --- absent features ------------------------------------------------------------------------------

async def test_a_feature_missing_from_every_pushed_row_is_absent(start_sidecar: StartSidecar,
                                                                 tmp_path: Path) -> None:
    running = await start_sidecar(None, models=[{"name": "m", "profile": str(xyc_profile(tmp_path))}],
                                  **settings())
    status, _ = await post(running, "/v1/records",
                           json.dumps({"model": "m", "records": [{"features": {"x": 0.1}}]}))
    assert status == 202
    await running.drain()
    await running.sidecar.compute_drift()
    monitor = running.sidecar.analysis.drift_models["m"]
    assert quality(monitor, "y") == {"absent": 1} and quality(monitor, "c") == {"absent": 1}
    assert quality(monitor, "x") == {} and quality(monitor, "p") == {}  # an output: not an input
    y = next(f for f in monitor.compute().features if f.name == "y")
    assert y.missing_ratio == 1.0
    _, m = await scrape(running)
    assert sample(m, "modelmon_data_quality_events_total", model="m", feature="y", kind="absent") == 1
    assert sample(m, "modelmon_feature_missing_ratio", model="m", feature="y") == 1.0
    assert sample(m, "modelmon_feature_missing_ratio", model="m", feature="x") == 0.0


async def test_a_feature_missing_from_a_proxied_single_row_is_absent(
        upstream: TestServer, start_sidecar: StartSidecar, tmp_path: Path) -> None:
    running = await start_sidecar(str(upstream.make_url("")), **settings(),
                                  models=[{"name": "m", "profile": str(xyc_profile(tmp_path))}])
    for _ in range(3):
        async with running.session.post(running.traffic_url + "/v1/models/m:predict",
                                        json={"instances": [{"x": 0.5}]}) as r:
            assert r.status == 200
    await running.drain()
    monitor = running.sidecar.analysis.drift_models["m"]
    assert quality(monitor, "y") == {"absent": 3} and quality(monitor, "c") == {"absent": 3}
    assert binned(monitor, "x") == 3
    y = next(f for f in monitor.compute().features if f.name == "y")
    assert y.missing_ratio == 1.0


# --- category spelling ------------------------------------------------------------------------------

def write_csv(path: Path, columns: dict[str, list[Any]]) -> None:
    """As pandas' to_csv writes a frame: each value's str(), missing values empty."""
    names = list(columns)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(columns[n] for n in names), strict=True):
            w.writerow(["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                        for v in row])


def training_columns(n: int, seed: int = 0) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    rooms = rng.integers(1, 5, n).astype(float)  # an integer column with gaps: a float column
    rooms[::10] = np.nan
    return {
        "flag": [bool(v) for v in rng.random(n) < 0.3],
        "rooms": rooms.tolist(),
        # integers and text in one column: CSV text "3.0" beside "unknown"
        "grade": [("unknown" if v == 0 else float(v)) for v in rng.integers(0, 4, n)],
        "x": rng.normal(0, 1, n).tolist(),
    }


async def test_a_csv_profile_and_live_json_spell_categories_alike(start_sidecar: StartSidecar,
                                                                  tmp_path: Path) -> None:
    """Booleans written True/False in the CSV and sent as JSON true/false; integers written
    3.0 in the CSV and sent as 3: no unseen category, no drift (was: all unseen, drift)."""
    write_csv(tmp_path / "train.csv", training_columns(5000))
    profile = build_profile(tmp_path / "train.csv", model="m", categorical=["rooms"])
    kinds = {f.name: f.kind for f in profile.features}
    assert kinds == {"flag": "categorical", "rooms": "categorical", "grade": "categorical", "x": "numeric"}
    flag = next(f for f in profile.features if f.name == "flag")
    assert isinstance(flag, CategoricalFeature) and set(flag.categories) == {"true", "false"}
    path = save(profile, tmp_path)
    running = await start_sidecar(None, models=[{"name": "m", "profile": str(path)}], **settings())
    live = training_columns(400, seed=1)
    records = [{"features": {"flag": f, "x": x,
                             "rooms": None if math.isnan(r) else int(r),
                             "grade": g if isinstance(g, str) else int(g)}}
               for f, r, g, x in zip(live["flag"], live["rooms"], live["grade"], live["x"], strict=True)]
    status, _ = await post(running, "/v1/records", json.dumps({"model": "m", "records": records}))
    assert status == 202
    await running.drain()
    await running.sidecar.compute_drift()
    monitor = running.sidecar.analysis.drift_models["m"]
    for name in ("flag", "rooms", "grade"):
        assert "unseen_category" not in quality(monitor, name), name
    snap = {f.name: f for f in monitor.compute().features}
    assert [snap[n].detected for n in ("flag", "rooms", "grade", "x")] == [False] * 4


def test_csv_parquet_and_npz_of_the_same_data_give_the_same_categories(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 3000
    flag = rng.random(n) < 0.4
    code = rng.choice([b"AB", b"CD", "é".encode()], n)
    small = rng.integers(0, 3, n).astype(np.int8)
    half = (rng.integers(0, 4, n) / 2).astype(np.float32)  # 0, 0.5, 1, 1.5: exact in float32
    write_csv(tmp_path / "d.csv", {"flag": flag.tolist(), "code": [c.decode() for c in code],
                                   "small": small.tolist(), "half": [float(h) for h in half]})
    pq.write_table(pa.table({"flag": pa.array(flag), "code": pa.array(code.tolist(), pa.binary()),
                             "small": pa.array(small), "half": pa.array(half)}), tmp_path / "d.parquet")
    np.savez(tmp_path / "d.npz", flag=flag, code=code.astype("S2"), small=small, half=half)
    profiles = [build_profile(tmp_path / f"d.{ext}", model="m", categorical=["small", "half"])
                for ext in ("csv", "parquet", "npz")]
    as_csv, as_parquet, as_npz = ({f.name: f for f in p.features} for p in profiles)
    assert as_csv == as_parquet == as_npz
    assert set(as_csv["flag"].categories) == {"true", "false"}  # type: ignore[union-attr]
    assert set(as_csv["code"].categories) == {"AB", "CD", "é"}  # type: ignore[union-attr]
    assert set(as_csv["half"].categories) == {"0", "0.5", "1", "1.5"}  # type: ignore[union-attr]


SCALARS = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8), st.sampled_from(["True", "FALSE", "3.0", "-0", "007", "1e3", "0.10", "NaN", ""]))


@given(SCALARS)
def test_a_value_has_one_key_however_it_was_written(value: Any) -> None:
    key = category_key(value)
    assert category_key(key) == key  # keys are their own keys
    # the value as it arrives in live JSON (Python's json module writes the payload)
    assert category_key(loads(json.dumps(value))) == key
    if not isinstance(value, str):
        # ... and as a CSV file holds it: str(), as pandas' to_csv writes it
        assert category_key(str(value)) == key
        # ... and as NumPy / Parquet give it (a scalar of the array's dtype)
        assert category_key(np.array([value])[0]) == key


@pytest.mark.parametrize(("value", "key"), [
    (True, "true"), ("True", "true"), ("TRUE", "true"), (np.bool_(False), "false"),
    (3, "3"), (3.0, "3"), ("3.0", "3"), (np.int8(3), "3"), (np.float32(3.0), "3"), ("3", "3"),
    (0.1, "0.1"), (np.float32(0.1), "0.1"), ("0.10", "0.1"), (1e20, "100000000000000000000"),
    ("1e+20", "100000000000000000000"), ("007", "007"), (-0.0, "0"), (b"AB", "AB"),
    (np.bytes_(b"AB"), "AB"), (np.str_("AB"), "AB"), ([1], "[...]"), ({"a": 1}, "{...}"),
])
def test_category_keys(value: Any, key: str) -> None:
    assert category_key(value) == key


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12)


@given(JSON_VALUES)
def test_the_fast_and_the_slow_path_read_the_same_values(value: Any) -> None:
    """orjson reads what it can, the stdlib parser the rest: whichever reads a body, the values
    are those of the dialect (the stdlib's, integers beyond 64 bits as floats)."""
    body = json.dumps(value).encode()
    want = expected(body)
    assert same(loads(body), want)
    assert same(jsondecode._slow_loads(body), want)


def test_a_profile_written_before_keys_were_canonical_still_matches(tmp_path: Path) -> None:
    """A profile file holding "True"/"3.0" (its hash valid) is read with canonical keys; the
    counts of spellings that now mean one category are merged, the hash is the file's."""
    legacy = CategoricalFeature("flag", "input", ("True", "False", "3.0", "3"), (60, 30, 6, 4, 0), 0)
    profile = Profile("m", "1", 100, (legacy,))
    loaded = load_profile(save(profile, tmp_path))
    assert loaded.hash == profile.hash
    monitor = ModelDrift("m", loaded, DriftSettings(), 10)
    feature = monitor.features[0]
    assert isinstance(feature, CategoricalFeature)
    assert feature.categories == ("true", "false", "3") and feature.counts == (60, 30, 10, 0)
    monitor.observe(Batch(4, columns={"flag": [True, False, 3, "True"]}))
    assert quality(monitor, "flag") == {}
    assert monitor.cumulative_bins(0).tolist() == [2, 1, 1, 0]


# --- values beyond float range ------------------------------------------------------------------------

async def test_numbers_beyond_float_range_are_counted_and_never_lose_the_batch(
        upstream: TestServer, start_sidecar: StartSidecar, tmp_path: Path) -> None:
    running = await start_sidecar(str(upstream.make_url("")), **settings(),
                                  models=[{"name": "m", "profile": str(xyc_profile(tmp_path))}])
    digits = "9" * 4000  # (past 4,300 digits the test's upstream itself fails: see TRICKY for those)
    long = "9" * 400
    v1 = f'{{"instances": [{{"x": {digits}, "y": 0.1, "c": "a"}}, {{"x": 0.2, "y": -{long}, "c": "b"}}]}}'
    v2 = f'{{"inputs": [{{"name": "x", "shape": [2], "datatype": "INT64", "data": [{long}, 1]}}]}}'

    for path, body in (("/v1/models/m:predict", v1), ("/v2/models/m/infer", v2)):
        async with running.session.post(running.traffic_url + path, data=body,
                                        headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200
    pushed = '{"model": "m", "records": [{"features": {"x": 1e400, "y": %s, "c": "a"}}]}' % ("9" * 400)
    status, _ = await post(running, "/v1/records", pushed)
    assert status == 202
    await running.sidecar.queue.join(5)
    status, m = await scrape(running)
    assert status == 200
    monitor = running.sidecar.analysis.drift_models["m"]
    assert quality(monitor, "x") == {"inf": 3}
    assert quality(monitor, "y") == {"inf": 2, "absent": 2}  # the V2 request has no y
    assert quality(monitor, "c") == {"absent": 2}
    assert binned(monitor, "x") == 2 and binned(monitor, "y") == 1 and binned(monitor, "c") == 3
    assert sample(m, "modelmon_data_quality_events_total", model="m", feature="x", kind="inf") == 3
    assert sample(m, "modelmon_analysis_dropped_records_total", reason="invalid_json") is None


class Unprintable(str):
    """Text (so it is looked up as a category) whose spelling raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this value")


async def test_a_value_that_cannot_be_classified_costs_itself_alone(start_sidecar: StartSidecar,
                                                                    tmp_path: Path) -> None:
    """Whatever a value is, binning the queue at a scrape never fails: the scrape is a 200 and
    the value's batch is counted (was: 500, and every queued row lost)."""
    running = await start_sidecar(None, models=[{"name": "m", "profile": str(xyc_profile(tmp_path))}])
    monitor = running.sidecar.analysis.drift_models["m"]
    monitor.add(Batch(3, columns={"x": [0.1, 0.2, 0.3], "c": ["a", Unprintable(), "b"]}))
    status, m = await scrape(running)
    assert status == 200
    assert sample(m, "modelmon_data_quality_events_total", model="m", feature="c", kind="wrong_type") == 1
    assert quality(monitor, "c") == {"wrong_type": 1}
    assert binned(monitor, "c") == 2 and binned(monitor, "x") == 3
    assert quality(monitor, "y") == {"absent": 3}


# --- degenerate reference columns -----------------------------------------------------------------------

MIN = 100  # drift.min_samples


def engine(*features: NumericFeature | CategoricalFeature) -> ModelDrift:
    return ModelDrift("m", Profile("m", "1", 1000, features), DriftSettings(min_samples=MIN), 10)


def scored(monitor: ModelDrift, name: str, values: list[Any]) -> FeatureDrift:
    monitor.observe(Batch(len(values), columns={name: values}))
    return next(f for f in monitor.compute().features if f.name == name)


def scored_all(monitor: ModelDrift, columns: dict[str, list[Any]]) -> dict[str, FeatureDrift]:
    rows = len(next(iter(columns.values())))
    monitor.observe(Batch(rows, columns=columns))
    return {f.name: f for f in monitor.compute().features}


def nothing_said(f: FeatureDrift) -> bool:
    return f.scores == {} and f.p_values == {} and f.detected is None


def test_an_empty_reference_gives_no_verdict_and_no_range(caplog: pytest.LogCaptureFixture) -> None:
    """All missing in training: min = max = 0 was stored and every live value was out of
    range and scored against empty counts."""
    empty_num = numeric_feature("e", [math.nan] * 50)
    empty_cat = categorical_feature("k", [None, ""] * 25)
    monitor = engine(empty_num, empty_cat, numeric_feature("ok", np.arange(1000.0)))
    assert "feature e: the reference holds no values" in caplog.text
    assert "feature k: the reference holds no values" in caplog.text
    got = scored_all(monitor, {"e": [*np.linspace(-5, 5, 150).tolist(), None, math.nan],
                               "k": ["x"] * 150 + [None, ""],
                               "ok": np.linspace(0, 999, 152).tolist()})
    e, k = got["e"], got["k"]
    assert nothing_said(e) and e.out_of_range_ratio is None
    assert e.samples == 150 and e.missing_ratio == pytest.approx(2 / 152)  # still counted
    assert nothing_said(k) and k.samples == 150 and k.missing_ratio == pytest.approx(2 / 152)
    assert quality(monitor, "e") == {"null": 1, "nan": 1}
    assert quality(monitor, "k") == {"null": 2}  # no "unseen": there is nothing to have seen
    assert binned(monitor, "e") == 150 and binned(monitor, "k") == 150  # counted all the same
    assert got["ok"].detected is False and monitor.snapshot is not None
    assert monitor.snapshot.model_detected is False  # the empty features do not vote


def test_an_empty_reference_of_an_older_profile_is_read_as_empty() -> None:
    """Older profiles stored min = max = mean = std = 0 for such a column."""
    old = NumericFeature("e", "input", (), (0,), 50, 0.0, 0.0, 0.0, 0.0)
    monitor = engine(old)
    e = scored(monitor, "e", [1.0] * 150)
    assert nothing_said(e) and e.out_of_range_ratio is None and quality(monitor, "e") == {}


def test_an_empty_column_is_null_in_the_profile_file_and_named_by_modelmon_profile(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_csv(tmp_path / "t.csv", {"x": np.arange(500.0).tolist(), "y": [None] * 500,
                                   "few": [1.0, 2.0, 3.0] + [None] * 497, "one": [4.0] * 500})
    assert cli.main(["profile", str(tmp_path / "t.csv"), "--out", str(tmp_path / "p.json")]) == 0
    err = capsys.readouterr().err
    assert "feature y: the reference holds no values" in err
    assert "feature few: the reference holds only 3 value(s)" in err
    assert "feature one: the reference holds a single value (4.0)" in err
    assert "feature x:" not in err
    raw = json.loads((tmp_path / "p.json").read_text())
    y = next(f for f in raw["features"] if f["name"] == "y")
    assert (y["min"], y["max"], y["mean"], y["std"], y["counts"], y["missing"]) == (None, None, None, None, [0], 500)
    loaded = load_profile(tmp_path / "p.json")  # plain JSON, hash intact
    assert loaded.hash == raw["hash"] and math.isnan(loaded.features[1].min)  # type: ignore[union-attr]


async def test_an_empty_reference_feature_still_exports_its_counts(start_sidecar: StartSidecar,
                                                                    tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", {"x": np.random.default_rng(3).normal(0, 1, 2000).tolist(),
                                   "y": [None] * 2000})
    path = save(build_profile(tmp_path / "t.csv", model="m"), tmp_path)
    running = await start_sidecar(None, models=[{"name": "m", "profile": str(path)}], **settings())
    # x as typical a window of its N(0, 1) reference as can be (its normal quantiles): scored, no drift
    records = [{"features": {"x": float(v), "y": float(v) * 100}}
               for v in ss.norm.ppf((np.arange(150) + 0.5) / 150)]
    records += [{"features": {"x": 0.0, "y": None}}, {"features": {"x": 0.0}}]
    status, _ = await post(running, "/v1/records", json.dumps({"model": "m", "records": records}))
    assert status == 202
    await running.drain()
    await running.sidecar.compute_drift()
    status, m = await scrape(running)
    assert status == 200
    assert sample(m, "modelmon_drift_window_samples", model="m", feature="y") == 150
    assert sample(m, "modelmon_feature_missing_ratio", model="m", feature="y") == pytest.approx(2 / 152)
    assert sample(m, "modelmon_feature_value_count", model="m", feature="y") == 150
    # the empty reference: a histogram of nothing, and no mean (not NaN)
    assert sample(m, "modelmon_reference_value_count", model="m", feature="y") == 0
    assert sample(m, "modelmon_reference_value_sum", model="m", feature="y") == 0
    assert sample(m, "modelmon_reference_mean", model="m", feature="y") is None
    assert sample(m, "modelmon_feature_out_of_range_ratio", model="m", feature="y") is None
    assert sample(m, "modelmon_drift_detected", model="m", feature="y") is None
    assert not [k for k in m if k[0] in ("modelmon_drift_score", "modelmon_drift_p_value")
                and ("feature", "y") in k[1]]
    assert sample(m, "modelmon_drift_detected", model="m", feature="x") == 0
    assert sample(m, "modelmon_feature_out_of_range_ratio", model="m", feature="x") == 0


def test_a_reference_with_fewer_values_than_min_samples_is_not_scored() -> None:
    monitor = engine(numeric_feature("few", [1.0, 2.0, 3.0, 4.0, 5.0]),
                     categorical_feature("cat", ["a", "b", "a"]))
    got = scored_all(monitor, {"few": [100.0] * 200, "cat": ["c"] * 200})
    assert nothing_said(got["few"]) and nothing_said(got["cat"])
    assert got["few"].out_of_range_ratio == 1.0  # the range is what it is: every value beyond it
    assert quality(monitor, "cat") == {"unseen_category": 200}
    assert monitor.snapshot is not None and monitor.snapshot.model_detected is None


def chi2_p_value(table: np.ndarray) -> float:
    """The verdict's chi-square p-value of a (reference, window) table: SciPy's Pearson
    statistic against a chi-square scaled to the statistic's exact permutation mean and
    variance (``stats.chi2_moments``, itself checked against SciPy's multivariate
    hypergeometric in tests/test_drift_stats.py). With two bins the statistic is one count,
    the window's in the first bin, hypergeometric given the margins, and the p-value is twice
    its exact tail on the observed side (``scipy.stats.hypergeom``; Fisher's exact test, one
    side doubled), no smaller than the normal one."""
    if table.shape[1] < 2:
        return 1.0
    if table.shape[1] == 2:
        total, first, n = int(table.sum()), int(table[:, 0].sum()), int(table[1].sum())
        count = int(table[1, 0])
        law = ss.hypergeom(total, first, n)
        mean, var = (float(v) for v in law.stats(moments="mv"))
        z = (count - mean) / math.sqrt(var)
        tail = law.sf(count - 1) if z > 0 else law.cdf(count)
        return float(min(1.0, max(2 * ss.norm.sf(abs(z)), 2 * tail)))
    statistic = ss.chi2_contingency(table, correction=False).statistic
    mean, var = stats.chi2_moments(table[:1], table[1:], np.ones((1, table.shape[1]), dtype=bool))
    scale, df = var[0] / (2 * mean[0]), 2 * mean[0] ** 2 / var[0]
    return float(ss.chi2.sf(statistic / scale, df))


def binned_table(monitor: ModelDrift, name: str) -> np.ndarray:
    pos = monitor.position[name]
    ref = np.asarray(monitor.features[pos].counts, dtype=float)
    return np.vstack([ref, monitor.cumulative_bins(pos)])


def test_a_single_valued_reference_sees_a_shift_either_way() -> None:
    """Reference: 1,000 times 7. Below 7 the values shared the reference's bin (-inf, 7]: a
    downward shift went unseen by every statistic."""
    reference = np.full(1000, 7.0)
    for live, drifted in ((6.0, True), (6.9999, True), (8.0, True), (7.0, False)):
        monitor = engine(numeric_feature("one", reference))
        f = scored(monitor, "one", [live] * 200)
        assert f.detected is drifted, live
        raw_d = ss.ks_2samp(reference, np.full(200, live)).statistic
        assert f.scores["ks"] == pytest.approx(raw_d)  # each value has its own bin: D is exact
        assert "wasserstein" not in f.scores  # normalised by std 0: not defined
        table = binned_table(monitor, "one")
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] > 1:
            assert f.p_values["chi2"] == pytest.approx(chi2_p_value(table), rel=1e-6, abs=1e-300)
        else:  # one bin holds everything: nothing to test, p = 1
            assert f.p_values == {"chi2": 1.0, "ks": 1.0, "location": 1.0, "scale": 1.0}
        assert f.out_of_range_ratio == (1.0 if live != 7.0 else 0.0)


@pytest.mark.parametrize(("odd", "live", "drifted"), [
    (3.0, 7.0, False),  # the reference as it is
    (3.0, 5.0, True),   # between the odd value and the rest: shared the bin (-inf, 7]
    (3.0, 3.0, True),   # the odd one becomes the rule
    (9.0, 8.0, True),
    (9.0, 7.0, False),
])
def test_a_reference_all_identical_but_one(odd: float, live: float, drifted: bool) -> None:
    reference = np.array([7.0] * 999 + [odd])
    monitor = engine(numeric_feature("v", reference))
    f = scored(monitor, "v", [live] * 200)
    assert f.detected is drifted
    assert f.scores["ks"] == pytest.approx(ss.ks_2samp(reference, np.full(200, live)).statistic)
    assert f.scores["wasserstein"] >= 0  # std > 0: defined
    assert f.out_of_range_ratio == (0.0 if min(odd, 7.0) <= live <= max(odd, 7.0) else 1.0)


def test_a_single_category_reference_sees_the_window_move_elsewhere() -> None:
    """Reference: one category. Expected window counts under the reference alone were 0 in
    every other bucket, which the chi-square merge folded away: p = 1, no drift, for a window of
    nothing but unseen values."""
    for live, drifted in (("a", False), ("b", True)):
        monitor = engine(categorical_feature("one", ["a"] * 1000))
        f = scored(monitor, "one", [live] * 200)
        table = binned_table(monitor, "one")
        table = table[:, table.sum(axis=0) > 0]
        assert f.p_values["chi2"] == pytest.approx(chi2_p_value(table), rel=1e-6, abs=1e-300)
        assert f.detected is drifted
