"""The sweep report: the paper's figures and more, as PNGs and one self-contained HTML page.

Everything is read back from the files a sweep wrote (results.csv, each run's samples.csv, probe
and attack summaries), and every sentence of the summary is computed from those numbers.
"""

from __future__ import annotations

import base64
import csv
import html
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import spearmanr

from vaelens._checkpoint import read_json
from vaelens._errors import VaelensError
from vaelens._io import save_figure, write_text

# PAPER.md section 7: MLP VAE on MNIST, means over 3,072 test images, entropy normalised by the max.
REFERENCE = [
    {"beta": 0.010, "entropy": 4.95, "lambda_1": 4.27, "probe": (0.014, 0.144, 0.474)},
    {"beta": 0.110, "entropy": 2.67, "lambda_1": 2.24, "probe": (0.020, 0.060, 0.302)},
    {"beta": 1.048, "entropy": 1.42, "lambda_1": 1.19, "probe": (0.028, 0.039, 0.146)},
    {"beta": 4.94, "entropy": 0.53, "lambda_1": 0.43, "probe": (0.053, 0.053, 0.060)},
    {"beta": 10.0, "entropy": 0.66, "lambda_1": 0.075, "probe": (0.064, 0.064, 0.064)},
]
VALIDITY_SCORES = {
    "rho (stochastic)": "rho_stochastic",
    "rho (fisher)": "rho_fisher",
    "rho (output)": "rho_output",
    "entropy S": "entropy_stochastic",
    "trace": "trace_stochastic",
}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _num(v: str) -> Any:
    if v in ("True", "False"):
        return v == "True"
    try:
        return float(v)
    except ValueError:
        return v


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


class _Report:
    def __init__(self, root: Path) -> None:
        self.root = root
        if not (root / "results.csv").is_file():
            raise VaelensError(f"{root} has no results.csv; run `vaelens sweep --out {root}` first")
        self.sweep = read_json(root / "sweep.json")
        self.rows = [{k: _num(v) for k, v in r.items()} for r in _read_csv(root / "results.csv")]
        if not self.rows:
            raise VaelensError(f"{root}/results.csv holds no finished runs")
        self.eps = [float(e) for e in self.sweep["eps"]]
        self.out = root / "report"
        self.figures: list[tuple[str, str, Path]] = []  # (section, caption, path)
        self.sections: dict[str, list[str]] = {}

    def samples(self, run: str) -> dict[str, np.ndarray]:
        rows = _read_csv(self.root / "runs" / run / "samples.csv")
        return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}

    def groups(self) -> dict[tuple[str, str], list[dict]]:
        """Non-mixup runs per (dataset, model), sorted by beta (seeds averaged later)."""
        out: dict[tuple[str, str], list[dict]] = {}
        for r in self.rows:
            if not r["mixup"]:
                out.setdefault((r["dataset"], r["model"]), []).append(r)
        return {k: sorted(v, key=lambda r: r["beta"]) for k, v in out.items()}

    def add(self, section: str, name: str, caption: str, fig: Figure) -> None:
        path = self.out / f"{name}.png"
        fig.tight_layout()
        save_figure(fig, path)
        self.figures.append((section, caption, path))

    def text(self, section: str, sentence: str) -> None:
        self.sections.setdefault(section, []).append(sentence)

    # -- figures -------------------------------------------------------------------------
    def beta_trends(self) -> None:
        section = "Robustness against beta"
        fig = Figure(figsize=(11, 4))
        ax_rho, ax_s = fig.subplots(1, 2)
        for (dataset, model), runs in self.groups().items():
            betas = np.array([r["beta"] for r in runs])
            label = f"{dataset} / {model}"
            med, lo, hi = (np.array([r[k] for r in runs]) for k in ("rho_median", "rho_q25", "rho_q75"))
            ax_rho.plot(betas, med, "o-", label=label)
            ax_rho.fill_between(betas, lo, hi, alpha=0.25)
            ent = [self.samples(r["run"])["entropy_stochastic"] for r in runs]
            ax_s.plot(betas, [np.median(e) for e in ent], "o-", label=label)
            ax_s.fill_between(
                betas, [np.quantile(e, 0.25) for e in ent], [np.quantile(e, 0.75) for e in ent], alpha=0.25
            )
            rho_corr = _spearman(betas, med)
            s_corr = _spearman(betas, np.array([np.median(e) for e in ent]))
            self.text(
                section,
                f"{label}: Spearman correlation with beta: median rho(G) {rho_corr:+.2f}, "
                f"median S {s_corr:+.2f} over {len(runs)} runs.",
            )
            if not math.isnan(rho_corr):
                trend = "rises" if rho_corr < -0.5 else ("falls" if rho_corr > 0.5 else "shows no clear trend")
                self.text(section, f"On {label}, local robustness {trend} as beta grows (rho(G) is a fragility).")
        for ax, name in ((ax_rho, r"$\rho(G)$ (stochastic), median and IQR"), (ax_s, "entropy S, median and IQR")):
            ax.set_xscale("log")
            ax.set_xlabel("beta")
            ax.set_ylabel(name)
            ax.legend(fontsize=8)
        ax_rho.set_yscale("log")
        self.add(section, "rho_entropy_vs_beta", "Spectral radius and entropy of G against beta.", fig)

    def probe(self) -> None:
        section = "Eigen-direction probe"
        runs = [r for runs in self.groups().values() for r in runs][:]
        if not runs:
            return
        picks = [runs[0], runs[len(runs) // 2], runs[-1]] if len(runs) > 2 else runs
        picks = list({r["run"]: r for r in picks}.values())
        fig = Figure(figsize=(4.2 * len(picks), 3.6))
        axes = np.atleast_1d(fig.subplots(1, len(picks)))
        for ax, r in zip(axes, picks, strict=True):
            path = self.root / "runs" / r["run"] / "audit" / "probe.csv"
            if not path.is_file():
                continue
            rows = _read_csv(path)
            for direction in dict.fromkeys(row["direction"] for row in rows):
                sel = [row for row in rows if row["direction"] == direction]
                style = "k--" if direction == "random" else "-"
                ax.plot([float(s["t"]) for s in sel], [float(s["mse_mean"]) for s in sel], style, label=direction)
            ax.set_xscale("log")
            ax.set_title(f"beta {r['beta']:g} ({r['dataset']}, {r['model']})", fontsize=9)
            ax.set_xlabel(r"step t (x + t $\lambda_j v_j$)")
            ax.set_ylabel("reconstruction MSE")
        axes[0].legend(fontsize=7)
        self.add(section, "probe", "Reconstruction error along the top 5 eigen-directions and a random one.", fig)

    def histograms(self) -> None:
        section = "Distributions of rho(G)"
        for (dataset, model), runs in self.groups().items():
            fig = Figure(figsize=(7, 4))
            ax = fig.subplots()
            data = {r["beta"]: self.samples(r["run"])["rho_stochastic"] for r in runs}
            every = np.concatenate(list(data.values()))
            bins = np.logspace(np.log10(max(every.min(), 1e-12)), np.log10(max(every.max(), 1e-11)), 40)
            for beta, rho in data.items():
                ax.hist(rho, bins=bins, histtype="step", linewidth=1.4, label=f"beta {beta:.3g}")
            ax.set_xscale("log")
            ax.set_xlabel(r"$\rho(G)$ (stochastic)")
            ax.set_ylabel("inputs")
            ax.legend(fontsize=7, ncol=2)
            safe = f"{dataset}_{model}".replace(":", "-").replace("/", "_")
            self.add(section, f"rho_hist_{safe}", f"rho(G) per beta, {dataset} / {model}.", fig)

    def mixup(self) -> None:
        section = "Mixup against beta"
        mixed = [r for r in self.rows if r["mixup"]]
        if not mixed:
            self.text(section, "The sweep has no mixup runs (use --mixup both).")
            return
        fig = Figure(figsize=(12, 4))
        ax_h, ax_r, ax_d = fig.subplots(1, 3)
        eps = max(self.eps)
        for m in mixed:
            twins = [
                r
                for r in self.rows
                if not r["mixup"]
                and r["beta"] == m["beta"]
                and r["dataset"] == m["dataset"]
                and r["model"] == m["model"]
                and r["seed"] == m["seed"]
            ]
            for r, style in ((m, "-"), *((t, "--") for t in twins)):
                ax_h.hist(
                    self.samples(r["run"])["rho_stochastic"],
                    bins=40,
                    histtype="step",
                    linestyle=style,
                    label=f"beta {r['beta']:g}{' mixup' if r['mixup'] else ''}",
                )
        ax_h.set_xlabel(r"$\rho(G)$")
        ax_h.legend(fontsize=7)
        for (dataset, model), runs in self.groups().items():
            xs = [r["test_mse"] for r in runs]
            ax_r.plot(xs, [r["rho_median"] for r in runs], "o-", label=f"beta curve {dataset}/{model}")
            ax_d.plot(xs, [r[f"pgd_kl@{eps:g}"] for r in runs], "o-")
            for r in runs:
                ax_r.annotate(f"{r['beta']:.3g}", (r["test_mse"], r["rho_median"]), fontsize=7)
            curve_x = np.array(xs)
            order = np.argsort(curve_x)
            for m in (m for m in mixed if m["dataset"] == dataset and m["model"] == model):
                expected = float(
                    np.exp(np.interp(m["test_mse"], curve_x[order], np.log([runs[i]["rho_median"] for i in order])))
                )
                side = "below (more robust than)" if m["rho_median"] < expected else "above (less robust than)"
                self.text(
                    section,
                    f"{m['run']}: median rho(G) {m['rho_median']:.4g} at reconstruction MSE "
                    f"{m['test_mse']:.4g} lies {side} the beta curve ({expected:.4g} there).",
                )
        for m in mixed:
            ax_r.plot(m["test_mse"], m["rho_median"], "s", color="tab:red", markersize=8)
            ax_d.plot(m["test_mse"], m[f"pgd_kl@{eps:g}"], "s", color="tab:red", markersize=8)
        ax_r.set(xlabel="test reconstruction MSE", ylabel=r"median $\rho(G)$", yscale="log")
        ax_d.set(xlabel="test reconstruction MSE", ylabel=f"PGD KL damage, eps {eps:g}", yscale="log")
        ax_r.legend(fontsize=7)
        self.add(section, "mixup", "Mixup (red squares) against the beta curve: rho(G) and PGD damage.", fig)

    def damage(self) -> None:
        section = "Attack damage against eps"
        runs = sorted(self.rows, key=lambda r: (r["mixup"], r["beta"]))[:8]
        fig = Figure(figsize=(12, 3.8))
        axes = fig.subplots(1, 3, sharey=True)
        for ax, method in zip(axes, ("eigen", "pgd", "random"), strict=True):
            for r in runs:
                ax.plot(
                    self.eps,
                    [r[f"{method}_kl@{e:g}"] for e in self.eps],
                    "o-",
                    label=f"beta {r['beta']:.3g}{' mixup' if r['mixup'] else ''}",
                )
            ax.set(title=method, xlabel="L2 eps", yscale="log")
        axes[0].set_ylabel("mean KL damage")
        axes[0].legend(fontsize=7)
        self.add(section, "damage_vs_eps", "Mean KL damage of EigenAttack, PGD and random noise against eps.", fig)
        for r in runs[:2]:
            grid = self.root / "runs" / r["run"] / "attack-pgd" / "adversarial_grid.png"
            if grid.is_file():
                self.figures.append(
                    ("Adversarial examples", f"PGD adversarials and reconstructions, {r['run']}.", grid)
                )

    def validity(self) -> None:
        section = "Do the scores predict the damage?"
        eps = max(self.eps)
        target = f"pgd_kl@{eps:g}"
        names = list(VALIDITY_SCORES)
        matrix = np.full((len(self.rows), len(names)), np.nan)
        medians = {n: [] for n in names}
        damages = []
        for i, r in enumerate(self.rows):
            s = self.samples(r["run"])
            for j, n in enumerate(names):
                matrix[i, j] = _spearman(s[VALIDITY_SCORES[n]], s[target])
                medians[n].append(float(np.median(s[VALIDITY_SCORES[n]])))
            damages.append(float(np.median(s[target])))
        across = {n: _spearman(np.array(medians[n]), np.array(damages)) for n in names}
        fig = Figure(figsize=(1.3 * len(names) + 3, 0.45 * len(self.rows) + 2))
        ax = fig.subplots()
        im = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(self.rows)), [r["run"] for r in self.rows], fontsize=7)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if not math.isnan(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, label=f"Spearman with PGD KL at eps {eps:g}")
        self.add(section, "score_validity", "Per-input Spearman correlation of each score with PGD damage.", fig)
        within = {n: float(np.nanmean(matrix[:, j])) for j, n in enumerate(names)}
        table = [["score", "mean within-run Spearman", "across-run Spearman (medians)"]]
        table += [[n, f"{within[n]:.3f}", f"{across[n]:.3f}"] for n in names]
        self.sections.setdefault(section, []).append(_html_table(table))
        best_within = max(names, key=lambda n: -1 if math.isnan(within[n]) else within[n])
        best_across = max(names, key=lambda n: -1 if math.isnan(across[n]) else across[n])
        self.text(
            section,
            f"Within a model, {best_within} predicts which inputs PGD damages most "
            f"(mean Spearman {within[best_within]:.2f}); across models, {best_across} best tracks "
            f"the median damage (Spearman {across[best_across]:.2f} over {len(self.rows)} runs).",
        )

    def reference(self) -> None:
        section = "Against the authors' released numbers"
        ours = [
            r
            for r in self.rows
            if not r["mixup"] and r["model"] == "mlp" and "mnist" in r["dataset"] and "fashion" not in r["dataset"]
        ]
        if not ours:
            return
        table = [
            [
                "ref beta",
                "ref entropy",
                "ref lambda_1",
                "ref probe v1 t=0.1/1.06/10",
                "our beta",
                "our entropy (max-normalised)",
                "our lambda_1 mean",
                "our probe v1",
            ]
        ]
        for ref in REFERENCE:
            r = min(ours, key=lambda r: abs(math.log(max(r["beta"], 1e-9)) - math.log(ref["beta"])))
            s = self.samples(r["run"])
            probe = self._probe_at(r["run"], (0.1, 1.06, 10.0))
            table.append(
                [
                    f"{ref['beta']:g}",
                    f"{ref['entropy']:g}",
                    f"{ref['lambda_1']:g}",
                    " / ".join(f"{p:g}" for p in ref["probe"]),
                    f"{r['beta']:.3g} ({r['dataset']})",
                    f"{np.mean(s['entropy_max_stochastic']):.3g}",
                    f"{np.mean(s['rho_stochastic']):.3g}",
                    " / ".join("-" if p is None else f"{p:.3g}" for p in probe),
                ]
            )
        self.sections.setdefault(section, []).append(_html_table(table))
        self.text(
            section,
            "Our row is the run with the nearest beta; architectures, epochs and the data subset "
            "differ from the released setup, so compare trends and orders of magnitude, not digits.",
        )

    def _probe_at(self, run: str, ts: tuple[float, ...]) -> list[float | None]:
        path = self.root / "runs" / run / "audit" / "probe.csv"
        if not path.is_file():
            return [None] * len(ts)
        rows = [r for r in _read_csv(path) if r["direction"] == "v1"]
        return [float(min(rows, key=lambda r: abs(math.log(float(r["t"]) / t)))["mse_mean"]) for t in ts]

    def results_table(self) -> str:
        cols = [
            "run",
            "beta",
            "mixup",
            "seed",
            "test_mse",
            "test_elbo",
            "active_units",
            "rho_median",
            "rho_mean",
            "entropy_median",
            "rho_fisher_median",
            *(f"{m}_kl@{max(self.eps):g}" for m in ("eigen", "pgd", "random")),
        ]
        table = [cols] + [[f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols] for r in self.rows]
        return _html_table(table)

    # -- page -----------------------------------------------------------------------------
    def write(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        for step in (
            self.beta_trends,
            self.probe,
            self.histograms,
            self.mixup,
            self.damage,
            self.validity,
            self.reference,
        ):
            step()
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>vaelens sweep report</title>",
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
            "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
            "img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}figcaption{font-size:13px;color:#555}"
            "</style></head><body>",
            f"<h1>vaelens sweep report</h1><p>{len(self.rows)} runs from <code>{html.escape(str(self.root))}</code>; "
            f"sweep settings: <code>{html.escape(str(self.sweep))}</code></p>",
            "<h2>Summary</h2><ul>",
        ]
        for sentences in (
            self.sections.get("Robustness against beta", []),
            self.sections.get("Mixup against beta", []),
        ):
            parts += [f"<li>{html.escape(s)}</li>" for s in sentences]
        parts.append("</ul><h2>Results</h2>" + self.results_table())
        order = list(dict.fromkeys([f[0] for f in self.figures] + list(self.sections)))
        for section in order:
            parts.append(f"<h2>{html.escape(section)}</h2>")
            for s in self.sections.get(section, []):
                parts.append(s if s.startswith("<table") else f"<p>{html.escape(s)}</p>")
            for sec, caption, path in self.figures:
                if sec == section:
                    data = base64.b64encode(path.read_bytes()).decode("ascii")
                    parts.append(
                        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                    )
        parts.append("</body></html>")
        path = self.root / "report.html"
        write_text(path, "\n".join(parts))
        return path


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(sweep_dir: str | Path) -> Path:
    """Write ``report.html`` (self-contained, figures embedded) and ``report/*.png`` for a sweep."""
    return _Report(Path(sweep_dir)).write()
