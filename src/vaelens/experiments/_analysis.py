"""The analysis behind reports and comparisons, as pure functions over result rows.

Nothing here reads a file or draws: every function takes numbers and returns numbers or typed
``Finding``s (a kind, the numbers behind it, the sentence a report prints), so that unit tests can
check on synthetic rows that each sentence is true, and a report lays findings out by their kind
without ever reading its own sentences back. Seeds are aggregated explicitly: a point of a beta
trend is the median over seeds, with the spread across seeds beside it, and correlations are
computed over those points, never over a mix of seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np

from vaelens.experiments._schema import ResultRow

TREND_COLUMNS = (
    "dataset", "model", "beta", "mixup", "n_seeds", "rho_median", "rho_median_min", "rho_median_max",
    "entropy_median", "test_mse", "defence", "epochs",
)  # fmt: skip


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation, or NaN with fewer than 3 points or a constant side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    from scipy.stats import spearmanr  # scipy only where an analysis runs

    return float(spearmanr(a, b).statistic)


@dataclass(frozen=True)
class TrendPoint:
    """One (dataset, model, beta, defence, epochs) cell of a sweep, aggregated over its seeds.

    Every value is the median over seeds of the per-run value (numpy's median); ``rho_median_min``
    and ``rho_median_max`` give the spread of the per-run median rho(G) across seeds.
    """

    dataset: str
    model: str
    beta: float
    n_seeds: int
    rho_median: float
    rho_median_min: float
    rho_median_max: float
    entropy_median: float
    test_mse: float
    runs: tuple[ResultRow, ...]
    defence: str = "none"  # a name of training.DEFENCES
    epochs: int = 0

    @property
    def mixup(self) -> bool:
        """Trained with mixup (trend.csv keeps this column for the readers of older files)."""
        return self.defence == "mixup"

    def record(self) -> dict[str, object]:
        """The row of trend.csv."""
        return {c: getattr(self, c) for c in TREND_COLUMNS}


FindingKind = Literal[
    "beta-trend",  # the Spearman correlations of one beta curve
    "trend-direction",  # whether robustness rises or falls with beta on that curve
    "mixup",  # a mixup configuration against its beta curve
    "unjudged",  # a configuration with no beta curve to judge it against
    "frontier",  # a defence against the beta curve, at one training length, on one measure
    "frontier-by-length",  # the same across training lengths
    "kl-split",  # the KL damage split into its mean-shift and variance parts
    "tracking",  # which score tracks each damage across configurations
    "validity",  # how well each score predicts the damage, within and across runs
]


@dataclass(frozen=True)
class Finding:
    """One thing the analysis found, as a report lays it out.

    Arguments:
        kind: what sort of finding it is (``FindingKind``); a report chooses where to show it by this.
        text: the sentence that says it, computed from ``numbers``.
        numbers: the values the sentence states, by name (ratios, correlations, counts).
        subject: what it is about, e.g. ``"mnist-5k/mlp"`` or ``"mixup (beta 1)"``.
    """

    kind: FindingKind
    text: str
    numbers: dict[str, float] = field(default_factory=dict)
    subject: str = ""


class Spread(NamedTuple):
    """A value over the seeds of a configuration: the median and the range."""

    median: float
    low: float
    high: float


def over_seeds(point: TrendPoint, of: Callable[[ResultRow], float]) -> Spread:
    """``of`` over the runs (seeds) of one configuration: its median, min and max."""
    values = [of(r) for r in point.runs]
    return Spread(float(np.median(values)), min(values), max(values))


def aggregate(rows: Iterable[ResultRow]) -> list[TrendPoint]:
    """Group runs by (dataset, model, beta, defence, epochs) and take medians over seeds; sorted by beta."""
    groups: dict[tuple[str, str, float, str, int], list[ResultRow]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.model, r.beta, r.defence, r.epochs), []).append(r)
    points = []
    for (dataset, model, beta, defence, epochs), runs in groups.items():
        rho = np.array([r.rho_median for r in runs])
        points.append(
            TrendPoint(
                dataset, model, beta, len(runs), float(np.median(rho)), float(rho.min()),
                float(rho.max()), float(np.median([r.entropy_median for r in runs])),
                float(np.median([r.test_mse for r in runs])), tuple(sorted(runs, key=lambda r: r.seed)), defence,
                epochs,
            )
        )  # fmt: skip
    return sorted(points, key=lambda p: (p.dataset, p.model, p.epochs, p.defence != "none", p.defence, p.beta))


def beta_curves(points: Iterable[TrendPoint]) -> dict[tuple[str, str], list[TrendPoint]]:
    """The points without a defence, per (dataset, model), sorted by beta: the reference curves.

    The points must share one training length (the report passes those of the last epoch).
    """
    out: dict[tuple[str, str], list[TrendPoint]] = {}
    for p in points:
        if p.defence == "none":
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


def trend_findings(label: str, curve: Sequence[TrendPoint]) -> list[Finding]:
    """What the beta trend of one (dataset, model) curve shows, computed on the seed aggregates."""
    betas = [p.beta for p in curve]
    rho_corr = spearman(betas, [p.rho_median for p in curve])
    s_corr = spearman(betas, [p.entropy_median for p in curve])
    numbers = {"rho_spearman": rho_corr, "entropy_spearman": s_corr, "betas": float(len(curve))}
    text = (
        f"{label}: Spearman correlation with beta over {len(curve)} betas ({seeds_phrase(curve)}, medians over "
        f"seeds): median rho(G) {rho_corr:+.2f}, median S {s_corr:+.2f}."
    )
    out = [Finding("beta-trend", text, numbers, label)]
    if not math.isnan(rho_corr):
        trend = "rises" if rho_corr < -0.5 else ("falls" if rho_corr > 0.5 else "shows no clear trend")
        text = f"On {label}, local robustness {trend} as beta grows (rho(G) is a fragility)."
        out.append(Finding("trend-direction", text, {"rho_spearman": rho_corr}, label))
    return out


def trend_sentences(label: str, curve: Sequence[TrendPoint]) -> list[str]:
    """The texts of ``trend_findings``."""
    return [f.text for f in trend_findings(label, curve)]


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
    """The position of (x, y) against the curve through (curve_x, curve_y), interpolated linearly in
    (log x, log y) (docs/method.md section 6.5); x and y values must be > 0.

    The one judgement of a run against a beta curve: compare's verdict, the mixup sentences and the
    frontier all call it, so a run gets one ratio everywhere.
    """
    xs = np.log(np.maximum(np.asarray(curve_x, dtype=float), 1e-300))
    ys = np.log(np.maximum(np.asarray(curve_y, dtype=float), 1e-300))
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    at = math.log(max(x, 1e-300))
    expected = float(np.exp(np.interp(at, xs, ys)))
    return CurvePosition(y, expected, y / expected if expected > 0 else float("inf"), not (xs[0] <= at <= xs[-1]))


def position_phrase(pos: CurvePosition) -> str:
    """Where a point lies against the beta curve, in words. Outside the curve's range there is no
    beta run to compare with (the curve's end value is only held flat), so no side is named: a
    collapsed, blurry model would otherwise always look "below" the curve."""
    if pos.extrapolated:
        return (
            f"outside the beta runs' range of reconstruction error, so it is not judged against the beta curve "
            f"(the curve's end value {pos.expected:.4g}, held flat, would give ratio {pos.ratio:.3g})"
        )
    side = "below (more robust than)" if pos.below else "above (less robust than)"
    return f"{side} the beta curve ({pos.expected:.4g} there, ratio {pos.ratio:.3g})"


def mixup_findings(points: Sequence[TrendPoint]) -> list[Finding]:
    """Each mixup point against its (dataset, model) beta curve, on median rho(G), seed by seed."""
    curves = beta_curves(points)
    out = []
    for m in (p for p in points if p.mixup):
        subject = f"{m.dataset}/{m.model} beta {m.beta:g} with mixup"
        curve = curves.get((m.dataset, m.model), [])
        if len(curve) < 2:
            text = f"{subject}: at least two betas without mixup are needed to draw a beta curve; not judged."
            out.append(Finding("unjudged", text, {"betas": float(len(curve))}, subject))
            continue
        xs, ys = [p.test_mse for p in curve], [p.rho_median for p in curve]
        pos = against_curve(xs, ys, m.test_mse, m.rho_median)
        per_seed = [against_curve(xs, ys, r.test_mse, r.rho_median).below for r in m.runs]
        agree = (
            ""
            if pos.extrapolated
            else f"; all {len(per_seed)} seeds agree"
            if len(set(per_seed)) == 1
            else f"; {sum(per_seed)} of {len(per_seed)} seeds lie below"
        )
        text = (
            f"After {m.epochs} epochs, {subject}: median rho(G) {m.rho_median:.4g} at reconstruction "
            f"MSE {m.test_mse:.4g} lies {position_phrase(pos)}{agree}."
        )
        numbers = {
            "rho_median": m.rho_median,
            "test_mse": m.test_mse,
            "expected": pos.expected,
            "ratio": pos.ratio,
            "seeds_below": float(sum(per_seed)),
            "seeds": float(len(per_seed)),
            "epochs": float(m.epochs),
        }
        out.append(Finding("mixup", text, numbers, subject))
    return out


def mixup_sentences(points: Sequence[TrendPoint]) -> list[str]:
    """The texts of ``mixup_findings``."""
    return [f.text for f in mixup_findings(points)]


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

    def finding(self) -> Finding:
        within = self.mean_within()
        numbers = {
            **{f"within {n}": within[n] for n in self.scores},
            **{f"across {n}": self.across[n] for n in self.scores},
        }
        return Finding("validity", self.sentence(), numbers, self.attack)

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


# -- the robustness-reconstruction frontier (docs/method.md section 6.5) ------------------------------


@dataclass(frozen=True)
class Measure:
    """A y of the frontier plane: its name, what it reads from a run, and whether lower is more robust."""

    name: str
    of: Callable[[ResultRow], float]


@dataclass(frozen=True)
class FrontierVerdict:
    """One defended configuration against the beta curve of its training length, on one measure.

    ``ratios`` holds, per seed, the run's value over the beta curve's at the run's reconstruction
    error (below 1: beyond the frontier, more robust than beta buys at that error); the curve is
    the seed medians of the undefended runs, interpolated in log-log. ``extrapolated`` counts seeds
    whose error lies outside the curve's range, where the curve's end value stands in.
    """

    dataset: str
    model: str
    defence: str
    beta: float
    epochs: int
    measure: str
    ratios: tuple[float, ...]
    extrapolated: int

    @property
    def ratio(self) -> float:
        """The median over seeds."""
        return float(np.median(self.ratios))

    @property
    def beyond(self) -> bool:
        """Beyond the frontier: every seed below the curve."""
        return all(r < 1 for r in self.ratios)

    @property
    def behind(self) -> bool:
        """Behind it: every seed above the curve."""
        return all(r > 1 for r in self.ratios)

    @property
    def label(self) -> str:
        return f"{self.defence} (beta {self.beta:g})"

    def verdict(self) -> str:
        """beyond, behind, on (seeds disagree), or not judged when a seed's reconstruction error lies
        outside the curve's range (no beta run to compare with there; as on the leaderboard)."""
        if self.extrapolated:
            return "not judged (outside the beta runs' range)"
        return "beyond" if self.beyond else ("behind" if self.behind else "on (seeds disagree)")

    def finding(self) -> Finding:
        numbers = {
            "ratio": self.ratio,
            "low": min(self.ratios),
            "high": max(self.ratios),
            "seeds": float(len(self.ratios)),
            "extrapolated": float(self.extrapolated),
            "epochs": float(self.epochs),
        }
        return Finding("frontier", self.sentence(), numbers, self.label)

    def sentence(self) -> str:
        n = len(self.ratios)
        spread = f"seeds {min(self.ratios):.3g}-{max(self.ratios):.3g}" if n > 1 else "1 seed"
        where = {
            "beyond": f"beyond the beta frontier (all {n} seeds below it)",
            "behind": f"behind the beta frontier (all {n} seeds above it)",
        }.get(self.verdict(), f"not beyond the beta frontier ({sum(r < 1 for r in self.ratios)} of {n} seeds below)")
        if self.extrapolated:
            where = (
                f"not judged: {self.extrapolated} of {n} seeds lie outside the beta runs' range of reconstruction "
                "error, where the curve is only its end value held flat"
            )
        return (
            f"After {self.epochs} epochs, {self.label} on {self.measure}: {self.ratio:.3g}x the beta curve at equal "
            f"reconstruction error ({spread}), {where}."
        )


def frontier(rows: Iterable[ResultRow], measure: Measure) -> list[FrontierVerdict]:
    """Every defended configuration against the beta curve of its (dataset, model, training length).

    Arguments:
        rows: runs of one or several sweeps; those with defence "none" make the curves.
        measure: the y of the plane (x is the test reconstruction MSE).

    Returns:
        One verdict per (dataset, model, defence, beta, epochs) with a curve of at least two betas.
    """
    points = aggregate(rows)
    curves = {
        (*key, epochs): curve
        for epochs in sorted({p.epochs for p in points})
        for key, curve in beta_curves([p for p in points if p.epochs == epochs]).items()
    }
    out = []
    for p in points:
        curve = curves.get((p.dataset, p.model, p.epochs), [])
        if p.defence == "none" or len(curve) < 2:
            continue
        xs = [c.test_mse for c in curve]
        ys = [float(np.median([measure.of(r) for r in c.runs])) for c in curve]
        positions = [against_curve(xs, ys, r.test_mse, measure.of(r)) for r in p.runs]
        out.append(
            FrontierVerdict(
                p.dataset, p.model, p.defence, p.beta, p.epochs, measure.name,
                tuple(pos.ratio for pos in positions), sum(pos.extrapolated for pos in positions),
            )
        )  # fmt: skip
    return out


def length_finding(verdicts: Sequence[FrontierVerdict]) -> Finding:
    """``length_sentence`` with the ratio at each training length."""
    numbers = {f"ratio at {v.epochs}": v.ratio for v in sorted(verdicts, key=lambda v: v.epochs)}
    return Finding("frontier-by-length", length_sentence(verdicts), numbers, verdicts[0].label)


def length_sentence(verdicts: Sequence[FrontierVerdict]) -> str:
    """What the verdicts of one configuration and measure say across training lengths, with the
    epoch where the verdict flips, if it does."""
    vs = sorted(verdicts, key=lambda v: v.epochs)
    first = vs[0]
    trail = ", ".join(f"{v.epochs}: {v.ratio:.3g}x ({v.verdict()})" for v in vs)
    head = f"{first.dataset}/{first.model} {first.label} on {first.measure}, ratio to the beta curve by epoch: {trail}."
    outside = [v.epochs for v in vs if v.extrapolated]
    if outside:
        head += f" Extrapolated (reconstruction error outside the beta runs' range) at epochs {outside}."
    flips = [(a, b) for a, b in zip(vs, vs[1:], strict=False) if a.verdict() != b.verdict()]
    if not flips:
        return f"{head} The verdict holds at every training length measured ({vs[0].epochs}-{vs[-1].epochs} epochs)."
    a, b = flips[0]
    return (
        f"{head} The verdict changes between epochs {a.epochs} and {b.epochs} ({a.verdict()} -> {b.verdict()}); "
        f"a verdict on {first.defence} holds only for the training length it was measured at."
    )


def tracking(
    rows: Iterable[ResultRow], scores: dict[str, Callable[[ResultRow], float]],
    damages: dict[str, Callable[[ResultRow], float]],
) -> dict[tuple[str, str], float]:  # fmt: skip
    """Spearman correlation over configurations (seed medians) of each local score with each damage.

    A score "tracks" a damage across defences when the configurations it ranks as fragile are those
    an attack damages most.
    """
    points = aggregate(rows)
    median = lambda f, p: float(np.median([f(r) for r in p.runs]))  # noqa: E731
    return {
        (s, d): spearman([median(fs, p) for p in points], [median(fd, p) for p in points])
        for s, fs in scores.items()
        for d, fd in damages.items()
    }


def tracking_finding(corr: dict[tuple[str, str], float], n: int, epochs: int) -> Finding:
    """``tracking_sentence`` at one training length, with every correlation by (score, damage)."""
    numbers = {f"{score} / {damage}": c for (score, damage), c in corr.items()}
    return Finding("tracking", f"After {epochs} epochs: " + tracking_sentence(corr, n), numbers)


def tracking_sentence(corr: dict[tuple[str, str], float], n: int) -> str:
    """Which score tracks each damage best (largest Spearman) over ``n`` configurations."""
    parts = []
    for d in dict.fromkeys(d for _, d in corr):
        pairs = {s: c for (s, dd), c in corr.items() if dd == d and not math.isnan(c)}
        if pairs:
            top = max(pairs.values())
            best = " and ".join(k for k, c in pairs.items() if math.isclose(c, top))  # ties are named together
            parts.append(f"{d} is tracked best by {best} (Spearman {top:+.2f})")
    if not parts:
        return f"Too few configurations ({n}) to rank the scores."
    return f"Across {n} configurations (medians over seeds): " + "; ".join(parts) + "."


@dataclass(frozen=True)
class KLSplit:
    """The KL damage of a defended configuration and of the undefended run at its beta, each as
    (total, mean-shift part, variance part): seed medians."""

    label: str
    epochs: int
    defended: tuple[float, float, float]
    plain: tuple[float, float, float]

    def finding(self) -> Finding:
        names = ("kl", "kl_mean", "kl_var")
        numbers = {**dict(zip(names, self.defended, strict=True)),
                   **{f"no defence {n}": v for n, v in zip(names, self.plain, strict=True)}}  # fmt: skip
        return Finding("kl-split", self.sentence(), numbers, self.label)

    def sentence(self) -> str:
        (t, m, v), (t0, m0, v0) = self.defended, self.plain
        ratio = lambda a, b: a / b if b > 0 else float("inf")  # noqa: E731
        share = lambda a, b: 100 * a / b if b > 0 else float("nan")  # noqa: E731
        moved = "mean-shift" if abs(m - m0) >= abs(v - v0) else "variance"  # the part that carries the change
        return (
            f"After {self.epochs} epochs, {self.label} changes the KL damage {ratio(t, t0):.3g}x against no defence "
            f"({t:.4g} vs {t0:.4g}): its mean-shift part {ratio(m, m0):.3g}x ({m:.4g} vs {m0:.4g}), its variance part "
            f"{ratio(v, v0):.3g}x ({v:.4g} vs {v0:.4g}); the variance part is {share(v, t):.0f}% of the damage "
            f"against {share(v0, t0):.0f}%, so the change in KL damage is mostly in the {moved} part."
        )


def kl_split(
    rows: Iterable[ResultRow], total: Callable[[ResultRow], float], mean: Callable[[ResultRow], float],
    variance: Callable[[ResultRow], float],
) -> list[KLSplit]:  # fmt: skip
    """Each defended configuration's KL damage split, beside the undefended run of the same beta and length."""
    points = aggregate(rows)
    plain = {(p.dataset, p.model, p.beta, p.epochs): p for p in points if p.defence == "none"}
    med = lambda f, p: float(np.median([f(r) for r in p.runs]))  # noqa: E731
    out = []
    for p in points:
        ref = plain.get((p.dataset, p.model, p.beta, p.epochs))
        if p.defence != "none" and ref is not None:
            out.append(
                KLSplit(
                    f"{p.defence} (beta {p.beta:g})", p.epochs, (med(total, p), med(mean, p), med(variance, p)),
                    (med(total, ref), med(mean, ref), med(variance, ref)),
                )
            )  # fmt: skip
    return out
