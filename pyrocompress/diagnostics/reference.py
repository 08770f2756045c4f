"""A reference posterior by NUTS, judged for convergence, and how far a mean-field guide is from it.

:func:`reference_posterior` draws the posterior with
:func:`~pyrocompress.infer.nuts.sample_nuts` and checks the draws with ArviZ
(:mod:`~pyrocompress.diagnostics.convergence`): in weight space after hidden-unit relabelling
(and, for the record, as sampled) and in function space (the pointwise log-likelihood, where
the permutation symmetry does not exist). :func:`compare_to_guide` compares the HMC posterior
with a trained SVI guide weight by weight: means, standard deviations, the signal-to-noise
ranking (Spearman rank correlation) and the overlap (Jaccard) of the "redundant" sets (the
lowest-SNR fraction of the weights), listing the weights mean-field VI marks redundant that
HMC does not, and the reverse. Writing and reading a reference: :mod:`.reference_io`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from ..errors import UserError
from ..infer.guides import PosteriorGuide, is_posterior_guide
from ..infer.nuts import DEFAULT_MAX_PARAMS, NutsDraws, sample_nuts
from ..nn.model import BayesianModel
from ..runs import bayesian_config
from . import _arviz
from .agreement import spearman
from .convergence import ESS_PER_CHAIN, RHAT_THRESHOLD, convergence

__all__ = ["reference_posterior", "ReferencePosterior", "compare_to_guide", "model_fingerprint",
           "judge_draws"]


def model_fingerprint(model: BayesianModel) -> dict[str, Any]:
    """What defines the posterior NUTS samples: the architecture, the Bayesian layers' priors and the
    likelihood (without the data-set size, which NUTS sets to the data it is given)."""
    cfg = bayesian_config(model, None)
    likelihood = {k: v for k, v in cfg["likelihood"].items() if k != "dataset_size"}
    return {"architecture": cfg["architecture"], "bayesian_layers": cfg["bayesian_layers"],
            "priors": cfg["priors"], "likelihood": likelihood}


@dataclass
class ReferencePosterior:
    """NUTS draws (``samples[site]``: (chains, draws, *shape)), ArviZ data and convergence diagnostics."""

    samples: dict[str, torch.Tensor]
    inference_data: Any
    summary: Any  # pandas DataFrame: one row per scalar parameter (mean, sd, r_hat, ess_bulk, ess_tail, ...)
    diagnostics: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)

    def moments(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-site posterior mean and standard deviation over all chains and draws."""
        out = {}
        for site, s in self.samples.items():
            flat = s.reshape((-1,) + tuple(s.shape[2:]))
            out[site] = (flat.mean(0), flat.std(0))
        return out


def judge_draws(draws: NutsDraws) -> ReferencePosterior:
    """The ArviZ InferenceData of NUTS draws and their convergence in weight and function space."""
    sites = list(draws.samples)
    num_chains = draws.num_chains
    groups: dict[str, Any] = {"posterior": {s: draws.samples[s].numpy() for s in sites},
                              "sample_stats": {"diverging": draws.diverging},
                              "observed_data": {"y": draws.observed}}
    if draws.log_likelihood is not None:
        groups["log_likelihood"] = {"y": draws.log_likelihood}
        groups["dims"] = {"y": ["example"]}
    idata = _arviz.from_dict(**groups)
    summary, weight_diag = convergence(idata, "posterior", sites, num_chains, draws.diverging)
    diagnostics = {
        "num_params": draws.num_params,
        "num_chains": num_chains,
        "num_samples": draws.config["num_samples"],
        "warmup": draws.config["warmup"],
        "num_data": draws.num_data,
        "init": draws.config["init"],
        "seconds": draws.seconds,
        **{k: v for k, v in weight_diag.items() if k != "converged"},
        "divergences": int(draws.diverging.sum()),
        "divergences_per_chain": [int(d) for d in draws.diverging.sum(1)],
        "acceptance_rate": draws.acceptance_rate,
        "mean_accept_prob": draws.mean_accept_prob,
        "step_size": draws.step_size,
        "rhat_threshold": RHAT_THRESHOLD,
        "ess_threshold": ESS_PER_CHAIN * num_chains,
        "converged": weight_diag["converged"],
        "relabel": draws.relabel if draws.relabel is not None else {"target": "none"},
    }
    if draws.relabel is not None:
        raw_idata = _arviz.from_dict(posterior={s: draws.raw[s].numpy() for s in sites})
        _, raw_diag = convergence(raw_idata, "posterior", sites, num_chains, draws.diverging)
        diagnostics["unaligned"] = raw_diag
    if draws.log_likelihood is not None:
        _, fs_diag = convergence(idata, "log_likelihood", ["y"], num_chains, draws.diverging)
        fs_diag["num_examples"] = int(draws.log_likelihood.shape[2])
        diagnostics["function_space"] = fs_diag
    if num_chains == 1:
        diagnostics["note"] = "one chain: R-hat is undefined; run num_chains >= 2 to check convergence"
    return ReferencePosterior(draws.samples, idata, summary, diagnostics, dict(draws.config))


def reference_posterior(model: BayesianModel, data_split, *, num_chains: int = 2, num_samples: int = 200,
                        warmup: int = 200, max_params: int = DEFAULT_MAX_PARAMS, allow_large: bool = False,
                        seed: int = 0, guide=None, init: str = "auto", max_tree_depth: int = 8,
                        target_accept: float = 0.8, jit_compile: bool = False, num_threads: Optional[int] = 1,
                        relabel: str = "auto", function_space_examples: int = 200, dense_mass: bool = False,
                        progress: bool = False) -> ReferencePosterior:
    """Sample the model's posterior with NUTS on all of ``data_split`` and check convergence.

    The arguments are :func:`~pyrocompress.infer.nuts.sample_nuts`'s. The weight-space
    diagnostics (``diagnostics["max_rhat"]``, ``"converged"``, ...) and the stored draws are
    those of the relabelled draws; ``diagnostics["unaligned"]`` keeps the raw draws' figures;
    ``diagnostics["function_space"]`` the R-hat / ESS of the pointwise log-likelihood of the
    first ``function_space_examples`` examples (the InferenceData's ``log_likelihood`` group).
    """
    draws = sample_nuts(model, data_split, num_chains=num_chains, num_samples=num_samples, warmup=warmup,
                        max_params=max_params, allow_large=allow_large, seed=seed, guide=guide, init=init,
                        max_tree_depth=max_tree_depth, target_accept=target_accept, jit_compile=jit_compile,
                        num_threads=num_threads, relabel=relabel, function_space_examples=function_space_examples,
                        dense_mass=dense_mass, progress=progress)
    return judge_draws(draws)


# ---------------------------------------------------------------- comparison
def _rank_correlation(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman's rho, or None where it is undefined (fewer than two values, a constant side)."""
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    rho = spearman(a, b)
    return None if not np.isfinite(rho) else float(rho)


def _index_name(site: str, index: tuple[int, ...]) -> str:
    return f"{site}[{','.join(str(i) for i in index)}]"


def compare_to_guide(reference: ReferencePosterior, model: BayesianModel, guide: PosteriorGuide, *,
                     redundant_fraction: float = 0.5, include_bias: bool = False) -> dict[str, Any]:
    """Compare the HMC reference with a mean-field guide weight by weight.

    SNR = |mean| / std for both. The redundant set of each is the ``redundant_fraction``
    of the weights with the lowest SNR (what SNR pruning at that sparsity would delete).
    Returns ``{"summary": {...}, "weights": [row per weight]}``: the summary holds the
    Spearman rank correlations of SNR, means and stds (overall and per site), the mean
    absolute difference of the means (in HMC standard deviations), the median ratio of
    VI to HMC standard deviations, the Jaccard overlap of the redundant sets, and the
    names of the weights only VI (``vi_only_redundant``) or only HMC (``hmc_only_redundant``)
    mark redundant. Biases are left out unless ``include_bias``.
    """
    if not 0.0 < float(redundant_fraction) < 1.0:
        raise UserError(f"redundant_fraction must be in (0, 1), got {redundant_fraction}")
    if not is_posterior_guide(guide):
        raise TypeError("compare_to_guide needs a pyrocompress MeanFieldGuide")
    guide.check_belongs_to(model)
    moments = reference.moments()
    sites = [s for s in model.site_names() if include_bias or s.endswith(".weight")]
    missing = [s for s in sites if s not in moments]
    if missing:
        raise UserError(f"the reference has no draws of {missing}; was it sampled from this model?")
    rows: list[dict[str, Any]] = []
    cols: dict[str, list] = {k: [] for k in ("hmc_mean", "hmc_std", "vi_mean", "vi_std")}
    site_of: list[str] = []
    for site in sites:
        h_mean, h_std = (t.double().numpy() for t in moments[site])
        with torch.no_grad():
            v_mean = guide.loc_of(site).detach().double().cpu().numpy()
            v_std = guide.scale_of(site).detach().double().cpu().numpy()
        if h_mean.shape != v_mean.shape:
            raise UserError(f"site {site}: reference shape {h_mean.shape} differs from the guide's {v_mean.shape}")
        for key, arr in (("hmc_mean", h_mean), ("hmc_std", h_std), ("vi_mean", v_mean), ("vi_std", v_std)):
            cols[key].append(arr.reshape(-1))
        for idx in np.ndindex(*h_mean.shape):
            rows.append({"name": _index_name(site, idx), "site": site})
        site_of.extend([site] * h_mean.size)
    arr = {k: np.concatenate(v) for k, v in cols.items()}
    tiny = np.finfo(float).tiny
    hmc_snr = np.abs(arr["hmc_mean"]) / np.maximum(arr["hmc_std"], tiny)
    vi_snr = np.abs(arr["vi_mean"]) / np.maximum(arr["vi_std"], tiny)
    n = hmc_snr.size
    k = int(round(float(redundant_fraction) * n))
    k = min(max(k, 1), n)
    hmc_red = np.zeros(n, dtype=bool)
    vi_red = np.zeros(n, dtype=bool)
    hmc_red[np.argsort(hmc_snr, kind="stable")[:k]] = True
    vi_red[np.argsort(vi_snr, kind="stable")[:k]] = True
    for i, row in enumerate(rows):
        row.update({"hmc_mean": arr["hmc_mean"][i], "hmc_std": arr["hmc_std"][i], "vi_mean": arr["vi_mean"][i],
                    "vi_std": arr["vi_std"][i], "hmc_snr": hmc_snr[i], "vi_snr": vi_snr[i],
                    "hmc_redundant": bool(hmc_red[i]), "vi_redundant": bool(vi_red[i])})
    union = int((hmc_red | vi_red).sum())
    site_arr = np.array(site_of)
    per_site = {}
    for site in sites:
        m = site_arr == site
        per_site[site] = {"n": int(m.sum()), "spearman_snr": _rank_correlation(hmc_snr[m], vi_snr[m]),
                          "spearman_mean": _rank_correlation(arr["hmc_mean"][m], arr["vi_mean"][m]),
                          "median_std_ratio": float(np.median(arr["vi_std"][m] / np.maximum(arr["hmc_std"][m], tiny)))}
    names = [r["name"] for r in rows]
    summary = {
        "num_weights": n,
        "redundant_fraction": float(redundant_fraction),
        "redundant_count": k,
        "spearman_snr": _rank_correlation(hmc_snr, vi_snr),
        "spearman_mean": _rank_correlation(arr["hmc_mean"], arr["vi_mean"]),
        "spearman_std": _rank_correlation(arr["hmc_std"], arr["vi_std"]),
        "mean_abs_mean_diff_in_hmc_std": float(np.mean(np.abs(arr["vi_mean"] - arr["hmc_mean"])
                                                        / np.maximum(arr["hmc_std"], tiny))),
        "median_std_ratio_vi_over_hmc": float(np.median(arr["vi_std"] / np.maximum(arr["hmc_std"], tiny))),
        "frac_vi_std_below_hmc": float(np.mean(arr["vi_std"] < arr["hmc_std"])),
        "jaccard_redundant": float((hmc_red & vi_red).sum() / union) if union else 1.0,
        "vi_only_redundant": [names[i] for i in np.flatnonzero(vi_red & ~hmc_red)],
        "hmc_only_redundant": [names[i] for i in np.flatnonzero(hmc_red & ~vi_red)],
        "per_site": per_site,
        "reference_converged": reference.diagnostics.get("converged"),
    }
    return {"summary": summary, "weights": rows}
