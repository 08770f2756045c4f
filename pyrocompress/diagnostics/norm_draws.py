"""Posterior draws of the L2 norm of every output group and input channel, and their HDIs.

The one sampled quantity of the diagnostics: per layer, guide draws of each group's (neuron's
or kernel's) and each input channel's weight norm, as an ``xarray.Dataset`` with one chain of
i.i.d. draws, and the lower end of each norm's highest-density interval (the score
``norm_hdi_low``: the norm is positive, so its HDI never literally contains zero; a low lower
end marks a group that may be switched off).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import xarray as xr

from ..errors import UserError
from . import _arviz
from ._posterior import PosteriorView, check_draws, posterior_view
from .naming import check_level, dim_prefix

__all__ = ["norm_draws_dataset", "norm_hdi_scores", "hdi_z", "check_hdi_prob", "to_numpy"]


def hdi_z(hdi_prob: float) -> float:
    """Half-width of the central interval of a standard Normal holding ``hdi_prob``."""
    if not 0.0 < hdi_prob < 1.0:
        raise UserError(f"hdi_prob must lie in (0, 1), got {hdi_prob}")
    return math.sqrt(2.0) * torch.erfinv(torch.tensor(hdi_prob, dtype=torch.float64)).item()


def check_hdi_prob(hdi_prob: float) -> float:
    """``hdi_prob`` as a float, or a clear error outside (0, 1)."""
    hdi_z(hdi_prob)
    return float(hdi_prob)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


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
        raise UserError("score 'norm_hdi_low' is defined per group or input channel, not per weight")
    if norm_draws is None:
        check_draws(draws, "draws (needed for the HDI of group norms)")
        view = view or posterior_view(model, guide, seed=seed)
        norm_draws = norm_draws_dataset(view, draws, seed)
    suffix = "norm" if level == "group" else "in_norm"
    names = [n for n, _ in model.bayes_layers()]
    sub = norm_draws[[f"{n}.{suffix}" for n in names]]
    bounds = _arviz.hdi(sub, hdi_prob)
    return {n: torch.from_numpy(np.asarray(bounds[f"{n}.{suffix}"].sel(hdi="lower").values)) for n in names}
