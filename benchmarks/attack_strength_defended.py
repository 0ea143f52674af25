"""How much more damage APGD and the strongest ensemble find than PGD-50 on defended models.

AutoAttack's lesson for classifiers: a defence evaluated with a weak fixed-step attack looks more
robust than it is. Here, in one run, three MLP VAEs (784-512-256, k = 16) are trained on mnist-5k
at beta 1 for the same number of epochs: plain, mixup (docs/method.md section 6) and adversarial
training (PGD-5, L2 eps 1). Each is attacked on the first N test images with PGD-50 (default
step), APGD-100 and ``Strongest`` (per image the most damaging of EigenAttack, PGD-50 and
APGD-100), L2 eps 0.5 and 1 and L-inf eps 0.1, objective kl. Reported per model and budget: the
mean KL damage of each, the ratios APGD / PGD and strongest / PGD, and the share of images on which
APGD beats PGD by more than 1%. A defence whose ratio is larger than the plain model's was
flattered by PGD more than the plain model was.

    python benchmarks/attack_strength_defended.py [--n 500] [--epochs 15]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from vaelens.attacks import APGD, PGD, Reference, Strongest, divergence
from vaelens.data import load_dataset, take
from vaelens.models import ModelConfig
from vaelens.training import AdversarialConfig, MixupConfig, TrainConfig, train

SETTINGS = [("l2", 0.5), ("l2", 1.0), ("linf", 0.1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    defences = {
        "plain": {},
        "mixup": {"mixup": MixupConfig()},
        "adversarial": {"adversarial": AdversarialConfig(eps=1.0, steps=5)},
    }
    x = take(load_dataset("mnist-5k", "test"), args.n)[0]
    print(f"mnist-5k MLP beta 1, {args.epochs} epochs, {len(x)} test images; damage = KL(q(z|x_adv) || q(z|x))")
    print("model        norm  eps  | PGD-50   APGD-100 strongest | APGD/PGD strongest/PGD APGD>PGD+1% | train s")
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in defences.items():
            config = TrainConfig(
                dataset="mnist-5k", model=ModelConfig("mlp", (1, 28, 28), 16), beta=1.0, epochs=args.epochs, **extra
            )
            tic = time.perf_counter()
            model = train(config, f"{tmp}/{name}", progress=False).model
            train_seconds = time.perf_counter() - tic
            ref = Reference.of(model, x)
            for norm, eps in SETTINGS:

                def damage(attack, model=model, ref=ref) -> torch.Tensor:
                    with torch.no_grad():
                        return divergence(model, attack(x), ref, "kl")

                pgd = damage(PGD(model, eps, norm, "kl", steps=50, seed=0))
                apgd = damage(APGD(model, eps, norm, "kl", steps=100, seed=0))
                strongest = damage(Strongest(model, eps, norm, "kl", steps=50, seed=0))
                wins = (apgd > pgd * 1.01).double().mean().item()
                print(
                    f"{name:12s} {norm:4s} {eps:4g} | {pgd.mean():8.4g} {apgd.mean():8.4g} {strongest.mean():9.4g}"
                    f" | {apgd.mean() / pgd.mean():8.4f} {strongest.mean() / pgd.mean():13.4f} {wins:11.1%}"
                    f" | {train_seconds:7.1f}"
                )


if __name__ == "__main__":
    main()
