"""The leaderboard: each (entry, seed) placed against the beta frontier, seeds aggregated honestly,
written as leaderboard.csv, leaderboard.json and index.html (docs/method.md section 11).

The headline is the frontier ratio at equal reconstruction error: per seed and per budget, the
entry's reconstruction shift under the strongest attack divided by what the plain beta-VAEs of
the same seed reach at the entry's test MSE (``against_curve``), then the geometric mean over
the protocol's budgets. Below 1: more robust than any beta buys at that reconstruction quality.
Raw damage is never ranked on: it rewards blurry models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vaelens.experiments._analysis import against_curve, spearman
from vaelens.experiments._bench_protocol import BenchProtocol, cell

BEYOND = "beyond the frontier"
NOT_BEYOND = "not beyond the frontier"
DISAGREE = "seeds disagree"
FRONTIER = "the frontier (beta curve)"
UNJUDGED = "not judged (no beta curve at this seed)"
OUTSIDE = "not judged (test MSE outside the beta curve's range)"


def headline_cells(protocol: BenchProtocol) -> list[str]:
    """The damage columns the headline averages over: the reconstruction shift at every budget."""
    return [cell("recon_shift", norm, eps) for norm, eps in protocol.budgets]


def _is_curve(record: dict[str, Any]) -> bool:
    return record["source"] == "vaelens" and record["defence"] == "none"


def frontier_ratios(protocol: BenchProtocol, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record with ``ratio@CELL`` per budget, ``frontier_ratio`` (their geometric mean) and
    ``extrapolated`` (its test MSE lies outside its seed's beta curve); NaN without a curve."""
    out = []
    for r in records:
        curve = sorted((c for c in records if _is_curve(c) and c["seed"] == r["seed"]), key=lambda c: c["test_mse"])
        row = dict(r)
        logs, outside = [], False
        for name in headline_cells(protocol):
            if len(curve) < 2:
                row[f"ratio@{name.split('@')[1]}"] = math.nan
                continue
            pos = against_curve([c["test_mse"] for c in curve], [c[name] for c in curve], r["test_mse"], r[name])
            row[f"ratio@{name.split('@')[1]}"] = pos.ratio
            logs.append(math.log(max(pos.ratio, 1e-300)))
            outside = outside or pos.extrapolated
        row["frontier_ratio"] = math.exp(float(np.mean(logs))) if logs else math.nan
        row["extrapolated"] = outside
        out.append(row)
    return out


@dataclass(frozen=True)
class Standing:
    """One entry over its seeds: medians with [min, max] ranges, and its verdict."""

    entry: str
    family: str
    source: str
    defence: str
    seeds: int
    frontier_ratio: float  # the headline: median over seeds
    ratio_min: float
    ratio_max: float
    verdict: str
    test_mse: float
    ms_ssim: float
    damage: float  # median reconstruction shift at the largest L2 budget (raw: never ranked on)
    rho_output: float
    rho_stochastic: float
    rho_fisher: float
    cert_bound: float  # median certified latent bound at the largest certified budget
    cert_over_attack: float  # median over seeds of that bound / the attacks' mean latent shift there
    train_seconds: float
    extrapolated: bool
    rank: int = 0
    tied_with: tuple[str, ...] = ()


@dataclass
class Leaderboard:
    """Standings ranked by the headline, the per-seed rows they came from, and typed findings."""

    standings: list[Standing]
    rows: list[dict[str, Any]]
    rank_agreement: dict[str, float] = field(default_factory=dict)  # score kind -> Spearman with damage
    curve: list[tuple[float, float, float]] = field(default_factory=list)  # (beta, median mse, median damage)


def _median(rows: Sequence[dict[str, Any]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key) is not None and not math.isnan(float(r[key]))]
    return float(np.median(values)) if values else math.nan


def _verdict(rows: Sequence[dict[str, Any]]) -> str:
    if all(_is_curve(r) for r in rows):
        return FRONTIER
    ratios = [r["frontier_ratio"] for r in rows]
    if any(math.isnan(v) for v in ratios):
        return UNJUDGED
    if any(r["extrapolated"] for r in rows):  # the curve's end value held flat: no frontier there
        return OUTSIDE
    below = [v < 1 for v in ratios]
    return BEYOND if all(below) else (NOT_BEYOND if not any(below) else DISAGREE)


def _standing(protocol: BenchProtocol, rows: list[dict[str, Any]]) -> Standing:
    first = rows[0]
    ratios = [r["frontier_ratio"] for r in rows if not math.isnan(r["frontier_ratio"])]
    l2, c = max(protocol.l2_budgets), max(protocol.cert_budgets)
    return Standing(
        first["entry"], first["family"], first["source"], first["defence"], len(rows),
        _median(rows, "frontier_ratio"), min(ratios, default=math.nan), max(ratios, default=math.nan),
        _verdict(rows), _median(rows, "test_mse"), _median(rows, "ms_ssim"),
        _median(rows, cell("recon_shift", "l2", l2)), _median(rows, "rho_output"), _median(rows, "rho_stochastic"),
        _median(rows, "rho_fisher"), _median(rows, cell("cert_bound", "l2", c)),
        _median([{"r": r[cell("cert_bound", "l2", c)] / r[cell("latent_l2", "l2", c)]} for r in rows], "r"),
        _median(rows, "train_seconds"),
        any(r["extrapolated"] for r in rows),
    )  # fmt: skip


def _ranked(standings: list[Standing]) -> list[Standing]:
    """Ranked by the median headline, judged entries first, then those not judged; among the judged
    entries (and the beta runs), two whose seed ranges overlap are tied."""

    def judged(s: Standing) -> bool:
        return s.verdict not in (UNJUDGED, OUTSIDE) and not math.isnan(s.frontier_ratio)

    order = sorted(standings, key=lambda s: (not judged(s), math.isnan(s.frontier_ratio), s.frontier_ratio, s.entry))
    out = []
    for i, s in enumerate(order):
        ties = tuple(
            o.entry for o in order
            if o is not s and judged(s) and judged(o) and o.ratio_min <= s.ratio_max and s.ratio_min <= o.ratio_max
        )  # fmt: skip
        out.append(_with(s, rank=i + 1, tied_with=ties))
    return out


def _with(s: Standing, **changes: Any) -> Standing:
    return Standing(**{**asdict(s), **changes})


def _agreement(standings: Sequence[Standing], score: str) -> float:
    """Spearman's correlation over the entries that have ``score`` (deterministic encoders have no
    stochastic or fisher kind) of the score's median with the raw damage."""
    pairs = [(getattr(s, score), s.damage) for s in standings]
    pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
    return spearman([a for a, _ in pairs], [b for _, b in pairs])


def build_leaderboard(protocol: BenchProtocol, records: Sequence[dict[str, Any]]) -> Leaderboard:
    """The leaderboard of the measured records (one per entry and seed)."""
    rows = frontier_ratios(protocol, records)
    by_entry: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_entry.setdefault(r["entry"], []).append(r)
    standings = _ranked([_standing(protocol, rs) for rs in by_entry.values()])
    agreement = {kind: _agreement(standings, f"rho_{kind}") for kind in ("output", "stochastic", "fisher")}
    l2 = cell("recon_shift", "l2", max(protocol.l2_budgets))
    curve = sorted(
        (float(rs[0]["beta"]), _median(rs, "test_mse"), _median(rs, l2)) for rs in by_entry.values() if _is_curve(rs[0])
    )
    return Leaderboard(standings, rows, agreement, curve)


def findings(board: Leaderboard) -> list[str]:
    """What the leaderboard says, computed from its numbers."""
    judged = [s for s in board.standings if s.verdict not in (FRONTIER, UNJUDGED, OUTSIDE)]
    beyond = [s.entry for s in judged if s.verdict == BEYOND]
    out = [
        f"{len(beyond)} of {len(judged)} judged entries lie beyond the beta frontier on every seed"
        + (f": {', '.join(beyond)}." if beyond else ".")
    ]
    outside = [s.entry for s in board.standings if s.verdict == OUTSIDE]
    if outside:
        out.append(
            f"Not judged, their test MSE lying outside the beta curve's range on some seed: {', '.join(outside)}."
        )
    split = [s.entry for s in judged if s.verdict == DISAGREE]
    if split:
        out.append(f"Seeds disagree for {', '.join(split)}: not counted as beyond the frontier.")
    tied = [s for s in board.standings if s.tied_with and s.verdict != FRONTIER]
    if tied:
        out.append(
            f"{len(tied)} entries have seed ranges of the headline that overlap another's; their order is a tie: "
            + "; ".join(f"{s.entry} with {len(s.tied_with)}" for s in tied[:8])
            + ("; ..." if len(tied) > 8 else "")
            + "."
        )
    for kind, rho in board.rank_agreement.items():
        if not math.isnan(rho):
            out.append(
                f"Spearman correlation over entries of median rho(G) ({kind} kind) with the raw damage: {rho:+.2f}."
            )
    return out
