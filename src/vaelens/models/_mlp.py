"""A fully connected beta-VAE (docs/method.md sections 1 and 7): LeakyReLU(0.2) MLPs for both halves."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaelens._protocol import Posterior
from vaelens.models._config import ModelConfig


def _mlp(widths: list[int], slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(a, b), nn.LeakyReLU(slope)]
    return nn.Sequential(*layers)


class MLPVAE(nn.Module):
    """MLP VAE: d -> hidden -> (mu, logvar) in R^k; k -> reversed hidden -> d logits.

    Arguments:
        input_shape: per-sample shape, e.g. (1, 28, 28) or (64,).
        latent_dim: k.
        hidden: encoder widths, default (512, 256); the decoder mirrors them.
        likelihood: "bernoulli" or "gaussian". Either way ``decode`` returns the mean in [0, 1].
        negative_slope: LeakyReLU slope, default 0.2.

    ``encode(x)`` takes (B, *input_shape) and returns ``Posterior`` with (B, k) fields.
    ``decode(z)`` takes (B, k) and returns (B, *input_shape).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...] = (1, 28, 28),
        latent_dim: int = 16,
        hidden: tuple[int, ...] = (512, 256),
        likelihood: str = "bernoulli",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.config = ModelConfig(
            "mlp", input_shape, latent_dim, hidden, likelihood=likelihood, negative_slope=negative_slope
        )
        self.input_shape = self.config.input_shape
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        d = math.prod(self.input_shape)
        widths = [d, *self.config.hidden]
        self.encoder = _mlp(widths, negative_slope)
        self.to_mu = nn.Linear(widths[-1], latent_dim)
        self.to_logvar = nn.Linear(widths[-1], latent_dim)
        self.decoder = nn.Sequential(
            _mlp([latent_dim, *reversed(widths[1:])], negative_slope),
            nn.Linear(widths[1] if len(widths) > 1 else latent_dim, d),
        )

    def encode(self, x: torch.Tensor) -> Posterior:
        h = self.encoder(x.flatten(1))  # (B, h)
        return Posterior(self.to_mu(h), self.to_logvar(h))  # (B, k) each

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(z.shape[0], *self.input_shape)  # (B, *input_shape)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction g(mu(x)), shape (B, *input_shape)."""
        return self.decode(self.encode(x).mu)
