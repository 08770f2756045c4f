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

import numpy as np
import torch
import xarray as xr

from . import _arviz
from ._posterior import PosteriorView, check_draws, posterior_view
from .naming import check_level, dim_prefix, level_dim, site_coords, site_dims
from .scores import get_score, hdi_z, reduce_level

__all__ = ["score_dataset", "norm_draws_dataset", "norm_hdi_scores", "DEFAULT_SCORES", "to_numpy"]

#: scores computed when none are named, per level
DEFAULT_SCORES = {
    "weight": ("snr", "magnitude", "prob_nonzero", "hdi_nonzero", "kl"),
    "group": ("norm", "snr", "min_snr", "prob_nonzero", "hdi_nonzero", "kl", "norm_hdi_low"),
    "in_channel": ("norm", "snr", "min_snr", "prob_nonzero", "hdi_nonzero", "kl", "norm_hdi_low"),
}


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def check_hdi_prob(hdi_prob: float) -> float:
    hdi_z(hdi_prob)  # raises a clear ValueError outside (0, 1)
    return float(hdi_prob)


def norm_draws_dataset(view: PosteriorView, draws: int, seed: int = 0) -> xr.Dataset:
    """Posterior draws of every group norm: ``"<layer>.norm"`` (chain, draw, <layer>_out) and
    ``"<layer>.in_norm"`` (chain, draw, <layer>_in), one chain of i.i.d. guide draws."""
    check_draws(draws, "draws")
    generator = torch.Generator().manual_seed(int(seed))
    norms = view.group_norm_draws(draws, generator)
    data = {}
    for name, layer in view.layers():
        p = dim_prefix(name)
        out_n, in_n = norms[name]
        data[f"{name}.norm"] = xr.DataArray(to_numpy(out_n)[None], dims=("chain", "draw", f"{p}_out"),
                                            attrs={"description": f"L2 norm of each output group of {name}.weight"})
        data[f"{name}.in_norm"] = xr.DataArray(to_numpy(in_n)[None], dims=("chain", "draw", f"{p}_in"),
                                               attrs={"description": f"L2 norm of each input channel of {name}.weight"})
    ds = xr.Dataset(data)
    return ds.assign_coords(chain=[0], draw=np.arange(draws))


def norm_hdi_scores(model, guide, level: str = "group", hdi_prob: float = 0.95, draws: int = 200, seed: int = 0,
                    view: Optional[PosteriorView] = None, norm_draws: Optional[xr.Dataset] = None,
                    **_) -> dict[str, torch.Tensor]:
    """Lower end of the HDI of each group's (or input channel's) weight norm: ``{layer: (n,)}``."""
    level = check_level(level)
    check_hdi_prob(hdi_prob)
    if level == "weight":
        raise ValueError("score 'norm_hdi_low' is defined per group or input channel, not per weight")
    if norm_draws is None:
        check_draws(draws, "draws (needed for the HDI of group norms)")
        view = view or posterior_view(model, guide, seed=seed)
        norm_draws = norm_draws_dataset(view, draws, seed)
    suffix = "norm" if level == "group" else "in_norm"
    names = [n for n, _ in model.bayes_layers()]
    sub = norm_draws[[f"{n}.{suffix}" for n in names]]
    bounds = _arviz.hdi(sub, hdi_prob)
    return {n: torch.from_numpy(np.asarray(bounds[f"{n}.{suffix}"].sel(hdi="lower").values)) for n in names}


def _resolve_scores(scores: Optional[Sequence[str] | str], level: str, with_draws: bool) -> list:
    if scores is None:
        names = [s for s in DEFAULT_SCORES[level] if with_draws or s != "norm_hdi_low"]
    elif isinstance(scores, str):
        names = [scores]
    else:
        names = list(scores)
    if not names:
        raise ValueError("no scores asked for; give at least one name (see score_names())")
    return [get_score(n) for n in names]


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
    ``"<layer>.<score>"``; their attrs record the score, level and reduction.
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
        for spec in specs:
            if spec.group_fn is not None:
                if level == "weight":
                    raise ValueError(f"score {spec.name!r} is defined per group or input channel, not per weight")
                if norm_draws is None:
                    check_draws(draws, f"draws (needed for score {spec.name!r})")
                    norm_draws = norm_draws_dataset(view, draws, seed)
                per_layer = spec.group_fn(model, guide, level=level, hdi_prob=hdi_prob, draws=draws, seed=seed,
                                          view=view, norm_draws=norm_draws)
                for name, _layer in view.layers():
                    data[f"{name}.{spec.name}"] = xr.DataArray(
                        to_numpy(per_layer[name]), dims=(level_dim(name, level),),
                        attrs={"score": spec.name, "level": level, "hdi_prob": hdi_prob, "draws": int(
                            norm_draws.sizes["draw"]), "description": spec.description})
                continue
            for name, layer in view.layers():
                site = f"{name}.weight"
                loc, scale = view.moments[site]
                if spec.name == "prob_nonzero" and not view.closed_form:
                    if not delta > 0:
                        raise ValueError(f"delta must be positive, got {delta}")
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
                data[f"{name}.{spec.name}"] = xr.DataArray(
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
