"""Image files for protection (docs/method.md section 9): read in their real depth and mode, written
back in a form whose difference from the original stays within the budget.

A file is read as what it holds: 8-bit gray or colour as they are; 16-bit gray at its 16 bits;
palette, CMYK, YCbCr, LAB, HSV and 1-bit images converted explicitly to colour or gray; an alpha
channel kept aside. The model sees 8-bit pixels (``ImageFile.pixels``). A protected copy is
written as a PNG that is the original plus the perturbation at the original's own precision: a
16-bit image gets each 8-bit step as 257 16-bit steps, an alpha channel and an ICC profile come
back unchanged. What cannot be kept that way (16-bit colour, floating-point images) is refused in
one line instead of being rounded silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vaelens._errors import VaelensError
from vaelens._io import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEEP = 257  # one 8-bit step in 16-bit units: 65535 / 255
COLOUR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa")
GRAY_MODES = ("L", "LA", "La", "1", "I", "I;16", "I;16B", "I;16L", "I;16N")


@dataclass(frozen=True, eq=False)
class ImageFile:
    """An image file as read.

    Arguments:
        pixels: (C, H, W) uint8, C 1 (gray) or 3 (colour): what the model sees.
        mode: the file's Pillow mode ("L", "I;16", "RGB", "P", "CMYK", "RGBA", ...).
        deep: (C, H, W) int32, the original 16-bit values of a 16-bit file; None for 8-bit files.
        alpha: (H, W) uint8, the original's alpha channel, written back unchanged; None if none.
        icc_profile: the original's colour profile, written back where the colours are its own.
    """

    pixels: torch.Tensor
    mode: str
    deep: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    icc_profile: bytes | None = None


def _tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) -> (C, H, W), a copy (Pillow's buffers are read-only)."""
    array = np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(array.copy())


def _is_deep_colour(image: Image.Image) -> bool:
    """A 16-bit-per-channel colour file, which Pillow reads as 8 bits (it drops the low byte)."""
    tiles = getattr(image, "tile", None) or []
    return any(";16" in str(getattr(t, "args", t[-1] if isinstance(t, tuple) else "")) for t in tiles)


def _from_pillow(image: Image.Image, path: Path) -> ImageFile:
    """The explicit conversion of every mode vaelens takes; anything else is refused in one line."""
    mode, icc = image.mode, image.info.get("icc_profile")
    if mode in ("F", "I;16S", "I;32") or (mode == "I" and np.array(image).min() < 0):
        raise VaelensError(f"{path} is a {mode} image (not 8 or 16-bit); convert it to an 8-bit or 16-bit PNG")
    if mode.startswith("I"):
        values = np.array(image).astype(np.int64)
        if values.max() > 65535:
            raise VaelensError(f"{path} holds values above 16 bits; convert it to an 8-bit or 16-bit PNG")
        deep = torch.from_numpy(values.astype(np.int32))[None]  # (1, H, W)
        return ImageFile(((deep + DEEP // 2) // DEEP).to(torch.uint8), mode, deep=deep, icc_profile=icc)
    has_alpha = mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in image.info)
    gray = mode in GRAY_MODES
    own = "L" if gray else "RGB"
    converted = image.convert(("LA" if gray else "RGBA") if has_alpha else own)
    array = np.array(converted)
    alpha = torch.from_numpy(array[..., -1].copy()) if has_alpha else None
    colours = array[..., :-1] if has_alpha else array
    keeps_colours = mode in ("RGB", "RGBA", "L", "LA")  # an ICC profile describes these pixels as read
    return ImageFile(_tensor(colours[..., 0] if gray and colours.ndim == 3 else colours), mode, alpha=alpha,
                     icc_profile=icc if keeps_colours else None)  # fmt: skip


def read_image_file(path: str | Path, written: bool = True) -> ImageFile:
    """An image file as an ``ImageFile``: its own channels (1 or 3) at 8 bits for the model, and
    what writing a protected copy back needs. EXIF orientation is applied. Unreadable files, and
    (``written``: a protected copy will be written back) files that cannot be written back within
    the budget, raise a one-line error; a 16-bit colour file only read (a target, a mask, a photo
    to train on) is read at 8 bits."""
    path = Path(path)
    if not path.is_file():
        raise VaelensError(f"{path} does not exist or is not a file; check the path")
    try:
        with Image.open(path) as opened:
            if written and opened.mode in ("RGB", "RGBA", "LA") and _is_deep_colour(opened):
                raise VaelensError(
                    f"{path} is a 16-bit {opened.mode} image, which vaelens can read only as 8 bits; convert "
                    "it to 8-bit colour (or 16-bit gray) first, so that the protected copy stays within the budget"
                )
            opened.load()
            result = _from_pillow(ImageOps.exif_transpose(opened), path)
    except VaelensError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, MemoryError) as e:
        raise VaelensError(f"cannot read {path} as an image ({e}); remove it or convert it to PNG") from None
    if min(result.pixels.shape[-2:]) < 1:
        raise VaelensError(f"{path} is empty (0 pixels); remove it")
    return result


def convert_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) uint8 with C 1 or 3 as ``channels`` channels: gray repeated, colour to its luma."""
    if pixels.shape[0] == channels:
        return pixels
    if channels == 3 and pixels.shape[0] == 1:
        return pixels.expand(3, -1, -1).clone()
    if channels == 1 and pixels.shape[0] == 3:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]
        return (pixels.double() * luma).sum(0, keepdim=True).round().to(torch.uint8)
    raise VaelensError(f"cannot convert a {pixels.shape[0]}-channel image to {channels} channels")


def read_image(path: str | Path, channels: int | None = None, written: bool = True) -> torch.Tensor:
    """An image file as a (C, H, W) uint8 tensor: its own channels (1 gray, 3 colour), or
    ``channels`` (1 or 3) converted explicitly. Alpha is dropped here (``read_image_file`` keeps it).
    16-bit colour is refused (a protected copy of it would not stay within the budget) unless
    ``written=False``: an image only read (a target, a mask, a photo to train on) is read at 8 bits."""
    pixels = read_image_file(path, written=written).pixels
    return pixels if channels is None else convert_channels(pixels, channels)


def image_paths(directory: str | Path) -> list[Path]:
    """The image files directly in ``directory``, sorted by name; one line if there are none or
    two would be written to the same NAME.png."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VaelensError(f"--images {directory} is not a directory; pass a directory of image files")
    paths = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise VaelensError(f"{directory} holds no image files ({', '.join(IMAGE_SUFFIXES)}); check --images")
    stems = [p.stem for p in paths]
    clash = next((s for s in stems if stems.count(s) > 1), None)
    if clash is not None:
        raise VaelensError(f"{directory} holds several images named {clash}.*; each output is NAME.png, rename one")
    return paths


def read_image_files(directory: str | Path) -> dict[str, ImageFile]:
    """Every image file directly in ``directory``, {file name: ``ImageFile``}, sorted by name."""
    return {p.name: read_image_file(p) for p in image_paths(directory)}


def read_images(directory: str | Path, channels: int | None = None, written: bool = True) -> dict[str, torch.Tensor]:
    """Every image file directly in ``directory``, {file name: (C, H, W) uint8}, sorted by name
    (``written`` as in ``read_image``)."""
    return {p.name: read_image(p, channels, written) for p in image_paths(directory)}


def _save(path: str | Path, image: Image.Image, icc_profile: bytes | None = None) -> None:
    def write(tmp: str) -> None:
        image.save(tmp, format="PNG", **({"icc_profile": icc_profile} if icc_profile else {}))

    atomic_write(path, write)


def write_png(path: str | Path, image: torch.Tensor) -> None:
    """Write a (C, H, W) uint8 image as PNG, atomically: grayscale for one channel, else RGB."""
    pixels = image.numpy()
    _save(path, Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)))


def write_like(path: str | Path, protected: torch.Tensor, source: ImageFile) -> None:
    """Write a protected copy (C, H, W) uint8 of ``source`` as a PNG in the source's own form:
    16 bits for a 16-bit source (the original plus 257 times the 8-bit perturbation, so the
    difference stays what it was at 8 bits), its alpha channel and ICC profile unchanged."""
    if source.deep is not None:
        delta = protected.int() - source.pixels.int()  # (1, H, W), in 8-bit steps
        deep = (source.deep + DEEP * delta).clamp(0, 65535).numpy().astype(np.uint16)
        _save(path, Image.fromarray(deep[0]), source.icc_profile)
        return
    pixels = protected.numpy().transpose(1, 2, 0)  # (H, W, C)
    if source.alpha is not None:
        pixels = np.concatenate([pixels, source.alpha.numpy()[..., None]], axis=-1)  # (H, W, C + 1)
    pixels = np.ascontiguousarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)  # L, LA, RGB or RGBA
    _save(path, Image.fromarray(pixels), source.icc_profile)
