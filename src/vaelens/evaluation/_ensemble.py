"""Several encoders attacked at once, in the precision asked for (docs/method.md section 9).

Protection's objective over the encoders m = 1..M, for an image x, its perturbed copy x' and a
target x_t, is the scale-free sum

    L(x') = sum_m ||mu_m(x') - mu_m(x_t)||^2 / ||mu_m(x) - mu_m(x_t)||^2,

each term divided by its own value at the clean image, so every encoder starts at 1 and none
dominates by the scale of its latents (multiplying one encoder's codes by 100 changes nothing).
With one encoder it is the ``latent`` objective of section 2.1 up to a constant factor, which
Auto-PGD's step rule does not see. Only encoders run here: no decoder graph is ever built.

The forward passes run under autocast when ``precision`` is bf16 or fp16; the perturbation, the
objective and its gradient stay in fp32 (or fp64 for a float64 model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import encode, frozen, model_dtype_device

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
TINY = 1e-12  # a clean value of 0 (the image already encodes as its target) is divided by this instead


def declares_upcast(model: torch.nn.Module) -> bool:
    """Whether a model (or a module inside it, such as a wrapped diffusers VAE) declares
    ``force_upcast``: its fp16 forward pass overflows (SDXL's VAE gives NaN)."""
    for m in model.modules():
        config = vars(m).get("config", vars(m).get("_internal_dict"))  # not diffusers' deprecated __getattr__
        declared = config.get("force_upcast") if isinstance(config, Mapping) else getattr(config, "force_upcast", None)
        if vars(m).get("force_upcast") is True or getattr(type(m), "force_upcast", None) is True or declared is True:
            return True
    return False


def check_precision(precision: str, models: dict[str, torch.nn.Module]) -> None:
    """Refuse, in one line, an unknown precision, and fp16 for a model that declares ``force_upcast``."""
    if precision not in PRECISIONS:
        raise VaelensError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    upcast = [label for label, m in models.items() if precision == "fp16" and declares_upcast(m)]
    if upcast:
        raise VaelensError(
            f"{upcast[0]} declares force_upcast (its fp16 forward pass overflows to NaN); "
            "use --precision bf16 or fp32 for it"
        )


@contextlib.contextmanager
def forward_precision(precision: Precision, device: torch.device) -> Iterator[None]:
    """Autocast to bf16 or fp16 on ``device`` for the duration; nothing for fp32."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=_AUTOCAST[precision]):
        yield


@contextlib.contextmanager
def all_frozen(models: Sequence[torch.nn.Module]) -> Iterator[None]:
    """Every model in eval mode with its parameters frozen, all restored afterwards."""
    with contextlib.ExitStack() as stack:
        for m in models:
            stack.enter_context(frozen(m))
        yield


def working_dtype(models: Sequence[torch.nn.Module]) -> torch.dtype:
    """The perturbation's dtype: float64 if any model is float64, else float32 (never half)."""
    return torch.float64 if any(model_dtype_device(m)[0] == torch.float64 for m in models) else torch.float32


def code(model: torch.nn.Module, x: torch.Tensor, precision: Precision = "fp32") -> torch.Tensor:
    """The encoder mean mu(x), (B, C, H, W) -> (B, k) in x's dtype and on x's device, differentiable
    in x. x moves to the model's device and dtype here; the forward pass runs in ``precision``."""
    dtype, device = model_dtype_device(model)
    y = x.to(device=device, dtype=dtype)  # (B, C, H, W)
    if device.type == "cuda" and y.dim() == 4:
        y = y.contiguous(memory_format=torch.channels_last)  # faster convolutions on tensor cores
    with forward_precision(precision, device):
        mu = encode(model, y).mu  # (B, k)
    return mu.to(device=x.device, dtype=x.dtype)


class EnsembleObjective:
    """The scale-free sum over encoders of the squared latent distance to the target's code.

    Arguments:
        models: the encoders (each fitted to the images' size).
        x: (B, C, H, W) the clean images in [0, 1], in the perturbation's dtype.
        x_target: (B or 1, C, H, W) the target images.
        precision: "fp32", "bf16" or "fp16": the encoders' forward passes.

    Called on x' (B, C, H, W), it returns L(x') (B,); ``terms(x')`` returns each encoder's share (B, M).

    Examples::

        >>> f = EnsembleObjective([vae_a, vae_b], x, gray)  # x: (B, 3, 64, 64)
        >>> f(x)                                            # 1 per encoder at the clean images
        tensor([2., 2., ...])
    """

    def __init__(
        self, models: Sequence[torch.nn.Module], x: torch.Tensor, x_target: torch.Tensor, precision: Precision = "fp32"
    ) -> None:
        if not models:
            raise VaelensError("no encoder to attack; pass at least one --model")
        self.models, self.precision = list(models), precision
        with torch.no_grad():
            target = x_target.to(x).expand_as(x)  # (B, C, H, W)
            self.targets = [code(m, target, precision) for m in self.models]  # M x (B, k_m)
            self.scales = [
                self._distance(m, x, t).clamp_min(TINY) for m, t in zip(self.models, self.targets, strict=True)
            ]

    def _distance(self, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (code(model, x, self.precision) - target).square().sum(-1)  # (B,)

    def terms(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M): each encoder's squared distance to its target code over its clean value."""
        parts = [self._distance(m, x, t) / s for m, t, s in zip(self.models, self.targets, self.scales, strict=True)]
        return torch.stack(parts, -1)  # (B, M)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.terms(x).sum(-1)  # (B,)
