"""Cost of certification: certifying one input against attacking it, and smoothing against plain passes.

Two comparisons, each against its baseline in the same run, on the reference MLP and conv VAEs at
mnist shape (random weights: the cost does not depend on training):

1. seconds to certify one input (n samples, n0 candidates: n0 + 2n noisy encoder passes) against
   seconds of the strongest attack (EigenAttack + PGD-50 + APGD-100, kl objective) on the base model
   for the same input;
2. samples per second of the smoothing (``SmoothedVAE.smooth`` on a batch: noise, encoder passes,
   distances, medians) against plain encoder forward passes of the same chunk size and the same
   number of rows. Overhead = plain throughput / smoothing throughput (target <= 1.2).

Each timing is the median of ``--repeats``, alternated.

    python benchmarks/certify.py [--n 2000] [--n0 100] [--batch 8] [--repeats 3] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from vaelens.attacks import Strongest
from vaelens.certification import certify_smoothed, smooth
from vaelens.models import ModelConfig, build_model


def timed(f: Callable[[], object]) -> float:
    tic = time.perf_counter()
    f()
    return time.perf_counter() - tic


def plain_passes(model: torch.nn.Module, x: torch.Tensor, rows: int, chunk: int) -> None:
    """The baseline: ``rows`` encoder rows in passes of ``chunk``, inputs already noisy-sized."""
    batch = x[:1].expand(chunk, *x.shape[1:]).contiguous()
    with torch.no_grad():
        for start in range(0, rows, chunk):
            model.encode(batch[: min(chunk, rows - start)])


def row(arch: str, args: argparse.Namespace) -> str:
    """One model's line of the table."""
    model = build_model(ModelConfig(arch, (1, 28, 28), latent_dim=16)).eval()
    x = torch.rand(args.batch, 1, 28, 28)
    smoothed = smooth(model, 0.25, n=args.n, n0=args.n0, chunk_size=args.chunk)
    attack = Strongest(model, 1.0, objective="kl", steps=50)
    rows = (args.n0 + 2 * args.n) * args.batch  # encoder rows of one smoothing of the batch
    timed(lambda: certify_smoothed(smoothed, x[:1], 0.25))  # warm-up
    cert, strong, smoothing, plain = [], [], [], []
    for _ in range(args.repeats):
        cert.append(timed(lambda: certify_smoothed(smoothed, x[:1], 0.25)))
        strong.append(timed(lambda: attack(x[:1])))
        smoothing.append(timed(lambda: smoothed.smooth(x)))
        plain.append(timed(lambda: plain_passes(model, x, rows, args.chunk)))
    c, s = statistics.median(cert), statistics.median(strong)
    rate_smooth, rate_plain = rows / statistics.median(smoothing), rows / statistics.median(plain)
    return (f"| {arch} | {c:.3f} | {s:.3f} | {c / s:.2f} | {rate_smooth:,.0f} | {rate_plain:,.0f} "
            f"| {rate_plain / rate_smooth:.2f}x |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8, help="inputs smoothed at once for the throughput test")
    parser.add_argument("--chunk", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n={args.n}, n0={args.n0}")
    print("| model | certify 1 input (s) | strongest attack on it (s) | ratio | smoothing samples/s "
          "| plain samples/s | overhead |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for arch in ("mlp", "conv"):
        print(row(arch, args))


if __name__ == "__main__":
    main()
