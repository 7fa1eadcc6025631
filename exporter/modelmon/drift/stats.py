"""Drift statistics on binned counts, vectorised over features.

Every function takes count matrices of shape ``(features, bins)``: ``ref`` holds the
reference profile's counts, ``cur`` the live window's, and ``mask`` marks the bins that exist
for each feature (features have different bin counts; padding bins are False). Rows are
independent, so one call scores every feature of a model.

The distances are vectorised NumPy over all features at once; the p-values take their
distributions from ``scipy.special``, imported at the first scoring so that a sidecar without a
reference profile never loads SciPy (docs/architecture.md, "Decisions").

The location and scale tests are two-sample linear rank tests on the bins: each bin's values
share one score, the expected normal score (or squared normal score) of the ranks the bin
holds in the pooled sample, and the window's sum of scores is standardised by its exact
permutation mean and variance given the pooled bin counts (ties and all), its p-value allowing
for the sum's exact permutation skewness (a rare value makes it a Poisson-like count). They
need no distributional assumption (normal, skewed, discrete and heavy-tailed references alike) and,
for a normal reference cut in the profile's ~22 quantile bins, keep 99.2% (location) and 93.8%
(scale) of the Fisher information of the raw values (docs/drift.md).

Smoothing: PSI and the other divergence measures are undefined when a bin is empty on one
side, so both histograms are smoothed by adding ``SMOOTHING = 0.5`` to every existing bin's
count (the Jeffreys prior) before taking proportions. The KS, Wasserstein and chi-square
statistics use the raw counts.
"""

from __future__ import annotations

import math

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


def normal_scores(ref: Counts, cur: Counts, mask: Mask) -> tuple[Counts, Counts]:
    """Per bin, the expected normal score ``E[Z | bin]`` and the expected squared normal score
    less one, ``E[Z^2 | bin] - 1``, of the ranks the bin holds in the pooled sample: Z standard
    normal, cut at the normal quantiles of the pooled cumulative shares (a bin holding the
    pooled shares ``u0..u1`` is Z in ``(Phi^-1(u0), Phi^-1(u1)]``; ``scipy.stats.truncnorm``'s
    mean and second moment). Both have pooled mean 0. Bins empty on both sides (and padding)
    score 0.

    These are the grouped-data optimal scores for a normal location and scale change
    (van der Waerden's and Klotz's tests, with ties): for a normal reference in 20 quantile bins
    plus the 1st/99th-percentile tails they keep 99.2% and 93.8% of the information."""
    from scipy import special

    pooled = np.where(mask, ref + cur, 0.0)
    total = pooled.sum(axis=1, keepdims=True)
    upper = np.divide(np.cumsum(pooled, axis=1), total, out=np.zeros_like(pooled), where=total > 0)
    lower = upper - np.divide(pooled, total, out=np.zeros_like(pooled), where=total > 0)
    used = pooled > 0
    # Exact ends: the first used bin starts at 0, the last ends at 1 (no rounding past them).
    lower = np.where(used & (lower <= 1e-15), 0.0, lower)
    upper = np.where(used & (upper >= 1.0 - 1e-15), 1.0, upper)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = special.ndtri(np.clip(lower, 0.0, 1.0))
        b = special.ndtri(np.clip(upper, 0.0, 1.0))
    phi_a, phi_b = _phi(a), _phi(b)
    with np.errstate(invalid="ignore"):  # infinity times a density of 0: the limit is 0
        a_phi = np.where(np.isfinite(a), a * phi_a, 0.0)
        b_phi = np.where(np.isfinite(b), b * phi_b, 0.0)
    share = upper - lower
    ok = used & (share > 0)
    location = np.divide(phi_a - phi_b, share, out=np.zeros_like(share), where=ok)
    scale = np.divide(a_phi - b_phi, share, out=np.zeros_like(share), where=ok)
    return location, scale


def _phi(x: Counts) -> Counts:
    """The standard normal density; 0 at +-infinity."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(np.where(np.isfinite(x), np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi), 0.0))


def linear_rank_z(ref: Counts, cur: Counts, mask: Mask, scores: Counts) -> Vector:
    """The standardised two-sided linear rank statistic: the window's sum of its values' scores
    (every value of bin j scores ``scores[:, j]``), minus its mean and divided by its standard
    deviation over all the ways the pooled sample could have been split into a reference and
    a window of these sizes (the permutation distribution given the pooled bin counts, ties
    included: ``nN / (M (M - 1)) * sum_j c_j (s_j - s_mean)^2``). Under no drift it is
    approximately standard normal; 0 where it has no variance (one bin holds everything)."""
    return _linear_rank(ref, cur, mask, scores)[0]


def linear_rank_p(ref: Counts, cur: Counts, mask: Mask, scores: Counts) -> Vector:
    """Two-sided p-value of the linear rank statistic of ``linear_rank_z``, allowing for its
    skewness: ``skewed_two_sided(z, skewness)`` with the statistic's exact third permutation
    moment. Where a few values carry most of the scores' spread (a rare value of a binary or
    zero-inflated feature: its count in the window is the statistic, Poisson-like with a mean
    of a few) the normal p-value is far too small on the skewed side (2.3% false alarms at
    the location test's 0.74% for a 0.2% indicator in 200-value windows; docs/drift.md).

    Where the window expects at most ``RARE_EXPECTED`` values in the highest- or lowest-scoring
    bins, or only two bins hold values, no moment approximation will do (a count with a mean
    far below one: one appearance of a value held by 16 in 100,000 was reported as drift at
    twice the level): those bins' counts are summed over exactly (``_rare_tail``), and the
    p-value is twice that tail, never below the normal one."""
    z, skewness, pooled, n, total = _linear_rank_moments(ref, cur, mask, scores)
    p = skewed_two_sided(z, skewness)
    scores = np.broadcast_to(scores, ref.shape)
    # Rows with a rare bin, or only two (a cheap test first: scoring runs every few seconds).
    occupied = pooled > 0
    rarest = np.where(occupied, pooled, total[:, None] + 1.0).min(axis=1)  # finite: n may be 0
    candidate = (n * rarest <= RARE_EXPECTED * total) | (occupied.sum(axis=1) == 2)
    rows = candidate & (z != 0)
    if rows.any():  # the tail on the statistic's side: the lower one is the upper of -scores
        side = np.where(z[rows] > 0, 1.0, -1.0)[:, None]
        tail = _rare_tail(ref[rows], cur[rows], mask[rows], side * scores[rows])
        refined = np.isfinite(tail)
        at_rows = np.flatnonzero(rows)[refined]
        p[at_rows] = np.maximum(normal_two_sided(z[at_rows]), np.minimum(2.0 * tail[refined], 1.0))
    return p


# The rank tests sum exactly over the window's counts in rare bins (``_rare_tail``): the
# highest- and the lowest-scoring bin where the window expects at most RARE_EXPECTED values in
# it, and with the lowest any other bin it expects under RARE_TINY in, up to RARE_BOTTOM in all.
RARE_EXPECTED = 3.0
RARE_TINY = 0.5
RARE_BOTTOM = 6.0
# Counts summed one by one in the top and the bottom set, then a bound for the rest: with the
# window expecting at most 3 (top) and 6 (bottom) values there, the rest is about 1e-7 and 5e-6
# of probability (Poisson tails; the scale test's share of alpha is 3.2e-4), and the terms are
# what scoring costs where windows are small.
TOP_TERMS = 16
BOTTOM_TERMS = 20
TWO_BIN_SD = 50.0  # two bins: exact while the count's sd is at most this (beyond, the moments do)
TWO_BIN_TERMS = 256  # ... summed from the observed count up: over 5 sd, then the bound


def _rare_tail(ref: Counts, cur: Counts, mask: Mask, scores: Counts) -> Vector:
    """An upper bound on P(T >= t), T = sum_j cur_j s_j the window's score sum, t its observed
    value, over the permutation distribution given the pooled counts, where rare bins make the
    tail; NaN in rows that have none.

    A moment approximation has no room for a count whose mean is far below one: a value held by
    175 of 10^6 reference rows appears in a 100-value window with probability 1.7%, and the
    statistic then jumps by its score; the Pearson III tail put 0.7% there. So the bins are
    split into a top set (the highest-scoring bin, where the window expects at most
    ``RARE_EXPECTED`` values in it), a bottom set (the lowest-scoring bin likewise, and any
    other it expects under ``RARE_TINY`` values in, lowest-scoring first, while they expect at
    most ``RARE_BOTTOM`` together: a second rare value, or one between common ones) and the
    common rest. Given the pooled counts the window's counts (A, B) in the two rare sets are
    multivariate hypergeometric, and

        P(T >= t) <= sum_{a, b} P(A = a, B = b) P(T_C >= t - a s_top - b s_bottom | n - a - b),

    s_top and s_bottom the highest score in each set (exact for a set of one bin; else an
    upper bound on each value's score, so a bound on the tail: single bins where the window
    expects a few values, so that a normal feature's tails are counted exactly, and bounds only
    over bins it almost never sees), T_C the sum
    of the n - a - b draws from the common bins by its exact permutation mean, variance and
    third moment and the skewness-aware tail of ``skewed_two_sided`` (exact where it has no
    variance). With only two bins the top set is the higher bin and T_C a constant: the sum is
    the count's exact hypergeometric tail (Fisher's exact test, one side), ``TWO_BIN_TERMS``
    terms from the observed count up, while the count's sd is at most ``TWO_BIN_SD`` (beyond
    it the moments are as good). Otherwise ``TOP_TERMS`` and ``BOTTOM_TERMS`` terms. Then a
    geometric bound on the rest (the pmf's ratio decreases past the mode). Log-probabilities
    from ``scipy.special.betaln``: relative error ~1e-6 at 10^8 pooled values, 1e-3 at 10^12."""
    rows, k = ref.shape
    pooled = np.where(mask, ref + cur, 0.0)
    window = np.where(mask, cur, 0.0)
    occupied = pooled > 0
    n = window.sum(axis=1)
    total = pooled.sum(axis=1)
    used = occupied.sum(axis=1)
    order = np.argsort(np.where(occupied, -scores, np.inf), axis=1, kind="stable")
    c = np.take_along_axis(pooled, order, axis=1)  # occupied bins first, by falling score
    s = np.take_along_axis(np.where(occupied, scores, 0.0), order, axis=1)
    x = np.take_along_axis(window, order, axis=1)
    position = np.arange(k)[None, :]
    inside = position < used[:, None]
    budget = RARE_EXPECTED * total[:, None]
    top = (position == 0) & (n[:, None] * c <= budget) & (used >= 2)[:, None]
    # The other rare bins, from the lowest-scoring up (the lowest, and any the window expects
    # less than RARE_TINY values in: a rare value between two common ones, 1 between 0 and 2),
    # while the window expects at most RARE_BOTTOM values in them together.
    lowest = position == (used - 1)[:, None]
    rare = inside & ~top & (n[:, None] * c <= np.where(lowest, budget, RARE_TINY * total[:, None]))
    from_bottom = np.cumsum(np.where(rare, c, 0.0)[:, ::-1], axis=1)[:, ::-1]
    bottom = rare & (n[:, None] * from_bottom <= RARE_BOTTOM * total[:, None])
    two = used == 2
    count_sd = np.sqrt(np.where(two, n * c[:, 0] / np.maximum(total, 1.0)
                                * (1.0 - c[:, 0] / np.maximum(total, 1.0)), 0.0))
    exact_two = two & (count_sd <= TWO_BIN_SD)
    top &= ~two[:, None]  # two bins: their exact path below, or the moments
    bottom &= ~two[:, None]
    tail = np.full(rows, np.nan)
    ok = (n > 0) & (total > n)
    exact_two &= ok
    if exact_two.any():  # the count in the higher bin, from the observed one up
        first, size, drawn = c[exact_two, 0], total[exact_two], n[exact_two]
        observed = x[exact_two, 0]
        y = observed[:, None] + np.arange(TWO_BIN_TERMS)[None, :]
        terms = np.exp(_log_hypergeom(y, size[:, None], first[:, None], drawn[:, None]))
        last = observed + TWO_BIN_TERMS - 1.0
        tail[exact_two] = np.minimum(terms.sum(axis=1) + _hypergeom_beyond(last, size, first, drawn), 1.0)
    in_r = (top.any(axis=1) | bottom.any(axis=1)) & ok & ~exact_two
    if not in_r.any():
        return tail
    c, s, x, top, bottom = c[in_r], s[in_r], x[in_r], top[in_r], bottom[in_r]
    n, total, inside = n[in_r], total[in_r], inside[in_r]
    common = inside & ~top & ~bottom & (c > 0)
    k_top = np.where(top, c, 0.0).sum(axis=1)
    k_bottom = np.where(bottom, c, 0.0).sum(axis=1)
    s_top = np.where(top.any(axis=1), np.where(top, s, -np.inf).max(axis=1), 0.0)
    s_bottom = np.where(bottom.any(axis=1), np.where(bottom, s, -np.inf).max(axis=1), 0.0)
    k_c = np.where(common, c, 0.0).sum(axis=1)
    mean_c = np.divide(np.where(common, c * s, 0.0).sum(axis=1), k_c, out=np.zeros_like(k_c), where=k_c > 0)
    d = np.where(common, s - mean_c[:, None], 0.0)
    s2_c, s3_c = (c * d * d).sum(axis=1), (c * d ** 3).sum(axis=1)
    t = (x * s).sum(axis=1)
    # counts in the top set (axis 1) and the bottom set (axis 2); one term where no row has one
    n_a = TOP_TERMS if k_top.any() else 1
    n_b = BOTTOM_TERMS if k_bottom.any() else 1
    a1, b1 = np.arange(n_a, dtype=np.float64), np.arange(n_b, dtype=np.float64)
    a, b = a1[None, :, None], b1[None, None, :]
    m = n[:, None, None] - a - b  # draws from the common bins
    possible = ((a <= np.minimum(k_top, n)[:, None, None]) & (b <= np.minimum(k_bottom, n)[:, None, None])
                & (m >= 0) & (m <= k_c[:, None, None]))
    # log P(A = a, B = b): logC(K_top, a) + logC(K_bottom, b) + logC(K_c, n - a - b) - logC(M, n),
    # from one row of each term (the last depends on a + b only)
    drawn = a1[:, None] + b1[None, :]
    log_c = _log_choose(k_c[:, None], n[:, None] - np.arange(n_a + n_b - 1, dtype=np.float64)[None, :])
    log_pmf = (_log_choose(k_top[:, None], a1[None, :])[:, :, None]
               + _log_choose(k_bottom[:, None], b1[None, :])[:, None, :]
               + log_c[:, drawn.astype(np.intp)] - _log_choose(total, n)[:, None, None])
    pmf = np.where(possible, np.exp(log_pmf), 0.0)
    # P(T_C >= t - a s_top - b s_bottom), for the counts the pooled sample allows
    needed = pmf > 0.0
    m_ok = np.where(needed, m, 0.0)
    size = np.broadcast_to(k_c[:, None, None], m.shape)[needed]
    m_n = m_ok[needed]
    rest = size - m_n
    var = np.divide(m_n * rest * np.broadcast_to(s2_c[:, None, None], m.shape)[needed], size * (size - 1.0),
                    out=np.zeros_like(m_n), where=size > 1)
    third = np.divide(m_n * rest * (rest - m_n) * np.broadcast_to(s3_c[:, None, None], m.shape)[needed],
                      size * (size - 1.0) * (size - 2.0), out=np.zeros_like(m_n), where=size > 2)
    centre = (a * s_top[:, None, None] + b * s_bottom[:, None, None] + m_ok * mean_c[:, None, None])[needed]
    scale = np.broadcast_to((np.abs(s).max(axis=1) * n + 1.0)[:, None, None], m.shape)[needed]
    gap = np.broadcast_to(t[:, None, None], m.shape)[needed] - centre - 1e-9 * scale  # less a rounding
    spread = var > 1e-12 * scale ** 2
    sd = np.sqrt(np.where(spread, var, 1.0))
    given = np.zeros_like(pmf)
    given[needed] = np.where(spread, _skewed_sf(np.where(spread, gap / sd, 0.0),
                                                np.where(spread, third / sd ** 3, 0.0)),
                             (gap <= 0).astype(np.float64))
    beyond = (_hypergeom_beyond(np.full_like(n, n_a - 1.0), total, k_top, n)
              + _hypergeom_beyond(np.full_like(n, n_b - 1.0), total, k_bottom, n))
    tail[in_r] = np.minimum((pmf * given).sum(axis=(1, 2)) + beyond, 1.0)
    return tail


def _hypergeom_beyond(last: Vector, total: Vector, marked: Vector, n: Vector) -> Vector:
    """An upper bound on P(Y > last), Y the marked values among n drawn from ``total`` holding
    ``marked``: pmf(last) r / (1 - r), r = pmf(last + 1) / pmf(last), which only falls as y
    grows (a geometric series past the mode); 1 where last is not past the mode."""
    ratio = np.divide((marked - last) * (n - last), (last + 1.0) * (total - marked - n + last + 1.0),
                      out=np.zeros_like(last), where=(total - marked - n + last + 1.0) > 0)
    ratio = np.clip(ratio, 0.0, None)
    pmf = np.exp(_log_hypergeom(last, total, marked, n))
    return np.asarray(np.where(ratio < 1.0, pmf * ratio / np.where(ratio < 1.0, 1.0 - ratio, 1.0), 1.0))


def _log_hypergeom(y: Counts, total: Counts, marked: Counts, n: Counts) -> Counts:
    """log P(Y = y), Y the marked values among n drawn without replacement from ``total`` values
    of which ``marked`` are marked: log C(K, y) + log C(M - K, n - y) - log C(M, n)."""
    return _log_choose(marked, y) + _log_choose(total - marked, n - y) - _log_choose(total, n)


def _log_choose(a: Counts, b: Counts) -> Counts:
    """log C(a, b) = -log(a + 1) - betaln(a - b + 1, b + 1) (``scipy.special.betaln``);
    -inf outside 0 <= b <= a."""
    from scipy import special

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = (b >= 0) & (b <= a)
    a_ok, b_ok = np.where(ok, a, 1.0), np.where(ok, b, 0.0)
    return np.asarray(np.where(ok, -np.log1p(a_ok) - special.betaln(a_ok - b_ok + 1.0, b_ok + 1.0), -np.inf))


def _skewed_sf(z: Counts, skewness: Counts) -> Counts:
    """P(X >= z) for a standardised X with this skewness, one-sided as ``skewed_two_sided`` is
    two-sided: on X's long side the larger of the normal and Pearson type III tails, on its
    short side the normal one."""
    from scipy import special

    up_long = (z > 0) & (skewness > 1e-8)
    down_long = (z < 0) & (skewness < -1e-8)
    pearson = np.zeros_like(z)
    long_side = up_long | down_long
    if long_side.any():  # the incomplete gamma only where it is used
        g = np.abs(skewness[long_side])
        shape = 4.0 / (g * g)
        with np.errstate(invalid="ignore", over="ignore"):
            tail = special.gammaincc(shape, shape + np.abs(z[long_side]) * np.sqrt(shape))
        pearson[long_side] = np.where(np.isfinite(tail), tail, 0.0)
    upper = np.where(up_long, np.maximum(special.ndtr(-z), pearson), special.ndtr(-z))
    below = np.where(down_long, np.maximum(special.ndtr(z), pearson), special.ndtr(z))
    return np.asarray(np.where(z < 0, 1.0 - below, upper))


def _linear_rank(ref: Counts, cur: Counts, mask: Mask, scores: Counts) -> tuple[Vector, Vector]:
    """(z, skewness) of the linear rank statistic (``_linear_rank_moments``)."""
    return _linear_rank_moments(ref, cur, mask, scores)[:2]


def _linear_rank_moments(ref: Counts, cur: Counts, mask: Mask, scores: Counts
                         ) -> tuple[Vector, Vector, Counts, Vector, Vector]:
    """(z, skewness) of the linear rank statistic under the permutation distribution, with the
    pooled counts, the window's size and the pooled total they were computed from. The sum
    of n of the M pooled scores drawn without replacement has variance
    ``n N / (M (M - 1)) * sum (s - s_mean)^2`` and third central moment
    ``n N (N - n) / (M (M - 1) (M - 2)) * sum (s - s_mean)^3`` (N = M - n)."""
    pooled = np.where(mask, ref + cur, 0.0)
    n = np.where(mask, cur, 0.0).sum(axis=1)
    total = pooled.sum(axis=1)
    n_ref = total - n
    s = np.where(mask, scores, 0.0)
    mean = np.divide((pooled * s).sum(axis=1), total, out=np.zeros_like(total), where=total > 0)
    centred = np.where(pooled > 0, s - mean[:, None], 0.0)
    spread = (pooled * centred ** 2).sum(axis=1)
    var = np.divide(n * n_ref * spread, total * (total - 1.0), out=np.zeros_like(total), where=total > 1)
    third = np.divide(n * n_ref * (n_ref - n) * (pooled * centred ** 3).sum(axis=1),
                      total * (total - 1.0) * (total - 2.0), out=np.zeros_like(total), where=total > 2)
    statistic = (np.where(mask, cur, 0.0) * s).sum(axis=1) - n * mean
    tested = var > 1e-12 * np.maximum(spread, 1.0)
    z = np.divide(statistic, np.sqrt(var), out=np.zeros_like(total), where=tested)
    skewness = np.divide(third, var * np.sqrt(np.maximum(var, 0.0)), out=np.zeros_like(total), where=tested)
    return np.asarray(z), np.asarray(skewness), pooled, n, total


def skewed_two_sided(z: Vector, skewness: Vector) -> Vector:
    """Two-sided p-value of a standardised statistic with the given skewness: on its long side
    (z of the skewness's sign) the larger of the normal tail and the Pearson type III one (a
    gamma distribution with this mean, variance and skewness: ``scipy.stats.pearson3``), on
    the short side the normal tail. Never smaller than ``normal_two_sided(z)``: the Pearson
    curve only lengthens the tail the skewness says is long (its other tail is bounded, and a
    bounded tail could call an ordinary value of a mixture impossible). Twice ``_skewed_sf``
    on the statistic's side."""
    z = np.asarray(z, dtype=np.float64)
    skewness = np.asarray(skewness, dtype=np.float64)
    # the skewness seen from the statistic's side: positive where that side is the long one
    skewness = np.where(np.isfinite(skewness), np.where(z < 0, -skewness, skewness), 0.0)
    return np.asarray(np.minimum(2.0 * _skewed_sf(np.abs(z), skewness), 1.0))


def normal_two_sided(z: Vector) -> Vector:
    """Two-sided p-value of a standard normal statistic: P(|Z| >= |z|) (``scipy.special.ndtr``)."""
    from scipy import special

    return np.asarray(np.minimum(2.0 * special.ndtr(-np.abs(np.asarray(z, dtype=np.float64))), 1.0))


def wasserstein_bounds(ref: Counts, cur: Counts, mask: Mask, points: Counts,
                       confidence: float = 0.95) -> tuple[Vector, Vector]:
    """A confidence interval for the binned Wasserstein distance ``wasserstein(ref, cur, mask,
    points)`` between the two populations (both samples' noise counted), at ``confidence``,
    conservative (asymptotically valid for any reference, continuous or not):

    W = sum_i g_i |D_i| over the interior edges, D_i the gap between the two CDFs at edge i, g_i
    the distance between the representative points either side. Each D_i is estimated with
    variance ``(1/n + 1/N) F_i (1 - F_i)`` (F the pooled CDF). Upper bound: every |D_i| at its
    upper bound, a Bonferroni correction over the edges. Lower bound: W >= |sum_i g_i d_i D_i|
    for any signs d_i, and that sum is estimated with a known variance (of a step function
    of one value, by the pooled bin shares); the larger of the lower bounds for d = +1 (the
    difference of the binned means) and d = -1 below the pooled median, +1 above (a change of
    spread), each at half the error rate. Returns (lower, upper), 0 <= lower <= upper."""
    from scipy import special

    beta = 1.0 - confidence
    p = proportions(ref, mask)
    q = proportions(cur, mask)
    pooled = np.where(mask, ref + cur, 0.0)
    total = pooled.sum(axis=1, keepdims=True)
    share = np.divide(pooled, total, out=np.zeros_like(pooled), where=total > 0)
    n_ref = np.where(mask, ref, 0.0).sum(axis=1)
    n_cur = np.where(mask, cur, 0.0).sum(axis=1)
    noise = np.divide(1.0, n_ref, out=np.zeros_like(n_ref), where=n_ref > 0) + np.divide(
        1.0, n_cur, out=np.zeros_like(n_cur), where=n_cur > 0)
    edge = mask[:, 1:]  # the interior edges: between bin i and bin i + 1, both existing
    gaps = np.where(edge, np.diff(points, axis=1), 0.0)
    d = np.cumsum(q - p, axis=1)[:, :-1]
    cdf = np.clip(np.cumsum(share, axis=1)[:, :-1], 0.0, 1.0)
    sd = np.sqrt(noise[:, None] * cdf * (1.0 - cdf))
    edges = np.maximum(edge.sum(axis=1), 1)
    z_edge = special.ndtri(1.0 - beta / (2.0 * edges))
    upper = (gaps * (np.abs(d) + z_edge[:, None] * sd)).sum(axis=1)
    z_dir = special.ndtri(1.0 - beta / 4.0)
    lower = np.zeros(len(p))
    for signs in (np.ones_like(cdf), np.where(cdf < 0.5, -1.0, 1.0)):
        a = gaps * signs
        estimate = (a * d).sum(axis=1)
        # sum_i a_i D_i = (mean of h over the window) - (over the reference), h_j = sum_{i >= j} a_i
        h = np.zeros_like(share)
        h[:, :-1] = np.cumsum(a[:, ::-1], axis=1)[:, ::-1]
        var = noise * np.clip((share * h * h).sum(axis=1) - (share * h).sum(axis=1) ** 2, 0.0, None)
        lower = np.maximum(lower, np.abs(estimate) - z_dir * np.sqrt(var))
    return np.asarray(np.maximum(lower, 0.0)), np.asarray(np.maximum(upper, lower))


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


def chi2_moments(ref: Counts, cur: Counts, mask: Mask) -> tuple[Vector, Vector]:
    """Exact mean and variance of Pearson's statistic for the 2 x k table (reference, window)
    over every split of the pooled sample into a reference and a window of these sizes (the
    permutation distribution given the table's margins: the window's counts multivariate
    hypergeometric), bins empty on both sides left out (Haldane 1940).

    In closed form, with M the table's total, n and N = M - n its rows, k the bins used and
    Delta = sum_j 1 / c_j - k^2 / M (c the pooled counts; Delta >= 0, 0 when they are equal):

        mean = (k - 1) M / (M - 1)
        var  = M^3 [(M - 1) (M (M + 1) - 6 n N) Delta + 2 (n - 1) (N - 1) (k - 1) (M - k)]
               / (n N (M - 1)^2 (M - 2) (M - 3))

    (derived from the factorial moments E[x_i^(a) x_j^(b)] = n^(a+b) c_i^(a) c_j^(b) / M^(a+b),
    y^(a) the falling factorial; tests/test_drift_stats.py checks it against every table of
    ``scipy.stats.multivariate_hypergeom`` and against exact rational arithmetic). The variance
    exceeds the chi-square's 2 (k - 1) where expected counts are small (Delta large), which is
    what makes the plain chi-square test liberal in sparse tables; it tends to 2 (k - 1) as
    they grow. Every term is a product of positive factors but for M (M + 1) - 6 n N, so no
    sum cancels: the variance stays exact however large the counts (expanding the moments in
    falling factorials instead cancels terms of order M^4 and lost every digit at 10^8)."""
    used = mask & ((ref + cur) > 0)
    c = np.where(used, ref + cur, 0.0)
    n = np.where(used, cur, 0.0).sum(axis=1)
    n_ref = np.where(used, ref, 0.0).sum(axis=1)
    m = n + n_ref
    k = used.sum(axis=1).astype(np.float64)
    ok = (n > 0) & (n_ref > 0) & (m > 3)
    safe_m = np.where(ok, m, 4.0)
    inv = np.divide(1.0, c, out=np.zeros_like(c), where=used)
    # sum_j (1 / c_j - k / M): Delta, summed term by term (each term exact to a rounding)
    delta = np.clip(np.where(used, inv - (k / safe_m)[:, None], 0.0).sum(axis=1), 0.0, None)
    numerator = safe_m ** 3 * ((safe_m - 1.0) * (safe_m * (safe_m + 1.0) - 6.0 * n * n_ref) * delta
                               + 2.0 * (n - 1.0) * (n_ref - 1.0) * (k - 1.0) * (safe_m - k))
    denominator = n * n_ref * (safe_m - 1.0) ** 2 * (safe_m - 2.0) * (safe_m - 3.0)
    var = np.divide(numerator, denominator, out=np.zeros_like(m), where=ok)
    mean = np.where(ok, (k - 1.0) * safe_m / (safe_m - 1.0), 0.0)
    return np.asarray(mean), np.asarray(np.where(ok & (k > 1), np.clip(var, 0.0, None), 0.0))


def chi2_sf_moments(x: Vector, mean: Vector, var: Vector) -> Vector:
    """P(X > x) for X matched in mean and variance by a scaled chi-square ``a * chi2(nu)``
    (a = var / (2 mean), nu = 2 mean^2 / var); 1 where there is no test (mean or var 0)."""
    none = (mean <= 0) | (var <= 0)
    a = np.divide(var, 2.0 * mean, out=np.ones_like(mean), where=~none)
    nu = np.divide(2.0 * mean * mean, var, out=np.ones_like(mean), where=~none)
    return np.asarray(np.where(none, 1.0, chi2_sf(np.divide(x, a, out=np.zeros_like(x), where=~none), nu)))


def chi2_p_value(ref: Counts, cur: Counts, mask: Mask) -> Vector:
    """The chi-square test's p-value for the (merged) 2 x k table: Pearson's statistic against
    a chi-square scaled to its exact permutation mean and variance (``chi2_sf_moments``,
    ``chi2_moments``); 1 where fewer than two bins are used.

    A table of two used bins is one count, the window's in the first, hypergeometric given the
    margins, and X^2 its squared standard score: there the p-value is the count's, allowing for
    its skewness (``linear_rank_p`` with the bin's indicator as the score). A scaled chi-square
    has no room for the skewness of a rare bin's count: with 20 rare values in 10,100 and a
    100-value window it rejects at 0.5% with probability 1.6% (exactly, over the hypergeometric),
    the skewed one 0.1%."""
    statistic, _ = chi2_contingency(ref, cur, mask)
    p = chi2_sf_moments(statistic, *chi2_moments(ref, cur, mask))
    used = mask & ((ref + cur) > 0)
    two = used.sum(axis=1) == 2
    if two.any():
        first = np.argmax(used, axis=1)
        indicator = (np.arange(ref.shape[1])[None, :] == first[:, None]).astype(np.float64)
        p = np.where(two, linear_rank_p(ref, cur, mask, indicator), p)
    return np.asarray(p)


# Bins are merged until every expected count of the table is at least this. Cochran's rule
# (5) is for the plain chi-square distribution; against the exact permutation mean and variance
# (chi2_moments) the test keeps its level with expected counts of 1 (docs/drift.md), and the
# thin bins it keeps (a 1% tail in a 200-value window, a rare category) are where outliers and
# rare categories show: 5% outliers in 200-value windows were seen 5% of the time at 5, 68% at 1.
MIN_EXPECTED = 1.0


def group_starts(expected: list[float], min_expected: float) -> list[int]:
    """Where each group of adjacent bins starts when bins are merged left to right until a
    group's ``expected`` count reaches ``min_expected``; a short last group joins the one before
    it. One group (``[0]``) when no merge gets there."""
    starts = [0]
    acc = 0.0
    for i, e in enumerate(expected):
        acc += e
        if acc >= min_expected and i + 1 < len(expected):
            starts.append(i + 1)
            acc = 0.0
    if len(starts) > 1 and acc < min_expected:
        starts.pop()
    return starts


def merge_sparse_bins(ref: Counts, cur: Counts, mask: Mask,
                      min_expected: float = MIN_EXPECTED) -> tuple[Counts, Counts, Mask]:
    """Merge adjacent bins (left to right) until every group's expected count in the smaller
    row of the 2 x k table is at least ``min_expected``, so that no cell of the chi-square test
    rests on a fraction of a value. A short last group joins the one before it.

    The expected counts are those of the table under no drift, taken from the reference: a
    bin's share of the reference times the smaller row's size. Not from the pooled counts:
    they hold the window's own, and a reference's quantile bins hold fixed counts, so a bin
    whose expectation sat just under ``min_expected`` stayed apart exactly when the window had
    a value in it -- the partition followed the window and the test lost its level (1.26% false
    alarms in 20-value windows of a normal feature, the chi-square at 12 times its share of
    alpha). A bin the reference left empty takes the table's expectation, its pooled count
    times the smaller row's share of the table (``scipy.stats.contingency.expected_freq``):
    under no drift it is empty, and a window that moved there stays apart (a constant
    reference, or a single category, against a window that moved elsewhere; expecting 0 there
    would merge it away and give p = 1).

    At least two groups whenever two bins hold values: where merging would put every value in
    one group (a category or value too rare for its expected count to reach ``min_expected``,
    0.5% of a 100-value window: a 0.5% category rising to 50% of the window went unseen, p = 1),
    the bin holding the most values is set against all the others together; ``chi2_p_value``
    tests such a two-group table with the skewness of its count allowed for."""
    pooled = np.where(mask, ref + cur, 0.0)
    n_ref = np.where(mask, ref, 0.0).sum(axis=1)
    n_cur = np.where(mask, cur, 0.0).sum(axis=1)
    total = n_ref + n_cur
    smaller = np.minimum(n_ref, n_cur)
    ref_scale = np.divide(smaller, n_ref, out=np.zeros_like(total), where=n_ref > 0)
    share = np.divide(smaller, total, out=np.zeros_like(total), where=total > 0)
    rows = ref.shape[0]
    out_ref = np.zeros_like(ref)
    out_cur = np.zeros_like(cur)
    out_mask = np.zeros_like(mask)
    for r in range(rows):
        bins = np.flatnonzero(mask[r])
        r_bins, c_bins = ref[r, bins], cur[r, bins]
        expected = np.where(r_bins > 0, r_bins * ref_scale[r], pooled[r, bins] * share[r])
        starts = group_starts(expected.tolist(), min_expected)
        if len(starts) == 1 and np.count_nonzero(pooled[r, bins]) >= 2:
            top = int(np.argmax(pooled[r, bins]))
            out_ref[r, :2] = r_bins[top], r_bins.sum() - r_bins[top]
            out_cur[r, :2] = c_bins[top], c_bins.sum() - c_bins[top]
            out_mask[r, :2] = True
            continue
        idx = np.asarray(starts)
        g = len(idx)
        out_ref[r, :g] = np.add.reduceat(r_bins, idx)
        out_cur[r, :g] = np.add.reduceat(c_bins, idx)
        out_mask[r, :g] = True
    return out_ref, out_cur, out_mask
