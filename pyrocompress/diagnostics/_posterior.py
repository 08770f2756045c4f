"""Posterior access for diagnostics: moments (closed form or from draws) and seeded draws.

A pyrocompress :class:`~pyrocompress.infer.guides.MeanFieldGuide` gives every weight's
loc and scale exactly and is sampled vectorised; any other Pyro guide (an autoguide) is
sampled through ``poutine.trace`` and its moments are estimated from those draws (with
a warning), which the Monte Carlo variants of the scores then reuse.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch
from pyro import poutine

from ..errors import UserError
from .._scope import pyro_scope
from ..infer.guides import is_posterior_guide
from ..nn.model import BayesianModel

__all__ = ["PosteriorView", "posterior_view", "check_draws"]

#: elements drawn at once when sampling a layer in chunks (bounds memory)
_CHUNK_ELEMENTS = 1 << 22


def check_draws(draws, what: str = "draws", allow_zero: bool = False) -> int:
    if isinstance(draws, bool) or not isinstance(draws, int):
        raise UserError(f"{what} must be an integer, got {draws!r}")
    if draws < 0 or (draws == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise UserError(f"{what} must be {need}, got {draws}")
    return draws


def has_closed_form(guide) -> bool:
    """Whether the guide gives every weight's posterior moments exactly (a :class:`PosteriorGuide`)."""
    return is_posterior_guide(guide)


@dataclass
class PosteriorView:
    """Posterior of a model under a guide, as the diagnostics need it."""

    model: BayesianModel
    guide: object
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]
    closed_form: bool
    #: guide draws (draws, *shape) per site; only for guides without closed-form moments
    site_draws: Optional[dict[str, torch.Tensor]] = field(default=None, repr=False)

    @property
    def source(self) -> str:
        if self.closed_form:
            return "closed_form"
        n = next(iter(self.site_draws.values())).shape[0] if self.site_draws else 0
        return f"estimated_from_{n}_draws"

    def layers(self):
        return self.model.bayes_layers()

    # -------------------------------------------------------------- sampling
    def _chunks(self, site: str, draws: int) -> Iterator[int]:
        numel = self.moments[site][0].numel()
        step = max(1, _CHUNK_ELEMENTS // max(numel, 1))
        for start in range(0, draws, step):
            yield min(step, draws - start)

    @torch.no_grad()
    def iter_draws(self, site: str, draws: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        """Draws of one site in chunks of shape (c, *shape); seeded through ``generator``."""
        if self.closed_form:
            loc, scale = self.moments[site]
            loc, scale = loc.detach().cpu(), scale.detach().cpu()
            for c in self._chunks(site, draws):
                w = torch.randn((c,) + tuple(loc.shape), generator=generator, dtype=loc.dtype)
                yield w.mul_(scale).add_(loc)
            return
        stored = self.site_draws[site]
        if draws > stored.shape[0]:
            more = sample_guide(self.model, self.guide, draws, generator)
            self.site_draws = more
            stored = more[site]
        yield stored[:draws]

    def sample(self, draws: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """All sites' draws as (draws, *shape) tensors (all in memory)."""
        if not self.closed_form:
            if self.site_draws is None or next(iter(self.site_draws.values())).shape[0] < draws:
                self.site_draws = sample_guide(self.model, self.guide, draws, generator)
            return {s: v[:draws] for s, v in self.site_draws.items()}
        return {s: torch.cat(list(self.iter_draws(s, draws, generator))) for s in self.moments}

    @torch.no_grad()
    def group_norm_draws(self, draws: int, generator: torch.Generator) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, draws of the L2 norm of each output group and of each input channel of
        the weight: ``{layer: ((draws, out), (draws, in))}``, computed chunk by chunk."""
        out = {}
        for name, _layer in self.layers():
            site = f"{name}.weight"
            out_norms, in_norms = [], []
            for w in self.iter_draws(site, draws, generator):
                sq = w.square_() if self.closed_form else w.square()
                out_norms.append(sq.flatten(2).sum(2).sqrt())
                in_norms.append(sq.sum(1).flatten(2).sum(2).sqrt() if sq.dim() > 3 else sq.sum(1).sqrt())
            out[name] = (torch.cat(out_norms), torch.cat(in_norms))
        return out


@torch.no_grad()
def sample_guide(model: BayesianModel, guide, draws: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draws of every Bayesian site from any Pyro guide, through ``poutine.trace`` (seeded)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    sites = model.site_names()
    collected: dict[str, list[torch.Tensor]] = {s: [] for s in sites}
    with torch.random.fork_rng(devices=[]), pyro_scope():
        torch.manual_seed(seed)
        for _ in range(draws):
            trace = poutine.trace(guide).get_trace()
            for s in sites:
                if s not in trace.nodes:
                    raise UserError(f"the guide has no sample site {s!r}: it does not belong to this model")
                collected[s].append(trace.nodes[s]["value"].detach().cpu())
    return {s: torch.stack(v) for s, v in collected.items()}


def posterior_view(model: BayesianModel, guide, moment_draws: int = 200, seed: int = 0) -> PosteriorView:
    """Moments of every site: exact for a pyrocompress guide; for another guide estimated from
    ``moment_draws`` draws (a warning says so; the draws are kept for Monte Carlo scores)."""
    if not isinstance(model, BayesianModel):
        raise TypeError(f"diagnostics need a BayesianModel, got {type(model).__name__}; "
                        "deterministic networks have no posterior to diagnose")
    if guide is None:
        raise UserError("diagnostics need the guide (the posterior) of the model")
    if has_closed_form(guide):
        guide.check_belongs_to(model)
        moments = {s: (guide.loc_of(s).detach().cpu(), guide.scale_of(s).detach().cpu()) for s in guide.site_names()}
        return PosteriorView(model, guide, moments, True)
    check_draws(moment_draws, "moment_draws")
    if moment_draws < 2:
        raise UserError(f"moment_draws must be >= 2 to estimate a scale from draws, got {moment_draws}")
    warnings.warn(f"guide {type(guide).__name__} has no closed-form loc/scale: moments and scores are estimated "
                  f"from {moment_draws} draws (Monte Carlo)", stacklevel=2)
    generator = torch.Generator().manual_seed(int(seed) + 7919)
    site_draws = sample_guide(model, guide, moment_draws, generator)
    moments = {s: (v.mean(0), v.std(0).clamp_min(1e-12)) for s, v in site_draws.items()}
    return PosteriorView(model, guide, moments, False, site_draws)
