"""Guides, estimators (local reparameterization, flipout, weight sampling), the lean ELBO, training."""
from .elbo import MeanFieldELBO
from .estimators import ESTIMATORS, Flipout, LocalReparameterization, PosteriorMean, WeightSampling, make_estimator
from .fit import DivergenceError, FitResult, fit, fit_deterministic, resolve_device
from .guides import GUIDES, MeanFieldGuide, make_guide, posterior_mean_network
from .moments import MomentPropagationELBO, propagate_moments

__all__ = [
    "MeanFieldELBO", "ESTIMATORS", "Flipout", "LocalReparameterization", "PosteriorMean", "WeightSampling",
    "make_estimator", "DivergenceError", "FitResult", "fit", "fit_deterministic", "resolve_device", "GUIDES",
    "MeanFieldGuide", "make_guide", "posterior_mean_network", "MomentPropagationELBO", "propagate_moments",
]
