"""Auto-PGD (Croce and Hein, ICML 2020) on an encoding divergence (docs/method.md section 2).

Projected gradient ascent with momentum and a step size that needs no tuning: it starts at 2 eps
and halves at checkpoints when the objective improved in too few of the steps since the last one,
or when neither the step nor the best value moved since then; after a halving the iterate restarts
from the best point found. Fixed-step PGD leaves pixels short of the box's corners and never
settles on targeted problems; this schedule does both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Norm, Objective
from vaelens.attacks._base import (
    Attack,
    Transform,
    ascent_step,
    best_of,
    check_steps,
    first_direction,
    objective_gradient,
    project,
    random_in_ball,
)
from vaelens.attacks._objectives import Reference, check_objective

MOMENTUM = 0.75  # alpha of the paper: weight of the new gradient step against the last move
RHO = 0.75  # the share of steps since the last checkpoint that must improve the objective


def checkpoints(steps: int) -> list[int]:
    """The iterations at which the step size may halve: p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), as fractions of ``steps``."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0 + 1e-12:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 9)) for q in p[1:]} - {0})  # round: 0.57 * 100 is not 57.0


def auto_pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    ref: Reference | None,
    objective: Objective,
    delta: torch.Tensor,
    eps: float,
    norm: Norm,
    steps: int,
    maximize: bool,
    seed: int | None = 0,
    transform: Transform | None = None,
    samples: int = 1,
    mask: torch.Tensor | None = None,
    value: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Auto-PGD from x + delta on D(., ref). Returns the best point per sample (B, *s), its
    objective (B,) and the final step sizes (B,).

    ``transform`` (expectation over transformation, docs/method.md section 9): the objective is
    the mean of D(transform(x + delta), ref) over ``samples`` calls, each a fresh random draw of
    the callable, (B, *s) -> (B, *s) and differentiable (or straight-through). The best point is
    then chosen by that noisy estimate. ``mask`` (broadcastable to x, values in [0, 1]) weights
    each pixel's budget: the perturbation is ``mask * u`` with u in the eps-ball, so a pixel with
    mask 0.5 may move half as far (L-inf) and one with mask 0 never moves. The weight is applied
    once: projecting twice gives the same point, so a fractional mask does not shrink the
    perturbation step after step. ``value`` (x_adv (B, *s) -> (B,), differentiable) replaces
    D(., ref) by another per-sample objective, such as protection's sum over several encoders;
    ``ref`` and ``objective`` are then unused.
    """
    sign = 1.0 if maximize else -1.0
    view = (-1, *[1] * (x.dim() - 1))

    def proj(xa: torch.Tensor) -> torch.Tensor:
        if mask is None:
            return (x + project(xa - x, eps, norm)).clamp(0, 1)
        weight = mask.expand_as(x)  # (B, *s)
        u = torch.where(weight > 0, (xa - x) / weight.clamp(min=1e-12), 0.0)  # (B, *s), in the unweighted ball
        return (x + weight * project(u, eps, norm)).clamp(0, 1)

    def value_and_grad(xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, grad = objective_gradient(model, xa, ref, objective, maximize, transform, samples, value)
        return f, grad if mask is None else grad * mask

    x_prev = proj(x + delta)
    f_prev, g = value_and_grad(x_prev)
    g = first_direction(model, x_prev, g, seed)  # a zero gradient (KL at delta = 0) gets a direction
    eta = torch.full((len(x),), 2.0 * eps, dtype=x.dtype, device=x.device)
    best, best_f = x_prev, f_prev
    x_cur = proj(x_prev + eta.view(view) * ascent_step(g, norm))
    f_cur, g = value_and_grad(x_cur)
    improved = (f_cur > f_prev).to(x.dtype)
    better = f_cur > best_f
    best, best_f = torch.where(better.view(view), x_cur, best), torch.where(better, f_cur, best_f)
    marks = checkpoints(steps)
    last, eta_last, best_last = 0, eta.clone(), f_prev.clone()  # w_0 = 0: the best value at the start
    for k in range(1, steps):
        z = proj(x_cur + eta.view(view) * ascent_step(g, norm))
        x_next = proj(x_cur + MOMENTUM * (z - x_cur) + (1 - MOMENTUM) * (x_cur - x_prev))
        f_next, g_next = value_and_grad(x_next)
        improved += (f_next > f_cur).to(x.dtype)
        better = f_next > best_f
        best, best_f = torch.where(better.view(view), x_next, best), torch.where(better, f_next, best_f)
        x_prev, x_cur, f_cur, g = x_cur, x_next, f_next, g_next
        if k + 1 in marks:
            stalled = improved < RHO * (k + 1 - last)
            stuck = (eta == eta_last) & (best_f <= best_last)
            halve = stalled | stuck
            eta_last, best_last = eta.clone(), best_f.clone()
            eta = torch.where(halve, eta / 2, eta)
            if halve.any():  # restart the halved samples from their best point, without momentum
                x_cur = torch.where(halve.view(view), best, x_cur)
                x_prev = torch.where(halve.view(view), best, x_prev)
                f_cur, g = value_and_grad(x_cur)
            improved, last = torch.zeros_like(improved), k + 1
    return best, sign * best_f, eta


class APGD(Attack):
    """Auto-PGD: maximise D(x, x + delta) over the eps-ball and [0, 1] with an automatic step size.

    Croce and Hein, *Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks* (ICML 2020), applied to a VAE's encoding.

    Arguments:
        model: a VAE.
        eps: budget (> 0).
        norm: "l2" or "linf" (default "l2").
        objective: "kl", "kl_reverse", "skl", "latent", "recon" or "stochastic" (default "kl").
        steps: iterations per restart, default 100.
        restarts: independent restarts, each from a random point of the ball; each sample keeps
            its best result. Default 1.
        seed: seeds the random starts (None: fresh randomness).

    Called as ``attack(x)`` with x (B, *input_shape) in [0, 1]; returns x_adv of the same shape.
    ``last_step_sizes`` holds each sample's final step size after a call.

    Examples::

        >>> attack = vaelens.attacks.APGD(model, eps=0.1, norm="linf", objective="skl", steps=100)
        >>> x_adv = attack(x)                               # x: (B, 1, 28, 28) -> (B, 1, 28, 28)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float,
        norm: Norm = "l2",
        objective: Objective = "kl",
        steps: int = 100,
        restarts: int = 1,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model, eps, norm, seed)
        check_steps(steps, None)
        if not isinstance(restarts, int) or restarts < 1:
            raise VaelensError(f"restarts must be a positive integer; got {restarts!r}")
        self.objective, self.steps, self.restarts = check_objective(objective), steps, restarts
        self.last_step_sizes: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        ref = Reference.of(self.model, x)

        def tries() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for restart in range(self.restarts):
                start = random_in_ball(x, self.eps, self.norm, self.seed, f"apgd/{restart}")
                found, score, self.last_step_sizes = auto_pgd(
                    self.model, x, ref, self.objective, start, self.eps, self.norm, self.steps, True, self.seed
                )
                yield found, score

        return best_of(x, tries()).x
