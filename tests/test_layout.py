"""The package's shape: one direction of dependency, no import cycles, no borrowed private names,
and ``import affbatch`` light. Checked on the source (AST), so lazy imports inside functions
count as much as those at the top."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("affbatch", "engines", "training", "bench")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, name: str) -> list[tuple[str, str | None, bool]]:
    """(module imported, name imported from it or None, under TYPE_CHECKING) for every import."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only |= {id(n) for child in node.body for n in ast.walk(child)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, id(node) in typing_only) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found += [(base, a.name, id(node) in typing_only) for a in node.names]
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a ``from package import submodule`` counts as the
    submodule; importing ``a.b.c`` runs ``a`` and ``a.b`` too, but those are the package's own
    concern, so only the module named is an edge)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        out = set()
        for module, imported, typing_only in imports(path, name):
            if typing_only:
                continue
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in known else module
            if target in known and target != name:
                out.add(target)
        edges[name] = out
    return edges


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_dependencies_go_one_way():
    """engines imports neither affbatch nor training; affbatch never imports training or bench."""
    for name, targets in graph().items():
        top = name.split(".")[0]
        bad = {t for t in targets if (top == "engines" and t.split(".")[0] in ("affbatch", "training", "bench"))}
        bad |= {t for t in targets if top == "affbatch" and t.split(".")[0] in ("training", "bench")}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_no_module_imports_another_modules_private_names():
    known = modules()
    borrowed = []
    for name, path in list(known.items()) + [(module_name(p), p) for p in sorted((ROOT / "scripts").glob("*.py"))]:
        for module, imported, _ in imports(path, name):
            if imported and imported.startswith("_") and not imported.startswith("__") and module != name:
                borrowed.append(f"{name} imports {module}.{imported}")
    assert borrowed == []


def test_test_generators_are_not_in_the_wheel():
    assert not (ROOT / "affbatch" / "synthetic.py").exists()
    assert (ROOT / "tests" / "support" / "coded_clips.py").exists()


@pytest.mark.parametrize("module", ["affbatch", "affbatch.run", "affbatch.cli"])
def test_import_is_light(module):
    """No torch, ONNX Runtime or GPU library at import: ``--model none`` and ``info`` of a
    broken install still start, and ``import affbatch`` costs little."""
    code = (
        f"import sys, {module}\n"
        "heavy = ('torch', 'onnxruntime', 'tensorrt', 'nvidia.dali', 'openvino', 'ray')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_public_api_names():
    import affbatch

    for name in (
        "Scorer",
        "ScoreOptions",
        "VideoResult",
        "evaluate",
        "ccc",
        "AffbatchError",
        "UsageError",
        "VideoError",
    ):
        assert name in affbatch.__all__ and getattr(affbatch, name) is not None
