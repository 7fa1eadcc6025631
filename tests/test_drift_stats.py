"""Drift statistics against independent references from SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from modelmon.drift import stats
from modelmon.reference.profile import bin_counts, quantile_edges
from scipy import stats as ss
from scipy.spatial.distance import euclidean, jensenshannon

SEEDS = [0, 1, 2]


def smoothed(counts: np.ndarray) -> np.ndarray:
    c = counts + stats.SMOOTHING
    return c / c.sum()


def scenario(seed: int, kind: str, n: int = 1000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(reference raw values, window raw values, reference bin counts, window bin counts)."""
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(10_000)
    cur = {"same": rng.standard_normal(n), "shift": rng.standard_normal(n) + 0.5,
           "scale": rng.standard_normal(n) * 2, "skew": rng.lognormal(0, 1, n),
           "one": rng.standard_normal(1)}[kind]
    edges = quantile_edges(ref)
    return ref, cur, bin_counts(ref, edges).astype(float), bin_counts(cur, edges).astype(float)


def as_rows(*vectors: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(v[None, :] for v in vectors)


KINDS = ["same", "shift", "scale", "skew", "one"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_divergences_match_scipy(seed: int, kind: str) -> None:
    _, _, ref, cur = scenario(seed, kind)
    r, c = as_rows(ref, cur)
    mask = np.ones_like(r, dtype=bool)
    p, q = smoothed(ref), smoothed(cur)
    # PSI is the symmetric KL divergence: KL(q||p) + KL(p||q).
    assert stats.psi(r, c, mask)[0] == pytest.approx(ss.entropy(q, p) + ss.entropy(p, q), rel=1e-9)
    assert stats.jensen_shannon(r, c, mask)[0] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9)
    assert stats.hellinger(r, c, mask)[0] == pytest.approx(
        euclidean(np.sqrt(p), np.sqrt(q)) / np.sqrt(2), rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_wasserstein_matches_scipy(seed: int, kind: str) -> None:
    _, _, ref, cur = scenario(seed, kind)
    r, c = as_rows(ref, cur)
    points = np.cumsum(np.random.default_rng(seed).uniform(0.1, 1.0, len(ref)))[None, :]
    mask = np.ones_like(r, dtype=bool)
    expected = ss.wasserstein_distance(points[0], points[0], ref, cur) if cur.sum() else 0.0
    assert stats.wasserstein(r, c, mask, points)[0] == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["same", "shift", "scale", "skew"])
def test_ks_binned_agrees_with_raw_data_ks(seed: int, kind: str) -> None:
    """Binned D can only miss the raw D inside a bin, by at most the largest bin mass; the
    p-value of our asymptotic formula matches SciPy's on the raw statistic."""
    ref_raw, cur_raw, ref, cur = scenario(seed, kind)
    r, c = as_rows(ref, cur)
    mask = np.ones_like(r, dtype=bool)
    binned = stats.ks_statistic(r, c, mask)[0]
    raw = ss.ks_2samp(ref_raw, cur_raw)
    tolerance = max((ref / ref.sum()).max(), (cur / cur.sum()).max())
    assert binned <= raw.statistic + 1e-12
    assert raw.statistic - binned <= tolerance
    ours = stats.ks_pvalue(np.array([raw.statistic]), np.array([len(ref_raw)], float),
                           np.array([len(cur_raw)], float))[0]
    reference = ss.ks_2samp(ref_raw, cur_raw, method="asymp").pvalue
    assert ours == pytest.approx(reference, rel=0.15, abs=2e-3)


def test_kolmogorov_sf_matches_scipy() -> None:
    x = np.linspace(0.05, 4, 200)
    np.testing.assert_allclose(stats.kolmogorov_sf(x), ss.kstwobign.sf(x), atol=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 10, 19, 21, 50, 200])
def test_chi2_sf_matches_scipy(df: int) -> None:
    x = np.concatenate([np.linspace(0.01, 4 * df + 40, 300), [1e-6, 1e4]])
    np.testing.assert_allclose(stats.chi2_sf(x, np.full_like(x, df)), ss.chi2.sf(x, df),
                               rtol=1e-9, atol=1e-300)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["same", "shift", "scale", "skew"])
def test_chi2_contingency_matches_scipy(seed: int, kind: str) -> None:
    _, _, ref, cur = scenario(seed, kind, n=500)
    r, c = as_rows(ref, cur)
    mask = np.ones_like(r, dtype=bool)
    stat, df = stats.chi2_contingency(r, c, mask)
    used = (ref + cur) > 0
    expected = ss.chi2_contingency(np.vstack([ref[used], cur[used]]), correction=False)
    assert stat[0] == pytest.approx(expected.statistic, rel=1e-9)
    assert df[0] == expected.dof
    assert stats.chi2_sf(stat, df)[0] == pytest.approx(expected.pvalue, rel=1e-6, abs=1e-300)


def test_empty_bins_and_padding_are_ignored() -> None:
    ref = np.array([[10.0, 0.0, 30.0, 0.0], [5.0, 5.0, 0.0, 0.0]])
    cur = np.array([[12.0, 0.0, 28.0, 0.0], [9.0, 1.0, 0.0, 0.0]])
    mask = np.array([[True, True, True, True], [True, True, False, False]])
    stat, df = stats.chi2_contingency(ref, cur, mask)
    first = ss.chi2_contingency([[10, 30], [12, 28]], correction=False)
    second = ss.chi2_contingency([[5, 5], [9, 1]], correction=False)
    np.testing.assert_allclose(stat, [first.statistic, second.statistic])
    np.testing.assert_array_equal(df, [1, 1])
    # Padding bins (mask False) must not change the smoothed scores.
    padded = stats.psi(ref[1:], cur[1:], mask[1:])
    alone = stats.psi(ref[1:, :2], cur[1:, :2], mask[1:, :2])
    np.testing.assert_allclose(padded, alone)


def test_empty_window_gives_finite_scores() -> None:
    ref = np.array([[10.0, 20.0, 30.0]])
    cur = np.zeros_like(ref)
    mask = np.ones_like(ref, dtype=bool)
    for fn in (stats.psi, stats.jensen_shannon, stats.hellinger, stats.ks_statistic):
        assert np.isfinite(fn(ref, cur, mask)).all()
    stat, df = stats.chi2_contingency(ref, cur, mask)
    assert stats.chi2_sf(stat, df)[0] == 1.0  # no evidence of drift without data


def test_identical_distributions_score_zero() -> None:
    ref = np.array([[100.0, 200.0, 300.0]])
    mask = np.ones_like(ref, dtype=bool)
    for fn in (stats.psi, stats.jensen_shannon, stats.hellinger, stats.ks_statistic):
        assert fn(ref, ref.copy(), mask)[0] == pytest.approx(0.0, abs=1e-12)
    # Same shape, ten times fewer counts: only the additive smoothing separates them.
    assert stats.ks_statistic(ref, ref / 10, mask)[0] == pytest.approx(0.0, abs=1e-12)
    assert 0 < stats.psi(ref, ref / 10, mask)[0] < 1e-3


def test_merge_sparse_bins_keeps_totals_and_expected_counts() -> None:
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 500, (20, 12)).astype(float)
    ref[:, [0, -1]] = 3  # thin tails
    cur = rng.integers(0, 20, (20, 12)).astype(float)
    mask = np.ones_like(ref, dtype=bool)
    mask[5, 8:] = False
    r2, c2, m2 = stats.merge_sparse_bins(ref, cur, mask)
    np.testing.assert_allclose(r2.sum(axis=1), np.where(mask, ref, 0).sum(axis=1))
    np.testing.assert_allclose(c2.sum(axis=1), np.where(mask, cur, 0).sum(axis=1))
    groups = m2.sum(axis=1)
    for row in range(len(ref)):
        if groups[row] > 1:  # Cochran's rule on the merged table, as SciPy computes its expectation
            table = np.vstack([r2[row, :groups[row]], c2[row, :groups[row]]])
            assert (ss.contingency.expected_freq(table) >= stats.MIN_EXPECTED - 1e-9).all()
