"""Mixup training as a defence (docs/method.md section 6).

For a batch x, one permutation pi and alpha ~ Beta(a, a) (one per batch, or one per sample):
x_mix = alpha x + (1 - alpha) x[pi] and z_mix = alpha z + (1 - alpha) z[pi], with z the
reparameterised sample of the ELBO and the *same* alpha and pi (the released code drew separate
permutations for x and z, so its z_mix did not belong to its x_mix). The loss adds

    w_kl KL(q(z|x_mix) || p(z)) + w_recon ||x_mix - g(z_mix)||^2 + w_latent ||z_mix - z~(x_mix)||^2

with sums over dimensions and means over the batch. The latent target z~(x_mix) is either
mu(x_mix) (``latent_target="mean"``, the default) or a reparameterised sample of q(z|x_mix)
(``"sample"``, the released code's choice), whose expected term adds sum_i sigma_i(x_mix)^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from vaelens._configs import check_fields, from_dict
from vaelens._errors import VaelensError
from vaelens._protocol import decode, encode
from vaelens.training._defence import Defence, DefenceBatch, DefenceLoss
from vaelens.training._loss import kl_to_prior

LATENT_TARGETS = ("mean", "sample")


@dataclass(frozen=True)
class MixupConfig(Defence):
    """Mixup training: the defence's settings and its loss.

    Arguments:
        alpha: a of the Beta(a, a) mixing distribution, > 0 (0.5 in the paper).
        per_sample: one alpha per sample instead of one per batch (the released code draws one
            per batch: docs/method.md section 6).
        weight_kl, weight_recon, weight_latent: weights of the three extra terms, >= 0.
        latent_target: "mean" (mu(x_mix)) or "sample" (a reparameterised sample of q(z|x_mix),
            the released code's choice): docs/method.md section 6.
    """

    alpha: float = 0.5
    per_sample: bool = False
    weight_kl: float = 1.0
    weight_recon: float = 1.0
    weight_latent: float = 1.0
    latent_target: Literal["mean", "sample"] = "mean"

    name = "mixup"
    run_suffix = "_mixup"
    terms = ("mix_kl", "mix_recon", "mix_latent")
    stream = "mixup"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.latent_target not in LATENT_TARGETS:
            raise VaelensError(
                f"mixup latent_target must be one of {', '.join(LATENT_TARGETS)}; got {self.latent_target!r}"
            )
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise VaelensError(f"mixup alpha must be > 0; got {self.alpha}")
        weights = (self.weight_kl, self.weight_recon, self.weight_latent)
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise VaelensError(f"mixup weights must be >= 0; got {weights}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixupConfig:
        return from_dict(cls, d, "mixup config")

    def loss(self, batch: DefenceBatch) -> DefenceLoss:
        """The three weighted mixup terms; alpha, the permutation and a sampled latent target's
        noise come from the batch's generator (on the CPU)."""
        device = batch.x.device
        mixing = draw_mixing(self, len(batch.x), batch.generator, device)
        target_noise = None
        if self.latent_target == "sample":
            target_noise = torch.randn(batch.z.shape, generator=batch.generator, dtype=batch.z.dtype).to(device)
        mixed = mixup_terms(batch.model, batch.x, batch.z, *mixing, target_noise)
        parts = (self.weight_kl * mixed.kl, self.weight_recon * mixed.recon, self.weight_latent * mixed.latent)
        return DefenceLoss(parts, dict(zip(self.terms, mixed, strict=True)))


class MixupTerms(NamedTuple):
    """Batch means of the three mixup terms (scalars)."""

    kl: torch.Tensor
    recon: torch.Tensor
    latent: torch.Tensor


def mix(a: torch.Tensor, alpha: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """alpha a + (1 - alpha) a[perm]; alpha is a scalar or (B,), broadcast over a's other axes."""
    alpha = alpha.view(-1, *[1] * (a.dim() - 1)) if alpha.dim() else alpha
    return alpha * a + (1 - alpha) * a[perm]


def mixup_terms(
    model: torch.nn.Module,
    x: torch.Tensor,
    z: torch.Tensor,
    alpha: torch.Tensor,
    perm: torch.Tensor,
    target_noise: torch.Tensor | None = None,
) -> MixupTerms:
    """The three mixup terms for a batch.

    Arguments:
        model: a VAE.
        x: (B, *input_shape) inputs.
        z: (B, k) reparameterised samples of q(z|x) (the ELBO's own sample).
        alpha: () or (B,) mixing weights.
        perm: (B,) the permutation shared by x and z.
        target_noise: (B, k) standard normal draws: the latent target is then the sample
            mu(x_mix) + sigma(x_mix) * noise (``latent_target="sample"``); None: mu(x_mix).
    """
    x_mix, z_mix = mix(x, alpha, perm), mix(z, alpha, perm)
    mu_mix, logvar_mix = encode(model, x_mix)  # (B, k) each
    kl = kl_to_prior(mu_mix, logvar_mix).mean()
    recon = (x_mix - decode(model, z_mix)).square().flatten(1).sum(1).mean()
    target = mu_mix if target_noise is None else mu_mix + (0.5 * logvar_mix).exp() * target_noise  # (B, k)
    latent = (z_mix - target).square().sum(1).mean()
    return MixupTerms(kl, recon, latent)


def draw_mixing(
    config: MixupConfig, batch: int, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha ~ Beta(a, a), () or (B,), and a permutation (B,), both from a seeded generator.

    alpha is drawn by inverting the Beta CDF at uniforms from the generator, since
    ``torch.distributions.Beta`` cannot take one; that keeps training deterministic for a seed.
    """
    from scipy.special import betaincinv  # scipy only where mixup trains

    u = torch.rand(batch if config.per_sample else 1, generator=generator, dtype=torch.float64)
    alpha = torch.as_tensor(betaincinv(config.alpha, config.alpha, u.numpy()), dtype=torch.float32)
    perm = torch.randperm(batch, generator=generator)
    alpha = alpha if config.per_sample else alpha[0]
    return alpha.to(device), perm.to(device)
