"""Evaluating VAEs: audits of local robustness and the eigen-direction probe (PAPER.md sections 3-5)."""

from vaelens.attacks._probe import ProbeResult, eigen_probe
from vaelens.evaluation._attacks import (
    METHODS,
    AttackSpec,
    SweepResult,
    attack_sweep,
    auddc,
    write_attack_report,
)
from vaelens.evaluation._audit import AuditConfig, AuditResult, audit, summarize, write_audit
from vaelens.evaluation._compare import (
    Comparison,
    DatasetMismatchWarning,
    RunRow,
    compare_runs,
    reconstruction_quality,
    write_comparison,
)

__all__ = [
    "Comparison",
    "DatasetMismatchWarning",
    "RunRow",
    "compare_runs",
    "reconstruction_quality",
    "write_comparison",
    "METHODS",
    "AttackSpec",
    "SweepResult",
    "attack_sweep",
    "auddc",
    "write_attack_report",
    "AuditConfig",
    "AuditResult",
    "ProbeResult",
    "audit",
    "eigen_probe",
    "summarize",
    "write_audit",
]
