"""Protecting images against editing through a VAE: the PhotoGuard encoder attack (docs/method.md section 9).

Each image, at its own resolution, gets an 8-bit perturbation within eps (L-inf) that pulls its
encoder mean towards a target code (a flat gray image's, by default), found by ``TargetedAttack``
on the "latent" objective (Auto-PGD's halving step, random start), optionally robust to
transforms by expectation over transformation. The protection is then evaluated after five
transforms (``_transforms.py``) and reported as holding or failed for each.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from vaelens._configs import check_fields, check_unique
from vaelens._errors import VaelensError
from vaelens._io import atomic_write, write_csv, write_json
from vaelens._outputs import claim_output, finish_output
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import Posterior, decode, encode, frozen, model_input_shape, prepare_inputs
from vaelens.attacks import Reference, TargetedAttack, attack_damage, divergence
from vaelens.evaluation._transforms import EVALUATED, ROBUST, RandomTransform, Robust, evaluation_transforms

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
HELD_SHARE = 0.5  # a protection holds after a transform if at least this share of its pull remains
GRAY = 0.5  # the default target: a flat image of this value


@dataclass(frozen=True)
class ProtectConfig:
    """Settings of image protection.

    Arguments:
        eps: the L-inf budget in 8-bit units (8 means 8/255, PhotoGuard's 0.06 in [-1, 1]);
            at least 1, since the written PNG holds whole 8-bit steps. Default 8.
        steps: Auto-PGD steps per image, default 200.
        robust: transform kinds to be robust to, a subset of ("jpeg", "resize", "blur",
            "noise"); empty (the default) optimises the plain objective.
        eot_samples: random transforms averaged per step when ``robust`` is given, default 4.
        evaluate: evaluate each protection after the five transforms, default True.
        seed: seeds the random start, the robust draws and the evaluation's noise.
    """

    eps: float = 8.0
    steps: int = 200
    robust: tuple[Robust, ...] = ()
    eot_samples: int = 4
    evaluate: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "robust", tuple(self.robust))
        unknown = [k for k in self.robust if k not in ROBUST]
        if unknown:
            raise VaelensError(f"unknown transform(s) {', '.join(map(str, unknown))}; choose from {', '.join(ROBUST)}")
        check_unique(self.robust, "robust")
        if not 1 <= self.eps <= 255:
            raise VaelensError(f"eps is in 8-bit units (8 means 8/255) and must lie in [1, 255]; got {self.eps:g}")
        if self.steps < 1 or self.eot_samples < 1:
            raise VaelensError(f"steps and eot_samples must be >= 1; got {self.steps} and {self.eot_samples}")


@dataclass(frozen=True)
class TransformCheck:
    """One transform T applied to the clean and to the protected image.

    Arguments:
        distance_clean: ||mu(T(x)) - mu_target||_2.
        distance: ||mu(T(x_protected)) - mu_target||_2.
        held: whether at least ``HELD_SHARE`` of the protection's pull survived T (``holds``).
    """

    distance_clean: float
    distance: float
    held: bool


@dataclass(frozen=True)
class Protection:
    """One protected image and what the protection did.

    Arguments:
        image: (C, H, W) uint8, the protected image, within eps of the original in every pixel.
        distance_before: ||mu(x) - mu_target||_2 for the original x.
        distance_after: ||mu(x_protected) - mu_target||_2.
        recon_psnr_clean: PSNR (dB) of g(mu(x)) against x, for comparison.
        recon_psnr: PSNR (dB) of g(mu(x_protected)) against the original x.
        perturbation_psnr: PSNR (dB) of x_protected against x (higher: less visible; inf if equal).
        linf: the largest pixel change, in 8-bit units.
        checks: {transform: TransformCheck}, in ``EVALUATED`` order; empty if not evaluated.
    """

    image: torch.Tensor
    distance_before: float
    distance_after: float
    recon_psnr_clean: float
    recon_psnr: float
    perturbation_psnr: float
    linf: int
    checks: dict[str, TransformCheck] = field(default_factory=dict)

    @property
    def pull(self) -> float:
        """How much closer to the target the protection moved the code."""
        return self.distance_before - self.distance_after


def holds(pull: float, distance_clean: float, distance: float) -> bool:
    """After a transform T, the protection holds if the protected image is still at least
    ``HELD_SHARE`` of the original pull closer to the target than the clean image is:
    d(T(x_p)) <= d(T(x)) - HELD_SHARE * (d(x) - d(x_p)). A protection that pulled nothing never holds."""
    return pull > 0 and distance <= distance_clean - HELD_SHARE * pull


class _Padded(torch.nn.Module):
    """A model that takes H x W inputs although it needs multiples of ``multiple``: inputs are
    padded by reflection (bottom and right) before encoding, decoded outputs cropped back. The
    attack therefore perturbs exactly the image's own pixels; the padding mirrors them."""

    def __init__(self, model: torch.nn.Module, size: tuple[int, int], multiple: int) -> None:
        super().__init__()
        self.model, self.size, self.multiple = model, size, multiple

    def encode(self, x: torch.Tensor) -> Posterior:
        h, w = self.size
        pad = (0, -w % self.multiple, 0, -h % self.multiple)
        mode = "reflect" if max(pad) < min(h, w) else "replicate"  # reflection needs pad < side
        return encode(self.model, F.pad(x, pad, mode=mode))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        return decode(self.model, z)[..., :h, :w]


def fit_model(model: torch.nn.Module, shape: tuple[int, ...], name: str = "the image") -> torch.nn.Module:
    """The model ready for one image of shape (C, H, W): itself, or padded to its ``size_multiple``.

    A model with a fixed ``input_shape`` that the image does not match is refused in one line.
    """
    fixed = model_input_shape(model)
    if fixed is not None:
        if tuple(fixed) != tuple(shape):
            raise VaelensError(
                f"{name} is {'x'.join(map(str, shape))} but the model takes only {'x'.join(map(str, fixed))} "
                "inputs; resize the image or use a model that takes any size"
            )
        return model
    multiple = getattr(model, "size_multiple", 1)
    if not isinstance(multiple, int) or multiple < 1:
        raise VaelensError(f"{type(model).__name__}.size_multiple must be a positive integer; got {multiple!r}")
    h, w = shape[-2:]
    return model if h % multiple == 0 and w % multiple == 0 else _Padded(model, (h, w), multiple)


def image_channels(model: torch.nn.Module) -> int:
    """The channels a model's images have: its ``input_shape``'s first entry, else its
    ``input_channels`` (adapted models), else 3 (RGB)."""
    shape = model_input_shape(model)
    if shape is not None and len(shape) == 3:
        return shape[0]
    return int(getattr(model, "input_channels", None) or 3)


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """An image file as a (C, H, W) uint8 tensor: grayscale for ``channels=1``, else RGB (alpha
    dropped), EXIF orientation applied. Unreadable files raise a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise VaelensError(f"{path} does not exist or is not a file; check the path")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise VaelensError(f"cannot read {path} as an image ({e}); remove it or convert it to PNG") from None
    pixels = np.array(image)  # a copy: Pillow's buffer is read-only
    return torch.from_numpy(pixels[None] if pixels.ndim == 2 else np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def read_images(directory: str | Path, channels: int = 3) -> dict[str, torch.Tensor]:
    """Every image file directly in ``directory``, {file name: (C, H, W) uint8}, sorted by name."""
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
    return {p.name: read_image(p, channels) for p in paths}


def write_png(path: str | Path, image: torch.Tensor) -> None:
    """Write a (C, H, W) uint8 image as PNG, atomically: grayscale for one channel, else RGB."""
    pixels = image.numpy()
    array = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)

    def write(tmp: str) -> None:
        Image.fromarray(array).save(tmp, format="PNG")

    atomic_write(path, write)


def _psnr(mse: float) -> float:
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def _target_image(target: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """(1, C, H, W) in [0, 1]: flat gray, or the target image resized to (H, W)."""
    if target is None:
        return torch.full((1, *shape), GRAY)
    if target.shape[0] != shape[0]:
        raise VaelensError(f"the target image has {target.shape[0]} channels but the images have {shape[0]}")
    import torchvision.transforms.functional as TF  # seconds to import: on first use

    resized = TF.resize(target[None].float() / 255, list(shape[-2:]), antialias=True)
    return resized.clamp(0, 1)


def _check_mask(mask: torch.Tensor | None, shape: tuple[int, ...], name: str) -> None:
    if mask is not None and tuple(mask.shape) != tuple(shape[-2:]):
        raise VaelensError(
            f"the mask is {'x'.join(map(str, mask.shape))} but {name} is {'x'.join(map(str, shape[-2:]))} "
            "(height x width); give a mask of the image's size"
        )


def _check_image(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise VaelensError(f"{name} must be a (C, H, W) uint8 tensor (see read_image); got {got}")


def protect_image(
    model: torch.nn.Module,
    image: torch.Tensor,
    config: ProtectConfig | None = None,
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    name: str = "the image",
) -> Protection:
    """Protect one image: pull its encoder mean towards the target's within eps (8-bit, L-inf).

    Arguments:
        model: a VAE; it may declare ``size_multiple`` (the image is padded by reflection for it)
            or a fixed ``input_shape`` (the image must match it).
        image: (C, H, W) uint8, any H and W.
        config: ``ProtectConfig`` (defaults: eps 8, 200 steps, not robust, evaluated).
        target: (C, H', W') uint8 target image, resized to (H, W); None: flat gray (0.5).
        mask: (H, W) bool, True where pixels may change; None: everywhere.
        name: how errors name the image.

    Returns:
        ``Protection``: the protected (C, H, W) uint8 image, the latent distances to the target
        before and after, PSNRs, and, if evaluated, a ``TransformCheck`` per transform.

    Examples::

        >>> image = read_image("photo.png")                 # (3, 512, 768) uint8
        >>> p = protect_image(sd_vae, image, ProtectConfig(eps=8, robust=("jpeg", "resize")))
        >>> p.image.shape, p.distance_after < p.distance_before
        (torch.Size([3, 512, 768]), True)
        >>> {t: c.held for t, c in p.checks.items()}        # jpeg, resize, blur, noise, vae
    """
    config = config or ProtectConfig()
    _check_image(image, name)
    _check_mask(mask, tuple(image.shape), name)
    fitted = fit_model(model, tuple(image.shape), name)
    x = image[None].float() / 255  # (1, C, H, W); the model's dtype and device come with prepare_inputs
    x_target = _target_image(target, tuple(image.shape))
    keep = None if mask is None else mask.to(torch.float32)[None, None]  # (1, 1, H, W)
    robust = RandomTransform(config.robust, config.seed) if config.robust else None
    attack = TargetedAttack(
        fitted, config.eps / 255, "linf", "latent", config.steps, random_start=True, seed=config.seed,
        transform=robust, samples=config.eot_samples, mask=keep,
    )  # fmt: skip
    x_adv = attack(x, x_target).cpu()  # (1, C, H, W)
    protected = _quantise(x_adv[0], image, config.eps, mask)  # (C, H, W) uint8
    return _measure(fitted, image, protected, x_target, config)


def _quantise(x_adv: torch.Tensor, image: torch.Tensor, eps: float, mask: torch.Tensor | None) -> torch.Tensor:
    """Round to 8 bits, then clip to image +- floor(eps) and [0, 255]: rounding may not leave the
    budget. Pixels outside the mask are the original's, exactly."""
    step = math.floor(eps)
    low, high = (image.int() - step).clamp(min=0), (image.int() + step).clamp(max=255)
    q = (x_adv.double() * 255).round().clamp(0, 255).int()
    q = torch.minimum(torch.maximum(q, low), high).to(torch.uint8)
    return q if mask is None else torch.where(mask, q, image)


@torch.no_grad()
def _measure(
    model: torch.nn.Module, image: torch.Tensor, protected: torch.Tensor, x_target: torch.Tensor, config: ProtectConfig
) -> Protection:
    x = prepare_inputs(model, image[None].float() / 255)  # (1, C, H, W)
    x_p = prepare_inputs(model, protected[None].float() / 255, "the protected image")
    damage = attack_damage(model, x, x_p)
    with frozen(model):
        ref = Reference.of(model, prepare_inputs(model, x_target, "the target image"))

        def distance(y: torch.Tensor) -> float:
            return float(divergence(model, y, ref, "latent").sqrt())

        before, after = distance(x), distance(x_p)
        clean_mse = float((Reference.of(model, x).recon - x).square().mean())
        checks = {}
        if config.evaluate:
            for t, transform in evaluation_transforms(model, config.seed).items():
                d_clean, d = distance(transform(x)), distance(transform(x_p))
                checks[t] = TransformCheck(d_clean, d, holds(before - after, d_clean, d))
    return Protection(
        image=protected,
        distance_before=before,
        distance_after=after,
        recon_psnr_clean=_psnr(clean_mse),
        recon_psnr=_psnr(float(damage.recon_error[0])),
        perturbation_psnr=_psnr(float(damage.l2[0]) ** 2 / x[0].numel()),
        linf=int((protected.int() - image.int()).abs().max()),
        checks=checks,
    )


def protect(
    model: torch.nn.Module,
    images: dict[str, torch.Tensor],
    config: ProtectConfig | None = None,
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    progress: bool = True,
) -> dict[str, Protection]:
    """Protect each image of ``images`` ({name: (C, H, W) uint8}) with ``protect_image``, one at
    a time at its own size, after checking all of them (shapes, mask) first.

    Examples::

        >>> images = read_images("photos/")                 # {"a.jpg": (3, 512, 512) uint8, ...}
        >>> result = protect(sd_vae, images, ProtectConfig(robust=("jpeg", "resize", "blur", "noise")))
        >>> write_protection(result, "protected/")          # a.png, ..., protect.csv, summary.json
    """
    config = config or ProtectConfig()
    if not images:
        raise VaelensError("no images to protect; pass at least one")
    for name, image in images.items():  # fail before the first long attack, not after it
        _check_image(image, name)
        _check_mask(mask, tuple(image.shape), name)
        fit_model(model, tuple(image.shape), name)
    results = {}
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "protecting", len(images), interval=0.0)
        for name, image in images.items():
            results[name] = protect_image(model, image, config, target, mask, name)
            ticker.tick(name)
        ticker.flush()
    return results


def check_columns() -> list[str]:
    """The per-transform columns of protect.csv, in order: the one place they are named."""
    return [f"{t}_{what}" for t in EVALUATED for what in ("distance_clean", "distance", "held")]


COLUMNS = ["image", "height", "width", "distance_before", "distance_after", "recon_psnr_clean", "recon_psnr",
           "perturbation_psnr", "linf"]  # fmt: skip


def protection_row(name: str, p: Protection) -> dict[str, Any]:
    """One protect.csv row: the image's file name and every field of ``p`` but the image."""
    row: dict[str, Any] = {"image": name, "height": p.image.shape[-2], "width": p.image.shape[-1]}
    row.update({c: getattr(p, c) for c in COLUMNS[3:]})
    for t, check in p.checks.items():
        row.update({f"{t}_distance_clean": check.distance_clean, f"{t}_distance": check.distance})
        row[f"{t}_held"] = int(check.held)
    return row


def held_counts(results: dict[str, Protection]) -> dict[str, int]:
    """{transform: how many images' protection held after it}."""
    return {t: sum(p.checks[t].held for p in results.values() if t in p.checks) for t in EVALUATED}


def output_name(name: str) -> str:
    """The protected copy of image file ``name``: NAME.png."""
    return f"{Path(name).stem}.png"


def protect_output(config: ProtectConfig, meta: dict | None = None) -> dict:
    """What a protection's output directory is claimed with: its config and where its inputs came from."""
    return {"protect": {**asdict(config), "robust": list(config.robust)}, **(meta or {})}


def write_protection(
    results: dict[str, Protection],
    out: str | Path,
    config: ProtectConfig,
    meta: dict | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the protected PNGs, protect.csv (one row per image) and summary.json (held counts
    per transform) into ``out``, each atomically, the directory's marker last; return {name: path}.
    A directory another command or config wrote is refused unless ``overwrite``."""
    out = claim_output(out, "protect", protect_output(config, meta), overwrite)
    paths: dict[str, Path] = {}
    for name, p in results.items():
        paths[name] = out / output_name(name)
        write_png(paths[name], p.image)
    columns = COLUMNS + (check_columns() if config.evaluate else [])
    paths["protect.csv"] = out / "protect.csv"
    write_csv(paths["protect.csv"], [protection_row(n, p) for n, p in results.items()], columns)
    paths["summary.json"] = out / "summary.json"
    mean = {c: float(np.mean([getattr(p, c) for p in results.values()])) for c in COLUMNS[3:]}
    summary = {**protect_output(config, meta), "n": len(results), "mean": mean}
    if config.evaluate:
        summary["held"] = held_counts(results)
    write_json(paths["summary.json"], summary)
    finish_output(out, [p.name for p in paths.values()])
    return paths
