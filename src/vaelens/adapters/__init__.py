"""Third-party VAEs behind vaelens' protocol (docs/method.md section 1): diffusers, pythae, MONAI,
or any encode/decode pair. Each adapter imports its library only when called; a missing library
gets a one-line error naming the ``pip install`` that adds it.
"""

from vaelens.adapters._base import AdaptedVAE, UpcastNote, adapt, require_extra, wrap
from vaelens.adapters._diffusers import from_diffusers
from vaelens.adapters._monai import from_monai
from vaelens.adapters._padding import Padded, fit_model, image_channels
from vaelens.adapters._pythae import FlowPosteriorWarning, from_pythae, load_pythae, load_pythae_hub

__all__ = [
    "AdaptedVAE",
    "FlowPosteriorWarning",
    "Padded",
    "UpcastNote",
    "adapt",
    "fit_model",
    "from_diffusers",
    "from_monai",
    "from_pythae",
    "image_channels",
    "load_pythae",
    "load_pythae_hub",
    "require_extra",
    "wrap",
]
