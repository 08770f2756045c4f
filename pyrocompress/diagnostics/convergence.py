"""Have MCMC chains converged? Split R-hat, bulk and tail ESS and divergences, judged per group of draws.

The thresholds are Vehtari et al. (2021)'s: R-hat below :data:`RHAT_THRESHOLD` for every
scalar, bulk and tail ESS of at least :data:`ESS_PER_CHAIN` per chain, and no divergent
transition. One chain never counts as converged (R-hat needs two).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import _arviz

__all__ = ["convergence", "RHAT_THRESHOLD", "ESS_PER_CHAIN"]

RHAT_THRESHOLD = 1.01  # Vehtari et al. (2021)
ESS_PER_CHAIN = 100  # bulk and tail ESS >= 100 per chain (Vehtari et al. 2021 ask >= 400 for 4 chains)


def convergence(idata, group: str, var_names: Sequence[str], num_chains: int,
                diverging: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The ArviZ summary of one group of ``idata`` (one row per scalar) and the verdict:
    ``max_rhat``, ``median_rhat``, ``frac_rhat_above_threshold``, ``min_ess_bulk``,
    ``median_ess_bulk``, ``min_ess_tail`` and ``converged``."""
    summary = _arviz.summary_all(idata, group, var_names)
    rhat = summary["r_hat"].to_numpy(dtype=float)
    ess_bulk = summary["ess_bulk"].to_numpy(dtype=float)
    ess_tail = summary["ess_tail"].to_numpy(dtype=float)
    ess_needed = ESS_PER_CHAIN * num_chains
    finite = rhat[np.isfinite(rhat)]
    diag = {
        "max_rhat": float(finite.max()) if finite.size else None,
        "median_rhat": float(np.median(finite)) if finite.size else None,
        "frac_rhat_above_threshold": float((finite > RHAT_THRESHOLD).mean()) if finite.size else None,
        "min_ess_bulk": float(np.nanmin(ess_bulk)),
        "median_ess_bulk": float(np.nanmedian(ess_bulk)),
        "min_ess_tail": float(np.nanmin(ess_tail)),
        "converged": bool(num_chains > 1 and finite.size == rhat.size and finite.max() < RHAT_THRESHOLD
                          and np.nanmin(ess_bulk) >= ess_needed and np.nanmin(ess_tail) >= ess_needed
                          and diverging.sum() == 0),
    }
    return summary, diag
