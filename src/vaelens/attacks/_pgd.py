"""Projected gradient ascent on an encoding divergence (Madry et al. 2018, for VAEs: docs/method.md section 2)."""

from __future__ import annotations

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Norm, Objective
from vaelens.attacks._base import (  # the step helpers live in _base, shared with APGD and the targeted attack
    Attack,
    ascent_step,
    best_of,
    check_steps,
    first_direction,
    objective_gradient,
    project,
    random_in_ball,
)
from vaelens.attacks._objectives import Reference, check_objective, divergence


def projected_gradient(
    model: torch.nn.Module,
    x: torch.Tensor,
    ref: Reference,
    objective: Objective,
    delta: torch.Tensor,
    eps: float,
    norm: Norm,
    steps: int,
    step_size: float,
    maximize: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected gradient ascent (or descent) on D(x + delta, ref); every iterate is scored.

    Returns the best x + delta per sample (B, *s) and its score (B,).
    """
    sign = 1.0 if maximize else -1.0
    view = (-1, *[1] * (x.dim() - 1))
    best, best_score = x.clone(), torch.full((len(x),), -float("inf"), dtype=x.dtype, device=x.device)
    delta = (x + delta).clamp(0, 1) - x
    for step in range(steps + 1):
        if step == steps:  # the last iterate is scored, not stepped from
            with torch.no_grad():
                score = sign * divergence(model, x + delta, ref, objective)  # (B,)
        else:
            score, grad = objective_gradient(model, x + delta, ref, objective, maximize)  # (B,), (B, *s)
            if step == 0:  # a zero gradient (KL at delta = 0) gets a direction
                grad = first_direction(model, x + delta, grad)
        with torch.no_grad():
            better = score > best_score
            best = torch.where(better.view(view), x + delta, best)
            best_score = torch.where(better, score, best_score)
            if step == steps:
                break
            moved = delta + step_size * ascent_step(grad, norm)
            delta = (x + project(moved, eps, norm)).clamp(0, 1) - x
    return best, sign * best_score


class PGD(Attack):
    """Maximise D(x, x + delta) over ||delta|| <= eps and x + delta in [0, 1] by projected gradient ascent.

    Arguments:
        model: a VAE.
        eps: budget (> 0).
        norm: "l2" or "linf".
        objective: "kl", "kl_reverse", "skl", "latent", "recon" or "stochastic" (docs/method.md section 2).
        steps: gradient steps per restart, default 50.
        step_size: default 2.5 * eps / steps (enough to cross the ball and come back).
        random_start: start uniformly inside the ball. Default True; from delta = 0 the gradient of
            the KL objectives is zero, so a random start is what gets them moving.
        restarts: independent restarts; each sample keeps its best result. Default 1.
        seed: seeds the random starts (None: fresh randomness).

    Called as ``attack(x)`` with x (B, *input_shape) in [0, 1]; returns x_adv of the same shape,
    with ||x_adv - x|| <= eps per sample and x_adv in [0, 1].

    Examples::

        >>> attack = vaelens.PGD(model, eps=1.0, norm="l2", objective="kl", steps=50)
        >>> x_adv = attack(x)                               # x: (B, 1, 28, 28) -> x_adv: (B, 1, 28, 28)
        >>> damage = vaelens.attack_damage(model, x, x_adv)
        >>> damage.kl.shape                                 # KL(q(z|x_adv) || q(z|x)) per input
        torch.Size([B])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float,
        norm: Norm = "l2",
        objective: Objective = "kl",
        steps: int = 50,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model, eps, norm, seed)
        check_steps(steps, step_size)
        if not isinstance(restarts, int) or restarts < 1:
            raise VaelensError(f"restarts must be a positive integer; got {restarts!r}")
        self.objective = check_objective(objective)
        self.steps, self.restarts, self.random_start = steps, restarts, random_start
        self.step_size = step_size if step_size is not None else 2.5 * self.eps / steps

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        ref = Reference.of(self.model, x)

        def start(restart: int) -> torch.Tensor:
            if not self.random_start:
                return torch.zeros_like(x)
            return random_in_ball(x, self.eps, self.norm, self.seed, f"pgd/{restart}")

        return best_of(
            x,
            (
                projected_gradient(
                    self.model, x, ref, self.objective, start(r), self.eps, self.norm, self.steps, self.step_size, True
                )  # fmt: skip
                for r in range(self.restarts)
            ),
        ).x
