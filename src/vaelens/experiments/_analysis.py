"""The analysis behind reports and comparisons, as pure functions over result rows.

Nothing here reads a file or draws: every function takes numbers and returns numbers or the
sentences a report prints, so that unit tests can check on synthetic rows that each sentence is
true. Seeds are aggregated explicitly: a point of a beta trend is the median over seeds, with the
spread across seeds beside it, and correlations are computed over those points, never over a mix
of seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from vaelens.experiments._schema import ResultRow

TREND_COLUMNS = (
    "dataset", "model", "beta", "mixup", "n_seeds", "rho_median", "rho_median_min", "rho_median_max",
    "entropy_median", "test_mse",
)  # fmt: skip


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation, or NaN with fewer than 3 points or a constant side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


@dataclass(frozen=True)
class TrendPoint:
    """One (dataset, model, beta, mixup) cell of a sweep, aggregated over its seeds.

    Every value is the median over seeds of the per-run value (numpy's median); ``rho_median_min``
    and ``rho_median_max`` give the spread of the per-run median rho(G) across seeds.
    """

    dataset: str
    model: str
    beta: float
    mixup: bool
    n_seeds: int
    rho_median: float
    rho_median_min: float
    rho_median_max: float
    entropy_median: float
    test_mse: float
    runs: tuple[ResultRow, ...]

    def record(self) -> dict[str, object]:
        """The row of trend.csv."""
        return {c: getattr(self, c) for c in TREND_COLUMNS}


def aggregate(rows: Iterable[ResultRow]) -> list[TrendPoint]:
    """Group runs by (dataset, model, beta, mixup) and take medians over seeds; sorted by beta."""
    groups: dict[tuple[str, str, float, bool], list[ResultRow]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.model, r.beta, r.mixup), []).append(r)
    points = []
    for (dataset, model, beta, mixup), runs in groups.items():
        rho = np.array([r.rho_median for r in runs])
        points.append(
            TrendPoint(
                dataset, model, beta, mixup, len(runs), float(np.median(rho)), float(rho.min()), float(rho.max()),
                float(np.median([r.entropy_median for r in runs])), float(np.median([r.test_mse for r in runs])),
                tuple(sorted(runs, key=lambda r: r.seed)),
            )
        )  # fmt: skip
    return sorted(points, key=lambda p: (p.dataset, p.model, p.mixup, p.beta))


def beta_curves(points: Iterable[TrendPoint]) -> dict[tuple[str, str], list[TrendPoint]]:
    """The points without mixup, per (dataset, model), sorted by beta: the reference curves."""
    out: dict[tuple[str, str], list[TrendPoint]] = {}
    for p in points:
        if not p.mixup:
            out.setdefault((p.dataset, p.model), []).append(p)
    return {k: sorted(v, key=lambda p: p.beta) for k, v in out.items()}


def probe_picks(curves: dict[tuple[str, str], list[TrendPoint]]) -> dict[tuple[str, str], list[TrendPoint]]:
    """The low, middle and high beta of each (dataset, model) curve: picks never mix groups."""
    out = {}
    for key, curve in curves.items():
        picks = [curve[0], curve[len(curve) // 2], curve[-1]] if len(curve) > 2 else list(curve)
        out[key] = list({p.beta: p for p in picks}.values())
    return out


def seeds_phrase(points: Sequence[TrendPoint]) -> str:
    """'1 seed each', '3 seeds each' or '1-3 seeds each'."""
    counts = sorted({p.n_seeds for p in points})
    text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{text} seed{'s' if counts[-1] > 1 else ''} each"


def trend_sentences(label: str, curve: Sequence[TrendPoint]) -> list[str]:
    """What the beta trend of one (dataset, model) curve shows, computed on the seed aggregates."""
    betas = [p.beta for p in curve]
    rho_corr = spearman(betas, [p.rho_median for p in curve])
    s_corr = spearman(betas, [p.entropy_median for p in curve])
    out = [
        f"{label}: Spearman correlation with beta over {len(curve)} betas ({seeds_phrase(curve)}, medians over "
        f"seeds): median rho(G) {rho_corr:+.2f}, median S {s_corr:+.2f}."
    ]
    if not math.isnan(rho_corr):
        trend = "rises" if rho_corr < -0.5 else ("falls" if rho_corr > 0.5 else "shows no clear trend")
        out.append(f"On {label}, local robustness {trend} as beta grows (rho(G) is a fragility).")
    return out


@dataclass(frozen=True)
class CurvePosition:
    """Where a point lies against a reference curve at the same reconstruction error.

    ``expected`` is the curve's value there (interpolated linearly in the error and
    logarithmically in the value); ``ratio`` is actual / expected (below 1: more robust than the
    curve); ``extrapolated`` is True when the error lies outside the curve's range, where the
    curve's end value is used.
    """

    actual: float
    expected: float
    ratio: float
    extrapolated: bool

    @property
    def below(self) -> bool:
        return self.actual < self.expected


def against_curve(curve_x: Sequence[float], curve_y: Sequence[float], x: float, y: float) -> CurvePosition:
    """The position of (x, y) against the curve through (curve_x, curve_y); y values must be > 0."""
    xs = np.asarray(curve_x, dtype=float)
    ys = np.log(np.maximum(np.asarray(curve_y, dtype=float), 1e-300))
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    expected = float(np.exp(np.interp(x, xs, ys)))
    return CurvePosition(y, expected, y / expected if expected > 0 else float("inf"), not (xs[0] <= x <= xs[-1]))


def position_phrase(pos: CurvePosition) -> str:
    side = "below (more robust than)" if pos.below else "above (less robust than)"
    where = " (extrapolated: its reconstruction error is outside the beta runs' range)" if pos.extrapolated else ""
    return f"{side} the beta curve ({pos.expected:.4g} there, ratio {pos.ratio:.3g}){where}"


def mixup_sentences(points: Sequence[TrendPoint]) -> list[str]:
    """Each mixup point against its (dataset, model) beta curve, on median rho(G), seed by seed."""
    curves = beta_curves(points)
    out = []
    for m in (p for p in points if p.mixup):
        curve = curves.get((m.dataset, m.model), [])
        if len(curve) < 2:
            out.append(
                f"{m.dataset}/{m.model} beta {m.beta:g} with mixup: at least two betas without mixup are needed "
                "to draw a beta curve; not judged."
            )
            continue
        xs, ys = [p.test_mse for p in curve], [p.rho_median for p in curve]
        pos = against_curve(xs, ys, m.test_mse, m.rho_median)
        per_seed = [against_curve(xs, ys, r.test_mse, r.rho_median).below for r in m.runs]
        agree = (
            f"all {len(per_seed)} seeds agree"
            if len(set(per_seed)) == 1
            else f"{sum(per_seed)} of {len(per_seed)} seeds lie below"
        )
        out.append(
            f"{m.dataset}/{m.model} beta {m.beta:g} with mixup: median rho(G) {m.rho_median:.4g} at reconstruction "
            f"MSE {m.test_mse:.4g} lies {position_phrase(pos)}; {agree}."
        )
    return out


@dataclass(frozen=True)
class Validity:
    """How well each score predicts attack damage.

    ``within``: per run and score, the Spearman correlation over inputs (runs x scores);
    ``across``: per score, the Spearman correlation over runs of the run medians.
    """

    scores: tuple[str, ...]
    runs: tuple[str, ...]
    within: np.ndarray
    across: dict[str, float]
    attack: str = "the strongest attack"  # what "damage" means in the sentence

    def mean_within(self) -> dict[str, float]:
        return {
            s: float(np.nanmean(self.within[:, j])) if not np.isnan(self.within[:, j]).all() else float("nan")
            for j, s in enumerate(self.scores)
        }

    def sentence(self) -> str:
        within = self.mean_within()

        def best(d: dict[str, float]) -> str:
            return max(self.scores, key=lambda n: -math.inf if math.isnan(d[n]) else d[n])

        bw, ba = best(within), best(self.across)
        return (
            f"Within a model, {bw} predicts which inputs {self.attack} damages most (mean Spearman {within[bw]:.2f}); "
            f"across models, {ba} best tracks the median damage (Spearman {self.across[ba]:.2f} over "
            f"{len(self.runs)} runs)."
        )


def score_validity(
    samples: dict[str, dict[str, np.ndarray]], scores: dict[str, str], target: str, attack: str = "the strongest attack"
) -> Validity:
    """Validity of scores against a damage column, from per-run samples.

    Arguments:
        samples: {run: {column: (N,) values}}.
        scores: {display name: samples column}.
        target: the damage column, e.g. ``damage_column("pgd", "kl", 2.0)``.
    """
    names, runs = tuple(scores), tuple(samples)
    within = np.full((len(runs), len(names)), np.nan)
    medians: dict[str, list[float]] = {n: [] for n in names}
    damages = []
    for i, run in enumerate(runs):
        s = samples[run]
        for j, n in enumerate(names):
            within[i, j] = spearman(s[scores[n]], s[target])
            medians[n].append(float(np.median(s[scores[n]])))
        damages.append(float(np.median(s[target])))
    across = {n: spearman(medians[n], damages) for n in names}
    return Validity(names, runs, within, across, attack)
