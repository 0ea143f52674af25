"""How well a VAE reconstructs a set of inputs: MSE, likelihood, ELBO and active units.

The reconstruction side of the robustness-reconstruction trade-off (docs/method.md sections 4, 6).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vaelens._protocol import encode, eval_mode, prepare_inputs
from vaelens.training import beta_vae_loss, reconstruct

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016: a latent unit is active when Var_x(E_q[z]) > 0.01


class Quality(NamedTuple):
    """Reconstruction quality on a set of inputs."""

    mse: float  # per-pixel MSE of g(mu(x))
    nll: float  # reconstruction negative log-likelihood per input
    elbo: float  # one-sample ELBO (beta = 1) per input
    active_units: int  # latent dimensions with Var_x(mu) > 0.01


@torch.no_grad()
def reconstruction_quality(model: torch.nn.Module, x: torch.Tensor, likelihood: str, seed: int = 0) -> Quality:
    """Per-pixel MSE of g(mu(x)), reconstruction NLL, the ELBO (one sample, beta = 1), active units.

    Arguments:
        model: a VAE.
        x: (N, *input_shape) inputs in [0, 1]; moved to the model's device and dtype.
        likelihood: "bernoulli" or "gaussian", the model's p(x|z).
        seed: seeds the one reparameterised sample of the ELBO.

    Returns:
        ``Quality`` of four numbers.
    """
    x = prepare_inputs(model, x)
    with eval_mode(model):
        mu = encode(model, x).mu  # (N, k)
        mean, nll = reconstruct(model, mu, x, likelihood)
        noise = torch.randn(mu.shape, generator=torch.Generator().manual_seed(seed))
        terms = beta_vae_loss(model, x, 1.0, noise.to(mu), likelihood)
    active = int((mu.var(0) > ACTIVE_THRESHOLD).sum())
    return Quality((mean - x).square().mean().item(), nll.mean().item(), -terms.loss.item(), active)
