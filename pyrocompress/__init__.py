"""pyrocompress: Bayesian neural networks as Pyro models, self-compressed by their posteriors."""
from .data import DataBundle, from_arrays, load_dataset
from .infer import MeanFieldGuide, fit, fit_deterministic, make_guide
from .infer.predictive import evaluate
from .metrics import parameter_counts
from .nn import BayesianModel, bayesianize, build_model

__version__ = "0.1.0"

__all__ = [
    "DataBundle", "from_arrays", "load_dataset", "MeanFieldGuide", "fit", "fit_deterministic", "make_guide",
    "evaluate", "parameter_counts", "BayesianModel", "bayesianize", "build_model", "load_compressed",
    "__version__",
]


def __getattr__(name: str):
    # load_compressed is imported on first use, for start-up time: pyrocompress.prune pulls in the
    # diagnostics and with them xarray and pandas, which `import pyrocompress` and most commands never use
    if name == "load_compressed":
        from .prune.export import load_compressed

        return load_compressed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
