"""Explicit mean-field Normal guides over the Bayesian layers of a model.

The guide is an ordinary ``nn.Module`` (parameters live in the module, never in Pyro's
global parameter store) whose ``forward`` is a Pyro guide: one ``pyro.sample`` per
weight / bias site, from ``Normal(loc, softplus(rho))``. Two parametrisations:

* ``MeanFieldGuide(model)``: one scale per weight;
* ``MeanFieldGuide(model, shared_scale="group")``: one scale per output neuron / conv
  kernel (the parametrisation of the eVI papers: one variance per kernel).

Locations start from the network's own initialisation and scales start small, so an
untrained Bayesian network behaves like its deterministic twin.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
import pyro
import pyro.distributions as dist

from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel

__all__ = ["MeanFieldGuide", "GUIDES", "make_guide", "inverse_softplus", "posterior_mean_network"]

GUIDES = ("mean_field", "group_scale")


def inverse_softplus(value: float) -> float:
    if value <= 0:
        raise ValueError(f"a scale must be positive, got {value}")
    return value + math.log(-math.expm1(-value))


def _key(site: str) -> str:
    return site.replace(".", "__")


class MeanFieldGuide(nn.Module):
    """Mean-field Normal guide q(w) = prod N(loc, softplus(rho)^2) over a model's Bayesian layers."""

    def __init__(self, model: BayesianModel, init_scale: float = 1e-3, shared_scale: Optional[str] = None,
                 min_scale: float = 0.0) -> None:
        super().__init__()
        if not isinstance(model, BayesianModel):
            raise TypeError("MeanFieldGuide expects a BayesianModel (see pyrocompress.nn.BayesianModel)")
        if shared_scale not in (None, "none", "group"):
            raise ValueError(f"shared_scale must be None or 'group', got {shared_scale!r}")
        self.shared_scale = None if shared_scale in (None, "none") else "group"
        self.init_scale = float(init_scale)
        self.min_scale = float(min_scale)
        rho0 = inverse_softplus(self.init_scale)
        self.loc = nn.ParameterDict()
        self.rho = nn.ParameterDict()
        self._sites: list[tuple[str, str, str]] = []  # (layer name, site, qualified site name)
        for layer_name, layer in model.bayes_layers():
            for site in layer.sites():
                init = layer.init_weight if site == "weight" else layer.init_bias
                full = f"{layer_name}.{site}"
                self.loc[_key(full)] = nn.Parameter(init.detach().clone())
                rho_shape = self._rho_shape(init.shape)
                self.rho[_key(full)] = nn.Parameter(torch.full(rho_shape, rho0, dtype=init.dtype, device=init.device))
                self._sites.append((layer_name, site, full))

    def _rho_shape(self, shape: torch.Size) -> tuple[int, ...]:
        if self.shared_scale == "group":
            return (shape[0],) + (1,) * (len(shape) - 1)
        return tuple(shape)

    # --------------------------------------------------------------- access
    def site_names(self) -> list[str]:
        return [full for _, _, full in self._sites]

    def has_site(self, site: str) -> bool:
        return _key(site) in self.loc

    def loc_of(self, site: str) -> torch.Tensor:
        return self.loc[_key(site)]

    def scale_of(self, site: str, expand: bool = True) -> torch.Tensor:
        rho = self.rho[_key(site)]
        scale = F.softplus(rho)
        if self.min_scale:
            scale = scale + self.min_scale
        if expand and scale.shape != self.loc[_key(site)].shape:
            scale = scale.expand_as(self.loc[_key(site)])
        return scale

    def scales(self) -> dict[str, torch.Tensor]:
        """Every site's scale, computed once (unexpanded for shared scales): the lean ELBO
        computes them once per step and shares them between the layers and the KL."""
        return {full: self.scale_of(full, expand=False) for _, _, full in self._sites}

    def layer_params(self, layer_name: str, layer: BayesLayer, expand: bool = False,
                     scales: Optional[dict[str, torch.Tensor]] = None):
        """(weight loc, weight scale, bias loc or None, bias scale or None) of one layer.

        ``scales`` (from :meth:`scales`) reuses scales already computed this step; they are
        unexpanded, as with ``expand=False``."""
        w = layer_name + ".weight"
        lw = self.loc[_key(w)]
        sw = scales[w] if scales is not None else self.scale_of(w, expand=expand)
        if layer.has_bias:
            b = layer_name + ".bias"
            sb = scales[b] if scales is not None else self.scale_of(b, expand=True)
            return lw, sw, self.loc[_key(b)], sb
        return lw, sw, None, None

    # ------------------------------------------------------------ Pyro guide
    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        samples = {}
        for _, _, full in self._sites:
            loc = self.loc[_key(full)]
            samples[full] = pyro.sample(full, dist.Normal(loc, self.scale_of(full)).to_event(loc.dim()))
        return samples

    # ------------------------------------------------------------------- KL
    def kl_divergence(self, model: BayesianModel, scales: Optional[dict[str, torch.Tensor]] = None,
                      layers: Optional[dict[str, BayesLayer]] = None) -> torch.Tensor:
        """KL(q || p) summed over all Bayesian sites, closed form where the prior has one.

        ``scales`` (from :meth:`scales`) avoids recomputing the softplus of every scale and
        ``layers`` (``dict(model.bayes_layers())``) walking the module tree every step."""
        total = None
        layers = dict(model.bayes_layers()) if layers is None else layers
        for layer_name, site, full in self._sites:
            loc = self.loc[_key(full)]
            scale = scales[full] if scales is not None else self.scale_of(full, expand=False)
            if scale.shape != loc.shape:
                scale = scale.expand_as(loc)
            term = layers[layer_name].prior_of(site).kl(loc, scale)
            total = term if total is None else total + term
        return total

    def config(self) -> dict:
        return {"name": "group_scale" if self.shared_scale == "group" else "mean_field",
                "init_scale": self.init_scale}

    def check_belongs_to(self, model: BayesianModel) -> None:
        """Raise a clear error if this guide was not made for ``model`` (sites or shapes differ)."""
        expected = {}
        for layer_name, layer in model.bayes_layers():
            for site in layer.sites():
                expected[f"{layer_name}.{site}"] = tuple(layer.site_shape(site))
        mine = {full: tuple(self.loc[_key(full)].shape) for _, _, full in self._sites}
        if expected != mine:
            missing = sorted(set(expected) - set(mine))
            extra = sorted(set(mine) - set(expected))
            wrong = sorted(k for k in set(expected) & set(mine) if expected[k] != mine[k])
            raise ValueError(
                "the guide does not belong to this model: "
                f"missing sites {missing}, unknown sites {extra}, shape mismatches {wrong}; "
                "build the guide with make_guide(model)")


def make_guide(model: BayesianModel, name: str = "mean_field", init_scale: float = 1e-3) -> MeanFieldGuide:
    """Build a guide by name: ``mean_field`` (a scale per weight) or ``group_scale`` (per neuron/kernel)."""
    key = str(name).lower().replace("-", "_")
    if key in ("mean_field", "meanfield", "normal"):
        return MeanFieldGuide(model, init_scale=init_scale)
    if key in ("group_scale", "kernel_scale", "evi"):
        return MeanFieldGuide(model, init_scale=init_scale, shared_scale="group")
    raise ValueError(f"unknown guide {name!r}; valid guides: {list(GUIDES)} (or pass any Pyro autoguide object)")


@torch.no_grad()
def posterior_mean_network(model: BayesianModel, guide: MeanFieldGuide) -> nn.Module:
    """The plain ``nn.Module`` with the guide's posterior means as weights (the deployable network).

    It is a copy of the model's architecture template; Bayesian layers take the guide's
    locations, layers left deterministic keep the model's own parameters.
    """
    if model.architecture is None:
        raise ValueError("the model has no architecture template; build it with BayesianModel.from_module")
    guide.check_belongs_to(model)
    import copy

    net = copy.deepcopy(model.architecture)
    bayes = dict(model.bayes_layers())
    own = dict(model.net.named_modules())
    for name, module in net.named_modules():
        if name in bayes:
            module.weight.copy_(guide.loc_of(f"{name}.weight"))
            if module.bias is not None:
                module.bias.copy_(guide.loc_of(f"{name}.bias"))
        elif isinstance(module, (nn.Linear, nn.Conv2d)) and name in own:
            module.load_state_dict(own[name].state_dict())
    return net.to(model.device)
