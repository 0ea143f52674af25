"""vaelens: adversarial robustness of VAEs through the local geometry of their encoders.

Implements Khan and Storkey, AISTATS 2023, as described in the project's docs/method.md. The
public API is what this module re-exports; each name has one home in a subpackage.

The names load on first use (PEP 562), so that ``vaelens --help`` and tools that only need a
config never pay for torch: ``import vaelens`` is instant, ``vaelens.PGD`` imports the attacks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vaelens._errors import Interrupted, VaelensError
from vaelens._version import __version__

if TYPE_CHECKING:
    from vaelens import adapters, data
    from vaelens._protocol import Posterior
    from vaelens.attacks import PGD, Damage, EigenAttack, RandomNoise, TargetedAttack, attack_damage
    from vaelens.certification import Certificate, certify, smooth
    from vaelens.evaluation import eigen_probe
    from vaelens.experiments import load, load_model
    from vaelens.geometry import PullbackMetric, Scores, Spectrum, pullback_metric, robustness_scores
    from vaelens.training import TrainConfig, train

# public name -> the module that defines it (a subpackage itself for "adapters" and "data")
_HOMES = {
    "adapters": "vaelens.adapters",
    "data": "vaelens.data",
    "Posterior": "vaelens._protocol",
    "PGD": "vaelens.attacks",
    "Damage": "vaelens.attacks",
    "EigenAttack": "vaelens.attacks",
    "RandomNoise": "vaelens.attacks",
    "TargetedAttack": "vaelens.attacks",
    "attack_damage": "vaelens.attacks",
    "Certificate": "vaelens.certification",
    "certify": "vaelens.certification",
    "smooth": "vaelens.certification",
    "eigen_probe": "vaelens.evaluation",
    "load": "vaelens.experiments",
    "load_model": "vaelens.experiments",
    "PullbackMetric": "vaelens.geometry",
    "Scores": "vaelens.geometry",
    "Spectrum": "vaelens.geometry",
    "pullback_metric": "vaelens.geometry",
    "robustness_scores": "vaelens.geometry",
    "TrainConfig": "vaelens.training",
    "train": "vaelens.training",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'vaelens' has no attribute {name!r}")
    module = importlib.import_module(home)
    value = module if home == f"vaelens.{name}" else getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
