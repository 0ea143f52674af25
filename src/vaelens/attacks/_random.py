"""The random baseline: a perturbation of the full budget in a uniformly random direction."""

from __future__ import annotations

import torch

from vaelens.attacks._base import Attack, random_direction, sample_generators


class RandomNoise(Attack):
    """delta uniform on the L2 sphere of radius eps, or uniform in the L-inf box [-eps, eps]^d.

    Arguments:
        model: a VAE.
        eps: budget (> 0).
        norm: "l2" or "linf".
        seed: seeds the draws (None: fresh randomness). Each input's draw depends only on the seed
            and the input, not on the batch it comes in.
    """

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        if self.norm == "l2":
            return x + self.eps * random_direction(x, self.seed, "random")
        gens = sample_generators(x, self.seed, "random")
        u = torch.stack([torch.rand(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in gens])
        return x + (2 * u - 1) * self.eps
