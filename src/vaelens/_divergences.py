"""Divergences between diagonal Gaussian posteriors (docs/method.md section 2), per sample."""

from __future__ import annotations

from typing import NamedTuple

import torch


def gaussian_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mu1, e^logvar1) || N(mu2, e^logvar2)) summed over the latent axis: (B, k) -> (B,).

    KL = sum_i [ log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2 ].
    """
    return 0.5 * ((logvar2 - logvar1) + (logvar1.exp() + (mu1 - mu2).square()) / logvar2.exp() - 1.0).sum(-1)


class KLParts(NamedTuple):
    """KL between diagonal Gaussians split in two non-negative parts, each (B,); they sum to the KL.

    Arguments:
        mean: 1/2 sum_i (m1 - m2)^2 / s2^2, half the squared Mahalanobis distance of the means
            under the second Gaussian: the code moved.
        variance: 1/2 sum_i [s1^2 / s2^2 - 1 - log(s1^2 / s2^2)], the log-det and trace part: the
            posterior widened or narrowed where it stands.
    """

    mean: torch.Tensor
    variance: torch.Tensor


def gaussian_kl_parts(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> KLParts:
    """``gaussian_kl`` as mean-shift plus variance parts (docs/method.md section 2.3): (B, k) -> 2 x (B,)."""
    ratio = logvar1 - logvar2  # log(s1^2 / s2^2), (B, k)
    mean = 0.5 * ((mu1 - mu2).square() / logvar2.exp()).sum(-1)
    variance = 0.5 * (ratio.exp() - 1.0 - ratio).sum(-1)
    return KLParts(mean, variance)


def symmetric_kl(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """(KL(a || b) + KL(b || a)) / 2, per sample (B,)."""
    return 0.5 * (gaussian_kl(mu1, logvar1, mu2, logvar2) + gaussian_kl(mu2, logvar2, mu1, logvar1))
