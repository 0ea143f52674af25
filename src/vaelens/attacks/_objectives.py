"""Attack objectives D(x, x + delta) of docs/method.md section 2, per sample, against a fixed reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from vaelens._divergences import gaussian_kl, symmetric_kl
from vaelens._errors import VaelensError
from vaelens._protocol import Kind, Objective, check_finite, decode, encode, require_variance

OBJECTIVES: tuple[Objective, ...] = ("kl", "kl_reverse", "skl", "latent", "recon", "stochastic")
# The objective each metric kind is the second-order model of (docs/method.md section 3).
KIND_OBJECTIVE: dict[Kind, Objective] = {
    "mean": "latent",
    "stochastic": "stochastic",
    "fisher": "kl",
    "output": "recon",
    "output-stochastic": "recon",
}


def check_objective(objective: str) -> Objective:
    if objective not in OBJECTIVES:
        raise VaelensError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return cast(Objective, objective)


@dataclass(frozen=True)
class Reference:
    """The encoding an attack moves away from (or towards): mu, logvar (B, k), recon g(mu) (B, *s)."""

    mu: torch.Tensor
    logvar: torch.Tensor
    recon: torch.Tensor

    @classmethod
    @torch.no_grad()
    def of(cls, model: torch.nn.Module, x: torch.Tensor) -> Reference:
        mu, logvar = encode(model, x)
        recon = decode(model, mu)
        for t, what in ((mu, "mu"), (logvar, "logvar"), (recon, "the reconstructions")):
            check_finite(t, f"the model's {what} at these inputs")
        return cls(mu, logvar, recon)


def divergence(model: torch.nn.Module, x_adv: torch.Tensor, ref: Reference, objective: Objective) -> torch.Tensor:
    """D between q(z|x_adv) and the reference, per sample (B,). Differentiable in x_adv.

    kl: KL(q(z|x_adv) || ref); kl_reverse: KL(ref || q(z|x_adv)); skl: their mean;
    latent: ||mu(x_adv) - mu||^2; recon: ||g(mu(x_adv)) - g(mu)||^2;
    stochastic: ||mu(x_adv) - mu||^2 + ||sigma(x_adv) - sigma||^2, the expected squared shift of a
    sampled code z = mu + sigma * eps under shared noise.
    """
    if objective not in ("latent", "recon"):
        require_variance(model, f"the {objective} objective")
    mu, logvar = encode(model, x_adv)
    if objective == "kl":
        return gaussian_kl(mu, logvar, ref.mu, ref.logvar)
    if objective == "kl_reverse":
        return gaussian_kl(ref.mu, ref.logvar, mu, logvar)
    if objective == "skl":
        return symmetric_kl(mu, logvar, ref.mu, ref.logvar)
    if objective == "latent":
        return (mu - ref.mu).square().sum(-1)
    if objective == "stochastic":
        sigma_shift = (0.5 * logvar).exp() - (0.5 * ref.logvar).exp()
        return (mu - ref.mu).square().sum(-1) + sigma_shift.square().sum(-1)
    return (decode(model, mu) - ref.recon).square().flatten(1).sum(-1)
