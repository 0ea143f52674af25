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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vaelens._configs import check_fields, check_unique
from vaelens._errors import VaelensError
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import frozen, model_dtype_device, prepare_inputs
from vaelens.adapters import declared_channels, fit_model
from vaelens.attacks import auto_pgd, random_in_ball
from vaelens.evaluation._ensemble import (
    EnsembleObjective,
    Precision,
    all_frozen,
    check_precision,
    code,
    working_dtype,
)
from vaelens.evaluation._images import convert_channels
from vaelens.evaluation._transforms import ROBUST, RandomTransform, Robust, evaluation_transforms, vae_round_trip

HELD_SHARE = 0.5  # a protection holds after a transform if at least this share of its pull remains
GRAY = 0.5  # the default target: a flat image of this value


def check_budget_and_robust(config: Any) -> None:
    """The checks every protection config shares: field types, ``eps`` in [1, 255] 8-bit units, and
    ``robust`` a tuple of distinct known transform kinds."""
    check_fields(config)
    object.__setattr__(config, "robust", tuple(config.robust))
    unknown = [k for k in config.robust if k not in ROBUST]
    if unknown:
        raise VaelensError(f"unknown transform(s) {', '.join(map(str, unknown))}; choose from {', '.join(ROBUST)}")
    check_unique(config.robust, "robust")
    if not 1 <= config.eps <= 255:
        raise VaelensError(f"eps is in 8-bit units (8 means 8/255) and must lie in [1, 255]; got {config.eps:g}")


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
        batch_size: images of one size protected together, default 1. Without ``robust`` each
            image's result does not depend on the batch; with it, a batch shares each draw.
        precision: the encoders' forward passes: "fp32" (default), "bf16" or "fp16" (autocast);
            the perturbation and its gradient stay fp32.
    """

    eps: float = 8.0
    steps: int = 200
    robust: tuple[Robust, ...] = ()
    eot_samples: int = 4
    evaluate: bool = True
    seed: int = 0
    batch_size: int = 1
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        check_budget_and_robust(self)
        if self.steps < 1 or self.eot_samples < 1:
            raise VaelensError(f"steps and eot_samples must be >= 1; got {self.steps} and {self.eot_samples}")
        if self.batch_size < 1:
            raise VaelensError(f"batch_size must be >= 1; got {self.batch_size}")
        check_precision(self.precision, {})


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
class EncoderCheck:
    """What one encoder (attacked or only evaluated) sees of a protection.

    Arguments:
        distance_before: ||mu(x) - mu_target||_2 for the original x.
        distance_after: ||mu(x_protected) - mu_target||_2.
        recon_psnr_clean: PSNR (dB) of g(mu(x)) against x, for comparison.
        recon_psnr: PSNR (dB) of g(mu(x_protected)) against the original x.
        checks: {transform: TransformCheck}, in ``EVALUATED`` order; empty if not evaluated.
    """

    distance_before: float
    distance_after: float
    recon_psnr_clean: float
    recon_psnr: float
    checks: dict[str, TransformCheck] = field(default_factory=dict)

    @property
    def pull(self) -> float:
        """How much closer to the target the protection moved this encoder's code."""
        return self.distance_before - self.distance_after


@dataclass(frozen=True)
class Protection:
    """One protected image and what the protection did, seen by each encoder.

    Arguments:
        image: (C, H, W) uint8, the protected image, within eps of the original in every pixel.
        perturbation_psnr: PSNR (dB) of x_protected against x (higher: less visible; inf if equal).
        linf: the largest pixel change, in 8-bit units.
        encoders: {label: EncoderCheck}, the attacked encoders first (in order), then those only
            evaluated (``evaluate_on``). The first is the primary: ``distance_before``,
            ``distance_after``, ``recon_psnr_clean``, ``recon_psnr``, ``checks`` and ``pull`` are its.
        attacked: the labels of the encoders the protection was made against.
    """

    image: torch.Tensor
    perturbation_psnr: float
    linf: int
    encoders: dict[str, EncoderCheck]
    attacked: tuple[str, ...] = ()

    @property
    def primary(self) -> EncoderCheck:
        return next(iter(self.encoders.values()))

    @property
    def distance_before(self) -> float:
        return self.primary.distance_before

    @property
    def distance_after(self) -> float:
        return self.primary.distance_after

    @property
    def recon_psnr_clean(self) -> float:
        return self.primary.recon_psnr_clean

    @property
    def recon_psnr(self) -> float:
        return self.primary.recon_psnr

    @property
    def checks(self) -> dict[str, TransformCheck]:
        return self.primary.checks

    @property
    def pull(self) -> float:
        """How much closer to the target the protection moved the primary encoder's code."""
        return self.primary.pull


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


Encoders = torch.nn.Module | Mapping[str, torch.nn.Module]
"""One VAE, or several by label ({label: VAE})."""
Perturb = Callable[[Sequence[torch.nn.Module], torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""How a batch is protected: (encoders fitted to its size, x (B, C, H, W) in [0, 1], x_target
(1, C, H, W), per-pixel weight (H, W) or None) -> x_adv (B, C, H, W) within the budget. ``pull``
by default; an amortised protector's forward pass, or a video's, plugs in here."""


def as_encoders(models: Encoders, what: str = "model") -> dict[str, torch.nn.Module]:
    """{label: VAE}: a lone module is labelled ``what``."""
    encoders = {what: models} if isinstance(models, torch.nn.Module) else dict(models)
    if not encoders:
        raise VaelensError(f"no {what} given; pass at least one")
    return encoders


def check_encoders(attacked: dict[str, torch.nn.Module], evaluated: dict[str, torch.nn.Module]) -> None:
    """Refuse, in one line, a label used twice and encoders that take different channels."""
    clash = sorted(set(attacked) & set(evaluated))
    if clash:
        raise VaelensError(f"{clash[0]} is both attacked (--model) and only evaluated (--evaluate-on); name it once")
    channels = {label: declared_channels(m) for label, m in {**attacked, **evaluated}.items()}
    declared = {label: c for label, c in channels.items() if c is not None}
    if len(set(declared.values())) > 1:
        listed = ", ".join(f"{label} takes {c}" for label, c in declared.items())
        raise VaelensError(f"the encoders take different channels ({listed}); protect against encoders of one kind")


def fit_encoders(
    encoders: dict[str, torch.nn.Module], images: dict[str, torch.Tensor], mask: torch.Tensor | None = None
) -> dict[tuple[int, ...], dict[str, torch.nn.Module]]:
    """Check every image (and the mask) against every encoder before any long attack; return the
    encoders fitted to each image size, {(C, H, W): {label: model}}. One line names the image."""
    if not images:
        raise VaelensError("no images to protect; pass at least one")
    fitted: dict[tuple[int, ...], dict[str, torch.nn.Module]] = {}
    for name, image in images.items():
        _check_image(image, name)
        shape = tuple(image.shape)
        _mask_weight(mask, shape, name)
        if shape not in fitted:
            fitted[shape] = {label: fit_model(m, shape, name) for label, m in encoders.items()}
    return fitted


def check_inputs(
    model: torch.nn.Module, images: dict[str, torch.Tensor], mask: torch.Tensor | None = None
) -> dict[str, torch.nn.Module]:
    """Check every image (and the mask) against one model before any long attack; return the
    model fitted to each image, {name: model}. Any problem is one line naming the image."""
    fitted = fit_encoders({"model": model}, images, mask)
    return {name: fitted[tuple(image.shape)]["model"] for name, image in images.items()}


def batches(images: dict[str, torch.Tensor], batch_size: int) -> list[list[str]]:
    """The image names in batches of at most ``batch_size``, each of one size, in order of first appearance."""
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, image in images.items():
        by_shape.setdefault(tuple(image.shape), []).append(name)
    return [names[i : i + batch_size] for names in by_shape.values() for i in range(0, len(names), batch_size)]


def pull(
    models: torch.nn.Module | Sequence[torch.nn.Module],
    x: torch.Tensor,
    x_target: torch.Tensor,
    weight: torch.Tensor | None,
    config: ProtectConfig,
    start: torch.Tensor | None = None,
    steps: int | None = None,
) -> torch.Tensor:
    """The protection's optimisation: x (B, C, H, W) in [0, 1] moved within eps (L-inf, per pixel
    times ``weight``) so that each encoder's mean approaches x_target's. Returns (B, C, H, W) on the CPU.

    The one place the objective is set up: ``EnsembleObjective`` (scale-free over the encoders),
    by Auto-PGD for ``steps`` (default ``config.steps``) from a uniform random start (or from
    ``start``, (B, C, H, W) within the budget), in expectation over ``config.robust`` transforms if
    any, the encoders' forward passes in ``config.precision``.
    """
    models = [models] if isinstance(models, torch.nn.Module) else list(models)
    dtype, device = working_dtype(models), model_dtype_device(models[0])[1]
    x = prepare_inputs(models[0], x).to(dtype)  # (B, C, H, W), checked once, then each model's own dtype in code()
    eps = config.eps / 255
    keep = None if weight is None else weight[None, None].to(x)  # (1, 1, H, W)
    if start is None:
        delta = random_in_ball(x, eps, "linf", config.seed, "targeted")  # (B, C, H, W)
    else:
        delta = start.to(x) - x
    robust = RandomTransform(config.robust, config.seed) if config.robust else None
    with all_frozen(models):
        objective = EnsembleObjective(models, x, x_target.to(device=device, dtype=dtype), config.precision)
        best, _, _ = auto_pgd(
            models[0], x, None, "latent", delta, eps, "linf", steps or config.steps, maximize=False, seed=config.seed,
            transform=robust, samples=config.eot_samples, mask=keep, value=objective,
        )  # fmt: skip
    return best.detach().float().cpu()  # (B, C, H, W)


def protect_image(
    model: Encoders,
    image: torch.Tensor,
    config: ProtectConfig | None = None,
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    name: str = "the image",
    evaluate_on: Mapping[str, torch.nn.Module] | None = None,
) -> Protection:
    """Protect one image: pull its encoder mean towards the target's within eps (8-bit, L-inf).

    Arguments:
        model: a VAE, or several ({label: VAE}: the scale-free sum of their objectives is
            attacked); each may declare ``size_multiple`` (the image is padded by reflection for
            it), a fixed ``input_shape`` (the image's height and width must match it), or neither
            (it is tried once on the image). A gray image given to a colour model, or the reverse,
            is converted inside the model, so the protected copy keeps the image's own channels.
        image: (C, H, W) uint8, C 1 or 3, any H and W.
        config: ``ProtectConfig`` (defaults: eps 8, 200 steps, not robust, evaluated).
        target: (C', H', W') uint8 target image, converted to C channels and resized to (H, W);
            None: flat gray (0.5).
        mask: (H, W), True or 1 where pixels may change by the full budget; a float mask in [0, 1]
            weights each pixel's budget (0.5: half of eps). None: everywhere.
        name: how errors name the image.
        evaluate_on: {label: VAE}, encoders the protection is measured on but not made against.

    Returns:
        ``Protection``: the protected (C, H, W) uint8 image, PSNRs, and for each encoder the latent
        distances to the target before and after and, if evaluated, a ``TransformCheck`` per transform.

    Examples::

        >>> image = read_image("photo.png")                 # (3, 512, 768) uint8
        >>> p = protect_image(sd_vae, image, ProtectConfig(eps=8, robust=("jpeg", "resize")))
        >>> p.image.shape, p.distance_after < p.distance_before
        (torch.Size([3, 512, 768]), True)
        >>> {t: c.held for t, c in p.checks.items()}        # jpeg, resize, blur, noise, vae
    """
    return protect(model, {name: image}, config, target, mask, progress=False, evaluate_on=evaluate_on)[name]


def _quantise(x_adv: torch.Tensor, image: torch.Tensor, eps: float, weight: torch.Tensor | None) -> torch.Tensor:
    """Round to 8 bits, then clip to image +- floor(eps * weight) and [0, 255]: rounding may not
    leave the budget. Pixels of weight 0 are the original's, exactly."""
    step = torch.tensor(math.floor(eps)) if weight is None else torch.floor(eps * weight.double() + 1e-9).int()
    low, high = (image.int() - step).clamp(min=0), (image.int() + step).clamp(max=255)  # (C, H, W)
    q = (x_adv.double() * 255).round().clamp(0, 255).int()
    return torch.minimum(torch.maximum(q, low), high).to(torch.uint8)


@torch.no_grad()
def _measure_one(
    model: torch.nn.Module, x: torch.Tensor, x_p: torch.Tensor, x_target: torch.Tensor, config: ProtectConfig
) -> EncoderCheck:
    """One encoder's view of a protection: x, x_p (1, C, H, W) in [0, 1]; always in full precision."""
    x, x_p = prepare_inputs(model, x), prepare_inputs(model, x_p, "the protected image")
    with frozen(model):
        target = code(model, prepare_inputs(model, x_target, "the target image"))  # (1, k)

        def distance(y: torch.Tensor) -> float:
            return float((code(model, y) - target).norm(dim=-1)[0])

        before, after = distance(x), distance(x_p)
        recon = {k: float((vae_round_trip(model, y) - x).square().mean()) for k, y in (("clean", x), ("p", x_p))}
        checks = {}
        if config.evaluate:
            for t, transform in evaluation_transforms(model, config.seed).items():
                d_clean, d = distance(transform(x)), distance(transform(x_p))
                checks[t] = TransformCheck(d_clean, d, holds(before - after, d_clean, d))
    return EncoderCheck(before, after, _psnr(recon["clean"]), _psnr(recon["p"]), checks)


def _measure(
    fitted: dict[str, torch.nn.Module],
    image: torch.Tensor,
    protected: torch.Tensor,
    x_target: torch.Tensor,
    config: ProtectConfig,
    attacked: tuple[str, ...],
) -> Protection:
    x, x_p = image[None].float() / 255, protected[None].float() / 255  # (1, C, H, W)
    encoders = {label: _measure_one(m, x, x_p, x_target, config) for label, m in fitted.items()}
    mse = float((x_p - x).double().square().mean())
    linf = int((protected.int() - image.int()).abs().max())
    return Protection(protected, _psnr(mse), linf, encoders, attacked)


def protect(
    model: Encoders,
    images: dict[str, torch.Tensor],
    config: ProtectConfig | None = None,
    target: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    progress: bool = True,
    evaluate_on: Mapping[str, torch.nn.Module] | None = None,
    perturb: Perturb | None = None,
) -> dict[str, Protection]:
    """Protect each image of ``images`` ({name: (C, H, W) uint8}) at its own size, in batches of
    ``config.batch_size`` images of one size, after checking all of them (shapes, mask, every
    encoder on each size) first. ``model``: one VAE or {label: VAE} (attacked together, see
    ``protect_image``); ``evaluate_on``: {label: VAE} measured only; ``perturb``: how a batch is
    protected (``Perturb``; default ``pull``).

    Examples::

        >>> images = read_images("photos/")                 # {"a.jpg": (3, 512, 512) uint8, ...}
        >>> result = protect({"sd": sd_vae, "sdxl": sdxl_vae}, images, ProtectConfig(batch_size=8),
        ...                  evaluate_on={"flux": flux_vae})
        >>> write_protection(result, "protected/")          # a.png, ..., protect.csv, summary.json
    """
    config = config or ProtectConfig()
    attacked, evaluated = as_encoders(model), dict(evaluate_on or {})
    check_encoders(attacked, evaluated)
    check_precision(config.precision, attacked)
    fitted = fit_encoders({**attacked, **evaluated}, images, mask)  # fail before the first long attack
    step = perturb or (lambda models, x, x_target, weight: pull(models, x, x_target, weight, config))
    results: dict[str, Protection] = {}
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "protecting", len(images), interval=0.0)
        for names in batches(images, config.batch_size):
            shape = tuple(images[names[0]].shape)
            weight = _mask_weight(mask, shape, names[0])  # (H, W) or None
            x_target = _target_image(target, shape)  # (1, C, H, W)
            x = torch.stack([images[n] for n in names]).float() / 255  # (B, C, H, W)
            x_adv = step([fitted[shape][label] for label in attacked], x, x_target, weight)  # (B, C, H, W)
            for name, xi in zip(names, x_adv, strict=True):
                protected = _quantise(xi, images[name], config.eps, weight)  # (C, H, W) uint8
                results[name] = _measure(fitted[shape], images[name], protected, x_target, config, tuple(attacked))
                ticker.tick(name)
        ticker.flush()
    return {name: results[name] for name in images}
