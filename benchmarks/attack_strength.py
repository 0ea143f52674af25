"""How much damage APGD finds against fixed-step PGD, in the same run.

Setting: an MLP VAE (784-512-256, k = 16) trained for 15 epochs at beta 1 on mnist-5k, the first
N test images, L-inf eps 0.1 and 0.2, L2 eps 0.5, 1 and 2, objectives kl and skl. APGD-100 against
PGD-50 with the default step (2.5 eps / steps) and against PGD-50 with the best of four step sizes
(eps x 0.025, 0.05, 0.1, 0.25 / step), chosen after the fact by mean damage: an oracle a user does
not have. Reported per setting: mean and median damage of each, the share of images on which APGD
is within 0.1% of the other or above, and the time ratio APGD / PGD.

    python benchmarks/attack_strength.py [--n 500]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from vaelens.attacks import APGD, PGD, Reference, divergence
from vaelens.data import load_dataset, take
from vaelens.models import ModelConfig
from vaelens.training import TrainConfig, train

SETTINGS = [("linf", 0.1), ("linf", 0.2), ("l2", 0.5), ("l2", 1.0), ("l2", 2.0)]
FACTORS = (0.025, 0.05, 0.1, 0.25)  # PGD step sizes, as fractions of eps per step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(dataset="mnist-5k", model=ModelConfig("mlp", (1, 28, 28), 16), beta=1.0, epochs=15)
        model = train(config, f"{tmp}/run", progress=False).model
    x = take(load_dataset("mnist-5k", "test"), args.n)[0]
    ref = Reference.of(model, x)
    print(f"mnist-5k MLP beta 1, 15 epochs, {len(x)} test images; damage = the objective itself")
    head = "norm  eps   obj  | APGD-100 mean/median | PGD-50 default mean/median  APGD>=  | best-step PGD-50 mean/median (step) APGD>=  | time APGD/PGD"  # noqa: E501
    print(head)
    for objective in ("kl", "skl"):
        for norm, eps in SETTINGS:

            def run(attack, objective: str = objective) -> tuple[torch.Tensor, float]:
                tic = time.perf_counter()
                x_adv = attack(x)
                seconds = time.perf_counter() - tic
                with torch.no_grad():
                    return divergence(model, x_adv, ref, objective), seconds

            apgd, t_apgd = run(APGD(model, eps, norm, objective, steps=100, seed=0))
            default, t_pgd = run(PGD(model, eps, norm, objective, steps=50, seed=0))
            tuned = {f: run(PGD(model, eps, norm, objective, steps=50, step_size=f * eps, seed=0))[0] for f in FACTORS}
            best_f = max(tuned, key=lambda f: tuned[f].mean().item())
            best = tuned[best_f]

            def share(other: torch.Tensor, apgd: torch.Tensor = apgd) -> float:
                return (apgd >= other * (1 - 1e-3)).double().mean().item()

            print(
                f"{norm:4s} {eps:4g} {objective:4s} | {apgd.mean():9.4g} / {apgd.median():<9.4g}"
                f" | {default.mean():9.4g} / {default.median():<9.4g}  {share(default):5.1%}"
                f" | {best.mean():9.4g} / {best.median():<9.4g} ({best_f:g} eps)  {share(best):5.1%}"
                f" | {t_apgd / t_pgd:5.2f}"
            )


if __name__ == "__main__":
    main()
