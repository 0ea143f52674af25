"""Amortised against iterative protection, transfer across encoders, batching and precision, in one run.

The setting of ``benchmarks/protect_robust.py`` ("natural"), made smaller to run in minutes on two
shared CPU cores: three small ConvVAEs trained here at beta 1 on random 32x32 RGB crops of the top
70% of three photographs shipped with scikit-learn and matplotlib (A: channels (32, 64), k 32,
seed 0; B: the same architecture, seed 1; C: channels (16, 32, 64), k 16, seed 2), each for
``--epochs`` epochs on ``--crops`` crops; N held-out crops of the photographs' bottom 30% are
protected (eps 8/255, flat gray target). Reported:

1. amortised against iterative on A: time per image of the perturbation alone (the evaluation
   is not timed) for ``protect`` with ``--steps`` Auto-PGD steps, for a protector trained on A
   (``--protector-epochs`` epochs of random 32x32 crops of the training region), and for the
   protector followed by ``--refine-steps`` steps; the held rate of each (the share of
   (image, transform) pairs, over the five evaluation transforms, where the protection holds);
2. transfer: the 3 x 3 matrix of held rates (protected against one encoder, evaluated on each),
   and the ensemble A+B evaluated on C; beside each, the mean relative pull (d(x) - d(x_p)) / d(x)
   on that encoder, since a held rate alone flatters a weak protection;
3. batching and precision: images per second of ``protect`` (``--speed-steps`` steps) at batch 1
   against batch 16, and fp32 against bf16 at batch 16.

    python benchmarks/protect_amortised.py [--n 32] [--epochs 5] [--crops 2000] [--steps 200]
        [--protector-epochs 30] [--protector-lr 1e-3] [--refine-steps 10] [--speed-steps 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vaelens.evaluation import (
    EVALUATED,
    Perturb,
    ProtectConfig,
    Protection,
    ProtectorTrainConfig,
    protect,
    protector_perturb,
    pull,
    train_epoch,
    training_images,
    transfer_pull,
    transfer_table,
)
from vaelens.models import ModelConfig, ProtectorNet, ProtectorNetConfig
from vaelens.training import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from protect_robust import crops, photographs  # noqa: E402  (the same photographs and crops)

ENCODERS = {"A": ((32, 64), 32, 0), "B": ((32, 64), 32, 1), "C": ((16, 32, 64), 16, 2)}


def train_encoders(photos: list[np.ndarray], n_crops: int, epochs: int, tmp: str) -> dict[str, torch.nn.Module]:
    folder = Path(tmp) / "crops"
    folder.mkdir()
    for i, crop in enumerate(crops(photos, n_crops, (0.0, 0.7), seed=0)):
        Image.fromarray(crop).save(folder / f"{i:04d}.png")
    models = {}
    for name, (channels, k, seed) in ENCODERS.items():
        model_config = ModelConfig("conv", (3, 32, 32), k, channels=channels, likelihood="gaussian")
        config = TrainConfig(dataset=f"folder:{folder}", image_size=32, image_channels=3, model=model_config,
                             beta=1.0, epochs=epochs, seed=seed)  # fmt: skip
        models[name] = train(config, f"{tmp}/{name}", progress=False).model
    return models


def train_protector(model: torch.nn.Module, photos: list[np.ndarray], epochs: int, lr: float) -> ProtectorNet:
    """A protector against ``model`` trained on random 32x32 crops of the photographs' top 70%."""
    top = {f"{i}": torch.from_numpy(p[: int(0.7 * p.shape[0])].transpose(2, 0, 1).copy()) for i, p in enumerate(photos)}
    config = ProtectorTrainConfig(epochs=epochs, crop=32, batch_size=32, crops_per_image=256, lr=lr)
    pictures = training_images(top, config.crop, 3)
    torch.manual_seed(0)
    net = ProtectorNet(ProtectorNetConfig(channels=3, width=config.width, eps=config.eps))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    tic = time.perf_counter()
    losses = [train_epoch(net, optimizer, [model], pictures, config, epoch) for epoch in range(epochs)]
    print(f"protector: {epochs} epochs in {time.perf_counter() - tic:.0f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return net.eval()


class Timed:
    """A ``Perturb`` that adds the seconds it takes to ``seconds``."""

    def __init__(self, perturb: Perturb) -> None:
        self.perturb, self.seconds = perturb, 0.0

    def __call__(self, models: Sequence[torch.nn.Module], x: torch.Tensor, x_target: torch.Tensor, weight=None):
        tic = time.perf_counter()
        out = self.perturb(models, x, x_target, weight)
        self.seconds += time.perf_counter() - tic
        return out


def iterative(config: ProtectConfig) -> Perturb:
    return lambda models, x, x_target, weight: pull(models, x, x_target, weight, config)


def held_rate(results: dict[str, Protection], encoder: str | None = None) -> float:
    checks = [c for p in results.values() for c in (p.encoders[encoder] if encoder else p.primary).checks.values()]
    return sum(c.held for c in checks) / len(checks)


def run(models, images, config, perturb=None, evaluate_on=None) -> tuple[dict[str, Protection], float]:
    timed = Timed(perturb or iterative(config))
    results = protect(models, images, config, progress=False, evaluate_on=evaluate_on, perturb=timed)
    return results, timed.seconds / len(images)


def amortised_against_iterative(models, images, photos, args) -> None:
    config = ProtectConfig(steps=args.steps, batch_size=16)
    net = train_protector(models["A"], photos, args.protector_epochs, args.protector_lr)
    rows = {
        f"iterative, {args.steps} steps": run({"A": models["A"]}, images, config),
        "amortised": run({"A": models["A"]}, images, config, protector_perturb(net, config)),
        f"amortised + {args.refine_steps} refine steps": run(
            {"A": models["A"]}, images, config, protector_perturb(net, config, args.refine_steps)
        ),
    }
    base = rows[f"iterative, {args.steps} steps"]
    base_time, base_rate = base[1], held_rate(base[0])
    print("\n1. amortised against iterative (encoder A, batch 16, perturbation time only)")
    print("method | s per image | speed-up | held rate | / iterative | mean pull")
    for name, (results, seconds) in rows.items():
        rate, pull_ = held_rate(results), float(np.mean([p.pull for p in results.values()]))
        ratio = rate / base_rate if base_rate else float("nan")
        print(f"{name} | {seconds:.4f} | {base_time / seconds:.0f}x | {rate:.3f} | {ratio:.2f} | {pull_:.3f}")


def transfer(models, images, args) -> None:
    config = ProtectConfig(steps=args.steps, batch_size=16)
    matrix, pulls = {}, {}
    for name in ENCODERS:
        others = {k: m for k, m in models.items() if k != name}
        results, _ = run({name: models[name]}, images, config, evaluate_on=others)
        matrix.update(transfer_table(results))
        pulls.update(transfer_pull(results))
    results, _ = run({"A": models["A"], "B": models["B"]}, images, config, evaluate_on={"C": models["C"]})
    matrix.update(transfer_table(results))
    pulls.update(transfer_pull(results))
    print("\n2. transfer: held rate (relative pull), protected against (rows), evaluated on (columns)")
    print("attacked | " + " | ".join(ENCODERS))
    for row, rates in matrix.items():
        print(f"{row} | " + " | ".join(f"{rates[c]:.3f} ({pulls[row][c]:+.3f})" for c in ENCODERS))


def speed(models, images, args) -> None:
    print(f"\n3. batching and precision (encoder A, {args.speed_steps} steps, images per second of the perturbation)")
    base = None
    for batch, precision in ((1, "fp32"), (16, "fp32"), (16, "bf16")):
        config = ProtectConfig(steps=args.speed_steps, batch_size=batch, precision=precision, evaluate=False)
        results, seconds = run({"A": models["A"]}, images, config)
        base = base or seconds
        pull_ = float(np.mean([p.pull for p in results.values()]))
        print(f"batch {batch} {precision} | {1 / seconds:.2f} images/s | {base / seconds:.2f}x | mean pull {pull_:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--crops", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--protector-epochs", type=int, default=30)
    parser.add_argument("--protector-lr", type=float, default=1e-3)
    parser.add_argument("--refine-steps", type=int, default=10)
    parser.add_argument("--speed-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no contention on shared cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    torch.manual_seed(0)
    photos = photographs()
    with tempfile.TemporaryDirectory() as tmp:
        models = train_encoders(photos, args.crops, args.epochs, tmp)
    held_out = crops(photos, args.n, (0.7, 1.0), seed=1)
    images = {f"{i}": torch.from_numpy(c.transpose(2, 0, 1).copy()) for i, c in enumerate(held_out)}
    print(f"{args.n} held-out 32x32 crops, eps 8/255, evaluation transforms {', '.join(EVALUATED)}; "
          f"encoders trained in {time.perf_counter() - tic:.0f} s, {torch.get_num_threads()} threads")  # fmt: skip
    amortised_against_iterative(models, images, photos, args)
    transfer(models, images, args)
    speed(models, images, args)
    print(f"\ntotal {time.perf_counter() - tic:.0f} s")


if __name__ == "__main__":
    main()
