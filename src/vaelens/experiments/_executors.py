"""Running a sweep: the executors by name, and what every executor shares (the sweep directory,
resumption, results.csv, the summary of what was done, skipped, retried and failed)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vaelens._errors import Interrupted, VaelensError
from vaelens._io import read_json, remove_stale_temps, write_csv, write_json
from vaelens._outputs import check_out_path
from vaelens._progress import Ticker, progress_bar
from vaelens._protocol import resolve_device
from vaelens.experiments._local import run_local
from vaelens.experiments._ray import RayOptions, check_ray, run_ray
from vaelens.experiments._schema import ResultRow
from vaelens.experiments._sweep import SweepConfig, SweepOutcome, Unit, check_units, epoch_rows, is_finished


@dataclass
class SweepResult:
    """What ``run_sweep`` returns: the sweep directory, one ``ResultRow`` per finished unit and
    evaluated epoch (its ``eval_epochs``, then its last) in grid order, and how each unit ended."""

    root: Path
    rows: list[ResultRow] = field(default_factory=list)
    outcome: SweepOutcome = field(default_factory=SweepOutcome)


def _local(
    sweep: SweepConfig, units: list[Unit], root: Path, overall: Ticker, stage: Ticker, jobs: int, _: RayOptions
) -> tuple[list[ResultRow], SweepOutcome]:
    before = {u.name for u in units if is_finished(root, u)}
    rows = run_local(sweep, units, root, jobs, overall, stage)
    outcome = SweepOutcome(done=[u.name for u in units if u.name not in before], skipped=sorted(before))
    return rows, outcome


def _ray(
    sweep: SweepConfig, units: list[Unit], root: Path, overall: Ticker, stage: Ticker, jobs: int, options: RayOptions
) -> tuple[list[ResultRow], SweepOutcome]:
    return run_ray(sweep, units, root, options, overall)


EXECUTORS = {"local": _local, "ray": _ray}


def _check_local(sweep: SweepConfig, _: RayOptions) -> None:
    resolve_device(sweep.device)  # the units run here: the device must exist here


PREFLIGHT = {"local": _check_local, "ray": check_ray}  # what each executor needs before anything is written


def _release(root: Path, created_root: bool) -> None:
    """Undo the claim of a sweep that failed before any unit ran: sweep.json and what the executor
    set up (unit locks, attempt logs), and ``root`` itself if this call created it and it is empty."""
    (root / "sweep.json").unlink(missing_ok=True)
    for name in (".locks", ".attempts"):
        shutil.rmtree(root / name, ignore_errors=True)
    if created_root and not any(root.iterdir()):
        root.rmdir()


def run_sweep(
    sweep: SweepConfig,
    root: str | Path,
    jobs: int = 1,
    progress: bool = True,
    executor: str = "local",
    ray: RayOptions | None = None,
) -> SweepResult:
    """Run (or resume) every unit of a sweep into ``root``; write sweep.json and results.csv.

    Arguments:
        sweep: the sweep.
        root: output directory; running again skips finished units and resumes the others, with
            either executor and on any device.
        jobs: units at once for the local executor (1: in turn, in this process).
        progress: one bar for the sweep (and, run in turn, one for the current stage).
        executor: "local" or "ray".
        ray: Ray settings (address, CPUs and GPUs per unit, retries) for ``executor="ray"``.

    Returns:
        ``SweepResult``; ``.outcome`` says which units were done, skipped, retried or failed.
    """
    if executor not in EXECUTORS:
        raise VaelensError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise VaelensError(f"--jobs must be >= 1; got {jobs}")
    root = check_out_path(root)
    existing = root / "sweep.json"
    if not existing.exists() and root.is_dir() and any(root.iterdir()):
        raise VaelensError(f"{root} is not empty and holds no sweep; choose an empty or new --out")
    if existing.exists():
        previous = SweepConfig.identity_of(read_json(existing))
        mine = sweep.identity()
        if previous != mine:
            changed = sorted(k for k in mine if previous.get(k) != mine[k])
            raise VaelensError(
                f"{root} holds a different sweep (it differs in {', '.join(changed)}); choose another --out"
            )
    units = sweep.units()
    PREFLIGHT[executor](sweep, ray or RayOptions())  # refused before the sweep claims anything
    check_units(sweep, units)
    created_root, claimed = not root.exists(), not existing.exists()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root, ("results.csv", "sweep.json"))  # what a killed sweep left behind
    write_json(existing, sweep.to_dict())
    try:
        rows, outcome = _execute(sweep, units, root, executor, jobs, progress, ray)
    except VaelensError:
        if claimed and not (root / "runs").exists():  # nothing ran: the corrected command must find the --out free
            _release(root, created_root)
        raise
    if sweep.eval_epochs:
        by_unit = {u.name: u for u in units}
        rows = [r for final in rows for r in (*epoch_rows(sweep, root, by_unit[final.run]), final)]
    write_results(root, rows, sweep.eps)
    return SweepResult(root, rows, outcome)


def _execute(
    sweep: SweepConfig, units: list[Unit], root: Path, executor: str, jobs: int, progress: bool, ray: RayOptions | None
) -> tuple[list[ResultRow], SweepOutcome]:
    with progress_bar(progress) as bar:
        overall = Ticker(bar, f"sweep ({executor})", len(units), interval=0.0)
        stage = Ticker(bar, "current run", 0, interval=0.0)
        try:
            return EXECUTORS[executor](sweep, units, root, overall, stage, jobs, ray or RayOptions())
        except KeyboardInterrupt:
            finished = sum(is_finished(root, u) for u in units)
            raise Interrupted(
                f"interrupted: {finished} of {len(units)} runs of the sweep in {root} are finished and saved, "
                "unfinished training is checkpointed; run the same command again to resume"
            ) from None


def write_results(root: Path, rows: list[ResultRow], eps: tuple[float, ...]) -> Path:
    """results.csv: one row per finished run, in grid order."""
    path = root / "results.csv"
    write_csv(path, [r.record() for r in rows], ResultRow.columns(eps))
    return path
