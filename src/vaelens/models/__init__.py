"""Reference beta-VAE models. Any module with encode/decode works with vaelens; these are ours."""

from __future__ import annotations

from torch import nn

from vaelens.models._config import ARCHITECTURES, LIKELIHOODS, ModelConfig
from vaelens.models._conv import ConvVAE
from vaelens.models._mlp import MLPVAE
from vaelens.models._protector import ProtectorNet, ProtectorNetConfig


def build_model(config: ModelConfig) -> nn.Module:
    """Build the reference model a ``ModelConfig`` describes (weights freshly initialised)."""
    model: MLPVAE | ConvVAE
    if config.architecture == "mlp":
        model = MLPVAE(config.input_shape, config.latent_dim, config.hidden, config.likelihood, config.negative_slope)
    else:
        c, h, w = config.input_shape
        model = ConvVAE((c, h, w), config.latent_dim, config.channels, config.likelihood, config.negative_slope)
    model.config = config  # keep the fields the architecture ignores, so configs round-trip
    return model


__all__ = [
    "ARCHITECTURES",
    "LIKELIHOODS",
    "ConvVAE",
    "MLPVAE",
    "ModelConfig",
    "ProtectorNet",
    "ProtectorNetConfig",
    "build_model",
]
