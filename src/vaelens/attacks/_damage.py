"""How much an attack moved a VAE: divergences, reconstruction changes and input distances."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from vaelens._divergences import gaussian_kl, gaussian_kl_parts, symmetric_kl
from vaelens._errors import VaelensError
from vaelens._protocol import decode, encode, frozen, prepare_inputs
from vaelens._records import PerSample
from vaelens.attacks._base import norms

_MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


@dataclass(frozen=True)
class Damage(PerSample):
    """Per-sample damage, each (B,).

    Arguments:
        kl: KL(q(z|x_adv) || q(z|x)).
        kl_mean, kl_var: its mean-shift (Mahalanobis) and variance (log-det and trace) parts,
            which sum to ``kl`` (docs/method.md section 2.3).
        skl: symmetric KL.
        latent_l2: ||mu(x_adv) - mu(x)||_2.
        recon_shift: MSE between g(mu(x)) and g(mu(x_adv)).
        recon_error: MSE between x and g(mu(x_adv)).
        ms_ssim_recon: MS-SSIM between g(mu(x)) and g(mu(x_adv)) (1 = unchanged).
        prior_logp_drop: log p(mu(x)) - log p(mu(x_adv)) under N(0, I); positive when the attack
            pushed the code to a lower-density region of the latent space.
        l2, linf: input distances ||x_adv - x||.
        no_progress: 1 where the attack returned its input unchanged (it did nothing), else 0;
            the mean over inputs is the share of such samples.
    """

    kl: torch.Tensor
    kl_mean: torch.Tensor
    kl_var: torch.Tensor
    skl: torch.Tensor
    latent_l2: torch.Tensor
    recon_shift: torch.Tensor
    recon_error: torch.Tensor
    ms_ssim_recon: torch.Tensor
    prior_logp_drop: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    no_progress: torch.Tensor

    # the measures a printed summary shows (the input distances are the budget, not damage)
    SHOWN: ClassVar[tuple[str, ...]] = (
        "kl", "skl", "latent_l2", "recon_shift", "recon_error", "ms_ssim_recon", "prior_logp_drop",
    )  # fmt: skip


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per sample between image batches in [0, 1], with as many scales as the size allows.

    A 3x3 window and up to 5 scales: 4 for 28x28 images, 2 for 8x8; plain SSIM (one scale) for
    smaller ones. Videos (B, C, T, H, W) get the mean over their frames; other inputs (flat,
    audio, volumes) and images narrower than the window,
    get NaN, since MS-SSIM needs images.
    """
    if a.dim() == 5:  # a video: frame by frame, averaged
        n, t = a.shape[0], a.shape[2]
        frames = lambda v: v.transpose(1, 2).flatten(0, 1)  # noqa: E731 - (B, C, T, H, W) -> (B*T, C, H, W)
        return ms_ssim(frames(a), frames(b)).view(n, t).mean(1)
    if a.dim() != 4:
        return torch.full((len(a),), float("nan"), dtype=a.dtype)

    side, kernel = min(a.shape[-2:]), 3
    if a.dim() != 4 or side < kernel:
        return torch.full((len(a),), float("nan"), dtype=a.dtype)
    scales = max(1, min(5, int(math.floor(math.log2((side - 1) / (kernel - 1)))) + 1 if side > kernel else 1))
    while scales > 1 and side // (scales - 1) ** 2 <= kernel - 1:  # torchmetrics' bound: 40 px take 4 scales, not 5
        scales -= 1
    # torchmetrics pulls scipy.signal and matplotlib: seconds at start-up, so imported on first use
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    betas = _MS_SSIM_BETAS[:scales]
    betas = tuple(beta / sum(betas) for beta in betas)
    return multiscale_structural_similarity_index_measure(
        a.float(),
        b.float(),
        gaussian_kernel=False,
        kernel_size=kernel,
        betas=betas,
        data_range=1.0,
        reduction="none",
        normalize="relu",
    ).to(a.dtype)


@torch.no_grad()
def attack_damage(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> Damage:
    """Measure what x_adv did to the model's encoding and reconstruction of x.

    Arguments:
        model: a VAE.
        x: (B, *input_shape) clean inputs in [0, 1].
        x_adv: (B, *input_shape) perturbed inputs in [0, 1].
    """
    x = prepare_inputs(model, x)
    x_adv = prepare_inputs(model, x_adv, "x_adv")
    if x.shape != x_adv.shape:
        raise VaelensError(f"x_adv must have the shape of x {tuple(x.shape)}; got {tuple(x_adv.shape)}")
    with frozen(model):
        mu, logvar = encode(model, x)
        mu_a, logvar_a = encode(model, x_adv)
        recon, recon_a = decode(model, mu), decode(model, mu_a)
    mse = lambda p, q: (p - q).square().flatten(1).mean(1)  # noqa: E731
    log_prior = lambda m: -0.5 * m.square().sum(1)  # noqa: E731 - constants cancel in the drop
    delta = x_adv - x
    parts = gaussian_kl_parts(mu_a, logvar_a, mu, logvar)
    return Damage(
        kl=gaussian_kl(mu_a, logvar_a, mu, logvar).cpu(),
        kl_mean=parts.mean.cpu(),
        kl_var=parts.variance.cpu(),
        skl=symmetric_kl(mu_a, logvar_a, mu, logvar).cpu(),
        latent_l2=(mu_a - mu).norm(dim=1).cpu(),
        recon_shift=mse(recon_a, recon).cpu(),
        recon_error=mse(recon_a, x).cpu(),
        ms_ssim_recon=ms_ssim(recon, recon_a).cpu(),
        prior_logp_drop=(log_prior(mu) - log_prior(mu_a)).cpu(),
        l2=norms(delta, "l2").cpu(),
        linf=norms(delta, "linf").cpu(),
        no_progress=(norms(delta, "linf") == 0).to(delta.dtype).cpu(),
    )
