"""The amortised protector: a compact U-Net from an image to its perturbation (docs/method.md section 9).

Two downsamplings (so a receptive field of about 40 pixels at full resolution, and a view of the
image's layout at a quarter of it), skip connections that keep the perturbation's fine texture
aligned with the image's edges, and a final ``eps * tanh`` so that every output lies within the
L-inf budget by construction, whatever the weights. Fully convolutional: any height and width
(sides are padded by reflection to a multiple of 4 and the output cropped back).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaelens._configs import check_fields
from vaelens._errors import VaelensError

MULTIPLE = 4  # two stride-2 stages


@dataclass(frozen=True)
class ProtectorNetConfig:
    """The protector's shape.

    Arguments:
        channels: image channels, 1 (gray) or 3 (colour). Default 3.
        width: feature maps at full resolution (2x and 4x that below). Default 16.
        eps: the L-inf budget in 8-bit units; the output is eps/255 * tanh(.). Default 8.
    """

    channels: int = 3
    width: int = 16
    eps: float = 8.0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.channels not in (1, 3):
            raise VaelensError(f"a protector takes 1 or 3 channels; got {self.channels}")
        if self.width < 1:
            raise VaelensError(f"the protector's width must be >= 1; got {self.width}")
        if not 1 <= self.eps <= 255:
            raise VaelensError(f"eps is in 8-bit units (8 means 8/255) and must lie in [1, 255]; got {self.eps:g}")


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, 1, 1), nn.SiLU())


class ProtectorNet(nn.Module):
    """x (B, C, H, W) in [0, 1] -> delta (B, C, H, W) with |delta| <= eps / 255 everywhere.

    Examples::

        >>> net = ProtectorNet(ProtectorNetConfig(channels=3, eps=8))
        >>> delta = net(x)                                  # x: (B, 3, 61, 90) -> (B, 3, 61, 90)
        >>> bool(delta.abs().max() <= 8 / 255)
        True
    """

    def __init__(self, config: ProtectorNetConfig) -> None:
        super().__init__()
        c, w = config.channels, config.width
        self.config = config
        self.down0, self.down1, self.down2 = _block(c, w), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2)
        self.up2, self.up1 = nn.Conv2d(4 * w, 2 * w, 3, 1, 1), nn.Conv2d(2 * w, w, 3, 1, 1)
        self.merge1, self.merge0 = _block(4 * w, 2 * w), _block(2 * w, w)
        self.head = nn.Conv2d(w, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad = (0, -w % MULTIPLE, 0, -h % MULTIPLE)
        y = 2 * x - 1  # (B, C, H, W) in [-1, 1]
        if max(pad) > 0:
            y = F.pad(y, pad, mode="reflect" if max(pad) < min(h, w) else "replicate")  # (B, C, H', W')
        s0 = self.down0(y)  # (B, w, H', W')
        s1 = self.down1(s0)  # (B, 2w, H'/2, W'/2)
        s2 = self.down2(s1)  # (B, 4w, H'/4, W'/4)
        u1 = self.up2(F.interpolate(s2, size=s1.shape[-2:], mode="nearest"))  # (B, 2w, H'/2, W'/2)
        u1 = self.merge1(torch.cat([u1, s1], 1))  # (B, 2w, H'/2, W'/2)
        u0 = self.up1(F.interpolate(u1, size=s0.shape[-2:], mode="nearest"))  # (B, w, H', W')
        u0 = self.merge0(torch.cat([u0, s0], 1))  # (B, w, H', W')
        out = self.head(u0)[..., :h, :w]  # (B, C, H, W)
        return self.config.eps / 255 * torch.tanh(out)
