"""The Ray executor: a sweep's units as Ray tasks on a local instance or a cluster.

Units are pure functions of their config that write only into their own directory, so each is one
task. A task whose worker dies is retried by Ray (``max_retries``) and the unit resumes from its
last checkpoint; a unit that fails with a ``VaelensError`` is reported, not retried, and the others
go on. The run directories must be on a file system every node sees; a task writes a token into
the sweep directory at start-up and the driver reads it back to check.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelens._configs import check_fields
from vaelens._errors import VaelensError
from vaelens._network import check_reachable, network_timeout
from vaelens._progress import Ticker
from vaelens.experiments._schema import ResultRow
from vaelens.experiments._sweep import SweepConfig, SweepOutcome, Unit, is_finished, run_unit


@dataclass(frozen=True)
class RayOptions:
    """Where and how units run on Ray.

    Arguments:
        address: None starts a private local Ray instance (never joins a running one); "auto"
            connects to the cluster started on this machine with ``ray start --head``; or an
            explicit address such as ``ray://head:10001``.
        unit_cpus: CPUs per unit; torch in the unit uses that many threads.
        unit_gpus: GPUs per unit, fractions allowed (0.25: four units share a GPU); a unit that
            gets a GPU runs on cuda.
        retries: how often a unit whose worker died is retried (it resumes from its checkpoint).
    """

    address: str | None = None
    unit_cpus: float = 1.0
    unit_gpus: float = 0.0
    retries: int = 2

    def __post_init__(self) -> None:
        check_fields(self)
        if self.unit_cpus <= 0 or self.unit_gpus < 0 or self.retries < 0:
            raise VaelensError(
                f"--unit-cpus must be > 0, --unit-gpus >= 0 and --retries >= 0; got "
                f"{self.unit_cpus}, {self.unit_gpus} and {self.retries}"
            )


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise VaelensError("--executor ray needs Ray, which is not installed: pip install 'vaelens[ray]'") from None
    return ray


def _unit_task(sweep: dict, unit: Unit, root: str, cpus: float, gpus: float, attempts: str) -> dict[str, Any]:
    """One unit on a Ray worker. Returns the row, or the user error's message (never retried)."""
    # Ray sets OMP_NUM_THREADS, but a reused worker keeps torch's earlier thread count
    torch.set_num_threads(max(1, int(cpus)))
    log = Path(attempts) / unit.name
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:  # one line per attempt: more than one means the unit was retried
        f.write(f"{os.getpid()}\n")
    device = "cuda" if gpus > 0 and torch.cuda.is_available() else None
    try:
        row = run_unit(SweepConfig.from_dict(sweep), unit, root, device=device)
    except VaelensError as e:
        return {"error": str(e)}
    return {"row": row.record()}


def _write_token(root: str, name: str, token: str) -> str:
    path = Path(root) / name
    path.write_text(token)
    return os.uname().nodename


def _check_shared(ray: Any, root: Path) -> None:
    """A task on every node writes into the sweep directory; the driver must see what each wrote.

    Ray prefers to schedule small tasks on the driver's own node, so one task would prove little:
    each alive node gets its own, pinned there.
    """
    token = uuid.uuid4().hex
    writer = ray.remote(num_cpus=0)(_write_token)
    nodes = [n for n in (ray.nodes() if hasattr(ray, "nodes") else []) if n.get("Alive")]
    if nodes:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        names = [f".ray-shared-check-{token[:12]}-{i}" for i in range(len(nodes))]
        refs = [
            writer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                str(root), name, token
            )
            for n, name in zip(nodes, names, strict=True)
        ]
    else:  # a Ray without node listing: one task
        names = [f".ray-shared-check-{token[:12]}"]
        refs = [writer.remote(str(root), names[0], token)]
    try:
        where = ray.get(refs, timeout=300)
    except Exception as e:  # a worker that cannot write there at all
        msg = " ".join(str(e).split())[-200:]
        raise VaelensError(
            f"a Ray task could not write into {root} ({msg}); put --out on a shared file system"
        ) from None
    for node, name in zip(where, names, strict=True):
        path = root / name
        seen = path.read_text() if path.is_file() else None
        path.unlink(missing_ok=True)
        if seen != token:
            raise VaelensError(
                f"{root} is not shared with the Ray workers: a task on {node} wrote {name} there but this "
                "machine cannot see it; put --out on a file system every node mounts (NFS, a mounted bucket)"
            )


RAY_FIX = (
    "check that `ray start --head` runs there, that the port is open to this machine, and the address "
    "(HOST:PORT of the head, or ray://HOST:10001 for Ray Client)"
)


def check_address(options: RayOptions) -> Any:
    """Ray itself, and a cluster address that answers (within ``vaelens._network``'s timeout);
    returns ray. Called before a command claims its directory."""
    ray = import_ray()
    if options.address not in (None, "auto", "local"):
        check_reachable(options.address, "the Ray cluster", RAY_FIX, grpc=True)
    return ray


def check_ray(sweep: SweepConfig, options: RayOptions) -> Any:
    """Everything the Ray executor needs before a sweep claims its directory: GPUs for a cuda sweep,
    Ray itself and an address that answers. Returns ray."""
    if sweep.device.startswith("cuda") and options.unit_gpus == 0:
        raise VaelensError(
            "--device cuda with the Ray executor needs GPUs per unit: pass --unit-gpus (1, or 0.25 to share one)"
        )
    return check_address(options)


def _start_ray(ray: Any, options: RayOptions) -> bool:
    """Start a private Ray instance, or connect to the named cluster with bounded waits; return
    whether this call started Ray (and so must shut it down). A failed start leaves nothing running."""
    if ray.is_initialized():
        return False
    timeout = str(math.ceil(network_timeout()))  # Ray reads whole seconds
    for name in ("RAY_py_gcs_connect_timeout_s", "RAY_gcs_rpc_server_connect_timeout_s"):
        os.environ.setdefault(name, timeout)  # Ray otherwise retries an address that does not answer for minutes
    try:
        if options.address is None:  # a private instance: never join a cluster the user did not name
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60's token auth guards shared clusters
            ray.init(
                address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                logging_level=logging.WARNING,
            )  # fmt: skip
        else:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
    except BaseException as e:
        ray.shutdown()  # whatever the failed start launched goes with it
        if isinstance(e, (ConnectionError, RuntimeError, ValueError, TimeoutError)):
            msg = " ".join(str(e).split())[:200]
            where = options.address or "a private local instance"
            raise VaelensError(f"cannot start or connect to Ray at {where} ({msg}); {RAY_FIX}") from None
        raise
    return True


def ray_tasks(
    ray: Any, options: RayOptions, root: Path, fn: Callable[..., dict[str, Any]], jobs: list[tuple[str, tuple]],
    on_result: Callable[[str, dict[str, Any]], None],
) -> None:  # fmt: skip
    """Run ``fn(*args)`` as one Ray task per (name, args) job and call ``on_result(name, out)`` as
    each ends, ``out`` being fn's dict or ``{"error": line}`` when Ray gave up on the task.

    Starts (or joins) Ray with bounded waits, checks that ``root`` is shared with every node,
    cancels what is pending on Ctrl-C, and shuts down a Ray instance it started, so no Ray process
    is left behind.
    """
    started = _start_ray(ray, options)
    try:
        _check_shared(ray, root)
        task = ray.remote(fn).options(
            num_cpus=options.unit_cpus, num_gpus=options.unit_gpus, max_retries=options.retries
        )
        pending = {task.remote(*args): name for name, args in jobs}
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    name = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except ray.exceptions.RayError as e:  # retries exhausted, or a crash that is not ours
                        lines = [line for line in str(e).splitlines() if line.strip()]
                        out = {"error": (lines[-1] if lines else type(e).__name__)[:300]}
                    on_result(name, out)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


def run_ray(
    sweep: SweepConfig, units: list[Unit], root: Path, options: RayOptions, overall: Ticker
) -> tuple[list[ResultRow], SweepOutcome]:
    """Every unit as a Ray task: the finished units' rows in grid order, and how each unit ended."""
    ray = check_ray(sweep, options)
    outcome, rows = SweepOutcome(), {}
    attempts = root / ".attempts" / uuid.uuid4().hex[:12]
    jobs = []
    for unit in units:
        if is_finished(root, unit):
            outcome.skipped.append(unit.name)
            rows[unit.name] = run_unit(sweep, unit, root)  # reads its result.json
            overall.tick(unit.name)
            continue
        args = (sweep.to_dict(), unit, str(root), options.unit_cpus, options.unit_gpus, str(attempts))
        jobs.append((unit.name, args))
    overall.flush()

    def ended(name: str, out: dict[str, Any]) -> None:
        if "error" in out:
            outcome.failed[name] = out["error"]
        else:
            rows[name] = ResultRow.from_record(out["row"], sweep.eps)
            outcome.done.append(name)
        overall.tick(name)
        overall.flush()

    if jobs:
        ray_tasks(ray, options, root, _unit_task, jobs, ended)
    for unit in units:
        log = attempts / unit.name
        if log.is_file() and len(log.read_text().split()) > 1:
            outcome.retried.append(unit.name)
    outcome.done.sort(key=[u.name for u in units].index)  # grid order, not finishing order
    return [rows[u.name] for u in units if u.name in rows], outcome
