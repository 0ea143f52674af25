"""The image transforms a protected image meets once published (docs/method.md section 9).

One function per kind, each (B, C, H, W) in [0, 1] -> the same shape, in [0, 1]: JPEG (Pillow's
codec), a downscale and upscale and a Gaussian blur (torchvision), Gaussian noise, and the VAE
round trip decode(encode(x)). The evaluation applies them at fixed settings (``evaluation_transforms``);
robust protection optimises the expected objective over random draws of them (``RandomTransform``).
JPEG is not differentiable: its forward pass is the real codec and its backward pass the identity
(a straight-through gradient). The others are differentiable torch operations.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from PIL import Image

from vaelens.attacks import Reference

Robust = Literal["jpeg", "resize", "blur", "noise"]
"""The transform kinds robust protection optimises over (``--robust``)."""
ROBUST: tuple[Robust, ...] = ("jpeg", "resize", "blur", "noise")
EVALUATED: tuple[str, ...] = ("jpeg", "resize", "blur", "noise", "vae")
"""The transforms every protection is evaluated after, in this order."""

JPEG_QUALITY, RESIZE_SCALE, BLUR_SIGMA, NOISE_SIGMA = 75, 0.5, 1.0, 4 / 255  # the evaluation's settings
# the ranges robust protection draws from, uniformly; each contains the evaluation's setting
ROBUST_RANGES: dict[Robust, tuple[float, float]] = {
    "jpeg": (50, 95),
    "resize": (0.35, 0.9),
    "blur": (0.4, 1.6),
    "noise": (0.0, 8 / 255),
}


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG compression at ``quality`` (1-95) and decompression by Pillow, per image.

    x is quantised to 8 bits first, as any saved image is. One channel is coded as grayscale,
    three as RGB (4:2:0 chroma, Pillow's default), any other count channel by channel. The
    gradient is straight-through: d jpeg(x) / dx is taken to be the identity.
    """
    with torch.no_grad():
        pixels = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()  # (B, C, H, W)
        out = np.stack([_jpeg_one(p, quality) for p in pixels])
        coded = torch.from_numpy(out).to(device=x.device, dtype=x.dtype) / 255
    return x + (coded - x).detach()  # forward: the codec's output; backward: the identity


def _jpeg_one(pixels: np.ndarray, quality: int) -> np.ndarray:
    if pixels.shape[0] not in (1, 3):
        return np.concatenate([_jpeg_one(c[None], quality) for c in pixels])
    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    decoded = np.asarray(Image.open(buffer))
    return decoded[None] if decoded.ndim == 2 else decoded.transpose(2, 0, 1)


def resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Downscale by ``scale`` (antialiased bilinear) and upscale back to the original size."""
    import torchvision.transforms.functional as TF  # seconds to import: on first use

    h, w = x.shape[-2:]
    small = TF.resize(x, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)
    return TF.resize(small, [h, w], antialias=True).clamp(0, 1)


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels, kernel 2 ceil(3 sigma) + 1 wide
    (at most what reflection padding allows for the image's size)."""
    import torchvision.transforms.functional as TF  # seconds to import: on first use

    side = min(x.shape[-2:])
    k = min(2 * math.ceil(3 * sigma) + 1, 2 * side - 1)
    return TF.gaussian_blur(x, [k, k], [sigma, sigma]) if k > 1 else x


def noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Add Gaussian noise of standard deviation ``sigma`` (drawn on the CPU from ``generator``),
    then clamp to [0, 1]."""
    draw = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + sigma * draw.to(x.device)).clamp(0, 1)


def vae_round_trip(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """decode(encode(x)) at the posterior mean, clamped to [0, 1]."""
    return Reference.of(model, x).recon.clamp(0, 1)


def evaluation_transforms(model: torch.nn.Module, seed: int = 0) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The five transforms of the evaluation at their fixed settings, named as in ``EVALUATED``.

    Each is deterministic: the noise is drawn from a generator seeded with ``seed`` at every call,
    so a clean image and its protected copy meet the same noise.
    """
    return {
        "jpeg": lambda x: jpeg(x, JPEG_QUALITY),
        "resize": lambda x: resize(x, RESIZE_SCALE),
        "blur": lambda x: blur(x, BLUR_SIGMA),
        "noise": lambda x: noise(x, NOISE_SIGMA, torch.Generator().manual_seed(seed)),
        "vae": lambda x: vae_round_trip(model, x),
    }


class RandomTransform:
    """A random draw from the given kinds at every call, for expectation over transformation.

    Each call picks the identity or one of ``kinds`` uniformly, and the kind's setting uniformly
    from ``ROBUST_RANGES`` (JPEG quality rounded to an integer). Keeping the identity among the
    draws keeps the untransformed image's protection in the objective.

    Arguments:
        kinds: a non-empty subset of ``ROBUST``.
        seed: seeds the draws (a CPU generator), so a protection is reproducible.

    Examples::

        >>> t = RandomTransform(("jpeg", "blur"), seed=0)
        >>> t(x).shape == x.shape                           # x: (B, C, H, W) in [0, 1]
        True
    """

    def __init__(self, kinds: tuple[Robust, ...], seed: int = 0) -> None:
        assert kinds and set(kinds) <= set(ROBUST), kinds  # the config checked the names
        self.kinds, self.generator = kinds, torch.Generator().manual_seed(seed)
        self.drawn: list[tuple[str, float]] = []  # (kind, setting) of every call, for inspection

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        choice = int(torch.randint(len(self.kinds) + 1, (), generator=self.generator))
        if choice == 0:
            self.drawn.append(("identity", 0.0))
            return x
        kind = self.kinds[choice - 1]
        low, high = ROBUST_RANGES[kind]
        setting = low + (high - low) * float(torch.rand((), generator=self.generator, dtype=torch.float64))
        self.drawn.append((kind, setting))
        if kind == "jpeg":
            return jpeg(x, round(setting))
        if kind == "resize":
            return resize(x, setting)
        if kind == "blur":
            return blur(x, setting)
        return noise(x, setting, self.generator)
