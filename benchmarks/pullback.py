"""Pullback-metric spectra: vaelens against the dense route and the Jacobian floor, in one run.

1. MLP VAE 784-512-256, k = 16, batch 256, stochastic kind (float32). Timed (median of repeats):
   - floor: only the stacked (2k x d) Jacobian of (mu, sigma), with vmap(jacrev);
   - vaelens: pullback_metric(...).eigen() (values and vectors) and .eigenvalues();
   - dense: the route of the authors' code, forming the 784 x 784 G per input, then eigh. Its
     Jacobian is computed the fast way (vmap(jacrev)), which flatters the baseline; a second
     variant computes it per input with torch.autograd.functional.jacobian, as the authors do.
   The three fast routes are timed in turn within each repeat; ratios to the floor are medians
   of the per-repeat ratios.
   Targets: dense / eigen >= 100; eigen / floor <= 1.5; eigenvalues / floor <= 1.2.
2. ConvVAE on 3x64x64 with k = 128: Lanczos (30 iterations, matrix-free) against the exact top
   eigenvalue. Target: relative error <= 1e-3. Also its time against the exact path.
3. Peak memory (VmHWM, the peak resident set, of a fresh process) auditing 10,000 MNIST-sized
   inputs in batches of 256 with chunk_size 64. Target: < 2 GB.

    python benchmarks/pullback.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from torch.func import jacrev, vmap

from vaelens import pullback_metric
from vaelens.models import MLPVAE, ConvVAE


def clock(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Time each function once per repeat, in turn, so that drift hits all of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(clock(fn))
    return times


def paired_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def stacked_jacobian(model, x):
    def single(xi):
        mu, logvar = model.encode(xi.unsqueeze(0))
        return torch.cat([mu, (0.5 * logvar).exp()], dim=-1).squeeze(0)

    with torch.no_grad():
        return vmap(jacrev(single))(x).flatten(2)  # (B, 2k, d)


def dense_route(model, x):
    jac = stacked_jacobian(model, x)
    g = jac.transpose(1, 2) @ jac  # (B, d, d)
    return torch.linalg.eigh(g)


def per_input_dense_route(model, x):
    """The authors' style: torch.autograd.functional.jacobian per input, G = J^T J, eigh."""

    def single(xi):
        mu, logvar = model.encode(xi.unsqueeze(0))
        return torch.cat([mu, (0.5 * logvar).exp()], dim=-1).squeeze(0)

    for xi in x:
        jac = torch.autograd.functional.jacobian(single, xi).flatten(1)  # (2k, d)
        torch.linalg.eigh(jac.T @ jac)


def part_mlp(repeats: int) -> dict:
    torch.manual_seed(0)
    model = MLPVAE(input_shape=(1, 28, 28), latent_dim=16).eval()
    x = torch.rand(256, 1, 28, 28)
    t = interleaved(
        {
            "floor": lambda: stacked_jacobian(model, x),
            "eigen": lambda: pullback_metric(model, x, "stochastic").eigen(),
            "eigenvalues": lambda: pullback_metric(model, x, "stochastic").eigenvalues(),
        },
        repeats,
    )
    dense = [clock(lambda: dense_route(model, x)) for _ in range(2)]
    per_input = clock(lambda: per_input_dense_route(model, x))
    med = {name: statistics.median(v) for name, v in t.items()}
    # the two routes agree
    ours = pullback_metric(model, x[:8], "stochastic").eigenvalues()
    theirs = dense_route(model, x[:8]).eigenvalues.flip(-1)[:, :32]
    agree = ((ours - theirs).abs().max() / theirs[:, 0].max()).item()
    return {
        "floor_s": med["floor"],
        "eigen_s": med["eigen"],
        "eigenvalues_s": med["eigenvalues"],
        "dense_s": statistics.median(dense),
        "per_input_dense_s": per_input,
        "dense_over_eigen": statistics.median(dense) / med["eigen"],
        "per_input_dense_over_eigen": per_input / med["eigen"],
        "dense_over_floor": statistics.median(dense) / med["floor"],
        "eigen_over_floor": paired_ratio(t["eigen"], t["floor"]),
        "eigenvalues_over_floor": paired_ratio(t["eigenvalues"], t["floor"]),
        "max_rel_diff_vs_dense": agree,
    }


def part_lanczos(batch: int, iters: int) -> dict:
    torch.manual_seed(0)
    model = ConvVAE(input_shape=(3, 64, 64), latent_dim=128, channels=(32, 64, 128, 256)).eval()
    x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tic = time.perf_counter()
    exact = pullback_metric(model, x, "stochastic").eigenvalues(1)[:, 0]
    t_exact = time.perf_counter() - tic
    tic = time.perf_counter()
    approx = pullback_metric(model, x, "stochastic").lanczos(r=1, iters=iters).values[:, 0]
    t_lanczos = time.perf_counter() - tic
    rel = ((approx - exact).abs() / exact).max().item()
    return {
        "batch": batch,
        "iters": iters,
        "exact_s": t_exact,
        "lanczos_s": t_lanczos,
        "lanczos_over_exact": t_lanczos / t_exact,
        "max_rel_error": rel,
    }


_MEMORY_CHILD = """
import time, torch
from vaelens.models import MLPVAE
from vaelens.data import load_dataset
from vaelens.evaluation import AuditConfig, audit
torch.manual_seed(0)
model = MLPVAE(input_shape=(1, 28, 28), latent_dim=16).eval()
x = torch.cat([load_dataset("mnist-5k", s).images for s in ("train", "test")] * 2)  # 10,000
tic = time.perf_counter()
result = audit(model, x, config=AuditConfig(batch_size=256, chunk_size=64), progress=False)
assert result.scores["stochastic"].spectral_radius.shape == (10000,)
# VmHWM is this process's own peak; ru_maxrss would include the parent's size inherited at fork.
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) / 1024, time.perf_counter() - tic)
"""


def part_memory() -> dict:
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, check=True)
    peak_mb, seconds = map(float, out.stdout.split()[-2:])
    return {"inputs": 10000, "peak_rss_mb": peak_mb, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--lanczos-batch", type=int, default=4)
    parser.add_argument("--lanczos-iters", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    mlp = part_mlp(args.repeats)
    print("1. MLP 784-512-256, k=16, batch 256, stochastic")
    rows = [
        ("floor vmap(jacrev)", "floor_s", None, None),
        ("vaelens .eigen()", "eigen_s", "eigen / floor", "eigen_over_floor"),
        ("vaelens .eigenvalues", "eigenvalues_s", "eigenvalues / floor", "eigenvalues_over_floor"),
        ("dense G + eigh", "dense_s", "dense / eigen", "dense_over_eigen"),
        ("dense, per input", "per_input_dense_s", "per-input / eigen", "per_input_dense_over_eigen"),
    ]
    for label, key, ratio_label, ratio_key in rows:
        ratio = f"   {ratio_label:20s}{mlp[ratio_key]:.3f}" if ratio_key else ""
        print(f"   {label:21s}{mlp[key] * 1e3:8.1f} ms{ratio}")
    print(f"   dense / floor, the best ratio any exact method could reach: {mlp['dense_over_floor']:.1f}")
    print(f"   max relative difference of the eigenvalues, vaelens vs dense: {mlp['max_rel_diff_vs_dense']:.2e}")
    lz = part_lanczos(args.lanczos_batch, args.lanczos_iters)
    print(f"2. ConvVAE 3x64x64, k=128, batch {lz['batch']}: Lanczos {lz['iters']} iterations")
    print(
        f"   top-1 max relative error {lz['max_rel_error']:.2e}; "
        f"time {lz['lanczos_s']:.2f} s vs exact {lz['exact_s']:.2f} s (ratio {lz['lanczos_over_exact']:.2f})"
    )
    mem = part_memory()
    print(
        f"3. audit of 10,000 inputs (batch 256, chunk 64): peak RSS {mem['peak_rss_mb']:.0f} MB, {mem['seconds']:.1f} s"
    )
    print(json.dumps({"mlp": mlp, "lanczos": lz, "memory": mem}))


if __name__ == "__main__":
    main()
