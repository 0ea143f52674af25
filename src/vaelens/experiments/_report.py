"""The sweep report: the paper's figures and more, as PNGs, trend.csv and one self-contained page.

Everything is read back from the files a sweep wrote (results.csv, each run's samples.csv, probe
summaries) through the result schema; the numbers and typed findings come from ``_analysis``, the
figures from ``_figures``, and the page from ``_html``'s template. The report lays findings out
(``_Report.say``) and chooses the summary's where it makes them; it never reads its sentences back.
A new section is one method and one entry of ``_Report.SECTIONS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vaelens._errors import VaelensError
from vaelens._io import read_json, remove_stale_temps, save_figure, write_csv, write_text
from vaelens.experiments import _figures
from vaelens.experiments._analysis import (
    TREND_COLUMNS,
    Finding,
    Measure,
    TrendPoint,
    aggregate,
    beta_curves,
    frontier,
    kl_split,
    length_finding,
    mixup_findings,
    over_seeds,
    probe_picks,
    score_validity,
    tracking,
    tracking_finding,
    trend_findings,
)
from vaelens.experiments._certified import certification_section
from vaelens.experiments._html import FigureRef, Page, Section, Table, render
from vaelens.experiments._schema import HEADLINE, REPORTED_METHODS, ResultRow, damage_column, read_csv, read_samples

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# the headline damage, named wherever it is shown
STRONGEST = "the strongest attack (per input, the most damaging of EigenAttack, PGD and APGD)"


# docs/method.md section 7: the released numbers (MLP VAE on MNIST, means over 3,072 test images, entropy
# normalised by the max). Not attacks.Reference, the clean posterior an attack is measured against.
class PaperNumbers(NamedTuple):
    beta: float
    entropy: float
    lambda_1: float
    probe: tuple[float, float, float]  # MSE along v1 at t = 0.1, 1.06, 10


PAPER_SETTINGS = (("mnist", "mlp"), ("mnist-5k", "mlp"))  # the (data set, model) the numbers below are for
REFERENCE = [
    PaperNumbers(0.010, 4.95, 4.27, (0.014, 0.144, 0.474)),
    PaperNumbers(0.110, 2.67, 2.24, (0.020, 0.060, 0.302)),
    PaperNumbers(1.048, 1.42, 1.19, (0.028, 0.039, 0.146)),
    PaperNumbers(4.94, 0.53, 0.43, (0.053, 0.053, 0.060)),
    PaperNumbers(10.0, 0.66, 0.075, (0.064, 0.064, 0.064)),
]
VALIDITY_SCORES = {
    "rho (stochastic)": "rho_stochastic",
    "rho (fisher)": "rho_fisher",
    "rho (output)": "rho_output",
    "entropy S": "entropy_stochastic",
    "trace": "trace_stochastic",
}
RESULT_TABLE = ("run", "beta", "defence", "epochs", "seed", "test_mse", "test_elbo", "active_units", "rho_median",
                "rho_mean", "entropy_median", "rho_fisher_median")  # fmt: skip


FRONTIER = "Defences on the robustness-reconstruction frontier"


def frontier_measures(eps: float) -> list[Measure]:
    """The y axes of the frontier plane (docs/method.md section 6.5), the first being the headline."""
    return [
        Measure(f"PGD KL damage (eps {eps:g})", lambda r: r.damage_at("pgd", "kl", eps)),
        Measure(f"PGD recon shift (eps {eps:g})", lambda r: r.damage_at("pgd", "recon_shift", eps)),
        Measure(f"PGD KL mean-shift part (eps {eps:g})", lambda r: r.damage_at("pgd", "kl_mean", eps)),
        Measure("median rho(G) stochastic", lambda r: r.rho_median),
        Measure("median rho(G) output", lambda r: r.rho_output_median),
    ]


def _kl(method: str, eps: float) -> Callable[[ResultRow], float]:
    """What a run's KL damage by ``method`` at ``eps`` is read by."""
    return lambda r: r.damage_at(method, "kl", eps)


def _cell(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _slug(text: str) -> str:
    return text.replace(":", "-").replace("/", "_")


class _Report:
    # the sections, in the order they are built and shown: each a method below
    SECTIONS = ("beta_trends", "probe", "histograms", "mixup", "defences", "damage", "validity", "reference")

    def __init__(self, root: Path) -> None:
        self.root = root
        if not (root / "results.csv").is_file():
            raise VaelensError(f"{root} has no results.csv; run `vaelens sweep --out {root}` first")
        self.sweep = read_json(root / "sweep.json")
        self.summary: list[str] = []  # what the summary repeats, chosen where each finding is laid out
        self.eps = [float(e) for e in self.sweep["eps"]]
        self.all_rows = [ResultRow.from_record(r, self.eps) for r in read_csv(root / "results.csv")]
        if not self.all_rows:
            raise VaelensError(f"{root}/results.csv holds no finished runs")
        # the sections on beta trends, mixup, damage and validity read the last epoch; the frontier
        # section reads every evaluated epoch (eval_epochs)
        self.final = max(r.epochs for r in self.all_rows)
        self.rows = [r for r in self.all_rows if r.epochs == self.final]
        self.points = aggregate(self.rows)
        self.curves = beta_curves(self.points)
        self.out = root / "report"
        self.sections: dict[str, Section] = {}
        self._samples: dict[str, dict[str, np.ndarray]] = {}

    def samples(self, run: str) -> dict[str, np.ndarray]:
        if run not in self._samples:
            self._samples[run] = read_samples(self.root / "runs" / run / "samples.csv")
        return self._samples[run]

    def section(self, title: str) -> Section:
        return self.sections.setdefault(title, Section(title))

    def say(self, section: str, finding: Finding | str, summary: bool = False) -> None:
        """Lay a finding (or a note on the sweep itself) out in a section and, if asked, the summary."""
        text = finding if isinstance(finding, str) else finding.text
        self.section(section).paragraphs.append(text)
        if summary:
            self.summary.append(text)

    def add(self, section: str, name: str, caption: str, fig: Figure) -> None:
        path = self.out / f"{name}.png"
        fig.tight_layout()
        save_figure(fig, path)
        self.section(section).figures.append(FigureRef(caption, path))

    # -- sections ---------------------------------------------------------------------------
    def beta_trends(self) -> None:
        section = self.section("Robustness against beta")
        spread = {}
        for key, curve in self.curves.items():
            ent = [[float(np.median(self.samples(r.run)["entropy_stochastic"])) for r in p.runs] for p in curve]
            spread[key] = ([min(e) for e in ent], [max(e) for e in ent])
            for finding in trend_findings(f"{key[0]} / {key[1]}", curve):
                self.say(section.title, finding, summary=True)
        if self.curves:
            caption = "Median rho(G) and entropy S of G against beta: medians over seeds, bars spanning the seeds."
            self.add(section.title, "rho_entropy_vs_beta", caption, _figures.beta_trends(self.curves, spread))

    def probe(self) -> None:
        section = "Eigen-direction probe"
        for (dataset, model), picks in probe_picks(self.curves).items():
            panels = []
            for p in picks:
                run = p.runs[0]  # the lowest seed
                path = self.root / "runs" / run.run / "audit" / "probe.csv"
                if path.is_file():
                    panels.append((f"beta {p.beta:g}, seed {run.seed} ({dataset}, {model})", read_csv(path)))
            if panels:
                caption = f"Reconstruction error along the top eigen-directions and a random one, {dataset} / {model}."
                self.add(section, f"probe_{_slug(f'{dataset}_{model}')}", caption, _figures.probe(panels))

    def histograms(self) -> None:
        section = "Distributions of rho(G)"
        for (dataset, model), curve in self.curves.items():
            data = {
                f"beta {p.beta:.3g} ({p.n_seeds} seed{'s' if p.n_seeds > 1 else ''})": np.concatenate(
                    [self.samples(r.run)["rho_stochastic"] for r in p.runs]
                )
                for p in curve
            }
            caption = f"rho(G) per beta, inputs of all seeds pooled, {dataset} / {model}."
            self.add(section, f"rho_hist_{_slug(f'{dataset}_{model}')}", caption, _figures.histograms(data))

    def mixup(self) -> None:
        section = self.section("Mixup against beta")
        if not any(p.mixup for p in self.points):
            self.say(section.title, "The sweep has no mixup runs (use --mixup both).", summary=True)
            return
        for finding in mixup_findings(self.points):
            self.say(section.title, finding, summary=True)
        eps = max(self.eps)
        damage = [over_seeds(p, _kl(HEADLINE, eps)) for p in self.points]
        caption = (
            "Mixup (red squares, bars spanning the seeds) against the beta curve: rho(G), and the KL damage of "
            f"{STRONGEST} at eps {eps:g}."
        )
        self.add(section.title, "mixup", caption, _figures.mixup_plane(self.points, damage, eps))

    def damage(self) -> None:
        section = "Attack damage against eps"
        shown = sorted(self.points, key=lambda p: (p.defence != "none", p.beta))[:8]
        curves: dict[str, dict[str, list[float]]] = {
            method: {
                f"{p.dataset}/{p.model} beta {p.beta:.3g}{'' if p.defence == 'none' else ' ' + p.defence}": [
                    over_seeds(p, _kl(method, e)).median for e in self.eps
                ]
                for p in shown
            }
            for method in REPORTED_METHODS
        }
        caption = (
            "Mean KL damage of EigenAttack, PGD, APGD, random noise and the strongest of the first three per input, "
            "against eps (median over seeds)."
        )
        self.add(section, "damage_vs_eps", caption, _figures.damage_vs_eps(curves, self.eps))
        for r in self.rows[:2]:
            grid = self.root / "runs" / r.run / "attack-pgd" / "adversarial_grid.png"
            if grid.is_file():
                self.section("Adversarial examples").figures.append(
                    FigureRef(f"PGD adversarials and reconstructions, {r.run}.", grid)
                )

    def defences(self) -> None:
        section = self.section(FRONTIER)
        if all(r.defence == "none" for r in self.all_rows):
            self.say(section.title, "The sweep has no defended runs (use --defences none,mixup,adversarial).")
            return
        measures = frontier_measures(max(self.eps))
        table = []
        for m in measures:
            groups: dict[tuple, list] = {}
            for v in frontier(self.all_rows, m):
                groups.setdefault((v.dataset, v.model, v.defence, v.beta), []).append(v)
                spread = f"{min(v.ratios):.3g}-{max(v.ratios):.3g}"
                table.append([v.label, str(v.epochs), m.name, f"{v.ratio:.3g}", spread, v.verdict(),
                              str(v.extrapolated)])  # fmt: skip
            for vs in groups.values():  # the headline measure's verdicts go into the summary too
                self.say(section.title, length_finding(vs) if len(vs) > 1 else vs[0].finding(), m is measures[0])
        section.tables.append(
            Table(
                ["defence", "epochs", "measure", "ratio to beta curve", "seed range", "verdict", "extrapolated"], table
            )
        )
        eps = max(self.eps)
        splits = kl_split(
            self.all_rows, *(lambda r, q=q: r.damage_at("pgd", q, eps) for q in ("kl", "kl_mean", "kl_var"))
        )
        for split in splits:
            if split.epochs == self.final:
                self.say(section.title, split.finding())
        section.tables.append(
            Table(
                [
                    "defence",
                    "epochs",
                    "PGD KL",
                    "mean-shift part",
                    "variance part",
                    "no defence: KL",
                    "mean",
                    "variance",
                ],
                [[s.label, str(s.epochs), *(f"{v:.4g}" for v in (*s.defended, *s.plain))] for s in splits],
            )
        )
        scores = {"rho stochastic": lambda r: r.rho_median, "rho fisher": lambda r: r.rho_fisher_median,
                  "rho output": lambda r: r.rho_output_median}  # fmt: skip
        damages = {f"PGD KL damage (eps {eps:g})": measures[0].of, f"PGD recon shift (eps {eps:g})": measures[1].of}
        n = len(aggregate(self.rows))
        corr = tracking(self.rows, scores, damages)
        ranked = any(not math.isnan(c) for c in corr.values())  # a score was ranked: a summary finding
        self.say(section.title, tracking_finding(corr, n, self.final), ranked)
        self._frontier_figures(measures)

    def _frontier_figures(self, measures: list[Measure]) -> None:
        everything = aggregate(self.all_rows)
        groups = sorted({(p.dataset, p.model) for p in everything})
        for dataset, model in groups:  # one set of figures per (dataset, model): a beta curve never mixes them
            suffix = "" if len(groups) == 1 else f"_{dataset}_{model}".replace(":", "-").replace("/", "-")
            where = "" if len(groups) == 1 else f" ({dataset}, {model})"
            points = [p for p in everything if (p.dataset, p.model) == (dataset, model)]
            self._frontier_group(measures, points, suffix, where)

    def _frontier_group(self, measures: list[Measure], points: list[TrendPoint], suffix: str, where: str) -> None:
        epochs = sorted({p.epochs for p in points})
        label = lambda p: "no defence" if p.defence == "none" else p.defence  # noqa: E731
        if len(epochs) > 1:
            panels: dict[str, dict[str, _figures.Band]] = {}
            for m in measures:
                lines: dict[str, _figures.Band] = {}
                for p in points:
                    spread = over_seeds(p, m.of)
                    epochs_, mid, lo, hi = lines.setdefault(f"{label(p)} beta {p.beta:g}", ([], [], [], []))
                    epochs_.append(p.epochs)
                    mid.append(spread.median)
                    lo.append(spread.low)
                    hi.append(spread.high)
                panels[m.name] = lines
            caption = f"Each measure against the training length{where}: median over seeds, bands spanning the seeds."
            self.add(FRONTIER, f"against_epochs{suffix}", caption, _figures.against_epochs(panels))
        shown = sorted({epochs[(len(epochs) - 1) // 2], self.final})  # a middle training length and the last
        planes: dict[int, dict[str, _figures.Plane]] = {}
        for e in shown:
            planes[e] = {}
            for m in measures:
                curve = sorted((p for p in points if p.epochs == e and p.defence == "none"), key=lambda p: p.test_mse)
                defended = {
                    f"{p.defence} beta {p.beta:g}": ([r.test_mse for r in p.runs], [m.of(r) for r in p.runs])
                    for p in points
                    if p.epochs == e and p.defence != "none"
                }
                ys = [over_seeds(p, m.of).median for p in curve]
                planes[e][m.name] = ([p.beta for p in curve], [p.test_mse for p in curve], ys, defended)
        caption = (
            f"The robustness-reconstruction plane{where}: the beta curve (seed medians, labelled by beta) and every "
            "seed of each defence; below the curve is beyond the frontier."
        )
        self.add(FRONTIER, f"frontier{suffix}", caption, _figures.frontier_planes(planes))

    def validity(self) -> None:
        section = self.section("Do the scores predict the damage?")
        eps = max(self.eps)
        v = score_validity({r.run: self.samples(r.run) for r in self.rows}, VALIDITY_SCORES,
                           damage_column(HEADLINE, "kl", eps), "the strongest attack")  # fmt: skip
        caption = f"Per-input Spearman correlation of each score with the KL damage of {STRONGEST}, per run."
        self.add(section.title, "score_validity", caption, _figures.validity(v, eps))
        within = v.mean_within()
        section.tables.append(
            Table(
                ["score", "mean within-run Spearman", "across-run Spearman (medians)"],
                [[n, f"{within[n]:.3f}", f"{v.across[n]:.3f}"] for n in v.scores],
            )
        )
        self.say(section.title, v.finding())

    def reference(self) -> None:
        ours = [p for key in PAPER_SETTINGS for p in self.curves.get(key, [])]
        if not ours:
            return
        section = self.section("Against the authors' released numbers")
        header = ["ref beta", "ref entropy", "ref lambda_1", "ref probe v1 t=0.1/1.06/10", "our beta (seeds)",
                  "our entropy (max-normalised)", "our lambda_1 mean", "our probe v1"]  # fmt: skip
        rows = []
        for ref in REFERENCE:
            p = min(ours, key=lambda p: abs(math.log(max(p.beta, 1e-9)) - math.log(ref.beta)))
            ent = np.mean([np.mean(self.samples(r.run)["entropy_max_stochastic"]) for r in p.runs])
            lam = np.mean([np.mean(self.samples(r.run)["rho_stochastic"]) for r in p.runs])
            probe = self._probe_at(p.runs[0].run, (0.1, 1.06, 10.0))
            ref_cells = [
                f"{ref.beta:g}",
                f"{ref.entropy:g}",
                f"{ref.lambda_1:g}",
                " / ".join(f"{v:g}" for v in ref.probe),
            ]
            our_probe = " / ".join("-" if v is None else f"{v:.3g}" for v in probe)
            rows.append([*ref_cells, f"{p.beta:.3g} ({p.dataset}, {p.n_seeds})", f"{ent:.3g}", f"{lam:.3g}", our_probe])
        section.tables.append(Table(header, rows))
        section.paragraphs.append(
            "Our row is the beta nearest the reference, with means over inputs averaged over seeds; architectures, "
            "epochs and the data subset differ from the released setup, so compare trends and orders of magnitude, "
            "not digits."
        )

    def _probe_at(self, run: str, ts: tuple[float, ...]) -> list[float | None]:
        path = self.root / "runs" / run / "audit" / "probe.csv"
        if not path.is_file():
            return [None] * len(ts)
        rows = [r for r in read_csv(path) if r["direction"] == "v1"]
        return [float(min(rows, key=lambda r: abs(math.log(float(r["t"]) / t)))["mse_mean"]) for t in ts]

    def results_table(self) -> Table:
        eps = max(self.eps)
        damage = [damage_column(m, "kl", eps) for m in REPORTED_METHODS]
        rows = []
        for r in self.rows:
            rec = r.record()
            rows.append([_cell(rec[c]) for c in (*RESULT_TABLE, *damage)])
        return Table([*RESULT_TABLE, *damage], rows)

    # -- page -------------------------------------------------------------------------------
    def write(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out)  # what a killed report left behind, and only that:
        remove_stale_temps(self.root, ("report.html",))  # a sweep may be writing beside it
        write_csv(self.out / "trend.csv", [p.record() for p in self.points], list(TREND_COLUMNS))
        for name in self.SECTIONS:
            getattr(self, name)()
        certified = certification_section(self.root, [r.run for r in self.rows])  # RUN/certify* folders, if any
        if certified is not None:
            self.sections[certified.title] = certified
        page = Page(
            title="vaelens sweep report",
            intro=f"{len(self.rows)} runs ({len(self.points)} grid points) from {self.root}",
            settings=settings_table(self.sweep),
            summary=self.summary,
            results=self.results_table(),
            sections=list(self.sections.values()),
        )
        path = self.root / "report.html"
        write_text(path, render(page))
        return path


def trend_points(sweep_dir: str | Path) -> list[TrendPoint]:
    """The sweep's runs aggregated over seeds (the rows of report/trend.csv)."""
    return _Report(Path(sweep_dir)).points


def settings_table(settings: dict) -> Table:
    """The sweep's settings as a two-column table: lists joined by commas, unset values as a dash."""

    def shown(value: object) -> str:
        if isinstance(value, list | tuple):
            return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) or "-"
        return "-" if value is None else str(value)

    return Table(["setting", "value"], [[key, shown(value)] for key, value in settings.items()])


def write_report(sweep_dir: str | Path) -> Path:
    """Write ``report.html`` (self-contained, figures embedded), ``report/*.png`` and ``report/trend.csv``."""
    return _Report(Path(sweep_dir)).write()
