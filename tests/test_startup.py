"""Start-up cost: help answers without torch, and heavy optional libraries load where they are used.

Each check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import vaelens

HEAVY = ("torch", "torchvision", "torchmetrics", "matplotlib", "scipy")
OPTIONAL = ("torchvision", "torchmetrics", "matplotlib", "scipy", "torch._decomp.decompositions_for_jvp")
COMMANDS = ("train", "info", "audit", "attack", "compare", "sweep", "report", "protect", "protect-train", "demo")


def _modules_after(code: str) -> list[str]:
    """The modules loaded after running ``code`` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in COMMANDS)])
def test_help_does_not_import_torch(argv: list[str]) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['vaelens', *{argv!r}]\n"
        "from vaelens.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    loaded = _modules_after(code)
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_help_through_the_console_script() -> None:
    done = subprocess.run(["vaelens", "audit", "--help"], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    assert "--kind" in done.stdout


def test_import_vaelens_loads_nothing_heavy() -> None:
    assert not [m for m in _modules_after("import vaelens") if m.split(".")[0] in HEAVY]


def test_the_library_leaves_optional_modules_unloaded() -> None:
    """Every subpackage and every public name imported: still no torchvision, torchmetrics, ..."""
    code = "import vaelens\nfor name in vaelens.__all__:\n    getattr(vaelens, name)\n"
    code += "import vaelens.cli, vaelens.experiments, vaelens.evaluation, vaelens.models\n"
    loaded = set(_modules_after(code))
    assert "torch" in loaded
    assert not [m for m in OPTIONAL if m in loaded]


def test_every_public_name_resolves() -> None:
    for name in vaelens.__all__:
        assert getattr(vaelens, name) is not None
    assert set(vaelens.__all__) <= set(dir(vaelens))
    with pytest.raises(AttributeError):
        vaelens.no_such_name  # noqa: B018
