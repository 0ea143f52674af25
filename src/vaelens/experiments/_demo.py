"""The demo: the offline main job, a small sweep and its report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

from vaelens.experiments._executors import run_sweep
from vaelens.experiments._report import write_report
from vaelens.experiments._sweep import SweepConfig


class DemoResult(NamedTuple):
    report: Path  # report.html
    seconds: float  # wall-clock time of the whole demo


def run_demo(out: str | Path, epochs: int = 10, n: int = 500, progress: bool = True) -> DemoResult:
    """Run the ``demo`` preset into ``out`` (resumable) and write its report."""
    tic = time.perf_counter()
    config = SweepConfig.resolve("demo", overrides={"epochs": epochs, "n": n})
    run_sweep(config, out, progress=progress)
    return DemoResult(write_report(out), time.perf_counter() - tic)
