"""Run the fixed tiny sweep, its report and a comparison of three of its runs into OUT.

The golden files beside this script were written by the code before issue 20's refactoring
(commit c979a4d), run as ``PYTHONPATH=<that tree>/src python tests/golden/make_golden.py OUT``;
``tests/test_golden.py`` runs the current code the same way and compares the text outputs.
"""

from __future__ import annotations

import re
import shutil
import sys
import warnings
from pathlib import Path

from vaelens.experiments import SweepConfig, compare_runs, run_sweep, write_comparison, write_report

SWEEP = {
    "datasets": ["digits"], "models": ["mlp"], "betas": [0.5, 2.0], "defences": ["none", "mixup", "adversarial"],
    "mixup_betas": [2.0], "seeds": [0], "epochs": 2, "latent_dim": 3, "n": 12, "eps": [0.5], "pgd_steps": 2,
    "probe_n": 4, "adv_steps": 1,
}  # fmt: skip
# the text outputs compared (figures are not: their PNG bytes carry nothing the numbers do not)
FILES = ("results.csv", "report/trend.csv", "compare/comparison.csv", "compare/verdict.txt", "report.txt")


def report_text(html: str) -> str:
    """The report's words and numbers: the HTML without its embedded images and tags."""
    text = re.sub(r'src="data:[^"]*"', "", html)
    text = re.sub(r"<[^>]+>", " ", text)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip()) + "\n"


def main(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    result = run_sweep(SweepConfig.from_dict(SWEEP), out, progress=False)
    assert not result.outcome.failed, result.outcome.failed
    html = write_report(out)
    (out / "report.txt").write_text(report_text(html.read_text(encoding="utf-8")), encoding="utf-8")
    runs = [out / "runs" / name for name in sorted(p.name for p in (out / "runs").iterdir() if "@" not in p.name)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp = compare_runs(runs, n=12, eps=0.5, pgd_steps=2, progress=False)
    write_comparison(comp, out / "compare")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
