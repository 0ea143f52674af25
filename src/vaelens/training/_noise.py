"""Gaussian-noise augmentation as a defence (docs/method.md section 6.6).

Each batch is encoded at x + delta, delta ~ N(0, sigma^2 I) drawn afresh per step, and the ELBO
reconstructs the clean x: the encoder learns to map a noisy neighbourhood of x to one posterior,
and the decoder to denoise. The noise is not clipped to the pixel range, as in randomised
smoothing, whose Gaussian it matches: a model trained this way is the natural base of a smoothed
VAE (``vaelens.smooth``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaelens._configs import check_fields
from vaelens._errors import VaelensError
from vaelens.training._defence import Defence


@dataclass(frozen=True)
class NoiseConfig(Defence):
    """Gaussian-noise augmentation.

    Arguments:
        sigma: standard deviation of the input noise, > 0 (default 0.25, pixels in [0, 1]).
    """

    name = "noise"
    run_suffix = "_noise"
    stream = "input-noise"
    stream_on_device = True

    sigma: float = 0.25

    def __post_init__(self) -> None:
        check_fields(self)
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise VaelensError(f"noise sigma (--noise-sigma) must be > 0; got {self.sigma}")

    def inputs(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        delta = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)  # (B, *s)
        return x + self.sigma * delta
