"""vaelens: adversarial robustness of VAEs through the local geometry of their encoders.

Implements Khan and Storkey, AISTATS 2023, as described in the project's docs/method.md. The
public API is what this module re-exports; each name has one home in a subpackage.
"""

from vaelens import adapters, data
from vaelens._errors import Interrupted, VaelensError
from vaelens._protocol import Posterior
from vaelens._version import __version__
from vaelens.attacks import PGD, Damage, EigenAttack, RandomNoise, TargetedAttack, attack_damage
from vaelens.certify import Certificate, certify, smooth
from vaelens.evaluation import eigen_probe
from vaelens.experiments import load, load_model
from vaelens.geometry import (
    PullbackMetric,
    Scores,
    Spectrum,
    pullback_metric,
    robustness_scores,
)
from vaelens.training import TrainConfig, train

__all__ = [
    "adapters",
    "load_model",
    "PGD",
    "Certificate",
    "Damage",
    "EigenAttack",
    "Interrupted",
    "RandomNoise",
    "TargetedAttack",
    "attack_damage",
    "certify",
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
    "smooth",
    "train",
]
