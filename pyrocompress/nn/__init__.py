"""Bayesian layers and models as PyroModules; priors; conversion of nn.Module; model zoo."""
from .layers import BayesConv2d, BayesLayer, BayesLinear, bayes_layers
from .model import BayesianModel, CategoricalLikelihood, GaussianLikelihood, bayesianize
from .priors import PRIORS, LogUniformPrior, NormalPrior, Prior, ScaleMixturePrior, make_prior, resolve_prior
from .zoo import MODELS, build_model, kernelnet, lenet5, mlp

__all__ = [
    "BayesConv2d", "BayesLayer", "BayesLinear", "bayes_layers", "BayesianModel", "CategoricalLikelihood", "GaussianLikelihood",
    "bayesianize", "PRIORS", "LogUniformPrior", "NormalPrior", "Prior", "ScaleMixturePrior", "make_prior",
    "resolve_prior", "MODELS", "build_model", "kernelnet", "lenet5", "mlp",
]
