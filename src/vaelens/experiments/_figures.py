"""The report's figures, each a function from analysed numbers to a matplotlib ``Figure``.

No function here reads a file or decides what a sentence says; ``_report`` feeds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vaelens.experiments._analysis import TrendPoint, Validity

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _errorbar(ax, xs, mid, lo, hi, **kw) -> None:
    mid, lo, hi = (np.asarray(v, dtype=float) for v in (mid, lo, hi))
    ax.errorbar(xs, mid, yerr=np.vstack([mid - lo, hi - mid]), capsize=3, **kw)


def beta_trends(curves: dict[tuple[str, str], list[TrendPoint]], entropy_spread: dict) -> Figure:
    """Median rho(G) and entropy S against beta: medians over seeds, bars spanning the seeds."""
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(11, 4))
    ax_rho, ax_s = fig.subplots(1, 2)
    for (dataset, model), curve in curves.items():
        label = f"{dataset} / {model}"
        betas = [p.beta for p in curve]
        _errorbar(ax_rho, betas, [p.rho_median for p in curve], [p.rho_median_min for p in curve],
                  [p.rho_median_max for p in curve], fmt="o-", label=label)  # fmt: skip
        lo, hi = entropy_spread[(dataset, model)]
        _errorbar(ax_s, betas, [p.entropy_median for p in curve], lo, hi, fmt="o-", label=label)
    for ax, name in (
        (ax_rho, r"median $\rho(G)$ (stochastic)"),
        (ax_s, "median entropy S"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("beta")
        ax.set_ylabel(f"{name}\nmedian over seeds, bars: seed range")
        ax.legend(fontsize=8)
    ax_rho.set_yscale("log")
    return fig


def probe(panels: Sequence[tuple[str, list[dict[str, str]]]]) -> Figure:
    """Reconstruction error along the top eigen-directions and a random one, one panel per run."""
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, rows) in zip(axes, panels, strict=True):
        for direction in dict.fromkeys(row["direction"] for row in rows):
            sel = [row for row in rows if row["direction"] == direction]
            style = "k--" if direction == "random" else "-"
            ax.plot([float(s["t"]) for s in sel], [float(s["mse_mean"]) for s in sel], style, label=direction)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(r"step t (x + t $\lambda_j v_j$)")
        ax.set_ylabel("reconstruction MSE")
    axes[0].legend(fontsize=7)
    return fig


def histograms(data: dict[str, np.ndarray]) -> Figure:
    """Step histograms of rho(G) on a shared log grid, one per label."""
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    every = np.concatenate(list(data.values()))
    bins = np.logspace(np.log10(max(every.min(), 1e-12)), np.log10(max(every.max(), 1e-11)), 40)
    for label, rho in data.items():
        ax.hist(rho, bins=bins.tolist(), histtype="step", linewidth=1.4, label=label)
    ax.set_xscale("log")
    ax.set_xlabel(r"$\rho(G)$ (stochastic)")
    ax.set_ylabel("inputs")
    ax.legend(fontsize=7, ncol=2)
    return fig


def mixup_plane(points: Sequence[TrendPoint], damage: Sequence[tuple[float, float, float]], eps: float) -> Figure:
    """Median rho(G) and PGD damage against reconstruction error: beta curves and mixup points.

    ``damage[i]`` is (median, min, max) over seeds of point i's headline KL damage (the strongest
    attack's).
    """
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(11, 4))
    ax_r, ax_d = fig.subplots(1, 2)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(points):
        if p.defence == "none":
            groups.setdefault((p.dataset, p.model), []).append(i)
    for (dataset, model), idx in groups.items():
        idx = sorted(idx, key=lambda i: points[i].test_mse)
        xs = [points[i].test_mse for i in idx]
        ax_r.plot(xs, [points[i].rho_median for i in idx], "o-", label=f"beta curve {dataset}/{model}")
        ax_d.plot(xs, [damage[i][0] for i in idx], "o-")
        for i in idx:
            ax_r.annotate(f"{points[i].beta:.3g}", (points[i].test_mse, points[i].rho_median), fontsize=7)
    for p, (mid, lo, hi) in zip(points, damage, strict=True):
        if p.mixup:
            _errorbar(ax_r, [p.test_mse], [p.rho_median], [p.rho_median_min], [p.rho_median_max],
                      fmt="s", color="tab:red", markersize=8)  # fmt: skip
            _errorbar(ax_d, [p.test_mse], [mid], [lo], [hi], fmt="s", color="tab:red", markersize=8)
    ax_r.set(xlabel="test reconstruction MSE", ylabel=r"median $\rho(G)$", yscale="log")
    ax_d.set(xlabel="test reconstruction MSE", ylabel=f"strongest-attack KL damage, eps {eps:g}", yscale="log")
    if groups:  # a sweep of defended runs only has no beta curve to label
        ax_r.legend(fontsize=7)
    return fig


def damage_vs_eps(curves: dict[str, dict[str, list[float]]], eps: Sequence[float]) -> Figure:
    """Mean KL damage against eps per attack method; ``curves[method][label]`` is one line."""
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(3.2 * len(curves), 3.8))
    axes = fig.subplots(1, len(curves), sharey=True)
    for ax, (method, lines) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for label, values in lines.items():
            ax.plot(eps, values, "o-", label=label)
        ax.set(title=method, xlabel="L2 eps", yscale="log")
    first = np.atleast_1d(axes)[0]
    first.set_ylabel("mean KL damage (median over seeds)")
    first.legend(fontsize=7)
    return fig


def validity(v: Validity, eps: float) -> Figure:
    """Heat map of the per-run Spearman correlation of each score with the headline damage."""
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(1.3 * len(v.scores) + 3, 0.45 * len(v.runs) + 2))
    ax = fig.subplots()
    im = ax.imshow(v.within, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(v.scores)), list(v.scores), rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(v.runs)), list(v.runs), fontsize=7)
    for i in range(v.within.shape[0]):
        for j in range(v.within.shape[1]):
            if not np.isnan(v.within[i, j]):
                ax.text(j, i, f"{v.within[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=ax, label=f"Spearman with strongest-attack KL at eps {eps:g}")
    return fig


Band = tuple[list[int], list[float], list[float], list[float]]  # epochs, seed median, seed min, seed max


def against_epochs(panels: dict[str, dict[str, Band]]) -> Figure:
    """Each measure against the training length, one line per configuration with its seed band.

    ``panels[measure][configuration]`` is (epochs, median, min, max) over seeds.
    """
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(3.6 * len(panels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (measure, lines) in zip(axes, panels.items(), strict=True):
        for label, (epochs, mid, lo, hi) in lines.items():
            style = "s-" if label.startswith(("mixup", "adversarial")) else "o-"
            (line,) = ax.plot(epochs, mid, style, label=label, markersize=4)
            ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set(xscale="log", yscale="log", xlabel="epochs", title=measure)
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("median over seeds, band: seed range")
    axes[0].legend(fontsize=6)
    return fig


Plane = tuple[list[float], list[float], list[float], dict[str, tuple[list[float], list[float]]]]
# the beta curve (betas, its x and its y: seed medians), and per defended configuration its seeds' (x, y)


def frontier_planes(planes: dict[int, dict[str, Plane]]) -> Figure:
    """The robustness-reconstruction plane: ``planes[epochs][measure]`` is one panel, the beta curve
    as a line and each seed of each defence as a marker."""
    rows, cols = len(planes), max(len(v) for v in planes.values())
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(3.6 * cols, 3.3 * rows))
    axes = np.atleast_2d(fig.subplots(rows, cols))
    markers = {"mixup": ("s", "tab:red"), "adversarial": ("^", "tab:green")}
    for i, (epochs, panels) in enumerate(planes.items()):
        for j, (measure, (betas, xs, ys, defended)) in enumerate(panels.items()):
            ax = axes[i, j]
            ax.plot(xs, ys, "o-", color="tab:blue", label="beta curve")
            for b, x, y in zip(betas, xs, ys, strict=True):
                ax.annotate(f"{b:g}", (x, y), fontsize=6)
            for label, (dx, dy) in defended.items():
                marker, color = markers.get(label.split(" ")[0], ("D", "tab:purple"))
                ax.plot(dx, dy, marker, color=color, linestyle="none", label=label)
            ax.set(xscale="log", yscale="log", xlabel="test reconstruction MSE", title=f"{measure}, {epochs} epochs")
            ax.title.set_fontsize(8)
        axes[i, 0].legend(fontsize=6)
    return fig
