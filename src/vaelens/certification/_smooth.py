"""Center smoothing of a VAE (Kumar and Goldstein, NeurIPS 2021; docs/method.md section 10).

The smoothed encoder maps x to the *center* of the base model's outputs f(x + eta), eta ~ N(0,
sigma^2 I): of ``n0`` candidate samples, the one with the smallest median distance to ``n`` further
samples. The noise is common random numbers: every input sees the same draws, fixed by the seed, so
the smoothed model is a deterministic function of x that attacks can differentiate (almost
everywhere it is the base model at x + eta_j for the chosen j). Sampling is batched over inputs and
chunked over samples (``chunk_size`` base-model rows per forward pass).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Posterior, decode, encode, eval_mode, prepare_inputs

Output = Literal["latent", "recon"]
OUTPUTS: tuple[Output, ...] = ("latent", "recon")
BLOCK = 256  # noise rows per seeded block: the draws do not depend on chunk_size or the batch
BLOCK_NUMBERS = 1 << 22  # ... and fewer rows for large images, so a block stays under 16 MiB in float32
_CANDIDATES, _MEDIANS, _ESTIMATE = 0, 1, 2  # the three independent noise streams


@dataclass(frozen=True)
class SmoothConfig:
    """Settings of a center-smoothed VAE, checked on construction.

    Arguments:
        sigma: standard deviation of the Gaussian input noise (> 0), in units of [0, 1] pixels.
        n: samples for the medians, the mass check and the certificate's quantile (> n0).
        n0: candidate centers (>= 1).
        alpha: total failure probability of a certificate, in (0, 1): alpha / 2 for the center's
            conditions, alpha / 2 for the quantile.
        delta: the paper's Delta, in (0, 1/2); None picks the smallest one the sample sizes support
            plus a margin of four standard errors (``auto_delta``).
        output: the space the center is chosen in: "latent" (encoder mean, L2) or "recon" (the
            decoded mean, L2 over pixels).
        seed: seeds the noise.
        chunk_size: base-model rows per forward pass (bounds memory).
    """

    sigma: float
    n: int = 2000
    n0: int = 100
    alpha: float = 0.001
    delta: float | None = None
    output: Output = "latent"
    seed: int = 0
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.sigma, int | float) or not math.isfinite(self.sigma) or self.sigma <= 0:
            raise VaelensError(f"sigma (the smoothing noise, --sigma) must be a finite number > 0; got {self.sigma!r}")
        for name in ("n", "n0", "chunk_size", "seed"):
            if not isinstance(getattr(self, name), int) or isinstance(getattr(self, name), bool):
                raise VaelensError(f"{name} must be an integer; got {getattr(self, name)!r}")
        if self.n < 2:
            raise VaelensError(f"n (noise samples, --n) must be >= 2; got {self.n}")
        if self.n0 < 1 or self.chunk_size < 1:
            raise VaelensError(f"n0 and chunk_size must be >= 1; got n0={self.n0}, chunk_size={self.chunk_size}")
        if self.n0 >= self.n:
            raise VaelensError(
                f"n0 (candidate centers, --n0) must be smaller than n (samples, --n); got n0={self.n0}, n={self.n}"
            )
        if not isinstance(self.alpha, int | float) or not 0 < self.alpha < 1:
            raise VaelensError(f"alpha (failure probability, --alpha) must lie in (0, 1); got {self.alpha!r}")
        if self.output not in OUTPUTS:
            raise VaelensError(
                f"output (--output) must be one of {', '.join(OUTPUTS)}, comma-separated; got {self.output!r}"
            )
        if self.delta is not None:
            if not isinstance(self.delta, int | float) or not 0 < self.delta < 0.5:
                raise VaelensError(f"delta must lie in (0, 1/2); got {self.delta!r}")
            least = center_delta(self.n, self.n0, self.alpha)
            if self.delta < least:
                raise VaelensError(
                    f"delta={self.delta:g} is too small for n={self.n}, n0={self.n0}, alpha={self.alpha:g}: the "
                    f"center's guarantee needs delta >= {least:.4g}; raise delta or n"
                )
        elif self.delta_used >= 0.5:
            raise VaelensError(f"n={self.n} samples are too few for alpha={self.alpha:g}; raise n (e.g. --n 2000)")

    @property
    def delta_used(self) -> float:
        """Delta: as given, or ``auto_delta``."""
        return self.delta if self.delta is not None else auto_delta(self.n, self.n0, self.alpha)

    @property
    def mass_margin(self) -> float:
        """Hoeffding's margin on the mass inside the center's ball, at failure probability alpha / 4."""
        return hoeffding(self.n, self.alpha / 4)

    @property
    def quantile_margin(self) -> float:
        """Hoeffding's margin on the certificate's quantile, at failure probability alpha / 2."""
        return hoeffding(self.n, self.alpha / 2)


def hoeffding(n: int, failure: float) -> float:
    """t such that a mean of n Bernoulli draws falls t below its expectation with probability <= failure."""
    return math.sqrt(math.log(1 / failure) / (2 * n))


def center_delta(n: int, n0: int, alpha: float) -> float:
    """The smallest Delta for which the chosen center is a 2-approximate center with probability
    >= 1 - alpha / 4: some candidate lands in the smallest ball of mass 1/2 + Delta, (1/2 - Delta)^n0,
    and at least half the n median samples land in it, exp(-2 n Delta^2) (bisection)."""

    def failure(d: float) -> float:
        return (0.5 - d) ** n0 + math.exp(-2 * n * d * d)

    lo, hi = 0.0, 0.5
    if failure(hi - 1e-12) > alpha / 4:
        return 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if failure(mid) > alpha / 4 else (lo, mid)
    return hi


def auto_delta(n: int, n0: int, alpha: float) -> float:
    """The default Delta: what the center's guarantee and the mass check need, plus four standard
    errors of a median (2 / sqrt(n)), so that a well-behaved input passes the check."""
    return max(center_delta(n, n0, alpha), hoeffding(n, alpha / 4)) + 2 / math.sqrt(n)


class Selection(NamedTuple):
    """The center per input: which candidate (B,), its output (B, D), its median distance (B,) and
    the noise that produced it (B, *input_shape)."""

    chosen: torch.Tensor
    center: torch.Tensor
    radius: torch.Tensor
    noise: torch.Tensor


class Smoothed(NamedTuple):
    """The smoothed output at a batch, with what the certificate needs.

    Arguments:
        center: (B, D) the center (D = k for latent, pixels for recon).
        radius: (B,) its median distance to the median samples, r-hat.
        mass: (B,) fraction of the estimation samples within ``radius`` of the center.
        abstain: (B,) the paper's condition failed: too little mass inside the ball.
        distances: (B, n) distances of the estimation samples to the center, sorted.
    """

    center: torch.Tensor
    radius: torch.Tensor
    mass: torch.Tensor
    abstain: torch.Tensor
    distances: torch.Tensor


class SmoothedVAE(torch.nn.Module):
    """A VAE whose encoding is the center-smoothed base encoding (follows the VAE protocol).

    ``encode(x)`` returns the base posterior at x + eta_j, the chosen noisy copy of x, so its mean is
    the latent center (``output="latent"``) or the code whose decoding is the reconstruction center
    (``output="recon"``); ``decode`` is the base decoder. The selection runs without gradients and
    the chosen copy is encoded again with them, so attacks differentiate the smoothed model at the
    cost of one base forward pass besides the sampling.
    """

    def __init__(self, base: torch.nn.Module, config: SmoothConfig) -> None:
        super().__init__()
        if isinstance(base, SmoothedVAE):
            raise VaelensError("the model is already smoothed; smooth its base instead")
        if not hasattr(base, "encode") or not hasattr(base, "decode"):
            raise VaelensError(f"{type(base).__name__} is not a VAE: it needs encode(x) and decode(z) methods")
        self.base, self.config = base, config
        self.name = f"smooth({getattr(base, 'name', type(base).__name__)}, sigma={config.sigma:g})"
        for attr in ("input_shape", "input_channels", "size_multiple", "deterministic"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))

    @property
    def geometry_base(self) -> torch.nn.Module:
        """The base model: its Jacobian stands in for directions (``vaelens._protocol.geometry_base``)."""
        return self.base

    def encode(self, x: torch.Tensor) -> Posterior:
        """x (B, *input_shape) -> Posterior(mu, logvar) of the base at the chosen noisy copy, (B, k)."""
        with eval_mode(self.base):
            chosen = self.select(x)
            return encode(self.base, x + chosen.noise)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode(self.base, z)

    def _output(self, inputs: torch.Tensor) -> torch.Tensor:
        """The base function being smoothed: (R, *input_shape) -> (R, D)."""
        mu = encode(self.base, inputs).mu  # (R, k)
        return mu if self.config.output == "latent" else decode(self.base, mu).flatten(1)

    @staticmethod
    def _block_rows(like: torch.Tensor) -> int:
        """Rows per seeded noise block for this input shape (fixed by the shape alone)."""
        return max(1, min(BLOCK, BLOCK_NUMBERS // like[0].numel()))

    def _noise(self, stream: int, block: int, rows: int, like: torch.Tensor) -> torch.Tensor:
        """Noise rows (rows, *input_shape) of one seeded block, times sigma."""
        digest = hashlib.blake2b(f"{self.config.seed}/{stream}/{block}".encode(), digest_size=8).digest()
        gen = torch.Generator(device=like.device).manual_seed(int.from_bytes(digest, "little") >> 1)
        eta = torch.randn(
            (self._block_rows(like), *like.shape[1:]), generator=gen, device=like.device, dtype=like.dtype
        )
        return eta[:rows] * self.config.sigma

    def _blocks(self, x: torch.Tensor, stream: int, total: int) -> Any:
        """Yield (start, noise (r, *s), outputs (B, r, D)) over the stream's first ``total`` rows."""
        size = self._block_rows(x)
        for start in range(0, total, size):
            rows = min(size, total - start)
            eta = self._noise(stream, start // size, rows, x)  # (r, *s)
            yield start, eta, self._evaluate(x, eta)

    def _evaluate(self, x: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """f(x_b + eta_r) for every input and noise row, (B, r, D), at most ``chunk_size`` rows per
        pass; the noisy copies are made by broadcasting, a group of inputs by a run of noise rows."""
        span = min(len(eta), self.config.chunk_size)  # noise rows per pass
        group = max(1, self.config.chunk_size // span)  # inputs per pass
        out: torch.Tensor | None = None
        for i in range(0, len(x), group):
            for r in range(0, len(eta), span):
                noisy = x[i : i + group, None] + eta[None, r : r + span]  # (g, s, *input_shape)
                values = self._output(noisy.flatten(0, 1)).view(noisy.shape[0], noisy.shape[1], -1)  # (g, s, D)
                if out is None:
                    out = values.new_empty(len(x), len(eta), values.shape[-1])
                out[i : i + group, r : r + span] = values
        assert out is not None
        return out

    @torch.no_grad()
    def select(self, x: torch.Tensor) -> Selection:
        """The center of each input: the candidate with the smallest median distance (lower median,
        the ceil(n/2)-th smallest) to the median samples."""
        c = self.config
        x = x.detach()
        cand, noise = [], []
        for _, eta, out in self._blocks(x, _CANDIDATES, c.n0):
            cand.append(out)
            noise.append(eta)
        candidates = torch.cat(cand, dim=1)  # (B, n0, D)
        candidate_noise = torch.cat(noise)  # (n0, *s)
        square = torch.empty(len(x), c.n0, c.n, dtype=candidates.dtype, device=x.device)
        norms = candidates.square().sum(-1, keepdim=True)  # (B, n0, 1)
        for start, _, out in self._blocks(x, _MEDIANS, c.n):
            # squared distances ||c||^2 + ||s||^2 - 2 c.s, (B, n0, r): the order, hence the median, is the same
            block = torch.baddbmm(norms, candidates, out.transpose(1, 2), alpha=-2)
            square[:, :, start : start + out.shape[1]] = block.add_(out.square().sum(-1)[:, None]).clamp_min_(0)
        medians = square.kthvalue(math.ceil(c.n / 2), dim=2).values  # (B, n0)
        radius, index = medians.min(dim=1)  # (B,)
        rows = torch.arange(len(x), device=x.device)
        return Selection(index, candidates[rows, index], radius.sqrt(), candidate_noise[index])

    @torch.no_grad()
    def smooth(self, x: torch.Tensor) -> Smoothed:
        """The center of each input of x (B, *input_shape), its radius, the mass check and the
        sorted distances of the n estimation samples (the stream the certificate uses)."""
        x = prepare_inputs(self, x)
        with eval_mode(self.base):
            chosen = self.select(x)
            dist = torch.empty(len(x), self.config.n, dtype=chosen.center.dtype, device=x.device)
            for start, _, out in self._blocks(x, _ESTIMATE, self.config.n):
                dist[:, start : start + out.shape[1]] = (out - chosen.center[:, None]).norm(dim=2)  # (B, r)
        mass = (dist <= chosen.radius[:, None]).to(dist.dtype).mean(dim=1)  # (B,)
        # Delta_2 = 1/2 - (mass - margin) must not exceed Delta (Kumar and Goldstein, the Smooth procedure)
        abstain = mass - self.config.mass_margin < 0.5 - self.config.delta_used
        return Smoothed(chosen.center, chosen.radius, mass, abstain, dist.sort(dim=1).values)


def smooth(
    vae: torch.nn.Module,
    sigma: float,
    n: int = 2000,
    n0: int = 100,
    alpha: float = 0.001,
    seed: int = 0,
    chunk_size: int = 4096,
    output: Output = "latent",
    delta: float | None = None,
) -> SmoothedVAE:
    """The center-smoothed VAE: a defence that can be attacked, compared and certified.

    Arguments:
        vae: any VAE (``encode``/``decode``); it is wrapped, not copied.
        sigma: Gaussian input noise (> 0).
        n, n0, alpha, delta, seed, chunk_size, output: see ``SmoothConfig``.

    Returns:
        A ``SmoothedVAE``: ``encode(x)`` (B, *input_shape) -> (mu, logvar) (B, k), where mu is the
        latent center; ``decode`` is the base decoder; ``smooth(x)`` adds radius and abstention.
        It has no Jacobian of its own: audits refuse it, EigenAttack takes the base's directions.

    Examples::

        >>> smoothed = vaelens.smooth(model, sigma=0.25, n=2000, n0=100, seed=0)
        >>> mu, logvar = smoothed.encode(x)                 # x: (B, 1, 28, 28) -> (B, k), (B, k)
        >>> x_adv = vaelens.attacks.APGD(smoothed, eps=0.5, objective="latent")(x)
    """
    return SmoothedVAE(vae, SmoothConfig(sigma, n, n0, alpha, delta, cast(Output, output), seed, chunk_size))
