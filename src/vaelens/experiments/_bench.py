"""``vaelens bench``: every entry measured under one protocol, and the leaderboard built from the
measurements (docs/method.md section 11).

An entry is a zoo family (``vaelens bench train-zoo``) or a submitted model (``--model SPEC``). Per
entry and seed: the reconstruction (test MSE, MS-SSIM), the spectra (rho(G) of the stochastic,
fisher and output kinds; mean and output for deterministic encoders), the strongest ensemble's
damage at every budget, the center-smoothing certificate, and the training cost. Each (entry, seed)
is written to its own file when measured, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelens._errors import VaelensError
from vaelens._io import atomic_write, fault_point, read_json, write_json
from vaelens._outputs import check_out_path
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import decode, encode, geometry_base, is_deterministic, prepare_inputs
from vaelens.experiments._bench_protocol import BenchProtocol, cell, entry_dir, get_protocol, versions
from vaelens.experiments._zoo import ZooMember, read_member, resolve_spec

MEASURES = ("recon_shift", "kl", "latent_l2")  # damage measures kept per budget; recon_shift is the headline's


@dataclass(frozen=True)
class Entry:
    """One leaderboard entry: its name, family, where it came from, and its model spec per seed."""

    name: str
    family: str
    source: str  # vaelens, pythae or submitted
    specs: dict[int, str]
    beta: float = math.nan
    defence: str = "none"
    train_seconds: dict[int, float] = field(default_factory=dict)
    parameters: int = 0

    @property
    def on_frontier_curve(self) -> bool:
        """Whether this entry draws the beta curve: vaelens' plain beta-VAEs."""
        return self.source == "vaelens" and self.defence == "none"


def zoo_entries(zoo: str | Path, protocol: BenchProtocol) -> list[Entry]:
    """The finished members of a zoo directory, one entry per family; a one-line error for a
    missing zoo or one trained under another protocol."""
    root = Path(zoo)
    if not (root / "zoo.json").is_file():
        raise VaelensError(f"{root} holds no zoo (zoo.json); train one with vaelens bench train-zoo --out {root}")
    version = read_json(root / "zoo.json").get("protocol", {}).get("version")
    if version != protocol.version:
        raise VaelensError(f"{root} was trained under protocol {version}, not {protocol.version}; retrain it")
    out = []
    for family in protocol.families():
        records = [r for s in protocol.seeds if (r := read_member(root, ZooMember(family, s))) is not None]
        if not records:
            continue
        first = records[0]
        out.append(Entry(
            family, family, first["source"], {r["seed"]: resolve_spec(r["spec"], root) for r in records},
            _number(first["beta"]), first["defence"], {r["seed"]: _number(r["train_seconds"]) for r in records},
            int(first["parameters"]),
        ))  # fmt: skip
    return out


def _number(value: Any) -> float:
    """A number read back from JSON, where NaN is written as null."""
    return math.nan if value is None else float(value)


def _named(spec: str) -> bool:
    """Whether a ``--model`` is ``NAME=SPEC``: a plain name before the first "=" (no ":" or "/")."""
    label, eq, _ = spec.partition("=")
    return bool(eq and label) and not any(c in label for c in ":/")


def submitted_entry(spec: str, protocol: BenchProtocol) -> Entry:
    """A ``--model [NAME=]SPEC`` entry: the same model at every seed (the seed drives the attacks and
    the certificate's sampling); its training cost is unknown. NAME defaults to the spec's last part."""
    from vaelens.experiments._models import is_run_spec

    if _named(spec):
        label, _, rest = spec.partition("=")
        if label.strip(". ") == "" or "\\" in label or label != label.strip():
            raise VaelensError(f"--model {spec}: {label!r} cannot name an entry (it names its folder); use letters")
        entry = submitted_entry(rest, protocol)
        return Entry(label, label, "submitted", entry.specs)

    if is_run_spec(spec) and not Path(spec.split("@")[0]).is_dir():
        raise VaelensError(f"--model {spec}: no such run directory; give a run directory or a model spec")
    short = spec.rstrip("/").rsplit("/", 1)[-1]
    name = f"submitted:{short}" if ":" not in short else short
    return Entry(name, name, "submitted", dict.fromkeys(protocol.seeds, spec))


def test_inputs(protocol: BenchProtocol) -> torch.Tensor:
    """The protocol's first n test inputs, (n, *input_shape) in [0, 1]."""
    from vaelens.data import load_dataset, take

    return take(load_dataset(protocol.dataset, "test"), protocol.n_test)[0]


def evaluate(
    protocol: BenchProtocol, entry: Entry, seed: int, x: torch.Tensor, figure: Path | None = None
) -> dict[str, Any]:
    """One (entry, seed) measured under the protocol: a flat record of named figures."""
    from vaelens.adapters import FlowPosteriorWarning
    from vaelens.experiments._models import load_model

    start = time.perf_counter()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlowPosteriorWarning)  # noted in docs/method.md section 11
        model = load_model(entry.specs[seed])
    base = geometry_base(model) or model
    deterministic = is_deterministic(base)
    x = _protocol_inputs(protocol, model, x, entry.name)
    record: dict[str, Any] = {
        "entry": entry.name, "family": entry.family, "source": entry.source, "seed": seed, "spec": entry.specs[seed],
        "beta": entry.beta, "defence": entry.defence, "deterministic": deterministic, "protocol": protocol.version,
        **{f"{k}_version": v for k, v in versions().items()},
        "train_seconds": entry.train_seconds.get(seed, math.nan), "parameters": entry.parameters,
    }  # fmt: skip
    record.update(_reconstruction(model, x))
    record.update(_spectra(base, x, deterministic))
    record.update(_attacks(protocol, model, x, seed, figure))
    record.update(_certificate(protocol, base, x, seed))
    record["eval_seconds"] = time.perf_counter() - start
    return record


def _protocol_inputs(protocol: BenchProtocol, model: torch.nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The protocol's inputs as the model takes them; a model of another shape is refused in one line
    that says what bench can do (it has no --channels or --image-size: the protocol fixes the inputs)."""
    try:
        return prepare_inputs(model, x, name)
    except VaelensError as e:
        raise VaelensError(
            f"{str(e).split('; ')[0]}; protocol {protocol.version} measures every entry on the same "
            f"{protocol.dataset} inputs {tuple(x.shape[1:])}: submit a model that takes them"
        ) from None


def _check_submitted(protocol: BenchProtocol, entries: list[Entry], x: torch.Tensor) -> None:
    """Load each submitted model once and check it takes the protocol's inputs, before ``--out`` is
    claimed: a model that cannot load or cannot take them is refused in one line, claiming nothing."""
    from vaelens.adapters import FlowPosteriorWarning
    from vaelens.experiments._models import load_model

    for entry in entries:
        if entry.source == "submitted":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FlowPosteriorWarning)
                model = load_model(next(iter(entry.specs.values())))
            _protocol_inputs(protocol, model, x[:1], entry.name)
            del model


@torch.no_grad()
def _reconstruction(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    from vaelens.attacks import ms_ssim

    recon = decode(model, encode(model, x).mu).clamp(0, 1)  # (N, *s)
    return {"test_mse": (recon - x).square().mean().item(), "ms_ssim": ms_ssim(recon, x).mean().item()}


def _spectra(base: torch.nn.Module, x: torch.Tensor, deterministic: bool) -> dict[str, float]:
    """Median rho(G) per metric kind: stochastic, fisher, output (mean, output when deterministic)."""
    from vaelens.evaluation import AuditConfig, audit

    kinds: tuple[Any, ...] = ("mean", "output") if deterministic else ("stochastic", "fisher", "output")
    config = AuditConfig(kinds=kinds, batch_size=64, n_show=0, probe_n=0)
    scores = audit(base, x, config=config, progress=False).scores
    out = {f"rho_{k}": math.nan for k in ("stochastic", "fisher", "output", "mean")}
    for kind, s in scores.items():
        out[f"rho_{kind}"] = float(np.median(s.spectral_radius.double().numpy()))
    return out


def _attacks(
    protocol: BenchProtocol, model: torch.nn.Module, x: torch.Tensor, seed: int, figure: Path | None
) -> dict[str, float]:
    """The strongest ensemble on the protocol's objective at every budget: mean damage per measure."""
    from vaelens.evaluation import AttackSpec, attack_sweep

    out: dict[str, float] = {}
    for norm, budgets in (("l2", protocol.l2_budgets), ("linf", protocol.linf_budgets)):
        spec = AttackSpec("strongest", norm, "recon", protocol.pgd_steps, seed=seed)  # type: ignore[arg-type]
        shown = 4 if figure is not None and norm == "l2" else 0
        result = attack_sweep(model, x, list(budgets), spec, batch_size=64, n_show=shown, progress=False)
        for eps, damage in zip(budgets, result.damage, strict=True):
            values = damage.as_dict()
            for measure in MEASURES:
                out[cell(measure, norm, eps)] = values[measure].double().mean().item()
        if shown:
            assert figure is not None
            _adversarial_figure(model, result.shown, result.shown_adv, max(budgets), figure)
    return out


def _certificate(protocol: BenchProtocol, base: torch.nn.Module, x: torch.Tensor, seed: int) -> dict[str, float]:
    """Center smoothing's certified bound on the latent center's shift, per certified budget: the median
    over the inputs where it answers, and the share where it abstains."""
    from vaelens.certification import certify

    cert = certify(
        base, x, list(protocol.cert_budgets), protocol.cert_sigma, protocol.cert_n, protocol.cert_n0,
        protocol.cert_alpha, seed=seed, batch_size=16,
    )  # fmt: skip
    out = {}
    for j, eps in enumerate(protocol.cert_budgets):
        bound = cert.bound[:, j].double()
        answered = bound[~bound.isnan()]
        out[cell("cert_bound", "l2", eps)] = answered.median().item() if len(answered) else math.nan
        out[cell("cert_abstain", "l2", eps)] = bound.isnan().double().mean().item()
    return out


def _adversarial_figure(
    model: torch.nn.Module, shown: torch.Tensor, shown_adv: torch.Tensor, eps: float, path: Path
) -> None:
    """A PNG grid: rows input, adversarial (at ``eps``), reconstruction, adversarial reconstruction;
    one column per input, small images enlarged to at least 64 pixels (nearest neighbour)."""
    from PIL import Image

    with torch.no_grad():
        recons = [decode(model, encode(model, prepare_inputs(model, t)).mu) for t in (shown, shown_adv)]
    rows = [t.detach().double().cpu().clamp(0, 1) for t in (shown, shown_adv, *recons)]  # 4 x (n, C, H, W)
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (C, 4H, nW)
    pixels = (grid * 255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels[:3].transpose(1, 2, 0))
    scale = max(1, 64 // shown.shape[-1])
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def seed_file(root: Path, entry: Entry, seed: int) -> Path:
    return entry_dir(root, entry.name) / f"seed{seed}.json"


@dataclass
class BenchRun:
    """What ``run_bench`` returns: the output directory, every measured record, the leaderboard,
    and which (entry, seed) were measured now, found measured, or failed (one line each)."""

    root: Path
    records: list[dict[str, Any]]
    board: Any  # a Leaderboard
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run_bench(
    protocol: str | BenchProtocol,
    out: str | Path,
    zoo: str | Path | None = None,
    models: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> BenchRun:
    """Measure every entry (the zoo's families and the submitted models) under the protocol into
    ``out``; write leaderboard.csv, leaderboard.json and index.html. Resumes: a measured (entry,
    seed) is read back, not measured again.

    Arguments:
        protocol: a protocol or its name ("v1", "tiny").
        out: the output directory.
        zoo: a directory written by ``train_zoo`` under the same protocol.
        models: submitted model specs (``RUN``, ``pythae:DIR``, ``smooth:SIGMA:SPEC``, ...).
    """
    from vaelens.experiments._leaderboard import build_leaderboard, findings
    from vaelens.experiments._leaderboard_page import write_page, write_tables
    from vaelens.experiments._models import check_not_model

    protocol = get_protocol(protocol)
    if zoo is None and not models:
        raise VaelensError("nothing to benchmark: give --zoo DIR (from vaelens bench train-zoo) or --model SPEC")
    entries = (zoo_entries(zoo, protocol) if zoo is not None else []) + [submitted_entry(m, protocol) for m in models]
    if not entries:
        raise VaelensError(f"{zoo} holds no finished member; run vaelens bench train-zoo --out {zoo} first")
    names = [e.name for e in entries]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise VaelensError(f"two entries are named {', '.join(twice)}; name submissions with --model NAME=SPEC")
    folders = [entry_dir(Path(out), n).name for n in names]  # '/' and ':' become '_': names may meet there
    clash = sorted({n for n, f in zip(names, folders, strict=True) if folders.count(f) > 1})
    if clash:
        raise VaelensError(
            f"the entries {', '.join(clash)} would share one folder of measurements; name submissions with "
            "--model NAME=SPEC"
        )
    for spec in models:
        check_not_model(out, spec.partition("=")[2] if _named(spec) else spec)  # never into a model's folder
    x = test_inputs(protocol)
    _check_submitted(protocol, entries, x)
    root = _claim(Path(out), protocol)
    run = BenchRun(root, [], None)
    with progress_bar(progress) as bar:
        ticker = Ticker(bar, "bench", sum(len(e.specs) for e in entries), interval=0.0)
        for entry in entries:
            for seed in entry.specs:
                run.records.extend(_measured(protocol, entry, seed, x, root, run))
                ticker.tick(f"{entry.name} seed {seed}")
                ticker.flush()
            write_tables(root, protocol, build_leaderboard(protocol, run.records))  # after each entry
    run.board = build_leaderboard(protocol, run.records)
    write_page(root / "index.html", protocol, run.board, findings(run.board))
    return run


def _measured(
    protocol: BenchProtocol, entry: Entry, seed: int, x: torch.Tensor, root: Path, run: BenchRun
) -> list[dict[str, Any]]:
    path = seed_file(root, entry, seed)
    label = f"{entry.name}/seed{seed}"
    found = _read_measured(path, protocol, entry, seed)
    if found is not None:
        run.skipped.append(label)
        return [found]
    try:
        record = evaluate(protocol, entry, seed, x, path.with_suffix(".png"))
    except VaelensError as e:
        run.failed[label] = str(e)
        return []
    except (RuntimeError, ValueError, TypeError, IndexError) as e:  # a submitted model that fails on the inputs
        msg = " ".join(str(e).split())[:200]
        run.failed[label] = f"the model fails on the protocol's inputs ({type(e).__name__}: {msg})"
        return []
    write_json(path, record)
    fault_point("bench-measured")  # the kill test stops a run here, after an (entry, seed) is saved
    run.done.append(label)
    return [record]


def _record_keys(protocol: BenchProtocol) -> set[str]:
    """The keys every measured record holds (``evaluate``); the leaderboard reads all of them."""
    cells = [cell(m, norm, eps) for norm, budgets in (("l2", protocol.l2_budgets), ("linf", protocol.linf_budgets))
             for eps in budgets for m in MEASURES]  # fmt: skip
    certs = [cell(c, "l2", eps) for eps in protocol.cert_budgets for c in ("cert_bound", "cert_abstain")]
    return {"entry", "family", "source", "seed", "beta", "defence", "protocol", "test_mse", *cells, *certs}


def _read_measured(path: Path, protocol: BenchProtocol, entry: Entry, seed: int) -> dict[str, Any] | None:
    """The record of (entry, seed) measured earlier, or None when there is none or the file does not
    read as one (garbled or cut by hand: the bench's own file, measured again and replaced)."""
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except VaelensError:
        return None
    if not _record_keys(protocol) <= set(record) or (record["entry"], record["seed"]) != (entry.name, seed):
        return None
    return {k: math.nan if v is None else v for k, v in record.items()}


def _claim(root: Path, protocol: BenchProtocol) -> Path:
    """The output directory, claimed for this protocol: a one-line error if it holds another's."""
    marker = check_out_path(root) / "bench.json"
    if marker.is_file():
        version = read_json(marker).get("protocol", {}).get("version")
        if version != protocol.version:
            raise VaelensError(f"{root} holds a benchmark under protocol {version}; choose another --out")
    elif root.is_dir() and any(root.iterdir()):
        raise VaelensError(f"{root} is not empty and holds no benchmark; choose an empty or new --out")
    write_json(marker, {"protocol": protocol.to_dict(), "versions": versions()})
    return root
