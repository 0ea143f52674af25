"""The VAE protocol every part of vaelens speaks (docs/method.md section 1).

A "VAE" is any ``torch.nn.Module`` with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> x_mean``.
No base class is required: models from other libraries work as they are. This module holds the
named posterior, the checks applied to inputs where they enter the library, and the one helper,
``prepare_inputs``, through which every input reaches a model (right device, right dtype).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

import torch

from vaelens._errors import VaelensError


class Posterior(NamedTuple):
    """The diagonal Gaussian q(z|x) = N(mu, diag(exp(logvar))).

    Arguments:
        mu: (B, k) posterior means.
        logvar: (B, k) posterior log-variances.
    """

    mu: torch.Tensor
    logvar: torch.Tensor


def encode(model: torch.nn.Module, x: torch.Tensor) -> Posterior:
    """Call ``model.encode`` and return a checked ``Posterior`` whatever tuple type it returned."""
    if not hasattr(model, "encode") or not hasattr(model, "decode"):
        raise VaelensError(
            f"{type(model).__name__} is not a VAE: it needs encode(x) -> (mu, logvar) and decode(z) -> x_mean methods"
        )
    out = cast(Any, model).encode(x)  # nn.Module's __getattr__ hides the method from type checkers
    if not isinstance(out, tuple) or len(out) != 2:
        raise VaelensError(f"{type(model).__name__}.encode must return (mu, logvar); got {type(out).__name__}")
    mu, logvar = out
    if mu.shape != logvar.shape or mu.dim() != 2:
        raise VaelensError(
            f"{type(model).__name__}.encode must return mu and logvar of shape (B, k); got "
            f"{tuple(mu.shape)} and {tuple(logvar.shape)}"
        )
    return Posterior(mu, logvar)


def decode(model: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Call ``model.decode``: the decoder mean g(z), (B, k) -> (B, *input_shape), shape checked."""
    out = cast(Any, model).decode(z)
    shape = model_input_shape(model)
    if not isinstance(out, torch.Tensor) or (shape is not None and tuple(out.shape[-len(shape) :]) != shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise VaelensError(
            f"{type(model).__name__}.decode returned {got} but the model's inputs are {shape}; "
            "decode(z) must return the mean of x, shaped like the inputs"
        )
    return out


def check_runs(model: torch.nn.Module, x: torch.Tensor, what: str, fix: str) -> torch.Tensor:
    """Run the model once, decode(encode(x).mu) without gradients, and return the reconstruction.

    A model of the user's that raises anything on x (its own code, or a shape it cannot take) is
    one line here, naming ``what`` the model was given and ``fix``, instead of a traceback from
    deep inside an audit or an attack. Running out of memory is left to the caller's handler.
    """
    try:
        with torch.no_grad():
            return decode(model, encode(model, x).mu)
    except VaelensError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's model may raise anything
        if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
            raise
        msg = " ".join(str(e).split())[:160]
        name = getattr(model, "name", None) or type(model).__name__
        raise VaelensError(f"{name} fails on {what}: {type(e).__name__}: {msg}; {fix}") from None


def check_finite(t: torch.Tensor, what: str) -> None:
    """Refuse NaN and Inf where they enter: weights at load time, model outputs before a solver."""
    if not bool(torch.isfinite(t).all()):
        raise VaelensError(f"{what} hold NaN or Inf; the model diverged or the file is damaged: retrain or restore it")


def model_input_shape(model: torch.nn.Module) -> tuple[int, ...] | None:
    """The per-sample input shape a model declares (``input_shape`` attribute), if any."""
    shape = getattr(model, "input_shape", None)
    return tuple(shape) if shape is not None else None


SPATIAL_AXES = {
    "image": (1, 2),
    "image-as-video": (1, 2),
    "video": (2, 3),
    "audio": (1,),
    "waveform": (0,),
    "spectrogram": (1,),
    "volume": (1, 2, 3),
}
"""Per layout: the per-sample axes whose sizes must be multiples of a model's ``size_multiple``."""
LAYOUT_TEXT = {"image": "(B, {c}, H, W)", "image-as-video": "(B, {c}, H, W)", "video": "(B, {c}, T, H, W)",
               "audio": "(B, {c}, T)", "waveform": "(B, T)", "spectrogram": "(B, {c}, T, F)",
               "volume": "(B, {c}, D, H, W)"}  # fmt: skip

LAYOUT_FILES = {"image": "images", "image-as-video": "images", "video": "video clips (protect and folder: take them)",
                "audio": "audio (a folder: of audio files)", "waveform": "mono audio (a folder: of audio files)",
                "volume": "volumes (a folder: of NIfTI files; protect takes images and videos only)"}  # fmt: skip
"""Per layout: what to give a model of that layout, for the one-line refusal of another modality."""


@dataclass(frozen=True)
class InputSpec:
    """What inputs a model of any size takes (adapters declare it through their attributes).

    Arguments:
        layout: image, video, audio, waveform, spectrogram or volume (see ``SPATIAL_AXES``).
        channels: the channel count (None: any).
        size_multiple: the spatial sizes must be multiples of this.
        frame_multiple, causal: video frames T must be a multiple of ``frame_multiple``, or for a
            causal video VAE one more than a multiple.
    """

    layout: str = "image"
    channels: int | None = None
    size_multiple: int = 1
    frame_multiple: int = 1
    causal: bool = False

    @classmethod
    def of(cls, model: torch.nn.Module) -> InputSpec:
        return cls(getattr(model, "input_layout", "image"), getattr(model, "input_channels", None),
                   getattr(model, "size_multiple", 1), getattr(model, "frame_multiple", 1),
                   getattr(model, "causal", False))  # fmt: skip

    def valid_frames(self) -> str:
        """The frame counts this model takes, in words with the first few: "1 + a multiple of 4 (5, 9, 13, ...)"."""
        m, first = self.frame_multiple, [self.causal + k * self.frame_multiple for k in (1, 2, 3)]
        return f"{'1 + ' if self.causal else ''}a multiple of {m} ({', '.join(map(str, first))}, ...)"

    def nearest_frames(self, frames: int) -> int:
        """The largest frame count this model takes not above ``frames`` (at least one step of it)."""
        m = self.frame_multiple
        return self.causal + max(1, (frames - self.causal) // m) * m

    def default_frames(self, target: int = 8) -> int:
        """The frames to cut from each clip when the user gives none: ``target`` where the model takes
        any count, else the largest valid count not above it, plus the first frame a causal video VAE
        keeps apart (9 for 1 + 4k: eight frames after the first; 8 for a multiple of 4)."""
        return target if self.frame_multiple == 1 else self.nearest_frames(target + self.causal)

    def frames_fit(self, frames: int) -> bool:
        return (frames - self.causal) % self.frame_multiple == 0

    @property
    def constrained(self) -> bool:
        return self.channels is not None or self.size_multiple > 1 or self.layout != "image" or self.frame_multiple > 1

    def check(self, x: torch.Tensor, name: str) -> None:
        """Refuse, in one line, a batch this model cannot take."""
        text = LAYOUT_TEXT.get(self.layout, "(B, ...)").format(c=self.channels or "C")
        has_channels = self.layout != "waveform"
        if x.dim() != len(LAYOUT_TEXT[self.layout].split(",")):  # another modality: --channels cannot help
            raise VaelensError(
                f"{name} has shape {tuple(x.shape)} but the model takes {self.layout} inputs {text}; give it "
                f"{LAYOUT_FILES.get(self.layout, 'inputs of that shape')}"
            )
        if has_channels and self.channels is not None and x.shape[1] != self.channels:
            raise VaelensError(
                f"{name} has shape {tuple(x.shape)} but the model takes {self.layout} inputs {text}; "
                "pass --channels or convert the inputs"
            )
        sizes = [x.shape[1 + a] for a in SPATIAL_AXES[self.layout]]
        if any(s % self.size_multiple for s in sizes):
            fixed = " x ".join(str(max(1, s // self.size_multiple) * self.size_multiple) for s in sizes)
            raise VaelensError(
                f"{name} is {' x '.join(map(str, sizes))} but the model needs sizes divisible by {self.size_multiple}; "
                f"resize or pad the inputs (e.g. to {fixed}{', --image-size' if self.layout == 'image' else ''})"
            )
        if self.layout == "video" and (x.shape[2] - self.causal) % self.frame_multiple:
            raise VaelensError(
                f"{name} has {x.shape[2]} frames but the model takes {self.valid_frames()} frames; "
                f"pass --frames {self.nearest_frames(x.shape[2])}"
            )


def check_images(
    x: torch.Tensor,
    name: str = "x",
    shape: tuple[int, ...] | None = None,
    channels: int | None = None,
    size_multiple: int = 1,
    spec: InputSpec | None = None,
) -> None:
    """Check a batch of inputs where it enters: a float tensor (B, *shape), finite, in [0, 1].

    Models that take inputs of any size (adapters) declare an ``InputSpec`` instead of a fixed
    shape (or, for images, ``channels`` and ``size_multiple``): (B, channels, H, W) with H and W
    multiples of ``size_multiple``; videos, audio and volumes as their layout says.
    """
    if not isinstance(x, torch.Tensor):
        raise VaelensError(f"{name} must be a torch.Tensor of shape (B, ...); got {type(x).__name__}")
    if not x.is_floating_point():
        raise VaelensError(f"{name} must be a float tensor with values in [0, 1]; got {x.dtype}")
    if x.dim() < 2:
        raise VaelensError(f"{name} must be batched, shape (B, ...); got {tuple(x.shape)}")
    if len(x) == 0:
        raise VaelensError(f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one input")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise VaelensError(
            f"{name} has per-sample shape {tuple(x.shape[1:])} but the model expects "
            f"{tuple(shape)}; reshape or resize the inputs"
        )
    spec = spec or InputSpec(channels=channels, size_multiple=size_multiple)
    if shape is None and spec.constrained:
        spec.check(x, name)
    if not torch.isfinite(x).all():
        raise VaelensError(f"{name} contains NaN or Inf; clean the inputs first")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise VaelensError(
            f"{name} has values in [{x.min().item():.3g}, {x.max().item():.3g}] but must lie in "
            "[0, 1]; rescale it (e.g. divide 8-bit images by 255)"
        )


def is_deterministic(model: torch.nn.Module) -> bool:
    """Whether the model's encoder has no posterior variance (an adapter of an AE, TAESD, ...)."""
    return bool(getattr(model, "deterministic", False))


def require_variance(model: torch.nn.Module, what: str) -> None:
    """Refuse, in one line, something that needs the posterior variance on a deterministic encoder."""
    if is_deterministic(model):
        name = getattr(model, "name", type(model).__name__)
        raise VaelensError(
            f"{name} has a deterministic encoder (no posterior variance), so {what} is undefined for it; "
            "use the mean or output kind, or the latent or recon objective"
        )


def geometry_base(model: torch.nn.Module) -> torch.nn.Module | None:
    """The model whose Jacobian stands in for this one's, if it has no Jacobian of its own.

    A center-smoothed model (``vaelens.smooth``, docs/method.md section 10) is piecewise the base
    model at a noisy input, with jumps where the chosen sample changes: it declares its base in a
    ``geometry_base`` attribute. Attacks take directions from the base; audits refuse it.
    """
    base = getattr(model, "geometry_base", None)
    return base if isinstance(base, torch.nn.Module) else None


def require_jacobian(model: torch.nn.Module, what: str) -> None:
    """Refuse, in one line, something that needs the model's own Jacobian on a smoothed model."""
    if geometry_base(model) is not None:
        name = getattr(model, "name", type(model).__name__)
        raise VaelensError(
            f"{name} is a smoothed model, which has no Jacobian of its own, so {what} is undefined for it; "
            "audit its base model (drop smooth: from the spec) or certify it with vaelens certify"
        )


def model_dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the model's first floating parameter (float32 on cpu if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.get_default_dtype(), torch.device("cpu")


def prepare_inputs(model: torch.nn.Module, x: torch.Tensor, name: str = "x", check: bool = True) -> torch.Tensor:
    """Check a batch where it enters and move it to the model's dtype and device.

    Every input reaches a model through this helper: a float32 CPU batch given to a float64 or a
    CUDA model is converted here, once, instead of failing deep inside a forward pass. ``check=False``
    skips the value checks (finite, in [0, 1]) for data that has already passed them.
    """
    if check:
        check_images(x, name, model_input_shape(model), spec=InputSpec.of(model))
    dtype, device = model_dtype_device(model)
    return x.detach().to(device=device, dtype=dtype)


def resolve_device(name: str | torch.device) -> torch.device:
    """A ``torch.device`` for a name such as "cpu", "cuda:1" or "mps", checked to be available."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise VaelensError(f"unknown device {name!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VaelensError("device cuda was asked for but CUDA is not available; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise VaelensError("device mps was asked for but MPS is not available; use --device cpu")
    return device


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put a model in eval mode for the duration, then restore every submodule's previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter for the duration, both restored.

    Gradients taken inside flow to the inputs only: parameters are never touched.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with eval_mode(model):
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            yield model
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)


Kind = Literal["mean", "stochastic", "fisher", "output", "output-stochastic"]
"""The five metric kinds of docs/method.md section 3."""
Norm = Literal["l2", "linf"]
"""Attack budgets: the L2 or the L-infinity ball."""
Objective = Literal["kl", "kl_reverse", "skl", "latent", "recon", "stochastic"]
"""What an attack maximises (or, targeted, minimises): docs/method.md section 2."""
