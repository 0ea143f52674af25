"""The beta-VAE objective of docs/method.md section 1, per sample, with named terms."""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F

from vaelens._protocol import decode, encode


class LossTerms(NamedTuple):
    """Batch means of the negative beta-ELBO and its parts (scalars)."""

    loss: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample: (B, k) -> (B,).

    The closed form of ``gaussian_kl`` against the standard normal, written out because it is on
    the training hot path.
    """
    return 0.5 * (logvar.exp() + mu.square() - 1.0 - logvar).sum(1)


class Reconstruction(NamedTuple):
    """A decoding and its negative log-likelihood: ``mean`` (B, *input_shape), ``nll`` (B,)."""

    mean: torch.Tensor
    nll: torch.Tensor


def reconstruct(model: torch.nn.Module, z: torch.Tensor, x: torch.Tensor, likelihood: str) -> Reconstruction:
    """Decode z and score x under p(x|z): -log p(x|z) up to a constant, per sample.

    Bernoulli: binary cross-entropy summed over pixels, on logits when the model has
    ``decode_logits`` (numerically stable), else on its clamped mean. Gaussian: squared error summed
    over pixels.
    """
    if likelihood == "bernoulli" and hasattr(model, "decode_logits"):
        logits = cast(Any, model).decode_logits(z)  # (B, *input_shape)
        per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        mean = torch.sigmoid(logits)
    else:
        mean = decode(model, z)  # (B, *input_shape)
        if likelihood == "bernoulli":
            per_pixel = F.binary_cross_entropy(mean.clamp(1e-6, 1 - 1e-6), x, reduction="none")
        else:
            per_pixel = (mean - x).square()
    return Reconstruction(mean, per_pixel.flatten(1).sum(1))


def beta_vae_loss(
    model: torch.nn.Module, x: torch.Tensor, beta: float, noise: torch.Tensor, likelihood: str = "bernoulli"
) -> LossTerms:
    """Negative beta-ELBO with one reparameterised sample z = mu + sigma * noise.

    Arguments:
        model: a VAE.
        x: (B, *input_shape) in [0, 1].
        beta: KL weight.
        noise: (B, k) standard normal draws.
        likelihood: "bernoulli" or "gaussian".
    """
    return elbo_pass(model, x, beta, noise, likelihood).terms


class ElboPass(NamedTuple):
    """The loss terms and the sample z (B, k) they used (mixup reuses it)."""

    terms: LossTerms
    z: torch.Tensor


def elbo_pass(
    model: torch.nn.Module,
    x: torch.Tensor,
    beta: float,
    noise: torch.Tensor,
    likelihood: str,
    target: torch.Tensor | None = None,
) -> ElboPass:
    """The beta-ELBO of a batch: encode x (B, *s), sample z with ``noise`` (B, k), reconstruct
    ``target`` (B, *s; default x itself, the noise defence passes the clean images)."""
    mu, logvar = encode(model, x)  # (B, k) each
    z = mu + (0.5 * logvar).exp() * noise  # (B, k)
    recon = reconstruct(model, z, x if target is None else target, likelihood).nll.mean()
    kl = kl_to_prior(mu, logvar).mean()
    return ElboPass(LossTerms(recon + beta * kl, recon, kl), z)
