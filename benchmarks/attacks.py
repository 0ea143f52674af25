"""Attacks: EigenAttack against PGD-50 and random noise, and PGD's batched throughput, in one run.

Setup: an MLP VAE (784-512-256, k = 16) with beta = 1 trained on mnist-5k (20 epochs, seed 0;
``--run DIR`` reuses a trained run), attacked on the 1,000 test images.

1. KL(q(z|x_adv) || q(z|x)) against L2 eps in {0.25, 0.5, 1, 2} for EigenAttack (fisher kind, top
   direction, both signs), PGD-50 (kl objective, one random start) and RandomNoise, with the wall
   time of each. Ratios: eigen / PGD damage and eigen / PGD time. The paper's claim sets the target:
   at small eps, EigenAttack reaches >= 90% of PGD-50's damage in <= 1/10 of its time.
2. PGD-50 throughput (images per second) of vaelens's batched PGD against a straightforward loop that
   attacks one image at a time, as the reference repositories do (on the first 50 images).

    python benchmarks/attacks.py [--run DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

import vaelens
from vaelens.attacks import PGD, EigenAttack, RandomNoise, attack_damage
from vaelens.attacks._base import project
from vaelens.data import load_dataset, take
from vaelens.models import ModelConfig
from vaelens.training import TrainConfig, train

EPS = (0.25, 0.5, 1.0, 2.0)


def trained_model(run: str | None):
    if run:
        return vaelens.load(run)
    tmp = tempfile.mkdtemp(prefix="vaelens-bench-")
    config = TrainConfig(dataset="mnist-5k", model=ModelConfig("mlp", (1, 28, 28), 16), beta=1.0, epochs=20)
    return train(config, f"{tmp}/run", progress=False).model


def timed_attack(attack, x, batch=250):
    tic = time.perf_counter()
    out = torch.cat([attack(x[i : i + batch]) for i in range(0, len(x), batch)])
    return out, time.perf_counter() - tic


def one_at_a_time_pgd(model, x, eps, steps=50):
    """The reference repositories' style: a Python loop over images, each attacked alone."""
    step_size = 2.5 * eps / steps
    for p in model.parameters():
        p.requires_grad_(False)
    for xi in x:
        xi = xi.unsqueeze(0)
        with torch.no_grad():
            mu0, lv0 = model.encode(xi)
        delta = torch.randn_like(xi)
        delta = (eps * delta / delta.norm()).requires_grad_(True)
        for _ in range(steps):
            mu, lv = model.encode((xi + delta).clamp(0, 1))
            kl = 0.5 * ((lv0 - lv) + (lv.exp() + (mu - mu0) ** 2) / lv0.exp() - 1).sum()
            (grad,) = torch.autograd.grad(kl, delta)
            with torch.no_grad():
                delta = project(delta + step_size * grad / grad.norm().clamp_min(1e-12), eps, "l2")
            delta.requires_grad_(True)
    for p in model.parameters():
        p.requires_grad_(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a trained run directory to attack instead")
    args = parser.parse_args()
    model = trained_model(args.run)
    x = take(load_dataset("mnist-5k", "test"))[0]  # (1000, 1, 28, 28)
    EigenAttack(model, 0.5)(x[:8])  # warm-up: torch.func's first call loads its decompositions
    PGD(model, 0.5, steps=2)(x[:8])
    rows = []
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {len(x)} mnist-5k test images")
    print(
        f"{'eps':>5} {'eigen KL':>9} {'PGD KL':>9} {'random KL':>9} {'eigen s':>8} {'PGD s':>7} "
        f"{'KL ratio':>8} {'time ratio':>10}"
    )
    for eps in EPS:
        result = {"eps": eps}
        for name, attack in (
            ("eigen", EigenAttack(model, eps)),
            ("pgd", PGD(model, eps, objective="kl", steps=50)),
            ("random", RandomNoise(model, eps)),
        ):
            x_adv, seconds = timed_attack(attack, x)
            result[f"{name}_kl"] = attack_damage(model, x, x_adv).kl.mean().item()
            result[f"{name}_s"] = seconds
        result["kl_ratio"] = result["eigen_kl"] / result["pgd_kl"]
        result["time_ratio"] = result["eigen_s"] / result["pgd_s"]
        rows.append(result)
        print(
            f"{eps:5.2f} {result['eigen_kl']:9.3f} {result['pgd_kl']:9.3f} {result['random_kl']:9.3f} "
            f"{result['eigen_s']:8.2f} {result['pgd_s']:7.2f} "
            f"{result['kl_ratio']:8.3f} {result['time_ratio']:10.3f}"
        )
    n_loop = 50
    tic = time.perf_counter()
    one_at_a_time_pgd(model, x[:n_loop], 1.0)
    loop_ips = n_loop / (time.perf_counter() - tic)
    _, seconds = timed_attack(PGD(model, 1.0, steps=50), x)
    batched_ips = len(x) / seconds
    print(
        f"PGD-50 throughput: batched {batched_ips:.0f} images/s, one at a time {loop_ips:.1f} images/s, "
        f"ratio {batched_ips / loop_ips:.1f}"
    )
    print(json.dumps({"eps": rows, "batched_ips": batched_ips, "loop_ips": loop_ips}))


if __name__ == "__main__":
    main()
