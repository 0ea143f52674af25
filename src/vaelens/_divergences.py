"""Divergences between diagonal Gaussian posteriors (docs/method.md section 2), per sample."""

from __future__ import annotations

import torch


def gaussian_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mu1, e^logvar1) || N(mu2, e^logvar2)) summed over the latent axis: (B, k) -> (B,).

    KL = sum_i [ log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2 ].
    """
    return 0.5 * ((logvar2 - logvar1) + (logvar1.exp() + (mu1 - mu2).square()) / logvar2.exp() - 1.0).sum(-1)


def symmetric_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """(KL(a || b) + KL(b || a)) / 2, per sample (B,)."""
    return 0.5 * (gaussian_kl(mu1, logvar1, mu2, logvar2) + gaussian_kl(mu2, logvar2, mu1, logvar1))
