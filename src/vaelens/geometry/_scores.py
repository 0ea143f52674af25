"""Per-input robustness scores from the spectrum of G(x) (docs/method.md section 4).

All scores are finite and never NaN, including for all-zero, tiny or rank-1 spectra: eigenvalues
at or below ``rtol * lambda_1`` count as zero, and 0 log 0 is taken as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from vaelens._errors import VaelensError
from vaelens._records import PerSample
from vaelens.geometry._metric import Spectrum

Normalization = Literal["trace", "max"]
NORMALIZATIONS: tuple[Normalization, ...] = ("trace", "max")


@dataclass(frozen=True)
class Scores(PerSample):
    """Robustness scores, each a (B,) tensor.

    Arguments:
        spectral_radius: lambda_1, the worst-case local sensitivity; lower is more robust.
        von_neumann_entropy: S of the normalised spectrum; low S means one direction dominates.
        trace: sum of eigenvalues, the squared Frobenius norm of the (weighted) Jacobian.
        log_pdet: log pseudo-determinant, the sum of log lambda over the nonzero spectrum
            (0 for an all-zero spectrum: the empty product is 1).
        condition_number: lambda_1 / smallest nonzero lambda (1 for an all-zero spectrum).
        effective_rank: exp of the trace-normalised entropy, between 1 and the rank.
        von_neumann_entropy_max: the entropy as the authors' released code defines it
            (s_i = lambda_i / lambda_1), always computed so results can be set beside theirs.
    """

    spectral_radius: torch.Tensor
    von_neumann_entropy: torch.Tensor
    trace: torch.Tensor
    log_pdet: torch.Tensor
    condition_number: torch.Tensor
    effective_rank: torch.Tensor
    von_neumann_entropy_max: torch.Tensor


def _safe_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b where b > 0, else 0; exact for subnormal b (no clamping to the smallest normal)."""
    positive = b > 0
    return torch.where(positive, a / torch.where(positive, b, torch.ones_like(b)), torch.zeros_like(a))


def _entropy(weights: torch.Tensor) -> torch.Tensor:
    """-sum w log w over the last axis, with 0 log 0 = 0."""
    return -torch.special.xlogy(weights, weights).sum(-1)


def robustness_scores(
    spectrum: Spectrum | torch.Tensor, normalize: Normalization = "trace", rtol: float | None = None
) -> Scores:
    """Scores from a spectrum (or a (B, r) tensor of eigenvalues, descending).

    Arguments:
        spectrum: a ``Spectrum`` or its values (B, r), largest first.
        normalize: "trace" (p_i = lambda_i / tr G, S in [0, log r]) or "max" (the authors'
            released variant, s_i = lambda_i / lambda_1).
        rtol: eigenvalues <= rtol * lambda_1 count as zero (default: 10 * r * machine epsilon).

    Returns:
        ``Scores`` with one value per input: each field is a (B,) tensor.

    Examples::

        >>> G = vaelens.pullback_metric(model, x, "stochastic")  # x: (B, 1, 28, 28), latent k = 16
        >>> scores = vaelens.robustness_scores(G.eigenvalues())  # eigenvalues: (B, 32)
        >>> scores.spectral_radius.shape, scores.von_neumann_entropy.shape
        (torch.Size([B]), torch.Size([B]))
        >>> scores.summary()["spectral_radius"]["median"]  # numpy's median over the batch
    """
    if normalize not in NORMALIZATIONS:
        raise VaelensError(f"normalize must be one of {NORMALIZATIONS}; got {normalize!r}")
    values = spectrum.values if isinstance(spectrum, Spectrum) else spectrum
    if values.dim() != 2 or values.shape[1] == 0:
        raise VaelensError(f"eigenvalues must have shape (B, r) with r >= 1; got {tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise VaelensError("eigenvalues contain NaN or Inf; check the model's outputs")
    values = values.clamp_min(0).sort(dim=1, descending=True).values
    if rtol is None:
        rtol = 10 * values.shape[1] * torch.finfo(values.dtype).eps
    top = values[:, 0]  # (B,)
    nonzero = values > (rtol * top).unsqueeze(1)  # (B, r)
    lam = torch.where(nonzero, values, torch.zeros_like(values))
    trace = lam.sum(1)
    p = _safe_div(lam, trace.unsqueeze(1))
    s_trace = _entropy(p)
    s_max = _entropy(_safe_div(lam, top.unsqueeze(1)))
    s = s_trace if normalize == "trace" else s_max
    log_pdet = torch.where(nonzero, torch.where(nonzero, lam, torch.ones_like(lam)).log(), torch.zeros_like(lam)).sum(1)
    smallest = torch.where(nonzero, lam, torch.full_like(lam, float("inf"))).min(1).values
    cond = torch.where(nonzero.any(1), _safe_div(top, smallest), torch.ones_like(top))
    return Scores(top, s, trace, log_pdet, cond, s_trace.exp(), s_max)
