"""A lean ELBO for mean-field Normal guides over Bayesian networks.

:class:`MeanFieldELBO` is a ``pyro.infer.ELBO``: it plugs into ``pyro.infer.SVI`` and
into Pyro's module-style interface (``MeanFieldELBO()(model, guide)`` is an
``nn.Module`` whose forward is the loss). It computes the same objective as
``TraceMeanField_ELBO`` on the same model and guide, but exploits their structure:

* the KL term of every layer in closed form (Monte Carlo only for priors without one),
  all layers at once, without tracing a site per weight tensor;
* the expected log-likelihood through an estimator handler (local reparameterization by
  default), so pre-activations, not weights, are sampled.

The two parts are reported separately (:meth:`loss_terms`): the scaled minibatch
negative log-likelihood and the KL, the KL counted once per data set.
"""
from __future__ import annotations

from typing import Optional

import torch
from pyro.infer import ELBO

from ..errors import UserError
from ..nn.model import BayesianModel
from .estimators import LayerEstimator, make_estimator
from .guides import is_posterior_guide

__all__ = ["MeanFieldELBO"]


class MeanFieldELBO(ELBO):
    """Negative ELBO = E_q[-log p(y | x, w)] * N / B + kl_weight * KL(q || p)."""

    def __init__(self, estimator: str = "local_reparam", num_particles: int = 1, kl_weight: float = 1.0) -> None:
        if int(num_particles) < 1:
            raise UserError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(num_particles=int(num_particles))
        self.estimator = estimator
        self.kl_weight = float(kl_weight)
        self._handler_cache: Optional[tuple[int, LayerEstimator]] = None
        self._layers_cache: Optional[tuple[int, dict]] = None

    def _handler(self, guide) -> LayerEstimator:
        cached = self._handler_cache
        if cached is None or cached[0] != id(guide):
            handler = make_estimator(self.estimator, guide)
            self._handler_cache = (id(guide), handler)
            return handler
        return cached[1]

    def _layers(self, model) -> dict:
        cached = self._layers_cache
        if cached is None or cached[0] != id(model):
            self._layers_cache = cached = (id(model), dict(model.bayes_layers()))
        return cached[1]

    @staticmethod
    def _check(model, guide) -> None:
        if not isinstance(model, BayesianModel):
            raise TypeError("MeanFieldELBO needs a pyrocompress BayesianModel; use TraceMeanField_ELBO for other models")
        if not is_posterior_guide(guide):
            raise TypeError("MeanFieldELBO needs a pyrocompress MeanFieldGuide; use Pyro's ELBOs for other guides")

    def loss_terms(self, model: BayesianModel, guide, x: torch.Tensor, y: torch.Tensor,
                   return_logits: bool = False):
        """(scaled minibatch NLL, KL) as differentiable tensors, optionally with the logits."""
        handler = self._handler(guide)
        particles = self.num_particles
        scales = guide.scales()
        handler.scales = scales
        try:
            nll, logits = self._expected_nll(model, handler, x, y, particles)
        finally:
            handler.scales = None
        kl = guide.kl_divergence(model, scales, self._layers(model))
        if return_logits:
            return nll, kl, logits
        return nll, kl

    @staticmethod
    def _expected_nll(model, handler, x, y, particles):
        if particles == 1:
            with handler:
                logits = model.net(x)
            nll = model.likelihood.nll(logits, y)
        elif handler.per_example_noise:
            batch = x.shape[0]
            with handler:
                logits = model.net(x.repeat((particles,) + (1,) * (x.dim() - 1)))
            # scaled by N / (P * B): the average over particles of the data-set NLL
            nll = model.likelihood.nll(logits, y.repeat(particles))
            logits = logits[:batch]
        else:
            total = 0.0
            for _ in range(particles):
                with handler:
                    logits = model.net(x)
                total = total + model.likelihood.nll(logits, y)
            nll = total / particles
        return nll, logits

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        self._check(model, guide)
        nll, kl = self.loss_terms(model, guide, *args, **kwargs)
        return nll + self.kl_weight * kl

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def _get_trace(self, model, guide, args, kwargs):  # pragma: no cover - the lean ELBO traces nothing
        raise NotImplementedError("MeanFieldELBO computes its terms without traces")

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())
