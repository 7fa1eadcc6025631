"""Reference profiles: binning properties, building from files, the JSON format and hash."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from modelmon.reference.builder import build_profile
from modelmon.reference.profile import (
    CategoricalFeature,
    NumericFeature,
    Profile,
    ProfileError,
    bin_counts,
    categorical_feature,
    load_profile,
    numeric_feature,
    profile_from_dict,
    quantile_edges,
)

finite_floats = st.floats(-1e9, 1e9, allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, st.integers(1, 400), elements=finite_floats), st.integers(2, 40))
def test_edges_are_strictly_increasing_and_every_value_has_a_bin(values: np.ndarray, bins: int) -> None:
    edges = quantile_edges(values, bins)
    assert all(b > a for a, b in itertools.pairwise(edges))
    assert len(edges) <= bins + 1  # bins - 1 interior quantiles + the two tail quantiles
    counts = bin_counts(values, edges)
    assert len(counts) == len(edges) + 1
    assert counts.sum() == len(values)


@given(arrays(np.float64, st.integers(1, 200), elements=finite_floats))
def test_bins_follow_prometheus_le_semantics(values: np.ndarray) -> None:
    """A value lands in the first bin whose upper edge is >= the value, exactly as a Prometheus
    histogram bucket `le` counts it; cumulative counts equal counting `values <= edge`."""
    edges = quantile_edges(values)
    cumulative = np.cumsum(bin_counts(values, edges))
    for edge, count in zip(edges, cumulative, strict=False):
        assert count == int((values <= edge).sum())
    assert cumulative[-1] == len(values)


@given(arrays(np.float64, st.integers(0, 100),
              elements=st.one_of(finite_floats, st.just(math.nan), st.just(math.inf))))
def test_non_finite_values_are_not_binned(values: np.ndarray) -> None:
    edges = quantile_edges(values)
    assert bin_counts(values, edges).sum() == np.isfinite(values).sum()


def test_constant_feature_gets_a_bin_of_its_own() -> None:
    """Below, at, above the constant: a shift either way leaves the reference's bin."""
    f = numeric_feature("c", np.full(1000, 7.0))
    assert len(f.edges) == 2 and f.edges[1] == 7.0 and 7.0 - 1e-5 < f.edges[0] < 7.0
    assert f.counts == (0, 1000, 0)
    assert (f.min, f.max, f.std) == (7.0, 7.0, 0.0)


def test_all_nan_feature_has_no_statistics() -> None:
    f = numeric_feature("n", np.full(50, np.nan))
    assert f.edges == () and f.counts == (0,) and f.missing == 50 and f.empty
    assert all(math.isnan(v) for v in (f.min, f.max, f.mean, f.std))


def test_tail_edges_at_1st_and_99th_percentile() -> None:
    values = np.random.default_rng(0).standard_normal(100_000)
    edges = np.array(quantile_edges(values, 20))
    assert len(edges) == 21
    np.testing.assert_allclose(edges[[0, -1]], np.quantile(values, [0.01, 0.99]))


def test_categorical_top_k_and_other() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5 + [None, "", float("nan")]
    f = categorical_feature("cat", values, top_k=2)
    assert f.categories == ("a", "b") and f.counts == (50, 30, 20) and f.missing == 3
    assert categorical_feature("n", [1, 1.0, True, "1"]).categories == ("1", "true")


def write_csv(path: Path, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 10, rows)
    income = rng.lognormal(10, 1, rows)
    plan = rng.choice(["basic", "pro", "team", "enterprise"], rows, p=[0.5, 0.3, 0.15, 0.05])
    score = rng.random(rows)
    label = (score > 0.7).astype(int)
    with path.open("w") as f:
        f.write("age,income,plan,score,label\n")
        for i in range(rows):
            inc = "" if i % 97 == 0 else f"{income[i]:.6f}"
            f.write(f"{age[i]:.6f},{inc},{plan[i]},{score[i]:.6f},{label[i]}\n")
    income = np.round(income, 6)
    income[np.arange(rows) % 97 == 0] = np.nan
    return {"age": np.round(age, 6), "income": income, "plan": plan, "score": np.round(score, 6)}


@pytest.mark.parametrize("reservoir", [1_000_000, 5_000])  # one pass; two passes
def test_build_from_csv_matches_numpy(tmp_path: Path, reservoir: int) -> None:
    data = write_csv(tmp_path / "train.csv", 20_000)
    profile = build_profile(tmp_path / "train.csv", model="churn", model_version="3", target="label",
                            prediction="score", reservoir=reservoir)
    by_name = {f.name: f for f in profile.features}
    assert [f.name for f in profile.features] == ["age", "income", "plan", "score", "label"]
    roles = (by_name["score"].role, by_name["label"].role, by_name["age"].role)
    assert roles == ("output", "target", "input")
    assert profile.rows == 20_000
    for name in ("age", "income"):
        f = by_name[name]
        assert isinstance(f, NumericFeature)
        values = data[name][np.isfinite(data[name])]
        assert f.missing == 20_000 - len(values)
        assert f.min == values.min() and f.max == values.max()
        assert f.mean == pytest.approx(values.mean(), rel=1e-9)
        assert f.std == pytest.approx(values.std(), rel=1e-9)
        # Counts are exact for the edges chosen, whichever pass produced them.
        assert list(f.counts) == list(bin_counts(values, f.edges))
        if reservoir > 20_000:  # the whole column fitted: exact quantiles
            assert f.edges == quantile_edges(values)
    plan = by_name["plan"]
    assert isinstance(plan, CategoricalFeature)
    assert plan.categories == ("basic", "pro", "team", "enterprise")
    assert dict(zip(plan.categories, plan.counts, strict=False)) == {
        c: int((data["plan"] == c).sum()) for c in plan.categories}


def test_reservoir_edges_approximate_the_true_quantiles(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", 30_000)
    approx = build_profile(tmp_path / "train.csv", model="m", reservoir=3_000)
    exact = build_profile(tmp_path / "train.csv", model="m", reservoir=100_000)
    for a, e in zip(approx.features, exact.features, strict=True):
        if isinstance(a, NumericFeature) and isinstance(e, NumericFeature) and a.name == "age":
            shares = np.array(a.counts) / sum(a.counts)
            # Each ~5% bin from a 3k-value reservoir holds 5% +- a few points of the data.
            assert np.abs(shares[1:-1] - np.array(e.counts[1:-1]) / sum(e.counts)).max() < 0.03


def test_build_from_numpy_and_parquet_agree_with_csv(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "train.csv", 5_000)
    from_csv = build_profile(tmp_path / "train.csv", model="m", features=["age", "income", "score"])
    matrix = np.column_stack([data["age"], data["income"], data["score"]])
    np.save(tmp_path / "train.npy", matrix)
    from_npy = build_profile(tmp_path / "train.npy", model="m", names=["age", "income", "score"])
    np.savez(tmp_path / "train.npz", age=data["age"], income=data["income"], score=data["score"])
    from_npz = build_profile(tmp_path / "train.npz", model="m")
    pq.write_table(pa.table({"age": data["age"], "income": data["income"], "score": data["score"],
                             "plan": data["plan"]}), tmp_path / "train.parquet")
    from_parquet = build_profile(tmp_path / "train.parquet", model="m", features=["age", "income", "score"])
    for other in (from_npy, from_npz, from_parquet):
        assert [f.counts for f in other.features] == [f.counts for f in from_csv.features]
        assert [getattr(f, "edges", None) for f in other.features] == \
            [getattr(f, "edges", None) for f in from_csv.features]
    full = build_profile(tmp_path / "train.parquet", model="m")
    assert {f.name: f.kind for f in full.features}["plan"] == "categorical"


def test_json_round_trip_and_hash(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", 2_000)
    profile = build_profile(tmp_path / "train.csv", model="m", model_version="1")
    profile.save(tmp_path / "p.json")
    loaded = load_profile(tmp_path / "p.json")
    assert loaded == profile
    assert loaded.hash == profile.hash and profile.hash.startswith("sha256:")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == "modelmon.profile" and doc["format_version"] == 1
    # The hash covers content, not the creation time...
    doc["created_at"] = "2000-01-01T00:00:00+00:00"
    assert profile_from_dict(doc).hash == profile.hash
    # ...and a hand edit is caught.
    doc["features"][0]["counts"][0] += 1
    with pytest.raises(ProfileError, match="hash mismatch"):
        profile_from_dict(doc)
    del doc["hash"]
    assert profile_from_dict(doc).hash != profile.hash


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d.update(format="other"), "not a modelmon profile"),
    (lambda d: d.update(format_version=99), "unsupported profile format_version"),
    (lambda d: d["features"][0].update(counts=[1, 2]), "counts for"),
    (lambda d: d["features"][0].update(edges=[2.0, 1.0], counts=[1, 1, 1]), "strictly increasing"),
    (lambda d: d["features"][0].update(kind="image"), "kind 'image' unknown"),
    (lambda d: d["features"][0].pop("edges"), "malformed profile"),
])
def test_bad_profiles_are_rejected_clearly(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    profile = Profile("m", "1", 10, (numeric_feature("x", np.arange(10.0)),))
    doc = json.loads(profile.to_json())
    del doc["hash"]
    mutate(doc)
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(doc)


def test_profile_command(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", 1_000)
    out = tmp_path / "profile.json"
    result = subprocess.run(
        [sys.executable, "-m", "modelmon", "profile", str(tmp_path / "train.csv"), "--out", str(out),
         "--model", "churn", "--categorical", "label", "--prediction", "score", "--bins", "10"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    profile = load_profile(out)
    kinds = {f.name: (f.kind, f.role) for f in profile.features}
    assert kinds["label"] == ("categorical", "input")
    assert kinds["score"] == ("numeric", "output")
    assert len(profile.features[0].counts) <= 12  # 9 interior + 2 tail edges -> <= 12 bins
    assert profile.hash in result.stderr
    bad = subprocess.run([sys.executable, "-m", "modelmon", "profile", str(tmp_path / "train.csv"),
                          "--out", str(out), "--features", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "column 'nope' not in the data" in bad.stderr



def test_a_profile_feature_with_an_unknown_role_is_refused_by_name() -> None:
    """A role outside input/output/target was loaded silently and the feature was then neither an
    input nor an output: never monitored as either."""
    from modelmon.reference.profile import FORMAT, FORMAT_VERSION, ProfileError, profile_from_dict

    feature = {"kind": "categorical", "name": "a", "role": "bogus", "categories": ["x"], "counts": [1],
               "missing": 0}
    with pytest.raises(ProfileError, match=r"features\[0\]\.role must be one of input, output, target"):
        profile_from_dict({"format": FORMAT, "format_version": FORMAT_VERSION, "model": "m", "rows": 1,
                           "features": [feature]})
