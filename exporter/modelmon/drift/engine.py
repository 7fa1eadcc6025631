"""The streaming drift and data-quality engine for one model.

``add`` runs in the analysis hand-off (``analysis/queue.py``) for every request and only queues
its rows; once ``FLUSH_ROWS`` rows are waiting (or before scoring or a scrape reads the counts)
``observe`` takes them all at once: it classifies values, bins them into the reference bins (one
``searchsorted`` per feature and one ``bincount`` for the batch) and adds the counts to a
sliding window and to cumulative totals. NumPy's cost is per call, not per value, so batching
turns a single-row request's binning from the dominant cost into a small one (README,
Performance). ``compute`` runs on a
schedule, off the request path, and scores every feature against the reference.

Both also come as steps (``flush_steps``, ``compute_steps``: FEATURES_PER_STEP features a
step), so that a scrape or the drift schedule can run them on the proxy's event loop in slices
(``modelmon.metrics.exposition.run_in_slices``) instead of holding it for milliseconds (the
benchmark's figures are in the README, "Scrapes and drift scoring").

Default verdict ("auto"): for numeric features three tests of the window against the
reference, combined by a weighted Bonferroni correction (AUTO_WEIGHTS): a location test and a
scale test (two-sample linear rank tests on the bins, normal and squared normal scores, their
p-values allowing for the statistic's skewness) and a binned chi-square test of homogeneity
(p-value from the statistic's exact permutation mean and variance) for any other change of
shape; drift when p_test < weight * alpha for one of them, or, if ``effect_threshold`` is
set, when the normalised Wasserstein distance is certainly large (the lower bound of its 95%
confidence interval above it). For categorical features the chi-square test alone, at its own
alpha. At least 100 samples in the window and in the
reference. The model-level verdict applies a further Bonferroni correction across features.
See docs/drift.md for the measured false-alarm and detection rates and their theoretical
limits, and for what is said of degenerate references.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from ..config import DISTANCE_METHODS, TEST_METHODS, DriftConfig
from ..logs import RateLimitedLog
from ..reference.profile import (
    CategoricalFeature,
    Feature,
    NumericFeature,
    Profile,
    canonical_categories,
    canonical_numbers,
    reference_note,
)
from ..window import SlidingCounts
from . import stats
from .columns import QUALITY_KINDS, Batch, Column, Q, category_codes, numeric_values

log = logging.getLogger("modelmon.drift")
limited_log = RateLimitedLog(log)

METHODS = TEST_METHODS + DISTANCE_METHODS  # defined once, with the configuration's types
# Rows queued before they are binned: large enough to amortise NumPy's per-call overhead, small
# enough that one flush does not hold up the proxy noticeably (tests/bench/bench_drift.py).
FLUSH_ROWS = 256
# Features binned or scored per step of flush_steps / compute_steps: a step stays well under
# exposition.SLICE_SECONDS's order of magnitude (tests/bench/bench_scrape.py measures it).
FEATURES_PER_STEP = 8
# The default numeric verdict's share of alpha per test (weighted Bonferroni: the shares add up
# to 1, so the false-alarm rate is at most alpha). Most goes to the location test: a shift of
# the mean is the commonest drift and the hardest to see in a small window, and no test of it at
# level w * alpha has more power than the z-test at that level (docs/drift.md, "What theory
# allows"); a change of spread is seen by the scale test with power to spare at 4%, and the
# chi-square test is the safety net for every other change of shape (outliers, a second mode).
AUTO_WEIGHTS = {"location": 0.92, "scale": 0.04, "chi2": 0.04}
# Confidence of the interval exported beside the normalised Wasserstein distance; when
# drift.effect_threshold is set, a lower bound above it reports drift in the auto verdict.
EFFECT_CONFIDENCE = 0.95


# The engine reads the ``drift`` section of the configuration as it is (one definition of
# its keys and defaults); the name says what the engine uses it for.
DriftSettings = DriftConfig


@dataclass(frozen=True)
class FeatureDrift:
    """Windowed results for one feature. Scores are None below the minimum sample count."""

    name: str
    kind: str
    samples: int
    rows: int
    scores: dict[str, float]  # method -> value
    p_values: dict[str, float]  # test -> p-value
    detected: bool | None
    missing_ratio: float | None
    out_of_range_ratio: float | None
    mean: float | None = None  # of the finite values in the window (numeric features)
    # method -> (lower, upper) confidence bounds of a score (EFFECT_CONFIDENCE): wasserstein
    score_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelDriftSnapshot:
    features: tuple[FeatureDrift, ...]
    model_detected: bool | None
    computed_at: float
    duration: float


class _Group:
    """Features of one kind laid out as padded (features x bins) matrices."""

    def __init__(self, features: list[tuple[int, Feature]], offsets: list[int]) -> None:
        self.positions = [pos for pos, _ in features]
        self.features = [f for _, f in features]
        width = max((len(f.counts) for f in self.features), default=1)
        rows = len(self.features)
        self.take = np.full((rows, width), -1, dtype=np.int64)  # -1 reads the zero sentinel
        self.ref = np.zeros((rows, width))
        self.mask = np.zeros((rows, width), dtype=bool)
        for r, (pos, f) in enumerate(features):
            n = len(f.counts)
            self.take[r, :n] = np.arange(offsets[pos], offsets[pos] + n)
            self.ref[r, :n] = f.counts
            self.mask[r, :n] = True
        self.n_ref = self.ref.sum(axis=1)

    def window(self, counts_with_sentinel: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(counts_with_sentinel[self.take])


class ModelDrift:
    def __init__(self, model: str, profile: Profile, settings: DriftSettings, max_features: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.profile = profile
        self.settings = settings
        # Targets (ground truth) are profiled for the performance metrics, not scored for drift.
        # Categories under their canonical keys and numbers read as live ones are (a profile
        # from before they were canonical: float32 edges at their widened values).
        monitored = [canonical_categories(f) if isinstance(f, CategoricalFeature) else canonical_numbers(f)
                     for f in profile.features if f.role != "target"]
        self.features: list[Feature] = monitored[:max_features]
        self.dropped_features = len(monitored) - len(self.features)
        self.position = {f.name: i for i, f in enumerate(self.features)}
        # Rows without an input the profile names count it absent: the payload's names or
        # positions are all the engine sees of a feature that never arrives.
        self._inputs = frozenset(f.name for f in self.features if f.role == "input")
        # A reference without values has nothing to compare with; one with fewer than
        # min_samples values is too small for a test or a distance to mean anything.
        self._empty = [f.empty for f in self.features]
        self._scored = [f.count >= settings.min_samples for f in self.features]
        for f in self.features:
            note = reference_note(f, settings.min_samples)
            if note is not None:
                log.warning("model %s feature %s: %s", model, f.name, note)
        self.offsets: list[int] = []
        total = 0
        for f in self.features:
            self.offsets.append(total)
            total += len(f.counts)
        self.total_bins = total
        self._edges = [np.asarray(f.edges) if isinstance(f, NumericFeature) else None
                       for f in self.features]
        self._cat_index = [{c: i for i, c in enumerate(f.categories)}
                           if isinstance(f, CategoricalFeature) else None for f in self.features]
        window, slots = settings.window_seconds, settings.sub_windows
        self.bins = SlidingCounts((total,), window, slots, clock)
        self.quality = SlidingCounts((len(self.features), len(QUALITY_KINDS)), window, slots, clock)
        self.rows = SlidingCounts((len(self.features),), window, slots, clock)
        # Sums of finite values: the window's give its mean, the totals the histograms' _sum.
        self.sums = SlidingCounts((len(self.features),), window, slots, clock)
        # Whether a negative value was ever seen (live, or in the reference): the histogram's
        # _sum is then no counter (it can fall) and is no longer exported (OpenMetrics).
        self.negative = np.array([isinstance(f, NumericFeature) and f.count > 0 and f.min < 0
                                  for f in self.features], dtype=bool)
        self.numeric = _Group([(i, f) for i, f in enumerate(self.features)
                               if isinstance(f, NumericFeature)], self.offsets)
        self.categorical = _Group([(i, f) for i, f in enumerate(self.features)
                                   if isinstance(f, CategoricalFeature)], self.offsets)
        self._points = self._wasserstein_points()
        # Wasserstein is normalised by the reference's std: undefined for a constant reference.
        self._scale = np.array([f.std if f.std > 0 else np.nan for f in self.numeric.features
                                if isinstance(f, NumericFeature)])
        self.snapshot: ModelDriftSnapshot | None = None
        self._pending_columns: dict[str, list[Any]] = {}
        self._pending_absent: dict[str, int] = {}
        self._pending_rows = 0

    def _wasserstein_points(self) -> NDArray[np.float64]:
        """A representative value per bin: midpoints, with the open outer bins closed at the
        reference min and max."""
        points = np.zeros_like(self.numeric.ref)
        for r, f in enumerate(self.numeric.features):
            assert isinstance(f, NumericFeature)
            if not f.edges:
                continue
            e = np.asarray(f.edges)
            lo, hi = min(f.min, e[0]), max(f.max, e[-1])
            bounds = np.concatenate([[lo], e, [hi]])
            mids = 0.5 * bounds[:-1] + 0.5 * bounds[1:]  # no overflow near the float range
            points[r, :len(mids)] = mids
            points[r, len(mids):] = mids[-1]
        return points

    # --- ingest (the analysis hand-off) -------------------------------------------------------------

    def add(self, batch: Batch) -> None:
        """Queue a batch's rows, column by column; they are binned together once FLUSH_ROWS
        are waiting. A batch that large on its own is binned at once."""
        if batch.rows >= FLUSH_ROWS:
            self.observe(batch)
            return
        columns, absent = self._pending_columns, self._pending_absent
        for name, values in batch.columns.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = []
            column.extend(values.tolist() if isinstance(values, np.ndarray) else values)
        for name, count in self._absent(batch).items():
            absent[name] = absent.get(name, 0) + count
        self._pending_rows += batch.rows
        if self._pending_rows >= FLUSH_ROWS:
            self.flush()

    def _absent(self, batch: Batch) -> dict[str, int]:
        """The batch's absent counts, plus every row for each profiled input that no row had
        (a payload naming only some of the features, a single-row request without one)."""
        absent = batch.absent
        if batch.rows > 0:
            missing = self._inputs.difference(batch.columns, absent)  # one C-level pass
            if missing:
                absent = {**absent, **dict.fromkeys(sorted(missing), batch.rows)}
        return absent

    def flush(self) -> None:
        """Bin the queued rows now (before scoring, and before a scrape reads the counts)."""
        for _ in self.flush_steps():
            pass

    def flush_steps(self) -> Iterator[None]:
        """``flush``, FEATURES_PER_STEP features a step. The queued rows are taken at the first
        step (rows added meanwhile queue for the next flush) and counted at the last."""
        columns, absent, rows = self._pending_columns, self._pending_absent, self._pending_rows
        self._pending_columns, self._pending_absent, self._pending_rows = {}, {}, 0
        if columns or absent:  # rows without any monitored feature leave nothing to count
            yield from self.observe_steps(Batch(rows, dict(columns), absent))

    def observe(self, batch: Batch) -> None:
        for _ in self.observe_steps(batch):
            pass

    def observe_steps(self, batch: Batch) -> Iterator[None]:
        """``observe``, FEATURES_PER_STEP features a step; the counts change at the last.

        Whatever one feature's values hold, the batch is counted: if classifying a column
        raises, its values are classified one at a time and a value that still raises is
        counted as ``wrong_type`` -- the queued rows are never lost, a scrape never fails."""
        quality = np.zeros((len(self.features), len(QUALITY_KINDS)))
        rows = np.zeros(len(self.features))
        sums = np.zeros(len(self.features))
        indices: list[NDArray[np.int64]] = []
        absent = self._absent(batch)
        items = list(batch.columns.items())
        for start in range(0, len(items), FEATURES_PER_STEP):
            if start:
                yield
            # Huge values' sums overflow to inf, or NaN (1e308 + 1e308 - 1e308 - 1e308), which the
            # exposition handles (no _sum); NumPy's warning would only print a stray line. Never
            # held across a yield: the state is the event loop's context.
            with np.errstate(over="ignore", invalid="ignore"):
                for name, values in items[start:start + FEATURES_PER_STEP]:
                    pos = self.position.get(name)
                    if pos is None:
                        continue
                    rows[pos] = len(values) + absent.get(name, 0)
                    try:
                        codes, sums[pos] = self._classify(pos, values, quality[pos])
                    except Exception as exc:
                        codes, sums[pos] = self._classify_each(pos, values, quality[pos], exc)
                    quality[pos, Q["absent"]] = absent.get(name, 0)
                    indices.append(codes + self.offsets[pos])
        for name, count in absent.items():  # features missing from every row
            pos = self.position.get(name)
            if pos is not None and name not in batch.columns:
                rows[pos] = count
                quality[pos, Q["absent"]] = count
        if indices:
            flat = np.concatenate(indices)
            self.bins.add(np.bincount(flat, minlength=self.total_bins).astype(np.float64))
        self.sums.add(sums)
        self.quality.add(quality)
        self.rows.add(rows)

    def _classify(self, pos: int, values: Column, q: NDArray[np.float64]
                  ) -> tuple[NDArray[np.int64], float]:
        """Count one feature's values' quality events into ``q`` (its row of the quality
        matrix); their bins (within the feature) and the sum of their finite values."""
        feature = self.features[pos]
        edges = self._edges[pos]
        if edges is not None:
            assert isinstance(feature, NumericFeature)
            arr, nulls, wrong = numeric_values(values)
            finite = arr[np.isfinite(arr)]
            n_nan = int(np.isnan(arr).sum())
            q[Q["null"]] = nulls
            q[Q["wrong_type"]] = wrong
            q[Q["nan"]] = n_nan - nulls - wrong
            q[Q["inf"]] = arr.size - finite.size - n_nan
            if not self._empty[pos]:  # no reference values, no range
                q[Q["below_min"]] = int((finite < feature.min).sum())
                q[Q["above_max"]] = int((finite > feature.max).sum())
            if finite.size and not self.negative[pos] and finite.min() < 0:
                self.negative[pos] = True
            return np.searchsorted(edges, finite, side="left"), float(finite.sum())
        index = self._cat_index[pos]
        assert index is not None
        codes, nulls, nans, wrong, unseen = category_codes(values, index, len(index))
        q[Q["null"]] = nulls
        q[Q["nan"]] = nans
        q[Q["wrong_type"]] = wrong
        if not self._empty[pos]:  # no reference categories: nothing is "unseen"
            q[Q["unseen_category"]] = unseen
        return codes, 0.0

    def _classify_each(self, pos: int, values: Column, q: NDArray[np.float64], error: Exception
                       ) -> tuple[NDArray[np.int64], float]:
        """``_classify`` value by value, after it raised on the whole column."""
        try:  # a message built from client data: bounded, and it may itself raise
            detail = " ".join(str(error).split())[:200]
        except Exception:
            detail = "(message unavailable)"
        limited_log.warning(f"classify:{self.model}", "model %s feature %s: values classified one "
                            "by one after %s: %s", self.model, self.features[pos].name,
                            type(error).__name__, detail)
        q[:] = 0.0
        one = np.zeros_like(q)
        codes: list[NDArray[np.int64]] = []
        total = 0.0
        seq = values.tolist() if isinstance(values, np.ndarray) else values
        for value in seq:
            one[:] = 0.0
            try:
                value_codes, value_sum = self._classify(pos, [value], one)
            except Exception:
                q[Q["wrong_type"]] += 1
                continue
            q += one
            codes.append(value_codes)
            total += value_sum
        return (np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)), total

    # --- scoring (scheduler) -------------------------------------------------------------------

    def compute(self) -> ModelDriftSnapshot:
        for _ in self.compute_steps():
            pass
        assert self.snapshot is not None
        return self.snapshot

    def compute_steps(self) -> Iterator[None]:
        """``compute``, FEATURES_PER_STEP features a step: queued rows are binned and the window
        read at the start, the snapshot replaced at the end. Its ``duration`` counts the steps,
        not the pauses between them."""
        (features, model_detected), busy = yield from _busy_time(self._score_steps())
        self.snapshot = ModelDriftSnapshot(features, model_detected, time.time(), busy)

    def _score_steps(self) -> Generator[None, None, tuple[tuple[FeatureDrift, ...], bool | None]]:
        yield from self.flush_steps()
        window = np.append(self.bins.window(), 0.0)  # trailing zero: the padding sentinel
        quality = self.quality.window()
        rows = self.rows.window()
        sums = self.sums.window()
        s = self.settings
        results: dict[int, FeatureDrift] = {}
        combined: list[tuple[float, float]] = []  # (p-value, alpha) for the model-level verdict
        distance_votes: list[bool] = []
        for group, method, threshold in (
            (self.numeric, s.numeric_method, s.numeric_threshold),
            (self.categorical, s.categorical_method, s.categorical_threshold),
        ):
            numeric = group is self.numeric
            window_counts = group.window(window)
            # Rows (features) are independent: every statistic is computed a step's rows at a time.
            for lo in range(0, len(group.features), FEATURES_PER_STEP):
                yield
                part = slice(lo, lo + FEATURES_PER_STEP)
                cur, ref, mask = window_counts[part], group.ref[part], group.mask[part]
                n_cur = cur.sum(axis=1)
                scores = {"psi": stats.psi(ref, cur, mask),
                          "jensen_shannon": stats.jensen_shannon(ref, cur, mask),
                          "hellinger": stats.hellinger(ref, cur, mask)}
                # Against the permutation distribution's exact mean and variance (and, with two
                # groups, the skewness of the count): calibrated in sparse tables too, so bins
                # are merged only to an expected count of 1.
                p_values = {"chi2": stats.chi2_p_value(*stats.merge_sparse_bins(ref, cur, mask))}
                bounds: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
                if numeric:
                    d = stats.ks_statistic(ref, cur, mask)
                    scores["ks"] = d
                    points, scale = self._points[part], self._scale[part]
                    # A reference of magnitude ~1e300 overflows the distance's products: the
                    # score is then left out (not finite), without NumPy's warning line.
                    with np.errstate(over="ignore", invalid="ignore"):
                        scores["wasserstein"] = stats.wasserstein(ref, cur, mask, points) / scale
                        lower, upper = stats.wasserstein_bounds(ref, cur, mask, points, EFFECT_CONFIDENCE)
                        bounds["wasserstein"] = (lower / scale, upper / scale)
                    p_values["ks"] = stats.ks_pvalue(d, group.n_ref[part], n_cur)
                    location, spread = stats.normal_scores(ref, cur, mask)
                    p_values["location"] = stats.linear_rank_p(ref, cur, mask, location)
                    p_values["scale"] = stats.linear_rank_p(ref, cur, mask, spread)
                for r, pos in enumerate(group.positions[part]):
                    feature = self.features[pos]
                    n = int(n_cur[r])
                    q = quality[pos]
                    total_rows = rows[pos]
                    missing = ((q[Q["nan"]] + q[Q["null"]] + q[Q["absent"]]) / total_rows
                               if total_rows else None)
                    oor = ((q[Q["below_min"]] + q[Q["above_max"]]) / n
                           if numeric and n and not self._empty[pos] else None)
                    # Both samples need min_samples values: the window, and the reference.
                    ready = n >= s.min_samples and self._scored[pos]
                    detected = None
                    feature_scores: dict[str, float] = {}
                    feature_p: dict[str, float] = {}
                    feature_bounds: dict[str, tuple[float, float]] = {}
                    if ready:
                        # A score that is not defined (Wasserstein of a constant reference, or
                        # one that overflowed) is left out, not exported as NaN or infinity.
                        feature_scores = {k: float(v[r]) for k, v in scores.items() if math.isfinite(v[r])}
                        feature_p = {k: float(v[r]) for k, v in p_values.items()}
                        feature_bounds = {k: (float(lo[r]), float(hi[r])) for k, (lo, hi) in bounds.items()
                                          if math.isfinite(lo[r]) and math.isfinite(hi[r])}
                        if method == "auto":
                            p = auto_p_value(feature_p) if numeric else feature_p["chi2"]
                            # Large and certain: the effect's lower confidence bound above the
                            # threshold (no correction: see docs/drift.md for its false alarms).
                            certain = (numeric and s.effect_threshold is not None
                                       and "wasserstein" in feature_bounds
                                       and feature_bounds["wasserstein"][0] > s.effect_threshold)
                            detected = p < threshold or certain
                            combined.append((p, threshold))
                            if certain:
                                distance_votes.append(True)
                        elif method in feature_p:
                            detected = feature_p[method] < threshold
                            combined.append((feature_p[method], threshold))
                        elif method in feature_scores:
                            detected = feature_scores[method] > threshold
                            distance_votes.append(detected)
                    results[pos] = FeatureDrift(
                        feature.name, "numeric" if numeric else "categorical", n, int(total_rows),
                        feature_scores, feature_p, detected, missing, oor,
                        float(sums[pos]) / n if numeric and n and math.isfinite(sums[pos]) else None,
                        feature_bounds,
                    )
        model_detected: bool | None = None
        if combined or distance_votes:
            tested = len(combined)  # Bonferroni across the features tested
            model_detected = any(p * tested < alpha for p, alpha in combined) or any(distance_votes)
        return tuple(results[i] for i in sorted(results)), model_detected

    # --- exports --------------------------------------------------------------------------------

    def reference_cumulative(self, feature: NumericFeature) -> list[float]:
        c = np.cumsum(feature.counts, dtype=np.float64)
        return list(c / c[-1]) if c[-1] > 0 else [0.0] * len(c)

    def cumulative_bins(self, pos: int) -> NDArray[np.float64]:
        start = self.offsets[pos]
        return np.asarray(self.bins.total[start:start + len(self.features[pos].counts)])


def auto_p_value(p_values: dict[str, float]) -> float:
    """The default numeric verdict's p-value: the weighted Bonferroni combination of its tests,
    min over tests of p / weight (capped at 1). Drift when it is below alpha, i.e. when some
    test's p-value is below its share of alpha; under no drift that happens with probability
    at most alpha whatever the dependence between the tests."""
    return min(1.0, min(p_values[test] / weight for test, weight in AUTO_WEIGHTS.items()))


_T = TypeVar("_T")


def _busy_time(steps: Generator[None, None, _T]) -> Generator[None, None, tuple[_T, float]]:
    """Run ``steps`` step for step; returns their result and the seconds spent in them (the
    pauses between steps not counted)."""
    busy = 0.0
    start = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, busy + time.perf_counter() - start
        busy += time.perf_counter() - start
        yield
        start = time.perf_counter()
