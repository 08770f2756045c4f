"""Priors over the weights of Bayesian layers.

A prior is a small object that knows two things about a weight tensor of a given
shape: the Pyro distribution the model samples it from (so the prior is visible
in the model and usable by any Pyro inference algorithm), and the KL divergence
of a mean-field Normal guide from it (closed form where one exists, a one-sample
Monte Carlo estimate otherwise), which the lean estimators use for all layers at once.

Group priors treat dim 0 of a weight (output neuron / conv kernel) as the group.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from typing import Mapping, Union

import torch
import pyro.distributions as dist

__all__ = [
    "Prior",
    "NormalPrior",
    "ScaleMixturePrior",
    "GroupARDPrior",
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

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.to_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


@dataclass(repr=False)
class NormalPrior(Prior):
    """Isotropic Normal prior N(0, scale^2) on every weight."""

    scale: float = 1.0
    name: str = "normal"
    closed_form_kl: bool = True

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"NormalPrior scale must be a positive finite number, got {self.scale}")

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
            raise ValueError(f"ScaleMixturePrior pi must lie in (0, 1), got {self.pi}")
        if not (self.scale1 > 0 and self.scale2 > 0):
            raise ValueError("ScaleMixturePrior scales must be positive")

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


@dataclass(repr=False)
class GroupARDPrior(Prior):
    """Hierarchical group-shrinkage prior: w[g, ...] ~ N(0, alpha_g), one variance per group.

    A group is an output neuron of a Linear layer or a kernel (output channel) of a
    Conv2d layer, so whole neurons and kernels shrink together (automatic relevance
    determination). The group variances are hyperparameters fitted by type-II maximum
    likelihood; for a Normal guide the optimum is closed form,
    ``alpha_g = mean over the group of (mu^2 + sigma^2)``, so :meth:`kl` integrates them
    out exactly at their optimum (the envelope theorem makes the gradients those of the
    fitted prior). ``min_variance`` keeps a dead group's variance away from zero.
    In the Pyro model the group variances are explicit: the layer exposes them as
    ``<layer>.prior_group_variance`` (see :meth:`group_variance`).
    """

    min_variance: float = 1e-8
    name: str = "group_ard"
    closed_form_kl: bool = True

    def group_variance(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, loc.dim()))
        second_moment = loc.square() + scale.square()
        if not dims:
            return second_moment.clamp_min(self.min_variance)
        return second_moment.mean(dim=dims).clamp_min(self.min_variance)

    def _expand(self, alpha: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return alpha.reshape((-1,) + (1,) * (like.dim() - 1))

    def distribution(self, shape, like, group_variance: torch.Tensor | None = None):
        if group_variance is None:
            group_variance = like.new_ones(shape[0])
        std = self._expand(group_variance, torch.empty(shape)).sqrt().expand(shape)
        return dist.Normal(torch.zeros_like(std), std).to_event(len(shape))

    def kl_elementwise(self, loc, scale):
        alpha = self._expand(self.group_variance(loc, scale), loc)
        var = scale.square()
        return 0.5 * (torch.log(alpha / var) + (var + loc.square()) / alpha - 1.0)

    def kl(self, loc, scale):
        # at the optimum alpha_g, sum_j (var + mu^2)/alpha_g = n_g, so the KL collapses to
        # 0.5 * sum_g [n_g log alpha_g] - 0.5 * sum log var  (the "+n - n" cancels)
        alpha = self.group_variance(loc, scale)
        group_size = loc[0].numel() if loc.dim() > 1 else 1
        return 0.5 * (group_size * torch.log(alpha).sum() - 2.0 * torch.log(scale).sum())

    def to_config(self):
        return {"name": self.name, "min_variance": self.min_variance}


PRIORS: dict[str, type[Prior]] = {
    "normal": NormalPrior,
    "scale_mixture": ScaleMixturePrior,
    "group_ard": GroupARDPrior,
}

PriorSpec = Union[str, Prior, Mapping[str, Union[str, Prior, dict]], dict]


def make_prior(spec: str | Prior | dict, **kwargs) -> Prior:
    """Build a prior from a name (``"normal"``, ``"normal:0.1"``), a config dict or a Prior."""
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, dict):
        cfg = dict(spec)
        name = cfg.pop("name", None)
        if name is None:
            raise ValueError(f"prior config {spec!r} has no 'name'; valid names: {sorted(PRIORS)}")
        return make_prior(name, **cfg, **kwargs)
    if not isinstance(spec, str):
        raise TypeError(f"prior must be a name, a dict or a Prior, got {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    name = name.strip().lower().replace("-", "_")
    if name not in PRIORS:
        raise ValueError(f"unknown prior {spec!r}; valid priors: {sorted(PRIORS)}")
    if arg:
        try:
            value = float(arg)
        except ValueError as exc:
            raise ValueError(f"prior {spec!r}: the value after ':' must be a number") from exc
        first = {"normal": "scale", "scale_mixture": "pi", "group_ard": "min_variance"}[name]
        kwargs.setdefault(first, value)
    try:
        return PRIORS[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad options for prior {name!r}: {exc}") from exc


def resolve_prior(spec: PriorSpec, layer_name: str, layer_kind: str) -> Prior:
    """Pick the prior of one layer from a global spec or a per-layer mapping.

    A mapping is searched by exact layer name, then glob pattern (``"fc*"``), then
    name prefix (``"fc"`` matches ``fc1``), then layer kind (``"linear"`` / ``"conv"``),
    then ``"default"`` (else the standard Normal prior).
    """
    if isinstance(spec, Mapping) and "name" not in spec:
        if layer_name in spec:
            return make_prior(spec[layer_name])
        for key, value in spec.items():
            if any(ch in key for ch in "*?[") and fnmatch.fnmatchcase(layer_name, key):
                return make_prior(value)
        for key, value in spec.items():
            if key not in ("default", "linear", "conv") and layer_name.startswith(key):
                return make_prior(value)
        if layer_kind in spec:
            return make_prior(spec[layer_kind])
        return make_prior(spec.get("default", "normal"))
    return make_prior(spec)  # type: ignore[arg-type]
