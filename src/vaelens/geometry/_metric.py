"""The pullback metric tensor G(x) and its exact or matrix-free eigenspectrum (docs/method.md section 3).

Every kind factors as G = L^T L with a thin factor L (m x d, m = k or 2k, much smaller than d):

| kind              | L                                                  |
| ----------------- | -------------------------------------------------- |
| mean              | J_mu                                               |
| stochastic        | [J_mu; J_sigma]                                    |
| fisher            | [J_mu / sigma; sqrt(2) J_sigma / sigma]            |
| output            | A^(1/2) J_mu,  A = J_g^T J_g at mu                 |
| output-stochastic | [A^(1/2) J_mu; sqrt(diag A) J_sigma]               |

The nonzero eigenvalues of G are those of the m x m Gram matrix L L^T = U diag(lambda) U^T and the
eigenvectors are L^T u / sqrt(lambda), so no d x d matrix is ever formed. ``matvec`` and ``lanczos``
never form L either: G v = J^T W J v costs one JVP and one VJP.
"""

from __future__ import annotations

import math
import typing
import warnings
from dataclasses import dataclass
from typing import Literal, cast

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Kind, check_finite, prepare_inputs, require_jacobian, require_variance
from vaelens.geometry._jacobian import (
    DecoderLinearization,
    EncoderJacobians,
    EncoderLinearization,
    decoder_jacobian,
    encoder_jacobians,
    latent_size,
)

KINDS: tuple[Kind, ...] = typing.get_args(Kind)  # the Literal's names, in its order
Method = Literal["auto", "exact", "lanczos"]
METHODS: tuple[Method, ...] = ("auto", "exact", "lanczos")
DEFAULT_MEMORY_BUDGET_GB = 2.0  # what the exact path may use before "auto" switches to Lanczos
_EXACT_OVERHEAD = 3  # the factor, the Gram product's workspace and the batched Jacobian's buffers
_noted: set[tuple[str, tuple[int, ...], str]] = set()


def check_kind(kind: str) -> Kind:
    """A metric kind name, checked: one of ``KINDS``. The one place the kinds are checked."""
    return metric_kind(kind).name


def metric_kind(kind: str) -> MetricKind:
    """The object behind a kind's name; an unknown name is a one-line error naming the choices."""
    if kind not in _BY_NAME:
        raise VaelensError(f"unknown metric kind {kind!r}; choose one of {', '.join(KINDS)}")
    return _BY_NAME[cast(Kind, kind)]


def check_method(method: str) -> Method:
    """A spectrum method name, checked: "auto", "exact" or "lanczos"."""
    if method not in METHODS:
        raise VaelensError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return cast(Method, method)


# -- the kinds: one small object each, knowing its factor rows and its product ---------------------
class MetricKind:
    """One metric kind (docs/method.md section 3): how its thin factor L and its product G v are
    built from the encoder's (and, for the output kinds, the decoder's) linearisation.

    A subclass sets ``name``, ``needs_variance`` (it reads sigma, so a deterministic encoder has
    none) and ``blocks`` (rows of L per latent dimension: 1 or 2), and writes ``factor`` and
    ``matvec``; ``PullbackMetric`` asks it and never looks at the name.
    """

    name: Kind
    needs_variance = True
    blocks = 2

    def factor(self, metric: PullbackMetric, jac: EncoderJacobians) -> torch.Tensor:
        """L (B, m, d) from the encoder Jacobians at the metric's inputs."""
        raise NotImplementedError

    def matvec(self, metric: PullbackMetric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """G v (B, *s) from J_mu v = a and J_sigma v = b, each (B, k), through the metric's linearisations."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"MetricKind({self.name!r})"


class _Mean(MetricKind):
    name, needs_variance, blocks = "mean", False, 1

    def factor(self, metric: PullbackMetric, jac: EncoderJacobians) -> torch.Tensor:
        return jac.jac_mu  # (B, k, d)

    def matvec(self, metric: PullbackMetric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return metric.encoder.vjp(a, torch.zeros_like(b))


class _Stochastic(MetricKind):
    name = "stochastic"

    def factor(self, metric: PullbackMetric, jac: EncoderJacobians) -> torch.Tensor:
        return jac.jac  # (B, 2k, d)

    def matvec(self, metric: PullbackMetric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return metric.encoder.vjp(a, b)


class _Fisher(MetricKind):
    name = "fisher"

    def factor(self, metric: PullbackMetric, jac: EncoderJacobians) -> torch.Tensor:
        weights = torch.cat([1.0 / jac.sigma, math.sqrt(2.0) / jac.sigma], dim=1)  # (B, 2k)
        return jac.jac * weights.unsqueeze(-1)  # (B, 2k, d)

    def matvec(self, metric: PullbackMetric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s2 = metric.encoder.sigma.square()  # (B, k)
        return metric.encoder.vjp(a / s2, 2.0 * b / s2)


class _Output(MetricKind):
    name, needs_variance, blocks = "output", False, 1

    def factor(self, metric: PullbackMetric, jac: EncoderJacobians) -> torch.Tensor:
        return _sqrt_psd(metric.decoder_gram(jac.mu)) @ jac.jac_mu  # (B, k, d)

    def matvec(self, metric: PullbackMetric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return metric.encoder.vjp(metric.decoder_product(a), torch.zeros_like(b))


class _OutputStochastic(MetricKind):
    name = "output-stochastic"

    def factor(self, metric: PullbackMetric, jac: EncoderJacobians) -> torch.Tensor:
        a = metric.decoder_gram(jac.mu)  # (B, k, k)
        sigma_rows = a.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt().unsqueeze(-1) * jac.jac_sigma  # (B, k, d)
        return torch.cat([_sqrt_psd(a) @ jac.jac_mu, sigma_rows], dim=1)  # (B, 2k, d)

    def matvec(self, metric: PullbackMetric, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return metric.encoder.vjp(metric.decoder_product(a), metric.decoder_diagonal() * b)


_OBJECTS = (_Mean(), _Stochastic(), _Fisher(), _Output(), _OutputStochastic())
_BY_NAME: dict[Kind, MetricKind] = {k.name: k for k in _OBJECTS}
assert tuple(_BY_NAME) == KINDS, "one object per name of the Kind Literal, in its order"


class LanczosNotice(UserWarning):
    """``method="auto"`` chose Lanczos because the exact path would exceed the memory budget."""


@dataclass(frozen=True)
class Spectrum:
    """Eigenpairs of G(x) per sample, largest first.

    Arguments:
        values: (B, r) eigenvalues, descending, clamped at 0.
        vectors: (B, r, *input_shape) unit eigenvectors, or None when only values were computed.
        kind: the metric kind they belong to.
    """

    values: torch.Tensor
    vectors: torch.Tensor | None
    kind: Kind

    def require_vectors(self) -> torch.Tensor:
        """The eigenvectors (B, r, *input_shape); an error when only eigenvalues were computed."""
        if self.vectors is None:
            raise VaelensError("this spectrum holds eigenvalues only; compute it with .eigen() to get eigenvectors")
        return self.vectors

    def top(self, r: int) -> Spectrum:
        """The r largest eigenpairs."""
        vectors = None if self.vectors is None else self.vectors[:, :r]
        return Spectrum(self.values[:, :r], vectors, self.kind)


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a batch of PSD matrices (B, k, k)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt().unsqueeze(-2)) @ v.transpose(-1, -2)


def _canonical_sign(u: torch.Tensor) -> torch.Tensor:
    """Flip each column of u (B, m, r) so that its largest-magnitude entry is positive.

    Eigenvectors are defined up to sign; fixing it in the small m-dimensional space makes results
    reproducible without a pass over the d-dimensional vectors.
    """
    idx = u.abs().argmax(dim=1, keepdim=True)  # (B, 1, r)
    sign = torch.gather(u, 1, idx).sign()
    return u * torch.where(sign == 0, torch.ones_like(sign), sign)


class PullbackMetric:
    """G(x) for a batch of inputs, lazy and low-rank. Build it with ``vaelens.pullback_metric``.

    Nothing is computed on construction. The thin factor L is computed on first use by ``eigen``,
    ``eigenvalues`` or ``dense`` and then cached; ``matvec`` and ``lanczos`` never form it.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        kind: Kind,
        chunk_size: int | None,
        memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
    ) -> None:
        self.ops = metric_kind(kind)
        require_jacobian(model, "the pullback metric")
        if self.ops.needs_variance:
            require_variance(model, f"the {kind} metric")
        if chunk_size is not None and chunk_size < 1:
            raise VaelensError(f"chunk_size must be a positive integer or None; got {chunk_size}")
        if not memory_budget_gb > 0:
            raise VaelensError(f"memory_budget_gb must be > 0; got {memory_budget_gb!r}")
        self.model, self.kind, self.chunk_size, self.memory_budget_gb = model, kind, chunk_size, memory_budget_gb
        self.x = prepare_inputs(model, x)
        self.input_shape = tuple(self.x.shape[1:])
        self.dim = math.prod(self.input_shape)
        self._factor: torch.Tensor | None = None
        self._encoder_lin: EncoderLinearization | None = None
        self._k: int | None = None  # the latent size, read off one sample
        self._decoder_lin: DecoderLinearization | None = None
        self._diag_a: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows: slice) -> PullbackMetric:
        """The metric at a slice of the batch, sharing the thin factor if it was already computed.

        Use it to build eigenvectors for a few inputs of a batch whose eigenvalues are all needed:
        ``metric.eigenvalues()`` for the batch, ``metric[:4].eigen()`` for the first four.
        """
        if not isinstance(rows, slice):
            raise VaelensError(f"index a PullbackMetric with a slice such as metric[:4]; got {type(rows).__name__}")
        sub = PullbackMetric(self.model, self.x[rows], self.kind, self.chunk_size, self.memory_budget_gb)
        if self._factor is not None:
            sub._factor = self._factor[rows]
        sub._k = self._k
        return sub

    # -- the thin factor --------------------------------------------------------------------
    def factor(self) -> torch.Tensor:
        """L with G = L^T L, shape (B, m, d)."""
        if self._factor is None:
            jac = encoder_jacobians(self.model, self.x, self.chunk_size)
            self._factor = self.ops.factor(self, jac)  # (B, m, d)
            check_finite(self._factor, f"the Jacobians of {type(self.model).__name__} at these inputs")
        return self._factor

    @property
    def rank_bound(self) -> int:
        """The largest possible rank of G: min(m, d)."""
        return min(self.ops.blocks * self._latent_dim(), self.dim)

    def _latent_dim(self) -> int:
        if self._factor is not None:
            return self._factor.shape[1] // self.ops.blocks
        if self._encoder_lin is not None:
            return self._encoder_lin.k
        if self._k is None:  # one sample, not the batch: Lanczos on chunks must not hold the batch's graph
            self._k = latent_size(self.model, self.x)
        return self._k

    def _check_r(self, r: int | None) -> int:
        bound = self.rank_bound
        if r is None:
            return bound
        if not isinstance(r, int) or r < 1 or r > bound:
            raise VaelensError(
                f"r={r} eigenpairs asked for, but the {self.kind} metric has rank at most {bound} here; "
                f"ask for 1 <= r <= {bound}"
            )
        return r

    def _gram(self) -> torch.Tensor:
        f = self.factor()
        return f @ f.transpose(1, 2)  # (B, m, m)

    # -- choosing the method ----------------------------------------------------------------
    def exact_bytes(self) -> int:
        """What the exact path needs, roughly: the (B, m, d) factor and its working copies."""
        return _EXACT_OVERHEAD * len(self.x) * self.rank_bound * self.dim * self.x.element_size()

    def lanczos_bytes(self, iters: int, samples: int = 1) -> int:
        """What Lanczos holds beyond the model's own passes: ``iters`` basis vectors and a few working
        d-vectors per sample (for a video of 33 frames at 256 x 256, 30 iterations hold 0.8 GB in float32)."""
        return (min(iters, self.dim) + 4) * samples * self.dim * self.x.element_size()

    def resolve_method(self, method: Method) -> Literal["exact", "lanczos"]:
        """The method ``method`` stands for: "auto" is exact when the factor is already computed or
        fits the memory budget, else Lanczos, which it says once per model and input shape."""
        method = check_method(method)
        if method != "auto":
            return method
        if self._factor is not None or self.exact_bytes() <= self.memory_budget_gb * 2**30:
            return "exact"
        key = (type(self.model).__name__, self.input_shape, self.kind)
        if key not in _noted:
            _noted.add(key)
            warnings.warn(
                f"the exact {self.kind} spectrum at inputs {self.input_shape} would need about "
                f"{self.exact_bytes() / 2**30:.1f} GiB (budget {self.memory_budget_gb:g} GiB); using Lanczos "
                "for the top eigenpairs (method='exact' to insist, or raise memory_budget_gb)",
                LanczosNotice,
                stacklevel=3,
            )
        return "lanczos"

    # -- exact spectrum ---------------------------------------------------------------------
    def eigenvalues(
        self, r: int | None = None, method: Method = "auto", iters: int = 30, seed: int = 0
    ) -> torch.Tensor:
        """The r largest eigenvalues, (B, r), descending, >= 0.

        Arguments:
            r: how many (default: all rank_bound of them exactly; with Lanczos, min(rank_bound, iters)).
            method: "exact" (the m x m problem), "lanczos" (matrix-free, top eigenvalues only) or
                "auto" (exact unless it would exceed ``memory_budget_gb``).
            iters, seed: Lanczos' Krylov dimension and start vectors.
        """
        if self.resolve_method(method) == "lanczos":
            return self.lanczos(r or min(self.rank_bound, iters), iters, seed, vectors=False).values
        gram = self._gram()  # before _check_r, which then reads the latent size off the factor
        r = self._check_r(r)
        values = torch.linalg.eigvalsh(gram).flip(-1)[:, :r]
        return values.clamp_min(0)

    def eigen(self, r: int | None = None, method: Method = "auto", iters: int = 30, seed: int = 0) -> Spectrum:
        """The r largest eigenpairs (default: all rank_bound of them), exactly via the m x m problem,
        or by Lanczos (``method``, ``iters`` and ``seed`` as for ``eigenvalues``).

        Eigenvectors of eigenvalues that are 0 to working precision are not meaningful. Building
        the (B, r, d) eigenvectors is the costly part: ask only for the rows and pairs you need
        (``metric[:4].eigen(5)``).
        """
        if self.resolve_method(method) == "lanczos":
            return self.lanczos(r or min(self.rank_bound, iters), iters, seed)
        f = self.factor()
        r = self._check_r(r)
        w, u = torch.linalg.eigh(f @ f.transpose(1, 2))  # ascending
        w, u = w.flip(-1)[:, :r], _canonical_sign(u.flip(-1)[:, :, :r])  # (B, r), (B, m, r)
        v = u.transpose(1, 2) @ f  # (B, r, d): rows are L^T u
        v.div_(torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min_(torch.finfo(v.dtype).tiny))
        return Spectrum(w.clamp_min(0), v.view(len(v), r, *self.input_shape), self.kind)

    def dense(self) -> torch.Tensor:
        """G itself, (B, d, d). Only for small inputs and tests."""
        f = self.factor()
        return f.transpose(1, 2) @ f

    # -- matrix-free ------------------------------------------------------------------------
    @property
    def encoder(self) -> EncoderLinearization:
        """The encoder's linearisation at x (JVP and VJP), built on first use."""
        if self._encoder_lin is None:
            self._encoder_lin = EncoderLinearization(self.model, self.x)
        return self._encoder_lin

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """G v for v of shape (B, *input_shape), matrix-free (one JVP and one VJP)."""
        if tuple(v.shape) != (len(self.x), *self.input_shape):
            raise VaelensError(
                f"v must have shape {(len(self.x), *self.input_shape)} to multiply G; got {tuple(v.shape)}"
            )
        a, b = self.encoder.jvp(v.to(self.x))  # J_mu v, J_sigma v: (B, k) each
        return self.ops.matvec(self, a, b)

    # -- the decoder's part, for the output kinds --------------------------------------------
    def decoder_gram(self, mu: torch.Tensor) -> torch.Tensor:
        """A = J_g^T J_g at the codes mu (B, k): (B, k, k)."""
        jg = decoder_jacobian(self.model, mu, self.chunk_size)  # (B, d, k)
        return jg.transpose(1, 2) @ jg

    def decoder_product(self, a: torch.Tensor) -> torch.Tensor:
        """A a for a (B, k), matrix-free: one JVP and one VJP through the decoder at mu."""
        if self._decoder_lin is None:
            self._decoder_lin = DecoderLinearization(self.model, self.encoder.mu)
        return self._decoder_lin.vjp(self._decoder_lin.jvp(a))  # (B, k)

    def decoder_diagonal(self) -> torch.Tensor:
        """diag(A) (B, k), cached: it needs the decoder Jacobian (k forward-mode passes)."""
        if self._diag_a is None:
            jg = decoder_jacobian(self.model, self.encoder.mu, self.chunk_size)  # (B, d, k)
            self._diag_a = jg.square().sum(1)  # (B, k)
        return self._diag_a

    def lanczos(self, r: int = 1, iters: int = 30, seed: int = 0, vectors: bool = True) -> Spectrum:
        """The top-r eigenpairs by batched Lanczos with full reorthogonalisation, matrix-free.

        Arguments:
            r: eigenpairs to return.
            iters: Krylov dimension (capped at d); more iterations, more accuracy.
            seed: seeds the random start vectors.
            vectors: also build the eigenvectors (default True).

        Algorithmic note: each iteration costs one JVP and one VJP through the encoder (through the
        decoder too for the output kinds) and keeps one d-vector per sample, so memory is
        O(B * iters * d) beyond one forward pass. ``chunk_size`` samples run at a time.
        """
        if not isinstance(iters, int) or iters < 1:
            raise VaelensError(f"iters must be a positive integer; got {iters}")
        iters = min(iters, self.dim)
        if not isinstance(r, int) or r < 1 or r > iters:
            raise VaelensError(f"r={r} must lie in 1..iters ({iters}); raise iters or lower r")
        step = self.chunk_size or len(self.x)
        if step < len(self.x):  # one chunk at a time bounds the memory of the JVP/VJP passes
            parts = [self[i : i + step].lanczos(r, iters, seed, vectors) for i in range(0, len(self.x), step)]
            values = torch.cat([p.values for p in parts])
            vecs = torch.cat([p.require_vectors() for p in parts]) if vectors else None
            return Spectrum(values, vecs, self.kind)
        b, d, x = len(self.x), self.dim, self.x
        gen = torch.Generator(device=x.device).manual_seed(seed)
        q = torch.randn(b, d, generator=gen, device=x.device, dtype=x.dtype)
        q = q / q.norm(dim=1, keepdim=True)
        basis = torch.zeros(b, iters, d, dtype=x.dtype, device=x.device)  # (B, n, d)
        alphas = torch.zeros(b, iters, dtype=x.dtype, device=x.device)
        betas = torch.zeros(b, iters, dtype=x.dtype, device=x.device)
        tol = math.sqrt(torch.finfo(x.dtype).eps)
        scale = torch.zeros(b, dtype=x.dtype, device=x.device)
        for j in range(iters):
            basis[:, j] = q
            w = self.matvec(q.view(b, *self.input_shape)).flatten(1)  # (B, d)
            alphas[:, j] = (w * q).sum(1)
            for _ in range(2):  # full reorthogonalisation, twice is enough
                qs = basis[:, : j + 1]  # (B, j+1, d)
                w = w - (qs.transpose(1, 2) @ (qs @ w.unsqueeze(-1))).squeeze(-1)
            beta = w.norm(dim=1)
            scale = torch.maximum(scale, alphas[:, j].abs()).maximum(beta)
            if j + 1 == iters:
                break
            # Breakdown: the Krylov space is invariant. Continue from a fresh orthogonal direction.
            dead = beta <= tol * scale.clamp_min(torch.finfo(x.dtype).tiny)
            if dead.any():
                fresh = torch.randn(b, d, generator=gen, device=x.device, dtype=x.dtype)
                qs = basis[:, : j + 1]
                for _ in range(2):
                    fresh = fresh - (qs.transpose(1, 2) @ (qs @ fresh.unsqueeze(-1))).squeeze(-1)
                w = torch.where(dead.unsqueeze(1), fresh, w)
                beta = torch.where(dead, torch.zeros_like(beta), beta)
            betas[:, j] = beta
            q = w / w.norm(dim=1, keepdim=True)
        t = torch.diag_embed(alphas) + torch.diag_embed(betas[:, :-1], 1) + torch.diag_embed(betas[:, :-1], -1)
        theta, s = torch.linalg.eigh(t)
        theta, s = theta.flip(-1)[:, :r], _canonical_sign(s.flip(-1)[:, :, :r])  # (B, r), (B, n, r)
        if not vectors:
            return Spectrum(theta.clamp_min(0), None, self.kind)
        v = s.transpose(1, 2) @ basis  # (B, r, d)
        v = (v / v.norm(dim=-1, keepdim=True)).reshape(b, r, *self.input_shape)
        return Spectrum(theta.clamp_min(0), v, self.kind)


def pullback_metric(
    model: torch.nn.Module,
    x: torch.Tensor,
    kind: Kind = "stochastic",
    chunk_size: int | None = None,
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
) -> PullbackMetric:
    """The pullback metric G(x) of a VAE's encoder (or encoder and decoder) at a batch of inputs.

    Arguments:
        model: any module with ``encode(x) -> (mu, logvar)`` and ``decode(z)``.
        x: (B, *input_shape) inputs in [0, 1].
        kind: "mean", "stochastic", "fisher", "output" or "output-stochastic" (docs/method.md section 3).
        chunk_size: samples differentiated at once when forming Jacobians, and samples per Lanczos
            run (None: all); bounds memory.
        memory_budget_gb: what the exact path may use before ``method="auto"`` picks Lanczos.

    Returns:
        A lazy ``PullbackMetric`` with ``eigen``, ``eigenvalues``, ``matvec``, ``lanczos``, ``dense``.
    """
    return PullbackMetric(model, x, kind, chunk_size, memory_budget_gb)
