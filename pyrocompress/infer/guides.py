"""Explicit mean-field Normal guides over the Bayesian layers of a model.

The guide is an ordinary ``nn.Module`` (parameters live in the module, never in Pyro's
global parameter store) whose ``forward`` is a Pyro guide: one ``pyro.sample`` per
weight / bias site, from ``Normal(loc, exp(log_scale))``. Two parametrisations:

* ``MeanFieldGuide(model)``: one scale per weight;
* ``MeanFieldGuide(model, shared_scale="group")``: one scale per output neuron / conv
  kernel (the parametrisation of the eVI papers: one variance per kernel).

**Why log-scales.** Adam moves every parameter by about its learning rate per step,
whatever the gradient's size. With a softplus scale started at 1e-3 that is a change of
~1e-3 in sigma per step: after 1,000 steps every scale ends near 3e-3 whatever the data
say, and nothing that reads the scales (SNR, HDI, deletion rules) reads a posterior.
With ``log_scale`` the same step is a *relative* change of sigma, so a scale crosses
decades in hundreds of steps; :func:`~pyrocompress.infer.fit` gives the scales their own
learning rate (``scale_lr``) on top. :meth:`MeanFieldGuide.scale_movement` measures how
far each scale moved from its start, which ``fit`` records and the diagnostics check.

Locations start from the network's own initialisation and scales start small, so an
untrained Bayesian network behaves like its deterministic twin.

**Group priors** (:class:`~pyrocompress.nn.priors.GroupScalePrior`, e.g. the group
horseshoe) write a unit's weights as ``w_ij = z_i v_ij``: the guide then keeps the Normal
posterior over the non-centred v (started at the initial weights, with unit scales at 1) and a
posterior over the unit scales
(:mod:`pyrocompress.infer.scales`). ``loc_of`` / ``scale_of`` always give the moments of
the weight w itself (E[z] mu, and sqrt(E[z^2](mu^2 + sigma^2) - E[z]^2 mu^2)), which is what
scores, diagnostics and the deployable network read; ``layer_params`` gives what the
estimators sample from (v's moments) and :meth:`MeanFieldGuide.group_scales_of` the
unit-scale posterior they multiply by.

Everything outside this module talks to a guide through :class:`PosteriorGuide` (posterior
moments, masking, slicing for structured deletion), never through its parameters.
"""
from __future__ import annotations

import copy
import math
from typing import Optional, Protocol, runtime_checkable

import torch
from torch import nn
import pyro
import pyro.distributions as dist

from ..errors import UserError
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel
from ..nn.priors import GroupScalePrior
from .scales import make_scale_posterior

__all__ = ["PosteriorGuide", "MeanFieldGuide", "GUIDES", "make_guide", "posterior_mean_network", "is_posterior_guide",
           "MASKED_SCALE", "site_key"]

GUIDES = ("mean_field", "group_scale")

#: posterior standard deviation of a masked (deleted) weight: zero to float precision, yet its
#: square stays a normal float32, so sampled pre-activations keep a positive variance and finite gradients
MASKED_SCALE = 1e-8
_MASKED_LOG_SCALE = math.log(MASKED_SCALE)


def site_key(site: str) -> str:
    """The ParameterDict key of a Pyro site name (``fc1.weight`` -> ``fc1__weight``)."""
    return site.replace(".", "__")


@runtime_checkable
class PosteriorGuide(Protocol):
    """What pyrocompress needs of a guide over a :class:`~pyrocompress.nn.BayesianModel`.

    Posterior moments per site (``loc_of``, ``scale_of``: mean and standard deviation of the
    weight the network computes with), the per-layer parameters the estimators sample from,
    the KL term of the lean ELBO, and the in-place edits pruning needs (``mask_``, ``shrunk``).
    """

    def site_names(self) -> list[str]: ...

    def loc_of(self, site: str) -> torch.Tensor: ...

    def scale_of(self, site: str, expand: bool = True) -> torch.Tensor: ...

    def layer_params(self, layer_name: str, layer: BayesLayer, expand: bool = False,
                     scales: Optional[dict[str, torch.Tensor]] = None): ...

    def kl_divergence(self, model: BayesianModel, scales=None, layers=None) -> torch.Tensor: ...

    def check_belongs_to(self, model: BayesianModel) -> None: ...

    def mask_(self, site: str, keep: torch.Tensor) -> None: ...

    def config(self) -> dict: ...


def is_posterior_guide(guide) -> bool:
    """Whether ``guide`` is a pyrocompress guide (closed-form moments, lean ELBO, masking)."""
    return isinstance(guide, PosteriorGuide)


class MeanFieldGuide(nn.Module):
    """Mean-field Normal guide q(w) = prod N(loc, exp(log_scale)^2) over a model's Bayesian layers."""

    def __init__(self, model: BayesianModel, init_scale: float = 1e-3, shared_scale: Optional[str] = None) -> None:
        super().__init__()
        if not isinstance(model, BayesianModel):
            raise TypeError("MeanFieldGuide expects a BayesianModel (see pyrocompress.nn.BayesianModel)")
        if shared_scale not in (None, "none", "group"):
            raise UserError(f"shared_scale must be None or 'group', got {shared_scale!r}")
        if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or \
                not (0 < init_scale < math.inf):
            raise UserError(f"init_scale must be a positive number, got {init_scale!r}")
        self.shared_scale = None if shared_scale in (None, "none") else "group"
        self.init_scale = float(init_scale)
        log0 = math.log(self.init_scale)
        self.loc = nn.ParameterDict()
        self.log_scale = nn.ParameterDict()
        #: posteriors over the unit scales of layers with a group prior (layer key -> module)
        self.group_scales = nn.ModuleDict()
        self._sites: list[tuple[str, str, str]] = []  # (layer name, site, qualified site name)
        self._init_log_scale: dict[str, float] = {}   # site key -> the log-scale every weight started at
        for layer_name, layer in model.bayes_layers():
            z0 = 1.0
            if isinstance(layer.prior, GroupScalePrior):
                # the unit scales start at 1 (v = w): Adam then moves the weights at the same rate as in the
                # deterministic twin (starting v at O(1) and z at the weights' size made learning ~1/z slower)
                self.group_scales[site_key(layer_name)] = make_scale_posterior(
                    layer.prior, layer.out_units, init_group_scale=z0, init_scale=0.1)
            for site in layer.sites():
                init = layer.init_weight if site == "weight" else layer.init_bias
                full = f"{layer_name}.{site}"
                key = site_key(full)
                self.loc[key] = nn.Parameter(init.detach().clone() / z0)
                shape = self._scale_shape(init.shape)
                self._init_log_scale[key] = log0 - math.log(z0)
                self.log_scale[key] = nn.Parameter(
                    torch.full(shape, self._init_log_scale[key], dtype=init.dtype, device=init.device))
                self._sites.append((layer_name, site, full))

    def _scale_shape(self, shape: torch.Size) -> tuple[int, ...]:
        if self.shared_scale == "group":
            return (shape[0],) + (1,) * (len(shape) - 1)
        return tuple(shape)

    # --------------------------------------------------------------- access
    def site_names(self) -> list[str]:
        return [full for _, _, full in self._sites]

    def has_site(self, site: str) -> bool:
        return site_key(site) in self.loc

    def group_scales_of(self, layer_name: str):
        """The posterior over the unit scales z of a layer with a group prior, else None."""
        key = site_key(layer_name)
        return self.group_scales[key] if key in self.group_scales else None

    def _unit_moments(self, site: str):
        post = self.group_scales_of(site.rpartition(".")[0])
        if post is None:
            return None
        loc = self.loc[site_key(site)]
        shape = (-1,) + (1,) * (loc.dim() - 1)
        return post.mean().reshape(shape), post.second_moment().reshape(shape)

    def loc_of(self, site: str) -> torch.Tensor:
        """Posterior mean of the site's weights (E[z] mu for a group prior)."""
        loc = self.loc[site_key(site)]
        moments = self._unit_moments(site)
        return loc if moments is None else moments[0] * loc

    def scale_of(self, site: str, expand: bool = True) -> torch.Tensor:
        """Posterior standard deviation of the site's weights (of w = z v for a group prior)."""
        moments = self._unit_moments(site)
        if moments is None:
            return self._own_scale(site, expand)
        mean_z, second_z = moments
        loc, scale = self.loc[site_key(site)], self._own_scale(site, True)
        var = second_z * (loc.square() + scale.square()) - (mean_z * loc).square()
        return var.clamp_min(0.0).sqrt()

    def _own_scale(self, site: str, expand: bool) -> torch.Tensor:
        """The scale of the guide's own Normal factor (of v for a group prior)."""
        scale = self.log_scale[site_key(site)].exp()
        if expand and scale.shape != self.loc[site_key(site)].shape:
            scale = scale.expand_as(self.loc[site_key(site)])
        return scale

    def scales(self) -> dict[str, torch.Tensor]:
        """Every site's Normal-factor scale, computed once (unexpanded for shared scales): the lean
        ELBO computes them once per step and shares them between the layers and the KL."""
        return {full: self._own_scale(full, expand=False) for _, _, full in self._sites}

    def layer_params(self, layer_name: str, layer: BayesLayer, expand: bool = False,
                     scales: Optional[dict[str, torch.Tensor]] = None):
        """(weight loc, weight scale, bias loc or None, bias scale or None) of one layer's Normal factor.

        For a group prior these are the moments of the non-centred v; the estimators multiply
        the result by the unit scales (:meth:`group_scales_of`). ``scales`` (from :meth:`scales`)
        reuses scales already computed this step; they are unexpanded, as with ``expand=False``."""
        w = layer_name + ".weight"
        lw = self.loc[site_key(w)]
        sw = scales[w] if scales is not None else self._own_scale(w, expand=expand)
        if layer.has_bias:
            b = layer_name + ".bias"
            sb = scales[b] if scales is not None else self._own_scale(b, expand=True)
            if sb.shape != self.loc[site_key(b)].shape:
                sb = sb.expand_as(self.loc[site_key(b)])
            return lw, sw, self.loc[site_key(b)], sb
        return lw, sw, None, None

    def scale_parameters(self) -> list[nn.Parameter]:
        """The parameters of the posterior scales (``fit`` gives them their own learning rate)."""
        params = list(self.log_scale.values())
        for post in self.group_scales.values():
            params.extend(post.scale_parameters())
        return params

    @torch.no_grad()
    def scale_movement(self) -> dict[str, torch.Tensor]:
        """``log(scale / initial scale)`` of every site's Normal-factor scales: how far the posterior
        moved from its start.

        0 everywhere means an untrained posterior; a positive value a scale that grew towards
        the prior (a redundant weight), a negative one a scale the data pinned down. Deleted
        weights (scale at :data:`MASKED_SCALE`) are NaN.
        """
        out = {}
        for _, _, full in self._sites:
            log_scale = self.log_scale[site_key(full)].detach()
            move = log_scale - self._init_log_scale[site_key(full)]
            # deleted weights (at the masked floor) did not move by learning: left out as NaN
            out[full] = move.masked_fill(log_scale <= _MASKED_LOG_SCALE + 1e-3, float("nan"))
        return out

    # ------------------------------------------------------------ edits
    @torch.no_grad()
    def set_posterior_(self, site: str, loc: Optional[torch.Tensor] = None,
                       scale: Optional[torch.Tensor] = None) -> None:
        """Set a site's posterior mean and/or standard deviation (broadcast to the parameter's shape)."""
        key = site_key(site)
        if key not in self.loc:
            raise UserError(f"the guide has no site {site!r}; sites: {self.site_names()}")
        if self.group_scales_of(site.rpartition(".")[0]) is not None:
            raise UserError(f"site {site!r} has a group prior: its weights are z * v, set the Normal factor "
                             "(guide.loc / guide.log_scale) and the unit scales (guide.group_scales) instead")
        if loc is not None:
            self.loc[key].copy_(torch.as_tensor(loc, dtype=self.loc[key].dtype).expand_as(self.loc[key]))
        if scale is not None:
            scale = torch.as_tensor(scale, dtype=self.log_scale[key].dtype)
            if bool((scale <= 0).any()):
                raise UserError(f"scales must be positive; got a minimum of {float(scale.min())} for {site!r}")
            self.log_scale[key].copy_(scale.log().expand_as(self.log_scale[key]))

    @torch.no_grad()
    def mask_(self, site: str, keep: torch.Tensor) -> None:
        """Delete the weights of ``site`` where ``keep`` is False: location 0, scale :data:`MASKED_SCALE`.

        With a scale shared per unit only units deleted whole lose their variance.
        """
        key = site_key(site)
        loc, log_scale = self.loc[key], self.log_scale[key]
        m = keep.to(device=loc.device, dtype=torch.bool)
        loc.mul_(m.to(loc.dtype))
        if log_scale.shape == loc.shape:
            log_scale.masked_fill_(~m, _MASKED_LOG_SCALE)
        else:
            units = m.reshape(m.shape[0], -1).any(dim=1).reshape(log_scale.shape)
            log_scale.masked_fill_(~units, _MASKED_LOG_SCALE)

    def like(self, model: BayesianModel) -> "MeanFieldGuide":
        """A fresh guide of the same kind and settings for another (e.g. shrunk) model."""
        return type(self)(model, init_scale=self.init_scale, shared_scale=self.shared_scale)

    @torch.no_grad()
    def shrunk(self, model: BayesianModel, keep: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
               bias_delta: Optional[dict[str, torch.Tensor]] = None) -> "MeanFieldGuide":
        """This posterior restricted to the kept units of a physically shrunk ``model``.

        ``keep[layer]`` indexes the kept output units, ``inputs[layer]`` the kept input columns
        (channels or features); ``bias_delta[layer]`` is added to the bias location (a deleted
        unit's constant output folded into the next layer).
        """
        new = self.like(model).to("cpu")
        bias_delta = bias_delta or {}
        for layer_name, site, full in self._sites:
            key = site_key(full)
            if key not in new.loc:
                raise UserError(f"the shrunk model has no site {full!r}")
            out_idx = keep.get(layer_name)
            in_idx = inputs.get(layer_name) if site == "weight" else None
            loc = self.loc[key].detach().cpu()
            if site == "bias" and layer_name in bias_delta:
                loc = loc + bias_delta[layer_name].to(loc.dtype)
            new.loc[key].copy_(_slice(loc, out_idx, in_idx))
            log_scale = self.log_scale[key].detach().cpu()
            if log_scale.shape == self.loc[key].shape:
                new.log_scale[key].copy_(_slice(log_scale, out_idx, in_idx))
            else:
                new.log_scale[key].copy_(_slice(log_scale, out_idx, None))
            new._init_log_scale[key] = self._init_log_scale[key]
        for key, post in self.group_scales.items():
            layer_name = key.replace("__", ".")
            index = keep.get(layer_name, torch.arange(post.units))
            new.group_scales[key].copy_units_(post, index.cpu())
        return new.to(next(self.parameters()).device)

    # ------------------------------------------------------------ Pyro guide
    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        samples = {}
        unit_scale: dict[str, torch.Tensor] = {}
        for layer_name, _, full in self._sites:
            loc, scale = self.loc[site_key(full)], self._own_scale(full, True)
            post = self.group_scales_of(layer_name)
            if post is not None:
                if layer_name not in unit_scale:
                    values = post.sample_sites(layer_name)
                    samples.update({f"{layer_name}.{k}": v for k, v in values.items()})
                    unit_scale[layer_name] = post.prior.group_scale(values)
                z = unit_scale[layer_name].reshape((-1,) + (1,) * (loc.dim() - 1))
                loc, scale = z * loc, z.abs() * scale
            samples[full] = pyro.sample(full, dist.Normal(loc, scale).to_event(loc.dim()))
        return samples

    # ------------------------------------------------------------------- KL
    def kl_divergence(self, model: BayesianModel, scales: Optional[dict[str, torch.Tensor]] = None,
                      layers: Optional[dict[str, BayesLayer]] = None) -> torch.Tensor:
        """KL(q || p) summed over all Bayesian sites, closed form where the prior has one.

        ``scales`` (from :meth:`scales`) avoids recomputing the scale of every site and
        ``layers`` (``dict(model.bayes_layers())``) walking the module tree every step."""
        total = None
        layers = dict(model.bayes_layers()) if layers is None else layers
        for layer_name, site, full in self._sites:
            loc = self.loc[site_key(full)]
            log_scale = self.log_scale[site_key(full)]
            scale = scales[full] if scales is not None else self._own_scale(full, expand=False)
            prior = layers[layer_name].prior_of(site)
            if log_scale.shape == loc.shape and hasattr(prior, "kl_log_scale"):  # fewer passes over the weights
                term = prior.kl_log_scale(loc, log_scale, scale)
                total = term if total is None else total + term
                continue
            if scale.shape != loc.shape:
                scale = scale.expand_as(loc)
            term = prior.kl(loc, scale)
            total = term if total is None else total + term
        for post in self.group_scales.values():
            total = total + post.kl(total)
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
        mine = {full: tuple(self.loc[site_key(full)].shape) for _, _, full in self._sites}
        if expected != mine:
            missing = sorted(set(expected) - set(mine))
            extra = sorted(set(mine) - set(expected))
            wrong = sorted(k for k in set(expected) & set(mine) if expected[k] != mine[k])
            raise UserError(
                "the guide does not belong to this model: "
                f"missing sites {missing}, unknown sites {extra}, shape mismatches {wrong}; "
                "build the guide with make_guide(model)")


def _slice(t: torch.Tensor, out_idx: Optional[torch.Tensor], in_idx: Optional[torch.Tensor]) -> torch.Tensor:
    if out_idx is not None:
        t = t.index_select(0, out_idx.to(t.device))
    if in_idx is not None and t.dim() > 1:
        t = t.index_select(1, in_idx.to(t.device))
    return t


def make_guide(model: BayesianModel, name: str = "mean_field", init_scale: float = 1e-3) -> MeanFieldGuide:
    """Build a guide by name: ``mean_field`` (a scale per weight) or ``group_scale`` (per neuron/kernel)."""
    key = str(name).lower().replace("-", "_")
    if key in ("mean_field", "meanfield", "normal"):
        return MeanFieldGuide(model, init_scale=init_scale)
    if key in ("group_scale", "kernel_scale", "evi"):
        return MeanFieldGuide(model, init_scale=init_scale, shared_scale="group")
    raise UserError(f"unknown guide {name!r}; valid guides: {list(GUIDES)} (or pass any Pyro autoguide object)")


@torch.no_grad()
def posterior_mean_network(model: BayesianModel, guide: PosteriorGuide) -> nn.Module:
    """The plain ``nn.Module`` with the guide's posterior means as weights (the deployable network).

    It is a copy of the model's architecture template; Bayesian layers take the guide's
    locations, layers left deterministic keep the model's own parameters.
    """
    if model.architecture is None:
        raise UserError("the model has no architecture template; build it with BayesianModel.from_module")
    guide.check_belongs_to(model)
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
