"""The supervised (targeted) attack: make x + delta encode like a target x_t (docs/method.md section 2)."""

from __future__ import annotations

import torch

from vaelens._protocol import Norm, Objective
from vaelens.attacks._apgd import auto_pgd
from vaelens.attacks._base import Attack
from vaelens.attacks._objectives import Reference, check_objective
from vaelens.attacks._pgd import check_steps


class TargetedAttack(Attack):
    """Minimise D(q(z|x + delta), q(z|x_t)) over the budget with Auto-PGD's step-size schedule.

    Called as ``attack(x, x_target)``. Starts at delta = 0 and keeps, per sample, the iterate
    closest to the target's encoding. The step starts at 2 eps and halves when progress stalls
    (``APGD``), so it settles where a fixed step oscillates; there is no step size to tune.

    Arguments:
        model: a VAE.
        eps: budget (> 0).
        norm: "l2" or "linf".
        objective: divergence to the target's posterior, default "skl" (Kuzina et al.).
        steps: gradient steps, default 100.
    """

    targeted = True

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float,
        norm: Norm = "l2",
        objective: Objective = "skl",
        steps: int = 100,
    ) -> None:
        super().__init__(model, eps, norm, seed=None)
        check_steps(steps, None)
        self.objective, self.steps = check_objective(objective), steps

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        assert x_target is not None
        ref = Reference.of(self.model, x_target)
        best, _, _ = auto_pgd(
            self.model, x, ref, self.objective, torch.zeros_like(x), self.eps, self.norm, self.steps, maximize=False
        )
        return best
