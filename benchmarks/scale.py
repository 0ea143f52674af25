"""Scale: the full Stable Diffusion VAE architecture (random weights) on the CPU, and 512 x 512 on paper.

The SD v1 AutoencoderKL (diffusers; block_out_channels 128-256-512-512, 2 layers per block, 4
latent channels, norm groups 32; 34.2M encoder parameters), seeded, random weights (no weights can
be downloaded here), behind ``vaelens.adapters.from_diffusers``. One image (a centre crop of
scikit-learn's china.jpg, resized) at each size in ``--sizes``. Every measurement runs in a fresh
subprocess, so its peak memory (VmHWM, the child's own peak resident set) is its own:

1. base: one encoder forward, one JVP and one VJP (the "mean" kind's G v = J^T J v is one of each),
   the baseline that the rest is divided by.
2. Lanczos, "mean" kind, ``--iters`` iterations, top-1 and top-8 eigenpairs with vectors, end to
   end (the linearising forward included); the residual ||G v - theta v|| / theta of v_1 and v_8.
3. EigenAttack (mean kind, top direction, both signs, Lanczos) against PGD-``--pgd-steps`` and
   random noise, L2, eps = ``--rms``/255 per pixel (eps = rms/255 * sqrt(d)), on the latent
   objective ||mu(x+delta) - mu(x)||^2: damage ratio and time ratio.
4. protect_image (eps 8/255 L-inf, flat gray target, evaluate=False): after an untimed call (the
   first pays one-time costs), timed at 1 and at ``--protect-steps`` steps; seconds per step = the
   difference / (steps - 1), reported per 100.

Then FLOPs per encoder forward, JVP and VJP at 128/256/512, counted with FlopCounterMode on the
meta device (nothing runs), the bytes a VJP saves, and an extrapolation, not a measurement, of
what one H100 needs per 512 x 512 image.

    flock /tmp/vaelens-heavy.lock python benchmarks/scale.py [--sizes 128,256] [--iters 20]
    flock /tmp/vaelens-heavy.lock python benchmarks/scale.py --checkpointing --sizes 256

``--checkpointing`` measures only one G v ("mean" kind: the linearising pass, one JVP, one VJP) at
each size with and without gradient checkpointing (``--checkpointing`` in the CLI), each in its own
child: the peak resident memory it adds and its time, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import sklearn.datasets
import torch
from PIL import Image

SD_V1 = dict(  # diffusers' AutoencoderKL config of the Stable Diffusion v1 VAE
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)
PARTS = ("base", "lanczos1", "lanczos8", "eigen", "pgd", "protect")
CHECKPOINT_PARTS = ("gv", "gv-checkpointed")
# Assumed H100 throughput for the extrapolation (TFLOP/s actually achieved, not peak).
H100 = {"fp32 (vaelens' precision): 67 peak, 50% used": 33.5e12, "TF32/bf16 tensor cores: ~400 achieved": 400e12}


def sd_vae(device: str = "cpu"):
    import diffusers

    torch.manual_seed(0)
    with torch.device(device):
        vae = diffusers.AutoencoderKL(**SD_V1).eval()
    return vae


def encoder_parameters(vae) -> int:
    return sum(p.numel() for m in (vae.encoder, vae.quant_conv) for p in m.parameters())


def image(size: int) -> torch.Tensor:
    """(3, size, size) uint8: the centre square of china.jpg, resized."""
    photo = Image.open(Path(sklearn.datasets.__file__).parent / "images" / "china.jpg").convert("RGB")
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    square = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(square).transpose(2, 0, 1).copy())


def hwm_mb() -> float:
    """This process's own peak resident set (ru_maxrss would include the parent's at fork)."""
    line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def clock(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


# -- one measurement, in a child process ---------------------------------------------------------
def child(part: str, size: int, args: argparse.Namespace) -> dict:
    from vaelens import PGD, EigenAttack, RandomNoise, attack_damage, pullback_metric
    from vaelens.adapters import from_diffusers
    from vaelens.evaluation import ProtectConfig, protect_image
    from vaelens.geometry._jacobian import EncoderLinearization

    model = from_diffusers(sd_vae())
    # torch loads its forward-mode decompositions on the first JVP (seconds): pay it on a 32 x 32 input
    warm = pullback_metric(model, torch.rand(1, 3, 32, 32), "mean")
    warm.matvec(torch.randn(1, 3, 32, 32))
    out = {"part": part, "size": size, "hwm_start_mb": hwm_mb()}
    img = image(size)
    x = img[None].float() / 255  # (1, 3, S, S)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    d = x.numel()
    eps = args.rms / 255 * math.sqrt(d)
    if part in CHECKPOINT_PARTS:  # one G v (mean kind) from scratch: the linearising pass, one JVP, one VJP
        model.checkpointing = part == "gv-checkpointed"
        base = hwm_mb()
        tic = time.perf_counter()
        lin = EncoderLinearization(model, x)
        a, b = lin.jvp(v)
        lin.vjp(a, torch.zeros_like(b))
        out["seconds"] = time.perf_counter() - tic
        out["peak_growth_mb"] = hwm_mb() - base
    elif part == "base":
        with torch.no_grad():
            model.encode(x)
            out["forward_s"] = statistics.median(clock(lambda: model.encode(x)) for _ in range(3))
        lin = EncoderLinearization(model, x)
        jvps, vjps = [], []
        for _ in range(2):
            tic = time.perf_counter()
            a, b = lin.jvp(v)
            jvps.append(time.perf_counter() - tic)
            vjps.append(clock(lambda a=a, b=b: lin.vjp(a, torch.zeros_like(b))))
        out["jvp_s"], out["vjp_s"] = min(jvps), min(vjps)
        out["jvp_vjp_s"] = out["jvp_s"] + out["vjp_s"]
    elif part.startswith("lanczos"):
        r = int(part.removeprefix("lanczos"))
        metric = pullback_metric(model, x, "mean")
        tic = time.perf_counter()
        spectrum = metric.lanczos(r, args.iters, seed=0, vectors=True)
        out["seconds"] = time.perf_counter() - tic
        out["hwm_mb"] = hwm_mb()
        values, vectors = spectrum.values[0], spectrum.require_vectors()[0]  # (r,), (r, 3, S, S)
        out["values"] = values.tolist()
        out["residuals"] = {}
        for j in sorted({0, r - 1}):
            gv = metric.matvec(vectors[j][None])[0]
            out["residuals"][j + 1] = float((gv - values[j] * vectors[j]).norm() / values[j])
    elif part in ("eigen", "pgd"):
        if part == "eigen":
            attack = EigenAttack(model, eps, "l2", kind="mean", objective="latent", method="lanczos", iters=args.iters)
        else:
            attack = PGD(model, eps, "l2", objective="latent", steps=args.pgd_steps, seed=0)
        tic = time.perf_counter()
        x_adv = attack(x)
        out["seconds"] = time.perf_counter() - tic
        out["hwm_mb"] = hwm_mb()
        out["eps"] = eps
        out["latent"] = float(attack_damage(model, x, x_adv).latent_l2[0] ** 2)
        if part == "eigen":  # the random baseline at the same budget (two encodes, no derivatives)
            x_random = RandomNoise(model, eps, "l2", seed=0)(x)
            out["random_latent"] = float(attack_damage(model, x, x_random).latent_l2[0] ** 2)
    elif part == "protect":
        t = {}
        # untimed: the first call pays one-time costs (the decoder's first pass, MS-SSIM, Auto-PGD set-up)
        protect_image(model, img, ProtectConfig(eps=8, steps=1, evaluate=False, seed=0))
        for steps in (1, args.protect_steps):
            config = ProtectConfig(eps=8, steps=steps, evaluate=False, seed=0)
            tic = time.perf_counter()
            p = protect_image(model, img, config)
            t[steps] = time.perf_counter() - tic
        out["hwm_mb"] = hwm_mb()
        out["one_step_s"], out["steps_s"], out["steps"] = t[1], t[args.protect_steps], args.protect_steps
        out["per_step_s"] = (t[args.protect_steps] - t[1]) / (args.protect_steps - 1)
        out["pull"] = p.pull
        out["distance_before"] = p.distance_before
    out.setdefault("hwm_mb", hwm_mb())
    return out


def run_child(part: str, size: int, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        part,
        "--size",
        str(size),
        "--iters",
        str(args.iters),
        "--pgd-steps",
        str(args.pgd_steps),
        "--protect-steps",
        str(args.protect_steps),
        "--rms",
        str(args.rms),
    ]
    load = os.getloadavg()[0]  # other jobs on the machine slow every figure; say how busy it was
    tic = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{part} at {size} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["child_wall_s"] = time.perf_counter() - tic
    result["load_before"], result["load_after"] = load, os.getloadavg()[0]
    return result


# -- counting, on the meta device ------------------------------------------------------------------
def count(sizes: tuple[int, ...]) -> dict[int, dict]:
    from torch.func import jvp, vjp
    from torch.utils.flop_counter import FlopCounterMode

    from vaelens.adapters import from_diffusers
    from vaelens.geometry._jacobian import _encoder_rows

    vae = sd_vae("meta")
    f = _encoder_rows(from_diffusers(vae))  # x -> (mu, sigma), as the metric differentiates it
    params = {id(p) for p in vae.parameters()}
    counted = {}
    for s in sizes:
        x = torch.zeros(1, 3, s, s, device="meta")
        flops = {}
        with torch.no_grad():
            tangent = torch.zeros_like(x)
            for name, fn in (("forward", lambda x=x: f(x)), ("jvp", lambda x=x, t=tangent: jvp(f, (x,), (t,)))):
                counter = FlopCounterMode(display=False)
                with counter:
                    fn()
                flops[name] = counter.get_total_flops()
            value, back = vjp(f, x)
            counter = FlopCounterMode(display=False)
            with counter:
                back(value)
            flops["vjp"] = counter.get_total_flops()
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            if id(t) not in params:  # the weights a VJP keeps are the model's own, not new memory
                saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            f(x.clone().requires_grad_(True))
        counted[s] = {**flops, "saved_bytes": sum(saved)}
    return counted


def extrapolate(c512: dict, iters: int, pgd_steps: int, weights_bytes: int, factor: float, top: int) -> list[str]:
    d = 3 * 512 * 512
    lanczos = c512["forward"] + iters * (c512["jvp"] + c512["vjp"])
    eigen = lanczos + 3 * c512["forward"]  # + the reference encode and the two candidates
    pgd = (pgd_steps + 1) * (c512["forward"] + c512["vjp"])
    protect = 100 * (c512["forward"] + c512["vjp"])
    basis = iters * d * 4
    memory = weights_bytes + factor * c512["saved_bytes"] + basis
    lines = [
        f"512 x 512, per image: top-8 Lanczos ({iters} iterations) {lanczos / 1e12:.1f} TFLOP, EigenAttack "
        f"{eigen / 1e12:.1f}, PGD-{pgd_steps} {pgd / 1e12:.1f}, protect 100 steps {protect / 1e12:.1f}",
    ]
    for label, rate in H100.items():
        lines.append(
            f"  H100, {label}: Lanczos {lanczos / rate:.2f} s, EigenAttack {eigen / rate:.2f} s, "
            f"PGD-{pgd_steps} {pgd / rate:.2f} s, protect {protect / rate:.2f} s per 100 steps"
        )
    lines.append(
        f"  memory: weights {weights_bytes / 2**30:.2f} GiB + {factor:.2f} x {c512['saved_bytes'] / 2**30:.2f} GiB "
        f"saved by the VJP (the factor measured at {top} on the CPU) + basis {basis / 2**20:.0f} MiB = "
        f"{memory / 2**30:.1f} GiB"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256", help="image sides to measure on the CPU")
    parser.add_argument("--iters", type=int, default=20, help="Lanczos iterations")
    parser.add_argument("--pgd-steps", type=int, default=50)
    parser.add_argument("--protect-steps", type=int, default=20, help="reported per 100 steps")
    parser.add_argument("--rms", type=float, default=2.0, help="L2 budget as RMS per pixel in 8-bit units")
    parser.add_argument(
        "--checkpointing", action="store_true", help="only: one G v at each size with and without checkpointing"
    )
    parser.add_argument("--child", choices=PARTS + CHECKPOINT_PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.size, args)))
        return
    import diffusers

    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.checkpointing:
        checkpointing(sizes, args)
        return
    vae = sd_vae("meta")
    n_enc = encoder_parameters(vae)
    weights = sum(p.numel() for p in vae.parameters()) * 4
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}")
    print(
        f"SD v1 AutoencoderKL, random weights (seed 0): encoder + quant_conv {n_enc / 1e6:.2f}M parameters, "
        f"whole VAE {weights / 4e6:.1f}M"
    )
    assert 33e6 < n_enc < 35e6, n_enc
    counted = count(tuple(sorted({*sizes, 128, 256, 512})))
    print("FLOPs counted on the meta device (encoder -> mu, sigma; one image):")
    for s, c in counted.items():
        print(
            f"  {s:4d}: forward {c['forward'] / 1e9:7.1f} GFLOP, JVP {c['jvp'] / c['forward']:.2f}x, "
            f"VJP {c['vjp'] / c['forward']:.2f}x; a VJP saves {c['saved_bytes'] / 2**20:.0f} MiB of activations"
        )
    results: dict[int, dict[str, dict]] = {}
    for s in sizes:
        results[s] = {}
        for part in PARTS:
            results[s][part] = run_child(part, s, args)
            r = results[s][part]
            print(
                f"  [{s} {part}: {r['child_wall_s']:.0f} s, load {r['load_before']:.1f} -> {r['load_after']:.1f}]",
                flush=True,
            )
        report(s, results[s], counted[s], args)
    top = max(sizes)
    base = results[top]["base"]
    grow = (results[top]["lanczos8"]["hwm_mb"] - base["hwm_start_mb"]) * 2**20 - args.iters * 3 * top * top * 4
    factor = max(grow, 0) / counted[top]["saved_bytes"]
    print(f"EXTRAPOLATION, not measured (from the FLOP counts; memory scaled by what {top} x {top} used):")
    for line in extrapolate(counted[512], args.iters, args.pgd_steps, weights, factor, top):
        print(line)
    print(json.dumps({"encoder_parameters": n_enc, "counted": counted, "results": results}))


def checkpointing(sizes: tuple[int, ...], args: argparse.Namespace) -> None:
    """Peak memory and time of one G v with and without gradient checkpointing, in one run."""
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; SD v1 AutoencoderKL, random weights")
    for s in sizes:
        plain, ckpt = (run_child(part, s, args) for part in CHECKPOINT_PARTS)
        print(
            f"{s} x {s}: one G v {plain['seconds']:.2f} s, peak +{plain['peak_growth_mb']:.0f} MB; checkpointed "
            f"{ckpt['seconds']:.2f} s, peak +{ckpt['peak_growth_mb']:.0f} MB; memory ratio "
            f"{ckpt['peak_growth_mb'] / plain['peak_growth_mb']:.2f}, "
            f"time ratio {ckpt['seconds'] / plain['seconds']:.2f} "
            f"(load {plain['load_before']:.1f}, {ckpt['load_before']:.1f})"
        )
        print(json.dumps({"size": s, "plain": plain, "checkpointed": ckpt}))


def report(s: int, r: dict[str, dict], c: dict, args: argparse.Namespace) -> None:
    b = r["base"]
    mv = b["jvp_vjp_s"]
    print(f"{s} x {s} (d = {3 * s * s}, k = {4 * (s // 8) ** 2}); start-up peak {b['hwm_start_mb']:.0f} MB")
    rate = c["forward"] / b["forward_s"] / 1e9
    print(
        f"  forward {b['forward_s']:.2f} s ({rate:.0f} GFLOP/s), JVP {b['jvp_s']:.2f} s, VJP {b['vjp_s']:.2f} s, "
        f"JVP+VJP {mv:.2f} s = {mv / b['forward_s']:.1f} forwards; peak {b['hwm_mb']:.0f} MB"
    )
    for part in ("lanczos1", "lanczos8"):
        lz = r[part]
        res = ", ".join(f"v{j} {e:.1e}" for j, e in lz["residuals"].items())
        print(
            f"  Lanczos top-{part[-1]} ({args.iters} it): {lz['seconds']:.1f} s = {lz['seconds'] / b['forward_s']:.0f} "
            f"forwards = {lz['seconds'] / mv:.1f} JVP+VJP; peak {lz['hwm_mb']:.0f} MB "
            f"(+{lz['hwm_mb'] - lz['hwm_start_mb']:.0f}); lambda_1 {lz['values'][0]:.4g}; residual {res}"
        )
    e, p = r["eigen"], r["pgd"]
    print(
        f"  L2 eps {e['eps']:.3f}: EigenAttack {e['latent']:.4g} in {e['seconds']:.1f} s (peak {e['hwm_mb']:.0f} MB), "
        f"PGD-{args.pgd_steps} {p['latent']:.4g} in {p['seconds']:.1f} s (peak {p['hwm_mb']:.0f} MB), random "
        f"{e['random_latent']:.4g}; damage ratio {e['latent'] / p['latent']:.3f}, time ratio "
        f"{e['seconds'] / p['seconds']:.3f}"
    )
    pr = r["protect"]
    print(
        f"  protect: {pr['per_step_s']:.2f} s per step = {100 * pr['per_step_s']:.0f} s per 100 steps (measured over "
        f"{pr['steps']} steps minus 1; 1 step {pr['one_step_s']:.1f} s, {pr['steps']} steps {pr['steps_s']:.1f} s); "
        f"peak {pr['hwm_mb']:.0f} MB; pull {pr['pull']:.3g} of {pr['distance_before']:.3g}"
    )


if __name__ == "__main__":
    main()
