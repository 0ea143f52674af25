"""The bracket (docs/method.md section 10.4): what an attack reaches against what is certified.

Per input and budget, three numbers side by side: the strongest attack's damage on the smoothed
model (a lower bound on its worst case), the certified bound (an upper bound, with probability
1 - alpha) and the local-geometry prediction sqrt(lambda_1) eps of the base model (``mean`` kind for
the latent output, ``output`` kind for the reconstruction), which describes the base model, not the
smoothed one. Pure functions over (model, x), and a writer for a directory given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from vaelens._errors import VaelensError
from vaelens._io import save_figure, write_csv, write_json
from vaelens._outputs import claim_output, finish_output
from vaelens._protocol import Kind, decode, encode, prepare_inputs
from vaelens.attacks import Reference, Strongest, divergence
from vaelens.certification import Certificate, SmoothedVAE, certify_smoothed, check_eps
from vaelens.geometry import pullback_metric

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PREDICTING_KIND: dict[str, Kind] = {"latent": "mean", "recon": "output"}
FILES = ("certificates.csv", "summary.json", "bracket.png")


class Bracket(NamedTuple):
    """One smoothed model's bracket on N inputs and E budgets.

    Arguments:
        certificate: the certificate, ``bound`` and ``abstain`` (N, E).
        attacked: (N, E) L2 shift of the output reached by ``Strongest`` on the smoothed model (the
            same noise as the certificate's), or None when not attacked.
        predicted: (N, E) sqrt(lambda_1) eps of the base model's metric.
        recon_mse: (N,) per-pixel MSE between x and the smoothed model's reconstruction.
        base_recon_mse: (N,) the same for the base model, g(mu(x)): the difference is what smoothing costs.
    """

    certificate: Certificate
    attacked: torch.Tensor | None
    predicted: torch.Tensor
    recon_mse: torch.Tensor
    base_recon_mse: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        """(N, E) certified / attacked; NaN where the input abstains or was not attacked."""
        if self.attacked is None:
            return torch.full_like(self.certificate.bound, math.nan)
        return self.certificate.bound / self.attacked.clamp_min(torch.finfo(torch.float64).tiny)


def _predicted(smoothed: SmoothedVAE, x: torch.Tensor, eps: tuple[float, ...], batch_size: int) -> torch.Tensor:
    kind = PREDICTING_KIND[smoothed.config.output]
    parts = [pullback_metric(smoothed.base, x[i : i + batch_size], kind).eigenvalues(1)[:, 0]
             for i in range(0, len(x), batch_size)]  # fmt: skip
    lam = torch.cat(parts)  # (N,)
    return lam.double().clamp_min(0).sqrt().cpu()[:, None] * torch.tensor(eps, dtype=torch.float64)  # (N, E)


def _recon_mse(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) per-pixel MSE between x and decode(encode(x).mu)."""
    parts = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = prepare_inputs(model, x[i : i + batch_size])
            recon = decode(model, encode(model, xb).mu)
            parts.append((recon - xb).flatten(1).square().mean(1).double().cpu())
    return torch.cat(parts)


def _attacked(smoothed: SmoothedVAE, x: torch.Tensor, cert: Certificate, steps: int, batch_size: int,
              seed: int, limit: int | None) -> torch.Tensor:  # fmt: skip
    """(N, E) L2 shift reached by Strongest on the first ``limit`` inputs where the certificate
    answers (NaN elsewhere: an abstained input has no bound to bracket)."""
    objective = smoothed.config.output
    eps = cert.eps if isinstance(cert.eps, tuple) else (cert.eps,)
    out = torch.full((len(x), len(eps)), math.nan, dtype=torch.float64)
    answered = ~cert.abstain.view(len(x), -1)  # (N, E)
    if limit is not None:
        answered[limit:] = False
    for j, e in enumerate(eps):
        attack = Strongest(smoothed, e, "l2", objective, steps, seed=seed)
        rows = answered[:, j].nonzero().flatten()
        for i in range(0, len(rows), batch_size):
            idx = rows[i : i + batch_size]
            xb = x[idx]
            x_adv = attack(xb)
            with torch.no_grad():
                reached = divergence(smoothed, x_adv, Reference.of(smoothed, xb.to(x_adv)), objective)
            out[idx, j] = reached.clamp_min(0).sqrt().double().cpu()
    return out


def check_bracket_options(steps: int, batch_size: int, attack_inputs: int | None) -> None:
    """Refuse, in one line, attack settings ``bracket`` cannot run with (before any output is claimed)."""
    bad = {"--steps": steps, "--batch-size": batch_size, "--attack-inputs": attack_inputs}
    low = [f"{k} {v}" for k, v in bad.items() if v is not None and v < 1]
    if low:
        hint = " (leave --attack-inputs out to attack every input)" if attack_inputs is not None else ""
        raise VaelensError(f"{', '.join(low)}: must be >= 1{hint}")


def bracket(
    smoothed: SmoothedVAE,
    x: torch.Tensor,
    eps: float | Sequence[float],
    attack: bool = True,
    steps: int = 20,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = False,
    attack_inputs: int | None = None,
) -> Bracket:
    """Certify a smoothed model at x, attack it with ``Strongest`` (PGD ``steps``, APGD twice as
    many, EigenAttack on the base's directions) and predict from the base model's geometry.

    Arguments:
        smoothed: a ``SmoothedVAE``; its ``output`` decides latent or reconstruction.
        x: (N, *input_shape) inputs in [0, 1].
        eps: L2 budgets.
        attack: run the attacks (the costly part: every step samples n0 + n noisy copies).
        steps, seed: the attacks' PGD steps and seed.
        attack_inputs: attack only the first this many inputs (None: all). Inputs where the
            certificate abstains are not attacked; both get NaN.

    Returns:
        ``Bracket`` with (N, E) tensors.
    """
    budgets = check_eps(eps)
    check_bracket_options(steps, batch_size, attack_inputs)
    cert = certify_smoothed(smoothed, x, budgets, batch_size, progress)
    predicted = _predicted(smoothed, x, budgets, batch_size)
    attacked = _attacked(smoothed, x, cert, steps, batch_size, seed, attack_inputs) if attack else None
    mse, base_mse = _recon_mse(smoothed, x, batch_size), _recon_mse(smoothed.base, x, batch_size)
    return Bracket(cert, attacked, predicted, mse, base_mse)


def _median(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(np.median(finite.numpy())) if len(finite) else math.nan


def summarize(b: Bracket) -> dict[str, Any]:
    """Per budget: abstain rate, medians of bound, attacked, predicted and gap over answered inputs,
    the inputs where an attack exceeded the certificate (never expected), and where the gap is largest."""
    cert = b.certificate
    eps = cert.eps if isinstance(cert.eps, tuple) else (cert.eps,)
    rows = []
    for j, e in enumerate(eps):
        answered = ~cert.abstain[:, j]
        attacked = b.attacked[:, j] if b.attacked is not None else torch.full((len(answered),), math.nan)
        rows.append({
            "eps": e,
            "abstain_rate": float(cert.abstain[:, j].double().mean()),
            "median_bound": _median(cert.bound[:, j]),
            "median_bound_rms": _median(cert.bound_rms[:, j]),
            "median_attacked": _median(attacked[answered]),
            "median_predicted": _median(b.predicted[answered, j]),
            "median_gap": _median(b.gap[answered, j]),
            "exceeded": int((attacked[answered] > cert.bound[answered, j]).sum()),
        })  # fmt: skip
    gaps = [r["median_gap"] for r in rows]
    finite = [g for g in gaps if math.isfinite(g)]
    finding = None
    if finite:
        worst = int(np.nanargmax(gaps))
        falls = all(a >= b for a, b in zip(finite, finite[1:], strict=False))
        finding = {"largest_gap_eps": eps[worst], "largest_gap": gaps[worst], "gap_falls_with_eps": falls}
    return {
        "output": cert.output, "sigma": cert.sigma, "alpha": cert.alpha, "delta": cert.delta, "n": cert.n,
        "n0": cert.n0, "inputs": len(cert.bound), "median_clean_distance": _median(cert.clean_distance),
        "recon_mse": float(b.recon_mse.mean()), "base_recon_mse": float(b.base_recon_mse.mean()),
        "per_eps": rows, "finding": finding, "explanation": explain(finding, cert.sigma),
    }  # fmt: skip


def explain(finding: dict[str, Any] | None, sigma: float) -> str:
    """Why the gap is where it is, in one sentence built from the numbers."""
    if finding is None:
        return "No input was both certified and attacked, so there is no gap to report."
    where = "it shrinks as eps grows" if finding["gap_falls_with_eps"] else "it does not shrink steadily with eps"
    return (
        f"The certified bound is {finding['largest_gap']:.3g}x the attacked damage at eps "
        f"{finding['largest_gap_eps']:g} (sigma {sigma:g}), the largest gap, and {where}: the bound is 3 R, "
        "the factor 3 paid for the approximate center, and R is a high quantile of the spread of f(x + eta) "
        "at noise sigma, which is there even at eps 0, while an attack's damage starts at 0 and grows about "
        "linearly with eps."
    )


def write_certification(
    brackets: Sequence[Bracket], out: str | Path, meta: dict[str, Any], labels: torch.Tensor | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:  # fmt: skip
    """Write certificates.csv (per input, output and eps), summary.json and bracket.png into ``out``,
    the directory's marker last, so that nothing half-written looks finished."""
    out = claim_output(out, "certify", meta, overwrite)
    paths = {name: out / name for name in FILES}
    records = []
    for b in brackets:
        cert = b.certificate
        eps = cert.eps if isinstance(cert.eps, tuple) else (cert.eps,)
        for i in range(len(cert.bound)):
            for j, e in enumerate(eps):
                records.append({
                    "input": i, "label": int(labels[i]) if labels is not None else -1, "output": cert.output,
                    "eps": e, "bound": float(cert.bound[i, j]), "bound_rms": float(cert.bound_rms[i, j]),
                    "abstain": bool(cert.abstain[i, j]), "clean_distance": float(cert.clean_distance[i]),
                    "attacked": float(b.attacked[i, j]) if b.attacked is not None else math.nan,
                    "predicted": float(b.predicted[i, j]), "recon_mse": float(b.recon_mse[i]),
                    "base_recon_mse": float(b.base_recon_mse[i]),
                })  # fmt: skip
    write_csv(paths["certificates.csv"], records, list(records[0]))
    write_json(paths["summary.json"], {**meta, "outputs": [summarize(b) for b in brackets]})
    save_figure(_figure(brackets), paths["bracket.png"])
    finish_output(out, list(FILES))
    return paths


def _figure(brackets: Sequence[Bracket]) -> Figure:
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    fig = Figure(figsize=(5.5 * len(brackets), 4))
    axes = np.atleast_1d(fig.subplots(1, len(brackets)))
    for ax, b in zip(axes, brackets, strict=True):
        s = summarize(b)
        eps = [r["eps"] for r in s["per_eps"]]
        bound = [r["median_bound"] for r in s["per_eps"]]
        predicted = [r["median_predicted"] for r in s["per_eps"]]
        ax.plot(eps, bound, "o-", color="tab:red", label="certified bound (upper)")
        attacked = [r["median_attacked"] for r in s["per_eps"]] if b.attacked is not None else []
        if attacked:
            ax.plot(eps, attacked, "s-", color="tab:blue", label="strongest attack (lower)")
            ax.fill_between(eps, attacked, bound, color="tab:gray", alpha=0.2)
        ax.plot(eps, predicted, "^--", color="tab:green",
                label=r"$\sqrt{\lambda_1}\,\epsilon$ of the base model")  # fmt: skip
        for e, y, r in zip(eps, bound, s["per_eps"], strict=True):
            if math.isfinite(y):
                ax.annotate(f"{100 * r['abstain_rate']:.0f}% abstain", (e, y), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)  # fmt: skip
        if any(math.isfinite(v) and v > 0 for v in (*bound, *attacked, *predicted)):
            ax.set_yscale("log")  # a log axis needs a positive value: none when every input abstained
        else:
            ax.text(0.5, 0.5, "every input abstained", transform=ax.transAxes, ha="center")
        ax.set_xlabel(r"L2 budget $\epsilon$")
        ax.set_ylabel(f"L2 shift of the {'latent center' if s['output'] == 'latent' else 'reconstruction'}")
        ax.set_title(f"{s['output']}, sigma {s['sigma']:g}: medians over answered inputs", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
