"""The eigen-direction probe (docs/method.md section 5): how fast reconstructions degrade along the
top eigen-directions of G(x), against a random direction of the same norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Kind, decode, encode, eval_mode, prepare_inputs
from vaelens.geometry import Spectrum, check_kind, pullback_metric

Scale = Literal["lambda", "unit"]
SCALES: tuple[Scale, ...] = ("lambda", "unit")


@dataclass(frozen=True)
class ProbeResult:
    """Reconstruction error along eigen-directions.

    Arguments:
        steps: (T,) step sizes t.
        mse: (B, R, T) MSE(x, g(mu(x + t s_j v_j))) for the top R directions.
        random_mse: (B, T) the same along a random unit direction scaled like v_1.
        eigenvalues: (B, R) lambda_j of the probed directions.
        kind: the metric kind whose eigenvectors were probed.
        scale: "lambda" (s_j = lambda_j, the released code) or "unit" (s_j = 1).
    """

    steps: torch.Tensor
    mse: torch.Tensor
    random_mse: torch.Tensor
    eigenvalues: torch.Tensor
    kind: Kind
    scale: Scale

    def rows(self) -> list[dict[str, float | str]]:
        """Long-format rows (direction, t, mean, median MSE over inputs) for CSV."""
        out = []
        curves = [(f"v{j + 1}", self.mse[:, j]) for j in range(self.mse.shape[1])]
        for name, curve in [*curves, ("random", self.random_mse)]:
            for i, t in enumerate(self.steps.tolist()):
                out.append(
                    {
                        "direction": name,
                        "t": t,
                        "mse_mean": curve[:, i].mean().item(),
                        "mse_median": float(np.median(curve[:, i].double().numpy())),
                    }
                )
        return out


@torch.no_grad()
def _recon_mse(model: torch.nn.Module, x: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """MSE(x, g(mu(x_t))) per row: x (B, *s), x_t (B, T, *s) -> (B, T)."""
    b, t = x_t.shape[:2]
    recon = decode(model, encode(model, x_t.flatten(0, 1)).mu).view(b, t, *x.shape[1:])  # (B*T, *s) -> (B, T, *s)
    return (recon - x.unsqueeze(1)).square().flatten(2).mean(2)


def eigen_probe(
    model: torch.nn.Module,
    x: torch.Tensor,
    kind: Kind = "stochastic",
    directions: int = 5,
    steps: torch.Tensor | None = None,
    scale: Scale = "lambda",
    seed: int = 0,
    spectrum: Spectrum | None = None,
) -> ProbeResult:
    """Perturb x along its top eigen-directions and a random one; record reconstruction error.

    x_t = x + t * s_j * v_j for t in ``steps`` (default logspace(-1, 1, 40)). Inputs are not clipped
    to [0, 1]: the probe measures the map's geometry, as in the released code.

    Arguments:
        model: a VAE.
        x: (B, *input_shape) in [0, 1].
        kind: metric kind whose eigenvectors are probed.
        directions: number R of top directions probed.
        steps: (T,) step sizes.
        scale: "lambda" (s_j = lambda_j, as released) or "unit" (s_j = 1).
        seed: seeds the random direction.
        spectrum: a precomputed ``Spectrum`` of x, of this ``kind``, with at least R vectors
            (saves recomputing it). A spectrum of another kind is refused.

    Returns:
        ``ProbeResult`` with mse (B, R, T) and random_mse (B, T).

    Examples::

        >>> probe = eigen_probe(model, x[:100], "stochastic", directions=5)  # x: (N, 1, 28, 28)
        >>> probe.mse.shape, probe.random_mse.shape
        (torch.Size([100, 5, 40]), torch.Size([100, 40]))
    """
    if scale not in SCALES:
        raise VaelensError(f"scale must be one of {SCALES}; got {scale!r}")
    check_kind(kind)
    if spectrum is not None and spectrum.kind != kind:
        raise VaelensError(
            f"the spectrum given is of the {spectrum.kind} metric but kind={kind!r}; pass a matching kind or spectrum"
        )
    if not isinstance(directions, int) or directions < 1:
        raise VaelensError(f"directions must be a positive integer; got {directions!r}")
    k = directions
    x = prepare_inputs(model, x)
    if steps is None:
        steps = torch.logspace(-1, 1, 40)
    steps = torch.as_tensor(steps, dtype=x.dtype, device=x.device)
    if steps.dim() != 1 or len(steps) == 0 or not torch.isfinite(steps).all():
        raise VaelensError("steps must be a non-empty 1-d tensor of finite step sizes")
    if spectrum is None or spectrum.vectors is None or spectrum.vectors.shape[1] < k:
        spectrum = pullback_metric(model, x, kind).eigen(k)
    values, vectors = spectrum.values[:, :k].to(x), spectrum.require_vectors()[:, :k].to(x)  # (B, K), (B, K, *s)
    s = values if scale == "lambda" else torch.ones_like(values)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    r = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    r = r / r.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))  # (B, *s) unit
    view = (len(x), len(steps), *[1] * (x.dim() - 1))
    with eval_mode(model):
        mse = torch.stack(
            [
                _recon_mse(model, x, x.unsqueeze(1) + (steps * s[:, j : j + 1]).view(view) * vectors[:, j : j + 1])
                for j in range(k)
            ],
            dim=1,
        )  # (B, K, T)
        random_mse = _recon_mse(model, x, x.unsqueeze(1) + (steps * s[:, :1]).view(view) * r.unsqueeze(1))
    return ProbeResult(steps.cpu(), mse.cpu(), random_mse.cpu(), values.cpu(), kind, scale)
