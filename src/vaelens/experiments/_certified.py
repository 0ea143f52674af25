"""The bracket in the sweep report (docs/method.md section 10.4).

A sweep does not certify; ``vaelens certify RUN`` does, into ``RUN/certify`` (or any ``RUN/certify*``
folder given with ``--out``). The report reads every finished certification of its runs back from
``summary.json`` and shows, per run, output and eps, the three numbers side by side: the strongest
attack on the smoothed model (lower side), the certified bound (upper side) and the base model's
sqrt(lambda_1) eps, with the gap, the abstain rate and each run's bracket figure. One function, one
section: the report adds it when there is something to show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaelens._errors import VaelensError
from vaelens._io import read_json
from vaelens._outputs import is_complete
from vaelens.experiments._html import FigureRef, Section, Table

CERTIFIED = "Certified robustness: the bracket"
BRACKET_COLUMNS = ["run", "folder", "output", "sigma", "eps", "abstain", "certified bound (upper)",
                   "per pixel (RMS)", "strongest attack (lower)", "sqrt(l1) eps (base)", "gap (certified / attacked)",
                   "attacks over the bound"]  # fmt: skip
MAX_FIGURES = 6  # bracket figures embedded in the page; the table has every certification


def _number(v: Any, fmt: str = ".4g") -> str:
    """A summary value as shown: a dash where it is missing (null, NaN: abstained or not attacked)."""
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _certifications(root: Path, runs: Sequence[str]) -> list[tuple[str, Path, dict[str, Any]]]:
    """(run, folder, summary) of every finished certification of the runs; unreadable ones are skipped."""
    found = []
    for run in runs:
        for folder in sorted((root / "runs" / run).glob("certify*")):
            if not is_complete(folder, "certify"):
                continue  # a certification still running, or killed: nothing half-written is shown
            try:
                found.append((run, folder, read_json(folder / "summary.json")))
            except VaelensError:
                continue
    return found


def certification_section(root: str | Path, runs: Sequence[str]) -> Section | None:
    """The bracket of every certified run of a sweep, or None when no run was certified.

    Arguments:
        root: the sweep directory (its runs under ``root/runs``).
        runs: the run names to look at (the report passes those of its last epoch).

    Returns:
        A ``Section``: a lead paragraph, a table with one row per (run, folder, output, eps), one
        sentence per (run, output) on where the gap is largest and what smoothing costs in
        reconstruction error, and up to ``MAX_FIGURES`` bracket figures.
    """
    found = _certifications(Path(root), runs)
    if not found:
        return None
    section = Section(CERTIFIED)
    section.paragraphs.append(
        "Each row brackets the worst case of the center-smoothed model (not the base model): the strongest attack "
        "on it reaches at least the lower side, and with probability 1 - alpha no L2 perturbation of size eps moves "
        "its output further than the certified bound. Medians over the inputs the certificate answers; "
        "sqrt(lambda_1) eps is the base model's local prediction, for scale."
    )
    rows = []
    for run, folder, summary in found:
        for s in summary.get("outputs", []):
            for r in s["per_eps"]:
                rows.append([run, folder.name, s["output"], _number(s["sigma"], "g"), _number(r["eps"], "g"),
                             f"{100 * r['abstain_rate']:.0f}%", _number(r["median_bound"]),
                             _number(r["median_bound_rms"]) if s["output"] == "recon" else "",
                             _number(r["median_attacked"]), _number(r["median_predicted"]),
                             _number(r["median_gap"], ".3g"), str(r["exceeded"])])  # fmt: skip
            mse, base = s.get("recon_mse"), s.get("base_recon_mse")
            cost = mse / base if mse is not None and base else math.nan
            section.paragraphs.append(
                f"{run} ({folder.name}), {s['output']}, sigma {s['sigma']:g}: {s['explanation']} Smoothing costs "
                f"{_number(cost, '.3g')}x the base model's reconstruction MSE ({_number(mse)} against "
                f"{_number(base)})."
            )
            over = sum(r["exceeded"] for r in s["per_eps"])
            if over:
                section.paragraphs.append(
                    f"{run} ({folder.name}), {s['output']}: an attack exceeded the certificate on {over} answered "
                    "input-budget pairs (possible with probability alpha each; report it if it recurs)."
                )
    section.tables.append(Table(BRACKET_COLUMNS, rows))
    for run, folder, _ in found[:MAX_FIGURES]:
        if (folder / "bracket.png").is_file():
            caption = f"The bracket of {run} ({folder.name}): certified bound, strongest attack and sqrt(l1) eps."
            section.figures.append(FigureRef(caption, folder / "bracket.png"))
    return section
