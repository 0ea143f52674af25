"""Behaviour kept through a refactoring: a fixed tiny sweep, its report and a comparison give the
same text outputs as the code before issue 20 (golden files in tests/golden/tiny-sweep, written by
commit c979a4d through tests/golden/make_golden.py), but for the differences issue 20 meant to make:

- the report's header shows the settings as a table, not a Python dict (report.txt);
- the sweep's settings include ``noise_sigma`` (report.txt).

(Compare's verdict and the mixup sentences now read a run against the beta curve in log-log, as
the frontier always did; this sweep's defended runs lie outside the curve's range, where the
curve's end value stands in either way, so its files do not change: test_analysis checks the
interpolation itself.)

A difference a later change means to make is made by rewriting the golden file in the same
commit, saying why. The output directory is written as OUT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
FILES = {
    "results.csv": "results.csv",
    "trend.csv": "report/trend.csv",
    "comparison.csv": "compare/comparison.csv",
    "verdict.txt": "compare/verdict.txt",
    "report.txt": "report.txt",
}


@pytest.mark.slow
def test_tiny_sweep_report_and_compare_equal_the_golden_files(tmp_path):
    out = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, str(GOLDEN / "make_golden.py"), str(out)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for golden, produced in FILES.items():
        lines = (out / produced).read_text(encoding="utf-8").replace(str(out), "OUT").splitlines()
        assert lines == (GOLDEN / "tiny-sweep" / golden).read_text(encoding="utf-8").splitlines(), golden
