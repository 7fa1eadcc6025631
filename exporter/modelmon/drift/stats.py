"""Drift statistics on binned counts, vectorised over features.

Every function takes count matrices of shape ``(features, bins)``: ``ref`` holds the
reference profile's counts, ``cur`` the live window's, and ``mask`` marks the bins that exist
for each feature (features have different bin counts; padding bins are False). Rows are
independent, so one call scores every feature of a model.

The distances are vectorised NumPy over all features at once; the two p-values take their
distributions from ``scipy.special``, imported at the first scoring so that a sidecar without a
reference profile never loads SciPy (docs/architecture.md, "Decisions").

Smoothing: PSI and the other divergence measures are undefined when a bin is empty on one
side, so both histograms are smoothed by adding ``SMOOTHING = 0.5`` to every existing bin's
count (the Jeffreys prior) before taking proportions. The KS, Wasserstein and chi-square
statistics use the raw counts.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Counts = NDArray[np.float64]
Mask = NDArray[np.bool_]
Vector = NDArray[np.float64]

SMOOTHING = 0.5


def proportions(counts: Counts, mask: Mask, smoothing: float = 0.0) -> Counts:
    """Row-normalised proportions over existing bins; all-zero rows give zeros."""
    c = np.where(mask, counts + smoothing, 0.0)
    total = c.sum(axis=1, keepdims=True)
    return np.asarray(np.divide(c, total, out=np.zeros_like(c), where=total > 0))


def psi(ref: Counts, cur: Counts, mask: Mask) -> Vector:
    """Population stability index: sum over bins of (q - p) * ln(q / p), smoothed."""
    p = proportions(ref, mask, SMOOTHING)
    q = proportions(cur, mask, SMOOTHING)
    ratio = np.divide(q, p, out=np.ones_like(q), where=mask & (p > 0))
    return np.asarray(np.where(mask, (q - p) * np.log(ratio, where=mask & (ratio > 0),
                                                      out=np.zeros_like(ratio)), 0.0).sum(axis=1))


def _kl(a: Counts, b: Counts, mask: Mask) -> Vector:
    valid = mask & (a > 0) & (b > 0)
    ratio = np.divide(a, b, out=np.ones_like(a), where=valid)
    return np.asarray(np.where(valid, a * np.log2(ratio, out=np.zeros_like(ratio), where=valid),
                               0.0).sum(axis=1))


def jensen_shannon(ref: Counts, cur: Counts, mask: Mask) -> Vector:
    """Jensen-Shannon distance with base-2 logarithms (0 = identical, 1 = disjoint), smoothed."""
    p = proportions(ref, mask, SMOOTHING)
    q = proportions(cur, mask, SMOOTHING)
    m = 0.5 * (p + q)
    divergence = 0.5 * _kl(p, m, mask) + 0.5 * _kl(q, m, mask)
    return np.asarray(np.sqrt(np.clip(divergence, 0.0, None)))


def hellinger(ref: Counts, cur: Counts, mask: Mask) -> Vector:
    """Hellinger distance sqrt(1 - sum sqrt(p q)) in [0, 1], smoothed."""
    p = proportions(ref, mask, SMOOTHING)
    q = proportions(cur, mask, SMOOTHING)
    bc = np.sqrt(p * q).sum(axis=1)
    return np.asarray(np.sqrt(np.clip(1.0 - bc, 0.0, None)))


def ks_statistic(ref: Counts, cur: Counts, mask: Mask) -> Vector:
    """Kolmogorov-Smirnov D: the largest gap between the two binned CDFs (at the bin edges)."""
    p = proportions(ref, mask)
    q = proportions(cur, mask)
    return np.asarray(np.abs(np.cumsum(p - q, axis=1)).max(axis=1))


def kolmogorov_sf(x: Vector) -> Vector:
    """P(K > x) for the Kolmogorov distribution (``scipy.special.kolmogorov``)."""
    from scipy import special  # loaded with the first scoring: only a sidecar with a profile pays

    return np.asarray(np.clip(special.kolmogorov(np.asarray(x, dtype=np.float64)), 0.0, 1.0))


def ks_pvalue(d: Vector, n_ref: Vector, n_cur: Vector) -> Vector:
    """Two-sample KS p-value, asymptotic with Stephens' small-sample correction
    (lambda = (sqrt(ne) + 0.12 + 0.11 / sqrt(ne)) * D, ne = n m / (n + m))."""
    ne = np.divide(n_ref * n_cur, n_ref + n_cur, out=np.zeros_like(d), where=(n_ref + n_cur) > 0)
    root = np.sqrt(ne)
    lam = np.where(root > 0, (root + 0.12 + 0.11 / np.maximum(root, 1e-12)) * d, 0.0)
    return kolmogorov_sf(lam)


def wasserstein(ref: Counts, cur: Counts, mask: Mask, points: Counts) -> Vector:
    """Earth mover's distance between the binned distributions, each bin's mass placed at its
    representative point (``points``: increasing along each row over the existing bins)."""
    p = proportions(ref, mask)
    q = proportions(cur, mask)
    gaps = np.diff(points, axis=1)
    valid_gap = mask[:, 1:]
    cdf_gap = np.abs(np.cumsum(p - q, axis=1))[:, :-1]
    return np.asarray(np.where(valid_gap, cdf_gap * gaps, 0.0).sum(axis=1))


def chi2_contingency(ref: Counts, cur: Counts, mask: Mask) -> tuple[Vector, Vector]:
    """Pearson chi-square test of homogeneity of the 2 x k table (reference, window) per row;
    bins empty on both sides are left out. Returns (statistic, degrees of freedom)."""
    used = mask & ((ref + cur) > 0)
    n_ref = np.where(used, ref, 0.0).sum(axis=1, keepdims=True)
    n_cur = np.where(used, cur, 0.0).sum(axis=1, keepdims=True)
    total = n_ref + n_cur
    col = np.where(used, ref + cur, 0.0)
    e_ref = np.divide(col * n_ref, total, out=np.zeros_like(col), where=total > 0)
    e_cur = np.divide(col * n_cur, total, out=np.zeros_like(col), where=total > 0)
    stat = (np.divide((ref - e_ref) ** 2, e_ref, out=np.zeros_like(col), where=used & (e_ref > 0))
            + np.divide((cur - e_cur) ** 2, e_cur, out=np.zeros_like(col), where=used & (e_cur > 0)))
    df = np.maximum(used.sum(axis=1) - 1, 0).astype(np.float64)
    return np.asarray(stat.sum(axis=1)), df


def chi2_sf(x: Vector, df: Vector) -> Vector:
    """P(X > x) for chi-square with ``df`` degrees of freedom (``scipy.special.chdtrc``, the
    regularised upper incomplete gamma Q(df/2, x/2)); 1 where there is no test (df <= 0 or
    x <= 0), 0 for an infinite statistic."""
    from scipy import special

    x = np.asarray(x, dtype=np.float64)
    df = np.asarray(df, dtype=np.float64)
    none = (df <= 0) | (x <= 0)
    with np.errstate(invalid="ignore"):
        p = special.chdtrc(np.where(none, 1.0, df), np.where(none | ~np.isfinite(x), 1.0, x))
    return np.asarray(np.where(none, 1.0, np.where(np.isfinite(x), p, 0.0)))


MIN_EXPECTED = 5.0


def merge_sparse_bins(ref: Counts, cur: Counts, mask: Mask,
                      min_expected: float = MIN_EXPECTED) -> tuple[Counts, Counts, Mask]:
    """Merge adjacent bins (left to right) until every expected count of the 2 x k table is at
    least ``min_expected`` (Cochran's rule), so the chi-square approximation holds for small
    windows and thin tail bins. A short last group joins the one before it.

    Expected counts are those of the test of homogeneity (``scipy.stats.contingency.
    expected_freq``): a bin's pooled count times a row's share of the table; the smaller row
    decides. (Expected window counts under the reference proportions alone would give 0 to
    every bin the reference left empty, and merge them away: a constant reference, or a
    single category, against a window that moved elsewhere would then have p = 1.)"""
    pooled = np.where(mask, ref + cur, 0.0)
    n_ref = np.where(mask, ref, 0.0).sum(axis=1)
    n_cur = np.where(mask, cur, 0.0).sum(axis=1)
    total = n_ref + n_cur
    share = np.divide(np.minimum(n_ref, n_cur), total, out=np.zeros_like(total), where=total > 0)
    rows = ref.shape[0]
    out_ref = np.zeros_like(ref)
    out_cur = np.zeros_like(cur)
    out_mask = np.zeros_like(mask)
    for r in range(rows):
        bins = np.flatnonzero(mask[r])
        expected = pooled[r, bins] * share[r]
        starts = [0]
        acc = 0.0
        for i, e in enumerate(expected):
            acc += e
            if acc >= min_expected and i + 1 < len(bins):
                starts.append(i + 1)
                acc = 0.0
        if len(starts) > 1 and acc < min_expected:
            starts.pop()
        idx = np.asarray(starts)
        g = len(idx)
        out_ref[r, :g] = np.add.reduceat(ref[r, bins], idx)
        out_cur[r, :g] = np.add.reduceat(cur[r, bins], idx)
        out_mask[r, :g] = True
    return out_ref, out_cur, out_mask
