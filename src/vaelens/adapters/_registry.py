"""The one adapter registry (docs/method.md section 1): every third-party autoencoder class vaelens
knows, how its posterior is read, what inputs it takes and where its latent normalisation lives.

Adapters read their rows from here; ``adapt`` dispatches through ``LIBRARIES`` by the model's
top-level package, importing the adapter module by name, so this table and the adapters never
import each other. The README's coverage table is ``coverage_table()``. A diffusers class this
table does not know is tried by the generic rule (``latent_dist`` means Gaussian; ``latent`` or
``latents`` means deterministic) with a one-line warning.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from vaelens._errors import VaelensError

PosteriorKind = Literal["gaussian", "deterministic", "vq", "sigma", "refused"]
"""How the encoder's output is read: a Gaussian ``latent_dist`` (mean, logvar); a deterministic
``latent``/``latents`` (or a distribution without variance); the pre-quantisation output of a VQ
model; MONAI's (mu, sigma) pair; or not at all."""

Layout = Literal["image", "image-as-video", "video", "audio", "waveform", "spectrogram", "declared"]
"""The per-sample input the user gives: image (C, H, W); video (C, T, H, W); audio (C, T);
waveform (T,) (mono, no channel axis); spectrogram (C, T, F); image-as-video: the user gives (C, H, W)
and the adapter adds a one-frame axis for a video-shaped model; declared: the model's own
``input_dim``."""

LAYOUT_AXES: dict[str, str] = {
    "image": "B, C, H, W",
    "image-as-video": "B, C, H, W",
    "video": "B, C, T, H, W",
    "audio": "B, C, T",
    "waveform": "B, T",
    "spectrogram": "B, C, T, F",
    "declared": "B, *input_dim",
}


def _config(model: Any) -> dict[str, Any]:
    config = getattr(model, "config", None) or getattr(model, "model_config", None) or {}
    return dict(config) if not isinstance(config, dict) else config


@dataclass(frozen=True)
class Rule:
    """A size multiple read off a model: ``levels`` is 2^(len(config[key]) - 1) (one halving per
    level after the first), ``product`` the product of config[key], ``attr`` the model's (or its
    config's) attribute ``key``, ``fixed`` the number ``value``. ``times`` multiplies the result."""

    how: Literal["levels", "product", "attr", "fixed", "count"]
    key: str = ""
    value: int = 1
    times: str = ""

    def __call__(self, model: Any) -> int:
        config = _config(model)
        if self.how == "fixed":
            base = self.value
        elif self.how == "attr":
            base = vars(model).get(self.key) or config.get(self.key) or 1  # vars: no deprecated config lookup
        elif self.how == "product":
            base = math.prod(int(v) for v in config[self.key])
        elif self.how == "count":  # 2^(number of true flags)
            base = 2 ** sum(bool(v) for v in config[self.key])
        else:
            base = 2 ** (len(config[self.key]) - 1)
        extra = int(config.get(self.times) or 1) if self.times else 1
        return int(base) * extra

    def __str__(self) -> str:
        text = {
            "levels": f"2^(len({self.key})-1)",
            "product": f"prod({self.key})",
            "attr": self.key,
            "count": f"2^sum({self.key})",
            "fixed": str(self.value),
        }[self.how]
        return f"{text} x {self.times}" if self.times else text


ONE = Rule("fixed")


@dataclass(frozen=True)
class Entry:
    """One class: how vaelens reads it.

    Arguments:
        library: the top-level package (diffusers, pythae, monai).
        name: the class name (a user's subclass matches through its bases).
        posterior: see ``PosteriorKind``.
        layout: see ``Layout``.
        spatial: the size multiple of the spatial axes (H, W; T for audio).
        frames: the multiple of the frame axis of a video model.
        causal: frames must be 1 + a multiple of ``frames`` (causal video VAEs keep the first frame).
        normalisation: where the diffusion model's latent normalisation lives (config keys).
        input_range: the range the model takes its inputs in; vaelens' [0, 1] is mapped to it.
        channels: the input channels where the config's ``in_channels`` means something else.
        refusal: why the class is refused (decoder only, a library outside the extras, ...).
        note: one line for the coverage table.
    """

    library: str
    name: str
    posterior: PosteriorKind
    layout: Layout = "image"
    spatial: Rule = ONE
    frames: Rule = ONE
    causal: bool = False
    normalisation: str = "-"
    input_range: tuple[float, float] = (-1.0, 1.0)
    channels: int | None = None
    refusal: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if (self.posterior == "refused") != (self.refusal is not None):
            raise ValueError(f"{self.name}: a refused entry needs a refusal, and only a refused one")

    @property
    def kinds(self) -> str:
        """The metric kinds that apply, as the coverage table says them."""
        return {
            "gaussian": "all",
            "sigma": "all",
            "deterministic": "mean, output",
            "vq": "mean, output",
            "refused": "-",
        }[self.posterior]


def _d(name: str, posterior: PosteriorKind, **kw: Any) -> Entry:
    return Entry("diffusers", name, posterior, **kw)


SD_NORM = "scaling_factor, shift_factor, latents_mean/latents_std"
BLOCKS = Rule("levels", "block_out_channels")
SCR, TCR = Rule("attr", "spatial_compression_ratio"), Rule("attr", "temporal_compression_ratio")
WAN_SPATIAL = Rule("levels", "dim_mult", times="patch_size")
WAN_FRAMES = Rule("fixed", value=4)  # Wan's encoder reads frames 1 + 4 at a time, whatever its config
DECODER_ONLY = "it is decoder-only (no encoder to measure)"

DIFFUSERS: tuple[Entry, ...] = (
    _d("AutoencoderKL", "gaussian", spatial=BLOCKS, normalisation=SD_NORM, note="SD 1.x/2.x, SDXL, SD3, Flux.1"),
    _d("AsymmetricAutoencoderKL", "gaussian", spatial=Rule("levels", "down_block_out_channels"),
       normalisation="scaling_factor"),
    _d("AutoencoderKLFlux2", "gaussian", spatial=BLOCKS, normalisation="(in the pipeline: batch norm)",
       note="Flux.2"),
    _d("AutoencoderKLTemporalDecoder", "gaussian", spatial=BLOCKS, normalisation="scaling_factor",
       note="Stable Video Diffusion: frames encoded as images"),
    _d("ConsistencyDecoderVAE", "gaussian", spatial=Rule("levels", "encoder_block_out_channels"),
       normalisation="scaling_factor", note="decoder samples with a fixed seed"),
    _d("AutoencoderKLHunyuanImage", "gaussian", spatial=SCR, normalisation="scaling_factor"),
    _d("AutoencoderKLKVAE", "gaussian", spatial=Rule("levels", "ch_mult")),
    _d("AutoencoderKLQwenImage", "gaussian", layout="image-as-video", spatial=WAN_SPATIAL,
       normalisation="latents_mean/latents_std"),
    _d("AutoencoderKLQwenImage21", "gaussian", layout="image-as-video", spatial=WAN_SPATIAL,
       normalisation="latents_mean/latents_std", note="4-channel (RGBA) input"),
    _d("AutoencoderTiny", "deterministic", spatial=Rule("levels", "encoder_block_out_channels"),
       normalisation="scaling_factor, shift_factor", note="TAESD"),
    _d("AutoencoderDC", "deterministic", spatial=SCR, normalisation="scaling_factor", note="DC-AE (Sana)"),
    _d("VQModel", "vq", spatial=BLOCKS, normalisation="scaling_factor",
       note="the latent before quantisation; decoding quantises"),
    _d("AutoencoderKLWan", "gaussian", layout="video", spatial=WAN_SPATIAL, frames=WAN_FRAMES, causal=True,
       normalisation="latents_mean/latents_std", note="Wan 2.1/2.2"),
    _d("AutoencoderKLHunyuanVideo", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="scaling_factor"),
    _d("AutoencoderKLHunyuanVideo15", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="scaling_factor"),
    _d("AutoencoderKLHunyuanImageRefiner", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="scaling_factor"),
    _d("AutoencoderKLCogVideoX", "gaussian", layout="video", spatial=BLOCKS, frames=TCR, causal=True,
       normalisation=SD_NORM),
    _d("AutoencoderKLLTXVideo", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="scaling_factor (latents_mean/std buffers)"),
    _d("AutoencoderKLLTX2Video", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="scaling_factor (latents_mean/std buffers)"),
    _d("AutoencoderKLMochi", "gaussian", layout="video", spatial=Rule("product", "spatial_expansions"),
       frames=Rule("product", "temporal_expansions"), causal=True, channels=3,
       normalisation="latents_mean/latents_std, scaling_factor",
       note="RGB in (in_channels counts its Fourier features)"),
    _d("AutoencoderKLAllegro", "gaussian", layout="video", spatial=BLOCKS, frames=TCR,
       normalisation="scaling_factor", note="read untiled: its encoder on the whole video (diffusers: 24-frame tiles)"),
    _d("AutoencoderKLMagvit", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="scaling_factor", note="EasyAnimate"),
    _d("AutoencoderKLCosmos", "deterministic", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="latents_mean/latents_std", note="an identity posterior"),
    _d("AutoencoderKLKVAEVideo", "gaussian", layout="video", spatial=Rule("levels", "ch_mult"),
       frames=Rule("attr", "temporal_compress_times"), causal=True),
    _d("AutoencoderKLMiniMaxH3", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="latents_mean/latents_std"),
    _d("AutoencoderVidTok", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True),
    _d("Kandinsky6SRVAE", "gaussian", layout="video", spatial=SCR, frames=TCR, causal=True,
       normalisation="scaling_factor"),
    _d("AutoencoderOobleck", "gaussian", layout="audio", spatial=Rule("product", "downsampling_ratios"),
       note="Stable Audio"),
    _d("AutoencoderKLKVAEAudio", "gaussian", layout="audio", spatial=Rule("product", "encoder_rates")),
    _d("AutoencoderKLMiniMaxH3Audio", "gaussian", layout="audio", spatial=Rule("product", "encoder_rates"),
       normalisation="latents_mean/latents_std"),
    _d("AutoencoderSAME", "deterministic", layout="audio", spatial=Rule("attr", "patch_size")),
    _d("LongCatAudioDiTVae", "deterministic", layout="audio", spatial=Rule("attr", "downsampling_ratio"),
       note="the posterior mean (its encode samples by default)"),
    _d("Cosmos3AVAEAudioTokenizer", "gaussian", layout="audio", spatial=Rule("attr", "hop_size"), channels=2,
       note="stereo"),
    _d("AutoencoderKLLTX2Audio", "gaussian", layout="spectrogram", spatial=Rule("fixed", value=4),
       note="mel spectrograms (B, C, T, mel_bins)"),
    _d("MMAudioVAE", "gaussian", layout="waveform", spatial=Rule("attr", "hop_length"), note="mono waveforms"),
    _d("AutoencoderRAE", "refused", refusal="its encoder is a transformers backbone (DINOv2, SigLIP, MAE); "
       "pip install transformers, then wrap it with vaelens.adapters.wrap(encode, decode)"),
    _d("RFD4ProteinaAutoencoder", "refused", refusal="its inputs are protein structures (atom coordinates and "
       "residue features), not arrays vaelens can perturb"),
    _d("LTX2VideoDiffusionDecoderModel", "refused", refusal=DECODER_ONLY),
    _d("MMAudioVocoder", "refused", refusal=DECODER_ONLY + " (a vocoder)"),
    _d("MiniMaxMusic3Vocoder", "refused", refusal=DECODER_ONLY + " (a vocoder)"),
)  # fmt: skip

_FLOW = "its posterior is {}, not the diagonal Gaussian vaelens' metric and divergences assume"
PYTHAE: tuple[Entry, ...] = tuple(
    Entry("pythae", n, "gaussian", "declared", input_range=(0.0, 1.0))
    for n in ("VAE", "BetaVAE", "IWAE", "CIWAE", "MIWAE", "PIWAE", "VAMP", "MSSSIM_VAE", "INFOVAE_MMD",
              "DisentangledBetaVAE", "FactorVAE", "BetaTCVAE", "VAEGAN", "Adversarial_AE")
) + (
    Entry("pythae", "HVAE", "gaussian", "declared", input_range=(0.0, 1.0),
          note="the Gaussian before its Hamiltonian flow (with a warning)"),
    Entry("pythae", "RHVAE", "gaussian", "declared", input_range=(0.0, 1.0),
          note="the Gaussian before its Hamiltonian flow (with a warning)"),
) + tuple(
    Entry("pythae", n, "deterministic", "declared", input_range=(0.0, 1.0))
    for n in ("AE", "WAE_MMD", "RAE_L2", "RAE_GP")
) + (
    Entry("pythae", "VQVAE", "vq", "declared", input_range=(0.0, 1.0),
          note="the code before quantisation; decoding quantises"),
    Entry("pythae", "VAE_IAF", "refused", refusal=_FLOW.format("an inverse autoregressive flow")),
    Entry("pythae", "VAE_LinNF", "refused", refusal=_FLOW.format("a linear normalising flow")),
    Entry("pythae", "PoincareVAE", "refused", refusal=_FLOW.format("a wrapped normal on the Poincare ball")),
    Entry("pythae", "SVAE", "refused", refusal=_FLOW.format("a von Mises-Fisher distribution on the sphere")),
)  # fmt: skip

MONAI: tuple[Entry, ...] = (
    Entry("monai", "AutoencoderKL", "sigma", "image", spatial=Rule("levels", "channels"), input_range=(0.0, 1.0),
          note="encoder returns (mu, sigma): logvar = 2 log sigma"),
)  # fmt: skip

REGISTRY: dict[tuple[str, str], Entry] = {(e.library, e.name): e for e in DIFFUSERS + PYTHAE + MONAI}

LIBRARIES: dict[str, str] = {
    "diffusers": "vaelens.adapters._diffusers:from_diffusers",
    "pythae": "vaelens.adapters._pythae:from_pythae",
    "monai": "vaelens.adapters._monai:from_monai",
}
"""Top-level package -> the adapter that takes its models, imported by name when first needed."""


class UnknownClassWarning(UserWarning):
    """A class the registry does not know, tried by the generic rule."""


def refusals(library: str) -> dict[str, str]:
    """name -> why, for a library's refused classes."""
    return {e.name: e.refusal for e in REGISTRY.values() if e.library == library and e.refusal is not None}


def lookup(library: str, model: Any) -> Entry | None:
    """The row of a model's class, or of its nearest known base (a user's subclass)."""
    for cls in type(model).__mro__:
        entry = REGISTRY.get((library, cls.__name__))
        if entry is not None:
            return entry
    return None


def generic_entry(library: str, model: Any, posterior: PosteriorKind, layout: Layout) -> Entry:
    """A row for a class the table does not know, with a one-line warning naming it."""
    name = type(model).__name__
    warnings.warn(
        f"{name} is not in vaelens' adapter registry (a newer {library}?); reading it by the generic rule "
        f"as a {posterior} encoder of {layout} inputs: check the results, and report it if they look wrong",
        UnknownClassWarning,
        stacklevel=3,
    )
    return Entry(library, name, posterior, layout, spatial=Rule("attr", "spatial_compression_ratio"),
                 frames=Rule("attr", "temporal_compression_ratio"), note="generic rule")  # fmt: skip


def adapter_for(model: Any) -> Callable[..., Any] | None:
    """The adapter function for a model's library (by the top-level package of its class or a base)."""
    for cls in type(model).__mro__:  # a user's subclass of a library's model counts as that library's
        target = LIBRARIES.get(cls.__module__.split(".")[0])
        if target is not None:
            module, _, function = target.partition(":")
            return getattr(importlib.import_module(module), function)
    return None


def adapt(model: Any, **options: Any) -> Any:
    """Any supported model as a vaelens VAE: a diffusers, pythae or MONAI autoencoder through its
    adapter (``options`` such as ``latent_space`` go to it), and a module that already follows the
    protocol (``encode``/``decode``) as it is.

    Checked in that order: MONAI's AutoencoderKL has encode and decode methods, but its encoder
    returns sigma, not a log-variance, so it must not be taken for a protocol module.
    """
    import torch

    adapter = adapter_for(model)
    if adapter is not None:
        accepted = inspect.signature(adapter).parameters
        return adapter(model, **{k: v for k, v in options.items() if k in accepted})
    if isinstance(model, torch.nn.Module) and hasattr(model, "encode") and hasattr(model, "decode"):
        return model
    raise VaelensError(
        f"{type(model).__name__} is neither a diffusers, pythae or MONAI autoencoder nor a module with "
        "encode(x) -> (mu, logvar) and decode(z); wrap it with vaelens.adapters.wrap(encode, decode)"
    )


def coverage_table(entries: Iterable[Entry] | None = None) -> str:
    """The README's coverage table (markdown), generated from the registry."""
    rows = [
        "| library | class | posterior | kinds | input | size multiple | latent normalisation | note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for e in entries if entries is not None else REGISTRY.values():
        if e.refusal is not None:
            rows.append(f"| {e.library} | {e.name} | refused | - | - | - | - | {e.refusal} |")
            continue
        multiple = str(e.spatial) if e.spatial != ONE else "1"
        if e.layout == "video":
            multiple += f"; T = {'1 + ' if e.causal else ''}k x {e.frames}"
        rows.append(
            f"| {e.library} | {e.name} | {e.posterior} | {e.kinds} | ({LAYOUT_AXES[e.layout]}) | {multiple} | "
            f"{e.normalisation} | {e.note} |"
        )
    return "\n".join(rows) + "\n"
