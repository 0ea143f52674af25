"""The worst-case ensemble: per input, the most damaging of EigenAttack, PGD and APGD.

AutoAttack's lesson for classifiers (Croce and Hein 2020) holds for VAEs too: a defence is only as
robust as the strongest attack it was tested against, and no single attack is strongest on every
input. docs/method.md section 2.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vaelens._protocol import Kind, Norm, Objective
from vaelens.attacks._apgd import APGD
from vaelens.attacks._base import Attack, best_of
from vaelens.attacks._eigen import EigenAttack
from vaelens.attacks._objectives import KIND_OBJECTIVE, Reference, check_objective, divergence
from vaelens.attacks._pgd import PGD

MEMBERS = ("eigen", "pgd", "apgd")


class Strongest(Attack):
    """Run EigenAttack, PGD and APGD at the same budget; keep, per input, the most damaging.

    Arguments:
        model: a VAE.
        eps: budget (> 0).
        norm: "l2" or "linf".
        objective: what "most damaging" means, and what PGD and APGD maximise (default "kl").
        steps: PGD steps (APGD takes twice as many, its usual budget). Default 50.
        kind: the metric kind of EigenAttack's eigenvectors; default the kind whose second-order
            model is the objective (kl: fisher, latent: mean, stochastic: stochastic, recon:
            output), fisher for the others.
        directions: eigenvectors EigenAttack tries. Default 1.
        seed: seeds the random starts.

    After a call, ``last_winners`` names the member that won each input.

    Examples::

        >>> attack = vaelens.attacks.Strongest(model, eps=1.0, objective="kl")
        >>> x_adv = attack(x)                               # x: (B, 1, 28, 28) -> (B, 1, 28, 28)
        >>> attack.last_winners[:3]
        ['apgd', 'pgd', 'apgd']
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float,
        norm: Norm = "l2",
        objective: Objective = "kl",
        steps: int = 50,
        kind: Kind | None = None,
        directions: int = 1,
        seed: int | None = 0,
    ) -> None:
        super().__init__(model, eps, norm, seed)
        self.objective = check_objective(objective)
        modelled: dict[str, Kind] = {v: k for k, v in KIND_OBJECTIVE.items() if k != "output-stochastic"}
        eigen_kind: Kind = kind or modelled.get(self.objective, "fisher")
        self.members: dict[str, Attack] = {
            "eigen": EigenAttack(model, eps, norm, eigen_kind, directions, objective=self.objective),
            "pgd": PGD(model, eps, norm, self.objective, steps, seed=seed),
            "apgd": APGD(model, eps, norm, self.objective, 2 * steps, seed=seed),
        }
        self.last_winners: list[str] = []

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        ref = Reference.of(self.model, x)

        def tries() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for attack in self.members.values():
                x_adv = attack(x)
                with torch.no_grad():
                    yield x_adv, divergence(self.model, x_adv, ref, self.objective)

        best = best_of(x, tries())  # ties go to the member listed first, the cheaper one
        names = list(self.members)
        self.last_winners = [names[i] for i in best.winner.tolist()]
        return best.x
