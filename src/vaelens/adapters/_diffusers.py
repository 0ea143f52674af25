"""diffusers' autoencoders (AutoencoderKL, AsymmetricAutoencoderKL, AutoencoderTiny) as vaelens VAEs.

docs/method.md section 1 (the protocol) and section 3 (which metric kinds apply). Images in [0, 1]
are mapped to diffusers' [-1, 1]; the 4 x H/8 x W/8 latent is flattened; the decoder is read at the
posterior mean, without the ``scaling_factor`` that the diffusion model applies afterwards.
"""

from __future__ import annotations

from typing import Any

import torch

from vaelens._errors import VaelensError
from vaelens.adapters._base import AdaptedVAE, class_names, float32_for_derivatives, require_extra

GAUSSIAN = ("AutoencoderKL", "AsymmetricAutoencoderKL")
DETERMINISTIC = ("AutoencoderTiny",)


def _downsampling(vae: Any, name: str) -> int:
    config = vae.config
    if name == "AutoencoderTiny":
        return 2 ** (len(config.encoder_block_out_channels) - 1)
    blocks = getattr(config, "down_block_out_channels", None) or config.block_out_channels
    return 2 ** (len(blocks) - 1)


class _Diffusers(AdaptedVAE):
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.inner.encode(x)
        if self.deterministic:
            return out.latents, None
        dist = out.latent_dist
        return dist.mean, dist.logvar

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(z).sample


def from_diffusers(vae: Any) -> AdaptedVAE:
    """A diffusers autoencoder as a vaelens VAE on images in [0, 1].

    Supports ``AutoencoderKL`` (the Stable Diffusion VAEs) and ``AsymmetricAutoencoderKL`` with
    every metric kind, and ``AutoencoderTiny`` (TAESD), whose encoder is deterministic, with the
    "mean" and "output" kinds and the "latent" and "recon" attack objectives only.

    Inputs: (B, C, H, W) with C the model's ``in_channels`` and H, W multiples of the model's
    downsampling factor (8 for Stable Diffusion VAEs: any size divisible by 8; resize or pad others).
    Latents: flattened, k = latent_channels * H/8 * W/8. Half-precision models are copied to float32
    (with a note): derivatives in fp16 are inaccurate. The default attention processor is kept; the
    adapter runs attention with torch's math kernel, which has forward-mode derivatives.

    Examples::

        >>> vae = diffusers.AutoencoderKL.from_pretrained("sd-vae-ft-mse", local_files_only=True)
        >>> model = vaelens.adapters.from_diffusers(vae)
        >>> model.encode(x)[0].shape                     # x: (2, 3, 256, 256) -> torch.Size([2, 4096])
    """
    require_extra("diffusers")
    known = [n for n in GAUSSIAN + DETERMINISTIC if n in class_names(vae)]
    name = known[0] if known else type(vae).__name__
    if not known:
        raise VaelensError(
            f"from_diffusers takes {', '.join(GAUSSIAN + DETERMINISTIC)}; got {name} (for another model "
            "use vaelens.adapters.wrap(encode, decode))"
        )
    return _Diffusers(
        float32_for_derivatives(vae),
        input_range=(-1.0, 1.0),
        channels=int(vae.config.in_channels),
        size_multiple=_downsampling(vae, name),
        deterministic=name in DETERMINISTIC,
        name=name,
    )
