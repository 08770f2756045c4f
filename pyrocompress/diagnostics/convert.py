"""From a trained model and guide to an ``arviz.InferenceData`` with named dims.

Groups (see docs/diagnostics.md):

* ``posterior_moments``: every Bayesian site (``"fc1.weight"``, ``"fc1.bias"``, ...) with
  a leading ``moment`` dim (``"loc"``, ``"scale"``) and the site's named dims: exact for a
  pyrocompress guide, estimated from draws for any other guide. Closed-form scores need
  only this group, however large the network.
* ``posterior`` (when draws are asked for): one chain of i.i.d. guide draws on ``draw``:
  the group norms ``"<layer>.norm"`` (``<layer>_out``) and ``"<layer>.in_norm"``
  (``<layer>_in``) always, and every weight and bias when ``draws > 0``.
* ``observed_data``, ``posterior_predictive``, ``log_likelihood`` (variable ``"obs"``,
  dim ``obs_id``) on a data subset, from the same joint weight draws, so that
  ``az.loo`` / ``az.compare`` can compare a dense and a compressed model.

:func:`combine_runs` stacks several runs (seeds) along a ``run`` dim; it is not called
``chain`` because a guide's draws are i.i.d. and R-hat across SVI runs would measure
optimisation variability, not MCMC convergence.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import xarray as xr
from pyro import poutine

from ..errors import UserError
from .._scope import pyro_scope
from . import _arviz
from ._posterior import PosteriorView, check_draws, posterior_view
from .naming import dim_prefix, site_coords, site_dims
from .norm_draws import norm_draws_dataset, to_numpy

__all__ = ["to_inference_data", "combine_runs", "moments_dataset", "RUN_DIM"]

RUN_DIM = "run"


def moments_dataset(view: PosteriorView) -> xr.Dataset:
    """The ``posterior_moments`` group: loc and scale of every site on a ``moment`` dim."""
    data, coords = {}, {}
    for name, layer in view.layers():
        for site in layer.sites():
            full = f"{name}.{site}"
            loc, scale = view.moments[full]
            dims = site_dims(name, layer, site)
            data[full] = xr.DataArray(np.stack([to_numpy(loc), to_numpy(scale)]), dims=("moment",) + dims)
            coords.update(site_coords(name, layer, site))
    ds = xr.Dataset(data, coords={"moment": ["loc", "scale"], **coords})
    ds.attrs["moments"] = view.source
    return ds


def _forward_logits(model, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The network's logits with its Bayesian sites fixed to ``weights`` (one joint draw)."""
    with pyro_scope():
        return poutine.condition(model.net, data=weights)(x)


@torch.no_grad()
def _predictive(model, view: PosteriorView, draws: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Posterior-predictive labels and pointwise log-likelihood, (draws, N) each."""
    device = model.device
    x, y = x.to(device), y.to(device)
    n = next(iter(draws.values())).shape[0]
    ypred, loglik = [], []
    was_training = model.training
    model.eval()
    try:
        for s in range(n):
            logits = _forward_logits(model, {k: v[s].to(device) for k, v in draws.items()}, x)
            logp = F.log_softmax(logits, -1).cpu()
            loglik.append(logp.gather(1, y.cpu()[:, None])[:, 0])
            ypred.append(torch.multinomial(logp.exp(), 1, generator=generator)[:, 0])
    finally:
        model.train(was_training)
    return torch.stack(ypred).numpy(), torch.stack(loglik).double().numpy()


def to_inference_data(model, guide, draws: int = 0, data=None, seed: int = 0, group_draws: int = 200,
                      moment_draws: int = 200, view: Optional[PosteriorView] = None):
    """An ``arviz.InferenceData`` of a model's posterior under a guide, with named dims.

    ``draws``: guide draws of every weight and bias kept in ``posterior`` (0: none, only
    the moments; weights' draws cost ``draws x params`` floats). ``group_draws``: draws
    of the group norms when ``draws == 0`` (when ``draws > 0`` the norms come from those
    same draws); 0 leaves the ``posterior`` group out. ``data``: a ``Split`` (``.x``,
    ``.y``) for ``observed_data`` / ``posterior_predictive`` / ``log_likelihood``; it
    needs ``draws > 0``. ``seed`` makes every draw reproducible. ``moment_draws``: draws
    used to estimate moments of a guide without closed-form loc/scale (with a warning).
    """
    check_draws(draws, "draws", allow_zero=True)
    check_draws(group_draws, "group_draws", allow_zero=True)
    if data is not None and draws <= 0:
        raise UserError("observed_data / posterior_predictive / log_likelihood need joint posterior draws: "
                         f"pass draws > 0 (got draws={draws})")
    view = view or posterior_view(model, guide, moment_draws=moment_draws, seed=seed)
    groups: dict[str, xr.Dataset] = {"posterior_moments": moments_dataset(view)}
    generator = torch.Generator().manual_seed(int(seed))
    sampled: Optional[dict[str, torch.Tensor]] = None
    if draws > 0:
        sampled = view.sample(draws, generator)
        post, coords = {}, {"chain": [0], "draw": np.arange(draws)}
        for name, layer in view.layers():
            for site in layer.sites():
                full = f"{name}.{site}"
                post[full] = xr.DataArray(to_numpy(sampled[full])[None], dims=("chain", "draw")
                                          + site_dims(name, layer, site))
                coords.update(site_coords(name, layer, site))
            w = sampled[f"{name}.weight"].square()
            p = dim_prefix(name)
            post[f"{name}.norm"] = xr.DataArray(to_numpy(w.flatten(2).sum(2).sqrt())[None],
                                                dims=("chain", "draw", f"{p}_out"))
            post[f"{name}.in_norm"] = xr.DataArray(to_numpy(w.transpose(1, 2).flatten(2).sum(2).sqrt())[None],
                                                   dims=("chain", "draw", f"{p}_in"))
        groups["posterior"] = xr.Dataset(post, coords=coords)
    elif group_draws > 0:
        groups["posterior"] = norm_draws_dataset(view, group_draws, seed)
    if "posterior" in groups:
        groups["posterior"].attrs["draws"] = "i.i.d. draws of the guide (one chain; not MCMC)"
    if data is not None:
        x, y = getattr(data, "x", None), getattr(data, "y", None)
        if x is None or y is None:
            raise TypeError("data must be a Split with .x and .y (e.g. load_dataset(...).test)")
        obs_id = np.arange(len(y))
        ypred, loglik = _predictive(model, view, sampled, x, y, generator)
        groups["observed_data"] = xr.Dataset({"obs": xr.DataArray(to_numpy(y), dims=("obs_id",))},
                                             coords={"obs_id": obs_id})
        groups["posterior_predictive"] = xr.Dataset(
            {"obs": xr.DataArray(ypred[None], dims=("chain", "draw", "obs_id"))},
            coords={"chain": [0], "draw": np.arange(draws), "obs_id": obs_id})
        groups["log_likelihood"] = xr.Dataset(
            {"obs": xr.DataArray(loglik[None], dims=("chain", "draw", "obs_id"))},
            coords={"chain": [0], "draw": np.arange(draws), "obs_id": obs_id})
    attrs = {"created_by": "pyrocompress.diagnostics", "moments": view.source, "seed": int(seed),
             "guide": type(guide).__name__}
    return _arviz.make_inference_data(groups, attrs=attrs)


def combine_runs(runs: Sequence, names: Optional[Sequence[str]] = None):
    """Stack several runs' ``InferenceData`` (or ``xarray.Dataset``) along a new ``run`` dim.

    Every group present in all runs is concatenated; dims and coords must match exactly
    (same architecture; same number of draws). The dim is ``run``, not ``chain``: the
    draws of one guide are i.i.d., and differences between SVI runs are between-run
    variability of the optimum found, not a sign of (non-)convergence of a Markov chain.
    """
    runs = list(runs)
    if len(runs) < 2:
        raise UserError(f"combine_runs needs at least 2 runs, got {len(runs)}")
    names = [str(n) for n in names] if names is not None else [f"run{i}" for i in range(len(runs))]
    if len(names) != len(runs) or len(set(names)) != len(names):
        raise UserError(f"names must be {len(runs)} distinct labels, got {names}")
    index = pd.Index(names, name=RUN_DIM)
    if all(isinstance(r, xr.Dataset) for r in runs):
        return _concat(runs, index, "dataset")
    if not all(_arviz.is_inference_data(r) for r in runs):
        raise TypeError("combine_runs takes InferenceData objects (from to_inference_data) or xarray Datasets")
    common = [g for g in runs[0].groups() if all(g in r.groups() for r in runs)]
    groups = {g: _concat([r[g] for r in runs], index, g) for g in common}
    return _arviz.make_inference_data(groups, attrs={"combined_runs": ", ".join(names)})


def _concat(datasets: list[xr.Dataset], index: pd.Index, where: str) -> xr.Dataset:
    names = [sorted(ds.data_vars) for ds in datasets]
    if any(n != names[0] for n in names):
        raise UserError(f"group {where!r}: the runs have different variables; combine runs of the same model")
    try:
        out = xr.concat(datasets, dim=index, join="exact", combine_attrs="drop_conflicts")
    except ValueError as exc:
        raise UserError(f"group {where!r}: the runs' dims or coords differ ({exc}); combine runs of the same "
                         "architecture with the same number of draws") from None
    return out
