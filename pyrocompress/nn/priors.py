"""Priors over the weights of Bayesian layers.

A prior is a small object that knows two things about a weight tensor of a given
shape: the Pyro distribution the model samples it from (so the prior is visible
in the model and usable by any Pyro inference algorithm), and the KL divergence
of a mean-field Normal guide from it (closed form where one exists, a one-sample
Monte Carlo estimate otherwise), which the lean estimators use for all layers at once.

Priors with a deletion rule of their own (:meth:`Prior.deletion_rule`, e.g. sparse
variational dropout's log alpha > 3) let pruning use it as the automatic threshold.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Optional, Union

import torch
import pyro.distributions as dist
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..errors import UserError

__all__ = [
    "Prior",
    "NormalPrior",
    "ScaleMixturePrior",
    "LogUniformPrior",
    "LogUniformImproper",
    "GroupScalePrior",
    "GroupHorseshoePrior",
    "GroupLogUniformPrior",
    "DeletionRule",
    "PRIORS",
    "make_prior",
    "resolve_prior",
    "PriorSpec",
]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class Prior:
    """Base class: a prior over one weight (or bias) tensor."""

    name: str = "prior"
    #: whether :meth:`kl` is exact (closed form) rather than a Monte Carlo estimate
    closed_form_kl: bool = True
    #: whether the prior has latent variables per output unit (group scales): units then carry
    #: their own latents and are not exchangeable by weights alone
    per_unit_latents: bool = False

    def distribution(self, shape: torch.Size, like: torch.Tensor) -> dist.Distribution:
        """The Pyro distribution of a tensor of ``shape`` (all dims are event dims)."""
        raise NotImplementedError

    def kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """KL(Normal(loc, scale) || prior), summed over all elements."""
        raise NotImplementedError

    def kl_elementwise(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Per-element KL (same shape as ``loc``); exact or expected under the guide."""
        raise NotImplementedError

    def to_config(self) -> dict:
        raise NotImplementedError

    def bias_prior(self) -> "Prior":
        """The prior of the layer's bias when none is given: this prior (group priors keep the bias
        in the unit's group; sparsity priors on single weights give biases a plain Normal)."""
        return self

    def deletion_rule(self) -> Optional["DeletionRule"]:
        """The prior's own rule for which weights are redundant, or None (pruning then needs a
        sparsity, a threshold, or the data-driven automatic threshold)."""
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.to_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class DeletionRule(NamedTuple):
    """A prior's own deletion rule: delete the weights whose ``score`` (an importance of
    :mod:`pyrocompress.diagnostics.scores`) lies below ``threshold``."""

    score: str
    threshold: float
    description: str


@dataclass(repr=False)
class NormalPrior(Prior):
    """Isotropic Normal prior N(0, scale^2) on every weight."""

    scale: float = 1.0
    name: str = "normal"
    closed_form_kl: bool = True

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise UserError(f"NormalPrior scale must be a positive finite number, got {self.scale}")

    def distribution(self, shape, like):
        zero = like.new_zeros(())
        return dist.Normal(zero, zero + self.scale).expand(shape).to_event(len(shape))

    def kl_elementwise(self, loc, scale):
        var_ratio = (scale / self.scale) ** 2
        return 0.5 * (var_ratio + (loc / self.scale) ** 2 - 1.0 - torch.log(var_ratio))

    def kl(self, loc, scale):
        # 0.5 * sum(s^2/p^2 + m^2/p^2 - 1 - log(s^2/p^2)), written with few kernels
        inv_var = 1.0 / (self.scale * self.scale)
        return 0.5 * (
            (scale.square().sum() + loc.square().sum()) * inv_var
            - 2.0 * torch.log(scale).sum()
            + loc.numel() * (2.0 * math.log(self.scale) - 1.0)
        )

    def kl_log_scale(self, loc, log_scale, scale):
        """:meth:`kl` from a log-parametrised guide: ``log_scale`` (with ``scale`` = its exponential, already
        computed for the forward pass) spares a log and its backward over every weight, every step."""
        inv_var = 1.0 / (self.scale * self.scale)
        return 0.5 * (
            (scale.square().sum() + loc.square().sum()) * inv_var
            - 2.0 * log_scale.sum()
            + loc.numel() * (2.0 * math.log(self.scale) - 1.0)
        )

    def to_config(self):
        return {"name": self.name, "scale": self.scale}


@dataclass(repr=False)
class ScaleMixturePrior(Prior):
    """Bayes-by-Backprop scale mixture: pi N(0, s1^2) + (1 - pi) N(0, s2^2) (Blundell et al. 2015).

    Its KL from a Normal guide has no closed form: :meth:`kl` is a one-sample
    reparameterised Monte Carlo estimate (unbiased, differentiable).
    """

    pi: float = 0.5
    scale1: float = 1.0
    scale2: float = math.exp(-6.0)
    name: str = "scale_mixture"
    closed_form_kl: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.pi < 1.0:
            raise UserError(f"ScaleMixturePrior pi must lie in (0, 1), got {self.pi}")
        if not (self.scale1 > 0 and self.scale2 > 0):
            raise UserError("ScaleMixturePrior scales must be positive")

    def distribution(self, shape, like):
        zero = like.new_zeros(())
        probs = torch.stack([zero + self.pi, zero + 1 - self.pi])
        scales = torch.stack([zero + self.scale1, zero + self.scale2])
        mix = dist.Categorical(probs=probs.expand(*shape, 2))
        comp = dist.Normal(torch.zeros_like(scales).expand(*shape, 2), scales.expand(*shape, 2))
        return dist.MixtureSameFamily(mix, comp).to_event(len(shape))

    def log_prob_elementwise(self, w: torch.Tensor) -> torch.Tensor:
        lp1 = math.log(self.pi) - math.log(self.scale1) - 0.5 * (w / self.scale1) ** 2
        lp2 = math.log(1 - self.pi) - math.log(self.scale2) - 0.5 * (w / self.scale2) ** 2
        return torch.logaddexp(lp1, lp2) - _HALF_LOG_2PI

    def kl_elementwise(self, loc, scale, num_samples: int = 1):
        eps = torch.randn((num_samples,) + tuple(loc.shape), device=loc.device, dtype=loc.dtype)
        w = loc + scale * eps
        log_q = -torch.log(scale) - 0.5 * eps**2 - _HALF_LOG_2PI
        return (log_q - self.log_prob_elementwise(w)).mean(0)

    def kl(self, loc, scale):
        return self.kl_elementwise(loc, scale).sum()

    def to_config(self):
        return {"name": self.name, "pi": self.pi, "scale1": self.scale1, "scale2": self.scale2}


class LogUniformImproper(TorchDistribution):
    """The improper log-uniform density p(w) proportional to 1/|w| over a tensor of ``shape``.

    ``log_prob`` is ``-sum log|w|`` (the normaliser is infinite; ELBOs need only gradients,
    and MCMC only ratios). It cannot be sampled: prior predictive checks of a model with
    this prior are undefined.
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = False

    def __init__(self, shape: torch.Size, like: torch.Tensor, validate_args=None) -> None:
        self._like = like
        super().__init__(torch.Size(), torch.Size(shape), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return _expand_improper(self, batch_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        tiny = torch.finfo(value.dtype).tiny
        per = -value.abs().clamp_min(tiny).log()
        dims = tuple(range(-len(self.event_shape), 0)) if len(self.event_shape) else ()
        return per.sum(dims) if dims else per

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError("the log-uniform prior is improper: it cannot be sampled (no prior predictive); "
                                  "infer its posterior with SVI (the lean ELBO or Trace_ELBO) or MCMC")


def _expand_improper(d: LogUniformImproper, batch_shape) -> LogUniformImproper:
    new = LogUniformImproper.__new__(LogUniformImproper)
    new._like = d._like
    TorchDistribution.__init__(new, torch.Size(batch_shape), d.event_shape, validate_args=False)
    return new


#: Molchanov et al. (2017), eq. 14: -KL(q || p) ~ k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1
_SVD_K1, _SVD_K2, _SVD_K3 = 0.63576, 1.87320, 1.48695


@dataclass(repr=False)
class LogUniformPrior(Prior):
    """Sparse variational dropout's log-uniform prior p(|w|) proportional to 1/|w| (Molchanov et al. 2017).

    With a Normal posterior N(theta, sigma^2) (the additive-noise parametrisation: theta and
    log sigma are free, so the dropout rate alpha = sigma^2 / theta^2 is unbounded) the KL
    depends on alpha alone; :meth:`kl_elementwise` is the paper's approximation (eq. 14,
    accurate to 0.01 nats), with log alpha clipped to [-``log_alpha_clip``, ``log_alpha_clip``].
    The prior pushes every weight towards alpha -> infinity (pure noise): what the data do not
    need ends with a large alpha and is deleted by the paper's rule log alpha > ``threshold``
    (3 by default, i.e. |theta| / sigma < e^-1.5 = 0.22): :meth:`deletion_rule`.
    A deleted weight (theta exactly 0) has log alpha = +clip and adds no KL.
    """

    threshold: float = 3.0
    log_alpha_clip: float = 10.0
    name: str = "log_uniform"
    closed_form_kl: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and math.isfinite(self.log_alpha_clip) and self.log_alpha_clip > 0):
            raise UserError(f"LogUniformPrior needs a finite threshold and a positive log_alpha_clip, got "
                             f"threshold={self.threshold}, log_alpha_clip={self.log_alpha_clip}")
        if not -self.log_alpha_clip < self.threshold < self.log_alpha_clip:
            raise UserError(f"the deletion threshold {self.threshold} must lie inside the clip range "
                             f"(-{self.log_alpha_clip}, {self.log_alpha_clip})")

    def distribution(self, shape, like):
        return LogUniformImproper(torch.Size(shape), like)

    def log_alpha(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """log(sigma^2 / theta^2), clipped; +clip where theta is exactly 0 (a deleted weight).

        theta^2 is floored at the smallest normal float, so a deleted weight's ratio overflows
        the clip (for any sigma above 1e-15) without a branch: one log of one quotient, the
        fewest elementwise passes over the weights (this runs every step)."""
        tiny = torch.finfo(loc.dtype).tiny
        return torch.log(scale.square() / loc.square().clamp_min(tiny)).clamp(-self.log_alpha_clip,
                                                                             self.log_alpha_clip)

    def kl_elementwise(self, loc, scale):
        la = self.log_alpha(loc, scale)
        neg_kl = _SVD_K1 * torch.sigmoid(_SVD_K2 + _SVD_K3 * la) - 0.5 * torch.nn.functional.softplus(-la) - _SVD_K1
        return -neg_kl

    def kl(self, loc, scale):
        return self._kl_of_log_alpha(self.log_alpha(loc, scale))

    def kl_log_scale(self, loc, log_scale, scale):
        """:meth:`kl` from a log-parametrised guide: log alpha = 2 log sigma - log theta^2 without the
        exponential's round trip (see :meth:`log_alpha` for theta = 0)."""
        tiny = torch.finfo(loc.dtype).tiny
        la = (2.0 * log_scale - torch.log(loc.square().clamp_min(tiny))).clamp(-self.log_alpha_clip,
                                                                            self.log_alpha_clip)
        return self._kl_of_log_alpha(la)

    @staticmethod
    def _kl_of_log_alpha(la: torch.Tensor) -> torch.Tensor:
        # the sum of kl_elementwise with the constants taken out of the sum and softplus(-x) = softplus(x) - x
        return (_SVD_K1 * la.numel() - _SVD_K1 * torch.sigmoid(torch.add(la, _SVD_K2 / _SVD_K3, alpha=1.0)
                                                                .mul_(_SVD_K3)).sum()
                + 0.5 * (torch.nn.functional.softplus(la).sum() - la.sum()))

    def deletion_rule(self) -> DeletionRule:
        return DeletionRule("log_alpha", -self.threshold, f"log alpha > {self.threshold:g} (Molchanov et al. 2017)")

    def bias_prior(self) -> Prior:
        """Biases are not sparsified (Molchanov et al. keep them deterministic): a broad N(0, 1)."""
        return NormalPrior(1.0)

    def to_config(self):
        return {"name": self.name, "threshold": self.threshold, "log_alpha_clip": self.log_alpha_clip}


class GroupScalePrior(Prior):
    """Base of the group priors: every output unit (neuron / conv kernel) has a scale z_i, and

        w_ij = z_i v_ij,   b_i = z_i u_i,   v, u ~ N(0, 1)   (non-centred),

    i.e. w_ij | z_i ~ N(0, z_i^2): a whole unit, bias included, shrinks with its scale, so a
    unit whose scale collapses outputs exactly zero and is deleted without changing the
    function. The scale's own hierarchy is explicit in the Pyro model as extra sample sites
    of the layer (:meth:`scale_sites`); the guide keeps a Normal posterior over v and u and a
    posterior over the scale sites (:mod:`pyrocompress.infer.scales`). The KL of the lean ELBO splits
    exactly into KL(q(v) || N(0, 1)) (:meth:`kl`) and the scale part, which the scale posterior of
    :mod:`pyrocompress.infer.scales` computes from the sites' distributions.
    """

    per_unit_latents: bool = True

    def scale_sites(self) -> dict[str, str]:
        """The scale hierarchy's sample sites: suffix -> ``"global"`` (one per layer) or ``"group"`` (per unit)."""
        raise NotImplementedError

    def scale_site_distribution(self, suffix: str, out_units: int, like: torch.Tensor) -> dist.Distribution:
        """The prior of one scale site (event shape ``()`` for global, ``(out_units,)`` for group sites)."""
        raise NotImplementedError

    def group_scale(self, values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """z (one per unit) from the values of the scale sites."""
        raise NotImplementedError

    def distribution(self, shape, like, group_scale: Optional[torch.Tensor] = None):
        if group_scale is None:
            raise UserError(f"the {self.name} prior of a weight depends on its unit's scale z; sample the layer's "
                             "scale sites first (the layer does this in the model)")
        z = group_scale.abs().reshape((-1,) + (1,) * (len(shape) - 1)).expand(shape)
        return dist.Normal(torch.zeros_like(z), z).to_event(len(shape))

    def kl_elementwise(self, loc, scale):
        """KL(N(loc, scale^2) || N(0, 1)) of the non-centred weights v (or biases u)."""
        return 0.5 * (scale.square() + loc.square() - 1.0) - torch.log(scale)

    def kl(self, loc, scale):
        return 0.5 * (scale.square().sum() + loc.square().sum() - loc.numel()) - torch.log(scale).sum()


@dataclass(repr=False)
class GroupHorseshoePrior(GroupScalePrior):
    """Bayesian Compression's group horseshoe (Louizos, Ullrich & Welling 2017).

    z_i = s * t_i with a global scale s ~ C+(0, ``global_scale``) per layer and a local scale
    t_i ~ C+(0, 1) per unit. Each half-Cauchy is written as the product of a Gamma and an
    inverse-Gamma variable (s^2 = s_a s_b, s_a ~ Gamma(1/2, rate 1/tau0^2), s_b ~ InvGamma(1/2, 1);
    t_i^2 = t_a t_b likewise with tau0 = 1), so that log-normal posteriors over the four sites have
    a closed-form KL. The heavy tail keeps the units the data need; the pole at zero switches off
    the rest, whose effective weights E[z] mu then lie decades below the others: the deletion rule
    (:meth:`deletion_rule`) deletes the units whose posterior-mean norm is below ``threshold`` (5%)
    of the layer's largest.
    """

    global_scale: float = 1e-5
    threshold: float = 0.05
    name: str = "group_horseshoe"
    closed_form_kl: bool = True

    _SITES = {"global_scale_a": "global", "global_scale_b": "global", "group_scale_a": "group",
              "group_scale_b": "group"}

    def __post_init__(self) -> None:
        if not (self.global_scale > 0 and math.isfinite(self.global_scale)):
            raise UserError(f"GroupHorseshoePrior global_scale must be a positive finite number, got "
                             f"{self.global_scale}")
        if not 0 < self.threshold < 1:
            raise UserError(f"GroupHorseshoePrior threshold (a unit's norm relative to the layer's largest) must lie "
                             f"in (0, 1), got {self.threshold}")

    def deletion_rule(self) -> DeletionRule:
        return DeletionRule("relative_norm", self.threshold,
                            f"unit posterior-mean norm below {100 * self.threshold:g}% of the layer's largest "
                            "(switched off by the horseshoe)")

    def scale_sites(self) -> dict[str, str]:
        return dict(self._SITES)

    def scale_site_distribution(self, suffix, out_units, like):
        one = like.new_ones(())
        if suffix == "global_scale_a":
            return dist.Gamma(0.5 * one, one / self.global_scale ** 2)
        if suffix == "global_scale_b":
            return dist.InverseGamma(0.5 * one, one)
        if suffix == "group_scale_a":
            return dist.Gamma(0.5 * one, one).expand([out_units]).to_event(1)
        if suffix == "group_scale_b":
            return dist.InverseGamma(0.5 * one, one).expand([out_units]).to_event(1)
        raise UserError(f"unknown scale site {suffix!r} of the group horseshoe; sites: {list(self._SITES)}")

    def group_scale(self, values):
        return torch.sqrt(values["global_scale_a"] * values["global_scale_b"]
                          * values["group_scale_a"] * values["group_scale_b"])

    def to_config(self):
        return {"name": self.name, "global_scale": self.global_scale, "threshold": self.threshold}


@dataclass(repr=False)
class GroupLogUniformPrior(GroupScalePrior):
    """Bayesian Compression's normal-Jeffreys group prior (Louizos et al. 2017): p(z_i) proportional to
    1/|z_i| per unit, w_ij | z_i ~ N(0, z_i^2).

    The scale posterior is Normal, q(z_i) = N(mu_i, sigma_i^2), i.e. multiplicative Gaussian noise
    on the unit with dropout rate alpha_i = sigma_i^2 / mu_i^2; its KL from the log-uniform prior is
    sparse variational dropout's approximation in alpha_i, and a unit is deleted when
    log alpha_i > ``threshold`` (:meth:`deletion_rule`, score ``unit_log_alpha``).
    """

    threshold: float = 3.0
    log_alpha_clip: float = 10.0
    name: str = "group_log_uniform"
    closed_form_kl: bool = True

    def __post_init__(self) -> None:
        # the same validation; kept, since the scale KL of every SVI step is its KL
        self._unit_prior = LogUniformPrior(self.threshold, self.log_alpha_clip)

    def scale_sites(self) -> dict[str, str]:
        return {"group_scale": "group"}

    def scale_site_distribution(self, suffix, out_units, like):
        if suffix != "group_scale":
            raise UserError(f"unknown scale site {suffix!r} of the group log-uniform prior; sites: ['group_scale']")
        return LogUniformImproper(torch.Size([out_units]), like)

    def group_scale(self, values):
        return values["group_scale"]

    def scale_kl(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """KL(N(loc, scale^2) || 1/|z|) per unit, sparse variational dropout's approximation."""
        return self._unit_prior.kl_elementwise(loc, scale)

    def unit_log_uniform(self) -> LogUniformPrior:
        """The log-uniform prior of one unit scale (its KL approximation and log alpha clip)."""
        return self._unit_prior

    def deletion_rule(self) -> DeletionRule:
        return DeletionRule("unit_log_alpha", -self.threshold,
                            f"unit log alpha > {self.threshold:g} (Louizos et al. 2017, normal-Jeffreys)")

    def to_config(self):
        return {"name": self.name, "threshold": self.threshold, "log_alpha_clip": self.log_alpha_clip}


PRIORS: dict[str, type[Prior]] = {
    "normal": NormalPrior,
    "scale_mixture": ScaleMixturePrior,
    "log_uniform": LogUniformPrior,
    "group_horseshoe": GroupHorseshoePrior,
    "group_log_uniform": GroupLogUniformPrior,
}

PriorSpec = Union[str, Prior, Mapping[str, Union[str, Prior, dict]], dict]


#: the option a "name:value" spec sets
_FIRST_OPTION = {"normal": "scale", "scale_mixture": "pi", "log_uniform": "threshold", "group_horseshoe": "global_scale",
                 "group_log_uniform": "threshold"}


def make_prior(spec: str | Prior | dict, **kwargs) -> Prior:
    """Build a prior from a name (``"normal"``, ``"normal:0.1"``), a config dict or a Prior."""
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, dict):
        cfg = dict(spec)
        name = cfg.pop("name", None)
        if name is None:
            raise UserError(f"prior config {spec!r} has no 'name'; valid names: {sorted(PRIORS)}")
        return make_prior(name, **cfg, **kwargs)
    if not isinstance(spec, str):
        raise TypeError(f"prior must be a name, a dict or a Prior, got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    name = name.strip().lower().replace("-", "_")
    if name not in PRIORS:
        raise UserError(f"unknown prior {spec!r}; valid priors: {sorted(PRIORS)}")
    if arg:
        try:
            value = float(arg)
        except ValueError as exc:
            raise UserError(f"prior {spec!r}: the value after ':' must be a number") from exc
        first = _FIRST_OPTION[name]
        kwargs.setdefault(first, value)
    try:
        return PRIORS[name](**kwargs)
    except TypeError as exc:
        raise UserError(f"bad options for prior {name!r}: {exc}") from exc


def resolve_prior(spec: PriorSpec, layer_name: str, layer_kind: str, is_output: bool = False) -> Prior:
    """Pick the prior of one layer from a global spec or a per-layer mapping.

    A mapping is searched by exact layer name, then ``"output"`` for the network's last
    Linear/Conv2d layer (whose units are the classes: a group prior there would shrink
    classes), then glob pattern (``"fc*"``), then name prefix (``"fc"`` matches ``fc1``),
    then layer kind (``"linear"`` / ``"conv"``), then ``"default"`` (else the standard Normal prior).
    """
    if isinstance(spec, Mapping) and "name" not in spec:
        if layer_name in spec:
            return make_prior(spec[layer_name])
        if is_output and "output" in spec:
            return make_prior(spec["output"])
        for key, value in spec.items():
            if any(ch in key for ch in "*?[") and fnmatch.fnmatchcase(layer_name, key):
                return make_prior(value)
        for key, value in spec.items():
            if key not in ("default", "linear", "conv", "output") and layer_name.startswith(key):
                return make_prior(value)
        if layer_kind in spec:
            return make_prior(spec[layer_kind])
        return make_prior(spec.get("default", "normal"))
    return make_prior(spec)  # type: ignore[arg-type]
