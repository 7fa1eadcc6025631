"""One spelling of a value on both sides (issue 9, from a review): a reference profile built from
CSV, Parquet or NumPy has the categories, edges and range that the same values have when a
client sends them as JSON.

The expected values come from outside modelmon: NumPy's ``str()`` of a float32/float16 (its
shortest decimal, what a CSV file written from the array holds) and orjson's serialisation of
NumPy arrays (Ryu, independent of NumPy) for what a client sends; Python's ``int`` for integers;
pyarrow for Parquet.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import StartSidecar
from hypothesis import assume, given
from hypothesis import strategies as st
from modelmon.drift.columns import QUALITY_KINDS, Batch, numeric_values
from modelmon.drift.engine import DriftSettings, ModelDrift
from modelmon.jsondecode import loads
from modelmon.reference import datasource
from modelmon.reference.builder import build_profile
from modelmon.reference.datasource import DataSourceError
from modelmon.reference.profile import (
    CategoricalFeature,
    NumericFeature,
    Profile,
    canonical_numbers,
    category_key,
    decimal_floats,
    load_profile,
    numeric_feature,
)

BIG = [2**53 + 1, 2**63 - 1, -(2**63), 7]  # int64 values a float64 cannot hold (but 7)
UBIG = [2**64 - 1, 2**53 + 1, 0]
STEPS = [0.1, 0.7, 1.1, 2.3, 3.3]  # discrete float32 values whose float32 is not the decimal
ZIPS = ["02134", "10001", "00501"]
ODD = [" 3", "+3", "1_000", "3", ".5", "1E3"]  # text that Python's float() reads, JSON does not
CATEGORICAL = ["steps_cat", "big", "ubig", "zip", "odd", "half_cat"]


def client_values(arr: np.ndarray) -> list[Any]:
    """What a client sends for an array: orjson's serialisation (float32 as its shortest
    decimal, integers with every digit), read back by modelmon's JSON dialect. (orjson writes a
    float16 as the float32 it widens to, 0.1 as 0.099975586: NumPy's text is used for those.)"""
    if arr.dtype.kind in "US":
        return [str(v) for v in arr.tolist()]
    if arr.dtype == np.float16:
        return [float(str(v)) for v in arr]
    return list(loads(orjson.dumps(arr, option=orjson.OPT_SERIALIZE_NUMPY)))


def training_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "f32": rng.normal(50, 10, n).astype(np.float32),  # continuous: edges between values
        "steps": rng.choice(np.array(STEPS, np.float32), n),  # discrete: an edge at each value
        "steps_cat": rng.choice(np.array(STEPS, np.float32), n),
        "half": rng.choice(np.array([0.1, 0.3, 2.2], np.float16), n),
        "half_cat": rng.choice(np.array([0.1, 0.3, 2.2], np.float16), n),
        "big": rng.choice(np.array(BIG, np.int64), n),
        "ubig": rng.choice(np.array(UBIG, np.uint64), n),
        "zip": rng.choice(np.array(ZIPS), n),
        "odd": rng.choice(np.array(ODD), n),
    }


def write_sources(arrays: dict[str, np.ndarray], directory: Path) -> dict[str, Path]:
    """The same data as CSV (each value's str(), as pandas' to_csv writes it), Parquet and NPZ."""
    paths = {ext: directory / f"train.{ext}" for ext in ("csv", "parquet", "npz")}
    names = list(arrays)
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(arrays[n] for n in names), strict=True):
            w.writerow([str(v) for v in row])
    pq.write_table(pa.table({n: pa.array(a) for n, a in arrays.items()}), paths["parquet"])
    np.savez(paths["npz"], **arrays)  # type: ignore[arg-type]
    return paths


def quality(monitor: ModelDrift, feature: str) -> dict[str, int]:
    pos = monitor.position[feature]
    return {k: int(v) for k, v in zip(QUALITY_KINDS, monitor.quality.total[pos], strict=True) if v}


# --- float32 and float16 values are their shortest decimals ------------------------------------


def float32_samples() -> np.ndarray:
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2**32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    powers = np.ldexp(1.0, np.arange(-149, 128)).astype(np.float32)
    with np.errstate(over="ignore"):
        return np.concatenate([
            bits[np.isfinite(bits)],
            rng.normal(0, 1, 100_000).astype(np.float32),
            np.exp(rng.uniform(-40, 60, 100_000)).astype(np.float32),
            (rng.integers(1, 10**6, 100_000) * 10.0 ** rng.integers(-15, 25, 100_000)).astype(np.float32),
            powers, np.nextafter(powers, np.float32(0)), np.nextafter(powers, np.float32(np.inf)),
            np.array([*STEPS, 0.000244140625, 16777217, 1e-45, 3.4028235e38, 9.999999e20, 1e21, 1e-13,
                      0.0, -0.0, -0.1], np.float32),
        ])


def test_float32_values_are_their_shortest_decimals() -> None:
    """decimal_floats(v) is float(str(v)) (NumPy's shortest text), and what orjson writes for
    the array, for every kind of float32: continuous, short decimals, powers of two and their
    neighbours (where the rounding interval is lopsided), ties (0.000244140625 lies halfway
    between two 11-digit decimals), subnormals, the extremes -- integers but those beyond 2^24
    (exact in float32, another integer in their shortest text), which stay themselves.
    (Checked once on all 2^32 bit patterns; these are the hard ones and a sample.)"""
    x = float32_samples()
    got = decimal_floats(x)
    assert got.dtype == np.float64
    widened = x.astype(np.float64)
    integral = widened == np.floor(widened)
    assert np.array_equal(got[integral], widened[integral])
    fraction = ~integral
    assert fraction.sum() > 300_000
    assert np.array_equal(got[fraction], np.array([float(str(v)) for v in x[fraction]]))
    assert np.array_equal(got[fraction], np.array(client_values(x[fraction]), dtype=np.float64))
    assert np.array_equal(got.astype(np.float32), x)  # each decimal reads back as its float32
    assert np.array_equal(np.signbit(got), np.signbit(x))
    special = decimal_floats(np.array([np.nan, np.inf, -np.inf], np.float32))
    assert math.isnan(special[0]) and special[1:].tolist() == [math.inf, -math.inf]
    assert decimal_floats(np.array(STEPS, np.float32)).tolist() == STEPS
    assert decimal_floats(np.array([41851352, 16777216, 3], np.float32)).tolist() == [41851352, 16777216, 3]


def test_a_float64_that_is_a_float32s_value_is_its_decimal() -> None:
    """float32 data widened to float64 (pandas' upcasting, ``tolist()``, binary FP32 tensors)
    is read as the float32's decimals; float64 values that are no float32's value, which is
    float64 data, are left as they are (a float64 reference profiles as before)."""
    x = float32_samples()
    assert np.array_equal(decimal_floats(x.astype(np.float64)), decimal_floats(x))
    data = np.random.default_rng(1).normal(0, 1, 100_000)
    data[:5] = [0.1, 0.7, 0.5, 3.0, -2.25]
    assert np.array_equal(decimal_floats(data), data)


def test_float16_values_are_their_shortest_decimals() -> None:
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    got = decimal_floats(every)
    finite = np.isfinite(every)
    assert np.array_equal(got[finite], np.array([float(str(v)) for v in every[finite]]))
    assert np.array_equal(np.isnan(got), np.isnan(every))
    assert decimal_floats(np.array([0.1, 2.2], np.float16)).tolist() == [0.1, 2.2]


def test_live_numbers_read_a_float32_value_as_its_decimal() -> None:
    """Binary FP32 tensors (widened to float64 arrays), float32 arrays, ``tolist()`` values in
    a JSON list, with or without nulls among them: every path gives the decimals."""
    x = np.array(STEPS, np.float32)
    for values in (x, x.astype(np.float64), x.tolist(), [*x.tolist(), None], STEPS):
        got, nulls, wrong = numeric_values(values)
        assert got[:5].tolist() == STEPS, values
        assert (nulls, wrong) == ((1, 0) if None in values else (0, 0))


def test_numeric_feature_reads_a_float32_array_as_its_decimals() -> None:
    f = numeric_feature("x", np.array(STEPS * 20, np.float32))
    assert (f.min, f.max) == (0.1, 3.3) and set(STEPS) <= set(f.edges)


@pytest.mark.parametrize("value", [
    0.1, np.float32(0.1), "0.1", 0.10000000149011612, "0.10000000149011612",
    float(np.float32(0.1)), np.float32(0.1).item(),
])
def test_a_float32_category_has_one_key_however_a_client_spells_it(value: Any) -> None:
    """A float32 0.1 reaches the sidecar as 0.1 (orjson, NumPy's text, a CSV file) or as its
    exact value 0.10000000149011612 (``tolist()``, tritonclient's JSON, binary FP32 tensors):
    one category. (Was: "0.10000000149011612" beside "0.1".)"""
    assert category_key(value) == "0.1"


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_every_spelling_of_a_float32_is_one_key(value: float) -> None:
    """(An integral float is its integer digits, JSON 3.0 being 3: a float32 integer beyond
    2^24 written as its shortest decimal, 41851350 for 41851352, is another integer. Such
    integers are not float32 categories anyone sends.)"""
    f = np.float32(value)
    assume(not (f.item().is_integer() and abs(f.item()) > 2**24))
    key = category_key(f)
    assert key == category_key(float(str(f))) == category_key(f.item()) == category_key(str(f))
    assert category_key(loads(orjson.dumps(np.array([f]), option=orjson.OPT_SERIALIZE_NUMPY))[0]) == key
    assert category_key(loads(json.dumps(f.item()))) == key
    assert category_key(key) == key
    # ... and the float64 next to it, no float32's value, keeps its own spelling
    other = math.nextafter(f.item(), math.inf)
    assert category_key(other) == (str(int(other)) if other.is_integer() else repr(other))


def test_a_float32_profile_from_before_can_be_read_with_decimal_edges() -> None:
    """``canonical_numbers``: edges, minimum and maximum of a profile built from float32 data
    before (at the widened values) read as live numbers are now; order kept."""
    widened = [float(np.float32(v)) for v in STEPS]
    low_margin = widened[0] - widened[0] * 2.0**-23
    old = NumericFeature("x", "input", (low_margin, *widened), (0, 20, 20, 20, 20, 20, 0), 0,
                         widened[0], widened[-1], 1.5, 1.1)
    view = canonical_numbers(old)
    assert view.edges == (low_margin, *STEPS) and (view.min, view.max) == (0.1, 3.3)
    assert (view.counts, view.mean, view.std) == (old.counts, old.mean, old.std)
    monitor = ModelDrift("m", Profile("m", "1", 100, (view,)), DriftSettings(min_samples=10), 10)
    monitor.observe(Batch(10, columns={"x": STEPS + widened}))
    assert quality(monitor, "x") == {}
    assert monitor.cumulative_bins(0).tolist() == [0, 2, 2, 2, 2, 2, 0]
    # edges that would lose their order stay as they were
    tangled = NumericFeature("y", "input", (0.1000000005, widened[0]), (1, 1, 1), 0, 0.0, 1.0, 0.5, 0.5)
    assert canonical_numbers(tangled).edges == tangled.edges


def test_a_float32_profile_from_before_reads_its_categories_as_decimals(tmp_path: Path) -> None:
    """A profile built from float32 Parquet before (categories "0.10000000149011612", ...) loads
    with its hash and is read under the decimal keys: live 0.1 is no unseen category."""
    widened = tuple(repr(float(np.float32(v))) for v in STEPS)
    assert widened[0] == "0.10000000149011612"
    old = Profile("m", "1", 100, (CategoricalFeature("c", "input", widened, (20, 20, 20, 20, 20, 0), 0),))
    old.save(tmp_path / "old.json")
    loaded = load_profile(tmp_path / "old.json")
    assert loaded.hash == old.hash
    monitor = ModelDrift("m", loaded, DriftSettings(min_samples=10), 10)
    assert monitor.features[0].categories == tuple(str(v) for v in STEPS)  # type: ignore[union-attr]
    monitor.observe(Batch(10, columns={"c": STEPS + np.array(STEPS, np.float32).tolist()}))
    assert quality(monitor, "c") == {}


# --- the same data from every source: one profile ------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 700 rows: several chunks, and (with a reservoir of 500) a second pass."""
    monkeypatch.setattr(datasource, "CHUNK_ROWS", 700)


def profiles(paths: dict[str, Path]) -> dict[str, Profile]:
    return {ext: build_profile(path, model="m", categorical=CATEGORICAL, reservoir=500)
            for ext, path in paths.items()}


@pytest.mark.usefixtures("small_chunks")
def test_csv_parquet_and_npz_of_the_same_data_give_the_same_profile(tmp_path: Path) -> None:
    """Was: Parquet/NPZ float32 widened to float64 (categories "0.10000000149011612", edges and
    range at 0.699999988...), CSV categoricals parsed as floats ("02134" -> "2134", " 3" and
    "+3" -> "3", 2^53 + 1 -> "9007199254740992"), int64/uint64 categoricals of Parquet and NPZ
    through float64 (digits lost)."""
    arrays = training_arrays(3000)
    built = profiles(write_sources(arrays, tmp_path))
    by_source = {ext: {f.name: f for f in p.features} for ext, p in built.items()}
    assert by_source["csv"] == by_source["parquet"] == by_source["npz"]
    features = by_source["parquet"]

    def categories(name: str) -> set[str]:
        f = features[name]
        assert isinstance(f, CategoricalFeature), name
        return set(f.categories)

    assert categories("steps_cat") == {"0.1", "0.7", "1.1", "2.3", "3.3"}
    assert categories("half_cat") == {"0.1", "0.3", "2.2"}
    assert categories("big") == {"9007199254740993", "9223372036854775807", "-9223372036854775808", "7"}
    assert categories("ubig") == {"18446744073709551615", "9007199254740993", "0"}
    assert categories("zip") == set(ZIPS)
    # text a JSON number spells is that number ("3", "1E3" -> "1000"), other text stays text
    assert categories("odd") == {" 3", "+3", "1_000", "3", ".5", "1000"}
    for f in features.values():  # a profile built now is read as it is
        assert not isinstance(f, NumericFeature) or canonical_numbers(f) == f, f.name
    steps = features["steps"]
    assert isinstance(steps, NumericFeature)
    assert (steps.min, steps.max) == (0.1, 3.3)
    assert set(STEPS) <= set(steps.edges)
    f32 = features["f32"]
    assert isinstance(f32, NumericFeature) and f32.count == 3000  # counted in the second pass
    decimals = [float(str(v)) for v in arrays["f32"]]
    assert (f32.min, f32.max) == (min(decimals), max(decimals))
    # every edge is one of the decimals, or between two of them (interpolated), never a widened float32
    widened = set(arrays["f32"].astype(np.float64).tolist()) - set(decimals)
    assert not widened & set(f32.edges)


def widened_values(arr: np.ndarray) -> list[Any]:
    """What a client that widens sends: ``json.dumps(arr.tolist())`` (tritonclient's JSON form
    too), float32 0.7 as 0.699999988079071."""
    return list(loads(json.dumps(arr.tolist())))


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("client", ["decimal", "widened"])
@pytest.mark.parametrize("ext", ["csv", "parquet", "npz"])
def test_the_training_values_sent_as_json_are_no_drift(ext: str, client: str, tmp_path: Path) -> None:
    """The training data itself, sent by a client as JSON, float32 values as their decimals
    (orjson) or widened (``tolist()``): every value in its reference bin or category. Was
    (Parquet/NPZ, decimals): "0.1" etc. unseen, 0.7 out of range and in the wrong bin (chi2
    p ~ 1e-305, 43% out of range); (CSV, either client) "02134", "+3", 2^53 + 1 unseen, and
    (CSV, widened) "0.699999988079071" unseen, 1.100000023841858 above the maximum. (float16
    values widened are read as the float32 they widen to, not the float16's decimal: left out.)"""
    arrays = training_arrays(3000)
    profile = build_profile(write_sources(arrays, tmp_path)[ext], model="m", categorical=CATEGORICAL,
                            reservoir=500)
    monitor = ModelDrift("m", profile, DriftSettings(min_samples=100), 50)
    spell = client_values if client == "decimal" else widened_values
    columns = {name: spell(arr) for name, arr in arrays.items()
               if client == "decimal" or arr.dtype != np.float16}
    monitor.observe(Batch(3000, columns=columns, absent={n: 3000 for n in arrays if n not in columns}))
    snapshot = {f.name: f for f in monitor.compute().features}
    for name in columns:
        assert quality(monitor, name) == {}, name
        drift = snapshot[name]
        assert drift.detected is False, name
        assert min(drift.p_values.values()) > 0.999, (name, drift.p_values)
        assert drift.out_of_range_ratio in (None, 0.0), name


async def test_a_parquet_profile_and_live_json_agree_end_to_end(start_sidecar: StartSidecar,
                                                                tmp_path: Path) -> None:
    """The reviewer's case through the sidecar: a float32 Parquet reference (a discrete numeric
    column and a categorical one) and an int64 categorical, the same values pushed as JSON
    records by two clients, one writing float32 values as their decimals (orjson), one widened
    (``json.dumps`` of ``tolist()``): no unseen category, nothing out of range, no drift."""
    rng = np.random.default_rng(9)
    n = 2000
    arrays = {"steps": rng.choice(np.array(STEPS, np.float32), n),
              "steps_cat": rng.choice(np.array(STEPS, np.float32), n),
              "big": rng.choice(np.array(BIG, np.int64), n)}
    pq.write_table(pa.table(arrays), tmp_path / "train.parquet")
    profile = build_profile(tmp_path / "train.parquet", model="m", categorical=["steps_cat", "big"])
    profile.save(tmp_path / "profile.json")
    running = await start_sidecar(None, models=[{"name": "m", "profile": str(tmp_path / "profile.json")}],
                                  drift={"interval_seconds": 3600, "min_samples": 100})
    decimal = orjson.dumps({"model": "m", "records": [
        {"features": dict(zip(arrays, row, strict=True))}
        for row in zip(*(arrays[k] for k in arrays), strict=True)]}, option=orjson.OPT_SERIALIZE_NUMPY)
    widened = json.dumps({"model": "m", "records": [
        {"features": dict(zip(arrays, row, strict=True))}
        for row in zip(*(arrays[k].tolist() for k in arrays), strict=True)]}).encode()
    assert json.loads(decimal)["records"][0]["features"]["steps"] in STEPS  # 0.7, not 0.699999988
    assert json.loads(widened)["records"][0]["features"]["steps"] not in STEPS
    for body in (decimal, widened):
        async with aiohttp.ClientSession() as s, s.post(running.admin_url + "/v1/records", data=body,
                                                        headers={"Content-Type": "application/json"}) as r:
            assert r.status == 202
    await running.drain()
    await running.sidecar.compute_drift()
    monitor = running.sidecar.analysis.drift_models["m"]
    snapshot = {f.name: f for f in monitor.compute().features}
    for name in arrays:
        assert quality(monitor, name) == {}, name
        assert snapshot[name].samples == 2 * n
        assert snapshot[name].detected is False, name
        assert min(snapshot[name].p_values.values()) > 0.999, name


# --- CSV: categorical columns keyed from their text ---------------------------------------------


def write_column(path: Path, name: str, values: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([name, "x"])
        w.writerows([v, str(i)] for i, v in enumerate(values))


def test_a_csv_column_with_text_keeps_its_text_in_every_chunk(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    """An inferred categorical column (text in its first chunk) whose later chunks hold only
    numbers: those are keyed from their text too (was: parsed as floats, "02134" -> "2134")."""
    monkeypatch.setattr(datasource, "CHUNK_ROWS", 4)
    values = ["basic", "pro", "", "basic", "02134", "3.0", "+3", str(2**53 + 1), "1e3", "NA", "7", "7"]
    write_column(tmp_path / "d.csv", "plan", values)
    profile = build_profile(tmp_path / "d.csv", model="m")
    plan = profile.features[0]
    assert isinstance(plan, CategoricalFeature)
    assert dict(zip(plan.categories, plan.counts, strict=False)) == {
        "basic": 2, "pro": 1, "02134": 1, "3": 1, "+3": 1, "9007199254740993": 1, "1000": 1, "7": 2}
    assert plan.missing == 2


def test_a_csv_column_that_looked_numeric_and_holds_text_later_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(datasource, "CHUNK_ROWS", 4)
    write_column(tmp_path / "d.csv", "v", ["1", "2", "3", "4", "5", "oops"])
    with pytest.raises(DataSourceError, match="looked numeric"):
        build_profile(tmp_path / "d.csv", model="m")
    # ... unless it is declared categorical: then every value is its text's key
    plan = build_profile(tmp_path / "d.csv", model="m", categorical=["v"]).features[0]
    assert isinstance(plan, CategoricalFeature) and set(plan.categories) == {"1", "2", "3", "4", "5", "oops"}


def test_a_numeric_csv_column_is_still_read_as_floats(tmp_path: Path) -> None:
    """Only categorical columns keep their text: a numeric column's bins are floats anyway
    (" 3", "+3", "1e3" are numbers there, as before)."""
    write_column(tmp_path / "d.csv", "v", [" 3", "+3", "1e3", "", "2.5"])
    v = build_profile(tmp_path / "d.csv", model="m").features[0]
    assert isinstance(v, NumericFeature)
    assert (v.min, v.max, v.count, v.missing) == (2.5, 1000.0, 4, 1)


def test_a_nullable_integer_parquet_column_keeps_every_digit(tmp_path: Path) -> None:
    """pyarrow gives an int64 column with nulls as float64: as a category, each integer is read
    with its digits instead, nulls missing; as a number it is a float (NaN for null)."""
    column = pa.array([2**53 + 1, None, 2**63 - 1, 2**53 + 1, None], pa.int64())
    pq.write_table(pa.table({"id": column, "n": column}), tmp_path / "d.parquet")
    features = {f.name: f for f in build_profile(tmp_path / "d.parquet", model="m", categorical=["id"]).features}
    ident, number = features["id"], features["n"]
    assert isinstance(ident, CategoricalFeature) and isinstance(number, NumericFeature)
    assert ident.categories == ("9007199254740993", "9223372036854775807") and ident.counts == (2, 1, 0)
    assert ident.missing == 2
    assert (number.count, number.missing, number.max) == (3, 2, float(2**63 - 1))


def test_a_profile_built_from_float32_before_decimals_is_read_as_live_numbers_are() -> None:
    """A float32 profile built before float32 values were read as decimals has its edges, min
    and max at the widened values (0.699999988079071); the sidecar reads them as live numbers
    are read, so unchanged traffic is neither out of range nor drifted (before: 0.7 fell in
    1.1's bin and 3.3 above the maximum)."""
    from dataclasses import replace

    from modelmon.reference.profile import Profile, numeric_feature

    atoms = np.float32([0.1, 0.7, 1.1, 2.3, 3.3])
    rng = np.random.default_rng(5)
    now = numeric_feature("r", rng.choice(atoms, 5000).astype(np.float64))
    widened = [float(np.float32(e)) for e in now.edges]
    old = replace(now, edges=tuple(widened), min=float(np.float32(now.min)), max=float(np.float32(now.max)))
    assert old.edges != now.edges  # the old form really differs
    monitor = ModelDrift("m", Profile("m", "1", 5000, (old,)), DriftSettings(min_samples=100), 10)
    for client in (lambda v: float(str(v)), lambda v: v.item()):  # decimal and widened clients
        live = [client(v) for v in rng.choice(atoms, 1000)]
        monitor.observe(Batch(1000, columns={"r": live}))
    result = monitor.compute().features[0]
    assert result.out_of_range_ratio == 0.0
    assert result.detected is False and min(result.p_values.values()) > 0.01
