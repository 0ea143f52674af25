"""Figures for audits: histograms of scores, eigen-directions drawn like their inputs, probe curves.

An input (or a direction in input space) is drawn as its modality is seen: an image as an image, a
video as a strip of frames, audio as a waveform over its spectrogram, a volume as three orthogonal
slices through its centre (docs/method.md section 1, modalities). Uses matplotlib's object API (no
pyplot), so no display or global backend is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaelens._io import save_figure
from vaelens._protocol import Kind

if TYPE_CHECKING:
    from matplotlib.axes import Axes


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


STRIP_FRAMES = 4  # frames of a video drawn side by side


def input_layout(model: Any, per_sample_dims: int) -> str:
    """How a model's inputs are drawn: its declared ``input_layout`` (adapters of video, audio and
    volume models say), else by the per-sample rank: (C, T) audio, (C, T, H, W) video, else image."""
    declared = getattr(model, "input_layout", None)
    if isinstance(declared, str):
        return declared
    return {2: "audio", 4: "video"}.get(per_sample_dims, "image")


def _frames(t: torch.Tensor, axis: int) -> list[torch.Tensor]:
    """Up to STRIP_FRAMES slices of ``t`` along ``axis``, evenly spaced, first and last included."""
    n = t.shape[axis]
    picks = sorted({round(i * (n - 1) / max(1, STRIP_FRAMES - 1)) for i in range(min(n, STRIP_FRAMES))})
    return [t.select(axis, i) for i in picks]


def _side_by_side(panels: list[torch.Tensor]) -> torch.Tensor:
    """(C, h_i, w_i) panels zero-padded to one height and joined left to right with a 1-pixel gap."""
    height = max(p.shape[-2] for p in panels)
    padded = [torch.nn.functional.pad(p, (0, 1, 0, height - p.shape[-2])) for p in panels]
    return torch.cat(padded, dim=-1)[..., :-1]  # (C, height, sum w_i + gaps)


def _volume_slices(t: torch.Tensor) -> torch.Tensor:
    """(C, D, H, W) -> the central axial, coronal and sagittal slices side by side, (C, h, w)."""
    d, h, w = t.shape[1:]
    return _side_by_side([t[:, d // 2], t[:, :, h // 2], t[:, :, :, w // 2]])


def _audio(ax: Axes, t: torch.Tensor, signed: bool) -> None:
    """A (C, T) signal (channels averaged): waveform above, log-magnitude spectrogram below."""
    wave = t.detach().cpu().double().reshape(-1, t.shape[-1]).mean(0).numpy()  # (T,)
    if not signed:  # an input: [0, 1] back to the waveform's [-1, 1], so no DC line hides the spectrum
        wave = 2 * wave - 1
    top, bottom = ax.inset_axes((0, 0.52, 1, 0.48)), ax.inset_axes((0, 0, 1, 0.48))
    top.plot(wave, lw=0.6, color="tab:red" if signed else "k")
    top.set_xlim(0, len(wave) - 1)
    n_fft = int(min(256, 2 ** np.floor(np.log2(max(len(wave), 8)))))
    spec = torch.stft(torch.as_tensor(wave), n_fft, n_fft // 4, window=torch.hann_window(n_fft, dtype=torch.float64),
                      return_complex=True).abs()  # (n_fft/2 + 1, frames)  # fmt: skip
    bottom.imshow(np.log10(spec.numpy() + 1e-8), origin="lower", aspect="auto", cmap="magma")
    for a in (top, bottom):
        a.set_xticks([])
        a.set_yticks([])
    ax.set_axis_off()


def draw_input(ax: Axes, t: torch.Tensor, layout: str = "image", signed: bool = False) -> None:
    """Draw one input or input-space direction ``t`` (per-sample shape) into ``ax`` as its layout
    is seen: image; video (C, T, H, W) as a strip of frames; audio (C, T) or a waveform (T,) as
    waveform and spectrogram; volume (C, D, H, W) as three orthogonal slices."""
    t = t.detach().cpu().float()
    if layout in ("audio", "waveform") and t.dim() in (1, 2):
        _audio(ax, t, signed)
        return
    if layout == "video" and t.dim() == 4:
        t = _side_by_side(_frames(t, 1))
    elif layout == "volume" and t.dim() == 4:
        t = _volume_slices(t)
    elif t.dim() > 3:  # any other layout of higher rank: its first slices, so the figure is still drawn
        t = t.reshape(t.shape[0], -1, t.shape[-1])
    img, style = as_image(t, signed)
    ax.imshow(img, **style)


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
    x: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor, kind: Kind, path: str | Path, layout: str = "image"
) -> None:
    """Inputs (n, *s) beside their top eigen-directions (n, K, *s), titled with lambda_j, each
    drawn as its ``layout`` is seen (``draw_input``)."""
    n, k = vectors.shape[:2]
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    wide = 2.4 if layout in ("video", "volume", "audio", "waveform") else 1.0
    fig = Figure(figsize=(1.6 * wide * (k + 1), 1.7 * n))
    axes = fig.subplots(n, k + 1, squeeze=False)
    for i in range(n):
        draw_input(axes[i, 0], x[i], layout)
        axes[i, 0].set_title("input", fontsize=8)
        for j in range(k):
            draw_input(axes[i, j + 1], vectors[i, j], layout, signed=True)
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
