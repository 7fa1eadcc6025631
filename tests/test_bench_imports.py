"""The benchmarks are not run for their figures by the test suite (make bench does that), but
they must keep up with the package: each one parses its flags, and those that run in-process
against the package's internals run once, quickly, to the end (their exit status reports
wrong results, not missed targets)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "bench"
# In-process benchmarks that reach into the package (Sidecar, the drift engine, the join buffer).
RUN_QUICK = ("bench_drift.py", "bench_join_buffer.py", "bench_scrape.py")


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=240, cwd=BENCH)


@pytest.mark.parametrize("script", [*sorted(p.name for p in BENCH.glob("bench_*.py")), "drift_rates.py"])
def test_a_benchmark_imports_and_parses_its_flags(script: str) -> None:
    result = run(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


@pytest.mark.integration
@pytest.mark.parametrize("script", RUN_QUICK)
def test_an_in_process_benchmark_runs_to_the_end(script: str) -> None:
    result = run(script, "--quick")
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr
