"""``modelmon profile``: build a reference profile from a training-data file in two passes.

Pass 1 streams the file once to learn, per numeric column, count, min, max, mean and variance
(merged chunk by chunk with Chan's parallel formula) and a uniform reservoir sample from which
the quantile edges are taken; per categorical column, exact category counts (bounded). If a
numeric column had more values than the reservoir holds, pass 2 streams the file again to count
every value into the final bins; otherwise the reservoir *is* the column and no second pass is
needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .datasource import Chunk, DataSourceError, Progress, open_source
from .profile import (
    DEFAULT_BINS,
    DEFAULT_TOP_K,
    CategoricalFeature,
    Feature,
    NumericFeature,
    Profile,
    Role,
    bin_counts,
    categorical_from_counts,
    category_key,
    is_missing,
    quantile_edges,
)

RESERVOIR = 200_000
MAX_DISTINCT = 100_000  # distinct categories counted exactly; later newcomers count as "other"


@dataclass
class _Numeric:
    reservoir_size: int
    rng: np.random.Generator
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    missing: int = 0
    sample: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    edges: tuple[float, ...] = ()
    counts: NDArray[np.int64] | None = None

    def add(self, values: NDArray[np.float64]) -> None:
        finite = values[np.isfinite(values)]
        self.missing += int(values.size - finite.size)
        k = finite.size
        if k == 0:
            return
        mean_b = float(finite.mean())
        m2_b = float(((finite - mean_b) ** 2).sum())
        total = self.n + k
        delta = mean_b - self.mean
        self.mean += delta * k / total
        self.m2 += m2_b + delta * delta * self.n * k / total
        self.lo = min(self.lo, float(finite.min()))
        self.hi = max(self.hi, float(finite.max()))
        self._reservoir(finite)
        self.n = total

    def _reservoir(self, values: NDArray[np.float64]) -> None:
        """Algorithm R, vectorised; ``self.n`` values were seen before this chunk."""
        start = self.n
        room = self.reservoir_size - self.sample.size
        if room > 0:
            taken = values[:room]
            self.sample = np.concatenate([self.sample, taken])
            values = values[room:]
            start += taken.size
        if values.size == 0:
            return
        # The value with global index t replaces a random slot with probability R / (t + 1).
        t = start + np.arange(values.size)
        keep = self.rng.random(values.size) < self.reservoir_size / (t + 1.0)
        slots = self.rng.integers(0, self.reservoir_size, int(keep.sum()))
        self.sample[slots] = values[keep]

    @property
    def exact(self) -> bool:
        """True when every finite value is in the sample."""
        return self.n <= self.reservoir_size

    def feature(self, name: str, role: Role) -> NumericFeature:
        assert self.counts is not None
        if not self.n:  # no values: no statistics (null in the file), see NumericFeature.empty
            return NumericFeature(name, role, self.edges, tuple(int(c) for c in self.counts),
                                  self.missing, math.nan, math.nan, math.nan, math.nan)
        return NumericFeature(name, role, self.edges, tuple(int(c) for c in self.counts), self.missing,
                              self.lo, self.hi, self.mean, math.sqrt(self.m2 / self.n))


@dataclass
class _Categorical:
    counts: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    other: int = 0
    # Text seen, and its key (None: missing): a column's few spellings are read once each.
    text_keys: dict[str, str | None] = field(default_factory=dict)

    def add(self, values: NDArray[Any]) -> None:
        text_keys = self.text_keys
        for v in values.tolist():
            if type(v) is str:
                if v in text_keys:
                    key = text_keys[v]
                else:
                    key = None if is_missing(v) else category_key(v)
                    if len(text_keys) < MAX_DISTINCT:
                        text_keys[v] = key
                if key is None:
                    self.missing += 1
                    continue
            elif is_missing(v):
                self.missing += 1
                continue
            else:
                key = category_key(v)
            if key in self.counts:
                self.counts[key] += 1
            elif len(self.counts) < MAX_DISTINCT:
                self.counts[key] = 1
            else:
                self.other += 1


def build_profile(
    path: str | Path,
    *,
    model: str,
    model_version: str = "",
    features: Sequence[str] | None = None,
    categorical: Sequence[str] = (),
    target: str | None = None,
    prediction: str | None = None,
    bins: int = DEFAULT_BINS,
    top_k: int = DEFAULT_TOP_K,
    names: list[str] | None = None,
    reservoir: int = RESERVOIR,
    progress: Progress | None = None,
    seed: int = 0,
) -> Profile:
    """Build a profile from a CSV, Parquet or NumPy file (see module docstring)."""
    source = open_source(path, names)
    roles = _roles(source.header, features, target, prediction)
    rng = np.random.default_rng(seed)
    numeric: dict[str, _Numeric] = {}
    cats: dict[str, _Categorical] = {}
    rows = 0
    # Categorical columns come as the source's values (CSV text as written, integers with every
    # digit), never parsed as floats first: see datasource.
    for chunk in source.chunks(list(roles), keyed=categorical, progress=progress):
        rows += len(next(iter(chunk.values()))) if chunk else 0
        for name in roles:
            values = chunk[name]
            if name not in numeric and name not in cats:
                if values.dtype == object or name in categorical:
                    cats[name] = _Categorical()
                else:
                    numeric[name] = _Numeric(reservoir, rng)
            if name in numeric:
                if values.dtype == object:
                    raise DataSourceError(
                        f"column {name!r} looked numeric but holds text further on: "
                        f"list it with --categorical, or clean the data")
                numeric[name].add(values)
            else:
                cats[name].add(values)
    if rows == 0:
        raise DataSourceError(f"{path}: no data rows")
    for acc in numeric.values():
        acc.edges = quantile_edges(acc.sample, bins)
        if acc.exact:
            acc.counts = bin_counts(acc.sample, acc.edges)
    second = [name for name, acc in numeric.items() if not acc.exact]
    if second:
        _count_pass(source.chunks(second, keyed=categorical), second, numeric)
    out: list[Feature] = []
    for name, role in roles.items():
        if name in numeric:
            out.append(numeric[name].feature(name, role))
        else:
            c = cats[name]
            out.append(categorical_from_counts(name, c.counts, c.missing, role, top_k, c.other))
    return Profile(model, model_version, rows, tuple(out), source=Path(path).name)


def _count_pass(chunks: Iterator[Chunk], names: list[str], numeric: dict[str, _Numeric]) -> None:
    for name in names:
        numeric[name].counts = np.zeros(len(numeric[name].edges) + 1, dtype=np.int64)
    for chunk in chunks:
        for name in names:
            acc = numeric[name]
            assert acc.counts is not None
            acc.counts += bin_counts(chunk[name], acc.edges)


def _roles(header: list[str], features: Sequence[str] | None, target: str | None,
           prediction: str | None) -> dict[str, Role]:
    for name in [*(features or ()), *(c for c in (target, prediction) if c)]:
        if name not in header:
            raise DataSourceError(f"column {name!r} not in the data (columns: {', '.join(header)})")
    special = {c for c in (target, prediction) if c}
    roles: dict[str, Role] = {n: "input" for n in (features or [h for h in header if h not in special])}
    if prediction:
        roles[prediction] = "output"
    if target:
        roles[target] = "target"
    return roles


__all__ = ["CategoricalFeature", "NumericFeature", "build_profile"]
