"""Training throughput: vaelens.train against a bare hand-written PyTorch loop, in the same run.

Both train the same MLP VAE (784-512-256, k=16, Bernoulli) on mnist-5k with Adam at the same batch
size for the same epochs, shuffle every epoch and measure test reconstruction after every epoch.
vaelens additionally writes metrics each epoch and checkpoints (at most every 10 s, and at the end),
as it does for users. Reported: samples per second of each and the ratio vaelens / bare (target
>= 0.9). Repeats alternate the two; the ratio is the median of the per-repeat ratios, since this
machine's speed drifts by +-10% between minutes.

    python benchmarks/train_throughput.py [--epochs 5] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from vaelens.data import load_dataset
from vaelens.models import MLPVAE, ModelConfig
from vaelens.training import TrainConfig, train


def bare_loop(images: torch.Tensor, test: torch.Tensor, epochs: int, batch: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = MLPVAE(input_shape=(1, 28, 28), latent_dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    tic = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(images))
        for i in range(0, len(images), batch):
            x = images[perm[i : i + batch]]
            mu, logvar = model.encode(x)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            recon = F.binary_cross_entropy_with_logits(model.decode_logits(z), x, reduction="none")
            kl = 0.5 * (logvar.exp() + mu.square() - 1 - logvar).sum(1)
            loss = (recon.flatten(1).sum(1) + kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            for i in range(0, len(test), 512):
                x = test[i : i + 512]
                F.binary_cross_entropy_with_logits(model.decode_logits(model.encode(x)[0]), x)
    return epochs * len(images) / (time.perf_counter() - tic)


def vaelens_loop(epochs: int, batch: int, seed: int, progress: bool) -> float:
    config = TrainConfig(
        dataset="mnist-5k",
        model=ModelConfig("mlp", (1, 28, 28), latent_dim=16),
        epochs=epochs,
        batch_size=batch,
        seed=seed,
    )
    train_set, test_set = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    with tempfile.TemporaryDirectory() as tmp:
        tic = time.perf_counter()
        train(config, f"{tmp}/run", progress=progress, train_set=train_set, test_set=test_set)
        return epochs * len(train_set) / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    train_set, test_set = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    vaelens_loop(1, args.batch_size, 0, False)  # warm up allocators and imports
    bare, ours, ours_bar = [], [], []
    for r in range(args.repeats):
        bare.append(bare_loop(train_set.images, test_set.images, args.epochs, args.batch_size, r))
        ours.append(vaelens_loop(args.epochs, args.batch_size, r, progress=False))
        ours_bar.append(vaelens_loop(args.epochs, args.batch_size, r, progress=True))
    b, o, ob = (statistics.median(v) for v in (bare, ours, ours_bar))
    paired = statistics.median(x / y for x, y in zip(ours, bare, strict=True))
    paired_bar = statistics.median(x / y for x, y in zip(ours_bar, bare, strict=True))
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"{args.epochs} epochs x {args.repeats} repeats (medians; ratio = median of paired ratios)"
    )
    print("                          samples/s   ratio of medians   median of paired ratios")
    print(f"bare loop               {b:9.0f}")
    print(f"vaelens.train           {o:9.0f}   {o / b:16.3f}   {paired:23.3f}")
    print(f"vaelens.train (bar on)  {ob:9.0f}   {ob / b:16.3f}   {paired_bar:23.3f}")


if __name__ == "__main__":
    main()
