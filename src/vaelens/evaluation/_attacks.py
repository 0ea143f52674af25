"""Running attacks over many inputs and budgets, and writing what they did (docs/method.md sections 2, 8).

``attack_sweep`` attacks the inputs batch by batch at every eps; ``write_attack_report`` writes the
damage CSV, a summary, the damage-versus-eps plot with the AUDDC of Gondim-Ribeiro et al. (2018),
and an image grid of x, x_adv and both reconstructions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vaelens._configs import check_fields, check_unique
from vaelens._errors import VaelensError
from vaelens._io import save_figure, write_csv, write_json
from vaelens._outputs import claim_output, finish_output
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import Kind, Norm, Objective, decode, encode, eval_mode, frozen, prepare_inputs
from vaelens._records import describe
from vaelens.attacks import (
    APGD,
    NORMS,
    OBJECTIVES,
    PGD,
    Attack,
    Damage,
    EigenAttack,
    RandomNoise,
    Reference,
    Strongest,
    TargetedAttack,
    attack_damage,
    check_budget,
    divergence,
)
from vaelens.evaluation._plots import draw_input, input_layout
from vaelens.geometry import check_kind

Method = Literal["eigen", "pgd", "apgd", "strongest", "random"]
METHODS: tuple[Method, ...] = ("eigen", "pgd", "apgd", "strongest", "random")
AUDDC_MEASURES = ("kl", "skl", "recon_shift", "latent_l2")


@dataclass(frozen=True)
class AttackSpec:
    """Which attack to run: method, norm, objective and their settings.

    ``objective`` defaults to "kl" (move the posterior away from the clean one) and, for targeted
    attacks, to "skl" towards the target's posterior (Kuzina et al.); any objective may be given.
    """

    method: Method = "pgd"
    norm: Norm = "l2"
    objective: Objective | None = None
    steps: int = 50
    restarts: int = 1
    kind: Kind = "fisher"
    directions: int = 1
    targeted: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        if self.method not in METHODS:
            raise VaelensError(f"unknown attack method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.norm not in NORMS:
            raise VaelensError(f"unknown norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise VaelensError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        check_kind(self.kind)
        for name in ("steps", "restarts", "directions"):
            if getattr(self, name) < 1:
                raise VaelensError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.targeted and self.method not in ("pgd", "apgd"):
            raise VaelensError(
                "--targeted works with --method pgd or apgd (descent towards the target, on the APGD schedule)"
            )
        if self.objective is None:
            object.__setattr__(self, "objective", "skl" if self.targeted else "kl")

    @property
    def dirname(self) -> str:
        """The default directory name of this attack's report: attack-METHOD[-targeted]."""
        return f"attack-{self.method}{'-targeted' if self.targeted else ''}"

    @property
    def target_objective(self) -> Objective:
        """The objective, resolved (never None after construction)."""
        assert self.objective is not None  # set in __post_init__
        return self.objective

    def build(self, model: torch.nn.Module, eps: float) -> Attack:
        """The attack object for one budget."""
        if self.targeted:
            return TargetedAttack(model, eps, self.norm, self.target_objective, self.steps)
        if self.method == "eigen":
            return EigenAttack(model, eps, self.norm, self.kind, self.directions)
        if self.method == "random":
            return RandomNoise(model, eps, self.norm, seed=self.seed)
        if self.method == "strongest":
            return Strongest(model, eps, self.norm, self.target_objective, self.steps, seed=self.seed)
        if self.method == "apgd":
            return APGD(model, eps, self.norm, self.target_objective, self.steps, self.restarts, self.seed)
        return PGD(model, eps, self.norm, self.target_objective, self.steps, restarts=self.restarts, seed=self.seed)


@dataclass
class AttackSweepResult:
    """Damage per eps (each a ``Damage`` over all inputs) and, for the grid, the first adversarials."""

    spec: AttackSpec
    eps: list[float]
    damage: list[Damage]
    seconds: list[float]
    shown: torch.Tensor
    shown_adv: torch.Tensor
    target_skl_before: torch.Tensor | None = None  # (N,) SKL(q(z|x), q(z|x_t)), targeted only
    target_skl_after: list[torch.Tensor] | None = None  # per eps, (N,) SKL(q(z|x_adv), q(z|x_t))
    winners: list[list[str]] | None = None  # per eps, the ensemble member that won each input

    def mean(self, measure: str) -> list[float]:
        """The mean of one damage measure over the inputs, per eps."""
        return [d.as_dict()[measure].mean().item() for d in self.damage]

    def no_progress(self) -> list[int]:
        """Per eps, how many samples the attack returned unchanged."""
        return [int(d.no_progress.sum()) for d in self.damage]

    def auddc(self) -> dict[str, float]:
        """{measure: AUDDC} over the eps grid for kl, skl, recon_shift and latent_l2; {} for one eps."""
        if len(self.eps) < 2:
            return {}
        return {m: auddc(self.eps, self.mean(m)) for m in AUDDC_MEASURES}


def choose_targets(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A target for each input of a targeted attack: another input of x, by a seeded derangement.

    Arguments:
        x: (N, *input_shape) inputs, N >= 2.
        seed: seeds the pairing.

    Returns:
        (N, *input_shape) targets; target i is never input i.
    """
    if len(x) < 2:
        raise VaelensError("a targeted attack needs at least 2 inputs, so that each has another as its target")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[torch.roll(perm, 1)][torch.argsort(perm)]  # input perm[i] gets target perm[i - 1]


def _skl_to(model: torch.nn.Module, x: torch.Tensor, x_target: torch.Tensor) -> torch.Tensor:
    """SKL between the posteriors of x and of the targets, per sample (N,)."""
    with torch.no_grad(), frozen(model):
        xs, ts = prepare_inputs(model, x), prepare_inputs(model, x_target, "x_target")
        return divergence(model, xs, Reference.of(model, ts), "skl").cpu()


def auddc(eps: Sequence[float], damage: Sequence[float]) -> float:
    """Area under the damage-versus-distance curve (Gondim-Ribeiro et al. 2018), by the trapezoid
    rule over the eps grid, divided by its width: the mean damage over the range of budgets."""
    e, d = np.asarray(eps, dtype=float), np.asarray(damage, dtype=float)
    order = np.argsort(e)
    e, d = e[order], d[order]
    if len(e) < 2:
        return float(d[0])
    area = float(((d[1:] + d[:-1]) / 2 * np.diff(e)).sum())  # the trapezoid rule, any numpy version
    return area / float(e[-1] - e[0])


def attack_sweep(
    model: torch.nn.Module,
    x: torch.Tensor,
    eps: Sequence[float],
    spec: AttackSpec,
    x_target: torch.Tensor | None = None,
    batch_size: int = 250,
    n_show: int = 8,
    progress: bool = True,
) -> AttackSweepResult:
    """Attack every input at every eps, batch by batch; measure the damage.

    Arguments:
        model: a VAE.
        x: (N, *input_shape) inputs in [0, 1].
        eps: budgets (each > 0).
        spec: the attack.
        x_target: (N, *input_shape) targets for a targeted attack.
        batch_size: inputs per batch.
        n_show: inputs kept (at the largest eps) for the image grid.

    Returns:
        ``AttackSweepResult``: per eps, a ``Damage`` of (N,) tensors and the seconds taken.

    Examples::

        >>> result = attack_sweep(model, x, [0.5, 1.0], AttackSpec("pgd", steps=50))  # x: (N, 1, 28, 28)
        >>> result.damage[1].kl.shape, result.auddc()["kl"]
        (torch.Size([N]), ...)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise VaelensError(f"batch_size (--batch-size) must be >= 1; got {batch_size}")
    eps = [float(e) for e in eps]
    check_unique(tuple(eps), "eps")
    if not eps:
        raise VaelensError("give at least one eps")
    for e in eps:
        check_budget(e, spec.norm)
    if spec.targeted and x_target is None:
        raise VaelensError("a targeted sweep needs x_target")
    damages, seconds, after, winners = [], [], [], []
    shown_adv = x[:0]
    with progress_bar(progress) as bar:
        n_batches = -(-len(x) // batch_size)
        ticker = Ticker(bar, f"attacking ({spec.method})", n_batches * len(eps), interval=0.0)
        for e in eps:
            attack = spec.build(model, e)
            parts, adv, tic = [], [], time.perf_counter()
            won: list[str] = []
            for start in range(0, len(x), batch_size):
                xb = x[start : start + batch_size]
                tb = None if x_target is None else x_target[start : start + batch_size]
                xa = attack(xb, tb) if spec.targeted else attack(xb)
                parts.append(attack_damage(model, xb, xa))
                adv.append(xa)
                won += getattr(attack, "last_winners", [])
                if start == 0 and e == max(eps):
                    shown_adv = xa[:n_show].cpu()
                ticker.tick(f"eps {e:g}")
            seconds.append(time.perf_counter() - tic)
            damages.append(Damage.concat(parts))
            winners.append(won)
            if x_target is not None:
                after.append(_skl_to(model, torch.cat(adv), x_target))
        ticker.flush()
    before = None if x_target is None else _skl_to(model, x, x_target)
    ensemble = winners if all(len(w) == len(x) for w in winners) else None
    return AttackSweepResult(spec, eps, damages, seconds, x[:n_show].cpu(), shown_adv, before, after or None, ensemble)


def attack_output(spec: AttackSpec, eps: Sequence[float], meta: dict | None = None) -> dict:
    """What an attack's output directory is claimed with: the attack, its budgets, its inputs."""
    return {"attack": asdict(spec), "eps": [float(e) for e in eps], **(meta or {})}


def _grid(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, title: str, path: Path) -> None:
    with torch.no_grad(), eval_mode(model):
        xs, xa = prepare_inputs(model, x), prepare_inputs(model, x_adv, "x_adv")
        rows = [xs, xa, decode(model, encode(model, xs).mu), decode(model, encode(model, xa).mu)]
    names = ["x", "x_adv", "recon(x)", "recon(x_adv)"]
    from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

    n, layout = len(x), input_layout(model, x.dim() - 1)
    wide = 2.4 if layout in ("video", "volume", "audio", "waveform") else 1.0
    fig = Figure(figsize=(1.3 * wide * n, 5.6))
    axes = fig.subplots(4, n, squeeze=False)
    for r, (row, name) in enumerate(zip(rows, names, strict=True)):
        for c in range(n):
            draw_input(axes[r, c], row[c], layout)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def write_attack_report(
    result: AttackSweepResult,
    model: torch.nn.Module,
    out: str | Path,
    labels: torch.Tensor | None = None,
    meta: dict | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write damage.csv, summary.json, damage_vs_eps.png (several eps) and adversarial_grid.png as one
    set, the directory's marker last. A directory another command or attack wrote is refused unless
    ``overwrite``. Damage that is not finite (NaN or Inf) is refused, never written silently."""
    bad = [m for d in result.damage for m, v in d.as_dict().items() if m in Damage.SHOWN and v.isinf().any()]
    nan = [m for d in result.damage for m, v in d.as_dict().items() if m != "ms_ssim_recon" and v.isnan().any()]
    if bad or nan:
        raise VaelensError(
            f"the attack's damage is not finite ({', '.join(sorted(set(bad + nan)))}); the model's outputs hold "
            "NaN or Inf for some inputs: check the model and the inputs"
        )
    out = claim_output(out, "attack", attack_output(result.spec, result.eps, meta), overwrite)
    names = Damage.names()
    rows = []
    before, after = result.target_skl_before, result.target_skl_after
    targeted = before is not None and after is not None
    for k, (e, dmg) in enumerate(zip(result.eps, result.damage, strict=True)):
        cols = {n: getattr(dmg, n).double().numpy() for n in names}
        if before is not None and after is not None:
            cols["target_skl_before"] = before.double().numpy()
            cols["target_skl_after"] = after[k].double().numpy()
        for i in range(len(dmg.kl)):
            label = int(labels[i]) if labels is not None else -1
            row: dict[str, Any] = {"index": i, "label": label, "method": result.spec.method, "eps": e}
            row.update({n: float(v[i]) for n, v in cols.items()})
            if result.winners is not None:
                row["winner"] = result.winners[k][i]
            rows.append(row)
    paths = {"damage": out / "damage.csv", "summary": out / "summary.json"}
    extra = ["target_skl_before", "target_skl_after"] if targeted else []
    extra += ["winner"] if result.winners is not None else []
    write_csv(paths["damage"], rows, ["index", "label", "method", "eps", *names, *extra])
    summary: dict[str, Any] = {
        "attack": asdict(result.spec),
        **(meta or {}),
        "per_eps": [
            {"eps": e, "seconds": s, "no_progress_count": int(d.no_progress.sum()), **d.summary()}
            for e, s, d in zip(result.eps, result.seconds, result.damage, strict=True)
        ],
    }
    if before is not None and after is not None:
        summary["target_skl_before"] = describe(before)
        for row, moved in zip(summary["per_eps"], after, strict=True):
            row["target_skl_after"] = describe(moved)
    if len(result.eps) > 1:
        summary["auddc"] = result.auddc()
        paths["damage_vs_eps"] = out / "damage_vs_eps.png"
        from matplotlib.figure import Figure  # matplotlib only where a figure is drawn

        fig = Figure(figsize=(10, 3.5))
        axes = fig.subplots(1, 3)
        for ax, n in zip(axes, ("kl", "recon_shift", "ms_ssim_recon"), strict=True):
            ax.plot(result.eps, result.mean(n), "o-")
            ax.set_xlabel(f"eps ({result.spec.norm})")
            ax.set_ylabel(f"mean {n}")
            if n in summary["auddc"]:
                ax.set_title(f"AUDDC {summary['auddc'][n]:.4g}", fontsize=9)
        fig.suptitle(f"{result.spec.method} attack: damage against budget")
        fig.tight_layout()
        save_figure(fig, paths["damage_vs_eps"])
    write_json(paths["summary"], summary)
    if len(result.shown):
        paths["grid"] = out / "adversarial_grid.png"
        _grid(
            model,
            result.shown,
            result.shown_adv,
            f"{result.spec.method}, eps {max(result.eps):g}",
            paths["grid"],
        )
    finish_output(out, [p.name for p in paths.values()])
    return paths
