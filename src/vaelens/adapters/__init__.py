"""Third-party VAEs behind vaelens' protocol (docs/method.md section 1): diffusers, pythae, MONAI,
or any encode/decode pair. Each adapter imports its library only when called; a missing library
gets a one-line error naming the ``pip install`` that adds it.
"""

from vaelens.adapters._base import AdaptedVAE, LatentNorm, UpcastNote, float32_for_derivatives, require_extra, wrap
from vaelens.adapters._diffusers import from_diffusers
from vaelens.adapters._monai import from_monai
from vaelens.adapters._padding import Padded, declared_channels, fit_model, image_channels
from vaelens.adapters._pythae import FlowPosteriorWarning, from_pythae, load_pythae, load_pythae_hub
from vaelens.adapters._registry import REGISTRY, Entry, UnknownClassWarning, adapt, coverage_table

__all__ = [
    "REGISTRY",
    "AdaptedVAE",
    "Entry",
    "FlowPosteriorWarning",
    "LatentNorm",
    "Padded",
    "UnknownClassWarning",
    "UpcastNote",
    "adapt",
    "coverage_table",
    "declared_channels",
    "fit_model",
    "float32_for_derivatives",
    "from_diffusers",
    "from_monai",
    "from_pythae",
    "image_channels",
    "load_pythae",
    "load_pythae_hub",
    "require_extra",
    "wrap",
]
