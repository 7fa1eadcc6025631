"""Benchmark of modelmon's streaming drift engine, with an optional comparison against Evidently.

Run it from the repository root::

    .venv/bin/python tests/bench/bench_drift.py             # full run, about 3 minutes
    .venv/bin/python tests/bench/bench_drift.py --quick     # short run, under a minute
    .venv/bin/python tests/bench/bench_drift.py --json figures.json

Not a pytest test (pytest only collects ``test_*.py``). Parts 1 and 2 need only the project's
own dependencies. Part 3 needs Evidently 0.7 and pandas, the ``bench`` extra
(``pip install -e '.[bench]'``, i.e. ``"evidently>=0.7,<0.8" "pandas<3"``); without them it is
skipped with a note. Everything is seeded; timings are medians over repeats, measured in this
one process (the engine is single-threaded NumPy).

What it measures:

1. **Ingest throughput** of ``ModelDrift.observe``: feature values per second for 100 numeric
   features in batches of 1,000 and 10,000 rows, with each column a float64 ndarray and, as a
   second row, a Python list of floats (what a decoded JSON payload gives). Both wall-clock and
   per-CPU-second rates are printed; the per-CPU-second rate ("per core") is checked against the
   target of >= 5 million values/s for ndarray columns. For information, also 100 categorical
   features fed as lists of strings.
2. **Recompute time** of ``ModelDrift.compute`` (every statistic of every feature, the
   verdict's location, scale and chi-square tests and the Wasserstein distance's confidence
   interval among them) for 100 numeric features with 10,000 samples in the window, target
   <= 10 ms (issue 14); also for 100
   categorical features (10 categories each) and, for information, 1,000 numeric features.
3. **Evidently 0.7** (``Report([DataDriftPreset()])``, default settings) against modelmon's
   default verdict on the same seeded data: the scenarios of ``drift_rates.py`` (no drift at
   n = 200 and n = 1000; issue 14's mean +0.1 std at n = 1000, mean +0.25 std, std x1.25 and 5%
   outliers at +4 std at n = 200, category mix +5 points at n = 1000; mean +0.25 std, std x1.25,
   category mix +10 points, 5% outliers at +4 std, all n = 1000), each trial with a fresh 10,000-sample reference. Per trial each tool
   starts from the raw reference and window arrays: modelmon profiles the reference, builds a
   ``ModelDrift``, observes the window and computes; Evidently builds its two ``Dataset``
   objects, runs the report and renders ``result.dict()``. The per-column verdict is read from
   Evidently's own per-column test ("Value Drift for column ...", ``include_tests=True``) and
   cross-checked against its ``DriftedColumnsCount`` metric, whose share >= ``drift_share``
   (0.5) is the dataset-level verdict. Printed per scenario: both detection rates, their
   agreement rate, Evidently's chosen method, and the median time per trial of each tool
   (plus modelmon's observe + compute alone, i.e. with the profile built beforehand, as in
   production).

Prints PASS/MISS per target; the exit status is 0 unless something crashed (missed targets do
not change it).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
from drift_rates import (
    REFERENCE_SIZE,
    SCENARIOS,
    SEED,
    Kind,
    Scenario,
    category_labels,
    reference_feature,
    wilson,
)
from modelmon.drift.columns import Batch, Column
from modelmon.drift.engine import DriftSettings, ModelDrift
from modelmon.reference.profile import Profile, categorical_from_counts, numeric_feature
from numpy.typing import NDArray

FEATURES = 100
INGEST_TARGET = 5e6  # values per CPU-second, ndarray columns
COMPUTE_TARGET = 0.010  # seconds, 100 numeric features (issue 14)
# No drift, the issue-14 cells (the small changes) and the larger changes of the first comparison.
EVIDENTLY_SCENARIOS = ("none_200", "none_1000", "small_shift", "shift_200", "scale_200", "category_small",
                       "outliers_200", "shift", "scale", "category", "outliers")
EVIDENTLY_INSTALL = 'pip install "evidently>=0.7,<0.8" "pandas<3"   (or: pip install -e ".[bench]")'
# What the issues report for Evidently 0.7's default verdict, to compare with what we measure
# (the first comparison's issue; issue 14).
ISSUE_CLAIMS = {"none_200": ("false alarms", 0.31), "category": ("detection", 0.01),
                "small_shift": ("detection", 0.71), "shift_200": ("detection", 0.98),
                "category_small": ("detection", 0.00), "outliers_200": ("detection", 0.99)}


@dataclass(frozen=True)
class Config:
    ingest_repeats: int
    compute_repeats: int
    evidently_trials: int

    @classmethod
    def for_run(cls, quick: bool, evidently_trials: int | None) -> Config:
        base = cls(3, 10, 25) if quick else cls(7, 30, 200)
        return cls(base.ingest_repeats, base.compute_repeats, evidently_trials or base.evidently_trials)


@dataclass
class Check:
    name: str
    value: float
    shown: str  # the value as printed, with its unit
    target: str
    met: bool


@dataclass
class Figures:
    ingest: list[dict[str, Any]] = field(default_factory=list)
    compute: list[dict[str, Any]] = field(default_factory=list)
    evidently: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)


def _fixed_clock() -> float:
    return 0.0  # one sub-window: timings must not depend on when the window slides


def numeric_model(rng: np.random.Generator, features: int) -> ModelDrift:
    feats = [numeric_feature(f"x{i}", rng.normal(size=REFERENCE_SIZE)) for i in range(features)]
    profile = Profile("bench", "1", REFERENCE_SIZE, tuple(feats))
    return ModelDrift("bench", profile, DriftSettings(), max_features=features, clock=_fixed_clock)


CATEGORIES = [f"c{i}" for i in range(10)]
CATEGORY_PROBS = np.linspace(2.0, 1.0, len(CATEGORIES)) / np.linspace(2.0, 1.0, len(CATEGORIES)).sum()


def categorical_model(rng: np.random.Generator, features: int) -> ModelDrift:
    feats = []
    for i in range(features):
        counts = rng.multinomial(REFERENCE_SIZE, CATEGORY_PROBS)
        feats.append(categorical_from_counts(f"c{i}", dict(zip(CATEGORIES, counts.tolist(), strict=True)),
                                             0, "input", top_k=20))
    profile = Profile("bench", "1", REFERENCE_SIZE, tuple(feats))
    return ModelDrift("bench", profile, DriftSettings(), max_features=features, clock=_fixed_clock)


def numeric_batch(rng: np.random.Generator, rows: int, features: int, as_list: bool) -> Batch:
    columns: dict[str, Column] = {}
    for i in range(features):
        values = rng.normal(size=rows)
        columns[f"x{i}"] = values.tolist() if as_list else values
    return Batch(rows=rows, columns=columns)


def categorical_batch(rng: np.random.Generator, rows: int, features: int) -> Batch:
    columns: dict[str, Column] = {}
    for i in range(features):
        columns[f"c{i}"] = category_labels(rng.choice(len(CATEGORIES), rows, p=CATEGORY_PROBS))
    return Batch(rows=rows, columns=columns)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one call, with the GC paused."""
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu
    finally:
        gc.enable()


# --- 1. ingest ------------------------------------------------------------------------------------


def bench_ingest(cfg: Config, figures: Figures) -> None:
    print(f"\n1. Ingest: ModelDrift.observe, {FEATURES} features, medians of {cfg.ingest_repeats} repeats")
    print(f"   {'input':<34} {'rows/batch':>10} {'M values/s (wall)':>18} {'M values/CPU-s':>15}")
    rng = np.random.default_rng([SEED, 1])
    cases: list[tuple[str, int, Callable[[], Batch], ModelDrift]] = []
    numeric_md, categorical_md = numeric_model(rng, FEATURES), categorical_model(rng, FEATURES)
    for rows in (1000, 10_000):
        cases.append(("numeric, float64 ndarray columns", rows,
                      partial(numeric_batch, rng, rows, FEATURES, False), numeric_md))
        cases.append(("numeric, Python list columns", rows,
                      partial(numeric_batch, rng, rows, FEATURES, True), numeric_md))
    cases.append(("categorical, lists of str (info)", 1000,
                  partial(categorical_batch, rng, 1000, FEATURES), categorical_md))
    for label, rows, make, md in cases:
        batches = [make() for _ in range(3)]  # a few distinct batches, cycled
        values_per_batch = rows * FEATURES
        per_repeat = max(1, 2_000_000 // values_per_batch)  # ~2M values per timed repeat
        md.observe(batches[0])  # warm-up
        walls, cpus = [], []
        for _ in range(cfg.ingest_repeats):
            def run(md: ModelDrift = md, batches: list[Batch] = batches, n: int = per_repeat) -> None:
                for k in range(n):
                    md.observe(batches[k % len(batches)])
            wall, cpu = timed(run)
            walls.append(values_per_batch * per_repeat / wall)
            cpus.append(values_per_batch * per_repeat / max(cpu, 1e-9))
        wall_rate, cpu_rate = statistics.median(walls), statistics.median(cpus)
        print(f"   {label:<34} {rows:>10,} {wall_rate / 1e6:>18.2f} {cpu_rate / 1e6:>15.2f}", flush=True)
        figures.ingest.append({"input": label, "rows": rows, "features": FEATURES,
                               "values_per_s_wall": wall_rate, "values_per_cpu_s": cpu_rate})
        if "ndarray" in label:
            figures.checks.append(Check(f"ingest, ndarray columns, {rows:,} rows/batch", cpu_rate,
                                        f"{cpu_rate / 1e6:.1f}M values/CPU-s",
                                        f">= {INGEST_TARGET / 1e6:.0f}M values/CPU-s",
                                        cpu_rate >= INGEST_TARGET))


# --- 2. compute -----------------------------------------------------------------------------------


def bench_compute(cfg: Config, figures: Figures) -> None:
    print(f"\n2. Recompute: ModelDrift.compute with 10,000 samples per feature in the window, "
          f"medians of {cfg.compute_repeats} repeats")
    rng = np.random.default_rng([SEED, 2])
    cases: list[tuple[str, int, ModelDrift, Batch]] = [
        ("numeric", FEATURES, numeric_model(rng, FEATURES), numeric_batch(rng, 1000, FEATURES, False)),
        ("categorical (10 categories)", FEATURES, categorical_model(rng, FEATURES),
         categorical_batch(rng, 1000, FEATURES)),
        ("numeric (info)", 1000, numeric_model(rng, 1000), numeric_batch(rng, 1000, 1000, False)),
    ]
    for label, features, md, batch in cases:
        for _ in range(10):  # 10 batches of 1,000 rows
            md.observe(batch)
        md.compute()  # warm-up
        walls = [timed(md.compute)[0] for _ in range(cfg.compute_repeats)]
        median = statistics.median(walls)
        print(f"   {features:>5} {label:<28} {median * 1e3:8.2f} ms   (min {min(walls) * 1e3:.2f} ms)",
              flush=True)
        figures.compute.append({"features": features, "kind": label, "seconds_median": median,
                                "seconds_min": min(walls)})
        if features == FEATURES and label == "numeric":
            figures.checks.append(Check(f"compute, {FEATURES} numeric features", median,
                                        f"{median * 1e3:.2f} ms", f"<= {COMPUTE_TARGET * 1e3:.0f} ms",
                                        median <= COMPUTE_TARGET))


# --- 3. Evidently ---------------------------------------------------------------------------------


def evidently_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("evidently", "pandas"))


class EvidentlyRunner:
    """One Evidently 0.7 ``Report([DataDriftPreset()])`` per trial, default settings."""

    def __init__(self) -> None:
        # Imported here, and untyped: Evidently is an optional extra.
        self._pd = importlib.import_module("pandas")
        self._evidently = importlib.import_module("evidently")
        self._presets = importlib.import_module("evidently.presets")
        self.version = str(self._evidently.__version__)
        self.inconsistent = 0  # trials where the per-column test and DriftedColumnsCount disagree

    def run(self, kind: Kind, reference: NDArray[Any], window: NDArray[Any]) -> tuple[bool, bool, str]:
        """(column drift detected, dataset drift detected, method) for a one-column dataset."""
        ev = self._evidently
        if kind == "numeric":
            ref_col: Any = reference
            cur_col: Any = window
            definition = ev.DataDefinition(numerical_columns=["x"], categorical_columns=[])
        else:
            ref_col, cur_col = category_labels(reference), category_labels(window)
            definition = ev.DataDefinition(numerical_columns=[], categorical_columns=["x"])
        ref = ev.Dataset.from_pandas(self._pd.DataFrame({"x": ref_col}), data_definition=definition)
        cur = ev.Dataset.from_pandas(self._pd.DataFrame({"x": cur_col}), data_definition=definition)
        report = ev.Report([self._presets.DataDriftPreset()], include_tests=True)
        doc = report.run(current_data=cur, reference_data=ref).dict()
        column_drift: bool | None = None
        for test in doc["tests"]:
            if test["name"] == "Value Drift for column x":
                column_drift = test["status"] == "FAIL"
        method, share, drift_share = "?", 0.0, 0.5
        for metric in doc["metrics"]:
            config = metric["config"]
            if config["type"].endswith(":DriftedColumnsCount"):
                share, drift_share = float(metric["value"]["share"]), float(config["drift_share"])
            elif config["type"].endswith(":ValueDrift"):
                method = str(config.get("method"))
        if column_drift is None:
            raise RuntimeError("Evidently report has no per-column drift test; API changed?")
        dataset_drift = share >= drift_share
        self.inconsistent += column_drift != (share > 0)
        return column_drift, dataset_drift, method


def modelmon_trial(kind: Kind, reference: NDArray[Any], window: NDArray[Any]) -> tuple[bool, float, float]:
    """(detected, seconds in total, seconds in observe + compute) for one fresh ModelDrift."""
    start = time.perf_counter()
    profile = Profile("m", "1", REFERENCE_SIZE, (reference_feature("x", kind, reference),))
    md = ModelDrift("m", profile, DriftSettings(), max_features=1, clock=_fixed_clock)
    column: Column = window if kind == "numeric" else category_labels(window)
    ready = time.perf_counter()
    md.observe(Batch(rows=len(window), columns={"x": column}))
    detected = md.compute().features[0].detected
    end = time.perf_counter()
    return bool(detected), end - start, end - ready


@dataclass
class ComparisonRow:
    scenario: str
    label: str
    trials: int
    modelmon_rate: float  # share of trials flagged by modelmon's default verdict
    evidently_rate: float  # ... by Evidently's per-column verdict
    evidently_dataset_rate: float  # ... by Evidently's dataset-level verdict
    agreement: float  # share of trials where both per-column verdicts are equal
    evidently_method: str
    modelmon_s: float  # median per trial: profile + ModelDrift + observe + compute
    modelmon_observe_compute_s: float  # median per trial: observe + compute alone
    evidently_s: float  # median per trial: Datasets + report run + result.dict()

    @property
    def ratio(self) -> float:
        return self.evidently_s / self.modelmon_s


def compare_scenario(runner: EvidentlyRunner, scenario: Scenario, index: int, trials: int) -> ComparisonRow:
    rng = np.random.default_rng([SEED, 3, index])
    references, windows = scenario.draw(rng, trials)
    mm, ev, ev_dataset = (np.zeros(trials, dtype=bool) for _ in range(3))
    mm_total: list[float] = []
    mm_core: list[float] = []
    ev_time: list[float] = []
    methods: set[str] = set()
    for t in range(trials):  # interleaved, so machine noise hits both alike
        mm[t], total, core = modelmon_trial(scenario.kind, references[t], windows[t])
        mm_total.append(total)
        mm_core.append(core)
        start = time.perf_counter()
        ev[t], ev_dataset[t], method = runner.run(scenario.kind, references[t], windows[t])
        ev_time.append(time.perf_counter() - start)
        methods.add(method)
    return ComparisonRow(
        scenario.key, scenario.label, trials, float(mm.mean()), float(ev.mean()),
        float(ev_dataset.mean()), float((mm == ev).mean()), ", ".join(sorted(methods)),
        statistics.median(mm_total), statistics.median(mm_core), statistics.median(ev_time),
    )


def bench_evidently(cfg: Config, figures: Figures) -> None:
    trials = cfg.evidently_trials
    print(f"\n3. modelmon vs Evidently 0.7 DataDriftPreset (defaults), {trials} trials per scenario, "
          f"reference {REFERENCE_SIZE:,}")
    if not evidently_available():
        print(f"   SKIPPED: evidently/pandas not importable here. Install with: {EVIDENTLY_INSTALL}")
        figures.evidently = {"skipped": True}
        return
    runner = EvidentlyRunner()
    print(f"   evidently {runner.version}")
    warm_ref, warm_cur = SCENARIOS[0].draw(np.random.default_rng(0), 1)
    runner.run("numeric", warm_ref[0], warm_cur[0])  # warm-up: lazy imports, caches
    modelmon_trial("numeric", warm_ref[0], warm_cur[0])
    runner.inconsistent = 0
    print(f"   {'scenario':<32} {'modelmon':>8} {'Evidently':>9} {'agree':>6}  {'Evidently method':<30}"
          f" {'mm ms':>6} {'(obs+cmp)':>9} {'Ev ms':>7} {'Ev/mm':>6}")
    rows: list[ComparisonRow] = []
    for index, scenario in enumerate(SCENARIOS):
        if scenario.key not in EVIDENTLY_SCENARIOS:
            continue
        r = compare_scenario(runner, scenario, index, trials)
        rows.append(r)
        print(f"   {r.label:<32} {r.modelmon_rate:8.1%} {r.evidently_rate:9.1%} {r.agreement:6.1%}  "
              f"{r.evidently_method:<30} {r.modelmon_s * 1e3:6.2f} {r.modelmon_observe_compute_s * 1e3:9.2f} "
              f"{r.evidently_s * 1e3:7.1f} {r.ratio:5.0f}x", flush=True)
    print("   rates: share of trials flagged (with no drift: false alarms); agree: share of trials where "
          "both verdicts are equal;\n   mm ms: modelmon per trial from the raw arrays (profile + observe + "
          "compute), (obs+cmp): observe + compute alone; Ev/mm: ratio of the medians")
    differing = [r.label for r in rows if r.evidently_dataset_rate != r.evidently_rate]
    print("   Evidently's dataset-level verdict (share of drifted columns >= 0.5; one column per report) "
          + (f"differs from its column verdict in: {', '.join(differing)}" if differing
             else "matches its column verdict in every trial"))
    if runner.inconsistent:
        print(f"   WARNING: {runner.inconsistent} trials where Evidently's column test and "
              f"DriftedColumnsCount disagree")
    for r in rows:
        if r.scenario in ISSUE_CLAIMS:
            what, claimed = ISSUE_CLAIMS[r.scenario]
            lo, hi = wilson(round(r.evidently_rate * r.trials), r.trials)
            print(f"   issue: Evidently {what} ~{claimed:.0%} for '{r.label}'; measured "
                  f"{r.evidently_rate:.1%} (95% CI {lo:.1%}-{hi:.1%}, {r.trials} trials)")
    figures.evidently = {"skipped": False, "version": runner.version,
                         "inconsistent_verdicts": runner.inconsistent,
                         "scenarios": [{**asdict(r), "ratio": r.ratio} for r in rows]}


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and trials (under a minute)")
    parser.add_argument("--evidently-trials", type=int, help="trials per scenario in part 3")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--parts", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3],
                        help="run only these parts (e.g. --parts 3: the Evidently comparison)")
    args = parser.parse_args(argv)
    cfg = Config.for_run(args.quick, args.evidently_trials)
    start = time.perf_counter()
    print(f"modelmon drift benchmark ({'quick' if args.quick else 'full'}), numpy {np.__version__}, "
          f"python {sys.version.split()[0]}, seed {SEED}")
    figures = Figures()
    for part, bench in ((1, bench_ingest), (2, bench_compute), (3, bench_evidently)):
        if part in args.parts:
            bench(cfg, figures)
    print("\nTargets:")
    for c in figures.checks:
        print(f"   {'PASS' if c.met else 'MISS'}  {c.name:<42} {c.shown:>22}   target {c.target}")
    elapsed = time.perf_counter() - start
    print(f"\ntotal {elapsed:.0f} s")
    if args.json:
        doc = {"quick": args.quick, "seed": SEED, "seconds": elapsed, "config": asdict(cfg),
               "ingest": figures.ingest, "compute": figures.compute, "evidently": figures.evidently,
               "checks": [asdict(c) for c in figures.checks]}
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
