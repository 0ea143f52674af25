"""Start-up cost of the CLI and the library against ``import torch``, in the same run.

Each command runs in a fresh interpreter; the commands alternate, repeat by repeat, so that drift
in the machine's speed hits all of them alike. Reported: the median wall time of each and its
ratio to the median of ``python -c "import torch"``. Targets (issue 20): ``vaelens --help`` at
most 0.5x, ``import vaelens`` and the whole public API at most 1.35x.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

PY = sys.executable
API = "import vaelens\nfor n in vaelens.__all__: getattr(vaelens, n)"
COMMANDS = {
    "python -c 'import torch' (baseline)": [PY, "-c", "import torch"],
    "vaelens --help": [shutil.which("vaelens") or "vaelens", "--help"],
    "vaelens audit --help": [shutil.which("vaelens") or "vaelens", "audit", "--help"],
    "python -c 'import vaelens'": [PY, "-c", "import vaelens"],
    "import vaelens + every public name": [PY, "-c", API],
}


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for argv in COMMANDS.values():  # warm the file cache once, untimed
        _seconds(argv)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            times[name].append(_seconds(argv))
    base = statistics.median(next(iter(times.values())))
    print(f"| command | median s ({args.repeats} runs) | ratio to import torch |")
    print("| --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
