"""The architecture, checked: no import cycle, layers import only from below, no package reaches
into another's private module, and every "section N" reference resolves in docs/method.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "vaelens"
ROOT = SRC.parents[1]
# The layers, bottom up: a module may import its own package and anything of a lower rank.
RANKS = {
    "base": 0,
    "data": 1,
    "models": 1,
    "adapters": 1,
    "geometry": 2,
    "attacks": 3,
    "training": 4,
    "certification": 4,
    "evaluation": 5,
    "experiments": 6,
    "cli": 7,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The vaelens module an import name refers to (a module, or the package holding an attribute)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """Modules imported at module level (function-local imports are not part of the import graph)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("vaelens"):
                target = _resolve(name)
                if target and target != module:
                    found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        for target in _imports(module, path):
            edges.add(target)
            # importing vaelens.a.b first runs vaelens.a's __init__, unless we are inside vaelens.a
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if not module.startswith(parent + ".") and parent != module:
                    edges.add(parent)
        graph[module] = edges - {"vaelens"}  # the root re-exports; nothing imports it for its own use
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1].startswith("_"):
        return "base"
    return parts[1]


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_layers_import_only_from_below_and_no_private_reach():
    bad = []
    for module, path in MODULES.items():
        if module == "vaelens":
            continue
        mine = _layer(module)
        for target in _imports(module, path):
            theirs = _layer(target)
            if target == "vaelens":
                bad.append(f"{module} imports the root package")
            elif theirs != mine and RANKS[theirs] > RANKS[mine]:
                bad.append(f"{module} ({mine}) imports {target} ({theirs}), a higher layer")
            elif theirs not in ("base", mine) and any(p.startswith("_") for p in target.split(".")[2:]):
                bad.append(f"{module} imports {target}, a private module of another package")
    assert not bad, "\n".join(bad)


def test_the_graph_sees_real_imports():
    """The checks above can fail: the graph holds the edges we know exist."""
    graph = _graph()
    assert "vaelens._protocol" in graph["vaelens.geometry._metric"]
    assert "vaelens.evaluation" in graph["vaelens.experiments._sweep"]
    assert _layer("vaelens.experiments._sweep") == "experiments" and _layer("vaelens._io") == "base"


def test_every_section_reference_resolves():
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^## (\d+)\.", method, flags=re.M))
    assert sections >= {str(i) for i in range(1, 9)}
    refs = 0
    for path in [*SRC.rglob("*.py"), *(ROOT / "tests").glob("*.py"), ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert "PAPER.md" not in text or path.name == "test_layers.py", f"{path} still cites PAPER.md"
        for m in re.finditer(r"method\.md (?:sections?|s\.) ([\d, and-]+)", text):
            for number in re.findall(r"\d+", m.group(1)):
                refs += 1
                assert number in sections, f"{path}: section {number} is not in docs/method.md"
    assert refs > 20
