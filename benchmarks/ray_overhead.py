"""Overhead of the Ray executor against the local one, on the same 8-unit digits sweep, in one run.

Both run `vaelens sweep` as a user would, from the command line, on this machine: the local
executor in turn (one unit at a time, all cores), the Ray executor on a private local instance with
one CPU per unit (two units at a time on two cores). Reported: wall time of each, their ratio, and
the per-unit scheduling overhead of Ray, estimated as (Ray wall time x concurrent units - local wall
time) / units, which charges Ray for everything beyond the work itself (instance start-up, the
shared-file-system check, task dispatch, result collection).

    python benchmarks/ray_overhead.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXE = str(Path(sys.executable).parent / "vaelens")
SWEEP = ["sweep", "--dataset", "digits", "--betas", "0.25,0.5,1,2", "--mixup", "both", "--epochs", "5",
         "--n", "100", "--eps", "0.5,1", "--steps", "20", "--latent-dim", "4", "--quiet"]  # 8 units  # fmt: skip
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def timed(args: list[str]) -> float:
    tic = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    local, ray = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            local.append(timed([EXE, *SWEEP, "--out", f"{tmp}/local"]))
            ray.append(timed([EXE, *SWEEP, "--out", f"{tmp}/ray", "--executor", "ray", "--unit-cpus", "1"]))
            same = Path(f"{tmp}/local/results.csv").read_text() == Path(f"{tmp}/ray/results.csv").read_text()
    lo, ra = statistics.median(local), statistics.median(ray)
    concurrent = os.cpu_count() or 1
    overhead = (ra * concurrent - lo) / 8
    print(f"8-unit digits sweep, {args.repeats} repeats (medians), {concurrent} cores")
    print(f"local executor (in turn)        {lo:7.1f} s")
    print(f"ray executor (1 CPU per unit)   {ra:7.1f} s   ratio {ra / lo:.2f}")
    print(f"per-unit Ray overhead           {overhead:7.2f} s   (charged: wall x {concurrent} - local, / 8 units)")
    print(f"identical results.csv           {same}")


if __name__ == "__main__":
    main()
