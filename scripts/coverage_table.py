"""Regenerate the README's coverage table from the adapter registry (vaelens.adapters._registry).

python scripts/coverage_table.py          # rewrites README.md between the coverage markers
python scripts/coverage_table.py --check  # exits 1 if README.md is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from vaelens.adapters import coverage_table

README = Path(__file__).resolve().parents[1] / "README.md"
MARKED = re.compile(r"(<!-- coverage:start -->\n)(.*?)(<!-- coverage:end -->)", re.S)


def main() -> int:
    text = README.read_text()
    if not MARKED.search(text):
        print("README.md has no <!-- coverage:start --> ... <!-- coverage:end --> markers", file=sys.stderr)
        return 1
    new = MARKED.sub(lambda m: m.group(1) + coverage_table() + m.group(3), text)
    if "--check" in sys.argv:
        return int(new != text)
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
