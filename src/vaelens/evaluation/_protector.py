"""Amortised protection (docs/method.md section 9): a network trained to protect in one forward pass.

A ``ProtectorNet`` maps an image to its perturbation, within eps by construction. It is trained on
random crops of a directory of images to minimise the mean of the same scale-free objective
``protect`` minimises per image (``EnsembleObjective``, over one or several encoders), in
expectation over the ``--robust`` transforms if any. Applying it costs one forward pass per
batch; ``refine_steps`` continues with that many Auto-PGD steps from its output (``pull``).
Nothing here knows of run directories: ``vaelens.experiments`` saves and resumes the training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vaelens._errors import VaelensError
from vaelens.evaluation._ensemble import EnsembleObjective, Precision, all_frozen, check_precision
from vaelens.evaluation._images import convert_channels
from vaelens.evaluation._protect import GRAY, Perturb, ProtectConfig, check_budget_and_robust, pull
from vaelens.evaluation._transforms import RandomTransform, Robust
from vaelens.models import ProtectorNet


@dataclass(frozen=True)
class ProtectorTrainConfig:
    """Settings of ``protect-train``.

    Arguments:
        eps: the L-inf budget in 8-bit units, built into the network (eps/255 * tanh). Default 8.
        epochs: passes over the images, default 20.
        batch_size: crops per optimiser step, default 16.
        crop: side of the square random crops trained on, default 64 (every image must be at least this).
        crops_per_image: random crops of each image per epoch, default 8.
        lr: Adam's learning rate, default 1e-3.
        width: the network's feature maps at full resolution, default 16.
        robust: transform kinds of the expectation over transformation, as ``protect --robust``.
        eot_samples: transform draws averaged per step when ``robust`` is given, default 1.
        precision: the encoders' forward passes, "fp32" (default), "bf16" or "fp16".
        seed: seeds the network's initial weights, the crops and the transform draws.
    """

    eps: float = 8.0
    epochs: int = 20
    batch_size: int = 16
    crop: int = 64
    crops_per_image: int = 8
    lr: float = 1e-3
    width: int = 16
    robust: tuple[Robust, ...] = ()
    eot_samples: int = 1
    precision: Precision = "fp32"
    seed: int = 0

    def __post_init__(self) -> None:
        check_budget_and_robust(self)
        counts = {"epochs": self.epochs, "batch_size": self.batch_size, "crops_per_image": self.crops_per_image,
                  "width": self.width, "eot_samples": self.eot_samples}  # fmt: skip
        low = [f"{k} {v}" for k, v in counts.items() if v < 1]
        if low or self.crop < 8:
            got = ", ".join(low) or f"crop {self.crop}"
            raise VaelensError(f"epochs, batch_size, crops_per_image, width, eot_samples >= 1 and crop >= 8; got {got}")
        if not 0 < self.lr < 1:
            raise VaelensError(f"lr must lie in (0, 1); got {self.lr:g}")
        check_precision(self.precision, {})


def training_images(images: dict[str, torch.Tensor], crop: int, channels: int) -> list[torch.Tensor]:
    """The images to train on as (C, H, W) uint8 in the encoders' ``channels``; one line if there are
    none or one is smaller than ``crop``."""
    if not images:
        raise VaelensError("no images to train the protector on; pass a directory of images with --images")
    small = [f"{n} ({i.shape[-1]}x{i.shape[-2]})" for n, i in images.items() if min(i.shape[-2:]) < crop]
    if small:
        raise VaelensError(f"{small[0]} is smaller than --crop {crop}; lower --crop or remove the image")
    return [convert_channels(i, channels) for i in images.values()]


def crop_batches(images: Sequence[torch.Tensor], config: ProtectorTrainConfig, epoch: int) -> list[torch.Tensor]:
    """One epoch's batches, (B, C, crop, crop) in [0, 1]: ``crops_per_image`` random crops of each
    image, shuffled, drawn from a generator seeded by (seed, epoch) so a resumed run draws the same."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    crops = []
    for image in images:
        h, w = image.shape[-2:]
        for _ in range(config.crops_per_image):
            top = int(torch.randint(h - config.crop + 1, (), generator=g))
            left = int(torch.randint(w - config.crop + 1, (), generator=g))
            crops.append(image[:, top : top + config.crop, left : left + config.crop])
    order = torch.randperm(len(crops), generator=g).tolist()
    x = torch.stack([crops[i] for i in order]).float() / 255  # (N, C, crop, crop)
    return list(x.split(config.batch_size))


def protector_loss(
    net: ProtectorNet,
    models: Sequence[torch.nn.Module],
    x: torch.Tensor,
    config: ProtectorTrainConfig,
    robust: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The mean over the batch x (B, C, H, W) of the scale-free objective at x + net(x), divided by
    the number of encoders (1: no progress, 0: every code at its target's); under ``robust``, the
    mean over ``eot_samples`` draws."""
    objective = EnsembleObjective(models, x, torch.full_like(x[:1], GRAY), config.precision)
    x_adv = (x + net(x)).clamp(0, 1)  # (B, C, H, W)
    if robust is None:
        value = objective(x_adv)  # (B,)
    else:
        value = torch.stack([objective(robust(x_adv)) for _ in range(config.eot_samples)]).mean(0)  # (B,)
    return value.mean() / len(models)


def train_epoch(
    net: ProtectorNet,
    optimizer: torch.optim.Optimizer,
    models: Sequence[torch.nn.Module],
    images: Sequence[torch.Tensor],
    config: ProtectorTrainConfig,
    epoch: int,
    tick: Callable[[float], None] | None = None,
) -> float:
    """One epoch of Adam on ``protector_loss`` over ``crop_batches``; returns the mean loss. The
    encoders stay frozen; ``tick(loss)`` is called after every step."""
    robust = RandomTransform(config.robust, config.seed * 1_000_003 + epoch) if config.robust else None
    device = next(net.parameters()).device
    net.train()
    losses = []
    with all_frozen(models):
        for x in crop_batches(images, config, epoch):
            loss = protector_loss(net, models, x.to(device), config, robust)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if tick is not None:
                tick(losses[-1])
    net.eval()
    return sum(losses) / len(losses)


@torch.no_grad()
def apply_protector(
    net: ProtectorNet, x: torch.Tensor, weight: torch.Tensor | None = None, eps: float | None = None
) -> torch.Tensor:
    """x (B, C, H, W) in [0, 1] -> x + delta in [0, 1], delta = the network's output scaled to
    ``eps`` (8-bit units, at most the network's own) and weighted per pixel by ``weight`` (H, W).

    A gray image given to a colour protector gets the mean of the three channels' perturbations,
    a colour image given to a gray protector a perturbation per channel: both stay within eps.
    """
    own = net.config.eps
    if eps is not None and eps > own:
        raise VaelensError(f"the protector was trained for eps {own:g}; use --eps {own:g} or less, or train another")
    param = next(net.parameters())
    y = x.to(device=param.device, dtype=param.dtype)  # (B, C, H, W)
    c, wanted = y.shape[1], net.config.channels
    if c == wanted:
        delta = net(y)  # (B, C, H, W)
    elif c == 1:
        delta = net(y.expand(-1, 3, -1, -1)).mean(1, keepdim=True)  # (B, 1, H, W)
    else:
        delta = net(y.reshape(-1, 1, *y.shape[-2:])).reshape(y.shape)  # (B, C, H, W), channel by channel
    delta = delta * ((eps or own) / own)
    if weight is not None:
        delta = delta * weight.to(delta)[None, None]  # (B, C, H, W)
    return (y + delta).clamp(0, 1).to(device=x.device, dtype=x.dtype)


def protector_perturb(net: ProtectorNet, config: ProtectConfig, refine_steps: int = 0) -> Perturb:
    """How ``protect`` protects a batch with a trained protector: one forward pass, then
    ``refine_steps`` Auto-PGD steps from its output if any (``pull``)."""
    if refine_steps < 0:
        raise VaelensError(f"--refine-steps must be >= 0; got {refine_steps}")
    apply_protector(net, torch.zeros(1, net.config.channels, 8, 8), eps=config.eps)  # refuses too large an eps

    def perturb(
        models: Sequence[torch.nn.Module], x: torch.Tensor, x_target: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        x_adv = apply_protector(net, x, weight, config.eps).cpu()  # (B, C, H, W)
        if refine_steps:
            x_adv = pull(models, x, x_target, weight, config, start=x_adv, steps=refine_steps)
        return x_adv

    return perturb
