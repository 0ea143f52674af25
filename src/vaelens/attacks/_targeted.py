"""The supervised (targeted) attack: make x + delta encode like a target x_t (docs/method.md section 2)."""

from __future__ import annotations

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Norm, Objective
from vaelens.attacks._apgd import auto_pgd
from vaelens.attacks._base import Attack, Transform, check_steps, random_in_ball
from vaelens.attacks._objectives import Reference, check_objective


class TargetedAttack(Attack):
    """Minimise D(q(z|x + delta), q(z|x_t)) over the budget with Auto-PGD's step-size schedule.

    Called as ``attack(x, x_target)``. Starts at delta = 0 (or a random point of the ball) and
    keeps, per sample, the iterate closest to the target's encoding. The step starts at 2 eps and
    halves when progress stalls (``APGD``), so it settles where a fixed step oscillates; there is
    no step size to tune.

    Arguments:
        model: a VAE.
        eps: budget (> 0).
        norm: "l2" or "linf".
        objective: divergence to the target's posterior, default "skl" (Kuzina et al.).
        steps: gradient steps, default 100.
        random_start: start from a uniform random point of the ball instead of delta = 0
            (default False).
        seed: seeds the random start (None: fresh randomness). Default 0.
        transform: optional random transform (B, *s) -> (B, *s), differentiable or
            straight-through; the objective becomes its expectation over ``samples`` draws per
            step (EOT, docs/method.md section 9). Default None.
        samples: draws of ``transform`` per step, default 1.
        mask: optional tensor broadcastable to x with values in [0, 1] that weights each
            pixel's budget (the perturbation is mask * u, u in the eps-ball); 0 leaves a pixel
            unchanged. Default None (every pixel may move by the full budget).

    Examples::

        >>> attack = vaelens.TargetedAttack(model, eps=2.0, objective="skl")
        >>> x_adv = attack(x, x_target)                     # (B, 1, 28, 28) each -> (B, 1, 28, 28)
    """

    targeted = True

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float,
        norm: Norm = "l2",
        objective: Objective = "skl",
        steps: int = 100,
        random_start: bool = False,
        seed: int | None = 0,
        transform: Transform | None = None,
        samples: int = 1,
        mask: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model, eps, norm, seed)
        check_steps(steps, None)
        if not isinstance(samples, int) or samples < 1:
            raise VaelensError(f"samples must be a positive integer; got {samples!r}")
        if mask is not None and (not mask.is_floating_point() or mask.min() < 0 or mask.max() > 1):
            raise VaelensError("mask must be a float tensor with values in [0, 1] (1: the pixel may change)")
        self.objective, self.steps = check_objective(objective), steps
        self.random_start, self.transform, self.samples, self.mask = random_start, transform, samples, mask

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        assert x_target is not None
        ref = Reference.of(self.model, x_target)
        start = random_in_ball(x, self.eps, self.norm, self.seed, "targeted") if self.random_start else None
        mask = None if self.mask is None else self.mask.to(x)
        best, _, _ = auto_pgd(
            self.model,
            x,
            ref,
            self.objective,
            torch.zeros_like(x) if start is None else start,
            self.eps,
            self.norm,
            self.steps,
            maximize=False,
            seed=self.seed,
            transform=self.transform,
            samples=self.samples,
            mask=mask,
        )
        return best
