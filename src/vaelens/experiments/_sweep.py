"""Resumable sweeps over data sets x models x betas x defences x seeds (docs/method.md sections 6 and 7).

The unit of work is one run: train, then audit (spectra, scores, probe), then attack (eigen, PGD,
APGD and random over the eps list). With ``eval_epochs`` the run keeps its weights at those epochs
and each is evaluated the same way into ``runs/NAME@N`` (a ``RUN@N`` reference), before the
final epoch into ``runs/NAME``. A unit is a pure function of its config and writes only inside its
own directory, so any executor can run units in parallel; the local one runs them in turn or in a
small process pool. Each stage is skipped when its output exists; ``result.json``, written last,
marks a finished unit. ``results.csv`` is rebuilt from the finished units, so each run appears once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import torch

from vaelens._configs import check_fields, check_unique
from vaelens._errors import VaelensError
from vaelens._io import exclusive_lock, read_json, write_csv, write_json
from vaelens._outputs import is_complete
from vaelens._progress import Ticker
from vaelens.data import load_dataset, take
from vaelens.evaluation import (
    AttackSpec,
    AttackSweepResult,
    AuditConfig,
    AuditResult,
    Quality,
    attack_output,
    audit_output,
    write_attack_report,
    write_audit,
)
from vaelens.experiments._evaluate import Keeper, Protocol, evaluate_model
from vaelens.experiments._presets import PRESETS
from vaelens.experiments._runs import load
from vaelens.experiments._schema import (
    ATTACK_METHODS,
    DAMAGE_MEASURES,
    ENSEMBLE,
    EVALUATED_KINDS,
    HEADLINE,
    SCORE_COLUMNS,
    ResultRow,
    damage_column,
    read_csv,
    strongest_of,
)
from vaelens.models import ModelConfig
from vaelens.training import (
    DEFENCES,
    AdversarialConfig,
    Defence,
    MixupConfig,
    NoDefence,
    NoiseConfig,
    TrainConfig,
    check_defence,
    input_shape_of,
    train,
)

MIXUP_CHOICES = ("off", "on", "both")
# settings added after sweeps were first written: a sweep.json without them has them at these values
_LATER_DEFAULTS: dict[str, Any] = {
    "defences": None, "eval_epochs": [], "cosine_t_max": None, "mixup_target": "mean", "adv_eps": 1.0, "adv_steps": 5,
    "noise_sigma": 0.25,
}  # fmt: skip
_NOT_IDENTITY = ("device",)  # a sweep started on a laptop may be finished on a cluster


def parse_betas(spec: str | list | tuple) -> list[float]:
    """``logspace:-2:1:50`` (the released grid, docs/method.md section 7), ``linspace:a:b:n`` or a list
    such as ``0.5,2``."""
    if isinstance(spec, list | tuple):
        values = [float(v) for v in spec]
    else:
        text = str(spec).strip()
        if text.startswith(("logspace:", "linspace:")):
            parts = text.split(":")
            try:
                lo, hi, num = float(parts[1]), float(parts[2]), int(parts[3])
                if len(parts) != 4 or num < 1:
                    raise ValueError
            except (ValueError, IndexError):
                raise VaelensError(
                    f"malformed beta range {text!r}; write logspace:START:STOP:NUM, e.g. logspace:-2:1:50"
                ) from None
            grid = np.logspace(lo, hi, num) if parts[0] == "logspace" else np.linspace(lo, hi, num)
            values = [float(v) for v in grid]
        else:
            try:
                values = [float(t) for t in text.split(",") if t.strip()]
            except ValueError:
                raise VaelensError(f"--betas takes logspace:-2:1:50 or numbers such as 0.5,2; got {text!r}") from None
    if not values:
        raise VaelensError("the beta grid is empty; give at least one beta")
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise VaelensError(f"every beta must be >= 0; got {values}")
    return values


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the grid, the training settings shared by its runs, and the evaluation.

    Arguments:
        datasets, models, betas, seeds: the grid (models: "mlp" or "conv").
        mixup: "off", "on" or "both" (the defences none and mixup; ignored when ``defences`` is set).
        defences: the defences of the grid, from "none", "mixup", "adversarial" and "noise" (None:
            from ``mixup``).
        mixup_betas: restrict defended runs to these betas (None: every beta of the grid).
        epochs, latent_dim, batch_size, lr: training settings of every run.
        eval_epochs: also evaluate every run at these earlier epochs (one training per run).
        cosine_t_max: period of the cosine schedule in epochs (None: ``epochs``; the released run
            used 200 over 100 epochs).
        mixup_target: the mixup latent target, "mean" or "sample" (docs/method.md section 6).
        adv_eps, adv_steps: the inner PGD of adversarial training (L2 budget, steps).
        noise_sigma: the input noise of noise-augmentation training (docs/method.md section 6.6).
        n: test inputs audited and attacked per run.
        eps: L2 attack budgets.
        pgd_steps: PGD steps.
        probe_n: inputs for the eigen-direction probe.
        device: where runs train and are evaluated (not part of a unit's identity: a sweep
            started on one device can be finished on another).
    """

    datasets: tuple[str, ...] = ("mnist-5k",)
    models: tuple[str, ...] = ("mlp",)
    betas: tuple[float, ...] = (0.1, 1.0, 4.0)
    mixup: str = "off"
    mixup_betas: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    epochs: int = 10
    latent_dim: int = 16
    batch_size: int = 128
    lr: float = 1e-3
    n: int = 500
    eps: tuple[float, ...] = (0.5, 1.0, 2.0)
    pgd_steps: int = 50
    probe_n: int = 100
    device: str = "cpu"
    defences: tuple[str, ...] | None = None
    eval_epochs: tuple[int, ...] = ()
    cosine_t_max: int | None = None
    mixup_target: str = "mean"
    adv_eps: float = 1.0
    adv_steps: int = 5
    noise_sigma: float = 0.25

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "eval_epochs", tuple(sorted(set(self.eval_epochs) - {self.epochs})))
        if any(not 1 <= e < self.epochs for e in self.eval_epochs):
            raise VaelensError(f"eval_epochs must lie in 1..epochs ({self.epochs}); got {list(self.eval_epochs)}")
        if self.defences is not None:
            check_unique(self.defences, "defences")
            bad = [d for d in self.defences if d not in DEFENCES]
            if bad or not self.defences:
                raise VaelensError(f"defences must be some of {', '.join(DEFENCES)}; got {list(self.defences)}")
        for name in DEFENCES:  # the training settings are checked once, by the configs that hold them
            self.defence_config(name)
        object.__setattr__(self, "betas", tuple(parse_betas(list(self.betas))))
        if self.mixup_betas is not None:
            object.__setattr__(self, "mixup_betas", tuple(parse_betas(list(self.mixup_betas))))
        for name in ("datasets", "models", "betas", "seeds", "eps", "mixup_betas"):
            check_unique(getattr(self, name) or (), name)
        if self.mixup not in MIXUP_CHOICES:
            raise VaelensError(f"mixup must be one of {', '.join(MIXUP_CHOICES)}; got {self.mixup!r}")
        for name in ("datasets", "models", "seeds", "eps"):
            if not getattr(self, name):
                raise VaelensError(f"the sweep's {name} list is empty; give at least one")
        bad_models = [m for m in self.models if m not in ("mlp", "conv")]
        if bad_models:
            raise VaelensError(f"unknown model(s) {bad_models}; choose mlp or conv")
        if any(not (math.isfinite(e) and e > 0) for e in self.eps):
            raise VaelensError(f"every eps must be > 0; got {list(self.eps)}")
        for name in ("epochs", "latent_dim", "batch_size", "n", "pgd_steps"):
            if getattr(self, name) < 1:
                raise VaelensError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.probe_n < 0:
            raise VaelensError(f"probe_n must be >= 0; got {self.probe_n}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def identity(self) -> dict[str, Any]:
        """What the sweep computes: every setting but where it runs (the device)."""
        return self.identity_of(self.to_dict())

    @staticmethod
    def identity_of(settings: dict[str, Any]) -> dict[str, Any]:
        """The identity of settings as written in a sweep.json (compared as written, not as parsed:
        a file missing a setting is another sweep, not the default one; only the settings added
        later are dropped at their default, so older sweeps still resume)."""
        return {
            k: v
            for k, v in settings.items()
            if k not in _NOT_IDENTITY and not (k in _LATER_DEFAULTS and v == _LATER_DEFAULTS[k])
        }

    def defence_list(self) -> tuple[str, ...]:
        """The defences of the grid: ``defences``, or those ``mixup`` names."""
        if self.defences is not None:
            return self.defences
        return {"off": ("none",), "on": ("mixup",), "both": ("none", "mixup")}[self.mixup]

    def defence_config(self, name: str) -> Defence:
        """The defence ``name`` with this sweep's settings for it."""
        factories: dict[str, Callable[[], Defence]] = {
            "none": NoDefence,
            "mixup": lambda: MixupConfig(latent_target=cast(Any, self.mixup_target)),
            "adversarial": lambda: AdversarialConfig(self.adv_eps, self.adv_steps),
            "noise": lambda: NoiseConfig(self.noise_sigma),
        }
        return factories[check_defence(name, "defences")]()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise VaelensError(f"unknown sweep config keys {unknown}; the keys are {sorted(known)}")
        d = dict(d)
        if "betas" in d and isinstance(d["betas"], str):
            d["betas"] = parse_betas(d["betas"])
        for key in ("datasets", "models", "seeds", "eps", "eval_epochs", "defences"):
            if key in d and d[key] is not None and not isinstance(d[key], list | tuple):
                d[key] = [d[key]]
        try:
            return cls(**d)
        except TypeError as e:
            raise VaelensError(f"bad sweep config: {e}") from None

    @classmethod
    def resolve(
        cls, preset: str | None = None, file: str | Path | None = None, overrides: dict[str, Any] | None = None
    ) -> SweepConfig:
        """A sweep from a named preset, then a TOML file, then explicit settings, each overriding the last.

        ``overrides`` values of None are ignored, so unset command-line flags change nothing.
        """
        settings: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise VaelensError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
            settings.update(PRESETS[preset])
        if file is not None:
            settings.update(cls.read_file(file))  # only what the file sets: the preset keeps the rest
        settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(settings)

    @classmethod
    def read_file(cls, path: str | Path) -> dict[str, Any]:
        """The settings a TOML file sets (its [sweep] table, or the whole file), checked by key."""
        path = Path(path)
        if not path.is_file():
            raise VaelensError(f"sweep config {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise VaelensError(f"{path} is not valid TOML ({e})") from None
        settings = data.get("sweep", data)
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise VaelensError(f"unknown sweep config keys {unknown} in {path}")
        return settings

    @classmethod
    def from_file(cls, path: str | Path) -> SweepConfig:
        """Read a TOML file of the fields above (``betas`` may be a range string)."""
        return cls.from_dict(cls.read_file(path))

    def units(self) -> list[Unit]:
        """The grid, seed by seed: an interrupted sweep has whole replicates of the grid done."""
        return [
            Unit(dataset, model, beta, defence, seed)
            for seed in self.seeds
            for dataset in self.datasets
            for model in self.models
            for beta in self.betas
            for defence in self.defence_list()
            if not (defence != "none" and self.mixup_betas is not None and beta not in self.mixup_betas)
        ]


@dataclass(frozen=True)
class Unit:
    """One run of a sweep."""

    dataset: str
    model: str
    beta: float
    defence: str  # a name of training.DEFENCES
    seed: int

    @property
    def name(self) -> str:
        safe = self.dataset.replace("/", "_").replace(":", "-")
        suffix = DEFENCES[self.defence].run_suffix
        return f"{safe}_{self.model}_beta{self.beta:.4g}{suffix}_seed{self.seed}"


def epoch_rows(sweep: SweepConfig, root: str | Path, unit: Unit) -> list[ResultRow]:
    """The rows of a finished unit's earlier evaluation epochs (``eval_epochs``), in order."""
    runs = Path(root) / "runs"
    return [
        ResultRow.from_record(read_json(runs / f"{unit.name}@{e}" / "result.json"), sweep.eps)
        for e in sweep.eval_epochs
    ]


@dataclass
class SweepOutcome:
    """How each unit of one invocation of a sweep ended, whatever the executor."""

    done: list[str] = field(default_factory=list)  # finished by this invocation
    skipped: list[str] = field(default_factory=list)  # already finished before it
    retried: list[str] = field(default_factory=list)  # finished or failed after a worker died
    failed: dict[str, str] = field(default_factory=dict)  # unit -> one-line message

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("done", "skipped", "retried", "failed")}


def run_unit(
    sweep: SweepConfig, unit: Unit, root: str | Path, progress: Ticker | None = None, device: str | None = None
) -> ResultRow:
    """Train, audit and attack one unit inside ``root/runs/NAME``; return its result row.

    ``progress`` is an optional ``Ticker`` whose text shows the current stage; it never affects
    results. ``device`` overrides the sweep's (an executor puts a unit on the GPU it was given);
    where a unit runs is not part of what it computes, so a unit resumes on any device.
    """
    run_dir = Path(root) / "runs" / unit.name
    done = run_dir / "result.json"
    if done.exists():
        return ResultRow.from_record(read_json(done), sweep.eps)
    if device is not None:
        sweep = dataclasses.replace(sweep, device=device)
    with unit_lock(run_dir):
        return _run_unit_locked(sweep, unit, run_dir, done, progress)


def unit_config(sweep: SweepConfig, unit: Unit, shape: tuple[int, ...] | None = None) -> TrainConfig:
    """The training config of one unit (``shape``: its data set's image shape, if known)."""
    model_config = ModelConfig(unit.model, shape or input_shape_of(unit.dataset), sweep.latent_dim)
    return TrainConfig(
        dataset=unit.dataset, model=model_config, beta=unit.beta, epochs=sweep.epochs, batch_size=sweep.batch_size,
        lr=sweep.lr, seed=unit.seed, device=sweep.device, cosine_t_max=sweep.cosine_t_max,
        defence=sweep.defence_config(unit.defence),
        save_epochs=sweep.eval_epochs,
    )  # fmt: skip


def check_units(sweep: SweepConfig, units: list[Unit]) -> None:
    """Build every unit's training config (each data set read once), so that a setting no unit can
    run with (an unknown device, a missing folder: data set) is refused before the sweep starts."""
    shapes: dict[str, tuple[int, ...]] = {}
    for unit in units:
        if unit.dataset not in shapes:
            shapes[unit.dataset] = tuple(input_shape_of(unit.dataset))
        unit_config(sweep, unit, shapes[unit.dataset])


def is_finished(root: Path, unit: Unit) -> bool:
    """True when the unit's result row is written (its last act)."""
    return (root / "runs" / unit.name / "result.json").exists()


@contextlib.contextmanager
def unit_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on a unit's directory for as long as one process works in it.

    The lock is the operating system's (flock), so it is released when its holder dies, even by
    kill -9; a second writer is refused at once instead of racing the first.
    """
    locks = run_dir.parent.parent / ".locks"  # SWEEP/.locks/NAME.lock: runs/ holds only run directories
    locks.mkdir(parents=True, exist_ok=True)
    busy = f"{run_dir} is being written by another vaelens process; wait for it to finish or stop it"
    with exclusive_lock(locks / f"{run_dir.name}.lock", busy):
        yield


def _run_unit_locked(sweep: SweepConfig, unit: Unit, run_dir: Path, done: Path, progress: Ticker | None) -> ResultRow:
    if done.exists():  # finished by another process while we waited for nothing: the lock is not blocking
        return ResultRow.from_record(read_json(done), sweep.eps)

    def stage(text: str) -> None:
        if progress is not None:
            progress.tick(f"{unit.name}: {text}", steps=0)
            progress.flush()

    stage("training")
    config = unit_config(sweep, unit)
    result = train(config, run_dir, progress=False)
    x, labels = take(load_dataset(unit.dataset, "test"), sweep.n)
    for epoch in sweep.eval_epochs:  # the earlier epochs first: the unit's own result.json is written last
        at = run_dir.parent / f"{unit.name}@{epoch}"
        if not (at / "result.json").exists():
            stage(f"epoch {epoch}")
            model = load(run_dir, sweep.device, epoch)
            kl = next(float(m["kl"]) for m in result.metrics if m["epoch"] == epoch)
            row = _evaluate(sweep, unit, config, at, model, x, labels, epoch, kl, stage)
            write_json(at / "result.json", row.record())
    final = read_json(run_dir / "state.json")["final"]
    row = _evaluate(sweep, unit, config, run_dir, result.model, x, labels, sweep.epochs, final["kl"], stage)
    write_json(done, row.record())
    return row


class _RunKeeper(Keeper):
    """Writes each stage of an evaluation into a run directory, and skips a stage already written."""

    def __init__(self, model: torch.nn.Module, run_dir: Path, labels: torch.Tensor, eps: list[float]) -> None:
        self.model, self.run_dir, self.labels, self.eps = model, run_dir, labels, eps
        self.meta = {"run": run_dir.name}

    def has_audit(self, config: AuditConfig) -> bool:
        return is_complete(self.run_dir / "audit", "audit", audit_output(config, self.meta))

    def keep_audit(self, result: AuditResult) -> None:
        write_audit(result, self.run_dir / "audit", self.meta)

    def has_attack(self, spec: AttackSpec) -> bool:
        return is_complete(self.run_dir / spec.dirname, "attack", attack_output(spec, self.eps, self.meta))

    def keep_attack(self, spec: AttackSpec, result: AttackSweepResult) -> None:
        write_attack_report(result, self.model, self.run_dir / spec.dirname, self.labels, self.meta)


def _evaluate(
    sweep: SweepConfig, unit: Unit, config: TrainConfig, run_dir: Path, model: torch.nn.Module, x: torch.Tensor,
    labels: torch.Tensor, epoch: int, train_kl: float, stage: Callable[[str], None],
) -> ResultRow:  # fmt: skip
    """Audit and attack one model of a unit into ``run_dir``; its result row (not yet written)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    protocol = Protocol(tuple(sweep.eps), sweep.pgd_steps, unit.seed, probe_n=sweep.probe_n)
    keeper = _RunKeeper(model, run_dir, labels, list(sweep.eps))
    done = evaluate_model(model, x, protocol, config.model.likelihood, labels, keeper, stage)
    return _collect(sweep, unit, run_dir, done.quality, epoch, train_kl)


def _collect(sweep: SweepConfig, unit: Unit, run_dir: Path, quality: Quality, epoch: int, train_kl: float) -> ResultRow:
    """Per-sample arrays (samples.csv) and the run's result row, from the files its stages wrote."""
    scores = read_csv(run_dir / "audit" / "scores.csv")
    by_kind: dict[str, dict[str, np.ndarray]] = {}
    for kind in EVALUATED_KINDS:
        rows = [r for r in scores if r["kind"] == kind]
        by_kind[kind] = {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k not in ("kind", "label")}
    n = len(by_kind["stochastic"]["index"])
    samples: dict[str, np.ndarray] = {"index": np.arange(n)}
    for col, (of_kind, score) in SCORE_COLUMNS.items():
        samples[col] = by_kind[of_kind][score]
    damage: dict[tuple[str, str, float], float] = {}
    for method in ATTACK_METHODS:
        rows = read_csv(run_dir / AttackSpec(method=method).dirname / "damage.csv")
        for e in sweep.eps:
            sel = [r for r in rows if math.isclose(float(r["eps"]), e)]
            for measure in DAMAGE_MEASURES:
                values = np.array([float(r[measure]) for r in sel])
                samples[damage_column(method, measure, e)] = values
                damage[(method, measure, e)] = float(values.mean())
    for e in sweep.eps:  # the headline: per input, the most damaging of the ensemble (Strongest)
        kls: dict[str, np.ndarray] = {m: samples[damage_column(m, "kl", e)] for m in ENSEMBLE}
        for measure in DAMAGE_MEASURES:  # every measure of the member that won on KL
            values = strongest_of(kls, {m: samples[damage_column(m, measure, e)] for m in ENSEMBLE})[1]
            samples[damage_column(HEADLINE, measure, e)] = values
            damage[(HEADLINE, measure, e)] = float(values.mean())
    write_csv(run_dir / "samples.csv", [{k: float(v[i]) for k, v in samples.items()} for i in range(n)], list(samples))
    rho = samples["rho_stochastic"]
    return ResultRow(
        run=run_dir.name, dataset=unit.dataset, model=unit.model, beta=unit.beta, seed=unit.seed,
        epochs=epoch, test_recon=quality.nll, test_mse=quality.mse, test_elbo=quality.elbo,
        train_kl=train_kl, active_units=quality.active_units, defence=unit.defence,
        rho_mean=float(rho.mean()), rho_median=float(np.median(rho)), rho_std=float(rho.std()),
        rho_q25=float(np.quantile(rho, 0.25)), rho_q75=float(np.quantile(rho, 0.75)),
        entropy_mean=float(samples["entropy_stochastic"].mean()),
        entropy_median=float(np.median(samples["entropy_stochastic"])),
        rho_fisher_median=float(np.median(samples["rho_fisher"])),
        rho_output_median=float(np.median(samples["rho_output"])),
        damage=damage,
    )  # fmt: skip
