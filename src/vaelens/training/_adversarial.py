"""Adversarial training as a defence (docs/method.md section 6.4).

Each batch x gets PGD-k adversarial inputs x_adv that maximise KL(q(z|x_adv) || q(z|x)) within
the L2 ball of radius eps (the attack of docs/method.md section 2, run by ``vaelens.attacks.PGD``),
and the loss adds the negative beta-ELBO of x_adv, reconstructing x_adv itself:

    loss = L_beta(x) + w * L_beta(x_adv)

The attack runs with the parameters frozen and returns a detached x_adv, so gradients reach the
parameters only through the added loss term, never through the attack's own steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from vaelens._configs import check_fields, from_dict
from vaelens._divergences import gaussian_kl
from vaelens._errors import VaelensError
from vaelens._protocol import encode
from vaelens.attacks import PGD
from vaelens.training._defence import Defence, DefenceBatch, DefenceLoss
from vaelens.training._loss import ElboPass, elbo_pass


@dataclass(frozen=True)
class AdversarialConfig(Defence):
    """Adversarial training: the defence's settings and its loss.

    Arguments:
        eps: L2 budget of the inner attack, > 0 (default 1.0).
        steps: PGD steps of the inner attack, >= 1 (default 5); the step size is PGD's default,
            2.5 * eps / steps.
        weight: weight of the adversarial ELBO term, >= 0 (default 1).
    """

    eps: float = 1.0
    steps: int = 5
    weight: float = 1.0

    name = "adversarial"
    run_suffix = "_adv"
    terms = ("adv_recon", "adv_kl", "adv_damage")
    stream = "adversarial"
    stream_on_device = True

    def __post_init__(self) -> None:
        check_fields(self)
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise VaelensError(f"adversarial eps (--adv-eps) must be > 0; got {self.eps}")
        if self.steps < 1:
            raise VaelensError(f"adversarial steps (--adv-steps) must be >= 1; got {self.steps}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise VaelensError(f"adversarial weight (--adv-weight) must be >= 0; got {self.weight}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdversarialConfig:
        return from_dict(cls, d, "adversarial config")

    def loss(self, batch: DefenceBatch) -> DefenceLoss:
        """The weighted adversarial ELBO; x_adv's reparameterisation noise comes from the batch's
        generator (on the model's device), the attack's random start from the step's seed."""
        x = batch.x
        adv_noise = torch.randn(batch.noise.shape, generator=batch.generator, device=x.device, dtype=x.dtype)
        adv = adversarial_terms(batch.model, x, self, batch.beta, adv_noise, batch.likelihood, batch.seed)
        return DefenceLoss((self.weight * adv.loss,), dict(zip(self.terms, adv[1:], strict=True)))


class AdversarialTerms(NamedTuple):
    """Batch means (scalars): the negative beta-ELBO of x_adv with its recon and KL parts, and the
    KL(q(z|x_adv) || q(z|x)) the inner attack reached (logged, not optimised)."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor
    damage: torch.Tensor


def adversarial_inputs(model: torch.nn.Module, x: torch.Tensor, config: AdversarialConfig, seed: int) -> torch.Tensor:
    """PGD-k adversarial inputs (B, *input_shape), detached: the attack never enters the graph."""
    return PGD(model, config.eps, "l2", "kl", steps=config.steps, seed=seed)(x).detach()


def adversarial_terms(
    model: torch.nn.Module,
    x: torch.Tensor,
    config: AdversarialConfig,
    beta: float,
    noise: torch.Tensor,
    likelihood: str,
    seed: int,
) -> AdversarialTerms:
    """The adversarial ELBO term for a batch.

    Arguments:
        model: a VAE in training mode.
        x: (B, *input_shape) clean inputs.
        config: the inner attack and the term's weight (applied by the caller).
        beta: the KL weight of the clean ELBO (the same for the adversarial one).
        noise: (B, k) standard normal draws for x_adv's reparameterised sample.
        likelihood: "bernoulli" or "gaussian".
        seed: seeds the attack's random start.
    """
    x_adv = adversarial_inputs(model, x, config, seed)  # (B, *s), no graph
    passed: ElboPass = elbo_pass(model, x_adv, beta, noise, likelihood)
    with torch.no_grad():
        clean, adv = encode(model, x), encode(model, x_adv)
        damage = gaussian_kl(adv.mu, adv.logvar, clean.mu, clean.logvar).mean()
    terms = passed.terms
    return AdversarialTerms(terms.loss, terms.recon, terms.kl, damage)
