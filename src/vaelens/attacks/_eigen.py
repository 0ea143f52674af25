"""The eigen-direction attack (Khan and Storkey 2023; docs/method.md section 3).

To second order an objective is delta^T G(x) delta, so under a small L2 budget the best attack is
delta = +-eps v_1, the top eigenvector of G(x). With ``directions=k`` the top k eigenvectors and
both signs are tried and the candidate that does most damage (by the objective matching the kind)
is kept. Under L-inf the attack uses eps * sign(v): the vertex of the box nearest to v's direction,
a heuristic (the L-inf problem has no eigenvector solution).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vaelens._errors import VaelensError
from vaelens._protocol import Kind, Norm, Objective, geometry_base
from vaelens.attacks._base import Attack, best_of
from vaelens.attacks._objectives import KIND_OBJECTIVE, Reference, check_objective, divergence
from vaelens.geometry import Method, check_kind, check_method, pullback_metric


class EigenAttack(Attack):
    """delta = +-eps v_j for the most damaging of the top ``directions`` eigenvectors of G(x).

    Arguments:
        model: a VAE.
        eps: budget (> 0).
        norm: "l2" (exact second-order optimum) or "linf" (eps * sign(v), a heuristic).
        kind: metric kind whose eigenvectors are used, default "fisher" (the KL's metric).
        directions: how many top eigenvectors to try, each with both signs. Default 1.
        objective: what picks among candidates; default the objective the kind models
            (fisher: kl, mean: latent, stochastic: stochastic, output kinds: recon).
        chunk_size: bounds memory of the Jacobians.
        method: "auto", "exact" or "lanczos": how the eigenvectors are found (``PullbackMetric.eigen``).
        iters: Lanczos iterations.

    Called as ``attack(x)`` with x (B, *input_shape) in [0, 1]; returns x_adv of the same shape.

    Examples::

        >>> attack = vaelens.EigenAttack(model, eps=0.5, kind="fisher", directions=2)
        >>> x_adv = attack(x)                               # x: (B, 1, 28, 28) -> (B, 1, 28, 28)
        >>> (x_adv - x).flatten(1).norm(dim=1)              # eps per input, unless [0, 1] clipped it
        tensor([0.5000, 0.5000, ...])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        eps: float,
        norm: Norm = "l2",
        kind: Kind = "fisher",
        directions: int = 1,
        objective: Objective | None = None,
        chunk_size: int | None = None,
        method: Method = "auto",
        iters: int = 30,
    ) -> None:
        super().__init__(model, eps, norm, seed=None)
        check_method(method)
        kind = check_kind(kind)
        if not isinstance(directions, int) or directions < 1:
            raise VaelensError(f"directions must be a positive integer; got {directions!r}")
        self.kind, self.directions, self.chunk_size = kind, directions, chunk_size
        self.method, self.iters = method, iters
        self.objective = check_objective(objective or KIND_OBJECTIVE[kind])

    def forward(self, x: torch.Tensor, x_target: torch.Tensor | None) -> torch.Tensor:
        # a smoothed model has no Jacobian: its base's eigenvectors at x propose the directions
        metric = pullback_metric(geometry_base(self.model) or self.model, x, self.kind, self.chunk_size)
        k = min(self.directions, metric.rank_bound)
        vectors = metric.eigen(k, self.method, max(self.iters, k)).require_vectors()  # (B, k, *s), unit L2 norm
        steps = vectors.sign() if self.norm == "linf" else vectors
        ref = Reference.of(self.model, x)

        def tries() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for j in range(k):
                for sign in (1.0, -1.0):
                    cand = (x + sign * self.eps * steps[:, j]).clamp(0, 1)
                    yield cand, divergence(self.model, cand, ref, self.objective)

        with torch.no_grad():
            return best_of(x, tries()).x
