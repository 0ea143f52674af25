"""Figures for audits: histograms of scores, eigen-directions as images, probe curves.

Uses matplotlib's object API (no pyplot), so no display or global backend is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelens._io import save_figure
from vaelens._protocol import Kind


def as_image(t: torch.Tensor, signed: bool) -> tuple[np.ndarray, dict]:
    """A (C, H, W) or flat tensor as something imshow can draw, with its colour settings."""
    if t.dim() == 1:
        side = int(np.ceil(np.sqrt(t.numel())))
        t = torch.nn.functional.pad(t, (0, side * side - t.numel())).view(1, side, side)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    a = t.detach().cpu().float().numpy()
    if a.shape[0] == 1:
        if signed:
            lim = float(np.abs(a).max()) or 1.0
            return a[0], {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
        return a[0], {"cmap": "gray", "vmin": 0, "vmax": 1}
    a = np.transpose(a, (1, 2, 0))
    if signed:  # map [-max, max] to [0, 1] so RGB directions are visible
        lim = float(np.abs(a).max()) or 1.0
        a = 0.5 + 0.5 * a / lim
    return np.clip(a, 0, 1), {}


def histograms(columns: dict[str, dict[str, np.ndarray]], path: str | Path) -> None:
    """Histograms of rho(G) (log scale) and S for each metric kind: columns[kind][score]."""
    kinds = list(columns)
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(9, 3 * len(kinds)))
    axes = fig.subplots(len(kinds), 2, squeeze=False)
    for row, kind in zip(axes, kinds, strict=True):
        rho = columns[kind]["spectral_radius"]
        positive = rho[rho > 0]
        bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 40) if len(positive) else 40
        row[0].hist(positive if len(positive) else rho, bins=bins, color="tab:red", alpha=0.8)
        if len(positive):
            row[0].set_xscale("log")
            from matplotlib.ticker import NullFormatter

            row[0].xaxis.set_minor_formatter(NullFormatter())
        row[0].set_xlabel(r"spectral radius $\rho(G)$")
        row[0].set_title(f"{kind}: median {np.median(rho):.3g}")
        ent = columns[kind]["von_neumann_entropy"]
        row[1].hist(ent, bins=40, color="tab:blue", alpha=0.8)
        row[1].set_xlabel("von Neumann entropy S(G)")
        row[1].set_title(f"{kind}: median {np.median(ent):.3g}")
        for ax in row:
            ax.set_ylabel("inputs")
    fig.tight_layout()
    save_figure(fig, path)


def eigen_directions(
    x: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor, kind: Kind, path: str | Path
) -> None:
    """Inputs (n, *s) beside their top eigen-directions (n, K, *s), titled with lambda_j."""
    n, k = vectors.shape[:2]
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(1.6 * (k + 1), 1.7 * n))
    axes = fig.subplots(n, k + 1, squeeze=False)
    for i in range(n):
        img, style = as_image(x[i], signed=False)
        axes[i, 0].imshow(img, **style)
        axes[i, 0].set_title("input", fontsize=8)
        for j in range(k):
            img, style = as_image(vectors[i, j], signed=True)
            axes[i, j + 1].imshow(img, **style)
            axes[i, j + 1].set_title(f"v{j + 1}  λ={values[i, j]:.3g}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(f"top eigen-directions of G ({kind})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def probe_curves(probe, path: str | Path) -> None:
    """Mean reconstruction MSE against step size, one curve per direction, random dashed."""
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    t = probe.steps.numpy()
    for j in range(probe.mse.shape[1]):
        ax.plot(t, probe.mse[:, j].mean(0).numpy(), label=f"v{j + 1}")
    ax.plot(t, probe.random_mse.mean(0).numpy(), "k--", label="random")
    ax.set_xscale("log")
    ax.set_xlabel("step t" + (r" (x + t $\lambda_j$ $v_j$)" if probe.scale == "lambda" else r" (x + t $v_j$)"))
    ax.set_ylabel("reconstruction MSE")
    ax.set_title(f"eigen-direction probe ({probe.kind}), mean over {len(probe.mse)} inputs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
