"""The leaderboard's page (docs/method.md section 11): a sortable table, the robustness-reconstruction
plane with the beta curve as the frontier, and one card per entry with its figures and adversarial
examples. Self-contained: figures are embedded as data: URIs, the sorting is a few lines of script.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jinja2

from vaelens._io import write_csv, write_json, write_text
from vaelens.experiments._bench_protocol import BenchProtocol, entry_dir, versions
from vaelens.experiments._leaderboard import BEYOND, FRONTIER, Leaderboard, Standing, findings

# (header, Standing field, format)
COLUMNS = (
    ("rank", "rank", "d"), ("entry", "entry", "s"), ("source", "source", "s"), ("seeds", "seeds", "d"),
    ("frontier ratio (median)", "frontier_ratio", ".3g"), ("min", "ratio_min", ".3g"), ("max", "ratio_max", ".3g"),
    ("verdict", "verdict", "s"), ("test MSE", "test_mse", ".4g"), ("MS-SSIM", "ms_ssim", ".3f"),
    ("raw damage", "damage", ".3g"), ("rho output", "rho_output", ".3g"), ("rho stochastic", "rho_stochastic", ".3g"),
    ("rho fisher", "rho_fisher", ".3g"), ("cert bound", "cert_bound", ".3g"),
    ("cert / attack", "cert_over_attack", ".3g"), ("train s", "train_seconds", ".1f"),
)  # fmt: skip


class Cell(NamedTuple):
    text: str
    key: str  # what the column sorts on


def _cell(value: Any, fmt: str) -> Cell:
    if isinstance(value, float) and math.isnan(value):
        return Cell("n/a", "nan")
    return Cell(format(value, fmt), str(value))


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _plane(board: Leaderboard) -> str:
    """The plane as a PNG data URI: the beta curve as a line, every other entry a labelled point."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    if board.curve:
        ax.plot([c[1] for c in board.curve], [c[2] for c in board.curve], "o-", color="tab:blue",
                label="beta curve (the frontier)")  # fmt: skip
        ax.legend(fontsize=8)
    for s in board.standings:
        if s.verdict == FRONTIER or math.isnan(s.test_mse) or math.isnan(s.damage):
            continue
        color = "tab:green" if s.verdict == BEYOND else ("tab:orange" if s.source == "pythae" else "tab:red")
        ax.plot(s.test_mse, s.damage, "s", color=color, markersize=6)
        ax.annotate(s.entry.removeprefix("pythae-"), (s.test_mse, s.damage), textcoords="offset points",
                    xytext=(4, 3), fontsize=7)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("test reconstruction MSE")
    ax.set_ylabel("reconstruction shift under the strongest attack")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return _png_uri(buf.getvalue())


def _card(s: Standing, root: Path) -> dict[str, Any]:
    shown = [f for f in ("frontier_ratio", "ratio_min", "ratio_max", "test_mse", "ms_ssim", "damage",
                         "rho_output", "rho_stochastic", "rho_fisher", "cert_bound", "cert_over_attack",
                         "train_seconds")]  # fmt: skip
    fmt = {c[1]: c[2] for c in COLUMNS}
    pngs = sorted(entry_dir(root, s.entry).glob("seed*.png"))
    tie = f"; tied with {', '.join(s.tied_with)}" if s.tied_with else ""
    return {
        "title": f"#{s.rank} {s.entry}",
        "verdict": f"{s.verdict} ({s.seeds} seeds){tie}" + (" [extrapolated]" if s.extrapolated else ""),
        "beyond": s.verdict == BEYOND,
        "figures": [(f, _cell(getattr(s, f), fmt[f]).text) for f in shown],
        "image": _png_uri(pngs[0].read_bytes()) if pngs else None,
    }


def write_page(path: Path, protocol: BenchProtocol, board: Leaderboard, findings: list[str]) -> None:
    """index.html beside the leaderboard files, written atomically."""
    source = resources.files("vaelens.experiments").joinpath("templates/leaderboard.html.j2").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.from_string(source).render(
        title=f"VAE robustness leaderboard (protocol {protocol.version})",
        protocol=protocol,
        versions=versions(),
        findings=findings,
        header=[c[0] for c in COLUMNS],
        rows=[[_cell(getattr(s, f), fmt) for _, f, fmt in COLUMNS] for s in board.standings],
        plane=_plane(board),
        cards=[_card(s, path.parent) for s in board.standings],
        protocol_rows=list(protocol.to_dict().items()),
    )
    write_text(path, html)


def write_tables(root: Path, protocol: BenchProtocol, board: Leaderboard) -> dict[str, Path]:
    """leaderboard.csv (one row per entry and seed) and leaderboard.json (the protocol, versions,
    standings, findings and rows), each atomically."""
    paths = {"csv": root / "leaderboard.csv", "json": root / "leaderboard.json"}
    columns: list[str] = []
    for r in board.rows:
        columns += [k for k in r if k not in columns]
    if board.rows:
        write_csv(paths["csv"], board.rows, columns)
    summary = {
        "protocol": protocol.to_dict(),
        "comparable_only_with": f"results under protocol {protocol.version}",
        "versions": versions(),
        "standings": [asdict(s) for s in board.standings],
        "findings": findings(board),
        "rank_agreement": board.rank_agreement,
        "rows": board.rows,
    }
    write_json(paths["json"], summary)
    return paths
