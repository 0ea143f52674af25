"""Video: a Wan-like video VAE (diffusers' AutoencoderKLWan, random weights, a small config) on the CPU.

The architecture of Wan 2.1's VAE (causal 3-D convolutions, 8x spatial and 4x temporal compression,
16 latent channels) at a smaller width (``--base-dim``, default 32 instead of 96; one residual block
per level instead of two), seeded, behind ``vaelens.adapters.from_diffusers``. One clip of
``--frames`` frames (default 9 = 1 + 2 x 4) at ``--size`` x ``--size`` (default 64), random in
[0, 1]. In one run, in this process:

1. the baseline: one encoder forward (median of 3, after a warm-up);
2. one G v of the "mean" kind from scratch (the linearising forward, one JVP, one VJP), median of 3,
   and its ratio to the forward;
3. the top-1 eigenpair by Lanczos (``--iters``), end to end, and the residual ||G v - theta v|| / theta.

    flock /tmp/vaelens-heavy.lock python benchmarks/video.py [--frames 9] [--size 64] [--iters 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch


def wan_like(base_dim: int):
    import diffusers

    torch.manual_seed(0)
    return diffusers.AutoencoderKLWan(base_dim=base_dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1).eval()


def clock(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--base-dim", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()

    import diffusers

    from vaelens import pullback_metric
    from vaelens.adapters import from_diffusers
    from vaelens.geometry._jacobian import EncoderLinearization

    model = from_diffusers(wan_like(args.base_dim))
    n_params = sum(p.numel() for p in model.inner.encoder.parameters())
    x = torch.rand(1, 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0))
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}, "
        f"load {os.getloadavg()[0]:.1f}; AutoencoderKLWan base_dim {args.base_dim}: encoder {n_params / 1e6:.2f}M "
        f"parameters; clip (1, 3, {args.frames}, {args.size}, {args.size}), d = {x.numel()}"
    )
    with torch.no_grad():
        mu = model.encode(x)[0]  # warm-up
        forward = statistics.median(clock(lambda: model.encode(x)) for _ in range(3))
    print(f"latent k = {mu.shape[1]}; one encoder forward {forward:.3f} s")

    def one_gv() -> None:
        lin = EncoderLinearization(model, x)
        a, b = lin.jvp(v)
        lin.vjp(a, torch.zeros_like(b))

    one_gv()  # torch loads its forward-mode decompositions on the first JVP
    gv = statistics.median(clock(one_gv) for _ in range(3))
    print(f"one G v (mean kind, from scratch) {gv:.3f} s = {gv / forward:.1f} x the forward")

    metric = pullback_metric(model, x, "mean")
    tic = time.perf_counter()
    spectrum = metric.lanczos(1, args.iters, seed=0)
    seconds = time.perf_counter() - tic
    theta, vec = spectrum.values[0, 0], spectrum.require_vectors()[0, 0]
    residual = float((metric.matvec(vec[None])[0] - theta * vec).norm() / theta)
    print(
        f"top-1 Lanczos, {args.iters} iterations: {seconds:.2f} s = {seconds / forward:.0f} x the forward; "
        f"rho(G) = {float(theta):.4g}, residual {residual:.1e}; load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
