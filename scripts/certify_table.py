"""Tables for RESULTS.md from a `scripts/certify_study.sh` directory: per model, defence, sigma,
output and eps, medians over seeds of the per-run medians (abstain rate: mean over seeds)."""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def _fmt(value: float, spec: str, suffix: str = "") -> str:
    return "-" if value != value else f"{value:{spec}}{suffix}"


def _med(values: list[float]) -> float:
    finite = [v for v in values if v is not None and v == v]
    return statistics.median(finite) if finite else float("nan")


def main(root: Path) -> None:
    cells: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    costs: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(root.glob("runs/*/certify-sigma*/summary.json")):
        model, defence, _ = path.parent.parent.name.split("_")
        for o in json.loads(path.read_text())["outputs"]:
            key = (model, defence, o["sigma"], o["output"])
            costs[key]["smoothed"].append(o["recon_mse"])
            costs[key]["base"].append(o["base_recon_mse"])
            costs[key]["seeds"].append(path)
            for r in o["per_eps"]:
                c = cells[(*key, r["eps"])]
                for name in ("median_bound", "median_bound_rms", "abstain_rate", "median_attacked", "median_gap",
                             "median_predicted", "exceeded"):  # fmt: skip
                    c[name].append(r[name])
    print("| model | defence | sigma | output | eps | seeds | median bound | per pixel | abstain | attacked "
          "| gap (certified / attacked) | sqrt(l1) eps (base) | attacks over the bound |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (model, defence, sigma, output, eps), c in sorted(cells.items()):
        rms = _fmt(_med(c["median_bound_rms"]), ".4g") if output == "recon" else ""
        print(f"| {model} | {defence} | {sigma:g} | {output} | {eps:g} | {len(c['abstain_rate'])} "
              f"| {_fmt(_med(c['median_bound']), '.4g')} | {rms} | {100 * statistics.mean(c['abstain_rate']):.0f}% "
              f"| {_fmt(_med(c['median_attacked']), '.4g')} | {_fmt(_med(c['median_gap']), '.3g', 'x')} "
              f"| {_fmt(_med(c['median_predicted']), '.4g')} | {sum(c['exceeded'])} |")  # fmt: skip
    print()
    print("| model | defence | sigma | center chosen in | recon MSE, base | recon MSE, smoothed | cost |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (model, defence, sigma, output), c in sorted(costs.items()):
        base, smoothed = _med(c["base"]), _med(c["smoothed"])
        print(f"| {model} | {defence} | {sigma:g} | {output} | {base:.4g} | {smoothed:.4g} | {smoothed / base:.2f}x |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "certify-study"))
