"""pyrocompress: Bayesian neural networks as Pyro models, self-compressed by their posteriors.

The front door (as laplace-torch has one): the verbs of a whole workflow, from data to a
compressed network::

    import pyrocompress as pc
    data = pc.load_dataset("digits")
    model = pc.BayesianModel.from_module(pc.build_model("mlp", data.input_shape, data.num_classes),
                                         data.num_classes, prior="normal")   # pc.bayesianize: the network only
    guide = pc.make_guide(model)
    pc.fit(model, guide, data, epochs=10)
    pc.evaluate(model, data.test, guide)
    pc.diagnose(model, guide, out_dir="diag")
    result = pc.prune(model, guide, method="bayes", sparsity=0.9, data=data)
    pc.self_compress(model, guide, data)
    pc.run_study(pc.load_config(), "studies/default")
    net = pc.load_compressed("out/")

The packages below are layered (data -> nn -> infer -> diagnostics -> prune -> study -> cli;
see docs/architecture.md).
"""
import importlib
import sys
import types

from ._version import __version__
from .data import DataBundle, from_arrays, load_dataset
from .infer import MeanFieldGuide, fit, fit_deterministic, make_guide
from .infer.predictive import evaluate
from .metrics import parameter_counts
from .nn import BayesianModel, bayesianize, build_model

__all__ = [
    "load_dataset", "build_model", "bayesianize", "make_guide", "fit", "evaluate", "diagnose", "score", "prune",
    "self_compress", "run_study", "load_compressed", "load_config", "DataBundle", "from_arrays", "MeanFieldGuide",
    "fit_deterministic", "parameter_counts", "BayesianModel", "Pruned", "__version__",
]


#: names imported on first use, for start-up time: the diagnostics, prune and study layers pull in
#: xarray, pandas and scikit-learn, which `import pyrocompress` and the train/evaluate commands never use
_LAZY = {"diagnose": ".diagnostics", "prune": ".api", "score": ".api", "Pruned": ".prune",
         "self_compress": ".prune", "load_compressed": ".prune", "load_config": ".study", "run_study": ".study"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """The package module: the front door's verbs keep their names when a subpackage of the same name loads.

    Importing ``pyrocompress.prune`` (the subpackage) makes the import system set the attribute
    ``pyrocompress.prune`` to it; the verb :func:`pyrocompress.prune` keeps the name, as an eager
    ``from .api import prune`` would (the subpackage is ``sys.modules["pyrocompress.prune"]`` and
    ``from pyrocompress.prune import ...`` reaches it as always)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
