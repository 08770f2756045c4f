"""Per-layer summary table of a posterior, and the ArviZ summary of group-level quantities."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import pandas as pd
import torch
import xarray as xr

from ..errors import UserError
from . import _arviz
from ._posterior import PosteriorView, check_draws, posterior_view
from .norm_draws import check_hdi_prob, hdi_z, norm_draws_dataset

__all__ = ["summary", "group_summary", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = {
    "kind": "linear or conv",
    "shape": "weight shape",
    "params": "weights + biases",
    "mean_abs_mu": "mean |posterior mean| of the weights",
    "mean_sigma": "mean posterior standard deviation of the weights",
    "frac_snr_lt_1": "fraction of weights with |mu|/sigma < 1",
    "frac_hdi_zero": "fraction of weights whose hdi_prob HDI contains zero",
    "groups": "output neurons / kernels",
    "groups_norm_lt_t": "groups whose posterior-mean norm is below the threshold",
    "groups_hdi_lt_t": "groups whose norm HDI reaches below the threshold (needs draws)",
    "kl": "KL(q || prior) of weights and biases (nats)",
}


def _check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise UserError(f"threshold must be a finite number >= 0, got {threshold!r}")
    return float(threshold)


@torch.no_grad()
def summary(model, guide, threshold: float = 1e-2, hdi_prob: float = 0.95, draws: int = 200, seed: int = 0,
            view: Optional[PosteriorView] = None, norm_draws: Optional[xr.Dataset] = None) -> pd.DataFrame:
    """One row per Bayesian layer (columns: :data:`SUMMARY_COLUMNS`), from closed-form moments.

    ``threshold`` is the absolute norm below which a group counts as redundant;
    ``draws`` (0 to skip) are guide draws of the group norms for ``groups_hdi_lt_t``.
    """
    threshold = _check_threshold(threshold)
    check_hdi_prob(hdi_prob)
    check_draws(draws, "draws", allow_zero=True)
    view = view or posterior_view(model, guide, seed=seed)
    if norm_draws is None and draws > 0:
        norm_draws = norm_draws_dataset(view, draws, seed)
    lows = None
    if norm_draws is not None:
        names = [f"{n}.norm" for n, _ in view.layers()]
        lows = _arviz.hdi(norm_draws[names], hdi_prob)
    z = hdi_z(hdi_prob)
    rows = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for name, layer in view.layers():
            loc, scale = view.moments[f"{name}.weight"]
            group_norm = loc.flatten(1).norm(dim=1)
            kl = sum(float(layer.prior_of(s).kl_elementwise(*view.moments[f"{name}.{s}"]).sum())
                     for s in layer.sites())
            row = {
                "layer": name,
                "kind": layer.kind,
                "shape": "x".join(str(s) for s in loc.shape),
                "params": sum(view.moments[f"{name}.{s}"][0].numel() for s in layer.sites()),
                "mean_abs_mu": float(loc.abs().mean()),
                "mean_sigma": float(scale.mean()),
                "frac_snr_lt_1": float((loc.abs() < scale).double().mean()),
                "frac_hdi_zero": float((loc.abs() <= z * scale).double().mean()),
                "groups": int(loc.shape[0]),
                "groups_norm_lt_t": int((group_norm < threshold).sum()),
            }
            if lows is not None:
                low = lows[f"{name}.norm"].sel(hdi="lower").values
                row["groups_hdi_lt_t"] = int((low < threshold).sum())
            row["kl"] = kl
            rows.append(row)
    table = pd.DataFrame(rows).set_index("layer")
    table.attrs.update({"threshold": threshold, "hdi_prob": hdi_prob, "moments": view.source})
    return table


def group_summary(idata, hdi_prob: float = 0.95, layers: Optional[Sequence[str]] = None,
                  in_channels: bool = False) -> pd.DataFrame:
    """``az.summary`` (mean, sd, HDI) of the group norms in ``idata.posterior``.

    Group-level quantities only (a few hundred numbers per layer), never every weight:
    that keeps ArviZ's statistics cheap. ``in_channels`` summarises input-channel norms.
    """
    check_hdi_prob(hdi_prob)
    post = _arviz.get_group(idata, "posterior")
    if post is None:
        raise UserError("the InferenceData has no posterior group: build it with group_draws > 0 or draws > 0")
    suffix = ".in_norm" if in_channels else ".norm"
    names = [v for v in post.data_vars if str(v).endswith(suffix)
             and (layers is None or str(v)[: -len(suffix)] in layers)]
    if not names:
        raise UserError(f"no group norms {'for layers ' + str(list(layers)) if layers else ''} in the posterior; "
                         f"available variables: {sorted(map(str, post.data_vars))}")
    return _arviz.summary_stats(post, hdi_prob, var_names=names)
