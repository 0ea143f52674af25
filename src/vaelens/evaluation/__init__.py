"""Evaluating VAEs: audits of local robustness and the eigen-direction probe (PAPER.md sections 3-5)."""

from vaelens.evaluation._audit import AuditConfig, AuditResult, audit, summarize, write_audit
from vaelens.evaluation._probe import ProbeResult, eigen_probe

__all__ = ["AuditConfig", "AuditResult", "ProbeResult", "audit", "eigen_probe", "summarize", "write_audit"]
