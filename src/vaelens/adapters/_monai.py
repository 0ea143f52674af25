"""MONAI's ``AutoencoderKL`` as a vaelens VAE (docs/method.md section 1).

MONAI's encoder returns (mu, sigma), not a log-variance: logvar = 2 log sigma. Images and
volumes stay in [0, 1], MONAI's usual intensity range for this model. A 3-D model takes volumes
(B, C, D, H, W) and says so through ``input_layout = "volume"``.
"""

from __future__ import annotations

from typing import Any

import torch

from vaelens._errors import VaelensError
from vaelens.adapters._base import AdaptedVAE, class_names, float32_for_derivatives, require_extra


class _Monai(AdaptedVAE):
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mu, sigma = self.inner.encode(x)
        return mu, 2.0 * sigma.clamp_min(torch.finfo(sigma.dtype).tiny).log()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(z)


def from_monai(model: Any, input_range: tuple[float, float] = (0.0, 1.0)) -> AdaptedVAE:
    """``monai.networks.nets.AutoencoderKL`` (2-D or 3-D) as a vaelens VAE.

    Arguments:
        model: the MONAI model.
        input_range: the intensity range it was trained on (default [0, 1]).

    Inputs (B, in_channels, H, W), or volumes (B, in_channels, D, H, W) for ``spatial_dims=3``,
    with every spatial size a multiple of 2^(levels - 1); latents flattened to (B, k).

    Examples::

        >>> net = monai.networks.nets.AutoencoderKL(spatial_dims=2, channels=(32, 64), ...)
        >>> vaelens.pullback_metric(vaelens.adapters.from_monai(net), x, "stochastic").eigenvalues()
        >>> net3d = monai.networks.nets.AutoencoderKL(spatial_dims=3, channels=(8, 16), ...)
        >>> vaelens.adapters.from_monai(net3d).encode(v)[0].shape   # v: (B, 1, 16, 16, 16)
        torch.Size([B, 512])
    """
    require_extra("monai")
    if "AutoencoderKL" not in class_names(model) or not hasattr(model, "encoder"):
        raise VaelensError(f"from_monai takes monai.networks.nets.AutoencoderKL; got {type(model).__name__}")
    levels = len(getattr(model.encoder, "channels", (0,)))
    dims = getattr(model.encoder, "spatial_dims", 2)
    if dims not in (2, 3):
        raise VaelensError(f"from_monai takes 2-D or 3-D models (spatial_dims 2 or 3); this one has {dims}")
    vae = _Monai(
        float32_for_derivatives(model),
        input_range=input_range,
        channels=int(model.encoder.in_channels),
        size_multiple=2 ** (levels - 1),
        name="monai.AutoencoderKL" if dims == 2 else "monai.AutoencoderKL (3-D)",
    )
    object.__setattr__(vae, "input_layout", "volume" if dims == 3 else "image")  # a plain attribute, not a module
    return vae
