"""Training beta-VAEs, plain or with a defence (docs/method.md sections 1, 6 and 7).

Each defence is one file behind the ``Defence`` interface (``_defence.py``), found by name in
``_registry.py``: none, mixup, adversarial and noise.
"""

from vaelens.training._adversarial import AdversarialConfig, AdversarialTerms, adversarial_terms
from vaelens.training._config import TrainConfig, input_shape_of
from vaelens.training._defence import Defence, DefenceBatch, DefenceLoss
from vaelens.training._loss import LossTerms, Reconstruction, beta_vae_loss, kl_to_prior, reconstruct
from vaelens.training._mixup import LATENT_TARGETS, MixupConfig, MixupTerms, mixup_terms
from vaelens.training._noise import NoiseConfig
from vaelens.training._none import NoDefence
from vaelens.training._registry import DEFENCE_TERMS, DEFENCES, check_defence, defence_from_dict
from vaelens.training._rundir import (
    CONFIG,
    EPOCH_FILES,
    LOCK,
    METRICS,
    STATE,
    checksum,
    commit_checkpoint,
    epoch_file,
    model_file,
    read_config,
    read_state,
    remove_uncommitted,
    run_lock,
    weight_files,
)
from vaelens.training._trainer import TrainResult, evaluate_reconstruction, train

__all__ = [
    "AdversarialConfig",
    "AdversarialTerms",
    "adversarial_terms",
    "DEFENCES",
    "DEFENCE_TERMS",
    "Defence",
    "DefenceBatch",
    "DefenceLoss",
    "NoDefence",
    "NoiseConfig",
    "check_defence",
    "defence_from_dict",
    "EPOCH_FILES",
    "LATENT_TARGETS",
    "epoch_file",
    "CONFIG",
    "LOCK",
    "METRICS",
    "STATE",
    "checksum",
    "commit_checkpoint",
    "model_file",
    "weight_files",
    "read_config",
    "read_state",
    "remove_uncommitted",
    "run_lock",
    "input_shape_of",
    "MixupConfig",
    "MixupTerms",
    "mixup_terms",
    "LossTerms",
    "Reconstruction",
    "TrainConfig",
    "TrainResult",
    "beta_vae_loss",
    "evaluate_reconstruction",
    "kl_to_prior",
    "reconstruct",
    "train",
]
