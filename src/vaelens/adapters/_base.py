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
from typing import Any, NamedTuple

import torch

from vaelens._errors import VaelensError
from vaelens._network import bound_hub_waits

# a library -> the extra of pyproject.toml that installs it (diffusers' extra brings huggingface_hub)
EXTRAS = {"diffusers": "diffusers", "pythae": "pythae", "monai": "monai", "huggingface_hub": "diffusers"}


def require_extra(module: str) -> ModuleType:
    """Import an optional dependency, or fail in one line naming the ``pip install`` that adds it."""
    if module.split(".")[0] in ("diffusers", "huggingface_hub"):
        bound_hub_waits()  # any hub download they make is bounded (vaelens._network)
    try:
        return importlib.import_module(module)
    except ImportError:
        name = module.split(".")[0]
        how = f"pip install 'vaelens[{EXTRAS[name]}]'" if name in EXTRAS else f"pip install {name}"
        raise VaelensError(f"this needs the optional dependency {name!r}; install it with {how}") from None


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


class LatentNorm(NamedTuple):
    """The affine map z -> (z - shift) * scale, per latent channel, from a model's raw latent to
    the latent its diffusion model sees (docs/method.md section 1, latent spaces).

    Arguments:
        shift, scale: (C,) or () tensors, broadcast over the latent's channel axis (dim 1).
        source: the config keys they came from, for summaries.
    """

    shift: torch.Tensor
    scale: torch.Tensor
    source: str

    def _view(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        t = t.to(device=like.device, dtype=like.dtype)
        if t.numel() == 1:
            return t.reshape(())
        channels = like.shape[1]
        if t.numel() == channels:
            return t.view(1, -1, *[1] * (like.dim() - 2))  # (1, C, 1, ...) for (B, C, ...)
        if like.dim() >= 3 and t.numel() == channels * like.shape[-1]:  # per channel and last axis (mel bins)
            return t.view(1, channels, *[1] * (like.dim() - 3), like.shape[-1])
        raise VaelensError(
            f"the latent normalisation ({self.source}) has {t.numel()} values but the latent is "
            f"{tuple(like.shape[1:])}; use --latent-space raw (API: latent_space='raw')"
        )

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw (mu, logvar) -> diffusion space: the mean shifts and scales, the log-variance moves by
        2 log scale."""
        scale = self._view(self.scale, mu)
        mu = (mu - self._view(self.shift, mu)) * scale
        return mu, (None if logvar is None else logvar + 2 * scale.abs().log())

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z / self._view(self.scale, z) + self._view(self.shift, z)


LAYOUT_DIMS = {"image": 3, "image-as-video": 3, "video": 4, "audio": 2, "waveform": 1, "spectrogram": 3, "volume": 4}
"""Per-sample input dimensions of each layout (docs/method.md section 1)."""


class AdaptedVAE(torch.nn.Module):
    """A third-party model behind the VAE protocol: ``encode(x) -> (mu, logvar)`` with x (B, *s)
    in [0, 1] and mu, logvar (B, k); ``decode(z) -> x_mean`` in [0, 1].

    Subclasses (or ``wrap``) supply ``_encode(x_model) -> (mu, logvar | None)`` with the model's own
    latent shape and ``_decode(z_model) -> output``, both in the model's own input range.

    Arguments:
        inner: the user's module (held, never modified).
        input_range: the (low, high) range the model takes its inputs in.
        channels: input channels the model takes (None: any).
        size_multiple: the spatial sizes (H and W; T for audio) must be multiples of this (8 for
            Stable Diffusion VAEs).
        input_shape: a fixed (C, H, W) if the model takes only one size.
        deterministic: the encoder has no posterior variance (only the "mean" and "output" kinds and
            the "latent" and "recon" objectives apply).
        name: what messages call the model.
        layout: the input layout: image (C, H, W), video (C, T, H, W), audio (C, T), waveform (T,),
            spectrogram (C, T, F), volume (C, D, H, W); image-as-video takes (C, H, W) and gives the
            model (C, 1, H, W).
        frame_multiple, causal: video frames must be a multiple of ``frame_multiple`` (causal: one
            more than a multiple).
        latent_norm: the map to the diffusion model's latent space (None: the raw latent).
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
        layout: str = "image",
        frame_multiple: int = 1,
        causal: bool = False,
        latent_norm: LatentNorm | None = None,
    ) -> None:
        super().__init__()
        low, high = (float(v) for v in input_range)
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise VaelensError(f"input_range must be (low, high) with low < high; got {input_range!r}")
        if size_multiple < 1 or frame_multiple < 1:
            raise VaelensError(f"size_multiple and frame_multiple must be >= 1; got {size_multiple}, {frame_multiple}")
        if layout not in LAYOUT_DIMS:
            raise VaelensError(f"layout must be one of {', '.join(LAYOUT_DIMS)}; got {layout!r}")
        self.inner = inner
        self.low, self.high = low, high
        self.input_channels, self.size_multiple = channels, int(size_multiple)
        self.input_layout, self.frame_multiple, self.causal = layout, int(frame_multiple), bool(causal)
        if input_shape is not None:
            self.input_shape = tuple(int(s) for s in input_shape)
        self.deterministic = deterministic
        self.name = name or type(inner).__name__
        self.latent_norm = latent_norm
        self.checkpointing = False
        self._latent_shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # input shape -> latent shape
        self._recent: dict[int, tuple[int, ...]] = {}  # k -> the input shape last encoded to it
        self._decoding_for: tuple[int, ...] | None = None

    @property
    def latent_space(self) -> str:
        """ "diffusion" when latents are normalised as the diffusion model sees them, else "raw"."""
        return "raw" if self.latent_norm is None else "diffusion"

    # -- the protocol ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, *s) in [0, 1] -> mu, logvar (B, k), k = the size of the model's latent."""
        x_model = self.low + (self.high - self.low) * x
        if self.input_layout == "image-as-video":
            x_model = x_model.unsqueeze(2)  # (B, C, H, W) -> (B, C, 1, H, W)
        with math_attention(), self._checkpointing():
            mu, logvar = self._encode(x_model)
        if self.latent_norm is not None:
            mu, logvar = self.latent_norm.forward(mu, logvar)
        k, shape = math.prod(mu.shape[1:]), tuple(x.shape[1:])
        self._latent_shapes[shape] = tuple(mu.shape[1:])
        self._recent[k] = shape
        if logvar is None:  # deterministic: unit variance, so divergences reduce to the mean shift
            logvar = torch.zeros_like(mu)
        return mu.flatten(1), logvar.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, k) -> the decoder's mean in [0, 1] scale, (B, *s) for the input shape s that was
        encoded to latents of size k (the last one, or the one ``decoding_for`` names)."""
        source = self._decoding_for or self._recent.get(z.shape[-1])
        shape = self._latent_shapes.get(source) if source is not None else None
        if shape is None or math.prod(shape) != z.shape[-1]:
            raise VaelensError(
                f"{self.name}: cannot decode a latent of size {z.shape[-1]} before encoding an input "
                "of the matching size; encode first"
            )
        z = z.view(len(z), *shape)
        if self.latent_norm is not None:
            z = self.latent_norm.inverse(z)
        with math_attention(), self._checkpointing():
            out = self._decode(z)
        if self.input_layout == "image-as-video":
            out = out.squeeze(2)  # (B, C, 1, H, W) -> (B, C, H, W)
        return (out - self.low) / (self.high - self.low)

    @contextlib.contextmanager
    def decoding_for(self, input_shape: tuple[int, ...]) -> Iterator[None]:
        """Decode latents as those of inputs of per-sample ``input_shape``, e.g. to interleave
        H x W and W x H images, whose latents have the same size but not the same shape."""
        previous, self._decoding_for = self._decoding_for, tuple(int(s) for s in input_shape)
        try:
            yield
        finally:
            self._decoding_for = previous

    @contextlib.contextmanager
    def _checkpointing(self) -> Iterator[None]:
        """Gradient checkpointing for the duration of a call when asked for and the model has it
        (diffusers' ``enable_gradient_checkpointing``); the model's own setting comes back after."""
        inner = self.inner
        if not self.checkpointing or not getattr(inner, "_supports_gradient_checkpointing", False):
            yield
            return
        flags = [(m, m.gradient_checkpointing) for m in inner.modules() if hasattr(m, "gradient_checkpointing")]
        inner.enable_gradient_checkpointing()
        try:
            yield
        finally:
            for m, flag in flags:
                m.gradient_checkpointing = flag

    def recompute_context(self) -> contextlib.AbstractContextManager:
        """Where backward passes that recompute checkpointed blocks must run: as the forward did."""
        return math_attention()

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        kind = "deterministic" if self.deterministic else "Gaussian"
        return (
            f"{self.name}, {kind} encoder, {self.input_layout} inputs in [{self.low:g}, {self.high:g}], "
            f"{self.latent_space} latent space"
        )


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
    layout: str = "image",
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
        layout: image (B, C, H, W), video (B, C, T, H, W), audio (B, C, T), volume (B, C, D, H, W), ...

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
        layout=layout,
    )  # fmt: skip
