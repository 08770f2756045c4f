"""The package's layers: data -> nn -> infer -> diagnostics -> prune -> study -> cli, no cycles, no lazy dodges.

Every module is assigned a layer; a module imports (at module level) only modules of its own
layer or below, the module-level import graph has no cycle, and no function imports a
pyrocompress module (the way a cycle is kept open). Functions may import a heavy optional
library (matplotlib, arviz, scikit-learn, ray, onnx) for start-up time, with a comment saying so.
See docs/architecture.md.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pyrocompress"

#: layers, lowest first: (name, module prefixes)
LAYERS = [
    ("base", ("pyrocompress.errors", "pyrocompress._files", "pyrocompress._memory", "pyrocompress._scope",
              "pyrocompress._version", "pyrocompress.names")),
    ("data", ("pyrocompress.data",)),
    ("nn", ("pyrocompress.nn",)),
    ("metrics", ("pyrocompress.metrics",)),
    ("infer", ("pyrocompress.infer", "pyrocompress.runs", "pyrocompress.training")),
    ("diagnostics", ("pyrocompress.diagnostics",)),
    ("prune", ("pyrocompress.prune",)),
    ("study", ("pyrocompress.study",)),
    ("cli", ("pyrocompress.cli", "pyrocompress.api", "pyrocompress.__main__")),
]
#: the command-line modules of the packages belong to the top layer
CLI_MODULES = ("pyrocompress.diagnostics.cli", "pyrocompress.diagnostics.reference_cli", "pyrocompress.prune.cli",
               "pyrocompress.study.cli")
#: libraries a function may import lazily (start-up time), with a comment
HEAVY_OPTIONAL = ("matplotlib", "arviz", "sklearn", "ray", "onnx")
#: function-level imports of pyrocompress modules still allowed (none: the layering is static)
PENDING: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    if module == "pyrocompress" or module in CLI_MODULES:
        return len(LAYERS) - 1
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"module {module} has no layer: add it to LAYERS in tests/test_architecture.py")


def _targets(module: str, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = module.split(".")
        if MODULES[module].name != "__init__.py":
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        package = ".".join(base + ([node.module] if node.module else []))
    else:
        package = node.module or ""
    return [f"{package}.{a.name}" if f"{package}.{a.name}" in MODULES else package for a in node.names]


def _imports(module: str) -> tuple[list[tuple[str, int]], list[tuple[str, int, bool]]]:
    """(module-level imports, function-level imports with whether a comment explains them)."""
    source = MODULES[module].read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    top, lazy = [], []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                line = child.lineno
                commented = "#" in lines[line - 1] or any(text.strip().startswith("#")
                                                          for text in lines[max(0, line - 4):line - 1])
                for t in _targets(module, child):
                    (lazy.append((t, line, commented)) if in_function else top.append((t, line)))
            visit(child, inside)

    visit(tree, False)
    return top, lazy


def _edges() -> dict[str, set[str]]:
    """Module-level import edges between pyrocompress modules, with the package ``__init__`` each import runs
    (not the importing module's own packages: they are already being imported when it runs)."""
    edges: dict[str, set[str]] = {}
    for module in MODULES:
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        for target, _ in _imports(module)[0]:
            if not target.startswith("pyrocompress."):
                continue
            parts = target.split(".")
            implied = {".".join(parts[:i]) for i in range(2, len(parts) + 1)} - own
            edges.setdefault(module, set()).update(t for t in implied if t in MODULES and t != module)
    return edges


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_imports_only_its_layer_and_below(module):
    mine = _layer(module)
    for target, line in _imports(module)[0]:
        if target.startswith("pyrocompress.") and target in MODULES:
            assert _layer(target) <= mine, (f"{module}:{line} imports {target} ({LAYERS[_layer(target)][0]}) from the "
                                            f"{LAYERS[mine][0]} layer below it")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_function_imports_a_pyrocompress_module_or_an_unexplained_library(module):
    for target, line, commented in _imports(module)[1]:
        if target.startswith("pyrocompress"):
            assert (module, target) in PENDING, f"{module}:{line} imports {target} inside a function"
        else:
            root = target.split(".")[0]
            assert root in HEAVY_OPTIONAL, (f"{module}:{line} imports {target} inside a function; import it at the "
                                            f"top (only {HEAVY_OPTIONAL} may wait, for start-up time)")
            assert commented, f"{module}:{line} imports {target} lazily without a comment saying why"


def test_no_import_cycle():
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(MODULES):
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)
