"""The paper's experiments as resumable sweeps, and reports (PAPER.md section 7)."""

from vaelens.experiments._report import write_report
from vaelens.experiments._sweep import SweepConfig, SweepResult, Unit, parse_betas, run_sweep, run_unit

__all__ = ["SweepConfig", "SweepResult", "Unit", "parse_betas", "run_sweep", "run_unit", "write_report"]
