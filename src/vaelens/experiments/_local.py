"""The local executor: a sweep's units in turn in this process, or in a process pool whose workers
die with the sweep (docs/method.md section 7)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from vaelens._progress import Ticker
from vaelens.experiments._schema import ResultRow
from vaelens.experiments._sweep import SweepConfig, Unit, run_unit


def run_local(
    sweep: SweepConfig, units: list[Unit], root: Path, jobs: int, overall: Ticker, stage: Ticker
) -> list[ResultRow]:
    """Every unit, in grid order: in turn (``jobs=1``) or ``jobs`` at a time in worker processes."""
    if jobs == 1:
        rows = []
        for unit in units:
            rows.append(run_unit(sweep, unit, root, stage))
            overall.tick(unit.name)
            overall.flush()
        return rows
    return _run_pool(sweep, units, root, jobs, overall)


def _unit_worker(args: tuple[dict, Unit, str]) -> ResultRow:
    sweep, unit, root = args
    return run_unit(SweepConfig.from_dict(sweep), unit, root)


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker never outlives the sweep that started it.

    On Linux the kernel sends SIGKILL to the worker when its parent dies (PR_SET_PDEATHSIG), also
    when the parent is killed with kill -9; elsewhere a watchdog thread notices the orphaning.
    """
    torch.set_num_threads(1)  # processes share the cores
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:  # pragma: no cover - no glibc
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_pool(sweep: SweepConfig, units: list[Unit], root: Path, jobs: int, overall: Ticker) -> list[ResultRow]:
    """Units in a process pool whose workers die with this process; rows in grid order."""
    # spawn, not fork: forking a process that has started torch's thread pools can deadlock
    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent, initargs=(os.getpid(),),
    )  # fmt: skip
    try:
        rows = []
        for row in pool.map(_unit_worker, [(sweep.to_dict(), u, str(root)) for u in units]):
            rows.append(row)
            overall.tick(row.run)
            overall.flush()
        pool.shutdown()
        return rows
    except BaseException:
        # Ctrl-C or a failed unit: stop at once, do not wait for the other units to finish
        for proc in list(getattr(pool, "_processes", {}).values()):  # this pool's workers, no one else's
            proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
