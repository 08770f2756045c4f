"""pyproject.toml tells the truth: every library the package imports is declared, Python 3.10 gets the tomli
backport of tomllib, and the test extras install every optional backend (so CI tests Ray and ONNX)."""
import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"pyro": "pyro-ppl", "sklearn": "scikit-learn", "yaml": "pyyaml"}
#: imported only inside the functions of an optional extra
OPTIONAL = {"ray", "onnx", "onnxscript", "onnxruntime"}


def _names(requirements):
    return {re.split(r"[<>=!;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def _third_party_imports():
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for path in (ROOT / "pyrocompress").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top and top not in stdlib and top != "pyrocompress":
                    found.add(top)
    return found


def test_every_imported_library_is_declared():
    declared = _names(PROJECT["dependencies"])
    missing = sorted(DISTRIBUTIONS.get(m, m) for m in _third_party_imports() - OPTIONAL
                     if DISTRIBUTIONS.get(m, m) not in declared)
    assert not missing, f"imported but not in [project] dependencies: {missing}"
    assert "scipy" in declared


def test_python_310_gets_the_tomllib_backport():
    assert PROJECT["requires-python"] == ">=3.10"
    assert any(r.startswith("tomli") and "python_version < '3.11'" in r for r in PROJECT["dependencies"])


@pytest.mark.parametrize("package", ["pytest", "ray", "onnx", "onnxscript", "onnxruntime"])
def test_the_test_extras_install_every_optional_backend(package):
    assert package in _names(PROJECT["optional-dependencies"]["test"])
    assert _names(PROJECT["optional-dependencies"]["onnx"]) == {"onnx", "onnxscript", "onnxruntime"}
