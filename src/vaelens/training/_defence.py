"""The defence interface: what the training loop asks of a defence (docs/method.md section 6).

A defence is a frozen config dataclass that subclasses ``Defence``. The loop knows none by name:
per batch it asks ``inputs`` for what the encoder sees in the ELBO (the clean images for most) and
``terms`` for the loss it adds and the terms it logs, by name. Each defence draws its randomness
from its own stream (``stream``), seeded per epoch, so a resumed run is identical to an
uninterrupted one. Adding a defence is one file beside ``_mixup.py`` and one line in
``_registry.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from vaelens._configs import from_dict


class DefenceBatch(NamedTuple):
    """What a defence sees of one training step.

    Arguments:
        model: the VAE, in training mode.
        x: (B, *input_shape) the clean batch.
        z: (B, k) the ELBO's reparameterised sample.
        noise: (B, k) the standard normal draws behind z.
        beta: the KL weight of this step.
        likelihood: "bernoulli" or "gaussian".
        generator: the defence's own random stream for this epoch (see ``Defence.stream``).
        seed: a seed for this step alone (derived from the run's seed, the epoch and the step).
    """

    model: torch.nn.Module
    x: torch.Tensor
    z: torch.Tensor
    noise: torch.Tensor
    beta: float
    likelihood: str
    generator: torch.Generator
    seed: int


class DefenceLoss(NamedTuple):
    """A defence's contribution to one step.

    ``parts``: the weighted scalars it adds to the ELBO's loss, added one by one in this order;
    ``terms``: the scalars it logs (batch means), keyed by the names in ``Defence.terms``.
    """

    parts: tuple[torch.Tensor, ...]
    terms: dict[str, torch.Tensor]


@dataclass(frozen=True)
class Defence:
    """Plain training; the base of every defence.

    Class attributes a defence sets:
        name: its name on the command line and in result files.
        run_suffix: appended to a sweep's run names ("" for no defence).
        terms: the names of the terms it logs in metrics.csv.
        stream: the name of its random stream; ``stream_on_device`` puts the generator on the
            model's device instead of the CPU.
    """

    name: ClassVar[str] = "none"
    run_suffix: ClassVar[str] = ""
    terms: ClassVar[tuple[str, ...]] = ()
    stream: ClassVar[str] = "defence"
    stream_on_device: ClassVar[bool] = False

    def inputs(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, *input_shape): what the encoder sees in the ELBO, which reconstructs the clean x."""
        return x

    def loss(self, batch: DefenceBatch) -> DefenceLoss | None:
        """The loss this defence adds to the ELBO and its logged terms; None: nothing added."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **settings}``: what config.json holds (``defence_from_dict`` reads it)."""
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Defence:
        """The defence from its settings (without the name), each key checked."""
        return from_dict(cls, d, f"{cls.name} config")
