"""Adversarial attacks on a VAE's encoding (docs/method.md sections 2 and 3), one per module.

Every attack is a thin subclass of ``Attack``: ``attack(x) -> x_adv`` (targeted:
``attack(x, x_target)``), batched, within budget, in [0, 1], with the model untouched.
"""

from vaelens.attacks._apgd import APGD, auto_pgd
from vaelens.attacks._base import NORMS, Attack, check_budget, random_in_ball
from vaelens.attacks._damage import Damage, attack_damage, ms_ssim
from vaelens.attacks._eigen import EigenAttack
from vaelens.attacks._objectives import KIND_OBJECTIVE, OBJECTIVES, Reference, divergence
from vaelens.attacks._pgd import PGD
from vaelens.attacks._random import RandomNoise
from vaelens.attacks._strongest import Strongest
from vaelens.attacks._targeted import TargetedAttack

__all__ = [
    "APGD",
    "KIND_OBJECTIVE",
    "NORMS",
    "OBJECTIVES",
    "PGD",
    "Attack",
    "Damage",
    "EigenAttack",
    "RandomNoise",
    "Reference",
    "Strongest",
    "TargetedAttack",
    "attack_damage",
    "auto_pgd",
    "check_budget",
    "divergence",
    "ms_ssim",
    "random_in_ball",
]
