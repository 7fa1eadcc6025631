"""False-alarm and detection rates of modelmon's drift methods, from a seeded simulation.

Run it from the repository root::

    .venv/bin/python tests/bench/drift_rates.py                 # 2000 trials per scenario
    .venv/bin/python tests/bench/drift_rates.py --trials 500    # quicker, coarser
    .venv/bin/python tests/bench/drift_rates.py --json rates.json

Not a pytest test (pytest only collects ``test_*.py``); needs only NumPy and SciPy.

Every trial is independent: a fresh 10,000-sample reference, profiled with the production
code (``numeric_feature``: 20 quantile bins plus 1st/99th-percentile tail edges; categorical:
top-K counts), and a fresh window of ``n`` samples drawn from the scenario's current
distribution. In the no-drift scenarios the window comes from the very distribution the
reference was drawn from, so every detection there is a false alarm. For speed, up to 500
trials run as the features of one ``ModelDrift`` (one feature per trial, each with its own
reference and window); features are scored independently, so this is the same as one
``ModelDrift`` per trial.

Columns (each the share of trials flagged as drifted):

- ``auto``: the default verdict, ``FeatureDrift.detected`` with ``DriftSettings()``: numeric,
  2 * min(p_chi2, p_ks) < 0.005; categorical, p_chi2 < 0.005;
- ``chi2``, ``ks``: one binned test alone, p < 0.005 (KS is numeric only);
- ``psi>0.1``, ``psi>0.2``, ``js>0.1``, ``hell>0.1``: the distance scores against the
  thresholds commonly used with them (PSI, Jensen-Shannon distance, Hellinger distance);
- ``rawKS``: for comparison, SciPy's two-sample KS test on the raw (unbinned) values,
  ``scipy.stats.ks_2samp(reference, window).pvalue < 0.05`` (numeric only).

The targets checked for the default verdict: false alarms <= 1% with no drift (n = 200 and
n = 1000), detection >= 99% for the shift, scale and category-mix scenarios and >= 95% for the
contamination scenario (all n = 1000). A 95% Wilson interval is printed with each.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from modelmon.drift.columns import Batch, Column
from modelmon.drift.engine import DriftSettings, FeatureDrift, ModelDrift
from modelmon.reference.profile import Feature, Profile, categorical_from_counts, numeric_feature
from numpy.typing import NDArray
from scipy import stats as sps

REFERENCE_SIZE = 10_000
DEFAULT_TRIALS = 2000
TRIALS_PER_MODEL = 500  # trials scored together as the features of one ModelDrift
SEED = 20240601
ALPHA = 0.005  # DriftSettings' default threshold for the tests
RAW_KS_ALPHA = 0.05

Kind = Literal["numeric", "categorical"]
Sampler = Callable[[np.random.Generator, tuple[int, int]], NDArray[Any]]

CATEGORY_REFERENCE = (0.5, 0.3, 0.2)
CATEGORY_SHIFTED = (0.4, 0.4, 0.2)  # 10 points moved from the first category to the second


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


def _categories(probs: tuple[float, ...]) -> Sampler:
    return lambda rng, shape: rng.choice(len(probs), size=shape, p=np.asarray(probs))


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

    def draw(self, rng: np.random.Generator, trials: int) -> tuple[NDArray[Any], NDArray[Any]]:
        """(references, windows): arrays of shape (trials, REFERENCE_SIZE) and (trials, n)."""
        return self.reference(rng, (trials, REFERENCE_SIZE)), self.current(rng, (trials, self.n))


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("none_200", "no drift, N(0,1), n=200", "numeric", 200, _normal(), _normal(), False, 0.01),
    Scenario("none_1000", "no drift, N(0,1), n=1000", "numeric", 1000, _normal(), _normal(), False, 0.01),
    Scenario("shift", "mean +0.25 std, n=1000", "numeric", 1000, _normal(), _normal(0.25), True, 0.99),
    Scenario("scale", "std x1.25, n=1000", "numeric", 1000, _normal(), _normal(0.0, 1.25), True, 0.99),
    Scenario("category", "category mix +10 points, n=1000", "categorical", 1000,
             _categories(CATEGORY_REFERENCE), _categories(CATEGORY_SHIFTED), True, 0.99),
    Scenario("outliers", "5% outliers at +4 std, n=1000", "numeric", 1000, _normal(),
             _contaminated(0.05, 4.0), True, 0.95),
    Scenario("lognormal_200", "no drift, lognormal, n=200", "numeric", 200, _lognormal, _lognormal,
             False, 0.01),
    Scenario("poisson_200", "no drift, Poisson(3), n=200", "numeric", 200, _poisson, _poisson,
             False, 0.01),
)

METHODS: tuple[tuple[str, str], ...] = (  # (column key, header)
    ("auto", "auto"), ("chi2", "chi2"), ("ks", "ks"), ("psi_0.1", "psi>0.1"), ("psi_0.2", "psi>0.2"),
    ("js_0.1", "js>0.1"), ("hellinger_0.1", "hell>0.1"), ("raw_ks", "rawKS"),
)


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
                 settings: DriftSettings | None = None) -> list[FeatureDrift]:
    """Score each (reference, window) pair as one feature of a single ModelDrift; returns the
    FeatureDrift of every trial, in order."""
    trials = len(references)
    features = [reference_feature(f"t{i}", kind, references[i]) for i in range(trials)]
    profile = Profile("sim", "1", REFERENCE_SIZE, tuple(features))
    md = ModelDrift("sim", profile, settings or DriftSettings(), max_features=trials,
                    clock=lambda: 0.0)
    columns: dict[str, Column] = {}
    for i in range(trials):
        columns[f"t{i}"] = windows[i] if kind == "numeric" else category_labels(windows[i])
    md.observe(Batch(rows=windows.shape[1], columns=columns))
    return list(md.compute().features)


def method_flags(results: list[FeatureDrift]) -> dict[str, NDArray[np.bool_]]:
    """Per method, which trials it flags as drifted (KS only where the feature has it)."""
    def flags(test: Callable[[FeatureDrift], bool]) -> NDArray[np.bool_]:
        return np.array([test(r) for r in results], dtype=bool)

    out = {
        "auto": flags(lambda r: bool(r.detected)),
        "chi2": flags(lambda r: r.p_values["chi2"] < ALPHA),
        "psi_0.1": flags(lambda r: r.scores["psi"] > 0.1),
        "psi_0.2": flags(lambda r: r.scores["psi"] > 0.2),
        "js_0.1": flags(lambda r: r.scores["jensen_shannon"] > 0.1),
        "hellinger_0.1": flags(lambda r: r.scores["hellinger"] > 0.1),
    }
    if all("ks" in r.p_values for r in results):
        out["ks"] = flags(lambda r: r.p_values["ks"] < ALPHA)
    return out


def raw_ks_flags(references: NDArray[np.float64], windows: NDArray[np.float64]) -> NDArray[np.bool_]:
    return np.array([sps.ks_2samp(ref, cur).pvalue < RAW_KS_ALPHA
                     for ref, cur in zip(references, windows, strict=True)], dtype=bool)


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
    counts: dict[str, int]  # method -> trials flagged; absent: not applicable
    seconds: float

    def rate(self, method: str) -> float | None:
        return self.counts[method] / self.trials if method in self.counts else None

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
        return met, (f"{what} {rate:6.2%} (95% CI {lo:.2%}-{hi:.2%}), target {sign} {target:.0%}")


def run_scenario(scenario: Scenario, trials: int, seed: int, index: int) -> ScenarioRates:
    rng = np.random.default_rng([seed, index])
    start = time.perf_counter()
    counts: dict[str, int] = {}
    done = 0
    while done < trials:
        chunk = min(TRIALS_PER_MODEL, trials - done)
        references, windows = scenario.draw(rng, chunk)
        flags = method_flags(score_trials(scenario.kind, references, windows))
        if scenario.kind == "numeric":
            flags["raw_ks"] = raw_ks_flags(references, windows)
        for method, flagged in flags.items():
            counts[method] = counts.get(method, 0) + int(flagged.sum())
        done += chunk
    return ScenarioRates(scenario, trials, counts, time.perf_counter() - start)


def format_table(rows: list[ScenarioRates]) -> str:
    label_width = max(len(r.scenario.label) for r in rows)
    header = f"{'scenario':<{label_width}}  " + "  ".join(f"{h:>8}" for _, h in METHODS)
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = []
        for method, _ in METHODS:
            rate = r.rate(method)
            cells.append(f"{'-':>8}" if rate is None else f"{rate:8.2%}")
        lines.append(f"{r.scenario.label:<{label_width}}  " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="trials per scenario")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--json", metavar="FILE", help="also write the rates as JSON")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be positive")

    start = time.perf_counter()
    print(f"modelmon drift detection rates: {args.trials} trials per scenario, reference "
          f"{REFERENCE_SIZE} samples, seed {args.seed}", flush=True)
    rows = []
    for index, scenario in enumerate(SCENARIOS):
        rows.append(run_scenario(scenario, args.trials, args.seed, index))
        print(f"  {scenario.label}: {rows[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    print()
    print(format_table(rows))
    print()
    print(f"auto = 2*min(p_chi2, p_ks) < {ALPHA} (categorical: p_chi2 < {ALPHA}); chi2, ks: p < {ALPHA};"
          f" rawKS: scipy ks_2samp on raw values, p < {RAW_KS_ALPHA}")
    print()
    print("Targets for the default verdict (auto):")
    misses = 0
    for r in rows:
        checked = r.verdict()
        if checked is None:
            continue
        met, text = checked
        misses += not met
        print(f"  {'PASS' if met else 'MISS'}  {r.scenario.label:<34} {text}")
    elapsed = time.perf_counter() - start
    print(f"\n{misses} target(s) missed; total {elapsed:.1f} s")

    if args.json:
        doc = {
            "trials": args.trials, "seed": args.seed, "reference_size": REFERENCE_SIZE,
            "seconds": elapsed,
            "scenarios": [{
                "key": r.scenario.key, "label": r.scenario.label, "kind": r.scenario.kind,
                "n": r.scenario.n, "drifted": r.scenario.drifted, "target": r.scenario.target,
                "rates": {m: r.rate(m) for m, _ in METHODS if m in r.counts},
                "target_met": (v := r.verdict()) is not None and v[0],
            } for r in rows],
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
