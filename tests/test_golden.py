"""Behaviour kept through a refactoring: a fixed tiny sweep, its report and a comparison give the
same text outputs as the code before issue 20 (golden files in tests/golden/tiny-sweep, written by
commit c979a4d through tests/golden/make_golden.py).

A difference that a change means to make (a fixed defect) is made by rewriting the golden file in
the same commit, saying why. The report's header line (the output path and the settings) is left
out: it names where the sweep was written.
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
        lines = (out / produced).read_text(encoding="utf-8").splitlines()
        if golden == "report.txt":
            lines = [line for line in lines if "sweep settings" not in line]
        assert lines == (GOLDEN / "tiny-sweep" / golden).read_text(encoding="utf-8").splitlines(), golden
