"""Certified robustness: center smoothing of a VAE and certificates on its outputs
(docs/method.md section 10). Library layer: pure functions over (model, x)."""

from vaelens.certification._certificate import Certificate, certify, certify_smoothed, check_eps, required_quantile
from vaelens.certification._smooth import OUTPUTS, SmoothConfig, Smoothed, SmoothedVAE, auto_delta, smooth

__all__ = [
    "OUTPUTS",
    "Certificate",
    "SmoothConfig",
    "Smoothed",
    "SmoothedVAE",
    "auto_delta",
    "certify",
    "check_eps",
    "certify_smoothed",
    "required_quantile",
    "smooth",
]
