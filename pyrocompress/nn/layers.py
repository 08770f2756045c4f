"""Bayesian Linear and Conv2d layers as PyroModules.

Each layer's ``weight`` and ``bias`` are Pyro sample sites (``PyroSample``) drawn from
explicit, swappable priors, so the network is an ordinary Pyro model: any Pyro
inference algorithm (SVI with any guide, NUTS, Predictive) works on it.

The layer's forward is an *effectful operation* (``pyro.poutine.runtime.effectful``
with type ``"bayes_layer"``). With no handler it samples its weights through the
sample sites (what SVI with a generic guide and Trace_ELBO sees). Handlers from
:mod:`pyrocompress.infer.estimators` intercept it to compute the layer differently:
the local reparameterization trick, flipout, the posterior mean, or masks.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from pyro.nn import PyroModule, PyroSample
from pyro.poutine.runtime import effectful

from ..errors import UserError
from .priors import GroupScalePrior, Prior, make_prior

__all__ = ["BayesLayer", "BayesLinear", "BayesConv2d", "bayes_layers"]


def _sample_weights_forward(layer: "BayesLayer", x: torch.Tensor) -> torch.Tensor:
    """Default semantics: draw weight and bias from their sample sites, then apply the op."""
    return layer.op(x, layer.weight, layer.bias if layer.has_bias else None)


_bayes_layer_op = effectful(_sample_weights_forward, type="bayes_layer")


class BayesLayer(PyroModule):
    """Common machinery of Bayesian layers: priors, sample sites, initial values."""

    kind: str = "layer"

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        has_bias: bool,
        prior: Prior | str = "normal",
        bias_prior: Optional[Prior | str] = None,
        init_weight: Optional[torch.Tensor] = None,
        init_bias: Optional[torch.Tensor] = None,
    ) -> None:
        super().__init__()
        self.weight_shape = tuple(int(s) for s in weight_shape)
        self.has_bias = bool(has_bias)
        self.prior = make_prior(prior)
        self.bias_prior = make_prior(self.prior.bias_prior() if bias_prior is None else bias_prior)
        if isinstance(self.prior, GroupScalePrior) and self.bias_prior is not self.prior:
            raise UserError(f"a layer with the group prior {self.prior.name!r} keeps its bias in the unit's group "
                             "(b_i = z_i u_i, so a deleted unit outputs exactly zero); leave bias_prior unset")
        # a zero-size buffer that follows .to(device) so priors know where to live
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        if init_weight is None:
            init_weight, init_bias = self.default_init()
        if tuple(init_weight.shape) != self.weight_shape:
            raise UserError(f"init_weight has shape {tuple(init_weight.shape)}, expected {self.weight_shape}")
        # the network's own initialisation, used to initialise guide locations
        self.register_buffer("init_weight", init_weight.detach().clone(), persistent=False)
        self.register_buffer(
            "init_bias",
            init_bias.detach().clone() if (has_bias and init_bias is not None) else torch.zeros(self.weight_shape[0]),
            persistent=False,
        )
        if isinstance(self.prior, GroupScalePrior):
            # the unit scales' hierarchy, explicit in the model: one sample site per scale variable
            for suffix in self.prior.scale_sites():
                setattr(self, suffix, PyroSample(lambda self, suffix=suffix: self.prior.scale_site_distribution(
                    suffix, self.out_units, self._anchor)))
        self.weight = PyroSample(lambda self: self._prior_distribution("weight"))
        if self.has_bias:
            self.bias = PyroSample(lambda self: self._prior_distribution("bias"))

    # ------------------------------------------------------------------ priors
    @property
    def out_units(self) -> int:
        return self.weight_shape[0]

    def site_shape(self, site: str) -> tuple[int, ...]:
        return self.weight_shape if site == "weight" else (self.weight_shape[0],)

    def prior_of(self, site: str) -> Prior:
        return self.prior if site == "weight" else self.bias_prior

    def sites(self) -> tuple[str, ...]:
        return ("weight", "bias") if self.has_bias else ("weight",)

    def _prior_distribution(self, site: str):
        prior = self.prior_of(site)
        shape = torch.Size(self.site_shape(site))
        if isinstance(prior, GroupScalePrior):
            z = prior.group_scale({suffix: getattr(self, suffix) for suffix in prior.scale_sites()})
            return prior.distribution(shape, self._anchor, z)
        return prior.distribution(shape, self._anchor)

    def scale_site_names(self) -> tuple[str, ...]:
        """The layer's sample sites of its prior's unit-scale hierarchy (empty for elementwise priors)."""
        if isinstance(self.prior, GroupScalePrior):
            return tuple(self.prior.scale_sites())
        return ()

    # --------------------------------------------------------------- compute
    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def default_init(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _bayes_layer_op(self, x)

    def plain_layer(self, bias: bool) -> nn.Module:
        """A freshly initialised plain torch layer of the same shape."""
        raise NotImplementedError

    @torch.no_grad()
    def deterministic(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> nn.Module:
        """A plain torch layer with the given weight and bias (e.g. the posterior mean)."""
        layer = self.plain_layer(bias is not None)
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        return layer.to(weight.device)


class BayesLinear(BayesLayer):
    """A Linear layer whose weight (out, in) and bias (out,) are Pyro sample sites."""

    kind = "linear"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, prior="normal",
                 bias_prior=None, init_weight=None, init_bias=None) -> None:
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        super().__init__((out_features, in_features), bias, prior, bias_prior, init_weight, init_bias)

    def default_init(self):
        ref = self.plain_layer(True)
        return ref.weight.data, ref.bias.data

    def op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def plain_layer(self, bias):
        return nn.Linear(self.in_features, self.out_features, bias=bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias}, prior={self.prior}"


class BayesConv2d(BayesLayer):
    """A Conv2d layer (groups=1) whose kernels and bias are Pyro sample sites."""

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, prior="normal", bias_prior=None,
                 init_weight=None, init_bias=None) -> None:
        pair = nn.modules.utils._pair
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.dilation = pair(dilation)
        super().__init__((out_channels, in_channels) + tuple(self.kernel_size), bias, prior, bias_prior,
                         init_weight, init_bias)

    def plain_layer(self, bias):
        return nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, bias=bias)

    def default_init(self):
        ref = self.plain_layer(self.has_bias)
        return ref.weight.data, (ref.bias.data if ref.bias is not None else None)

    def op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)


    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.has_bias}, prior={self.prior}")


def bayes_layers(module: nn.Module) -> list[tuple[str, BayesLayer]]:
    """All Bayesian layers of a network, with their qualified names, in forward-definition order."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, BayesLayer)]
