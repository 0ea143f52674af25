"""No defence: plain beta-VAE training (docs/method.md section 1)."""

from __future__ import annotations

from dataclasses import dataclass

from vaelens.training._defence import Defence


@dataclass(frozen=True)
class NoDefence(Defence):
    """Plain training: the ELBO of the clean batch and nothing else."""

    name = "none"
