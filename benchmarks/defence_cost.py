"""Training cost of the defences: plain, mixup and adversarial training (PGD-k) with vaelens.train, in one run.

The same MLP VAE (784-512-256, k=16, Bernoulli) on mnist-5k, batch 128, for the same epochs, with
the same data and seed; only the defence differs. Repeats alternate the configurations, and the
cost of each defence is the median over repeats of its time over the plain run's time in the same
repeat (this machine's speed drifts by +-10% between minutes).

    python benchmarks/defence_cost.py [--epochs 3] [--repeats 3] [--adv-steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from vaelens.data import load_dataset
from vaelens.models import ModelConfig
from vaelens.training import AdversarialConfig, MixupConfig, NoDefence, TrainConfig, train


def seconds(defence: str, epochs: int, adv_steps: int, train_set, test_set) -> float:
    config = TrainConfig(
        dataset="mnist-5k",
        model=ModelConfig("mlp", (1, 28, 28), latent_dim=16),
        epochs=epochs,
        defence={
            "none": NoDefence(),
            "mixup": MixupConfig(),
            "adversarial": AdversarialConfig(eps=1.0, steps=adv_steps),
        }[defence],
    )
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        train(config, f"{tmp}/run", progress=False, train_set=train_set, test_set=test_set)
        return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--adv-steps", type=int, default=5)
    args = parser.parse_args()
    train_set, test_set = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    seconds("none", 1, args.adv_steps, train_set, test_set)  # warm up allocators and imports
    defences = ("none", "mixup", "adversarial")
    times: dict[str, list[float]] = {d: [] for d in defences}
    for _ in range(args.repeats):
        for d in defences:
            times[d].append(seconds(d, args.epochs, args.adv_steps, train_set, test_set))
    print(f"mnist-5k MLP, {args.epochs} epochs x {args.repeats} repeats, adversarial PGD-{args.adv_steps} at L2 eps 1")
    print("| defence | seconds per epoch (median) | cost against plain (median of paired ratios) |")
    print("| --- | --- | --- |")
    for d in defences:
        ratio = statistics.median(t / p for t, p in zip(times[d], times["none"], strict=True))
        print(f"| {d} | {statistics.median(times[d]) / args.epochs:.3f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
