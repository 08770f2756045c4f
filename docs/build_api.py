"""Write docs/api.md, the API reference, from the package's docstrings and signatures.

    python docs/build_api.py          # rewrite docs/api.md
    python docs/build_api.py --check  # exit 1 if docs/api.md is not up to date
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

MODULES = [
    "pyrocompress",
    "pyrocompress.api",
    "pyrocompress.errors",
    "pyrocompress.names",
    "pyrocompress.data",
    "pyrocompress.nn.priors",
    "pyrocompress.nn.layers",
    "pyrocompress.nn.model",
    "pyrocompress.nn.zoo",
    "pyrocompress.nn.arch",
    "pyrocompress.infer.guides",
    "pyrocompress.infer.estimators",
    "pyrocompress.infer.elbo",
    "pyrocompress.infer.fit",
    "pyrocompress.infer.moments",
    "pyrocompress.infer.nuts",
    "pyrocompress.infer.predictive",
    "pyrocompress.infer.relabel",
    "pyrocompress.metrics",
    "pyrocompress.runs",
    "pyrocompress.training",
    "pyrocompress.diagnostics",
    "pyrocompress.prune",
    "pyrocompress.prune.targets",
    "pyrocompress.prune.importance",
    "pyrocompress.prune.baselines",
    "pyrocompress.prune.methods",
    "pyrocompress.study",
]


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip()


def render() -> str:
    out = ["# API reference", "",
           "Generated from the docstrings by `python docs/build_api.py`; the public names of each module.", ""]
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # a module not built yet is named, not hidden
            out += [f"## `{name}`", "", f"(not importable: {exc})", ""]
            continue
        out += [f"## `{name}`", "", _doc(module), ""]
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr, None)
            if obj is None:
                continue
            if inspect.isclass(obj):
                out += [f"### class `{attr}{_signature(obj)}`", "", _doc(obj), ""]
                for meth_name, meth in inspect.getmembers(obj, inspect.isfunction):
                    if meth_name.startswith("_") or meth.__qualname__.split(".")[0] != obj.__name__:
                        continue
                    first = _doc(meth).split("\n\n")[0]
                    out += [f"- `{meth_name}{_signature(meth)}`" + (f": {first}" if first else "")]
                out.append("")
            elif callable(obj):
                out += [f"### `{attr}{_signature(obj)}`", "", _doc(obj), ""]
            else:
                out += [f"### `{attr}`", "", f"`{type(obj).__name__}`", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    target = Path(__file__).with_name("api.md")
    text = render()
    if args.check:
        return 0 if target.is_file() and target.read_text() == text else 1
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
