"""Evaluating a VAE on a batch of inputs: audits, attack sweeps, the eigen-direction probe,
reconstruction quality (docs/method.md sections 2-5) and image protection (section 9). Pure
functions over (model, x): nothing here knows of run directories; the ``write_*`` functions write
their results into a directory given.
"""

from vaelens.adapters import fit_model, image_channels
from vaelens.evaluation._attacks import (
    METHODS,
    AttackSpec,
    AttackSweepResult,
    Method,
    attack_output,
    attack_sweep,
    auddc,
    choose_targets,
    write_attack_report,
)
from vaelens.evaluation._audit import SUMMARY_STATS, AuditConfig, AuditResult, audit, audit_output, write_audit
from vaelens.evaluation._bracket import Bracket, bracket, summarize, write_certification
from vaelens.evaluation._ensemble import PRECISIONS, EnsembleObjective, Precision, check_precision
from vaelens.evaluation._images import ImageFile, read_image, read_image_file, read_image_files, read_images
from vaelens.evaluation._probe import ProbeResult, eigen_probe
from vaelens.evaluation._protect import (
    EncoderCheck,
    Perturb,
    ProtectConfig,
    Protection,
    TransformCheck,
    check_inputs,
    fit_encoders,
    holds,
    protect,
    protect_image,
    pull,
)
from vaelens.evaluation._protect_writer import (
    check_not_images,
    claim_protection,
    held_counts,
    protect_columns,
    protect_output,
    protection_summary,
    transfer_table,
    write_protection,
)
from vaelens.evaluation._protector import (
    ProtectorTrainConfig,
    apply_protector,
    crop_batches,
    protector_loss,
    protector_perturb,
    train_epoch,
    training_images,
)
from vaelens.evaluation._quality import Quality, reconstruction_quality
from vaelens.evaluation._transforms import EVALUATED, ROBUST, RandomTransform, evaluation_transforms

__all__ = [
    "PRECISIONS",
    "EncoderCheck",
    "EnsembleObjective",
    "Perturb",
    "Precision",
    "ProtectorTrainConfig",
    "apply_protector",
    "check_precision",
    "crop_batches",
    "fit_encoders",
    "protection_summary",
    "protector_loss",
    "protector_perturb",
    "pull",
    "train_epoch",
    "training_images",
    "transfer_table",
    "EVALUATED",
    "METHODS",
    "Method",
    "ROBUST",
    "SUMMARY_STATS",
    "AttackSpec",
    "AttackSweepResult",
    "AuditConfig",
    "AuditResult",
    "Bracket",
    "ProbeResult",
    "ImageFile",
    "ProtectConfig",
    "Protection",
    "Quality",
    "RandomTransform",
    "TransformCheck",
    "attack_output",
    "attack_sweep",
    "audit_output",
    "audit",
    "auddc",
    "bracket",
    "check_inputs",
    "check_not_images",
    "choose_targets",
    "claim_protection",
    "eigen_probe",
    "evaluation_transforms",
    "fit_model",
    "held_counts",
    "holds",
    "image_channels",
    "protect",
    "protect_columns",
    "protect_image",
    "protect_output",
    "read_image",
    "read_image_file",
    "read_image_files",
    "read_images",
    "reconstruction_quality",
    "summarize",
    "write_attack_report",
    "write_audit",
    "write_certification",
    "write_protection",
]
