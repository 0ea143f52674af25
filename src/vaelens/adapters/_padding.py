"""A model fitted to one image (docs/method.md section 9): padding, channels, and a probe.

Protection works on each image at its own size and in its own colours. A model that needs sides
divisible by ``size_multiple`` gets the image padded by reflection and its reconstruction cropped
back; a gray image given to a colour model is repeated into three channels, a colour image given
to a gray model is taken to its luma (ITU-R 601-2, Pillow's "L"), both inside the model, so the
attack perturbs exactly the image's own pixels. A model that declares neither a shape nor a
multiple is tried once on the image, and a failure is one line, not a shape error deep inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vaelens._errors import VaelensError
from vaelens._protocol import Posterior, check_runs, decode, encode, model_dtype_device, model_input_shape

LUMA = (0.299, 0.587, 0.114)  # Pillow's RGB -> L weights


def declared_channels(model: torch.nn.Module) -> int | None:
    """The channels a model declares: its ``input_shape``'s first entry, else its
    ``input_channels`` (adapted models); None if it declares neither."""
    shape = model_input_shape(model)
    if shape is not None and len(shape) == 3:
        return shape[0]
    channels = getattr(model, "input_channels", None)
    return int(channels) if channels else None


def image_channels(model: torch.nn.Module) -> int:
    """The channels a model's images have: those it declares, else 3 (RGB)."""
    return declared_channels(model) or 3


def _size(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


class Padded(torch.nn.Module):
    """A model that takes (C, H, W) images although it needs other channels or sides that are
    multiples of ``multiple``: inputs are converted to the model's channels and padded by
    reflection (bottom and right) before encoding; decoded outputs are cropped and converted back."""

    def __init__(self, model: torch.nn.Module, shape: tuple[int, int, int], channels: int, multiple: int) -> None:
        super().__init__()
        self.model, self.shape, self.channels, self.multiple = model, shape, channels, multiple

    def encode(self, x: torch.Tensor) -> Posterior:
        c, h, w = self.shape
        if c == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        elif c == 3 and self.channels == 1:
            x = (x * x.new_tensor(LUMA)[:, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
        pad = (0, -w % self.multiple, 0, -h % self.multiple)
        if max(pad) > 0:
            mode = "reflect" if max(pad) < min(h, w) else "replicate"  # reflection needs pad < side
            x = F.pad(x, pad, mode=mode)  # (B, C', H', W')
        return encode(self.model, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        y = decode(self.model, z)[..., :h, :w]  # (B, C', H, W)
        if c == 1 and self.channels == 3:
            return (y * y.new_tensor(LUMA)[:, None, None]).sum(1, keepdim=True)  # (B, 1, H, W)
        return y.expand(-1, 3, -1, -1) if c == 3 and self.channels == 1 else y


def _multiple(model: torch.nn.Module) -> int:
    multiple = getattr(model, "size_multiple", 1)
    if not isinstance(multiple, int) or multiple < 1:
        raise VaelensError(f"{type(model).__name__}.size_multiple must be a positive integer; got {multiple!r}")
    return multiple


def _probe(model: torch.nn.Module, shape: tuple[int, ...], name: str) -> None:
    """Run the model once on a gray image of ``shape``: a model that cannot take it fails here, in
    one line naming the image, instead of inside the attack."""
    dtype, device = model_dtype_device(model)
    x = torch.full((1, *shape), 0.5, dtype=dtype, device=device)  # (1, C, H, W)
    fix = "resize the image, or give the model an input_shape or size_multiple attribute"
    y = check_runs(model, x, f"{name} ({_size(shape)})", fix)  # (1, C, H, W)
    if tuple(y.shape[1:]) != tuple(shape):
        raise VaelensError(
            f"the model reconstructs {name} ({_size(shape)}) as {_size(tuple(y.shape[1:]))}; it cannot "
            "protect images of this size: resize the image, or declare the model's input_shape"
        )


def fit_model(model: torch.nn.Module, shape: tuple[int, ...], name: str = "the image") -> torch.nn.Module:
    """The model ready for one image of shape (C, H, W), C 1 or 3: itself, or behind ``Padded``
    (channels converted, sides padded to its ``size_multiple``), tried once on the image.

    A model with a fixed ``input_shape`` whose height and width the image does not match, or
    that fails on the image, is refused in one line.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise VaelensError(f"{name} must have shape (C, H, W) with C, H, W >= 1; got {tuple(shape)}")
    layout = getattr(model, "input_layout", "image")
    if layout not in ("image", "image-as-video"):  # a 3-D or video model: no conversion of an image helps
        raise VaelensError(
            f"{name} is an image but the model takes {layout} inputs; protect takes images, and videos for a "
            "video VAE (a folder of clips)"
        )
    declared = declared_channels(model)
    if declared is None and shape[0] in (1, 3):  # the image's own channels first, then the other of gray/colour
        try:
            return _fit(model, shape, shape[0], name)
        except VaelensError as first:
            try:
                return _fit(model, shape, 4 - shape[0], name)
            except VaelensError:
                raise first from None
    return _fit(model, shape, declared or 3, name)


def _fit(model: torch.nn.Module, shape: tuple[int, ...], channels: int, name: str) -> torch.nn.Module:
    fixed = model_input_shape(model)
    if shape[0] != channels and {shape[0], channels} != {1, 3}:
        raise VaelensError(
            f"{name} has {shape[0]} channels but the model takes {channels}; vaelens converts only between "
            "gray (1) and colour (3)"
        )
    if fixed is not None and tuple(fixed[-2:]) != tuple(shape[-2:]):
        raise VaelensError(
            f"{name} is {_size(shape)} but the model takes only {_size(fixed)} inputs; resize the image "
            "or use a model that takes any size"
        )
    multiple = 1 if fixed is not None else _multiple(model)
    h, w = shape[-2:]
    if shape[0] == channels and h % multiple == 0 and w % multiple == 0:
        fitted = model
    else:
        fitted = Padded(model, (shape[0], h, w), channels, multiple)
    _probe(fitted, tuple(shape), name)
    return fitted
