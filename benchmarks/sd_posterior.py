"""SD-VAE posterior conditioning, simulated: which metric kind to use when logvar is tiny and flat.

The released Stable Diffusion VAE has posterior log-variances near -20 that barely depend on the
image. No weights can be downloaded here, so this is a simulation: the SD v1 AutoencoderKL
architecture at half width (block_out_channels 64-128-256-256, 2 layers per block, 4 latent
channels), random weights (seed 0), with the log-variance rows of ``quant_conv`` (the 1x1 conv
after ``encoder.conv_out`` that produces the 8 moment channels) scaled and shifted so that on the
inputs logvar = ``--level`` + N(0, ``--spread``) roughly. diffusers clamps logvar to [-30, 20], so
at -20 the clamp does not bite; where it does (``--clamped-level`` -35), J_logvar is exactly 0.

On ``--n`` 16 x 16 crops of china.jpg (d = 768, k = 16; small, so that exact float64 spectra of
the 2k = 32 rows are cheap on two cores) it compares the exact spectra (vaelens'
thin-factor path) of the mean, stochastic and fisher kinds in float64, the same in float32 on the
same weights, and float32 Lanczos against the float64 exact values. Prints its findings.

    flock /tmp/vaelens-heavy.lock python benchmarks/sd_posterior.py [--level -20] [--spread 0.1]
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import diffusers
import numpy as np
import sklearn.datasets
import torch
from PIL import Image
from scale import SD_V1  # benchmarks/scale.py: this script runs from the same folder

from vaelens import pullback_metric
from vaelens.adapters import from_diffusers
from vaelens.geometry import robustness_scores

HALF_WIDTH_SD_V1 = {**SD_V1, "block_out_channels": (64, 128, 256, 256)}  # scale.py's config at half width


def crops(n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: squares along the middle row of china.jpg, resized."""
    photo = Image.open(Path(sklearn.datasets.__file__).parent / "images" / "china.jpg").convert("RGB")
    side, out = photo.height // 2, []
    for i in range(n):
        left = i * (photo.width - side) // max(n - 1, 1)
        square = photo.crop((left, side // 2, left + side, side // 2 + side)).resize((size, size), Image.LANCZOS)
        out.append(torch.from_numpy(np.asarray(square).transpose(2, 0, 1).copy()))
    return torch.stack(out).double() / 255


def sd_like(x: torch.Tensor, level: float, spread: float) -> torch.nn.Module:
    """The float64 half-width SD VAE with its logvar rows set to give level +- spread on x."""
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**HALF_WIDTH_SD_V1).double().eval()
    qc = vae.quant_conv  # 8 -> 8 channels, 1x1: rows 4..7 are logvar
    with torch.no_grad():
        h = vae.encoder(2 * x - 1)  # (n, 8, h, w), before quant_conv
        raw = torch.nn.functional.conv2d(h, qc.weight[4:])  # (n, 4, h, w), no bias
        scale = spread / raw.std().item()
        qc.weight[4:] *= scale
        qc.bias[4:] = level - scale * raw.mean()
    return vae


def rel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs() / b.abs()


def spectra(model: torch.nn.Module, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{kind: (all eigenvalues (n, m), top eigenvector (n, d))}, exact."""
    out = {}
    for kind in ("mean", "stochastic", "fisher"):
        metric = pullback_metric(model, x, kind)
        values = metric.eigenvalues()  # the factor is computed here and reused by eigen
        out[kind] = (values, metric.eigen(1).require_vectors()[:, 0].flatten(1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=float, default=-20.0, help="mean logvar")
    parser.add_argument("--spread", type=float, default=0.1, help="std of logvar over inputs and positions")
    parser.add_argument("--clamped-level", type=float, default=-35.0, help="a level where diffusers' clamp bites")
    parser.add_argument("--n", type=int, default=2, help="images")
    parser.add_argument("--size", type=int, default=16, help="image side, a multiple of 8")
    parser.add_argument("--iters", type=int, default=30, help="Lanczos iterations")
    args = parser.parse_args()
    tic = time.perf_counter()
    x = crops(args.n, args.size)
    vae64 = sd_like(x, args.level, args.spread)
    m64, m32 = from_diffusers(vae64), from_diffusers(copy.deepcopy(vae64).float())
    with torch.no_grad():
        _, logvar = m64.encode(x)  # (n, k)
    k = logvar.shape[1]
    print(
        f"half-width SD v1 AutoencoderKL, random weights, {args.n} crops of {args.size} x {args.size}: "
        f"d = {x[0].numel()}, k = {k}, m = 2k = {2 * k} for stochastic and fisher"
    )
    print(
        f"logvar: mean {logvar.mean():.3f}, std {logvar.std():.3f}, range [{logvar.min():.2f}, {logvar.max():.2f}]; "
        f"sigma ~ {math.exp(args.level / 2):.2e}, 1/sigma^2 ~ {math.exp(-args.level):.3g}"
    )

    s64 = spectra(m64, x)
    s32 = spectra(m32, x.float())
    mean, stoch, fisher = (s64[kind][0] for kind in ("mean", "stochastic", "fisher"))
    lam1 = mean[:, :1]

    print("1. stochastic vs mean (float64):")
    top = rel(stoch[:, :k], mean[:, :k]).max().item()
    lower = (stoch[:, k:] / lam1).max().item()
    cos = (s64["stochastic"][1] * s64["mean"][1]).sum(1).abs().min().item()
    print(
        f"   top-k eigenvalues agree to {top:.1e} (relative); the k extra ones from J_sigma are <= {lower:.1e} "
        f"x lambda_1; top eigenvectors 1 - |cos| <= {1 - cos:.1e}: stochastic is the mean kind here"
    )

    print("2. fisher vs mean (float64):")
    w = torch.exp(-logvar)  # 1/sigma^2 per coordinate
    ratio = (fisher[:, 0] / mean[:, 0]).tolist()
    expected = torch.exp(-logvar.mean(1)).tolist()
    dev = rel(fisher[:, :k], mean[:, :k] * torch.exp(-logvar.mean(1, keepdim=True))).max().item()
    cos = (s64["fisher"][1] * s64["mean"][1]).sum(1).abs().min().item()
    print(
        f"   lambda_1(fisher) / lambda_1(mean) = {', '.join(f'{r:.4g}' for r in ratio)} "
        f"(exp(-mean logvar) = {', '.join(f'{e:.4g}' for e in expected)}; 1/sigma^2 over coordinates "
        f"{w.min():.3g} to {w.max():.3g})"
    )
    print(
        f"   top-k fisher eigenvalues = exp(-mean logvar) x mean's to {dev:.1e} relative; top eigenvectors |cos| "
        f"{cos:.6f}"
    )
    upper, lower = fisher[:, k - 1], fisher[:, k]
    print(
        f"   lower half (0.5 J_logvar^T J_logvar, independent of sigma): lambda_(k+1) / lambda_1 = "
        f"{(lower / fisher[:, 0]).max():.1e}; lambda_k / lambda_(k+1) = {(upper / lower).min():.3g}; "
        f"full-spectrum condition number lambda_1 / lambda_2k = {(fisher[:, 0] / fisher[:, -1]).min():.3g}"
    )

    print("3. float32 vs float64, exact path (same weights):")
    for kind in ("mean", "stochastic", "fisher"):
        v64, v32 = s64[kind][0], s32[kind][0].double()
        e = rel(v32, v64)
        parts = f"top-1 {e[:, 0].max():.1e}, top-8 {e[:, :8].max():.1e}, top-k {e[:, :k].max():.1e}"
        if v64.shape[1] > k:
            parts += f", lower k: median {e[:, k:].median():.1e}, max {e[:, k:].max():.1e}"
        print(f"   {kind:10s} relative error of eigenvalues: {parts}")
    for kind in ("mean", "fisher"):
        a, b = robustness_scores(s64[kind][0]), robustness_scores(s32[kind][0])
        print(
            f"   {kind:10s} scores f64 / f32: condition number {a.condition_number[0]:.3g} / "
            f"{b.condition_number[0]:.3g}, "
            f"log_pdet {a.log_pdet[0]:.1f} / {b.log_pdet[0]:.1f}, effective rank {a.effective_rank[0]:.3f} / "
            f"{b.effective_rank[0]:.3f}, entropy {a.von_neumann_entropy[0]:.4f} / {b.von_neumann_entropy[0]:.4f}"
        )

    print(f"4. float32 Lanczos ({args.iters} iterations) against float64 exact:")
    for kind in ("mean", "fisher"):
        lz = pullback_metric(m32, x.float(), kind).lanczos(8, args.iters, seed=0, vectors=False).values.double()
        e = rel(lz, s64[kind][0][:, :8])
        print(f"   {kind:10s} top-1 {e[:, 0].max():.1e}, top-8 max {e.max():.1e}")

    print(f"5. logvar at {args.clamped_level:g}, below diffusers' clamp at -30 (float64):")
    clamped = from_diffusers(sd_like(x, args.clamped_level, args.spread))
    with torch.no_grad():
        lv = clamped.encode(x)[1]
    f_c = pullback_metric(clamped, x, "fisher").eigenvalues()
    m_c = pullback_metric(clamped, x, "mean").eigenvalues(1)
    print(
        f"   logvar after the clamp: [{lv.min():.1f}, {lv.max():.1f}]; fisher lower half max {f_c[:, k:].max():.1e} "
        f"(0: no gradient through the clamp), lambda_1 / lambda_1(mean) = {(f_c[:, 0] / m_c[:, 0]).min():.4g} "
        f"(e^30 = {math.exp(30):.4g})"
    )
    print(f"({time.perf_counter() - tic:.0f} s)")


if __name__ == "__main__":
    main()
