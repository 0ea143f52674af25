"""Auditing a VAE's local robustness over many inputs (docs/method.md sections 3-5).

Batch by batch: the spectrum of G(x) for each metric kind, the robustness scores, and, for the
first inputs, the top eigen-directions and the eigen-direction probe. Results go to CSV, JSON and
PNG files, each written atomically.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vaelens._configs import check_fields, check_unique
from vaelens._errors import VaelensError
from vaelens._io import write_csv, write_json
from vaelens._outputs import claim_output, finish_output
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import Kind, prepare_inputs, require_jacobian
from vaelens.evaluation._plots import eigen_directions, histograms, input_layout, probe_curves
from vaelens.evaluation._probe import SCALES, ProbeResult, Scale, eigen_probe
from vaelens.geometry import (
    DEFAULT_MEMORY_BUDGET_GB,
    KINDS,
    NORMALIZATIONS,
    Method,
    Normalization,
    PullbackMetric,
    Scores,
    Spectrum,
    check_kind,
    check_method,
    pullback_metric,
    robustness_scores,
)

SHOWN_DIRECTIONS = 5  # eigen-directions drawn per shown input
SUMMARY_STATS = ("mean", "median", "std", "q05", "q95")  # the columns a printed summary shows


@dataclass(frozen=True)
class AuditConfig:
    """Settings of an audit.

    Arguments:
        kinds: metric kinds to score (docs/method.md section 3).
        batch_size: inputs per batch.
        chunk_size: samples per Jacobian computation inside a batch (None: the whole batch).
        normalize: entropy normalisation, "trace" or "max".
        n_show: inputs whose eigen-directions are drawn.
        probe_n: inputs probed along their eigen-directions (0: no probe).
        probe_directions: top directions probed.
        probe_scale: "lambda" (as released) or "unit".
        seed: seeds the probe's random direction.
        method: "auto", "exact" or "lanczos" (``PullbackMetric.eigen``): "auto" is exact unless the
            exact path would exceed ``memory_budget_gb``. With Lanczos the scores are computed from
            the top ``iters`` eigenvalues only (the spectral radius to Lanczos tolerance; trace, entropy and
            effective rank then cover that part of the spectrum), one ``chunk_size`` (default 1)
            of inputs at a time.
        iters: Lanczos iterations (eigenvalues kept per input).
        memory_budget_gb: the memory the exact path may use.
    """

    kinds: tuple[Kind, ...] = ("stochastic",)
    batch_size: int = 128
    chunk_size: int | None = None
    normalize: Normalization = "trace"
    n_show: int = 4
    probe_n: int = 100
    probe_directions: int = 5
    probe_scale: Scale = "lambda"
    seed: int = 0
    method: Method = "auto"
    iters: int = 30
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB

    def __post_init__(self) -> None:
        check_fields(self)
        object.__setattr__(self, "kinds", tuple(self.kinds))
        check_unique(self.kinds, "kinds")
        if not self.kinds:
            raise VaelensError(f"no metric kind given; choose some of {', '.join(KINDS)}")
        for kind in self.kinds:
            check_kind(kind)
        if self.batch_size < 1:
            raise VaelensError(f"batch_size must be >= 1; got {self.batch_size}")
        if self.normalize not in NORMALIZATIONS:
            raise VaelensError(f"normalize must be one of {NORMALIZATIONS}; got {self.normalize!r}")
        if self.probe_scale not in SCALES:
            raise VaelensError(f"probe_scale must be one of {SCALES}; got {self.probe_scale!r}")
        check_method(self.method)
        if self.iters < 1 or not self.memory_budget_gb > 0:
            raise VaelensError(
                f"iters must be >= 1 and memory_budget_gb > 0; got {self.iters} and {self.memory_budget_gb}"
            )
        if self.probe_directions < 1 or self.probe_n < 0 or self.n_show < 0:
            raise VaelensError("probe_directions must be >= 1 and probe_n, n_show >= 0")


@dataclass
class AuditResult:
    """Per-sample scores for each kind, plus what the figures need."""

    config: AuditConfig
    scores: dict[Kind, Scores]
    labels: torch.Tensor
    shown_inputs: torch.Tensor
    shown: dict[Kind, Spectrum] = field(default_factory=dict)
    probe: ProbeResult | None = None
    methods: dict[Kind, str] = field(default_factory=dict)  # how each kind's spectrum was computed
    layout: str = "image"  # how the figures draw inputs: image, video, audio or volume (``input_layout``)

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """{kind: {score: {mean, median, std, q05, q25, q75, q95}}}."""
        return {kind: scores.summary() for kind, scores in self.scores.items()}


def audit(
    model: torch.nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    config: AuditConfig | None = None,
    progress: bool = True,
) -> AuditResult:
    """Score every input of x under each metric kind, and probe the first ``probe_n`` inputs.

    Arguments:
        model: a VAE.
        x: (N, *input_shape) inputs in [0, 1].
        labels: (N,) optional labels, copied to the CSV.
        config: ``AuditConfig`` (defaults: stochastic kind, batches of 128).
        progress: show a progress bar.

    Returns:
        ``AuditResult`` with per-sample ``Scores`` for each kind: each score an (N,) tensor.

    Examples::

        >>> x, labels = vaelens.data.take(vaelens.data.load_dataset("mnist-5k", "test"), 500)  # (500, 1, 28, 28)
        >>> result = audit(model, x, labels, AuditConfig(kinds=("stochastic", "fisher"), probe_n=100))
        >>> result.scores["fisher"].spectral_radius.shape
        torch.Size([500])
        >>> result.probe.mse.shape                          # (probed inputs, directions, steps)
        torch.Size([100, 5, 40])
        >>> write_audit(result, "audit/")                   # scores.csv, summary.json, PNGs
    """
    config = config or AuditConfig()
    if len(x) == 0:
        raise VaelensError("no inputs to audit; pass at least one")
    require_jacobian(model, "an audit (spectra of G)")
    prepare_inputs(model, x[: config.batch_size])  # fail fast, with the one-line error, on bad input
    labels = torch.full((len(x),), -1) if labels is None else labels
    parts: dict[Kind, list[Scores]] = {kind: [] for kind in config.kinds}
    shown: dict[Kind, Spectrum] = {}
    probe_kind = config.kinds[0]
    probe_n = min(config.probe_n, len(x))  # a probe of more inputs than there are probes them all
    probe_spectrum: Spectrum | None = None
    methods: dict[Kind, Literal["exact", "lanczos"]] = {}
    n_batches = math.ceil(len(x) / config.batch_size)
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "auditing", n_batches * len(config.kinds), interval=0.0)
        for start in range(0, len(x), config.batch_size):
            xb = prepare_inputs(model, x[start : start + config.batch_size])
            for kind in config.kinds:
                metric = pullback_metric(model, xb, kind, config.chunk_size, config.memory_budget_gb)
                if kind not in methods:  # chosen once, at the first (largest) batch: one method per kind
                    methods[kind] = metric.resolve_method(config.method)
                method = methods[kind]
                if method == "lanczos":
                    parts[kind].append(_lanczos_scores(metric, config, bar, start, len(x)))
                else:
                    parts[kind].append(robustness_scores(metric.eigenvalues(method="exact"), config.normalize))
                if start == 0:  # eigenvectors only for the inputs drawn or probed, from the cached factor
                    probed = probe_n if kind == probe_kind and probe_n <= len(xb) else 0
                    drawn, for_probe = _first_spectra(metric, method, config, probed)
                    shown.update({kind: drawn} if drawn is not None else {})
                    probe_spectrum = for_probe if for_probe is not None else probe_spectrum
                ticker.tick(f"{kind} {min(start + config.batch_size, len(x))}/{len(x)}")
        ticker.flush()
        probe = _probe(model, x[:probe_n], probe_kind, config, probe_spectrum, bar) if probe_n else None
    return AuditResult(
        config,
        {kind: Scores.concat(p) for kind, p in parts.items()},
        labels.cpu(),
        x[: config.n_show].detach().cpu(),
        shown,
        probe,
        dict(methods),
        input_layout(model, x.dim() - 1),
    )


def _first_spectra(
    metric: PullbackMetric, method: Literal["exact", "lanczos"], config: AuditConfig, probed: int
) -> tuple[Spectrum | None, Spectrum | None]:
    """The eigenpairs of the first inputs: those drawn (``n_show``) and those probed (``probed``),
    one computation for both, from the metric's cached factor."""
    rows = max(config.n_show, probed)
    if not rows:
        return None, None
    r = min(metric.rank_bound, max(SHOWN_DIRECTIONS, config.probe_directions))
    if method == "lanczos":
        r = min(r, config.iters)
    spec = metric[:rows].eigen(r, method, max(config.iters, r), config.seed)
    values, vectors = spec.values, spec.require_vectors()  # (rows, r), (rows, r, *s)
    n = config.n_show
    drawn = Spectrum(values[:n].cpu(), vectors[:n].cpu(), metric.kind) if n else None
    # the probe reuses these eigenpairs instead of recomputing them
    return drawn, Spectrum(values[:probed], vectors[:probed], metric.kind) if probed else None


def _probe(
    model: torch.nn.Module, x: torch.Tensor, kind: Kind, config: AuditConfig, spectrum: Spectrum | None, bar: Any
) -> ProbeResult:
    """The eigen-direction probe of x (P, *s) along the given eigenpairs (computed here if None:
    more probed inputs than one batch)."""
    xp = prepare_inputs(model, x)
    if spectrum is None:
        metric = pullback_metric(model, xp, kind, config.chunk_size)
        spectrum = metric.eigen(min(config.probe_directions, metric.rank_bound))
    task = Ticker(bar, f"probing {kind}", 1, interval=0.0)
    directions = min(config.probe_directions, spectrum.values.shape[1])
    probe = eigen_probe(model, xp, kind, directions=directions, scale=config.probe_scale, seed=config.seed,
                        spectrum=spectrum)  # fmt: skip
    task.tick()
    task.flush()
    return probe


def _lanczos_scores(metric: PullbackMetric, config: AuditConfig, bar: Any, start: int, total: int) -> Scores:
    """Scores from the top Lanczos eigenvalues, a chunk of inputs at a time, with progress per chunk."""
    step = config.chunk_size or 1
    need = metric.lanczos_bytes(config.iters, min(step, len(metric)))
    if need > config.memory_budget_gb * 2**30:  # large videos and volumes: say so before running out
        raise VaelensError(
            f"Lanczos with {config.iters} iterations on {min(step, len(metric))} input(s) of shape "
            f"{metric.input_shape} holds about {need / 2**30:.2f} GiB, over --memory-gb "
            f"{config.memory_budget_gb:g}; lower --iters or --chunk-size, or raise --memory-gb"
        )
    r = min(metric.rank_bound, config.iters)
    task = Ticker(bar, f"lanczos {metric.kind}", len(metric), interval=0.0)
    parts = []
    for i in range(0, len(metric), step):
        values = metric[i : i + step].lanczos(r, config.iters, config.seed, vectors=False).values
        parts.append(robustness_scores(values, config.normalize))
        task.tick(f"image {start + min(i + step, len(metric))}/{total}", min(step, len(metric) - i))
    task.flush()
    return Scores.concat(parts)


def audit_output(config: AuditConfig, meta: dict | None = None) -> dict:
    """What an audit's output directory is claimed with: its config and where its inputs came from."""
    return {"audit": _config_dict(config), **(meta or {})}


def write_audit(
    result: AuditResult, out: str | Path, meta: dict | None = None, overwrite: bool = False
) -> dict[str, Path]:
    """Write an audit's files into ``out``, as one set; return {name: path}.

    Files: scores.csv (one row per input and kind), summary.json, histograms.png,
    eigen_directions.png (per kind, for the first inputs), probe.csv and probe.png, and the
    directory's marker, written last (``vaelens._outputs``). A directory another command or
    another audit wrote is refused unless ``overwrite``.
    """
    out = claim_output(out, "audit", audit_output(result.config, meta), overwrite)
    paths: dict[str, Path] = {}
    names = Scores.names()
    rows = []
    for kind, scores in result.scores.items():
        cols = {n: getattr(scores, n).double().numpy() for n in names}
        for i in range(len(result.labels)):
            rows.append(
                {
                    "index": i,
                    "label": int(result.labels[i]),
                    "kind": kind,
                    **{n: float(cols[n][i]) for n in names},
                }
            )
    paths["scores"] = out / "scores.csv"
    write_csv(paths["scores"], rows, ["index", "label", "kind", *names])
    paths["summary"] = out / "summary.json"
    write_json(
        paths["summary"],
        {
            "config": _config_dict(result.config),
            "n": len(result.labels),
            "methods": result.methods,
            **(meta or {}),
            "summary": result.summary(),
        },
    )
    paths["histograms"] = out / "histograms.png"
    histograms(
        {
            k: {n: getattr(s, n).double().numpy() for n in ("spectral_radius", "von_neumann_entropy")}
            for k, s in result.scores.items()
        },
        paths["histograms"],
    )
    for kind, spec in result.shown.items():
        top = spec.top(SHOWN_DIRECTIONS)
        name = "eigen_directions" if kind == result.config.kinds[0] else f"eigen_directions_{kind}"
        paths[name] = out / f"{name}.png"
        eigen_directions(result.shown_inputs, top.values, top.require_vectors(), kind, paths[name], result.layout)
    if result.probe is not None:
        paths["probe_csv"] = out / "probe.csv"
        write_csv(paths["probe_csv"], result.probe.rows(), ["direction", "t", "mse_mean", "mse_median"])
        paths["probe"] = out / "probe.png"
        probe_curves(result.probe, paths["probe"])
    finish_output(out, [p.name for p in paths.values()])
    return paths


def _config_dict(config: AuditConfig) -> dict:
    d = asdict(config)
    d["kinds"] = list(config.kinds)
    return d
