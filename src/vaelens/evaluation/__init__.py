"""Evaluating a VAE on a batch of inputs: audits, attack sweeps, the eigen-direction probe and
reconstruction quality (docs/method.md sections 2-5). Pure functions over (model, x): nothing here
knows of run directories; the ``write_*`` functions write their results into a directory given.
"""

from vaelens.evaluation._attacks import (
    METHODS,
    AttackSpec,
    AttackSweepResult,
    Method,
    attack_output,
    attack_sweep,
    auddc,
    choose_targets,
    write_attack_report,
)
from vaelens.evaluation._audit import SUMMARY_STATS, AuditConfig, AuditResult, audit, audit_output, write_audit
from vaelens.evaluation._probe import ProbeResult, eigen_probe
from vaelens.evaluation._quality import Quality, reconstruction_quality

__all__ = [
    "METHODS",
    "Method",
    "SUMMARY_STATS",
    "AttackSpec",
    "AttackSweepResult",
    "AuditConfig",
    "AuditResult",
    "ProbeResult",
    "Quality",
    "attack_output",
    "attack_sweep",
    "audit_output",
    "audit",
    "auddc",
    "choose_targets",
    "eigen_probe",
    "reconstruction_quality",
    "write_attack_report",
    "write_audit",
]
