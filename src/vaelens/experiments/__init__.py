"""Run directories and what is built on them (docs/method.md section 7): loading trained runs,
comparing them, resumable sweeps of the paper's experiments, and their reports.
"""

from vaelens.experiments._analysis import CurvePosition, TrendPoint, against_curve, aggregate
from vaelens.experiments._bench import BenchRun, Entry, run_bench
from vaelens.experiments._bench_protocol import PROTOCOLS, BenchProtocol, get_protocol
from vaelens.experiments._compare import (
    COMPARE_COLUMNS,
    Comparison,
    DatasetMismatchWarning,
    RunRow,
    compare_output,
    compare_runs,
    write_comparison,
)
from vaelens.experiments._demo import DemoResult, run_demo
from vaelens.experiments._executors import EXECUTORS, SweepResult, run_sweep
from vaelens.experiments._leaderboard import Leaderboard, Standing, build_leaderboard
from vaelens.experiments._models import (
    LOADERS,
    check_not_model,
    is_run_spec,
    load_model,
    load_model_inputs,
    media_for,
)
from vaelens.experiments._presets import PRESETS
from vaelens.experiments._protection import (
    LoadedProtector,
    ProtectorRun,
    load_encoders,
    load_protector,
    spec_label,
    spec_labels,
    train_protector,
)
from vaelens.experiments._ray import RayOptions
from vaelens.experiments._report import trend_points, write_report
from vaelens.experiments._runs import RunInputs, load, load_run_inputs, output_dir, parse_run_ref, run_info
from vaelens.experiments._schema import ResultRow, damage_column
from vaelens.experiments._sweep import SweepConfig, SweepOutcome, Unit, parse_betas, run_unit
from vaelens.experiments._zoo import ZooResult, train_zoo

__all__ = [
    "PROTOCOLS",
    "BenchProtocol",
    "BenchRun",
    "Entry",
    "Leaderboard",
    "Standing",
    "ZooResult",
    "build_leaderboard",
    "get_protocol",
    "run_bench",
    "train_zoo",
    "COMPARE_COLUMNS",
    "EXECUTORS",
    "LOADERS",
    "LoadedProtector",
    "ProtectorRun",
    "load_encoders",
    "load_protector",
    "train_protector",
    "spec_label",
    "spec_labels",
    "RayOptions",
    "SweepOutcome",
    "PRESETS",
    "Comparison",
    "CurvePosition",
    "DatasetMismatchWarning",
    "DemoResult",
    "ResultRow",
    "RunInputs",
    "RunRow",
    "SweepConfig",
    "SweepResult",
    "TrendPoint",
    "Unit",
    "against_curve",
    "aggregate",
    "compare_output",
    "compare_runs",
    "damage_column",
    "is_run_spec",
    "load",
    "load_model",
    "check_not_model",
    "media_for",
    "load_model_inputs",
    "load_run_inputs",
    "output_dir",
    "parse_run_ref",
    "parse_betas",
    "run_demo",
    "run_info",
    "run_sweep",
    "run_unit",
    "trend_points",
    "write_comparison",
    "write_report",
]
