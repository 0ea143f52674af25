"""Jacobians of a VAE in one place (docs/method.md section 3): batched, exact, and matrix-free.

Metrics, scores and attacks all get their derivatives from here. Batched Jacobians use torch.func
(vmap over jacrev or jacfwd, whichever needs fewer passes for the shape at hand); matrix-free
products use one JVP or one VJP through the batched model, which is valid because in eval mode the
samples of a batch do not interact. Modules that vmap cannot handle fall back, with a warning, to
plain autograd: one backward pass per output row.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jacfwd, jacrev, jvp, vjp, vmap

from vaelens._errors import VaelensError
from vaelens._protocol import decode, encode, eval_mode


@functools.cache
def _forward_mode_ready() -> None:
    """Import torch's decompositions for forward-mode AD quietly, once, before the first JVP.

    torch imports the module lazily on the first JVP, and some torch releases warn there about their
    own use of torch.jit; importing it here hides that warning. It is not imported at start-up
    (a quarter of a second) because most commands never take a JVP.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            import torch._decomp.decompositions_for_jvp  # noqa: F401
        except ImportError:  # pragma: no cover - a torch without it needs nothing
            pass


class EncoderJacobians(NamedTuple):
    """The encoder at x and its Jacobian.

    Arguments:
        mu, sigma: (B, k).
        jac: (B, 2k, d), the rows of J_mu stacked over the rows of J_sigma.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    jac: torch.Tensor

    @property
    def jac_mu(self) -> torch.Tensor:
        """(B, k, d), a view."""
        return self.jac[:, : self.mu.shape[1]]

    @property
    def jac_sigma(self) -> torch.Tensor:
        """(B, k, d), a view."""
        return self.jac[:, self.mu.shape[1] :]


class VmapFallbackWarning(UserWarning):
    """vmap could not trace the model; vaelens used the slower per-row autograd path."""


def _encoder_rows(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """x (B, *input_shape) -> (B, 2k): mu and sigma = exp(logvar / 2), side by side."""

    def f(x: torch.Tensor) -> torch.Tensor:
        mu, logvar = encode(model, x)
        return torch.cat([mu, (0.5 * logvar).exp()], dim=-1)

    return f


def _call(model: torch.nn.Module, f: Callable, x: torch.Tensor) -> torch.Tensor:
    """Run the model, turning a failure caused by the input's shape into a one-line error."""
    try:
        return f(x)
    except VaelensError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        msg = " ".join(str(e).split())[:200]
        raise VaelensError(
            f"{type(model).__name__} failed on input of shape {tuple(x.shape)} ({msg}); "
            "check that x has the shape the model expects"
        ) from None


def latent_size(model: torch.nn.Module, x: torch.Tensor) -> int:
    """k, read off one sample's encoding (a wrong input shape fails here, in one line)."""
    with eval_mode(model), torch.no_grad():
        return int(_call(model, lambda xb: encode(model, xb).mu, x[:1]).shape[1])


class Linearized(NamedTuple):
    """A batched map at x: its value (B, m) and per-sample Jacobians (B, m, *in)."""

    value: torch.Tensor
    jacobian: torch.Tensor


def batched_jacobian(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_size: int | None = None
) -> Linearized:
    """Value and per-sample Jacobians of a batched map f: (B, *in) -> (B, m).

    f must treat samples independently. Uses vmap(jacrev) when m <= prod(in), else vmap(jacfwd);
    the value comes out of the same pass. ``chunk_size`` samples are differentiated at a time
    (None: all at once).
    """
    m = f(x[:1]).shape[-1]
    d = math.prod(x.shape[1:])

    def single(xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = f(xi.unsqueeze(0)).squeeze(0)  # (m,)
        return out, out

    failure: Exception | None = None
    modes: list[Callable[..., Callable]] = [jacrev] if m <= d else [jacfwd, jacrev]
    if m > d:
        _forward_mode_ready()
    for mode in modes:  # reverse mode where forward mode is missing
        try:
            jac, value = vmap(mode(single, has_aux=True), chunk_size=chunk_size)(x)
            return Linearized(value, jac)
        except VaelensError:
            raise
        except Exception as e:  # noqa: BLE001 - functorch raises many kinds for unsupported modules
            failure = e
            text = str(e).lower()
            if not (mode is jacfwd and ("forward" in text or "jvp" in text)):
                break
    warnings.warn(
        f"torch.func could not vmap this model ({type(failure).__name__}: {str(failure)[:120]}); "
        "using the slower per-row autograd path",
        VmapFallbackWarning,
        stacklevel=3,
    )
    return _autograd_jacobian(f, x, chunk_size)


def _autograd_jacobian(
    f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk_size: int | None
) -> Linearized:
    """The slow, always-correct path: one backward pass per output row, per chunk of samples."""
    values, chunks = [], []
    step = chunk_size or len(x)
    for start in range(0, len(x), step):
        xc = x[start : start + step].detach().requires_grad_(True)
        with torch.enable_grad():
            out = f(xc)  # (b, m)
            rows = [
                torch.autograd.grad(out[:, i].sum(), xc, retain_graph=i + 1 < out.shape[1])[0]
                for i in range(out.shape[1])
            ]
        values.append(out.detach())
        chunks.append(torch.stack(rows, dim=1))  # (b, m, *in)
    return Linearized(torch.cat(values), torch.cat(chunks))


def encoder_jacobians(model: torch.nn.Module, x: torch.Tensor, chunk_size: int | None = None) -> EncoderJacobians:
    """mu, sigma (B, k) and the stacked Jacobian of (mu, sigma) at x, flattened over the input.

    The model is in eval mode during the call and its mode restored afterwards; parameters
    receive no gradients.
    """
    with eval_mode(model), torch.no_grad():
        f = _encoder_rows(model)
        _call(model, f, x[:1])  # a wrong input shape fails here, with a one-line error
        out, jac = batched_jacobian(f, x, chunk_size)
    k = out.shape[1] // 2
    return EncoderJacobians(out[:, :k], out[:, k:], jac.flatten(2))


def decoder_jacobian(model: torch.nn.Module, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Jacobian of the decoder mean g at z, flattened over the output: (B, d, k)."""
    with eval_mode(model), torch.no_grad():

        def g(zb: torch.Tensor) -> torch.Tensor:
            return decode(model, zb).flatten(1)  # (B, d)

        return batched_jacobian(g, z, chunk_size).jacobian


def forward_product(
    model: torch.nn.Module,
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    v: torch.Tensor,
    vjp_fn: Callable,
    out: torch.Tensor,
) -> torch.Tensor:
    """J v for the Jacobian J of f at x: one forward-mode pass, or, where the model has an operation
    without forward-mode AD (torch's fused attention on the CPU, a custom autograd.Function without
    ``jvp``), the double-VJP trick: J v = d/du <J^T u, v>, reverse mode over reverse mode.

    A model that neither mode can differentiate gets a one-line ``VaelensError`` naming the
    operation torch named.
    """
    _forward_mode_ready()
    try:
        return jvp(f, (x,), (v,))[1]
    except (NotImplementedError, RuntimeError) as first:
        try:
            _, back = vjp(lambda u: vjp_fn(u)[0], torch.zeros_like(out))[:2]
            return back(v)[0]
        except (NotImplementedError, RuntimeError) as second:
            msg = " ".join(str(second).split())[:200]
            raise VaelensError(
                f"cannot differentiate {type(model).__name__} in either mode: forward-mode AD failed "
                f"({' '.join(str(first).split())[:120]}) and so did reverse over reverse ({msg}); "
                "replace that operation (e.g. use the math attention backend) or use the exact path"
            ) from None


def _autograd_vjp(
    model: torch.nn.Module, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, Callable]:
    """f(x) and its VJP by plain autograd, for models with gradient checkpointing: the graph keeps
    only the checkpointed blocks' boundaries, and each VJP recomputes the blocks (torch.func's
    transforms do not support the saved-tensor hooks checkpointing uses)."""
    xg = x.detach().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        out = f(xg)  # (B, m)

    def pullback(u: torch.Tensor) -> tuple[torch.Tensor]:
        # the blocks are recomputed here, and must run as in the forward (an adapter's attention kernel)
        context = getattr(model, "recompute_context", contextlib.nullcontext)
        with eval_mode(model), torch.enable_grad(), context():
            grad = torch.autograd.grad(out, xg, u, retain_graph=True, create_graph=u.requires_grad)[0]
        return (grad,)

    return out.detach(), pullback


class EncoderLinearization:
    """Matrix-free products with the encoder's Jacobian J = d(mu, sigma)/dx at a batch x.

    ``jvp(v)``: v (B, *input_shape) -> (J_mu v, J_sigma v), each (B, k).
    ``vjp(a, b)``: a, b (B, k) -> J_mu^T a + J_sigma^T b, shape (B, *input_shape).
    One forward pass is shared by all VJPs; each JVP costs one forward-mode pass.
    """

    def __init__(self, model: torch.nn.Module, x: torch.Tensor) -> None:
        self.model, self.x = model, x
        self._f = _encoder_rows(model)
        if getattr(model, "checkpointing", False):  # torch.func cannot trace checkpointed blocks
            self._out, self._vjp = _call(model, lambda xb: _autograd_vjp(model, self._f, xb), x)
        else:
            with eval_mode(model), torch.no_grad():  # func transforms ignore the outer no_grad
                self._out, self._vjp = _call(model, lambda xb: vjp(self._f, xb), x)[:2]
        self.k = self._out.shape[1] // 2
        self.mu, self.sigma = self._out[:, : self.k].detach(), self._out[:, self.k :].detach()

    def jvp(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(self.model, "checkpointing", False):
            tangent = self._checkpointed_jvp(v)
        else:
            with eval_mode(self.model), torch.no_grad():
                tangent = forward_product(self.model, self._f, self.x, v, self._vjp, self._out)
        return tangent[:, : self.k], tangent[:, self.k :]

    def vjp(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.model), torch.no_grad():
            return self._vjp(torch.cat([a, b], dim=1))[0]

    def _checkpointed_jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v for a checkpointed model: autograd's forward mode without a graph (it keeps no
        activations), else J v = d/du <J^T u, v> by double backward."""
        try:
            with eval_mode(self.model), torch.no_grad(), fwAD.dual_level():
                return fwAD.unpack_dual(self._f(fwAD.make_dual(self.x, v))).tangent
        except (NotImplementedError, RuntimeError):
            u = torch.zeros_like(self._out).requires_grad_(True)
            context = getattr(self.model, "recompute_context", contextlib.nullcontext)
            with eval_mode(self.model), torch.enable_grad(), context():
                return torch.autograd.grad(self._vjp(u)[0], u, v)[0]


class DecoderLinearization:
    """Matrix-free products with the decoder's Jacobian J_g at z: ``jvp(u)`` (B, k) -> (B, d),
    ``vjp(w)`` (B, d) -> (B, k)."""

    def __init__(self, model: torch.nn.Module, z: torch.Tensor) -> None:
        self.model, self.z = model, z
        self._g = lambda zb: decode(model, zb).flatten(1)
        with eval_mode(model), torch.no_grad():
            self._out, self._vjp = vjp(self._g, z)[:2]

    def jvp(self, u: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.model), torch.no_grad():
            return forward_product(self.model, self._g, self.z, u, self._vjp, self._out)

    def vjp(self, w: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.model), torch.no_grad():
            return self._vjp(w)[0]
