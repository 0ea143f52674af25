"""vaelens: adversarial robustness of VAEs through the local geometry of their encoders.

Implements Khan and Storkey, AISTATS 2023 (see PAPER.md). The public API is what this module
re-exports.
"""

__version__ = "0.1.0"

from vaelens import data  # noqa: E402
from vaelens._checkpoint import load  # noqa: E402
from vaelens._errors import VaelensError  # noqa: E402
from vaelens._protocol import Posterior  # noqa: E402
from vaelens.attacks import PGD, Damage, EigenAttack, RandomNoise, TargetedAttack, attack_damage  # noqa: E402
from vaelens.evaluation import eigen_probe  # noqa: E402
from vaelens.geometry import (  # noqa: E402
    PullbackMetric,
    Scores,
    Spectrum,
    pullback_metric,
    robustness_scores,
)
from vaelens.training import TrainConfig, train  # noqa: E402

__all__ = [
    "PGD",
    "Damage",
    "EigenAttack",
    "RandomNoise",
    "TargetedAttack",
    "attack_damage",
    "Posterior",
    "PullbackMetric",
    "Scores",
    "Spectrum",
    "TrainConfig",
    "VaelensError",
    "__version__",
    "data",
    "eigen_probe",
    "load",
    "pullback_metric",
    "robustness_scores",
    "train",
]
