"""Redundancy scores as xarray with named dims, at three levels, through the score registry.

:func:`score_dataset` is the one interface: any registered score (see
:mod:`pyrocompress.diagnostics.scores`; ``score_names()`` lists them) per weight, per
output group (neuron of a Linear, kernel = output channel of a Conv2d) or per input
channel, as an ``xarray.Dataset`` with one variable ``"<layer>.<score>"`` per layer.
Every score is an importance (higher = keep). Per-weight scores are closed form and
vectorised; the only sampled quantity is the norm of each group (``norm_hdi_low``),
whose HDI is taken by ArviZ over a few hundred draws of group-level numbers.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import xarray as xr

from ..errors import UserError
from ..names import normalise
from ._posterior import PosteriorView, check_draws, posterior_view
from .naming import check_level, level_dim, site_coords, site_dims
from .norm_draws import check_hdi_prob, norm_draws_dataset, norm_hdi_scores, to_numpy
from .scores import Score, get_score, reduce_level

__all__ = ["score_dataset", "norm_draws_dataset", "norm_hdi_scores", "DEFAULT_SCORES", "to_numpy", "check_hdi_prob"]

#: scores computed when none are named, per level
DEFAULT_SCORES = {
    "weight": ("snr", "magnitude", "prob_nonzero", "hdi_nonzero", "kl"),
    "group": ("norm", "snr", "min_snr", "prob_nonzero", "hdi_nonzero", "kl", "norm_hdi_low"),
    "in_channel": ("norm", "snr", "min_snr", "prob_nonzero", "hdi_nonzero", "kl", "norm_hdi_low"),
}


def _resolve_scores(scores: Optional[Sequence[str] | str], level: str,
                    with_draws: bool) -> list[tuple[str, Score]]:
    """``(variable name, registered score)`` pairs: a score is named as it was asked for (``norm`` stays
    ``norm`` though it is the ``magnitude`` score per group)."""
    if scores is None:
        names = [s for s in DEFAULT_SCORES[level] if with_draws or s != "norm_hdi_low"]
    elif isinstance(scores, str):
        names = [scores]
    else:
        names = list(scores)
    if not names:
        raise UserError("no scores asked for; give at least one name (see score_names())")
    return [(normalise(n), get_score(n)) for n in names]


def score_dataset(model, guide, scores: Optional[Sequence[str] | str] = None, level: str = "group", *,
                  hdi_prob: float = 0.95, delta: float = 1e-2, draws: int = 200, seed: int = 0,
                  reduction: Optional[str] = None, view: Optional[PosteriorView] = None,
                  norm_draws: Optional[xr.Dataset] = None) -> xr.Dataset:
    """Redundancy scores of every Bayesian layer as an ``xarray.Dataset`` with named dims.

    ``scores``: registered names (default: all that fit the level; ``norm_hdi_low`` only
    when ``draws > 0``); ``level``: ``"weight"`` (dims of the weight), ``"group"`` (one
    value per output neuron / kernel, dim ``<layer>_out``) or ``"in_channel"`` (dim
    ``<layer>_in``); ``reduction`` overrides each score's default group reduction;
    ``hdi_prob`` and ``delta`` parametrise the ``hdi*`` and ``prob_nonzero`` scores;
    ``draws`` / ``seed`` the draw-based ``norm_hdi_low``. Variables are named
    ``"<layer>.<score>"`` with the score's name as given (an alias such as ``norm`` keeps its
    name); their attrs record the registered score, level and reduction.
    For a guide without closed-form moments, ``prob_nonzero`` is a Monte Carlo estimate
    from the guide's draws and the other scores use moments estimated from them.
    """
    level = check_level(level)
    check_hdi_prob(hdi_prob)
    check_draws(draws, "draws", allow_zero=True)
    specs = _resolve_scores(scores, level, draws > 0 or norm_draws is not None)
    view = view or posterior_view(model, guide, seed=seed)
    data: dict[str, xr.DataArray] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # Monte Carlo KL of non-conjugate priors
        for var, spec in specs:
            if spec.group_fn is not None:
                if level == "weight":
                    raise UserError(f"score {spec.name!r} is defined per group or input channel, not per weight")
                if norm_draws is None:
                    check_draws(draws, f"draws (needed for score {spec.name!r})")
                    norm_draws = norm_draws_dataset(view, draws, seed)
                per_layer = spec.group_fn(model, guide, level=level, hdi_prob=hdi_prob, draws=draws, seed=seed,
                                          view=view, norm_draws=norm_draws)
                for name, _layer in view.layers():
                    if name not in per_layer:  # a score some layers do not have (unit_log_alpha)
                        continue
                    data[f"{name}.{var}"] = xr.DataArray(
                        to_numpy(per_layer[name]), dims=(level_dim(name, level),),
                        attrs={"score": spec.name, "level": level, "hdi_prob": hdi_prob, "draws": int(
                            norm_draws.sizes["draw"]), "description": spec.description})
                continue
            for name, layer in view.layers():
                site = f"{name}.weight"
                loc, scale = view.moments[site]
                if spec.name == "prob_nonzero" and not view.closed_form:
                    if not delta > 0:
                        raise UserError(f"delta must be positive, got {delta}")
                    values = (view.site_draws[site].abs() >= delta).to(loc.dtype).mean(0)
                else:
                    values = spec.fn(loc, scale, layer, "weight", hdi_prob=hdi_prob, delta=delta)
                values = values.detach()
                red = reduction or spec.reduction
                if level != "weight":
                    values = reduce_level(values, red, level)
                    dims = (level_dim(name, level),)
                else:
                    dims = site_dims(name, layer)
                data[f"{name}.{var}"] = xr.DataArray(
                    to_numpy(values), dims=dims,
                    attrs={"score": spec.name, "level": level, "reduction": red if level != "weight" else "none",
                           "description": spec.description})
    ds = xr.Dataset(data)
    coords = {}
    for name, layer in view.layers():
        for d, c in site_coords(name, layer).items():
            if d in ds.dims:
                coords[d] = c
    ds = ds.assign_coords(coords)
    ds.attrs.update({"level": level, "moments": view.source, "hdi_prob": hdi_prob, "delta": delta,
                     "convention": "importance: higher = keep, lower = redundant"})
    return ds
