"""A convolutional beta-VAE (docs/method.md section 7) for 1x28x28, 3x32x32, 3x64x64 or any (C, H, W).

Each encoder layer is a stride-2, 4x4 convolution that halves the side (rounding down); the decoder
mirrors it with transposed convolutions, adding an output padding where the encoder rounded down, so
the reconstruction has exactly the input's shape.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaelens._protocol import Posterior
from vaelens.models._config import ModelConfig


class ConvVAE(nn.Module):
    """Conv VAE: stride-2 convs -> linear (mu, logvar); linear -> transposed convs -> logits.

    Arguments:
        input_shape: (C, H, W).
        latent_dim: k.
        channels: channels of each stride-2 conv layer, default (32, 64, 128).
        likelihood: "bernoulli" or "gaussian". Either way ``decode`` returns the mean in [0, 1].
        negative_slope: LeakyReLU slope, default 0.2.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        latent_dim: int = 16,
        channels: tuple[int, ...] = (32, 64, 128),
        likelihood: str = "bernoulli",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.config = ModelConfig(
            "conv",
            input_shape,
            latent_dim,
            channels=channels,
            likelihood=likelihood,
            negative_slope=negative_slope,
        )
        self.input_shape = self.config.input_shape
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        c_in, h, w = self.input_shape
        sizes = [(h, w)]
        for _ in channels:
            sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
        enc: list[nn.Module] = []
        for a, b in zip((c_in, *channels[:-1]), channels, strict=True):
            enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(negative_slope)]
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self._bottleneck = (channels[-1], *sizes[-1])
        flat = math.prod(self._bottleneck)
        self.to_mu = nn.Linear(flat, latent_dim)
        self.to_logvar = nn.Linear(flat, latent_dim)
        self.from_z = nn.Sequential(nn.Linear(latent_dim, flat), nn.LeakyReLU(negative_slope))
        dec: list[nn.Module] = []
        outs = (*reversed(channels[:-1]), c_in)
        for i, (a, b) in enumerate(zip(reversed(channels), outs, strict=True)):
            target, source = sizes[-2 - i], sizes[-1 - i]
            pad = (target[0] - 2 * source[0], target[1] - 2 * source[1])  # 0 or 1 per side
            dec.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, output_padding=pad))
            if i < len(channels) - 1:
                dec.append(nn.LeakyReLU(negative_slope))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> Posterior:
        h = self.encoder(x)  # (B, C' * H' * W')
        return Posterior(self.to_mu(h), self.to_logvar(h))  # (B, k) each

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(z.shape[0], *self._bottleneck)  # (B, C', H', W')
        return self.decoder(h)  # (B, C, H, W)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction g(mu(x)), shape (B, C, H, W)."""
        return self.decode(self.encode(x).mu)
