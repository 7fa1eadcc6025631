"""Reference profiles: what a model's inputs and outputs looked like in training.

A profile is a versioned JSON document (format documented in ``docs/profile.md``): per numeric
feature, quantile bin edges (with extra edges at the 1st and 99th percentile so thin tails get
their own bins) and reference counts in the bins ``(-inf, e0], (e0, e1], ..., (e_last, +inf)``,
plus min/max/mean/std and the missing rate; per categorical feature, the top-K categories with
counts and an "other" bucket. Its content hash is exported as an info metric, so every drift
number can be traced to the baseline it was computed against.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

FORMAT = "modelmon.profile"
FORMAT_VERSION = 1
DEFAULT_BINS = 20
DEFAULT_TOP_K = 20
TAIL_QUANTILES = (0.01, 0.99)
OTHER = "__other__"

Role = Literal["input", "output", "target"]


class ProfileError(ValueError):
    """A profile file is unreadable, of an unknown version, or inconsistent."""


@dataclass(frozen=True)
class NumericFeature:
    name: str
    role: Role
    edges: tuple[float, ...]
    counts: tuple[int, ...]  # len(edges) + 1 bins
    missing: int
    min: float
    max: float
    mean: float
    std: float
    kind: Literal["numeric"] = "numeric"

    @property
    def count(self) -> int:
        return sum(self.counts)

    def validate(self) -> None:
        if len(self.counts) != len(self.edges) + 1:
            raise ProfileError(f"feature {self.name!r}: {len(self.counts)} counts for "
                               f"{len(self.edges)} edges (want edges + 1)")
        if any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise ProfileError(f"feature {self.name!r}: edges must be strictly increasing")
        if not all(math.isfinite(e) for e in self.edges):
            raise ProfileError(f"feature {self.name!r}: edges must be finite")


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    role: Role
    categories: tuple[str, ...]
    counts: tuple[int, ...]  # one per category, then the "other" bucket
    missing: int
    kind: Literal["categorical"] = "categorical"

    @property
    def count(self) -> int:
        return sum(self.counts)

    def validate(self) -> None:
        if len(self.counts) != len(self.categories) + 1:
            raise ProfileError(f"feature {self.name!r}: want one count per category plus 'other'")
        if len(set(self.categories)) != len(self.categories):
            raise ProfileError(f"feature {self.name!r}: duplicate categories")


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class Profile:
    model: str
    model_version: str
    rows: int
    features: tuple[Feature, ...]
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    source: str = ""

    def content(self) -> dict[str, Any]:
        """The hashed part: everything but the creation time and the hash itself."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model,
            "model_version": self.model_version, "rows": self.rows, "source": self.source,
            "features": [_feature_dict(f) for f in self.features],
        }

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        doc = {**self.content(), "created_at": self.created_at, "hash": self.hash}
        return json.dumps(doc, indent=1) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    def inputs(self) -> list[Feature]:
        return [f for f in self.features if f.role == "input"]

    def outputs(self) -> list[Feature]:
        return [f for f in self.features if f.role == "output"]


def _feature_dict(f: Feature) -> dict[str, Any]:
    d = asdict(f)
    for key, value in d.items():
        if isinstance(value, tuple):
            d[key] = list(value)
    return d


def load_profile(path: str | Path) -> Profile:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    return profile_from_dict(doc, str(path))


def profile_from_dict(doc: Mapping[str, Any], where: str = "profile") -> Profile:
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise ProfileError(f"{where}: not a modelmon profile (format must be {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ProfileError(f"{where}: unsupported profile format_version {doc.get('format_version')!r}")
    features: list[Feature] = []
    try:
        for raw in doc["features"]:
            raw = dict(raw)
            kind = raw.pop("kind")
            if kind == "numeric":
                f: Feature = NumericFeature(
                    raw["name"], raw["role"], tuple(float(e) for e in raw["edges"]),
                    tuple(int(c) for c in raw["counts"]), int(raw["missing"]), float(raw["min"]),
                    float(raw["max"]), float(raw["mean"]), float(raw["std"]))
            elif kind == "categorical":
                f = CategoricalFeature(raw["name"], raw["role"], tuple(str(c) for c in raw["categories"]),
                                       tuple(int(c) for c in raw["counts"]), int(raw["missing"]))
            else:
                raise ProfileError(f"{where}: feature kind {kind!r} unknown")
            f.validate()
            features.append(f)
        profile = Profile(str(doc["model"]), str(doc.get("model_version", "")), int(doc["rows"]),
                          tuple(features), str(doc.get("created_at", "")), str(doc.get("source", "")))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProfileError):
            raise
        raise ProfileError(f"{where}: malformed profile: {exc!r}") from None
    names = [f.name for f in features]
    if len(names) != len(set(names)):
        raise ProfileError(f"{where}: duplicate feature names")
    if "hash" in doc and doc["hash"] != profile.hash:
        raise ProfileError(f"{where}: content hash mismatch (file edited by hand?)")
    return profile


# --- building ------------------------------------------------------------------------------------


def quantile_edges(values: NDArray[np.float64], bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """Interior bin edges at ``bins`` equal-probability quantiles plus the 1st and 99th
    percentiles; duplicates (discrete or constant data) collapse. Values equal to an edge fall
    in the bin below it (Prometheus ``le`` semantics)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ()
    probs = np.unique(np.concatenate([np.linspace(0.0, 1.0, bins + 1)[1:-1], TAIL_QUANTILES]))
    edges = np.unique(np.quantile(finite, probs, method="linear"))
    return tuple(float(e) for e in edges)


def bin_counts(values: NDArray[np.float64], edges: tuple[float, ...]) -> NDArray[np.int64]:
    finite = values[np.isfinite(values)]
    idx = np.searchsorted(np.asarray(edges), finite, side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def numeric_feature(name: str, values: Iterable[Any] | NDArray[np.float64], role: Role = "input",
                    bins: int = DEFAULT_BINS) -> NumericFeature:
    """Profile one numeric column held in memory (the streaming builder does the same in chunks)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    edges = quantile_edges(finite, bins)
    counts = bin_counts(finite, edges) if finite.size else np.zeros(1, dtype=np.int64)
    return NumericFeature(
        name, role, edges, tuple(int(c) for c in counts), int(arr.size - finite.size),
        float(finite.min()) if finite.size else 0.0, float(finite.max()) if finite.size else 0.0,
        float(finite.mean()) if finite.size else 0.0, float(finite.std()) if finite.size else 0.0,
    )


def categorical_feature(name: str, values: Iterable[Any], role: Role = "input",
                        top_k: int = DEFAULT_TOP_K) -> CategoricalFeature:
    counts: dict[str, int] = {}
    missing = 0
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            missing += 1
            continue
        key = category_key(v)
        counts[key] = counts.get(key, 0) + 1
    return categorical_from_counts(name, counts, missing, role, top_k)


def categorical_from_counts(name: str, counts: Mapping[str, int], missing: int, role: Role,
                            top_k: int, other: int = 0) -> CategoricalFeature:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = ranked[:top_k]
    rest = other + sum(c for _, c in ranked[top_k:])
    return CategoricalFeature(name, role, tuple(k for k, _ in top),
                              (*(c for _, c in top), rest), missing)


def category_key(value: Any) -> str:
    """The string a categorical value is counted under (JSON true -> "true", 3.0 -> "3").

    A JSON array or object is no category: it gets a fixed key, never its repr, which is as
    large as the payload and recursive (a deeply nested value raised RecursionError)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return "[...]" if isinstance(value, list) else "{...}"
    return str(value)
