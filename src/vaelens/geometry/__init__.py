"""Local geometry of VAEs: Jacobians, pullback metrics, spectra and scores (docs/method.md sections 3-4)."""

from vaelens._protocol import eval_mode, frozen
from vaelens.geometry._jacobian import (
    EncoderJacobians,
    EncoderLinearization,
    VmapFallbackWarning,
    batched_jacobian,
    decoder_jacobian,
    encoder_jacobians,
)
from vaelens.geometry._metric import (
    DEFAULT_MEMORY_BUDGET_GB,
    KINDS,
    METHODS,
    LanczosNotice,
    Method,
    MetricKind,
    PullbackMetric,
    Spectrum,
    check_kind,
    check_method,
    metric_kind,
    pullback_metric,
)
from vaelens.geometry._scores import NORMALIZATIONS, Normalization, Scores, robustness_scores

__all__ = [
    "DEFAULT_MEMORY_BUDGET_GB",
    "KINDS",
    "METHODS",
    "LanczosNotice",
    "Method",
    "MetricKind",
    "NORMALIZATIONS",
    "Normalization",
    "EncoderJacobians",
    "EncoderLinearization",
    "PullbackMetric",
    "Scores",
    "Spectrum",
    "VmapFallbackWarning",
    "batched_jacobian",
    "check_kind",
    "check_method",
    "decoder_jacobian",
    "encoder_jacobians",
    "eval_mode",
    "frozen",
    "metric_kind",
    "pullback_metric",
    "robustness_scores",
]
