"""Certified bounds on how far a smoothed VAE's output can move (docs/method.md section 10).

Center smoothing's theorem (Kumar and Goldstein, NeurIPS 2021, Theorem 1 with the 2-approximate
center): with probability at least 1 - alpha over the sampling, for every x' with ||x' - x||_2 <= eps
at which the smoothed model does not abstain, ||f_hat(x') - f_hat(x)||_2 <= (1 + beta) R, beta = 2,
where R is the radius of the smallest ball around f_hat(x) holding at least
Phi(Phi^-1(1/2 + Delta) + eps / sigma) of the base outputs f(x + eta). R is estimated from above by
an order statistic of n samples; the bound is NaN, and the input abstains, where that quantile
exceeds 1 or the center fails its mass check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import NamedTuple

import torch

from vaelens._errors import VaelensError
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import decode, encode, eval_mode, prepare_inputs
from vaelens.certification._smooth import Output, SmoothConfig, SmoothedVAE, smooth

BETA = 2.0  # the sample with the smallest median distance is a 2-approximate minimum enclosing ball


class Certificate(NamedTuple):
    """Per input, the smoothed output and the certified bound on its L2 shift within eps.

    Arguments:
        center: (B, k) latent center, or (B, *input_shape) reconstruction center.
        bound: (B,) for one eps, (B, E) for a sequence of E budgets: the certified upper bound on
            ||f_hat(x + delta) - f_hat(x)||_2 over ||delta||_2 <= eps; NaN where it abstains.
        abstain: bool, the shape of ``bound``.
        clean_distance: (B,) distance between the center and the base model's output at x itself.
        eps, sigma, alpha, output: what was certified; ``delta``, ``n``, ``n0`` the sampling.
    """

    center: torch.Tensor
    bound: torch.Tensor
    abstain: torch.Tensor
    clean_distance: torch.Tensor
    eps: float | tuple[float, ...]
    sigma: float
    alpha: float
    output: Output
    delta: float
    n: int
    n0: int

    @property
    def bound_rms(self) -> torch.Tensor:
        """The bound as an RMS per output coordinate, bound / sqrt(D): per pixel for ``recon``."""
        return self.bound / math.sqrt(self.center[0].numel())


def required_quantile(eps: float, sigma: float, delta: float) -> float:
    """Phi(Phi^-1(1/2 + Delta) + eps / sigma): the mass at x that leaves 1/2 + Delta at any x'
    within eps (the Gaussian shift bound of randomized smoothing)."""
    unit = NormalDist()
    return unit.cdf(unit.inv_cdf(0.5 + delta) + eps / sigma)


def check_eps(eps: float | Sequence[float]) -> tuple[float, ...]:
    values = (eps,) if isinstance(eps, int | float) else tuple(eps)
    if not values:
        raise VaelensError("eps needs at least one budget")
    for e in values:
        if not isinstance(e, int | float) or not math.isfinite(e) or e <= 0:
            raise VaelensError(f"eps (the L2 budget, --eps) must be finite numbers > 0; got {e!r}")
    return tuple(float(e) for e in values)


def bounds_from(distances: torch.Tensor, config: SmoothConfig, eps: tuple[float, ...]) -> torch.Tensor:
    """(B, E) certified bounds, float64, NaN where the quantile exceeds 1, from sorted (B, n) distances."""
    out = torch.full((len(distances), len(eps)), math.nan, dtype=torch.float64)
    for j, e in enumerate(eps):
        q = required_quantile(e, config.sigma, config.delta_used) + config.quantile_margin
        k = math.ceil(q * config.n - 1e-9)  # R-hat: the k-th smallest distance, >= R w.p. 1 - alpha / 2
        if k <= config.n:
            out[:, j] = (1 + BETA) * distances[:, k - 1].double().cpu()
    return out


def certify_smoothed(
    smoothed: SmoothedVAE,
    x: torch.Tensor,
    eps: float | Sequence[float],
    batch_size: int = 32,
    progress: bool = False,
) -> Certificate:
    """Certify a ``SmoothedVAE`` (its own sigma, n, n0, alpha, seed and output) at x; see ``certify``."""
    budgets = check_eps(eps)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise VaelensError(f"batch_size must be a positive integer; got {batch_size!r}")
    x = prepare_inputs(smoothed, x)
    c = smoothed.config
    centers, bounds, abstains, clean = [], [], [], []
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "certifying", len(x))
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            s = smoothed.smooth(xb)
            b = bounds_from(s.distances, c, budgets)  # (b, E)
            b[s.abstain.cpu()] = math.nan
            centers.append(s.center.cpu())
            bounds.append(b)
            abstains.append(b.isnan())
            with torch.no_grad(), eval_mode(smoothed.base):
                mu = encode(smoothed.base, xb).mu
                at_x = mu if c.output == "latent" else decode(smoothed.base, mu).flatten(1)
            clean.append((at_x - s.center).norm(dim=1).double().cpu())
            ticker.tick(steps=len(xb))
        ticker.flush()
    center = torch.cat(centers)
    if c.output == "recon":
        center = center.view(len(x), *x.shape[1:])
    bound, abstain = torch.cat(bounds), torch.cat(abstains)
    scalar = isinstance(eps, int | float)
    return Certificate(
        center, bound[:, 0] if scalar else bound, abstain[:, 0] if scalar else abstain, torch.cat(clean),
        budgets[0] if scalar else budgets, c.sigma, c.alpha, c.output, c.delta_used, c.n, c.n0,
    )  # fmt: skip


def certify(
    vae: torch.nn.Module,
    x: torch.Tensor,
    eps: float | Sequence[float],
    sigma: float,
    n: int = 2000,
    n0: int = 100,
    alpha: float = 0.001,
    output: Output = "latent",
    seed: int = 0,
    chunk_size: int = 4096,
    delta: float | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Certificate:
    """Certify the center-smoothed VAE ``smooth(vae, sigma, ...)`` at each input of x.

    With probability >= 1 - alpha over the sampling, no perturbation of L2 norm <= eps moves the
    smoothed model's output (the latent center, or the reconstruction center) by more than ``bound``,
    wherever the smoothed model answers. It certifies the *smoothed* model, not ``vae`` itself.

    Arguments:
        vae: the base VAE (not already smoothed).
        x: (B, *input_shape) inputs in [0, 1], moved to the model's device and dtype.
        eps: an L2 budget (> 0), or a sequence of budgets certified from the same samples.
        sigma, n, n0, alpha, output, seed, chunk_size, delta: see ``vaelens.certification.SmoothConfig``.
        batch_size: inputs smoothed at once.
        progress: show a progress bar.

    Returns:
        ``Certificate``: ``bound`` and ``abstain`` (B,) for one eps, (B, E) for several.

    Examples::

        >>> cert = vaelens.certify(model, x, eps=[0.1, 0.25], sigma=0.25, n=2000, n0=100)
        >>> cert.bound.shape, cert.abstain.float().mean(0)  # x: (B, 1, 28, 28)
        (torch.Size([B, 2]), tensor([0.0000, 0.0100]))
    """
    if isinstance(vae, SmoothedVAE):
        raise VaelensError("certify takes the base model and smooths it; pass vae.base, or use certify_smoothed")
    return certify_smoothed(
        smooth(vae, sigma, n, n0, alpha, seed, chunk_size, output, delta), x, eps, batch_size, progress
    )
