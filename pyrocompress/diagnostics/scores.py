"""The importance registry: every score of a weight or a group of weights, Bayesian or not.

One registry for every score, so that pruning, baselines and diagnostics rank the same
way. Every score is an *importance*: higher means keep, lower means redundant. A score
is a function of a weight's posterior moments (loc, scale); the ones that need only the
location (``needs_posterior=False``) also rank a plain network, whose weights are their
own location. A mean-field Normal guide gives the moments exactly; any other guide gives
them through draws.

Scores that read only the weight (``needs_posterior=False``):

* ``magnitude``: |w| (a Bayesian network: the posterior mean |mu|); per group its L2
  (Frobenius) norm, the ranking of "Self-Compression in Bayesian Neural Networks"
  (aliases ``norm``, ``l2``);
* ``l1``: |w|; per group the L1 norm (sum of |w|) (plain networks only);
* ``random``: seeded uniform draws, per weight or per group (the control).

Scores that need a posterior (``needs_posterior=True``):

* ``snr``: |mu| / sigma (Blundell et al. 2015);
* ``prob_nonzero``: 1 - P(|w| < delta) under the posterior (closed form for Normals);
* ``hdi``: |mu| - z sigma, the margin by which the central (= highest-density, for a
  Normal) interval of probability ``hdi_prob`` excludes zero; <= 0 means it contains zero;
* ``kl``: KL(q || p) of the weight, the information it carries beyond the prior;
* ``log_alpha``: -log(sigma^2 / mu^2) = 2 log SNR, minus sparse variational dropout's log
  alpha (Molchanov et al. 2017): its rule deletes log alpha > 3, i.e. this score < -3;
* ``min_snr``: the SNR reduced by its minimum over the group (per weight: the SNR);
* ``hdi_nonzero``: 1 where the ``hdi_prob`` interval of a weight excludes zero, else 0;
  reduced by the mean, it is the fraction of the group's weights whose HDI excludes zero;
* ``norm_hdi_low``: group-level only, from posterior draws: the lower end of the
  ``arviz.hdi`` of the group's weight norm;
* ``relative_norm``: group-level only: the L2 norm of each unit's posterior mean divided by the
  largest in its layer (the seed paper's "near zero": below 5%); the group horseshoe's rule;
* ``unit_log_alpha``: group-level only, for the layers with a group prior whose unit scales have a
  posterior of their own (``guide.group_scales_of(layer)``, e.g. the normal-Jeffreys prior of
  Bayesian Compression; other layers get no score): -log alpha_i = -log(sigma_i^2 / mu_i^2) of
  each unit's scale; the prior's rule deletes log alpha_i > 3.

Group scores reduce a group's weights (dim 0 of the weight is the group) with the score's
default reduction (``snr``: mean, ``magnitude``: L2 norm, ``prob_nonzero``: mean, ``hdi``:
max, ``kl``: sum, ...) or one given; per input channel (:func:`reduce_level` with
``level="in_channel"``) over every dim but dim 1. The user-facing aliases are in
:data:`pyrocompress.names.SCORE_ALIASES`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from pyro import poutine

from ..errors import UserError
from ..infer.guides import is_posterior_guide
from ..infer.scales import NormalScales
from ..names import SCORE_ALIASES, resolve_alias
from ..nn.model import BayesianModel
from .norm_draws import hdi_z, norm_hdi_scores

__all__ = [
    "Score",
    "SCORES",
    "REDUCTIONS",
    "score_names",
    "get_score",
    "posterior_moments",
    "weight_scores",
    "group_scores",
    "reduce_groups",
    "hdi_z",
    "reduce_level",
]


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _snr(loc, scale, layer, site, **_):
    return loc.abs() / scale


def _magnitude(loc, scale, layer, site, **_):
    return loc.abs()


def _random(loc, scale, layer, site, generator: Optional[torch.Generator] = None, **_):
    return torch.rand(loc.shape, generator=generator).to(loc.device)


def _random_groups(units: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    return torch.rand(units, generator=generator)


def _prob_nonzero(loc, scale, layer, site, delta: float = 1e-2, **_):
    if not delta > 0:
        raise UserError(f"delta must be positive, got {delta}")
    inside = _normal_cdf((delta - loc) / scale) - _normal_cdf((-delta - loc) / scale)
    return 1.0 - inside


def _hdi(loc, scale, layer, site, hdi_prob: float = 0.95, **_):
    return loc.abs() - hdi_z(hdi_prob) * scale


def _kl(loc, scale, layer, site, **_):
    return layer.prior_of(site).kl_elementwise(loc, scale)


def _hdi_nonzero(loc, scale, layer, site, hdi_prob: float = 0.95, **_):
    return (loc.abs() - hdi_z(hdi_prob) * scale > 0).to(loc.dtype)


def _log_alpha(loc, scale, layer, site, **_):
    return 2.0 * (loc.abs().log() - scale.log())


@torch.no_grad()
def _unit_log_alpha(model, guide, level: str = "group", **_) -> dict[str, torch.Tensor]:
    if level != "group":
        raise UserError(f"score 'unit_log_alpha' is defined per output unit (level 'group'), not {level!r}")
    out = {}
    for name, _layer in model.bayes_layers():  # layers without such a posterior have no score (and are kept)
        scales = guide.group_scales_of(name)
        if isinstance(scales, NormalScales):
            out[name] = -scales.log_alpha().detach()
    if not out:
        raise UserError("score 'unit_log_alpha' needs a layer whose unit scales have a posterior of their own "
                         "(a group prior with a normal unit-scale posterior, e.g. group_log_uniform)")
    return out


def _relative_norm(model, guide, level: str = "group", **_) -> dict[str, torch.Tensor]:
    if level != "group":
        raise UserError(f"score 'relative_norm' is defined per output unit (level 'group'), not {level!r}")
    out = {}
    for name, _layer in model.bayes_layers():
        norms = guide.loc_of(f"{name}.weight").detach().flatten(1).norm(dim=1)
        out[name] = norms / norms.max().clamp_min(torch.finfo(norms.dtype).tiny)
    return out


@dataclass(frozen=True)
class Score:
    """A registered importance: per-weight function, default group reduction, description.

    ``fn(loc, scale, layer, site, **options)`` gives one value per weight (``scale`` is None
    for a plain network: only scores with ``needs_posterior=False`` take one; ``ranks_posterior``
    says whether the score ranks a Bayesian network's posterior). ``group_fn``
    replaces the per-weight function + reduction for scores defined per group:
    ``group_fn(model, guide, level, **options) -> {layer: (n,)}`` from posterior draws.
    ``per_unit_draws``: the score draws one value per group directly (``random``).
    """

    name: str
    fn: Optional[Callable[..., torch.Tensor]]
    reduction: str
    description: str
    needs_posterior: bool = True
    ranks_posterior: bool = True
    group_fn: Optional[Callable[..., dict]] = None
    per_unit_draws: Optional[Callable[..., torch.Tensor]] = None


SCORES: dict[str, Score] = {
    "snr": Score("snr", _snr, "mean", "signal-to-noise ratio |mu|/sigma (Blundell et al. 2015)"),
    "magnitude": Score("magnitude", _magnitude, "l2", "magnitude |w| (posterior mean |mu|); per group its L2 "
                       "(Frobenius) norm, the self-compression paper's ranking", needs_posterior=False),
    "l1": Score("l1", _magnitude, "l1", "magnitude |w|; per group its L1 norm (sum of |w|); plain networks (a "
                "Bayesian network is ranked by 'magnitude', the L2 norm of its posterior mean)",
                needs_posterior=False, ranks_posterior=False),
    "random": Score("random", _random, "mean", "seeded uniform random importances (the control)",
                    needs_posterior=False, per_unit_draws=_random_groups),
    "prob_nonzero": Score("prob_nonzero", _prob_nonzero, "mean", "1 - P(|w| < delta) under the posterior"),
    "hdi": Score("hdi", _hdi, "max", "margin by which the hdi_prob interval excludes zero (<= 0: contains zero)"),
    "kl": Score("kl", _kl, "sum", "KL(q || prior) of the weight: information it carries"),
    "log_alpha": Score("log_alpha", _log_alpha, "mean", "-log(sigma^2/mu^2) = 2 log SNR (sparse variational "
                       "dropout deletes log alpha > 3, i.e. this score < -3)"),
    "min_snr": Score("min_snr", _snr, "min", "smallest signal-to-noise ratio |mu|/sigma of a group's weights"),
    "hdi_nonzero": Score("hdi_nonzero", _hdi_nonzero, "mean",
                         "1 where the weight's hdi_prob HDI excludes zero; group mean = fraction excluding zero"),
    "norm_hdi_low": Score("norm_hdi_low", None, "none",
                          "lower end of the HDI of the group's weight norm, from posterior draws (group level only)",
                          group_fn=norm_hdi_scores),
    "relative_norm": Score("relative_norm", None, "none", "L2 norm of a unit's posterior mean over the largest in "
                           "its layer (the group horseshoe deletes units below 5%; group level only)",
                           group_fn=_relative_norm),
    "unit_log_alpha": Score("unit_log_alpha", None, "none", "-log alpha of each unit's scale posterior (group "
                            "priors; Bayesian Compression deletes log alpha > 3; group level only)",
                            group_fn=_unit_log_alpha),
}


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x.square().sum(dim=1).sqrt()


REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda x: x.mean(dim=1),
    "sum": lambda x: x.sum(dim=1),
    "min": lambda x: x.min(dim=1).values,
    "max": lambda x: x.max(dim=1).values,
    "l2": _l2,
    "l1": lambda x: x.abs().sum(dim=1),
}


def score_names(aliases: bool = True) -> list[str]:
    """The names a score may be given: the registered ones and (with ``aliases``) their aliases."""
    names = set(SCORES) | (set(SCORE_ALIASES) if aliases else set())
    return sorted(names)


def get_score(name: str) -> Score:
    """The registered score called ``name`` (or one of its aliases)."""
    key = resolve_alias(name, SCORE_ALIASES)
    if key not in SCORES:
        raise UserError(f"unknown score {name!r}; valid scores: {score_names()}")
    return SCORES[key]


@torch.no_grad()
def posterior_moments(model: BayesianModel, guide, num_draws: int = 64) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Posterior (loc, scale) of every Bayesian site: exact for a pyrocompress guide,
    estimated from ``num_draws`` guide draws for any other guide (with a warning)."""
    if is_posterior_guide(guide):
        guide.check_belongs_to(model)
        return {s: (guide.loc_of(s).detach(), guide.scale_of(s).detach()) for s in guide.site_names()}
    if num_draws < 2:
        raise UserError(f"num_draws must be >= 2 to estimate a scale from draws, got {num_draws}")
    warnings.warn(f"guide {type(guide).__name__} has no closed-form scales: moments estimated from {num_draws} draws",
                  stacklevel=2)
    draws: dict[str, list[torch.Tensor]] = {s: [] for s in model.site_names()}
    for _ in range(num_draws):
        trace = poutine.trace(guide).get_trace()
        for site in draws:
            if site not in trace.nodes:
                raise UserError(f"the guide has no sample site {site!r}: it does not belong to this model")
            draws[site].append(trace.nodes[site]["value"].detach())
    return {s: (torch.stack(v).mean(0), torch.stack(v).std(0).clamp_min(1e-12)) for s, v in draws.items()}


def weight_scores(model: BayesianModel, guide, score: str = "snr", moments: Optional[dict] = None,
                  generator: Optional[torch.Generator] = None, **options) -> dict[str, torch.Tensor]:
    """Per-weight importance of every Bayesian layer's weight: ``{layer_name: tensor}``."""
    spec = get_score(score)
    if spec.fn is None:
        raise UserError(f"score {spec.name!r} is defined per group only (from posterior draws); use "
                         f"group_scores(...) or diagnostics.score_dataset(..., level='group')")
    moments = moments if moments is not None else posterior_moments(model, guide)
    out: dict[str, torch.Tensor] = {}
    for name, layer in model.bayes_layers():
        loc, scale = moments[f"{name}.weight"]
        out[name] = spec.fn(loc, scale, layer, "weight", generator=generator, **options)
    return out


def reduce_groups(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a (groups, ...) tensor to one value per group."""
    if reduction not in REDUCTIONS:
        raise UserError(f"unknown reduction {reduction!r}; valid reductions: {sorted(REDUCTIONS)}")
    return REDUCTIONS[reduction](values.reshape(values.shape[0], -1))


def reduce_level(values: torch.Tensor, reduction: str, level: str = "group") -> torch.Tensor:
    """Reduce a weight-shaped tensor to one value per output group (``level="group"``) or per
    input channel (``level="in_channel"``: over every dim but dim 1)."""
    if level == "group":
        return reduce_groups(values, reduction)
    if level == "in_channel":
        if values.dim() < 2:
            raise UserError("level 'in_channel' needs a weight with an input dim (dim 1)")
        return reduce_groups(values.transpose(0, 1), reduction)
    raise UserError(f"unknown level {level!r}; valid levels: ['group', 'in_channel']")


def group_scores(model: BayesianModel, guide, score: str = "norm", reduction: Optional[str] = None,
                 moments: Optional[dict] = None, generator: Optional[torch.Generator] = None,
                 **options) -> dict[str, torch.Tensor]:
    """Per-group importance (output neuron of a Linear, kernel of a Conv2d): ``{layer: (out,)}``."""
    spec = get_score(score)
    if spec.group_fn is not None:
        return spec.group_fn(model, guide, level="group", **options)
    if spec.per_unit_draws is not None:
        return {name: spec.per_unit_draws(layer.site_shape("weight")[0], generator=generator)
                for name, layer in model.bayes_layers()}
    per_weight = weight_scores(model, guide, spec.name, moments=moments, **options)
    return {name: reduce_groups(values, reduction or spec.reduction) for name, values in per_weight.items()}
