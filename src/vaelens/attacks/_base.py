"""The small base class every attack subclasses: checks, eval mode, frozen parameters, budget.

A subclass writes only ``forward(x, x_target)``. ``__call__`` checks the inputs, puts the model in
eval mode with its parameters frozen (no gradient ever reaches them), runs ``forward``, projects the
perturbation onto the budget and clamps the result to [0, 1], then restores the model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Kind, Norm, Objective, frozen, is_deterministic, prepare_inputs
from vaelens.attacks._objectives import Reference, divergence
from vaelens.geometry import pullback_metric

NORMS: tuple[Norm, ...] = ("l2", "linf")
Transform = Callable[[torch.Tensor], torch.Tensor]
"""A random transform of a batch, (B, *s) -> (B, *s): a fresh draw at every call."""


def check_budget(eps: float, norm: Norm) -> None:
    if norm not in NORMS:
        raise VaelensError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    if not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
        raise VaelensError(f"eps must be a finite number > 0; got {eps!r}")


def norms(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample L2 or L-inf norms of (B, ...) -> (B,)."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def project(delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project each perturbation onto the eps-ball of the norm."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / norms(delta, "l2").clamp_min(torch.finfo(delta.dtype).tiny)).clamp(max=1.0)
    return delta * scale.view(-1, *[1] * (delta.dim() - 1))


def sample_generators(x: torch.Tensor, seed: int | None, salt: str) -> list[torch.Generator]:
    """One generator per sample, seeded by (seed, salt, the sample's bytes).

    Seeding by the sample itself makes random attacks give the same result for an input whether
    it is attacked alone or in any batch. ``seed=None`` draws a fresh random seed.
    """
    seed = torch.seed() if seed is None else seed
    gens = []
    for xi in x:
        digest = hashlib.blake2b(xi.detach().cpu().numpy().tobytes(), digest_size=8)
        digest.update(f"{seed}/{salt}".encode())
        gens.append(torch.Generator(device=x.device).manual_seed(int.from_bytes(digest.digest(), "little") >> 1))
    return gens


def _draw(x: torch.Tensor, gens: list[torch.Generator], shape: tuple[int, ...], uniform: bool) -> torch.Tensor:
    draw = torch.rand if uniform else torch.randn
    return torch.stack([draw(shape, generator=g, device=x.device, dtype=x.dtype) for g in gens])


def random_direction(x: torch.Tensor, seed: int | None, salt: str) -> torch.Tensor:
    """A unit-L2 direction per sample, uniform on the sphere."""
    return unit(_draw(x, sample_generators(x, seed, salt), tuple(x.shape[1:]), uniform=False))


def random_in_ball(x: torch.Tensor, eps: float, norm: Norm, seed: int | None, salt: str) -> torch.Tensor:
    """A perturbation uniform in the eps-ball: the L-inf box, or the L2 ball."""
    gens = sample_generators(x, seed, salt)
    if norm == "linf":
        return (2 * _draw(x, gens, tuple(x.shape[1:]), uniform=True) - 1) * eps
    direction = unit(_draw(x, gens, tuple(x.shape[1:]), uniform=False))
    radius = eps * _draw(x, gens, (), uniform=True).pow(1.0 / x[0].numel())  # (B,)
    return direction * radius.view(-1, *[1] * (x.dim() - 1))


class Best(NamedTuple):
    """Per sample, the best candidate (B, *s) and the index (B,) of the try that gave it."""

    x: torch.Tensor
    winner: torch.Tensor


def best_of(x: torch.Tensor, tries: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Best:
    """Per sample, the candidate (B, *s) with the highest score (B,) over several tries (restarts,
    directions, ensemble members). Ties go to the earlier try; x itself when no score is finite."""
    view = (-1, *[1] * (x.dim() - 1))
    best, best_score = x, torch.full((len(x),), -float("inf"), dtype=x.dtype, device=x.device)
    index = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for i, (found, score) in enumerate(tries):
        better = score > best_score
        best = torch.where(better.view(view), found, best)
        best_score = torch.where(better, score, best_score)
        index = torch.where(better, torch.full_like(index, i), index)
    return Best(best, index)


def unit(v: torch.Tensor) -> torch.Tensor:
    """Each sample scaled to unit L2 norm."""
    return v / norms(v, "l2").clamp_min(torch.finfo(v.dtype).tiny).view(-1, *[1] * (v.dim() - 1))


class Attack:
    """Base class: ``attack(x) -> x_adv`` (or ``attack(x, x_target)`` for targeted attacks).

    Arguments:
        model: any VAE (``encode``/``decode``).
        eps: the budget, > 0.
        norm: "l2" or "linf".
        seed: seeds every random draw (None: fresh randomness each call).
    """

    targeted = False

    def __init__(self, model: torch.nn.Module, eps: float, norm: Norm = "l2", seed: int | None = 0) -> None:
        check_budget(eps, norm)
        self.model, self.eps, self.norm, self.seed = model, float(eps), norm, seed

    def __call__(self, x: torch.Tensor, x_target: torch.Tensor | None = None) -> torch.Tensor:
        x = prepare_inputs(self.model, x)
        if self.targeted:
            if x_target is None:
                raise VaelensError(f"{type(self).__name__} is targeted: call it as attack(x, x_target)")
            x_target = prepare_inputs(self.model, x_target, "x_target")
            if x_target.shape != x.shape:
                raise VaelensError(f"x_target must have the shape of x {tuple(x.shape)}; got {tuple(x_target.shape)}")
        elif x_target is not None:
            raise VaelensError(f"{type(self).__name__} is untargeted: call it as attack(x)")
        with frozen(self.model):
            x_adv = self.forward(x, x_target)
        delta = project(x_adv.detach() - x, self.eps, self.norm)
        return (x + delta).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps}, norm={self.norm!r})"


# -- step helpers shared by PGD, APGD and the targeted attack ---------------------------------------
def objective_gradient(
    model: torch.nn.Module,
    xa: torch.Tensor,
    ref: Reference | None,
    objective: Objective,
    maximize: bool = True,
    transform: Transform | None = None,
    samples: int = 1,
    value: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The objective D(xa, ref), signed (+ to maximise, - to minimise), per sample (B,), and its
    gradient with respect to the input xa (B, *s). The one place an attack differentiates its objective.

    With ``transform`` (expectation over transformation, docs/method.md section 9) the objective is
    the mean of D(transform(xa), ref) over ``samples`` fresh draws. ``value`` (xa (B, *s) -> (B,),
    differentiable) replaces D(., ref), as protection's sum over several encoders does; ``ref`` and
    ``objective`` are then unused.
    """

    def d(xa: torch.Tensor) -> torch.Tensor:
        if value is not None:
            return value(xa)  # (B,)
        assert ref is not None, "an attack needs a reference or a value function"
        return divergence(model, xa, ref, objective)  # (B,)

    xa = xa.detach().requires_grad_(True)
    sign = 1.0 if maximize else -1.0
    with torch.enable_grad():
        if transform is None:
            f = sign * d(xa)  # (B,)
        else:
            f = sign * torch.stack([d(transform(xa)) for _ in range(samples)]).mean(0)  # (B,)
        grad = torch.autograd.grad(f.sum(), xa)[0]  # (B, *s)
    return f.detach(), grad


def check_steps(steps: int, step_size: float | None) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise VaelensError(f"steps must be a positive integer; got {steps!r}")
    if step_size is not None and not step_size > 0:
        raise VaelensError(f"step_size must be > 0; got {step_size!r}")


def ascent_step(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The steepest-ascent direction of unit norm: sign(g) for L-inf, g / ||g||_2 for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / norms(grad, "l2").clamp_min(torch.finfo(grad.dtype).tiny).view(-1, *[1] * (grad.dim() - 1))


def first_direction(model: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, seed: int | None = 0) -> torch.Tensor:
    """The gradient where it is nonzero. Where it is exactly zero (the KL objectives at delta = 0,
    their minimum), the top eigenvector of the fisher metric there, which is the optimal
    small-budget direction (docs/method.md section 3); where that is zero too, a random direction.
    An attack therefore never stays put silently."""
    zero = norms(grad, "l2") == 0
    if not bool(zero.any()):
        return grad
    grad = grad.clone()
    xs = x[zero].detach()
    kind: Kind = "mean" if is_deterministic(model) else "fisher"  # a deterministic encoder has no fisher metric
    spec = pullback_metric(model, xs, kind).eigen(1)
    v = spec.require_vectors()[:, 0].to(grad)  # (Z, *s)
    flat = spec.values[:, 0] == 0
    if bool(flat.any()):
        v[flat] = random_direction(xs[flat], seed, "first-direction")
    grad[zero] = v
    return grad
