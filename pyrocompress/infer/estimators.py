"""Estimators of Bayesian layers as Pyro effect handlers.

Each handler intercepts the ``"bayes_layer"`` effect of :class:`~pyrocompress.nn.BayesLayer`
and computes the layer's output from the guide's parameters in its own way:

* :class:`LocalReparameterization` samples the Gaussian pre-activations directly
  (Kingma et al. 2015): lower variance, one noise draw per example;
* :class:`Flipout` shares one weight perturbation across the batch, decorrelated by
  random sign flips per example (Wen et al. 2018);
* :class:`WeightSampling` draws one weight sample per forward (what a Pyro guide does);
* :class:`PosteriorMean` uses the guide's locations (the posterior-mean network).

They compose with other Pyro handlers and leave the model untouched: nothing in torch
is monkeypatched, and without a handler the layer samples its weights from its sites.
"""
from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger

from ..errors import UserError
from ..nn.layers import BayesConv2d, BayesLayer

__all__ = [
    "LayerEstimator",
    "LocalReparameterization",
    "Flipout",
    "WeightSampling",
    "PosteriorMean",
    "FrozenDraw",
    "ESTIMATORS",
    "make_estimator",
]

_TINY = 1e-16


class LayerEstimator(Messenger):
    """Base handler: computes every Bayesian layer's output from a mean-field guide."""

    name = "estimator"
    #: whether one forward pass with inputs repeated gives independent samples per row
    per_example_noise = True

    def __init__(self, guide) -> None:
        super().__init__()
        self.guide = guide
        #: scales computed once per step by the ELBO (site -> scale); None: compute per layer
        self.scales: dict[str, torch.Tensor] | None = None

    def _params(self, layer: BayesLayer):
        return self.guide.layer_params(layer._pyro_name, layer, scales=self.scales)

    def _unit_scales(self, layer: BayesLayer):
        """The posterior over the layer's unit scales z (group priors), else None."""
        get = getattr(self.guide, "group_scales_of", None)
        return None if get is None else get(layer._pyro_name)

    def _per_example_units(self, layer: BayesLayer, out: torch.Tensor) -> torch.Tensor:
        """Multiply a group layer's output by its unit scales, drawn independently per example."""
        post = self._unit_scales(layer)
        if post is None:
            return out
        z = post.sample(out.shape[0])
        return out * z.reshape(z.shape + (1,) * (out.dim() - 2))

    def _pyro_bayes_layer(self, msg) -> None:
        layer, x = msg["args"]
        msg["value"] = self.compute(layer, x)
        msg["done"] = True
        msg["stop"] = True

    def compute(self, layer: BayesLayer, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LocalReparameterization(LayerEstimator):
    """Sample pre-activations from N(x mu + b_mu, x^2 sigma^2 + sigma_b^2) (Linear and Conv2d)."""

    name = "local_reparam"

    def compute(self, layer, x):
        lw, sw, lb, sb = self._params(layer)
        mean = layer.op(x, lw, lb)
        var_w = sw * sw
        if var_w.shape != lw.shape:
            var_w = var_w.expand_as(lw)
        var = layer.op(x * x, var_w, None if sb is None else sb * sb)
        if sb is None:
            var = var + _TINY
        return self._per_example_units(layer, mean + var.sqrt() * torch.randn_like(mean))


class Flipout(LayerEstimator):
    """One shared weight perturbation per batch, sign-flipped per example (Wen et al. 2018)."""

    name = "flipout"

    def compute(self, layer, x):
        lw, sw, lb, sb = self._params(layer)
        mean = layer.op(x, lw, lb)
        delta = sw * torch.randn_like(lw)
        batch = x.shape[0]
        if isinstance(layer, BayesConv2d):
            s_in = torch.randint(0, 2, (batch, x.shape[1], 1, 1), device=x.device).to(x.dtype) * 2 - 1
            s_out = torch.randint(0, 2, (batch, mean.shape[1], 1, 1), device=x.device).to(x.dtype) * 2 - 1
        else:
            s_in = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
            s_out = torch.randint(0, 2, mean.shape, device=x.device).to(x.dtype) * 2 - 1
        out = mean + layer.op(x * s_in, delta, None) * s_out
        if sb is not None:
            bias_noise = sb.expand_as(lb) * torch.randn_like(lb)
            shape = (1, -1, 1, 1) if isinstance(layer, BayesConv2d) else (1, -1)
            out = out + bias_noise.reshape(shape)
        return self._per_example_units(layer, out)


class WeightSampling(LayerEstimator):
    """Draw one weight (and bias) sample per forward pass, shared by the batch."""

    name = "weight_sampling"
    per_example_noise = False

    def draw(self, layer: BayesLayer) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One sample (weight, bias or None) of the layer's weights from the guide.

        Every weight-sampling handler (this one, :class:`FrozenDraw`) gets its weights here,
        so a guide with another parametrisation needs only this method changed."""
        lw, sw, lb, sb = self._params(layer)
        w = lw + sw * torch.randn_like(lw)
        b = None if lb is None else lb + sb.expand_as(lb) * torch.randn_like(lb)
        post = self._unit_scales(layer)
        if post is not None:  # one draw of the unit scales per weight draw, like the weights
            z = post.sample()
            w = w * z.reshape((-1,) + (1,) * (w.dim() - 1))
            b = None if b is None else b * z
        return w, b

    def compute(self, layer, x):
        return layer.op(x, *self.draw(layer))


class PosteriorMean(LayerEstimator):
    """Use the guide's locations: the posterior-mean (deterministic) network."""

    name = "mean"
    per_example_noise = False

    def compute(self, layer, x):
        name = layer._pyro_name
        return layer.op(x, self.guide.loc_of(name + ".weight"),
                        self.guide.loc_of(name + ".bias") if layer.has_bias else None)


ESTIMATORS: dict[str, type[LayerEstimator]] = {
    "local_reparam": LocalReparameterization,
    "flipout": Flipout,
    "weight_sampling": WeightSampling,
    "mean": PosteriorMean,
}

_ALIASES = {"lrt": "local_reparam", "local_reparameterization": "local_reparam", "sampling": "weight_sampling",
            "weights": "weight_sampling", "posterior_mean": "mean"}


def make_estimator(name: str, guide) -> LayerEstimator:
    """Build an estimator handler by name (``local_reparam``, ``flipout``, ``weight_sampling``, ``mean``)."""
    key = str(name).lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in ESTIMATORS:
        raise UserError(f"unknown estimator {name!r}; valid estimators: {sorted(ESTIMATORS)}"
                         " (and 'moment_propagation' where installed)")
    return ESTIMATORS[key](guide)


def estimator_names() -> list[str]:
    return sorted(ESTIMATORS)


def resolve_name(name: str) -> str:
    key = str(name).lower().replace("-", "_")
    return _ALIASES.get(key, key)



class FrozenDraw(WeightSampling):
    """Weight sampling that keeps each layer's draw: one weight set for every batch until :meth:`redraw`.

    The posterior predictive runs a sampled network over a whole split in several batches;
    with this handler each batch sees the same weights (one draw of q(w) per predictive
    sample), at the cost of one weight draw per layer instead of one per batch. The draws
    come from :meth:`WeightSampling.draw`. Not meant for training: the kept draws carry no
    gradient to later steps' parameters.
    """

    name = "frozen_draw"

    def __init__(self, guide) -> None:
        super().__init__(guide)
        self._draws: dict[BayesLayer, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def redraw(self) -> None:
        """Forget the kept draws: the next forward draws a new weight set."""
        self._draws.clear()

    def draw(self, layer: BayesLayer) -> tuple[torch.Tensor, torch.Tensor | None]:
        kept = self._draws.get(layer)
        if kept is None:
            kept = self._draws[layer] = super().draw(layer)
        return kept
