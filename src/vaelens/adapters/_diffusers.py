"""diffusers' autoencoders (image, video and audio) as vaelens VAEs.

docs/method.md section 1 (the protocol, latent spaces) and section 3 (which metric kinds apply).
What each class is (posterior, input layout, size multiple, normalisation) is its row in
``_registry``; this module only reads a model by its row. Inputs in [0, 1] are mapped to the
model's [-1, 1]; the latent (C, h, w), (C, t, h, w) or (C, t) is flattened; by default it is
normalised as the diffusion model sees it (``latent_space="diffusion"``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from vaelens._errors import VaelensError
from vaelens.adapters._base import AdaptedVAE, LatentNorm, float32_for_derivatives, require_extra
from vaelens.adapters._registry import Entry, generic_entry, lookup

LatentSpace = Literal["diffusion", "raw"]
CHANNEL_KEYS = ("in_channels", "encoder_in_channels", "input_channels", "audio_channels", "num_channels")


def _read(out: Any) -> Any:
    """The first field of a diffusers output (a dataclass-like ModelOutput or a tuple)."""
    return out[0] if isinstance(out, tuple) else out


def _posterior(model: Any, probe: Any) -> Literal["gaussian", "deterministic"] | None:
    dist = getattr(probe, "latent_dist", None)
    if dist is not None:
        return "gaussian" if hasattr(dist, "logvar") else "deterministic"
    if getattr(probe, "latent", None) is not None or getattr(probe, "latents", None) is not None:
        return "deterministic"
    return None


def _per_frame(conv: torch.nn.Module, v: torch.Tensor) -> torch.Tensor:
    """A 2-D convolution applied to each frame of (B, C, T, H, W), as Allegro's quant convs are."""
    frames = v.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (B T, C, H, W)
    return conv(frames).unflatten(0, (v.shape[0], -1)).permute(0, 2, 1, 3, 4)  # (B, C', T, H, W)


def _allegro_encode(model: Any, x: torch.Tensor) -> Any:
    """Allegro's encoder on the whole video: what diffusers computes on each of its fixed 24-frame
    tiles (and all it computes for a video of one tile), without the in-place tiling."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    return DiagonalGaussianDistribution(_per_frame(model.quant_conv, model.encoder(x)))  # (B, 2C, t, h, w)


class _Diffusers(AdaptedVAE):
    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.name == "AutoencoderKLAllegro":
            out = _allegro_encode(self.inner, x)
        elif self.name == "LongCatAudioDiTVae":  # its encode samples by default: read the posterior mean
            out = _read(self.inner.encode(x, sample_posterior=False))
        else:
            out = _read(self.inner.encode(x))
        dist = getattr(out, "latent_dist", None)
        if dist is None and hasattr(out, "logvar"):  # a bare DiagonalGaussianDistribution (a tuple's field)
            dist = out
        if dist is not None:
            if hasattr(dist, "logvar") and not self.deterministic:
                return dist.mean, dist.logvar
            return dist.mode(), None
        latent = getattr(out, "latents", None)
        latent = getattr(out, "latent", None) if latent is None else latent
        return (out if latent is None else latent), None

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.name == "AutoencoderKLAllegro":  # untiled, as its encoder
            return self.inner.decoder(_per_frame(self.inner.post_quant_conv, z))
        if self.name == "AutoencoderKLTemporalDecoder":
            out = self.inner.decode(z, num_frames=1)  # each input is one frame
        elif self.name == "ConsistencyDecoderVAE":  # a sampler: a fixed seed makes it a function of z
            out = self.inner.decode(z, generator=torch.Generator(z.device).manual_seed(0))
        else:
            out = self.inner.decode(z)
        out = getattr(out, "sample", out)
        return _read(out)


def _config_value(vae: Any, key: str) -> Any:
    config = getattr(vae, "config", None) or {}  # a class of a newer diffusers may have none
    value = config.get(key) if hasattr(config, "get") else getattr(config, key, None)
    if value is None:  # a buffer (LTX's latents_mean) or a plain attribute; not diffusers' deprecated config lookup
        value = vae._buffers.get(key, vae.__dict__.get(key))
    return value


def latent_norm(vae: Any) -> LatentNorm | None:
    """The diffusion model's latent normalisation from the config (None when it has none):
    (z - latents_mean) * scaling_factor / latents_std where the means and stds exist (SDXL's
    convention; Wan and Qwen have no scaling_factor), else (z - shift_factor) * scaling_factor."""
    mean, std = _config_value(vae, "latents_mean"), _config_value(vae, "latents_std")
    factor, shift = _config_value(vae, "scaling_factor"), _config_value(vae, "shift_factor")
    as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float64).detach().flatten().cpu()  # noqa: E731
    if mean is not None and std is not None:
        scale = (1.0 if factor is None else float(factor)) / as_tensor(std)
        return LatentNorm(
            as_tensor(mean), scale, "latents_mean, latents_std" + (", scaling_factor" * (factor is not None))
        )
    if factor is None and shift is None:
        return None
    source = ", ".join(k for k, v in (("scaling_factor", factor), ("shift_factor", shift)) if v is not None)
    return LatentNorm(as_tensor(shift or 0.0), as_tensor(1.0 if factor is None else factor), source)


def _channels(vae: Any) -> int | None:
    for key in CHANNEL_KEYS:
        value = _config_value(vae, key)
        if isinstance(value, int):
            return value
    return None


def _entry(vae: Any) -> Entry:
    entry = lookup("diffusers", vae)
    if entry is not None:
        if entry.refusal is not None:
            raise VaelensError(
                f"{entry.name} is not supported: {entry.refusal}; for another model use "
                "vaelens.adapters.wrap(encode, decode) or --model python:FILE.py:FUNCTION"
            )
        return entry
    if not callable(getattr(vae, "encode", None)) or not callable(getattr(vae, "decode", None)):
        raise VaelensError(
            f"{type(vae).__name__} has no encode and decode; for another model use "
            "vaelens.adapters.wrap(encode, decode) or --model python:FILE.py:FUNCTION"
        )
    source = getattr(type(vae).encode, "__doc__", "") or ""
    layout = "video" if "video" in (type(vae).__name__.lower() + source.lower()) else "image"
    return generic_entry("diffusers", vae, "gaussian", layout)  # type: ignore[arg-type]


def from_diffusers(vae: Any, latent_space: LatentSpace = "diffusion") -> AdaptedVAE:
    """A diffusers autoencoder (any class in the registry, and unknown ones by the generic rule)
    as a vaelens VAE on inputs in [0, 1].

    Arguments:
        vae: the diffusers model (held, never modified; a half-precision one is copied to float32).
        latent_space: "diffusion" (default): latents normalised as the diffusion model sees them,
            by the config's ``scaling_factor``/``shift_factor`` or ``latents_mean``/``latents_std``
            (the raw latent where the config has none); "raw": the encoder's own latent.

    Inputs: images (B, C, H, W), videos (B, C, T, H, W), audio (B, C, T), as the class's row in the
    registry says, with sizes multiples of its compression. Gaussian encoders (``latent_dist``) get
    every metric kind; deterministic ones (AutoencoderTiny, AutoencoderDC, VQModel before
    quantisation, ...) the "mean" and "output" kinds and the "latent" and "recon" objectives.

    Examples::

        >>> vae = diffusers.AutoencoderKL.from_pretrained("sd-vae-ft-mse", local_files_only=True)
        >>> model = vaelens.adapters.from_diffusers(vae)
        >>> model.encode(x)[0].shape                     # x: (2, 3, 256, 256) -> torch.Size([2, 4096])
    """
    require_extra("diffusers")
    if latent_space not in ("diffusion", "raw"):
        raise VaelensError(f"latent_space must be diffusion or raw; got {latent_space!r}")
    entry = _entry(vae)
    model = float32_for_derivatives(vae)
    return _Diffusers(
        model,
        input_range=entry.input_range,
        channels=entry.channels or (_channels(vae) if entry.layout != "waveform" else None),
        size_multiple=entry.spatial(vae),
        deterministic=entry.posterior in ("deterministic", "vq"),
        name=entry.name if entry.note != "generic rule" else type(vae).__name__,
        layout=entry.layout,
        frame_multiple=entry.frames(vae) if entry.layout == "video" else 1,
        causal=entry.causal,
        latent_norm=latent_norm(vae) if latent_space == "diffusion" else None,
    )
