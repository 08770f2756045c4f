"""Agreement of redundancy scores across independent SVI runs (seeds): between-run statistics.

For each score variable (one value per group or input channel) of several runs:
rank correlation (Spearman) between every pair of runs, Jaccard overlap of the runs'
redundant sets (score below a threshold, or the bottom-k groups), the number of
redundant groups per run, and the between-run mean and spread of each group's score.

Groups are matched *by index*. That identity is meaningful for the input channels of
the first layer (input pixels), the output neurons of the last layer (classes), and
runs that share their initialisation; hidden units of independently initialised runs
are permutation-symmetric, so for them only the per-run counts and the spread of the
sorted scores are comparable.
"""
from __future__ import annotations

import itertools
from typing import Optional, Sequence

import numpy as np
import xarray as xr
from scipy.stats import rankdata

from ..errors import UserError
from .convert import RUN_DIM, combine_runs

__all__ = ["run_agreement", "spearman", "jaccard"]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties; NaN when a side is constant)."""
    ra, rb = rankdata(a), rankdata(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; two empty sets agree fully (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _redundant(values: np.ndarray, threshold: Optional[float], bottom_k: Optional[int]) -> set:
    if threshold is not None:
        return set(np.flatnonzero(values < threshold).tolist())
    order = np.argsort(values, kind="stable")
    return set(order[:bottom_k].tolist())


def run_agreement(scores: Sequence[xr.Dataset] | xr.Dataset, threshold: Optional[float] = None,
                  bottom_k: Optional[int] = None, bottom_fraction: float = 0.1,
                  variables: Optional[Sequence[str]] = None) -> xr.Dataset:
    """Between-run statistics of group-level scores.

    ``scores``: a list of ``score_dataset(..., level="group" or "in_channel")`` results, one
    per run, or one Dataset already stacked on a ``run`` dim (:func:`combine_runs`).
    Redundant set of a run: groups with score < ``threshold`` if given, else the
    ``bottom_k`` lowest (default ``ceil(bottom_fraction * groups)``).
    For each variable ``v`` the result has ``v.rank_corr`` (run, run_b), ``v.rank_corr_mean``,
    ``v.jaccard`` (run, run_b), ``v.jaccard_mean``, ``v.redundant_count`` (run),
    ``v.between_run_mean`` and ``v.between_run_sd`` (per group), and
    ``v.sorted_between_run_sd`` (spread of the k-th smallest score, permutation-invariant).
    """
    ds = scores if isinstance(scores, xr.Dataset) else combine_runs(list(scores))
    if RUN_DIM not in ds.dims:
        raise UserError(f"the scores need a {RUN_DIM!r} dim: pass a list of per-run score datasets")
    runs = [str(r) for r in ds[RUN_DIM].values]
    if len(runs) < 2:
        raise UserError("agreement needs at least 2 runs")
    if threshold is not None and bottom_k is not None:
        raise UserError("give threshold or bottom_k, not both")
    if bottom_k is not None and (not isinstance(bottom_k, int) or bottom_k < 1):
        raise UserError(f"bottom_k must be a positive integer, got {bottom_k!r}")
    if not 0 < bottom_fraction <= 1:
        raise UserError(f"bottom_fraction must lie in (0, 1], got {bottom_fraction}")
    names = list(variables) if variables is not None else [str(v) for v in ds.data_vars]
    out: dict[str, xr.DataArray] = {}
    for var in names:
        if var not in ds:
            raise UserError(f"unknown variable {var!r}; available: {sorted(map(str, ds.data_vars))}")
        arr = ds[var]
        other = [d for d in arr.dims if d != RUN_DIM]
        if len(other) != 1:
            raise UserError(f"{var!r} has dims {arr.dims}: agreement is computed on group-level scores "
                             "(one dim besides run); use score_dataset(level='group' or 'in_channel')")
        gdim = other[0]
        values = arr.transpose(RUN_DIM, gdim).values.astype(float)
        n = values.shape[1]
        k = bottom_k if bottom_k is not None else max(1, int(np.ceil(bottom_fraction * n)))
        sets = [_redundant(v, threshold, min(k, n)) for v in values]
        r = len(runs)
        corr, jac = np.eye(r), np.eye(r)
        for i, j in itertools.combinations(range(r), 2):
            corr[i, j] = corr[j, i] = spearman(values[i], values[j])
            jac[i, j] = jac[j, i] = jaccard(sets[i], sets[j])
        upper = np.triu_indices(r, 1)
        pair_dims = (RUN_DIM, f"{RUN_DIM}_b")
        label = {"statistic": "between-run"}
        out[f"{var}.rank_corr"] = xr.DataArray(corr, dims=pair_dims, attrs={**label, "method": "spearman"})
        out[f"{var}.rank_corr_mean"] = xr.DataArray(np.nanmean(corr[upper]) if np.isfinite(corr[upper]).any()
                                                    else np.nan, attrs=label)
        rule = f"score < {threshold}" if threshold is not None else f"bottom {k} of {n}"
        out[f"{var}.jaccard"] = xr.DataArray(jac, dims=pair_dims, attrs={**label, "redundant_set": rule})
        out[f"{var}.jaccard_mean"] = xr.DataArray(float(jac[upper].mean()), attrs={**label, "redundant_set": rule})
        out[f"{var}.redundant_count"] = xr.DataArray(np.array([len(s) for s in sets]), dims=(RUN_DIM,),
                                                     attrs={**label, "redundant_set": rule})
        out[f"{var}.between_run_mean"] = xr.DataArray(values.mean(0), dims=(gdim,), attrs=label)
        out[f"{var}.between_run_sd"] = xr.DataArray(values.std(0, ddof=1), dims=(gdim,), attrs=label)
        out[f"{var}.sorted_between_run_sd"] = xr.DataArray(np.sort(values, axis=1).std(0, ddof=1),
                                                           dims=(f"{gdim}_rank",), attrs=label)
    result = xr.Dataset(out, coords={RUN_DIM: runs, f"{RUN_DIM}_b": runs})
    result.attrs.update({"statistic": "between-run (independent SVI runs, not chains)",
                         "alignment": "groups matched by index"})
    return result
