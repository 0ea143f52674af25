"""Training configuration: a frozen dataclass validated on construction, saved as config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from vaelens._configs import check_fields, from_dict
from vaelens._errors import VaelensError
from vaelens.data import load_dataset, sample_shape
from vaelens.models import ModelConfig
from vaelens.training._adversarial import AdversarialConfig
from vaelens.training._defence import Defence
from vaelens.training._mixup import MixupConfig
from vaelens.training._none import NoDefence
from vaelens.training._registry import defence_from_dict

# Settings that say where or how fast a run executes, not what it computes. A run started again
# with other values for these is the same run.
_NOT_IDENTITY = ("device", "data_root")


@dataclass(frozen=True)
class TrainConfig:
    """A beta-VAE training run (docs/method.md sections 1 and 7).

    Arguments:
        dataset: data set name (see ``vaelens.data.load_dataset``).
        model: the architecture to train.
        beta: weight of KL(q(z|x) || p(z)); must be >= 0.
        epochs: number of passes over the training split.
        batch_size: samples per optimiser step.
        lr: Adam learning rate at the start of the cosine schedule.
        seed: seeds initialisation, shuffling and the reparameterisation noise.
        warmup_epochs: KL warm-up: beta rises linearly from 0 over this many epochs (0 = off).
        cosine_t_max: period (in epochs) of the cosine schedule; None means ``epochs``.
        device: "cpu", "cuda" or "mps".
        data_root: cache directory for downloaded data sets (None = the default).
        image_size, image_channels: image size and channels for "folder:" data sets.
        defence: the defence trained with (docs/method.md section 6): ``NoDefence()`` (plain
            beta-VAE training), ``MixupConfig``, ``AdversarialConfig`` or ``NoiseConfig``.
        save_epochs: epochs whose weights are kept as ``epoch-N.safetensors`` beside the final
            ones (each in 1..epochs), for evaluating one run at several training lengths.
    """

    dataset: str = "mnist-5k"
    model: ModelConfig = field(default_factory=ModelConfig)
    beta: float = 1.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    warmup_epochs: float = 0.0
    cosine_t_max: int | None = None
    device: str = "cpu"
    data_root: str | None = None
    image_size: int = 64
    image_channels: int = 3
    defence: Defence = field(default_factory=NoDefence)
    save_epochs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig.from_dict(self.model))
        if isinstance(self.defence, dict):
            object.__setattr__(self, "defence", defence_from_dict(self.defence))
        check_fields(self)
        object.__setattr__(self, "save_epochs", tuple(sorted(set(self.save_epochs))))
        checks = [
            (math.isfinite(self.beta) and self.beta >= 0, f"beta must be >= 0; got {self.beta}"),
            (self.epochs >= 1, f"epochs must be >= 1; got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1; got {self.batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be > 0; got {self.lr}"),
            (self.warmup_epochs >= 0, f"warmup_epochs must be >= 0; got {self.warmup_epochs}"),
            (
                self.cosine_t_max is None or self.cosine_t_max >= 1,
                f"cosine_t_max must be >= 1; got {self.cosine_t_max}",
            ),
            (
                all(1 <= e <= self.epochs for e in self.save_epochs),
                f"save_epochs (--save-epochs) must lie in 1..epochs ({self.epochs}); got {list(self.save_epochs)}",
            ),
            (
                self.device.split(":")[0] in ("cpu", "cuda", "mps"),
                f"device must be cpu, cuda or mps; got {self.device!r}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise VaelensError(message)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        d["defence"] = self.defence.to_dict()
        d["save_epochs"] = list(self.save_epochs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a config.json, including one written before defences had one field (its
        ``mixup`` and ``adversarial`` objects, at most one of them set)."""
        if isinstance(d, dict) and ("mixup" in d or "adversarial" in d) and "defence" not in d:
            d = dict(d)
            mixup, adversarial = d.pop("mixup", None), d.pop("adversarial", None)
            if mixup is not None and adversarial is not None:
                raise VaelensError("a training config sets both mixup and adversarial; keep one defence")
            if mixup is not None:
                d["defence"] = MixupConfig.from_dict(mixup)
            elif adversarial is not None:
                d["defence"] = AdversarialConfig.from_dict(adversarial)
        return from_dict(cls, d, "training config")

    def identity(self) -> dict[str, Any]:
        """The settings that decide what the run computes (everything but device and paths)."""
        d = self.to_dict()
        for key in _NOT_IDENTITY:
            d.pop(key)
        return d


def input_shape_of(dataset: str, data_root: str | None = None, image_size: int = 64, image_channels: int = 3) -> tuple:
    """The per-sample shape (C, H, W) of a data set's images, for building a model for it."""
    return sample_shape(load_dataset(dataset, "test", data_root, image_size, image_channels))
