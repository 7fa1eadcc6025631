"""The benchmarks are not run by the test suite (make bench runs them), but they must keep up
with the package: each one imports, and its command line parses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "bench"


@pytest.mark.parametrize("script", [*sorted(p.name for p in BENCH.glob("bench_*.py")), "drift_rates.py"])
def test_a_benchmark_imports_and_parses_its_flags(script: str) -> None:
    result = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True,
                            text=True, timeout=120, cwd=BENCH)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()
