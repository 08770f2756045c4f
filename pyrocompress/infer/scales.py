"""Variational posteriors over the unit scales of group priors (the horseshoe's s and t_i).

A group prior (:class:`~pyrocompress.nn.priors.GroupScalePrior`) writes every weight of an
output unit as ``w_ij = z_i v_ij``; the guide keeps a Normal posterior over v (the ordinary
mean-field part) and one of the modules here over the scale sites of the prior. The unit
scale enters the network multiplicatively, so the estimators only need three things of it:

* per-example draws of z (local reparameterization of the scales, as Bayesian Compression
  does), or one draw per forward pass (weight sampling);
* its first two moments E[z], E[z^2] (the posterior-mean network, moment propagation);
* the closed-form KL of the scale sites from their priors.

:class:`LogNormalScales` is a log-normal posterior per scale site (Louizos et al. 2017):
with log x ~ N(m, s^2) for every factor, log z = sum_k c_k log x_k is Normal, so z is
log-normal and all of the above is closed form; the KL of a log-normal from a Gamma or an
inverse-Gamma prior is closed form too (:func:`lognormal_kl`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
import pyro
import pyro.distributions as dist

from ..errors import UserError
from ..nn.priors import GroupHorseshoePrior, GroupLogUniformPrior, GroupScalePrior, LogUniformPrior

__all__ = ["LogNormalScales", "NormalScales", "lognormal_kl", "make_scale_posterior"]


def lognormal_kl(loc: torch.Tensor, log_scale: torch.Tensor, prior: dist.Distribution) -> torch.Tensor:
    """Elementwise KL(LogNormal(loc, exp(log_scale)^2) || prior) for a Gamma or inverse-Gamma prior.

    With x log-normal: E[log x] = m, E[x] = exp(m + s^2/2), E[1/x] = exp(-m + s^2/2) and
    the entropy is m + 1/2 + log(2 pi)/2 + log s.
    """
    base = prior.base_dist if isinstance(prior, dist.Independent) else prior
    while isinstance(base, dist.ExpandedDistribution):
        base = base.base_dist
    var = torch.exp(2.0 * log_scale)
    neg_entropy = -(loc + 0.5 + 0.5 * math.log(2 * math.pi) + log_scale)
    k = base.concentration
    if isinstance(base, dist.InverseGamma):
        beta = base.rate  # Pyro's InverseGamma(concentration, rate): the scale parameter of 1/Gamma
        expected_log_p = k * torch.log(beta) - torch.lgamma(k) - (k + 1) * loc - beta * torch.exp(-loc + 0.5 * var)
    elif isinstance(base, dist.Gamma):
        rate = base.rate
        expected_log_p = k * torch.log(rate) - torch.lgamma(k) + (k - 1) * loc - rate * torch.exp(loc + 0.5 * var)
    else:
        raise TypeError(f"no closed-form KL of a log-normal from {type(base).__name__}; expected Gamma or InverseGamma")
    return neg_entropy - expected_log_p


def _lognormal_kl_terms(prior: dist.Distribution) -> tuple[float, float, float, float]:
    """(sign, c, rate, constant) with KL(LogNormal(m, s^2) || prior) = rate exp(sign m + s^2 / 2)
    - (1 + c) m - log s + constant, for a Gamma (sign +1, c = k - 1) or inverse-Gamma (sign -1,
    c = -(k + 1)) prior of constant parameters (see :func:`lognormal_kl`)."""
    base = prior.base_dist if isinstance(prior, dist.Independent) else prior
    while isinstance(base, dist.ExpandedDistribution):
        base = base.base_dist
    k = float(base.concentration.reshape(-1)[0])
    rate = float(base.rate.reshape(-1)[0])
    if isinstance(base, dist.InverseGamma):
        sign, c = -1.0, -(k + 1.0)
    elif isinstance(base, dist.Gamma):
        sign, c = 1.0, k - 1.0
    else:
        raise TypeError(f"no closed-form KL of a log-normal from {type(base).__name__}; expected Gamma or InverseGamma")
    constant = -(0.5 + 0.5 * math.log(2 * math.pi)) - (k * math.log(rate) - math.lgamma(k))
    return sign, c, rate, constant


class LogNormalScales(nn.Module):
    """Log-normal posteriors over the scale sites of a group prior whose z is a product of powers.

    For the group horseshoe z = sqrt(s_a s_b t_a t_b): every site has a ``loc`` and a
    ``log_scale`` of log-space (shape ``()`` for global sites, ``(units,)`` for group sites).
    ``init_group_scale`` sets E[z] at the start (the weights' own scale, so the non-centred
    weights v start near N(0, 1)); ``init_scale`` the posterior standard deviation of every
    log-factor.
    """

    def __init__(self, prior: GroupScalePrior, units: int, init_group_scale: float, init_scale: float) -> None:
        super().__init__()
        if not isinstance(prior, GroupHorseshoePrior):
            raise TypeError(f"LogNormalScales supports the group horseshoe, got {type(prior).__name__}")
        if not (init_group_scale > 0 and init_scale > 0):
            raise UserError("init_group_scale and init_scale must be positive")
        self.prior = prior
        self.units = int(units)
        self.init_scale = float(init_scale)
        self.kinds = prior.scale_sites()
        self.loc = nn.ParameterDict()
        self.log_scale = nn.ParameterDict()
        like = torch.zeros(())
        for suffix, kind in self.kinds.items():
            shape = () if kind == "global" else (self.units,)
            if suffix.endswith("_a"):
                # the Gamma factor starts at its prior mean k / rate (its light tail makes any larger
                # start a huge KL) ...
                g = self.prior.scale_site_distribution(suffix, 1, like)
                g = g.base_dist if isinstance(g, dist.Independent) else g
                value = math.log(float(g.concentration.reshape(-1)[0]) / float(g.rate.reshape(-1)[0]))
            else:
                # ... and the inverse-Gamma factor makes up the rest: s^2 = init_group_scale^2, t^2 = 1
                partner = suffix[:-2] + "_a"
                target = 2.0 * math.log(init_group_scale) if kind == "global" else 0.0
                value = target - float(self.loc[partner].detach().reshape(-1)[0])
            self.loc[suffix] = nn.Parameter(torch.full(shape, value))
            self.log_scale[suffix] = nn.Parameter(torch.full(shape, math.log(init_scale)))
        # the priors' constants, read once: the KL of every step is then a few elementwise ops
        # (building the Gamma / inverse-Gamma distributions and their lgamma each step cost a
        # third of a LeNet-300-100 SVI step)
        self._kl_terms = {suffix: _lognormal_kl_terms(self.prior.scale_site_distribution(suffix, 1, like))
                          for suffix in self.kinds}

    # ---------------------------------------------------------------- moments of log z
    def _log_z(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, var) of the global part and of the group part of log z (z = sqrt(product))."""
        g_mean = g_var = u_mean = u_var = None
        for suffix, kind in self.kinds.items():
            m, v = 0.5 * self.loc[suffix], 0.25 * torch.exp(2.0 * self.log_scale[suffix])
            if kind == "global":
                g_mean = m if g_mean is None else g_mean + m
                g_var = v if g_var is None else g_var + v
            else:
                u_mean = m if u_mean is None else u_mean + m
                u_var = v if u_var is None else u_var + v
        return g_mean, g_var, u_mean, u_var

    def log_z_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of log z per unit (z is log-normal)."""
        g_mean, g_var, u_mean, u_var = self._log_z()
        return g_mean + u_mean, g_var + u_var

    def mean(self) -> torch.Tensor:
        """E[z] per unit."""
        m, v = self.log_z_moments()
        return torch.exp(m + 0.5 * v)

    def second_moment(self) -> torch.Tensor:
        """E[z^2] per unit."""
        m, v = self.log_z_moments()
        return torch.exp(2.0 * m + 2.0 * v)

    def sample(self, batch: Optional[int] = None) -> torch.Tensor:
        """Reparameterised draws of z: ``(units,)``, or ``(batch, units)`` with independent draws per
        example (the global factor drawn once per example and shared by its units)."""
        g_mean, g_var, u_mean, u_var = self._log_z()
        shape = (self.units,) if batch is None else (batch, self.units)
        g_shape = () if batch is None else (batch, 1)
        eps_g = torch.randn(g_shape, dtype=u_mean.dtype, device=u_mean.device)
        eps_u = torch.randn(shape, dtype=u_mean.dtype, device=u_mean.device)
        return torch.exp(g_mean + g_var.sqrt() * eps_g + u_mean + u_var.sqrt() * eps_u)

    # ---------------------------------------------------------------- Pyro guide and KL
    def sample_sites(self, prefix: str) -> dict[str, torch.Tensor]:
        """Sample every scale site through Pyro (the guide's ``forward``): ``{suffix: value}``."""
        values = {}
        for suffix, kind in self.kinds.items():
            d = dist.LogNormal(self.loc[suffix], torch.exp(self.log_scale[suffix]))
            values[suffix] = pyro.sample(f"{prefix}.{suffix}", d.to_event(1) if kind == "group" else d)
        return values

    def kl(self, like: torch.Tensor) -> torch.Tensor:
        """KL(q || p) of all scale sites, closed form (:func:`lognormal_kl`'s, from constants read once)."""
        total = like.new_zeros(())
        for suffix, (sign, log_coefficient, rate, constant) in self._kl_terms.items():
            loc, log_scale = self.loc[suffix], self.log_scale[suffix]
            # -entropy - E[log p] = -(m + log s) - c m + rate E[x^sign] + const, E[x^sign] = exp(sign m + s^2 / 2)
            kl = rate * torch.exp(sign * loc + 0.5 * torch.exp(2.0 * log_scale)) - (1.0 + log_coefficient) * loc \
                - log_scale
            total = total + kl.sum() + constant * loc.numel()
        return total

    def scale_parameters(self) -> list[nn.Parameter]:
        """Every parameter: all of them live in log space (log-locations and log-scales of the factors), so
        they move at the scales' learning rate (a unit switched off needs log z to travel several units)."""
        return list(self.loc.values()) + list(self.log_scale.values())

    @torch.no_grad()
    def copy_units_(self, other: "LogNormalScales", index: torch.Tensor) -> None:
        """Take ``other``'s posterior for the units ``index`` (and its global sites): structured deletion."""
        for suffix, kind in self.kinds.items():
            for mine, theirs in ((self.loc, other.loc), (self.log_scale, other.log_scale)):
                value = theirs[suffix].detach()
                mine[suffix].copy_(value if kind == "global" else value.index_select(0, index.to(value.device)))

    def config(self) -> dict:
        return {"init_scale": self.init_scale}


class NormalScales(nn.Module):
    """A Normal posterior q(z_i) = N(mu_i, sigma_i^2) over one scale per unit (the normal-Jeffreys
    group prior): multiplicative Gaussian noise on the unit, dropout rate alpha_i = sigma_i^2 / mu_i^2."""

    def __init__(self, prior: GroupLogUniformPrior, units: int, init_group_scale: float, init_scale: float) -> None:
        super().__init__()
        if not (init_group_scale > 0 and init_scale > 0):
            raise UserError("init_group_scale and init_scale must be positive")
        self.prior = prior
        self.units = int(units)
        self.init_scale = float(init_scale)
        self.loc = nn.Parameter(torch.full((self.units,), float(init_group_scale)))
        # sigma relative to the start: init_scale is the unit's initial noise-to-signal ratio
        self.log_scale = nn.Parameter(torch.full((self.units,), math.log(init_scale * init_group_scale)))

    def mean(self) -> torch.Tensor:
        return self.loc

    def second_moment(self) -> torch.Tensor:
        return self.loc.square() + torch.exp(2.0 * self.log_scale)

    def log_alpha(self) -> torch.Tensor:
        """log(sigma^2 / mu^2) per unit (clipped as the prior's KL clips it)."""
        return self.prior_log_uniform().log_alpha(self.loc, torch.exp(self.log_scale))

    def prior_log_uniform(self) -> LogUniformPrior:
        return self.prior.unit_log_uniform()

    def sample(self, batch: Optional[int] = None) -> torch.Tensor:
        shape = (self.units,) if batch is None else (batch, self.units)
        return self.loc + torch.exp(self.log_scale) * torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)

    def sample_sites(self, prefix: str) -> dict[str, torch.Tensor]:
        d = dist.Normal(self.loc, torch.exp(self.log_scale)).to_event(1)
        return {"group_scale": pyro.sample(f"{prefix}.group_scale", d)}

    def kl(self, like: torch.Tensor) -> torch.Tensor:
        return self.prior.scale_kl(self.loc, torch.exp(self.log_scale)).sum()

    def scale_parameters(self) -> list[nn.Parameter]:
        return [self.log_scale]

    @torch.no_grad()
    def copy_units_(self, other: "NormalScales", index: torch.Tensor) -> None:
        self.loc.copy_(other.loc.detach().index_select(0, index.to(other.loc.device)))
        self.log_scale.copy_(other.log_scale.detach().index_select(0, index.to(other.loc.device)))

    def config(self) -> dict:
        return {"init_scale": self.init_scale}


def make_scale_posterior(prior: GroupScalePrior, units: int, init_group_scale: float,
                         init_scale: float) -> nn.Module:
    """The variational family of a group prior's scale sites."""
    if isinstance(prior, GroupHorseshoePrior):
        return LogNormalScales(prior, units, init_group_scale, init_scale)
    if isinstance(prior, GroupLogUniformPrior):
        return NormalScales(prior, units, init_group_scale, init_scale)
    raise TypeError(f"no scale posterior for the group prior {type(prior).__name__}")
