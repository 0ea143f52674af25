"""Protecting images against editing through a VAE: the PhotoGuard encoder attack (docs/method.md section 9).

Each image, at its own resolution, gets an 8-bit perturbation within eps (L-inf) that pulls its
encoder mean towards a target code (a flat gray image's, by default), found by ``TargetedAttack``
on the "latent" objective (Auto-PGD's halving step, random start), optionally robust to
transforms by expectation over transformation. The protection is then evaluated after five
transforms (``_transforms.py``) and reported as holding or failed for each.

The parts: image files are read and written in ``_images.py``; a model is fitted to each image
(padding, channels) by ``vaelens.adapters.fit_model``; this module holds the algorithm (``pull``
is the one place the objective on a model is set up); ``_protect_writer.py`` writes the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from vaelens._configs import check_fields, check_unique
from vaelens._errors import VaelensError
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import frozen, prepare_inputs
from vaelens.adapters import fit_model
from vaelens.attacks import Reference, TargetedAttack, attack_damage, divergence
from vaelens.evaluation._images import convert_channels
from vaelens.evaluation._transforms import ROBUST, RandomTransform, Robust, evaluation_transforms

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


def _psnr(mse: float) -> float:
    return 10 * math.log10(1 / mse) if mse > 0 else math.inf


def _target_image(target: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """(1, C, H, W) in [0, 1]: flat gray, or the target image in the image's channels, resized to (H, W)."""
    if target is None:
        return torch.full((1, *shape), GRAY)
    _check_image(target, "the target image")
    if target.shape[0] != shape[0] and {target.shape[0], shape[0]} != {1, 3}:
        raise VaelensError(f"the target image has {target.shape[0]} channels but the images have {shape[0]}")
    target = convert_channels(target, shape[0])
    import torchvision.transforms.functional as TF  # seconds to import: on first use

    resized = TF.resize(target[None].float() / 255, list(shape[-2:]), antialias=True)
    return resized.clamp(0, 1)


def _mask_weight(mask: torch.Tensor | None, shape: tuple[int, ...], name: str) -> torch.Tensor | None:
    """(H, W) float in [0, 1]: each pixel's share of the budget (a bool mask gives 0 or 1)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise VaelensError(f"the mask must be an (H, W) bool or float tensor; got {got}")
    if tuple(mask.shape) != tuple(shape[-2:]):
        raise VaelensError(
            f"the mask is {'x'.join(map(str, mask.shape))} but {name} is {'x'.join(map(str, shape[-2:]))} "
            "(height x width); give a mask of the image's size"
        )
    weight = mask.to(torch.float32)
    if not torch.isfinite(weight).all() or weight.min() < 0 or weight.max() > 1:
        raise VaelensError("the mask's values must lie in [0, 1] (1: the full budget, 0: the pixel stays)")
    return weight


def _check_image(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise VaelensError(f"{name} must be a (C, H, W) uint8 tensor (see read_image); got {got}")
    if min(image.shape) < 1:
        raise VaelensError(f"{name} is empty ({tuple(image.shape)}); give an image with pixels")


def check_inputs(
    model: torch.nn.Module, images: dict[str, torch.Tensor], mask: torch.Tensor | None = None
) -> dict[str, torch.nn.Module]:
    """Check every image (and the mask) against the model before any long attack; return the
    model fitted to each image, {name: model}. Any problem is one line naming the image."""
    if not images:
        raise VaelensError("no images to protect; pass at least one")
    fitted = {}
    for name, image in images.items():
        _check_image(image, name)
        _mask_weight(mask, tuple(image.shape), name)
        fitted[name] = fit_model(model, tuple(image.shape), name)
    return fitted


def pull(
    model: torch.nn.Module, x: torch.Tensor, x_target: torch.Tensor, weight: torch.Tensor | None, config: ProtectConfig
) -> torch.Tensor:
    """The protection's optimisation: x (1, C, H, W) in [0, 1] moved within eps (L-inf, per pixel
    times ``weight``) so that the model's encoder mean approaches x_target's. Returns (1, C, H, W).

    The one place the objective on a model is set up: the latent distance to the target's code,
    by Auto-PGD from a random start, in expectation over ``config.robust`` transforms if any.
    """
    keep = None if weight is None else weight[None, None]  # (1, 1, H, W)
    robust = RandomTransform(config.robust, config.seed) if config.robust else None
    attack = TargetedAttack(
        model, config.eps / 255, "linf", "latent", config.steps, random_start=True, seed=config.seed,
        transform=robust, samples=config.eot_samples, mask=keep,
    )  # fmt: skip
    return attack(x, x_target).cpu()  # (1, C, H, W)


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
        model: a VAE; it may declare ``size_multiple`` (the image is padded by reflection for it),
            a fixed ``input_shape`` (the image's height and width must match it), or neither (it
            is tried once on the image). A gray image given to a colour model, or the reverse, is
            converted inside the model, so the protected copy keeps the image's own channels.
        image: (C, H, W) uint8, C 1 or 3, any H and W.
        config: ``ProtectConfig`` (defaults: eps 8, 200 steps, not robust, evaluated).
        target: (C', H', W') uint8 target image, converted to C channels and resized to (H, W);
            None: flat gray (0.5).
        mask: (H, W), True or 1 where pixels may change by the full budget; a float mask in [0, 1]
            weights each pixel's budget (0.5: half of eps). None: everywhere.
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
    fitted = check_inputs(model, {name: image}, mask)[name]
    weight = _mask_weight(mask, tuple(image.shape), name)  # (H, W) or None
    x = image[None].float() / 255  # (1, C, H, W); the model's dtype and device come with prepare_inputs
    x_target = _target_image(target, tuple(image.shape))
    x_adv = pull(fitted, x, x_target, weight, config)  # (1, C, H, W)
    protected = _quantise(x_adv[0], image, config.eps, weight)  # (C, H, W) uint8
    return _measure(fitted, image, protected, x_target, config)


def _quantise(x_adv: torch.Tensor, image: torch.Tensor, eps: float, weight: torch.Tensor | None) -> torch.Tensor:
    """Round to 8 bits, then clip to image +- floor(eps * weight) and [0, 255]: rounding may not
    leave the budget. Pixels of weight 0 are the original's, exactly."""
    step = torch.tensor(math.floor(eps)) if weight is None else torch.floor(eps * weight.double() + 1e-9).int()
    low, high = (image.int() - step).clamp(min=0), (image.int() + step).clamp(max=255)  # (C, H, W)
    q = (x_adv.double() * 255).round().clamp(0, 255).int()
    return torch.minimum(torch.maximum(q, low), high).to(torch.uint8)


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
    a time at its own size, after checking all of them (shapes, mask, the model on each) first.

    Examples::

        >>> images = read_images("photos/")                 # {"a.jpg": (3, 512, 512) uint8, ...}
        >>> result = protect(sd_vae, images, ProtectConfig(robust=("jpeg", "resize", "blur", "noise")))
        >>> write_protection(result, "protected/")          # a.png, ..., protect.csv, summary.json
    """
    config = config or ProtectConfig()
    check_inputs(model, images, mask)  # fail before the first long attack, not after it
    results = {}
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "protecting", len(images), interval=0.0)
        for name, image in images.items():
            results[name] = protect_image(model, image, config, target, mask, name)
            ticker.tick(name)
        ticker.flush()
    return results
