"""Model configuration: a frozen, validated dataclass saved as JSON beside the weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from vaelens._configs import check_fields, from_dict
from vaelens._errors import VaelensError

ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a reference model.

    Arguments:
        architecture: "mlp" or "conv".
        input_shape: per-sample shape, e.g. (1, 28, 28), (3, 64, 64), or (d,) for a flat MLP.
        latent_dim: k, the latent dimension.
        hidden: MLP hidden widths (encoder; the decoder mirrors them).
        channels: conv channels per stride-2 layer (encoder; the decoder mirrors them).
        likelihood: "bernoulli" (BCE on logits) or "gaussian" (squared error).
        negative_slope: LeakyReLU slope (docs/method.md section 7 uses 0.2).
    """

    architecture: str = "mlp"
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512, 256)
    channels: tuple[int, ...] = (32, 64, 128)
    likelihood: str = "bernoulli"
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        check_fields(self)
        if self.architecture not in ARCHITECTURES:
            raise VaelensError(f"unknown model architecture {self.architecture!r}; choose one of {ARCHITECTURES}")
        if self.likelihood not in LIKELIHOODS:
            raise VaelensError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.latent_dim < 1:
            raise VaelensError(f"latent_dim must be a positive integer; got {self.latent_dim}")
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise VaelensError(f"input_shape must be positive sizes; got {self.input_shape}")
        if any(h < 1 for h in self.hidden) or any(c < 1 for c in self.channels):
            raise VaelensError("hidden widths and channels must be positive integers")
        if self.architecture == "conv":
            if len(self.input_shape) != 3:
                raise VaelensError(
                    f"a conv model needs an image input_shape (C, H, W); got {self.input_shape}; "
                    "use --model mlp for flat vectors"
                )
            side = min(self.input_shape[1:])
            if side >> len(self.channels) < 1:
                raise VaelensError(
                    f"{len(self.channels)} stride-2 conv layers shrink a {side}-pixel side to "
                    "nothing; pass fewer channels"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return from_dict(cls, d, "model config")
