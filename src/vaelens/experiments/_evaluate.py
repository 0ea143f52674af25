"""One model's evaluation by the protocol that sweeps and ``compare`` share (docs/method.md sections 4 and 6).

The reconstruction quality, the audit of the evaluated metric kinds (``EVALUATED_KINDS``) and the
attacks of ``attack_specs`` at the protocol's budgets: ``evaluate_model`` runs them in that order.
Where their results go is the caller's: ``compare`` keeps them in memory, a sweep writes each to its
run directory through a ``Keeper`` that also skips a stage already written (a rerun resumes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from vaelens._protocol import geometry_base
from vaelens.evaluation import (
    AttackSpec,
    AttackSweepResult,
    AuditConfig,
    AuditResult,
    Quality,
    attack_sweep,
    audit,
    reconstruction_quality,
)
from vaelens.experiments._schema import ATTACK_METHODS, EVALUATED_KINDS, Method, attack_specs


@dataclass(frozen=True)
class Protocol:
    """What one evaluation runs.

    Arguments:
        eps: the attack budgets.
        pgd_steps: PGD's steps (APGD gets twice as many, ``attack_specs``).
        seed: seeds the attacks and the ELBO's sample.
        methods: the attacks run, default all of the sweep's.
        probe_n: inputs probed along their eigen-directions (0: none).
        batch_size: inputs per batch of the audit and the attacks (None: each one's default).
        images: draw the audit's eigen-directions and the attacks' image grids (each one's default
            count), or none.
    """

    eps: tuple[float, ...]
    pgd_steps: int
    seed: int
    methods: tuple[Method, ...] = ATTACK_METHODS
    probe_n: int = 0
    batch_size: int | None = None
    images: bool = True

    def audit_config(self, n: int) -> AuditConfig:
        """The audit's settings for n inputs."""
        return AuditConfig(kinds=EVALUATED_KINDS, probe_n=min(self.probe_n, n), **self.sizes())

    def sizes(self) -> dict[str, Any]:
        """The batch size and image count the audit and the attacks take, where not their defaults."""
        sizes: dict[str, Any] = {} if self.batch_size is None else {"batch_size": self.batch_size}
        return sizes if self.images else {**sizes, "n_show": 0}

    def attacks(self) -> dict[Method, AttackSpec]:
        return attack_specs(self.pgd_steps, self.seed, self.methods)


class Keeper:
    """Where the stages' results go. This base keeps nothing and skips nothing: ``compare`` reads
    them from the returned ``Evaluation``. A subclass may write each one and skip those written."""

    def has_audit(self, config: AuditConfig) -> bool:
        return False

    def keep_audit(self, result: AuditResult) -> None:
        """Called with each audit that ran."""

    def has_attack(self, spec: AttackSpec) -> bool:
        return False

    def keep_attack(self, spec: AttackSpec, result: AttackSweepResult) -> None:
        """Called with each attack sweep that ran."""


class Evaluation(NamedTuple):
    """What ran: the quality, the audit (None when skipped) and the attack sweeps that were not skipped."""

    quality: Quality
    audited: AuditResult | None
    swept: dict[Method, AttackSweepResult]


def evaluate_model(
    model: torch.nn.Module,
    x: torch.Tensor,
    protocol: Protocol,
    likelihood: str,
    labels: torch.Tensor | None = None,
    keeper: Keeper | None = None,
    stage: Callable[[str], None] | None = None,
) -> Evaluation:
    """Evaluate one model on inputs x (N, *input_shape) by ``protocol``.

    A smoothed model has no Jacobian of its own: its base's spectra are audited, the smoothed model
    attacked. ``stage`` hears the name of each stage as it starts.
    """
    keeper = keeper or Keeper()
    stage = stage or (lambda text: None)
    quality = reconstruction_quality(model, x, likelihood, protocol.seed)
    config = protocol.audit_config(len(x))
    audited = None
    if not keeper.has_audit(config):
        stage("audit")
        audited = audit(geometry_base(model) or model, x, labels, config, False)
        keeper.keep_audit(audited)
    swept = {}
    for method, spec in protocol.attacks().items():
        if not keeper.has_attack(spec):
            stage(f"attack {method}")
            swept[method] = attack_sweep(model, x, list(protocol.eps), spec, progress=False, **protocol.sizes())
            keeper.keep_attack(spec, swept[method])
    return Evaluation(quality, audited, swept)
