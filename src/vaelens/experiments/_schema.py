"""The sweep's result schema: one typed record per run, and the one function that names columns.

``results.csv`` holds one ``ResultRow`` per finished run; a run's ``samples.csv`` holds its
per-input scores and damage. Damage columns are named by ``damage_column`` and by nothing else:
the collector writes through it and the report reads through it, so no column name is ever
formatted in one place and parsed in another.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vaelens._errors import VaelensError
from vaelens._protocol import Kind
from vaelens.evaluation import AttackSpec, Method

ATTACK_METHODS: tuple[Method, ...] = ("eigen", "pgd", "apgd", "random")  # what a sweep runs per unit
# the metric kinds audited per model, by a sweep and by compare
EVALUATED_KINDS: tuple[Kind, ...] = ("stochastic", "fisher", "output")
# the per-input best of these, on the KL objective, is the sweep's headline damage, "strongest"
ENSEMBLE: tuple[Method, ...] = ("eigen", "pgd", "apgd")
HEADLINE: Method = "strongest"
REPORTED_METHODS: tuple[Method, ...] = (*ATTACK_METHODS, HEADLINE)
# the KL damage, its mean-shift and variance parts (they sum to it), and the reconstruction shift
DAMAGE_MEASURES = ("kl", "recon_shift", "kl_mean", "kl_var")
_SPLIT = ("kl_mean", "kl_var")  # absent from rows written before the split: read as NaN


def attack_specs(pgd_steps: int, seed: int, methods: tuple[Method, ...] = ATTACK_METHODS) -> dict[Method, AttackSpec]:
    """The attacks of the evaluation protocol, shared by a sweep and compare: APGD gets twice PGD's
    steps (its usual budget); EigenAttack takes neither steps nor seed."""
    return {m: AttackSpec(method=m, steps=2 * pgd_steps if m == "apgd" else pgd_steps, seed=seed) for m in methods}


# samples.csv: column -> (metric kind, score) of the audit
SCORE_COLUMNS = {
    "rho_stochastic": ("stochastic", "spectral_radius"),
    "entropy_stochastic": ("stochastic", "von_neumann_entropy"),
    "entropy_max_stochastic": ("stochastic", "von_neumann_entropy_max"),
    "trace_stochastic": ("stochastic", "trace"),
    "rho_fisher": ("fisher", "spectral_radius"),
    "rho_output": ("output", "spectral_radius"),
}


def damage_column(method: str, measure: str, eps: float) -> str:
    """The column of one attack's damage at one budget, e.g. ``pgd_kl@1``: the only place it is built."""
    return f"{method}_{measure}@{eps:g}"


def strongest_of(kl: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per input, the ensemble member with the largest KL damage: (its KL, its value of ``other``).

    Arguments:
        kl: {member: (N,) KL damage}; ties go to the member listed first.
        other: {member: (N,) another measure of the same adversarials}, e.g. the reconstruction shift.
    """
    names = list(kl)
    stacked = np.stack([kl[m] for m in names])  # (M, N)
    winner = stacked.argmax(0)  # (N,)
    cols = np.arange(stacked.shape[1])
    return stacked[winner, cols], np.stack([other[m] for m in names])[winner, cols]


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts, with a one-line error naming a missing file."""
    if not path.is_file():
        raise VaelensError(f"{path} does not exist; run the sweep again to rebuild it")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_samples(path: Path) -> dict[str, np.ndarray]:
    """A run's samples.csv as {column: (N,) array}."""
    rows = read_csv(path)
    if not rows:
        raise VaelensError(f"{path} holds no inputs; delete the run's result.json and run the sweep again")
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


@dataclass(frozen=True)
class ResultRow:
    """One finished run of a sweep: its grid point, reconstruction, robustness and attack damage.

    ``damage`` maps (method, measure, eps) to the mean over the run's inputs.
    """

    run: str
    dataset: str
    model: str
    beta: float
    seed: int
    epochs: int
    test_recon: float
    test_mse: float
    test_elbo: float
    train_kl: float
    active_units: int
    rho_mean: float
    rho_median: float
    rho_std: float
    rho_q25: float
    rho_q75: float
    entropy_mean: float
    entropy_median: float
    rho_fisher_median: float
    rho_output_median: float
    defence: str = "none"  # a name of training.DEFENCES
    damage: dict[tuple[str, str, float], float] = field(default_factory=dict)

    SCALARS: ClassVar[tuple[str, ...]]

    @property
    def mixup(self) -> bool:
        """Trained with mixup (results.csv keeps this column for the readers of older files)."""
        return self.defence == "mixup"

    def damage_at(self, method: str, measure: str, eps: float) -> float:
        try:
            return self.damage[(method, measure, float(eps))]
        except KeyError:
            raise VaelensError(
                f"run {self.run} has no {damage_column(method, measure, eps)} column; was it swept at eps {eps:g}?"
            ) from None

    @staticmethod
    def columns(eps: list[float] | tuple[float, ...]) -> list[str]:
        """The columns of results.csv for a sweep over these budgets, in order."""
        return [*ResultRow.SCALARS, *(damage_column(*key) for key in _damage_keys(eps))]

    def record(self) -> dict[str, Any]:
        """The flat row of results.csv (and result.json)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self.SCALARS}
        eps = sorted({e for _, _, e in self.damage})
        for column, key in zip(self.columns(eps)[len(self.SCALARS) :], _damage_keys(eps), strict=True):
            if key in self.damage:
                out[column] = self.damage[key]
        return out

    @classmethod
    def from_record(cls, record: dict[str, Any], eps: list[float] | tuple[float, ...]) -> ResultRow:
        """Parse a row of results.csv (strings) or result.json (typed values)."""
        kinds = {f.name: f.type for f in dataclasses.fields(cls) if f.name in cls.SCALARS}
        values: dict[str, Any] = {}
        try:
            for name in cls.SCALARS:
                if name == "mixup":  # derived from the defence
                    continue
                if name == "defence" and name not in record:  # a row written before adversarial training
                    record = {**record, name: "mixup" if str(record["mixup"]) == "True" else "none"}
                raw = record[name]
                kind = kinds[name]
                if kind == "bool":
                    values[name] = raw if isinstance(raw, bool) else str(raw) == "True"
                elif kind == "int":
                    values[name] = int(float(raw))
                elif kind == "float":
                    values[name] = float(raw)
                else:
                    values[name] = str(raw)
            damage = {
                key: float(
                    record[damage_column(*key)] if key[1] not in _SPLIT else record.get(damage_column(*key), "nan")
                )
                for key in _damage_keys(eps)
            }
        except (KeyError, ValueError) as e:
            raise VaelensError(f"a result row lacks or garbles {e}; run the sweep again to rebuild it") from None
        return cls(**values, damage=damage)


def _damage_keys(eps: list[float] | tuple[float, ...]) -> list[tuple[str, str, float]]:
    """(method, measure, eps) in column order: by method, then budget, then measure."""
    return [(m, q, float(e)) for m in REPORTED_METHODS for e in eps for q in DAMAGE_MEASURES]


# results.csv's scalar columns, in order; "mixup" is derived from the defence and kept where it always stood
ResultRow.SCALARS = tuple(f.name for f in dataclasses.fields(ResultRow) if f.name != "damage")
ResultRow.SCALARS = (*ResultRow.SCALARS[:4], "mixup", *ResultRow.SCALARS[4:])
