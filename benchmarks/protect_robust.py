"""How much more often robust (EOT) protection survives the five transforms, in the same run.

Two settings, each a small ConvVAE (channels 32, 64) trained here for a few epochs at beta 1:
"mnist", k = 16 on mnist-5k, protecting the first N test images (8-bit grayscale 28x28); and
"natural", k = 32 on 3000 random 32x32 RGB crops of the top 70% of three photographs that ship
with scikit-learn and matplotlib (china.jpg, flower.jpg, grace_hopper.jpg), protecting N crops
of their bottom 30%. Small models on small images: the figures say how EOT changes survival
with vaelens' optimiser, not how a Stable Diffusion VAE behaves. The CLI's defaults: eps 8/255,
200 steps, flat gray target, seed 0. Each image is protected twice: plainly, and with
``robust=("jpeg", "resize", "blur", "noise")`` (4 transforms averaged per step). Reported per
evaluation transform: how many protections hold (docs/method.md section 9), the ratio robust /
plain, and the mean share of the untransformed pull that remains after the transform, in
absolute terms (d(T(x)) - d(T(x_p))) / (d(x) - d(x_p_plain)), so a robust protection cannot
look better merely by pulling less. Also the mean pull itself and the time per image.

    python benchmarks/protect_robust.py [--n 40] [--epochs 10] [--steps 200] [--setting mnist,natural]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import matplotlib.cbook
import numpy as np
import sklearn.datasets
import torch
from PIL import Image

from vaelens.data import load_dataset, take
from vaelens.evaluation import EVALUATED, ROBUST, ProtectConfig, Protection, protect
from vaelens.models import ModelConfig
from vaelens.training import TrainConfig, train


def mnist(n: int, epochs: int, tmp: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model_config = ModelConfig("conv", (1, 28, 28), 16, channels=(32, 64))
    config = TrainConfig(dataset="mnist-5k", model=model_config, beta=1.0, epochs=epochs)
    model = train(config, f"{tmp}/mnist", progress=False).model
    x = take(load_dataset("mnist-5k", "test"), n)[0]  # (N, 1, 28, 28) in [0, 1]
    return model, {f"{i}": (xi * 255).round().to(torch.uint8) for i, xi in enumerate(x)}


def photographs() -> list[np.ndarray]:
    """Three photographs shipped with scikit-learn and matplotlib, (H, W, 3) uint8 each."""
    folder = Path(sklearn.datasets.__file__).parent / "images"
    paths = [folder / "china.jpg", folder / "flower.jpg", matplotlib.cbook.get_sample_data("grace_hopper.jpg")]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def crops(photos: list[np.ndarray], n: int, rows: tuple[float, float], seed: int) -> list[np.ndarray]:
    """n random 32x32 crops, cycling through the photographs, from the given share of their rows."""
    rng, out = np.random.default_rng(seed), []
    for i in range(n):
        photo = photos[i % len(photos)]
        top, bottom = int(rows[0] * photo.shape[0]), int(rows[1] * photo.shape[0]) - 32
        r, c = rng.integers(top, bottom + 1), rng.integers(0, photo.shape[1] - 32 + 1)
        out.append(photo[r : r + 32, c : c + 32])
    return out


def natural(n: int, epochs: int, tmp: str) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    photos = photographs()
    folder = Path(tmp) / "crops"
    folder.mkdir()
    for i, crop in enumerate(crops(photos, 3000, (0.0, 0.7), seed=0)):
        Image.fromarray(crop).save(folder / f"{i:04d}.png")
    model_config = ModelConfig("conv", (3, 32, 32), 32, channels=(32, 64), likelihood="gaussian")
    config = TrainConfig(dataset=f"folder:{folder}", image_size=32, image_channels=3, model=model_config, beta=1.0,
                         epochs=epochs)  # fmt: skip
    model = train(config, f"{tmp}/natural", progress=False).model
    held_out = crops(photos, n, (0.7, 1.0), seed=1)
    return model, {f"{i}": torch.from_numpy(c.transpose(2, 0, 1).copy()) for i, c in enumerate(held_out)}


SETTINGS = {"mnist": mnist, "natural": natural}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--setting", default="mnist,natural")
    args = parser.parse_args()
    for setting in args.setting.split(","):
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            model, images = SETTINGS[setting](args.n, args.epochs, tmp)
        compare(setting, model, images, args.epochs, args.steps)


def compare(setting: str, model: torch.nn.Module, images: dict[str, torch.Tensor], epochs: int, steps: int) -> None:
    runs: dict[str, dict[str, Protection]] = {}
    seconds: dict[str, float] = {}
    for name, robust in (("plain", ()), ("robust", ROBUST)):
        tic = time.perf_counter()
        runs[name] = protect(model, images, ProtectConfig(steps=steps, robust=robust), progress=False)
        seconds[name] = (time.perf_counter() - tic) / len(images)
    plain = runs["plain"]
    print(f"\n{setting}: ConvVAE beta 1, {epochs} epochs, {len(images)} images, eps 8/255, {steps} steps")
    for name, results in runs.items():
        pull = torch.tensor([p.pull for p in results.values()])
        psnr = torch.tensor([p.perturbation_psnr for p in results.values()])
        print(f"{name}: mean pull {pull.mean():.4g} (mean distance before {_mean(results, 'distance_before'):.4g}), "
              f"perturbation PSNR {psnr.mean():.1f} dB, {seconds[name]:.2f} s per image")  # fmt: skip
    print("transform | held plain | held robust | ratio | pull kept plain | pull kept robust")
    for t in EVALUATED:
        held = {k: sum(p.checks[t].held for p in r.values()) for k, r in runs.items()}
        ratio = held["robust"] / held["plain"] if held["plain"] else float("inf")
        kept = {k: _kept(r, plain, t) for k, r in runs.items()}
        print(f"{t} | {held['plain']}/{len(images)} | {held['robust']}/{len(images)} | {ratio:.2f} | "
              f"{kept['plain']:.2f} | {kept['robust']:.2f}")  # fmt: skip
    total = {k: sum(p.checks[t].held for p in r.values() for t in EVALUATED) for k, r in runs.items()}
    ratio = total["robust"] / total["plain"] if total["plain"] else float("inf")
    print(f"all five: {total['plain']} held plain, {total['robust']} robust, ratio {ratio:.2f}")


def _mean(results: dict[str, Protection], field: str) -> float:
    return float(torch.tensor([getattr(p, field) for p in results.values()]).mean())


def _kept(results: dict[str, Protection], plain: dict[str, Protection], t: str) -> float:
    """Mean over images of (d(T(x)) - d(T(x_p))) / (the plain protection's pull)."""
    shares = [(p.checks[t].distance_clean - p.checks[t].distance) / plain[k].pull for k, p in results.items()]
    return float(torch.tensor(shares).mean())


if __name__ == "__main__":
    main()
