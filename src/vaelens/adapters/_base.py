"""The adapter base: a third-party autoencoder seen through the VAE protocol (docs/method.md section 1).

An adapter maps vaelens' images in [0, 1] to the range the model expects and back, flattens the
model's latent (C, h, w) to (k,) and unflattens it for the decoder, and runs the model with torch's
math attention kernel, which has forward-mode derivatives (the fused CPU kernel has none). The
user's model is held as it is: its attention processors, mode and ``requires_grad`` flags are
never changed (vaelens' own ``eval_mode`` and ``frozen`` restore what they touch).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch

from vaelens._errors import VaelensError
from vaelens._network import bound_hub_waits

EXTRAS = {"diffusers": "diffusers", "pythae": "pythae", "monai": "monai"}


def require_extra(module: str) -> ModuleType:
    """Import an optional dependency, or fail in one line naming the ``pip install`` that adds it."""
    if module.split(".")[0] in ("diffusers", "huggingface_hub"):
        bound_hub_waits()  # any hub download they make is bounded (vaelens._network)
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module.split(".")[0], module.split(".")[0])
        raise VaelensError(
            f"this needs the optional dependency {module.split('.')[0]!r}; install it with "
            f"pip install 'vaelens[{extra}]'"
        ) from None


def class_names(model: Any) -> set[str]:
    """The names of a model's class and its bases, so adapters accept users' subclasses."""
    return {c.__name__ for c in type(model).__mro__}


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """torch's math kernel for scaled-dot-product attention: slower than the fused kernels, but it
    has forward-mode AD and vmap rules, so every derivative vaelens takes works through attention."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3 has no selector; its default is used
        yield
        return
    with sdpa_kernel(SDPBackend.MATH):
        yield


class UpcastNote(UserWarning):
    """A half-precision model was copied to float32 for derivatives (the user's model is unchanged)."""


def float32_for_derivatives(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself if it is float32 or float64, else a float32 copy, with a note.

    Derivatives in fp16/bf16 lose most of their digits, and the SDXL VAE overflows to NaN in fp16.
    The copy leaves the user's model exactly as it was.
    """
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if not dtypes & {torch.float16, torch.bfloat16}:
        return model
    warnings.warn(
        f"{type(model).__name__} is in {', '.join(sorted(str(d) for d in dtypes))}; vaelens works on a "
        "float32 copy (derivatives in half precision are inaccurate, and the SDXL VAE gives NaN in fp16)",
        UpcastNote,
        stacklevel=3,
    )
    return copy.deepcopy(model).float()


class AdaptedVAE(torch.nn.Module):
    """A third-party model behind the VAE protocol: ``encode(x) -> (mu, logvar)`` with x (B, C, H, W)
    in [0, 1] and mu, logvar (B, k); ``decode(z) -> x_mean`` in [0, 1].

    Subclasses (or ``wrap``) supply ``_encode(x_model) -> (mu, logvar | None)`` with the model's own
    latent shape and ``_decode(z_model) -> output``, both in the model's own input range.

    Arguments:
        inner: the user's module (held, never modified).
        input_range: the (low, high) range the model takes its images in.
        channels: image channels the model takes (None: any).
        size_multiple: H and W must be multiples of this (8 for Stable Diffusion VAEs).
        input_shape: a fixed (C, H, W) if the model takes only one size.
        deterministic: the encoder has no posterior variance (only the "mean" and "output" kinds and
            the "latent" and "recon" objectives apply).
        name: what messages call the model.
    """

    inner: Any  # the third-party module: its methods are not typed for torch.nn.Module

    def __init__(
        self,
        inner: torch.nn.Module,
        input_range: tuple[float, float] = (0.0, 1.0),
        channels: int | None = None,
        size_multiple: int = 1,
        input_shape: tuple[int, ...] | None = None,
        deterministic: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        low, high = (float(v) for v in input_range)
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise VaelensError(f"input_range must be (low, high) with low < high; got {input_range!r}")
        if size_multiple < 1:
            raise VaelensError(f"size_multiple must be >= 1; got {size_multiple}")
        self.inner = inner
        self.low, self.high = low, high
        self.input_channels, self.size_multiple = channels, int(size_multiple)
        if input_shape is not None:
            self.input_shape = tuple(int(s) for s in input_shape)
        self.deterministic = deterministic
        self.name = name or type(inner).__name__
        self._latent_shapes: dict[int, tuple[int, ...]] = {}

    # -- the protocol ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) in [0, 1] -> mu, logvar (B, k), k = the latent's C * h * w."""
        with math_attention():
            mu, logvar = self._encode(self.low + (self.high - self.low) * x)
        self._latent_shapes[math.prod(mu.shape[1:])] = tuple(mu.shape[1:])
        if logvar is None:  # deterministic: unit variance, so divergences reduce to the mean shift
            logvar = torch.zeros_like(mu)
        return mu.flatten(1), logvar.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, k) -> the decoder's mean in [0, 1] scale, (B, C, H, W)."""
        shape = self._latent_shapes.get(z.shape[-1])
        if shape is None:
            raise VaelensError(
                f"{self.name}: cannot decode a latent of size {z.shape[-1]} before encoding an input "
                "of the matching size; encode first"
            )
        with math_attention():
            out = self._decode(z.view(len(z), *shape))
        return (out - self.low) / (self.high - self.low)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        kind = "deterministic" if self.deterministic else "Gaussian"
        return f"{self.name}, {kind} encoder, input range [{self.low:g}, {self.high:g}]"


class _Wrapped(AdaptedVAE):
    def __init__(self, encode: Callable, decode: Callable, module: torch.nn.Module, **kw: Any) -> None:
        super().__init__(module, **kw)
        self._enc, self._dec = encode, decode

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self._enc(x)
        if isinstance(out, torch.Tensor):
            if not self.deterministic:
                raise VaelensError(
                    f"{self.name}: encode returned one tensor; return (mu, logvar), or pass "
                    "deterministic=True for an encoder without a posterior variance"
                )
            return out, None
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise VaelensError(f"{self.name}: encode must return (mu, logvar) or, deterministic, mu")
        return out[0], (None if self.deterministic else out[1])

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._dec(z)


def wrap(
    encode: Callable[[torch.Tensor], Any],
    decode: Callable[[torch.Tensor], torch.Tensor],
    input_range: tuple[float, float] = (0.0, 1.0),
    module: torch.nn.Module | None = None,
    channels: int | None = None,
    size_multiple: int = 1,
    input_shape: tuple[int, ...] | None = None,
    deterministic: bool = False,
) -> AdaptedVAE:
    """Any encode/decode pair as a vaelens VAE.

    Arguments:
        encode: x (B, C, H, W) in ``input_range`` -> (mu, logvar), each (B, ...) of any latent
            shape; or just mu when ``deterministic``.
        decode: z of that latent shape -> the reconstruction's mean in ``input_range``.
        input_range: the range the model takes images in, e.g. (-1, 1).
        module: the module holding the parameters (for device and dtype); default: the module
            ``encode`` or ``decode`` is a bound method of; required otherwise.
        channels, size_multiple, input_shape: the inputs the model accepts.
        deterministic: the encoder has no variance.

    Examples::

        >>> vae = vaelens.adapters.wrap(lambda x: my.encode(x), my.decode, input_range=(-1, 1), module=my)
        >>> vaelens.pullback_metric(vae, x, "mean").eigenvalues()   # x: (B, 3, 64, 64) in [0, 1]
    """
    if module is None:
        owners = (getattr(f, "__self__", None) for f in (encode, decode))
        module = next((o for o in owners if isinstance(o, torch.nn.Module)), None)
        if module is None:
            raise VaelensError(
                "wrap could not find the module holding the parameters (encode and decode are not bound "
                "methods of one); pass module=your_model so inputs reach it on its device and dtype"
            )
    return _Wrapped(
        encode, decode, module, input_range=input_range, channels=channels, size_multiple=size_multiple,
        input_shape=input_shape, deterministic=deterministic, name=getattr(module, "__class__", type(module)).__name__,
    )  # fmt: skip


def adapt(model: Any) -> torch.nn.Module:
    """Any supported model as a vaelens VAE: a diffusers, pythae or MONAI autoencoder through its
    adapter, and a module that already follows the protocol (``encode``/``decode``) as it is.

    Checked in that order: MONAI's AutoencoderKL has encode and decode methods, but its encoder
    returns sigma, not a log-variance, so it must not be taken for a protocol module.
    """
    from vaelens.adapters._diffusers import from_diffusers
    from vaelens.adapters._monai import from_monai
    from vaelens.adapters._pythae import from_pythae

    table: dict[str, Callable[[Any], AdaptedVAE]] = {
        "diffusers": from_diffusers,
        "pythae": from_pythae,
        "monai": from_monai,
    }
    for cls in type(model).__mro__:  # a user's subclass of a library's model counts as that library's
        origin = cls.__module__.split(".")[0]
        if origin in table:
            return table[origin](model)
    if isinstance(model, torch.nn.Module) and hasattr(model, "encode") and hasattr(model, "decode"):
        return model
    raise VaelensError(
        f"{type(model).__name__} is neither a diffusers, pythae or MONAI autoencoder nor a module with "
        "encode(x) -> (mu, logvar) and decode(z); wrap it with vaelens.adapters.wrap(encode, decode)"
    )
