"""False-alarm and detection rates of modelmon's drift verdict, from a seeded simulation, next
to what theory allows.

Run it from the repository root::

    .venv/bin/python tests/bench/drift_rates.py                     # the full run, a few minutes
    .venv/bin/python tests/bench/drift_rates.py --trials 500 --null-trials 2000 --days 0   # quicker
    .venv/bin/python tests/bench/drift_rates.py --json rates.json

Not a pytest test (pytest only collects ``test_*.py``); needs only NumPy and SciPy.

**Windows** (part 1). Every trial is independent: a fresh 10,000-sample reference, profiled with
the production code (``numeric_feature``: 20 quantile bins plus 1st/99th-percentile tail edges;
categorical: top-K counts), and a fresh window of ``n`` samples drawn from the scenario's current
distribution. In the no-drift scenarios the window comes from the very distribution the
reference was drawn from, so every detection there is a false alarm. For speed, up to 500
trials run as the features of one ``ModelDrift`` (one feature per trial, each with its own
reference and window); features are scored independently, so this is the same as one
``ModelDrift`` per trial. No-drift scenarios get ``--null-trials`` trials (10,000: a false-alarm
rate near its bar needs them), the others ``--trials`` (2,000); a 95% Wilson interval is printed
with every rate.

Columns (each the share of trials flagged as drifted), first the verdict and its parts:

- ``auto``: the default verdict, ``FeatureDrift.detected`` with ``DriftSettings()``;
- ``old``: the verdict before issue 14, on the same windows: numeric 2 * min(p_chi2, p_ks) <
  0.005, categorical p_chi2 < 0.005, its chi-square on bins merged to expected counts >= 5;
- ``loc``, ``scale``, ``chi2``: one test of the verdict alone at its share of alpha
  (``engine.AUTO_WEIGHTS``; categorical chi2 at the categorical alpha); ``effect``: the lower
  95% confidence bound of the normalised Wasserstein distance above 0.25 (the opt-in rule of
  ``drift.effect_threshold``, off by default);
- ``limit``: what theory allows at the verdict's alpha: for a normal location shift the power of
  the two-sided z-test with known variance (the most powerful unbiased test; any test at this
  false-alarm rate has at most this power), for a normal change of spread the F-test's, for a
  category mix the Pearson chi-square's (noncentral chi-square); for no drift, alpha itself;

then, for comparison, other rules on the same windows: ``ks``, the binned KS test at the
verdict's alpha; ``psi>0.1``, ``psi>0.2``, ``js>0.1`` (distances with their usual thresholds);
``W>0.1``, Evidently's numeric rule (SciPy's Wasserstein distance on the raw values divided by
the reference std, above 0.1); ``t_raw``, Welch's t-test of the raw window against the profile's
mean and std (``scipy.stats.ttest_ind_from_stats``) at the location test's share of alpha;
``rawKS``, ``scipy.stats.ks_2samp`` on the raw values at p < 0.05. Categorical scenarios add
``pearson`` (SciPy's ``chi2_contingency`` on the unmerged table), ``G`` (the same with
``lambda_="log-likelihood"``) and ``exact`` (the Pearson statistic's permutation p-value,
Monte Carlo with 2,000 tables of the same margins), all at the categorical alpha.

**Sequential windows** (part 2). The verdict is re-evaluated every ``drift.interval_seconds``
(15 s) on a window that slides in ``window_seconds / sub_windows`` steps (5 min), so the
per-window false-alarm rate of part 1 is not the rate per hour or per day. ``--days`` simulated
days of steady no-drift traffic (``--rate`` values per hour per feature, normal references)
through the production engine with a fake clock, every evaluation recorded: the share of
evaluations flagged, alarm episodes (runs of consecutive flagged evaluations) per feature and
day, those lasting 15 minutes (an alert's ``for: 15m``), the share of feature-days with one,
and the alpha at which one feature-day in a hundred would see an episode.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import numpy as np
from modelmon.drift import stats
from modelmon.drift.columns import Batch, Column
from modelmon.drift.engine import AUTO_WEIGHTS, DriftSettings, FeatureDrift, ModelDrift, auto_p_value
from modelmon.reference.profile import Feature, Profile, categorical_from_counts, numeric_feature
from numpy.typing import NDArray
from scipy import stats as sps

REFERENCE_SIZE = 10_000
DEFAULT_TRIALS = 2000
DEFAULT_NULL_TRIALS = 10_000
TRIALS_PER_MODEL = 500  # trials scored together as the features of one ModelDrift
SEED = 20240601
SETTINGS = DriftSettings()
ALPHA = SETTINGS.numeric_threshold  # the numeric verdict's alpha, shared by its tests
ALPHA_CATEGORICAL = SETTINGS.categorical_threshold
OLD_ALPHA = 0.005  # the verdict before issue 14: 2 * min(p_chi2, p_ks) < 0.005
OLD_MIN_EXPECTED = 5.0  # ... its chi-square merged bins to expected counts of 5
# The effect rule's threshold in the "effect" column (the rule is off by default:
# drift.effect_threshold is null); the normalised Wasserstein distance's 95% lower bound above it.
EFFECT_THRESHOLD = SETTINGS.effect_threshold if SETTINGS.effect_threshold is not None else 0.25
RAW_KS_ALPHA = 0.05
EXACT_TABLES = 2000  # Monte Carlo tables for the categorical permutation test

Kind = Literal["numeric", "categorical"]
Sampler = Callable[[np.random.Generator, tuple[int, int]], NDArray[Any]]
Limit = Callable[[int, int, float], float]  # (window size, reference size, alpha) -> power

CATEGORY_REFERENCE = (0.5, 0.3, 0.2)
CATEGORY_SHIFTED = (0.4, 0.4, 0.2)  # 10 points moved from the first category to the second
CATEGORY_NUDGED = (0.45, 0.35, 0.2)  # 5 points moved
# Many categories: 20 with Zipf-like shares 1/(i+1); "moved": 3 points from the commonest to
# the fifth; "sparse": the 15th (0.8%) triples.
_ZIPF = 1.0 / np.arange(1, 21)
MANY = tuple((_ZIPF / _ZIPF.sum()).tolist())
MANY_MOVED = tuple((np.asarray(MANY) + np.eye(20)[4] * 0.03 - np.eye(20)[0] * 0.03).tolist())
_sparse = np.asarray(MANY).copy()
_sparse[14] *= 3.0
MANY_SPARSE = tuple((_sparse / _sparse.sum()).tolist())


def _normal(mean: float = 0.0, std: float = 1.0) -> Sampler:
    return lambda rng, shape: rng.normal(mean, std, size=shape)


def _contaminated(share: float, at: float) -> Sampler:
    """N(0, 1) with ``share`` of the values replaced by outliers around ``at`` std (N(at, 0.1))."""
    def sample(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.float64]:
        values = rng.normal(0.0, 1.0, size=shape)
        outliers = rng.random(size=shape) < share
        values[outliers] = rng.normal(at, 0.1, size=int(outliers.sum()))
        return values
    return sample


def _lognormal(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.float64]:
    return rng.lognormal(0.0, 1.0, size=shape)


def _poisson(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.float64]:
    return rng.poisson(3.0, size=shape).astype(np.float64)


def _uniform(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.float64]:
    return rng.random(size=shape)


def _student3(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.float64]:
    return rng.standard_t(3.0, size=shape)


def _indicator(share: float) -> Sampler:
    """A binary feature: 1 in ``share`` of the values (a rare flag), else 0."""
    return lambda rng, shape: (rng.random(size=shape) < share).astype(np.float64)


def _zero_inflated(zeros: float) -> Sampler:
    """0 in ``zeros`` of the values, lognormal in the rest."""
    def sample(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.float64]:
        return np.where(rng.random(size=shape) < zeros, 0.0, rng.lognormal(0.0, 1.0, size=shape))
    return sample


def _categories(probs: tuple[float, ...]) -> Sampler:
    return lambda rng, shape: rng.choice(len(probs), size=shape, p=np.asarray(probs))


# --- what theory allows ---------------------------------------------------------------------------

def shift_limit(shift: float) -> Limit:
    """Power of the two-sided z-test of a normal mean with known variance, reference of m and
    window of n values, at alpha: the most powerful unbiased test of a pure location shift (its
    power at alpha bounds every test's whose false-alarm rate is alpha)."""
    def power(n: int, m: int, alpha: float) -> float:
        z = shift / math.sqrt(1.0 / n + 1.0 / m)
        c = float(sps.norm.isf(alpha / 2))
        return float(sps.norm.cdf(z - c) + sps.norm.cdf(-z - c))
    return power


def spread_limit(ratio: float) -> Limit:
    """Power of the two-sided F-test of equal variances (normal data) at alpha."""
    def power(n: int, m: int, alpha: float) -> float:
        f = sps.f(n - 1, m - 1)
        lo, hi = f.ppf(alpha / 2), f.isf(alpha / 2)
        return float(f.sf(hi / ratio**2) + f.cdf(lo / ratio**2))
    return power


def mix_limit(before: tuple[float, ...], after: tuple[float, ...]) -> Limit:
    """Power of Pearson's chi-square test of homogeneity at alpha (noncentral chi-square)."""
    def power(n: int, m: int, alpha: float) -> float:
        p, q = np.asarray(before), np.asarray(after)
        effective = n * m / (n + m)
        pooled = (m * p + n * q) / (n + m)
        lam = effective * float(((q - p) ** 2 / pooled).sum())
        df = len(p) - 1
        return float(sps.ncx2.sf(sps.chi2.isf(alpha, df), df, lam))
    return power


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    kind: Kind
    n: int  # window size
    reference: Sampler
    current: Sampler
    drifted: bool  # False: every detection is a false alarm
    target: float | None  # default verdict: max false-alarm rate, or min detection rate
    limit: Limit | None = None  # theory: power at (n, reference size, alpha)
    reference_size: int = REFERENCE_SIZE
    min_samples: int | None = None  # drift.min_samples, if not the default's
    max_trials: int | None = None  # at most this many trials (the largest windows)

    def draw(self, rng: np.random.Generator, trials: int) -> tuple[NDArray[Any], NDArray[Any]]:
        """(references, windows): arrays of shape (trials, reference_size) and (trials, n)."""
        return self.reference(rng, (trials, self.reference_size)), self.current(rng, (trials, self.n))

    @property
    def settings(self) -> DriftSettings:
        if self.min_samples is None:
            return SETTINGS
        return msgspec.structs.replace(SETTINGS, min_samples=self.min_samples)

    @property
    def alpha(self) -> float:
        return ALPHA if self.kind == "numeric" else ALPHA_CATEGORICAL

    def theory(self) -> float | None:
        if not self.drifted:
            return self.alpha
        return None if self.limit is None else self.limit(self.n, self.reference_size, self.alpha)


def _null(key: str, name: str, n: int, sampler: Sampler, kind: Kind = "numeric", *,
          reference_size: int = REFERENCE_SIZE, min_samples: int | None = None,
          max_trials: int | None = None) -> Scenario:
    label = (f"no drift, {name}, n={n}" + (f", ref {reference_size}" if reference_size != REFERENCE_SIZE else "")
             + (f", min_samples {min_samples}" if min_samples is not None else ""))
    return Scenario(key, label, kind, n, sampler, sampler, False, 0.01, reference_size=reference_size,
                    min_samples=min_samples, max_trials=max_trials)


SCENARIOS: tuple[Scenario, ...] = (
    _null("none_200", "N(0,1)", 200, _normal()),
    _null("none_1000", "N(0,1)", 1000, _normal()),
    _null("lognormal_200", "lognormal", 200, _lognormal),
    _null("lognormal_1000", "lognormal", 1000, _lognormal),
    _null("poisson_200", "Poisson(3)", 200, _poisson),
    _null("poisson_1000", "Poisson(3)", 1000, _poisson),
    _null("uniform_200", "uniform", 200, _uniform),
    _null("uniform_1000", "uniform", 1000, _uniform),
    _null("student3_200", "Student t(3)", 200, _student3),
    _null("student3_1000", "Student t(3)", 1000, _student3),
    _null("indicator_200", "indicator 0.2%", 200, _indicator(0.002)),
    _null("zeros_200", "99.5% zeros", 200, _zero_inflated(0.995)),
    _null("indicator_100", "indicator 0.02%", 100, _indicator(0.0002)),
    _null("zeros_100", "99.9% zeros", 100, _zero_inflated(0.999)),
    _null("category_none_200", "3 categories", 200, _categories(CATEGORY_REFERENCE), "categorical"),
    _null("category_none_1000", "3 categories", 1000, _categories(CATEGORY_REFERENCE), "categorical"),
    _null("many_none_200", "20 categories", 200, _categories(MANY), "categorical"),
    _null("many_none_1000", "20 categories", 1000, _categories(MANY), "categorical"),
    Scenario("small_shift", "mean +0.1 std, n=1000", "numeric", 1000, _normal(), _normal(0.1), True,
             0.60, shift_limit(0.1)),
    Scenario("shift_200", "mean +0.25 std, n=200", "numeric", 200, _normal(), _normal(0.25), True,
             0.75, shift_limit(0.25)),
    Scenario("scale_200", "std x1.25, n=200", "numeric", 200, _normal(), _normal(0.0, 1.25), True,
             0.60, spread_limit(1.25)),
    Scenario("shift", "mean +0.25 std, n=1000", "numeric", 1000, _normal(), _normal(0.25), True,
             0.99, shift_limit(0.25)),
    Scenario("scale", "std x1.25, n=1000", "numeric", 1000, _normal(), _normal(0.0, 1.25), True,
             0.99, spread_limit(1.25)),
    Scenario("outliers", "5% outliers at +4 std, n=1000", "numeric", 1000, _normal(),
             _contaminated(0.05, 4.0), True, 0.95),
    Scenario("outliers_200", "5% outliers at +4 std, n=200", "numeric", 200, _normal(),
             _contaminated(0.05, 4.0), True, None),
    Scenario("category", "category mix +10 points, n=1000", "categorical", 1000,
             _categories(CATEGORY_REFERENCE), _categories(CATEGORY_SHIFTED), True, 0.99,
             mix_limit(CATEGORY_REFERENCE, CATEGORY_SHIFTED)),
    Scenario("category_small", "category mix +5 points, n=1000", "categorical", 1000,
             _categories(CATEGORY_REFERENCE), _categories(CATEGORY_NUDGED), True, 0.60,
             mix_limit(CATEGORY_REFERENCE, CATEGORY_NUDGED)),
    Scenario("many_moved", "20 categories, 3 points moved, n=1000", "categorical", 1000,
             _categories(MANY), _categories(MANY_MOVED), True, None, mix_limit(MANY, MANY_MOVED)),
    Scenario("many_sparse_200", "20 categories, a 0.8% one x3, n=200", "categorical", 200,
             _categories(MANY), _categories(MANY_SPARSE), True, None, mix_limit(MANY, MANY_SPARSE)),
    Scenario("many_sparse_1000", "20 categories, a 0.8% one x3, n=1000", "categorical", 1000,
             _categories(MANY), _categories(MANY_SPARSE), True, None, mix_limit(MANY, MANY_SPARSE)),
    # The edges of the settings: the smallest windows drift.min_samples allows users to score
    # (20, 50) and the default's (100), windows of 100,000 values, a 500-value reference.
    _null("none_20", "N(0,1)", 20, _normal(), min_samples=20),
    _null("lognormal_20", "lognormal", 20, _lognormal, min_samples=20),
    _null("poisson_20", "Poisson(3)", 20, _poisson, min_samples=20),
    _null("none_50", "N(0,1)", 50, _normal(), min_samples=20),
    _null("lognormal_50", "lognormal", 50, _lognormal, min_samples=20),
    _null("category_none_20", "3 categories", 20, _categories(CATEGORY_REFERENCE), "categorical",
          min_samples=20),
    _null("none_100", "N(0,1)", 100, _normal()),
    _null("lognormal_100", "lognormal", 100, _lognormal),
    _null("poisson_100", "Poisson(3)", 100, _poisson),
    _null("none_100000", "N(0,1)", 100_000, _normal(), max_trials=10_000),
    _null("lognormal_100000", "lognormal", 100_000, _lognormal, max_trials=10_000),
    _null("poisson_100000", "Poisson(3)", 100_000, _poisson, max_trials=10_000),
    _null("none_ref500", "N(0,1)", 200, _normal(), reference_size=500),
    _null("lognormal_ref500", "lognormal", 200, _lognormal, reference_size=500),
    _null("poisson_ref500", "Poisson(3)", 200, _poisson, reference_size=500),
    _null("category_none_ref500", "3 categories", 200, _categories(CATEGORY_REFERENCE), "categorical",
          reference_size=500),
    Scenario("shift_ref500", "mean +0.25 std, n=200, ref 500", "numeric", 200, _normal(), _normal(0.25),
             True, None, shift_limit(0.25), reference_size=500),
    Scenario("shift_100000", "mean +0.05 std, n=100000", "numeric", 100_000, _normal(), _normal(0.05),
             True, None, shift_limit(0.05), max_trials=10_000),
)

VERDICT_COLUMNS: tuple[tuple[str, str], ...] = (  # (column key, header)
    ("auto", "auto"), ("old", "old"), ("location", "loc"), ("scale", "scale"), ("chi2", "chi2"),
    ("effect", "effect"), ("w_lower", "W lo>0"),
)
OTHER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ks", "ks"), ("psi_0.1", "psi>0.1"), ("psi_0.2", "psi>0.2"), ("js_0.1", "js>0.1"),
    ("raw_w", "W>0.1"), ("raw_t", "t_raw"), ("raw_ks", "rawKS"),
    ("pearson", "pearson"), ("g_test", "G"), ("exact", "exact"),
)
COLUMNS = VERDICT_COLUMNS + OTHER_COLUMNS


def category_labels(codes: NDArray[Any]) -> list[str]:
    """Integer category codes as the strings a JSON payload would carry ("c0", "c1", ...)."""
    names = [f"c{i}" for i in range(int(codes.max()) + 1)] if codes.size else []
    return [names[c] for c in codes.tolist()]


def reference_feature(name: str, kind: Kind, reference: NDArray[Any]) -> Feature:
    """Profile one reference sample with the production profiling code."""
    if kind == "numeric":
        return numeric_feature(name, reference)
    counts = np.bincount(reference)
    return categorical_from_counts(name, {f"c{i}": int(c) for i, c in enumerate(counts) if c},
                                   0, "input", top_k=20)


def score_trials(kind: Kind, references: NDArray[Any], windows: NDArray[Any],
                 settings: DriftSettings | None = None
                 ) -> tuple[list[FeatureDrift], list[Feature], NDArray[np.float64]]:
    """Score each (reference, window) pair as one feature of a single ModelDrift; returns the
    FeatureDrift of every trial, in order, the profiled references, and the chi-square p-value
    as it was before issue 14 (bins merged to expected counts of 5, plain chi-square)."""
    trials = len(references)
    features = [reference_feature(f"t{i}", kind, references[i]) for i in range(trials)]
    profile = Profile("sim", "1", references.shape[1], tuple(features))
    md = ModelDrift("sim", profile, settings or SETTINGS, max_features=trials, clock=lambda: 0.0)
    columns: dict[str, Column] = {}
    for i in range(trials):
        columns[f"t{i}"] = windows[i] if kind == "numeric" else category_labels(windows[i])
    md.observe(Batch(rows=windows.shape[1], columns=columns))
    results = list(md.compute().features)
    group = md.numeric if kind == "numeric" else md.categorical
    window = group.window(np.append(md.bins.window(), 0.0))
    old_chi2 = stats.chi2_sf(*stats.chi2_contingency(*old_merge_sparse_bins(group.ref, window, group.mask)))
    return results, features, old_chi2


def old_merge_sparse_bins(ref: NDArray[np.float64], cur: NDArray[np.float64], mask: NDArray[np.bool_]
                          ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """The chi-square's merging before issue 14, for the ``old`` column: adjacent bins merged
    left to right until the table's expected count in the smaller row (pooled count times the
    row's share) is at least OLD_MIN_EXPECTED, a short last group joining the one before; one
    group if no merge gets there (no test). ``stats.merge_sparse_bins`` has since taken the
    expectations from the reference and keeps two groups."""
    out_ref, out_cur, out_mask = np.zeros_like(ref), np.zeros_like(cur), np.zeros_like(mask)
    for r in range(len(ref)):
        bins = np.flatnonzero(mask[r])
        n_ref, n_cur = ref[r, bins].sum(), cur[r, bins].sum()
        share = min(n_ref, n_cur) / (n_ref + n_cur) if n_ref + n_cur > 0 else 0.0
        starts = stats.group_starts(((ref[r, bins] + cur[r, bins]) * share).tolist(), OLD_MIN_EXPECTED)
        g = len(starts)
        out_ref[r, :g] = np.add.reduceat(ref[r, bins], starts)
        out_cur[r, :g] = np.add.reduceat(cur[r, bins], starts)
        out_mask[r, :g] = True
    return out_ref, out_cur, out_mask


def method_flags(results: list[FeatureDrift], kind: Kind, old_chi2: NDArray[np.float64]
                 ) -> dict[str, NDArray[np.bool_]]:
    """Per column, which trials it flags as drifted."""
    def flags(test: Callable[[FeatureDrift], bool]) -> NDArray[np.bool_]:
        return np.array([test(r) for r in results], dtype=bool)

    out = {
        "auto": flags(lambda r: bool(r.detected)),
        "psi_0.1": flags(lambda r: r.scores["psi"] > 0.1),
        "psi_0.2": flags(lambda r: r.scores["psi"] > 0.2),
        "js_0.1": flags(lambda r: r.scores["jensen_shannon"] > 0.1),
    }
    if kind == "numeric":
        ks = np.array([r.p_values["ks"] for r in results])
        out["old"] = 2 * np.minimum(old_chi2, ks) < OLD_ALPHA
        for test in ("location", "scale", "chi2"):
            out[test] = flags(lambda r, t=test: r.p_values[t] < AUTO_WEIGHTS[t] * ALPHA)  # type: ignore[misc]
        out["ks"] = ks < ALPHA
        # no interval where the reference is constant (std 0: a rare indicator's sample can be)
        lower = np.array([r.score_bounds.get("wasserstein", (0.0, 0.0))[0] for r in results])
        out["effect"] = lower > EFFECT_THRESHOLD
        out["w_lower"] = lower > 0
    else:
        out["old"] = old_chi2 < OLD_ALPHA
        out["chi2"] = flags(lambda r: r.p_values["chi2"] < ALPHA_CATEGORICAL)
    return out


def raw_numeric_flags(references: NDArray[np.float64], windows: NDArray[np.float64],
                      features: list[Feature]) -> dict[str, NDArray[np.bool_]]:
    """Rules on the raw values, for comparison (SciPy)."""
    ks, w, t = [], [], []
    for ref, cur, f in zip(references, windows, features, strict=True):
        ks.append(sps.ks_2samp(ref, cur).pvalue < RAW_KS_ALPHA)
        std = float(np.std(ref))
        w.append(std > 0 and sps.wasserstein_distance(ref, cur) / std > 0.1)
        assert f.kind == "numeric"
        welch = sps.ttest_ind_from_stats(float(np.mean(cur)), float(np.std(cur, ddof=1)), len(cur),
                                         f.mean, f.std * math.sqrt(f.count / (f.count - 1)), f.count,
                                         equal_var=False)
        t.append(welch.pvalue < AUTO_WEIGHTS["location"] * ALPHA)
    return {"raw_ks": np.array(ks), "raw_w": np.array(w), "raw_t": np.array(t)}


def raw_categorical_flags(references: NDArray[np.int64], windows: NDArray[np.int64],
                          rng: np.random.Generator) -> dict[str, NDArray[np.bool_]]:
    """SciPy's Pearson and G tests on the unmerged table, and the permutation test."""
    pearson, g, exact = [], [], []
    for ref, cur in zip(references, windows, strict=True):
        k = int(max(ref.max(), cur.max())) + 1
        table = np.vstack([np.bincount(ref, minlength=k), np.bincount(cur, minlength=k)])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            pearson.append(False), g.append(False), exact.append(False)
            continue
        observed = sps.chi2_contingency(table, correction=False)
        pearson.append(observed.pvalue < ALPHA_CATEGORICAL)
        g.append(sps.chi2_contingency(table, correction=False, lambda_="log-likelihood").pvalue
                 < ALPHA_CATEGORICAL)
        columns = table.sum(axis=0)
        draws = rng.multivariate_hypergeometric(columns, int(table[1].sum()), size=EXACT_TABLES)
        exact.append(_exact_p(table, draws, observed.statistic) < ALPHA_CATEGORICAL)
    return {"pearson": np.array(pearson), "g_test": np.array(g), "exact": np.array(exact)}


def _exact_p(table: NDArray[np.int64], windows: NDArray[np.int64], statistic: float) -> float:
    """Monte Carlo permutation p-value of Pearson's statistic given the table's margins."""
    columns = table.sum(axis=0).astype(np.float64)
    total = columns.sum()
    n = table[1].sum()
    expected_cur = columns * n / total
    expected_ref = columns * (total - n) / total
    refs = columns - windows
    stats = (((windows - expected_cur) ** 2 / expected_cur).sum(axis=1)
             + ((refs - expected_ref) ** 2 / expected_ref).sum(axis=1))
    return float((1 + (stats >= statistic * (1 - 1e-9)).sum()) / (len(stats) + 1))


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class ScenarioRates:
    scenario: Scenario
    trials: int
    counts: dict[str, int]  # column -> trials flagged; absent: not applicable
    seconds: float

    def rate(self, column: str) -> float | None:
        return self.counts[column] / self.trials if column in self.counts else None

    def verdict(self) -> tuple[bool, str] | None:
        """(target met, description) for the default verdict, if the scenario has a target."""
        target = self.scenario.target
        if target is None:
            return None
        k = self.counts["auto"]
        rate = k / self.trials
        lo, hi = wilson(k, self.trials)
        what = "detection" if self.scenario.drifted else "false alarms"
        met = rate >= target if self.scenario.drifted else rate <= target
        sign = ">=" if self.scenario.drifted else "<="
        theory = self.scenario.theory()
        limit = ("" if theory is None else
                 f"; limit {theory:.2f}" if self.scenario.drifted else f"; alpha {theory:.2%}")
        return met, (f"{what} {rate:6.2%} (95% CI {lo:.2%}-{hi:.2%}), target {sign} {target:.0%}"
                     f"{limit}")


def run_scenario(scenario: Scenario, trials: int, seed: int) -> ScenarioRates:
    rng = np.random.default_rng([seed, sum(map(ord, scenario.key))])
    start = time.perf_counter()
    counts: dict[str, int] = {}
    done = 0
    # At most ~5 million window values at once (a chunk of 100,000-value windows is 50 trials).
    per_model = max(1, min(TRIALS_PER_MODEL, 5_000_000 // scenario.n))
    while done < trials:
        chunk = min(per_model, trials - done)
        references, windows = scenario.draw(rng, chunk)
        results, features, old_chi2 = score_trials(scenario.kind, references, windows, scenario.settings)
        flags = method_flags(results, scenario.kind, old_chi2)
        if scenario.kind == "numeric":
            flags.update(raw_numeric_flags(references, windows, features))
        else:
            flags.update(raw_categorical_flags(references, windows, rng))
        for column, flagged in flags.items():
            counts[column] = counts.get(column, 0) + int(flagged.sum())
        done += chunk
    return ScenarioRates(scenario, trials, counts, time.perf_counter() - start)


def format_table(rows: list[ScenarioRates], columns: tuple[tuple[str, str], ...], limit: bool) -> str:
    label_width = max(len(r.scenario.label) for r in rows)
    header = (f"{'scenario':<{label_width}}  {'trials':>6}  " + "  ".join(f"{h:>7}" for _, h in columns)
              + ("  " + f"{'limit':>7}" if limit else ""))
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = []
        for column, _ in columns:
            rate = r.rate(column)
            cells.append(f"{'-':>7}" if rate is None else f"{rate:7.2%}")
        if limit:
            theory = r.scenario.theory()
            cells.append(f"{'-':>7}" if theory is None else f"{theory:7.2%}")
        lines.append(f"{r.scenario.label:<{label_width}}  {r.trials:>6}  " + "  ".join(cells))
    return "\n".join(lines)


def format_markdown(rows: list[ScenarioRates]) -> str:
    """The tables of docs/drift.md: numeric scenarios, then categorical ones."""
    def pct(x: float) -> str:
        return f"{x:.2%}"

    dash, alpha = "\N{EN DASH}", "\N{GREEK SMALL LETTER ALPHA}"  # as docs/drift.md writes them

    def table(kind: Kind, auto: str, columns: tuple[str, ...]) -> list[str]:  # auto: its header
        chosen = [r for r in rows if r.scenario.kind == kind]
        if not chosen:
            return []
        headers = dict(COLUMNS)
        out = [f"| scenario | windows | {auto} (95% CI) | limit | "
               + " | ".join(headers[c] for c in columns) + " |",
               "|---" * (4 + len(columns)) + "|"]
        for r in chosen:
            lo, hi = wilson(r.counts["auto"], r.trials)
            theory = r.scenario.theory()
            limit = (dash if theory is None else pct(theory) if r.scenario.drifted
                     else f"{alpha} {pct(theory)}")
            cells = [(dash if (rate := r.rate(c)) is None else pct(rate)) for c in columns]
            out.append(f"| {r.scenario.label} | {r.trials:,} | **{pct(r.counts['auto'] / r.trials)}** "
                       f"({lo * 100:.2f}{dash}{hi:.2%}) | {limit} | " + " | ".join(cells) + " |")
        return out

    numeric = table("numeric", "**auto**", ("old", "location", "scale", "chi2", "effect", "w_lower", "ks",
                                         "raw_w", "raw_t", "raw_ks"))
    categorical = table("categorical", "**auto** = chi2", ("old", "pearson", "g_test", "exact",
                                                          "psi_0.1", "js_0.1"))
    return "\n".join(numeric + ([""] if numeric and categorical else []) + categorical)


# --- part 2: sequential windows -------------------------------------------------------------------

@dataclass
class SequentialRates:
    features: int
    days: float
    rate_per_hour: float
    evaluations: int  # per feature, after the first full window
    flagged_share: float  # of evaluations
    episodes_per_day: float  # per feature
    long_episodes_per_day: float  # lasting >= 15 minutes
    days_with_episode: float  # share of feature-days
    mean_episode_minutes: float
    by_alpha: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def _episodes(flagged: NDArray[np.bool_], min_length: int = 1) -> NDArray[np.int64]:
    """Per row (feature), the (start index) of every run of True of at least min_length."""
    padded = np.concatenate([np.zeros((len(flagged), 1), bool), flagged, np.zeros((len(flagged), 1), bool)],
                            axis=1).astype(np.int8)
    change = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(change == 1)
    _, ends = np.nonzero(change == -1)
    keep = (ends - starts) >= min_length
    return np.stack([rows_s[keep], starts[keep], ends[keep]], axis=1)


def sequential(days: float, features: int, rate_per_hour: float, seed: int) -> SequentialRates:
    """Steady no-drift traffic through the engine with a fake clock, scored every
    interval_seconds; each feature a normal reference of REFERENCE_SIZE and its own stream."""
    start = time.perf_counter()
    rng = np.random.default_rng([seed, 99])
    s = SETTINGS
    now = [1_000_000.0]
    profile = Profile("seq", "1", REFERENCE_SIZE, tuple(
        numeric_feature(f"f{i}", rng.standard_normal(REFERENCE_SIZE)) for i in range(features)))
    md = ModelDrift("seq", profile, s, max_features=features, clock=lambda: now[0])
    step = s.interval_seconds
    warmup = int(s.window_seconds / step)
    total = int(days * 86400 / step) + warmup
    per_step = rate_per_hour * step / 3600
    p_values = np.ones((features, total - warmup))
    old_p = np.ones((features, total - warmup))  # the verdict before issue 14: 2 min(p_chi2, p_ks)
    certain = np.zeros((features, total - warmup), dtype=bool)
    carry = 0.0
    for k in range(total):
        now[0] += step
        carry += per_step
        rows = int(carry)
        carry -= rows
        if rows:
            values = rng.standard_normal((features, rows))
            md.observe(Batch(rows, {f"f{i}": values[i] for i in range(features)}))
        if k < warmup:
            continue
        for i, f in enumerate(md.compute().features):
            if f.detected is not None:
                p_values[i, k - warmup] = auto_p_value(f.p_values)
                old_p[i, k - warmup] = 2 * min(f.p_values["chi2"], f.p_values["ks"])
                certain[i, k - warmup] = (s.effect_threshold is not None
                                          and f.score_bounds["wasserstein"][0] > s.effect_threshold)
    evaluations = total - warmup
    per_day = int(86400 / step)
    feature_days = features * evaluations / per_day
    long_run = math.ceil(900 / step)

    def summary(alpha: float, old: bool = False) -> dict[str, float]:
        flagged = old_p < alpha if old else (p_values < alpha) | certain
        episodes = _episodes(flagged)
        long_episodes = _episodes(flagged, long_run)
        day_index = episodes[:, 1] // per_day if len(episodes) else np.zeros(0, dtype=np.int64)
        whole_days = evaluations // per_day
        with_one = {(int(r), int(d)) for r, d in zip(episodes[:, 0] if len(episodes) else [], day_index,
                                                     strict=True) if d < whole_days}
        return {
            "flagged_share": float(flagged.mean()),
            "episodes_per_day": len(episodes) / feature_days,
            "long_episodes_per_day": len(long_episodes) / feature_days,
            "days_with_episode": len(with_one) / max(features * whole_days, 1),
            "mean_episode_minutes": float((episodes[:, 2] - episodes[:, 1]).mean() * step / 60)
            if len(episodes) else 0.0,
        }

    base = summary(ALPHA)
    by_alpha = {f"{a:g}": summary(a) for a in (ALPHA, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)}
    by_alpha[f"old {OLD_ALPHA:g}"] = summary(OLD_ALPHA, old=True)
    return SequentialRates(features, evaluations * step / 86400, rate_per_hour, evaluations,
                           base["flagged_share"], base["episodes_per_day"], base["long_episodes_per_day"],
                           base["days_with_episode"], base["mean_episode_minutes"], by_alpha,
                           time.perf_counter() - start)


def format_sequential(r: SequentialRates) -> str:
    lines = [f"{r.features} features x {r.days:.1f} days of steady traffic, {r.rate_per_hour:g} values/h "
             f"per feature (window {SETTINGS.window_seconds:g} s in {SETTINGS.sub_windows} steps, scored "
             f"every {SETTINGS.interval_seconds:g} s: {r.evaluations} evaluations per feature)",
             f"  {'alpha':>9}  {'flagged':>8}  {'episodes/day':>12}  {'>=15 min/day':>12}  "
             f"{'days with one':>13}  {'mean length':>11}"]
    for alpha, s in r.by_alpha.items():
        lines.append(f"  {alpha:>9}  {s['flagged_share']:8.3%}  {s['episodes_per_day']:12.3f}  "
                     f"{s['long_episodes_per_day']:12.3f}  {s['days_with_episode']:13.2%}  "
                     f"{s['mean_episode_minutes']:9.1f} m")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="trials per drift scenario")
    parser.add_argument("--null-trials", type=int, default=DEFAULT_NULL_TRIALS,
                        help="trials per no-drift scenario")
    parser.add_argument("--only", nargs="*", metavar="KEY", help="run these scenarios only")
    parser.add_argument("--days", type=float, default=2.0,
                        help="simulated days of the sequential part (0: skip it)")
    parser.add_argument("--features", type=int, default=200, help="features in the sequential part")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="values per hour per feature in the sequential part")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", metavar="FILE", help="also write the rates as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="also write docs/drift.md's tables")
    args = parser.parse_args(argv)
    # A rare indicator's 10,000-value sample can be constant: the engine warns per feature.
    logging.getLogger("modelmon").setLevel(logging.ERROR)
    if args.trials < 1 or args.null_trials < 1:
        parser.error("--trials and --null-trials must be positive")

    start = time.perf_counter()
    print(f"modelmon drift detection rates: {args.trials} trials per drift scenario, {args.null_trials} "
          f"per no-drift one, reference {REFERENCE_SIZE} samples, seed {args.seed}", flush=True)
    rows = []
    for scenario in SCENARIOS:
        if args.only and scenario.key not in args.only:
            continue
        trials = args.trials if scenario.drifted else args.null_trials
        if scenario.max_trials is not None:
            trials = min(trials, scenario.max_trials)
        rows.append(run_scenario(scenario, trials, args.seed))
        print(f"  {scenario.label}: {rows[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    print()
    print(format_table(rows, VERDICT_COLUMNS, limit=True))
    print()
    print(format_table(rows, OTHER_COLUMNS, limit=False))
    print()
    shares = ", ".join(f"{t} {w * ALPHA:g}" for t, w in AUTO_WEIGHTS.items())
    effect = ("off" if SETTINGS.effect_threshold is None
              else f"or the Wasserstein distance's 95% lower bound > {SETTINGS.effect_threshold:g}")
    print(f"auto: numeric alpha {ALPHA:g} ({shares}; effect rule {effect}); categorical chi2 at "
          f"{ALPHA_CATEGORICAL:g}. old: 2*min(p_chi2, p_ks) < {OLD_ALPHA:g}, chi2 on bins merged to "
          f"expected counts >= {OLD_MIN_EXPECTED:g}. effect: Wasserstein 95% lower bound > "
          f"{EFFECT_THRESHOLD:g}. limit: power of the best test at the verdict's alpha (see --help).")
    print()
    print("Targets for the default verdict (auto):")
    misses = 0
    for r in rows:
        checked = r.verdict()
        if checked is None:
            continue
        met, text = checked
        misses += not met
        print(f"  {'PASS' if met else 'MISS'}  {r.scenario.label:<40} {text}")
    seq = None
    if args.days > 0:
        print("\nSequential windows, no drift:", flush=True)
        seq = sequential(args.days, args.features, args.rate, args.seed)
        print(format_sequential(seq))
        print(f"  ({seq.seconds:.0f} s)")
    elapsed = time.perf_counter() - start
    print(f"\n{misses} target(s) missed; total {elapsed:.1f} s")

    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(format_markdown(rows) + "\n")
    if args.json:
        doc: dict[str, Any] = {
            "trials": args.trials, "null_trials": args.null_trials, "seed": args.seed,
            "alpha": ALPHA, "alpha_categorical": ALPHA_CATEGORICAL,
            "weights": AUTO_WEIGHTS, "effect_threshold": SETTINGS.effect_threshold,
            "effect_column_threshold": EFFECT_THRESHOLD, "seconds": elapsed,
            "scenarios": [{
                "key": r.scenario.key, "label": r.scenario.label, "kind": r.scenario.kind,
                "n": r.scenario.n, "reference_size": r.scenario.reference_size,
                "min_samples": r.scenario.settings.min_samples,
                "drifted": r.scenario.drifted, "target": r.scenario.target,
                "trials": r.trials, "theory": r.scenario.theory(),
                "rates": {m: r.rate(m) for m, _ in COLUMNS if m in r.counts},
                "wilson": {m: wilson(r.counts[m], r.trials) for m, _ in COLUMNS if m in r.counts},
                "target_met": (v := r.verdict()) is not None and v[0],
            } for r in rows],
            "sequential": None if seq is None else seq.__dict__,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
