"""The VAE protocol every part of vaelens speaks (PAPER.md section 1).

A "VAE" is any ``torch.nn.Module`` with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> x_mean``.
No base class is required: models from other libraries work as they are. This module holds the
named posterior and the checks applied to inputs where they enter the library.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vaelens._errors import VaelensError


class Posterior(NamedTuple):
    """The diagonal Gaussian q(z|x) = N(mu, diag(exp(logvar))).

    Arguments:
        mu: (B, k) posterior means.
        logvar: (B, k) posterior log-variances.
    """

    mu: torch.Tensor
    logvar: torch.Tensor


def encode(model: torch.nn.Module, x: torch.Tensor) -> Posterior:
    """Call ``model.encode`` and return a checked ``Posterior`` whatever tuple type it returned."""
    if not hasattr(model, "encode") or not hasattr(model, "decode"):
        raise VaelensError(
            f"{type(model).__name__} is not a VAE: it needs encode(x) -> (mu, logvar) and decode(z) -> x_mean methods"
        )
    out = model.encode(x)
    if not isinstance(out, tuple) or len(out) != 2:
        raise VaelensError(f"{type(model).__name__}.encode must return (mu, logvar); got {type(out).__name__}")
    mu, logvar = out
    if mu.shape != logvar.shape or mu.dim() != 2:
        raise VaelensError(
            f"{type(model).__name__}.encode must return mu and logvar of shape (B, k); got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    return Posterior(mu, logvar)


def model_input_shape(model: torch.nn.Module) -> tuple[int, ...] | None:
    """The per-sample input shape a model declares (``input_shape`` attribute), if any."""
    shape = getattr(model, "input_shape", None)
    return tuple(shape) if shape is not None else None


def check_images(x: torch.Tensor, name: str = "x", shape: tuple[int, ...] | None = None) -> None:
    """Check a batch of inputs where it enters: a float tensor (B, *shape), finite, in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise VaelensError(f"{name} must be a torch.Tensor of shape (B, ...); got {type(x).__name__}")
    if not x.is_floating_point():
        raise VaelensError(f"{name} must be a float tensor with values in [0, 1]; got {x.dtype}")
    if x.dim() < 2:
        raise VaelensError(f"{name} must be batched, shape (B, ...); got {tuple(x.shape)}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise VaelensError(
            f"{name} has per-sample shape {tuple(x.shape[1:])} but the model expects "
            f"{tuple(shape)}; reshape or resize the inputs"
        )
    if not torch.isfinite(x).all():
        raise VaelensError(f"{name} contains NaN or Inf; clean the inputs first")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise VaelensError(
            f"{name} has values in [{x.min().item():.3g}, {x.max().item():.3g}] but must lie in "
            "[0, 1]; rescale it (e.g. divide 8-bit images by 255)"
        )
