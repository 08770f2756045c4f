"""Bayesian models: ``bayesianize`` any network, a classification likelihood, the model.

The pieces stay separate and swappable (as in TyXe): the network (a PyroModule whose
chosen layers are Bayesian, each with its prior), the likelihood (which owns the data
plate and scales the minibatch log-likelihood to the data-set size) and, in
:mod:`pyrocompress.infer`, the guide.
"""
from __future__ import annotations

import copy
import fnmatch
import math
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
import pyro
import pyro.distributions as dist
from pyro import poutine
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from ..errors import UserError
from .layers import BayesConv2d, BayesLayer, BayesLinear, bayes_layers
from .priors import PriorSpec, resolve_prior

__all__ = ["bayesianize", "Likelihood", "CategoricalLikelihood", "GaussianLikelihood", "BayesianModel", "is_bayesian_model",
           "likelihood_from_config"]

_SUPPORTED = (nn.Linear, nn.Conv2d)


def _select(name: str, include: Optional[Sequence[str]], exclude: Optional[Sequence[str]]) -> bool:
    def match(patterns):
        return any(name == p or fnmatch.fnmatchcase(name, p) or name.startswith(p + ".") for p in patterns)

    if include is not None and not match(include):
        return False
    if exclude is not None and match(exclude):
        return False
    return True


def _to_bayes(name: str, layer: nn.Module, prior: PriorSpec, is_output: bool = False) -> BayesLayer:
    if isinstance(layer, nn.Linear):
        return BayesLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                           prior=resolve_prior(prior, name, "linear", is_output),
                           init_weight=layer.weight.data, init_bias=None if layer.bias is None else layer.bias.data)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise UserError(f"layer {name!r}: grouped convolutions (groups={layer.groups}) are not supported; exclude it")
        if layer.padding_mode != "zeros":
            raise UserError(f"layer {name!r}: padding_mode={layer.padding_mode!r} is not supported; exclude it")
        return BayesConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, bias=layer.bias is not None,
                           prior=resolve_prior(prior, name, "conv", is_output),
                           init_weight=layer.weight.data, init_bias=None if layer.bias is None else layer.bias.data)
    raise TypeError(f"layer {name!r} of type {type(layer).__name__} cannot be made Bayesian")


def bayesianize(module: nn.Module, prior: PriorSpec = "normal", include: Optional[Iterable[str]] = None,
                exclude: Optional[Iterable[str]] = None) -> PyroModule:
    """Turn a network of Linear / Conv2d layers into a Pyro model with the same forward.

    The module is deep-copied and converted to PyroModules; every selected Linear or
    Conv2d layer becomes a :class:`BayesLinear` / :class:`BayesConv2d` whose weight and
    bias are sample sites with the prior given (a name, a Prior, or a per-layer mapping
    such as ``{"conv1": "normal:0.1", "default": "group_horseshoe", "output": "log_uniform"}``;
    ``"output"`` names the last Linear/Conv2d layer). ``include`` / ``exclude``
    take layer names or glob patterns; excluded layers stay deterministic parameters.
    The current weights become the layers' initial values (the guide's initial locs).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"bayesianize expects an nn.Module, got {type(module).__name__}")
    include = list(include) if include is not None else None
    exclude = list(exclude) if exclude is not None else None
    net = copy.deepcopy(module)
    candidates = [(n, m) for n, m in net.named_modules() if isinstance(m, _SUPPORTED) and n]
    if isinstance(net, _SUPPORTED):
        raise UserError("bayesianize expects a network containing layers, not a bare layer; wrap it in nn.Sequential")
    chosen = [(n, m) for n, m in candidates if _select(n, include, exclude)]
    for pattern in include or []:
        if not any(n == pattern or fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".") for n, _ in candidates):
            valid = [n for n, _ in candidates]
            raise UserError(f"include pattern {pattern!r} matches no Linear/Conv2d layer; layers: {valid}")
    if not chosen:
        raise UserError("no Linear or Conv2d layer selected to become Bayesian; check include/exclude")
    output = candidates[-1][0]  # the last Linear / Conv2d layer, in definition order
    for name, layer in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, _to_bayes(name, layer, prior, is_output=name == output))
    to_pyro_module_(net)
    # re-attach children so every Bayesian layer knows its qualified site name
    for name, layer in bayes_layers(net):
        expected = f"{name}.weight"
        got = f"{layer._pyro_name}.weight"
        if got != expected:  # pragma: no cover - guards against Pyro naming changes
            raise RuntimeError(f"Pyro site name {got!r} does not match layer name {expected!r}")
    return net


class Likelihood:
    """Base of the likelihoods: owns the data plate and scales the minibatch to the data set."""

    num_classes: Optional[int] = None

    def __init__(self, dataset_size: int = 1) -> None:
        self.dataset_size = int(dataset_size)

    def scale(self, batch_size: int) -> float:
        return float(self.dataset_size) / float(batch_size)

    def distribution(self, out: torch.Tensor) -> dist.Distribution:
        """The per-example distribution of y given the network's output (batch first)."""
        raise NotImplementedError

    def __call__(self, out: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        batch = out.shape[0]
        with poutine.scale(scale=self.scale(batch)), pyro.plate("data", batch, dim=-1):
            return pyro.sample("obs", self.distribution(out), obs=y)


class CategoricalLikelihood(Likelihood):
    """Categorical likelihood over class logits; owns the data plate.

    The minibatch log-likelihood is scaled by ``dataset_size / batch_size`` so the ELBO
    is that of the whole data set (KL counted once per data set, not per batch).
    """

    def __init__(self, num_classes: int, dataset_size: int = 1) -> None:
        if int(num_classes) < 2:
            raise UserError(f"num_classes must be >= 2, got {num_classes}")
        super().__init__(dataset_size)
        self.num_classes = int(num_classes)

    def distribution(self, logits: torch.Tensor) -> dist.Distribution:
        if logits.dim() != 2 or logits.shape[-1] != self.num_classes:
            # a wrong shape would broadcast against the labels into a wrong likelihood, silently
            raise UserError(f"the network's output has shape {tuple(logits.shape)}; the categorical likelihood "
                             f"needs (batch, {self.num_classes}) logits: flatten the input before the first Linear "
                             "layer (nn.Flatten()) and end with num_classes outputs")
        return dist.Categorical(logits=logits)

    def nll(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of the minibatch, scaled to the data set (lean estimators)."""
        return F.cross_entropy(logits, y, reduction="sum") * self.scale(logits.shape[0])

    def to_config(self) -> dict:
        return {"name": "categorical", "num_classes": self.num_classes, "dataset_size": self.dataset_size}


class GaussianLikelihood(Likelihood):
    """Gaussian likelihood y ~ N(f(x), noise_scale^2) for regression; owns the data plate.

    ``f(x)`` has shape (B, 1) or (B,); the minibatch log-likelihood is scaled to the data set.
    """

    def __init__(self, noise_scale: float = 1.0, dataset_size: int = 1) -> None:
        if not noise_scale > 0:
            raise UserError(f"noise_scale must be positive, got {noise_scale}")
        super().__init__(dataset_size)
        self.noise_scale = float(noise_scale)

    def distribution(self, pred: torch.Tensor) -> dist.Distribution:
        return dist.Normal(pred.reshape(pred.shape[0]), self.noise_scale)

    def nll(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mean = pred.reshape(pred.shape[0])
        var = self.noise_scale ** 2
        per = 0.5 * (y - mean) ** 2 / var + 0.5 * math.log(2 * math.pi * var)
        return per.sum() * self.scale(mean.shape[0])

    def to_config(self) -> dict:
        return {"name": "gaussian", "noise_scale": self.noise_scale, "dataset_size": self.dataset_size}


def likelihood_from_config(config: dict) -> Likelihood:
    """Rebuild a likelihood from its ``to_config()`` (a run directory stores it), of whichever kind it was."""
    name = config.get("name", "categorical")
    size = config.get("dataset_size", 1)
    if name == "categorical":
        return CategoricalLikelihood(config["num_classes"], size)
    if name == "gaussian":
        return GaussianLikelihood(config.get("noise_scale", 1.0), size)
    raise UserError(f"unknown likelihood {name!r}; valid likelihoods: ['categorical', 'gaussian']")


class BayesianModel(nn.Module):
    """A Pyro model ``p(y, w | x)``: a Bayesian network and a likelihood.

    ``forward(x, y)`` is the Pyro model (usable with ``pyro.infer.SVI``, ``Predictive``,
    ``NUTS``). ``architecture`` is the deterministic template (a plain ``nn.Module``)
    from which the network was made: the posterior-mean network and exports reuse it.
    """

    def __init__(self, net: PyroModule, likelihood: CategoricalLikelihood,
                 architecture: Optional[nn.Module] = None) -> None:
        super().__init__()
        if not bayes_layers(net):
            raise UserError("the network has no Bayesian layer; build it with bayesianize()")
        self.net = net
        self.likelihood = likelihood
        # kept out of the module tree: its parameters are not model parameters
        object.__setattr__(self, "architecture", architecture)

    @classmethod
    def from_module(cls, module: nn.Module, num_classes: int, prior: PriorSpec = "normal",
                    dataset_size: int = 1, include=None, exclude=None) -> "BayesianModel":
        """bayesianize ``module`` and attach a categorical likelihood."""
        net = bayesianize(module, prior=prior, include=include, exclude=exclude)
        return cls(net, CategoricalLikelihood(num_classes, dataset_size), architecture=copy.deepcopy(module))

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.likelihood(self.net(x), y)

    def bayes_layers(self) -> list[tuple[str, BayesLayer]]:
        return bayes_layers(self.net)

    def site_names(self) -> list[str]:
        return [f"{n}.{s}" for n, layer in self.bayes_layers() for s in layer.sites()]

    @property
    def device(self) -> torch.device:
        return next(iter(self.net.buffers())).device


def is_bayesian_model(obj) -> bool:
    return isinstance(obj, BayesianModel)
