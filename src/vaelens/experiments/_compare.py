"""Comparing trained runs on robustness against reconstruction (docs/method.md sections 4 and 6).

Every run is evaluated on the same test inputs: reconstruction, ELBO, active units, the spectra of
G (stochastic and fisher kinds), and the KL damage of EigenAttack, PGD, APGD and, as the headline,
the strongest of them per input (AutoAttack's rule), at one budget. The verdict
places each mixup run against the curve the plain beta runs trace in the robustness-reconstruction
plane; it is computed from the numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple, cast

import numpy as np
import torch

from vaelens._errors import VaelensError
from vaelens._io import save_figure, write_csv, write_json, write_text
from vaelens._outputs import claim_output, finish_output
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import is_deterministic, model_input_shape
from vaelens.data import MediaOptions, load_dataset, sample_shape, take
from vaelens.experiments._analysis import against_curve, position_phrase
from vaelens.experiments._evaluate import Protocol, evaluate_model
from vaelens.experiments._models import (
    default_dataset,
    folder_image_shape,
    is_run_spec,
    load_model,
    media_for,
    parse_smooth_spec,
)
from vaelens.experiments._runs import parse_run_ref
from vaelens.experiments._schema import ENSEMBLE, strongest_of
from vaelens.training import read_config

# (printed header, RunRow field): the columns a comparison table shows, in order
COMPARE_COLUMNS = (
    ("run", "name"), ("beta", "beta"), ("defence", "defence"), ("recon MSE", "test_mse"), ("ELBO", "elbo"),
    ("active", "active_units"), ("rho med", "rho_median"), ("rho mean", "rho_mean"),
    ("S med", "entropy_median"), ("fisher rho med", "fisher_rho_median"),
    ("output rho med", "output_rho_median"), ("eigen KL", "eigen_kl"), ("PGD KL", "pgd_kl"), ("APGD KL", "apgd_kl"),
    ("strongest KL", "strongest_kl"), ("strongest recon shift", "strongest_recon_shift"),
)  # fmt: skip


class DatasetMismatchWarning(UserWarning):
    """The compared runs were trained on different data sets."""


@dataclass
class RunRow:
    """One run's numbers in a comparison."""

    name: str
    beta: float
    mixup: bool
    defence: str  # none, mixup or adversarial: only 'none' runs draw the beta curve
    dataset: str
    test_mse: float
    test_recon: float
    elbo: float
    active_units: int
    rho_median: float
    rho_mean: float
    entropy_median: float
    fisher_rho_median: float
    fisher_rho_mean: float
    output_rho_median: float
    eigen_kl: float
    pgd_kl: float
    pgd_recon_shift: float
    apgd_kl: float
    strongest_kl: float  # per input, the most damaging of EigenAttack, PGD and APGD: the headline
    strongest_recon_shift: float
    rho: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def record(self) -> dict:
        d = asdict(self)
        d.pop("rho")
        return d

    def cells(self) -> list[str]:
        """The row as printed: COMPARE_COLUMNS, numbers to 4 significant digits."""
        rec = self.record()
        return [f"{rec[key]:.4g}" if isinstance(rec[key], float) else str(rec[key]) for _, key in COMPARE_COLUMNS]


@dataclass
class Comparison:
    rows: list[RunRow]
    eps: float
    n: int
    verdict: list[str]
    settings: dict = field(default_factory=dict)  # what the output directory is claimed with


def compare_output(
    runs: Sequence[str | Path], n: int, eps: float, pgd_steps: int, seed: int, latent_space: str = "diffusion"
) -> dict:
    """The settings a comparison's output directory is claimed with (and the latent space, where a
    third-party model is compared: vaelens' own runs have one latent only)."""
    settings = {"runs": [str(r) for r in runs], "n": n, "eps": eps, "pgd_steps": pgd_steps, "seed": seed}
    if not all(is_run_spec(str(r)) for r in runs):
        settings["latent_space"] = latent_space
    return settings


class _Entry(NamedTuple):
    """What a comparison needs of one model: its name, training settings (NaN beta for a model
    vaelens did not train) and the data set and likelihood its reconstruction is scored with."""

    spec: str
    name: str
    beta: float
    mixup: bool
    defence: str
    dataset: str
    likelihood: str
    shape: tuple[int, ...] | None


def _entry(
    spec: str | Path, dataset: str | None, allow_pickle: bool, latent_space: str = "diffusion",
    checkpointing: bool = False,
) -> tuple[_Entry, torch.nn.Module | None]:  # fmt: skip
    spec = str(spec)
    if is_run_spec(spec):
        run_dir, _ = parse_run_ref(spec)
        c = read_config(run_dir)
        name = Path(spec).name
        entry = _Entry(spec, name, c.beta, c.defence.name == "mixup", c.defence.name, c.dataset, c.model.likelihood,
                       c.model.input_shape)  # fmt: skip
        return entry, None
    smoothing = parse_smooth_spec(spec)
    if smoothing is not None and is_run_spec(smoothing.inner):  # a smoothed run: judged against the beta curve
        inner, _ = _entry(smoothing.inner, dataset, allow_pickle, latent_space, checkpointing)
        name = f"smooth{smoothing.options['sigma']:g}:{inner.name}"
        smoothed = load_model(spec, "cpu", allow_pickle)
        return inner._replace(spec=spec, name=name, defence=f"smoothed ({inner.defence})"), smoothed
    model = load_model(spec, "cpu", allow_pickle, latent_space, checkpointing)
    if is_deterministic(model):
        raise VaelensError(
            f"{spec} has a deterministic encoder: compare measures KL damage and the stochastic metric, which it "
            "has neither of; use vaelens audit --kind mean and vaelens attack --objective latent"
        )
    shape = model_input_shape(model)
    prefix, rest = spec.split(":", 1)
    name = f"{prefix}:{Path(rest.rstrip('/')).name or rest}"  # short enough for a table and a figure legend
    return _Entry(spec, name, float("nan"), False, "none", dataset or default_dataset(model), "gaussian", shape), model


def compare_runs(
    runs: Sequence[str | Path],
    n: int = 500,
    eps: float = 1.0,
    pgd_steps: int = 50,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
    dataset: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    allow_pickle: bool = False,
    media: MediaOptions | None = None,
    latent_space: str = "diffusion",
    checkpointing: bool = False,
) -> Comparison:
    """Evaluate every run or model on the same first n test inputs.

    Arguments:
        runs: run directories (``RUN`` or ``RUN@N``) or model specs (``diffusers:DIR``, ...: see
            ``load_model``). A model vaelens did not train has no beta and is not part of the beta
            curve; its reconstruction is scored as Gaussian (MSE).
        n: test inputs.
        eps: L2 budget of the attacks.
        pgd_steps: PGD steps (kl objective).
        batch_size: inputs per batch.
        dataset, image_size, channels: the data (default: the first run's data set, or for a model
            the offline set whose shape it takes).
        allow_pickle: allow pickled model files (see ``load_model``).
        media: frames of videos, sample rate and seconds of audio, for ``folder:`` sets of those.
        latent_space, checkpointing: for models that are not runs (see ``load_model``).
    """
    if not runs:
        raise VaelensError("give at least one run to compare")
    if n < 1 or not (math.isfinite(eps) and eps > 0):
        raise VaelensError(f"n must be >= 1 and eps > 0; got n={n}, eps={eps}")
    loaded = [_entry(r, dataset, allow_pickle, latent_space, checkpointing) for r in runs]
    entries = [e for e, _ in loaded]
    datasets = sorted({e.dataset for e in entries})
    if len(datasets) > 1 and dataset is None:
        warnings.warn(
            f"the runs were trained on different data sets ({', '.join(datasets)}); all are evaluated on "
            f"{entries[0].dataset}, so their numbers are not comparable as a like-for-like test",
            DatasetMismatchWarning,
            stacklevel=2,
        )
    name = dataset or entries[0].dataset
    x = _test_inputs(loaded, name, image_size, channels, n, media)
    rows = []
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "comparing", len(runs), interval=0.0)
        for entry, held in loaded:
            model = held if held is not None else load_model(entry.spec, "cpu", allow_pickle)
            rows.append(_row(entry, model, x, name, eps, pgd_steps, seed, batch_size))
            ticker.tick(entry.name)
        ticker.flush()
    return Comparison(rows, eps, len(x), verdict(rows), compare_output(runs, n, eps, pgd_steps, seed, latent_space))


def _test_inputs(
    loaded: list[tuple[_Entry, torch.nn.Module | None]], name: str, image_size: int | None, channels: int | None,
    n: int, media: MediaOptions | None = None,
) -> torch.Tensor:  # fmt: skip
    """The first n test inputs (n, *s) of data set ``name``, at the shape the first model takes;
    a one-line error if another model takes another shape."""
    first, held = loaded[0]
    if is_run_spec(first.spec):
        c = read_config(parse_run_ref(first.spec)[0])
        data = load_dataset(name, "test", c.data_root, image_size or c.image_size, channels or c.image_channels)
    else:
        assert held is not None  # a spec that is not a run was loaded by _entry
        data = load_dataset(name, "test", None, *folder_image_shape(held, image_size, channels), media_for(held, media))
    shape = sample_shape(data)
    for e, _ in loaded:
        if e.shape is not None and tuple(e.shape) != shape:
            raise VaelensError(f"{e.spec} takes inputs of shape {e.shape}, not {shape}; it cannot be compared")
    return take(data, n)[0]


def _row(
    entry: _Entry, model: torch.nn.Module, x: torch.Tensor, dataset: str, eps: float, pgd_steps: int, seed: int,
    batch_size: int,
) -> RunRow:  # fmt: skip
    """One model's row: reconstruction, the audit of the evaluated kinds and the ensemble's attacks
    at one budget, by the protocol a sweep uses (``evaluate_model``)."""
    protocol = Protocol((eps,), pgd_steps, seed, ENSEMBLE, batch_size=batch_size, images=False)
    done = evaluate_model(model, x, protocol, cast(str, entry.likelihood))
    mse, nll, elbo, active = done.quality
    assert done.audited is not None  # nothing is skipped in memory
    scores = done.audited.scores
    damage = {method: swept.damage[0] for method, swept in done.swept.items()}
    eigen, pgd = damage["eigen"], damage["pgd"]
    strongest_kl, strongest_shift = strongest_of(
        {m: d.kl.double().numpy() for m, d in damage.items()},
        {m: d.recon_shift.double().numpy() for m, d in damage.items()},
    )
    rho = scores["stochastic"].spectral_radius.double().numpy()
    fisher = scores["fisher"].spectral_radius.double().numpy()
    median = {kind: s.summary() for kind, s in scores.items()}  # numpy's median, as everywhere
    return RunRow(
        name=entry.name, beta=entry.beta, mixup=entry.mixup, defence=entry.defence, dataset=dataset,
        test_mse=mse, test_recon=nll, elbo=elbo, active_units=active,
        rho_median=float(np.median(rho)), rho_mean=float(rho.mean()),
        entropy_median=median["stochastic"]["von_neumann_entropy"]["median"],
        fisher_rho_median=float(np.median(fisher)), fisher_rho_mean=float(fisher.mean()),
        output_rho_median=median["output"]["spectral_radius"]["median"],
        eigen_kl=eigen.kl.mean().item(), pgd_kl=pgd.kl.mean().item(),
        pgd_recon_shift=pgd.recon_shift.mean().item(), apgd_kl=damage["apgd"].kl.mean().item(),
        strongest_kl=float(strongest_kl.mean()), strongest_recon_shift=float(strongest_shift.mean()),
        rho=rho,
    )  # fmt: skip


# (RunRow field, label): what a defended run is placed on against the beta curve, x being its own
# reconstruction MSE. A smoothed model has no Jacobian: its spectra are its base's (compare shows them
# for reference), so it is placed on the attack measures only, at the smoothed model's error.
SPECTRAL_MEASURES = (
    ("rho_median", "median rho(G)"),
    ("fisher_rho_median", "median fisher rho(G)"),
    ("output_rho_median", "median output rho(G)"),
)
ATTACK_MEASURES = (
    ("strongest_kl", "KL damage of the strongest attack"),
    ("strongest_recon_shift", "reconstruction shift under the strongest attack"),
    ("pgd_kl", "PGD KL damage"),
    ("eigen_kl", "EigenAttack KL damage"),
)
# figure markers per defence; a smoothed model ("smoothed (noise)", ...) gets its own whatever its base's
MARKERS = {"mixup": ("s", "tab:red"), "adversarial": ("^", "tab:green"), "noise": ("D", "tab:purple")}
SMOOTHED_MARKER = ("*", "tab:orange")
OWN_ERROR = " (the smoothed model's own)"


def is_smoothed(r: RunRow) -> bool:
    """A center-smoothed model (a ``smooth:`` spec of a run): a point of its own on the frontier."""
    return r.defence.startswith("smoothed")


def _marker(r: RunRow) -> tuple[str, str]:
    return SMOOTHED_MARKER if is_smoothed(r) else MARKERS.get(r.defence, ("o", "tab:blue"))


def verdict(rows: list[RunRow]) -> list[str]:
    """Plain-language sentences, computed from the numbers, placing defended runs (mixup, adversarial
    or noise training, smoothed models) against the beta curve the undefended runs draw."""
    curve = [r for r in rows if r.defence == "none" and math.isfinite(r.beta)]  # third-party models have no beta
    mixed = [r for r in rows if r.defence != "none"]
    if not mixed:
        return [
            "No defended run (mixup, adversarial or noise training, or a smoothed model) was given, so there is "
            "nothing to place against the beta curve."
        ]
    if len(curve) < 2:
        return ["At least two runs without a defence are needed to draw a beta curve; none was judged."]
    out = []
    for r in mixed:
        measures = ATTACK_MEASURES if is_smoothed(r) else (*SPECTRAL_MEASURES, *ATTACK_MEASURES)
        for attr, label in measures:
            pos = against_curve(
                [c.test_mse for c in curve], [getattr(c, attr) for c in curve], r.test_mse, getattr(r, attr)
            )
            out.append(
                f"{r.name} (beta {r.beta:g}, {r.defence}): {label} {pos.actual:.4g} at reconstruction error "
                f"{r.test_mse:.4g}{OWN_ERROR if is_smoothed(r) else ''} lies {position_phrase(pos)}."
            )
        same_beta = [c for c in curve if c.beta == r.beta]
        if same_beta:
            c = same_beta[0]
            out.append(
                f"Against {c.name} (same beta, no defence): median rho(G) {r.rho_median:.4g} vs {c.rho_median:.4g}, "
                f"PGD KL {r.pgd_kl:.4g} vs {c.pgd_kl:.4g}, reconstruction MSE {r.test_mse:.4g} vs {c.test_mse:.4g}."
            )
    return out


def write_comparison(comp: Comparison, out: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write comparison.csv, comparison.json, rho_histograms.png, robustness_reconstruction.png and
    verdict.txt as one set, the directory's marker last."""
    out = claim_output(out, "compare", comp.settings, overwrite)
    records = [r.record() for r in comp.rows]
    paths = {
        "csv": out / "comparison.csv",
        "json": out / "comparison.json",
        "histograms": out / "rho_histograms.png",
        "plot": out / "robustness_reconstruction.png",
        "verdict": out / "verdict.txt",
    }
    write_csv(paths["csv"], records, list(records[0]))
    write_json(paths["json"], {"eps": comp.eps, "n": comp.n, "runs": records, "verdict": comp.verdict})
    write_text(paths["verdict"], "\n".join(comp.verdict) + "\n")

    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    every = np.concatenate([r.rho for r in comp.rows])
    bins = np.logspace(np.log10(max(every.min(), 1e-12)), np.log10(every.max()), 50)
    for r in comp.rows:
        ax.hist(r.rho, bins=bins.tolist(), histtype="step", linewidth=1.5, label=_label(r))
    ax.set_xscale("log")
    ax.set_xlabel(r"spectral radius $\rho(G)$ (stochastic)")
    ax.set_ylabel("inputs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, paths["histograms"])

    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for ax, attr, ylabel in (
        (axes[0], "rho_median", r"median $\rho(G)$"),
        (axes[1], "strongest_kl", f"strongest-attack KL damage, eps {comp.eps:g}"),
    ):
        curve = sorted((r for r in comp.rows if r.defence == "none" and math.isfinite(r.beta)), key=lambda r: r.beta)
        if curve:
            ax.plot(
                [r.test_mse for r in curve],
                [getattr(r, attr) for r in curve],
                "o-",
                color="tab:blue",
                label="beta runs",
            )
        for r in comp.rows:
            marker = _marker(r)
            ax.plot(r.test_mse, getattr(r, attr), marker[0], color=marker[1], markersize=9 if is_smoothed(r) else 7)
            ax.annotate(
                _label(r),
                (r.test_mse, getattr(r, attr)),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
        ax.set_xlabel("test reconstruction MSE")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
    axes[0].set_title("robustness against reconstruction (lower-left is better)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, paths["plot"])
    finish_output(out, [p.name for p in paths.values()])
    return paths


def _label(r: RunRow) -> str:
    return f"{r.name} (beta {r.beta:g}{'' if r.defence == 'none' else ', ' + r.defence})"
