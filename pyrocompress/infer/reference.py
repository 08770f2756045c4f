"""A reference posterior by NUTS, and how far a mean-field guide is from it.

:func:`reference_posterior` runs Pyro's NUTS on a :class:`~pyrocompress.nn.BayesianModel`
(an ordinary Pyro model: ``model(x, y)`` with one ``PyroSample`` site per weight tensor)
on the full data given (the likelihood's ``dataset_size`` is set to that data, so the
plate scale is 1), with several chains, and checks convergence with ArviZ (split R-hat,
bulk and tail ESS). :func:`compare_to_guide` compares the HMC posterior with a trained
SVI guide weight by weight: means, standard deviations, the signal-to-noise ranking
(Spearman rank correlation) and the overlap (Jaccard) of the "redundant" sets (the
lowest-SNR fraction of the weights), listing the weights mean-field VI marks redundant
that HMC does not, and the reverse.

Chains run one after the other in this process, each seeded ``seed + chain``: Pyro's
parallel chains spawn processes that must pickle the model, which on a CPU box with few
cores is slower and fragile. NUTS scales badly with the number of parameters and the
posterior of a neural network is multimodal (hidden-unit permutations and sign flips), so
models with more than :data:`DEFAULT_MAX_PARAMS` latent parameters are refused unless
``allow_large=True``. With ``init="guide"`` (the default when a guide is given) every chain
starts from its own draw of the guide, so the chains explore the mode VI found: the
comparison is then local to that mode, which is what per-weight statistics can compare
(chains in different permutation modes would average unrelated weights). Chains may still
switch to another permutation copy during warm-up, so the draws are relabelled to the
guide's copy (:mod:`~pyrocompress.infer.relabel`) before any per-weight statistic, and the
convergence is also judged in function space (R-hat and ESS of the pointwise
log-likelihood), where the symmetry does not exist.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import pyro
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_uniform, init_to_value

from .._scope import pyro_scope
from ..nn.model import BayesianModel
from .relabel import RELABEL_MODES, align_hidden_units, permutation_groups

__all__ = ["reference_posterior", "compare_to_guide", "ReferencePosterior", "count_latent_parameters",
           "write_reference", "load_reference", "model_fingerprint", "ReferenceMismatchError",
           "DEFAULT_MAX_PARAMS", "INIT_STRATEGIES", "TooLargeError", "pointwise_log_likelihood"]

#: NUTS is refused above this many latent parameters unless ``allow_large=True``.
DEFAULT_MAX_PARAMS = 2000
INIT_STRATEGIES = ("auto", "guide", "uniform", "prior", "median")
RHAT_THRESHOLD = 1.01  # Vehtari et al. (2021)
ESS_PER_CHAIN = 100  # bulk and tail ESS >= 100 per chain (Vehtari et al. 2021 ask >= 400 for 4 chains)


class TooLargeError(ValueError):
    """The model has more latent parameters than NUTS is allowed to sample here."""


class ReferenceMismatchError(ValueError):
    """A stored reference posterior is not the posterior of the model it is compared with."""


def model_fingerprint(model: BayesianModel) -> dict[str, Any]:
    """What defines the posterior NUTS samples: the architecture, the Bayesian layers' priors and the
    likelihood (without the data-set size, which NUTS sets to the data it is given)."""
    from ..runs import bayesian_config

    cfg = bayesian_config(model, None)
    likelihood = {k: v for k, v in cfg["likelihood"].items() if k != "dataset_size"}
    return {"architecture": cfg["architecture"], "bayesian_layers": cfg["bayesian_layers"],
            "priors": cfg["priors"], "likelihood": likelihood}


def count_latent_parameters(model: BayesianModel) -> int:
    """Number of scalar latent parameters (every weight and bias of every Bayesian layer)."""
    return sum(math.prod(layer.site_shape(site)) for _, layer in model.bayes_layers() for site in layer.sites())


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


def _as_xy(data) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return torch.as_tensor(data[0]), torch.as_tensor(data[1])
    raise TypeError("data_split must be a Split (with .x and .y) or a tuple (x, y)")


def _init_strategy(init: str, model: BayesianModel, guide, chain: int, seed: int):
    if init == "guide":
        gen = torch.Generator().manual_seed(seed + 7919 * (chain + 1))
        values = {}
        with torch.no_grad():
            for site in model.site_names():
                loc, scale = guide.loc_of(site), guide.scale_of(site)
                noise = torch.randn(loc.shape, generator=gen).to(device=loc.device, dtype=loc.dtype)
                values[site] = (loc + scale * noise).detach().clone()
        return init_to_value(values=values)
    if init == "prior":
        return init_to_sample
    if init == "median":
        return init_to_median(num_samples=15)
    return init_to_uniform(radius=2.0)


def reference_posterior(model: BayesianModel, data_split, *, num_chains: int = 2, num_samples: int = 200,
                        warmup: int = 200, max_params: int = DEFAULT_MAX_PARAMS, allow_large: bool = False,
                        seed: int = 0, guide=None, init: str = "auto", max_tree_depth: int = 8,
                        target_accept: float = 0.8, jit_compile: bool = False, num_threads: Optional[int] = 1,
                        relabel: str = "auto", function_space_examples: int = 200, dense_mass: bool = False,
                        progress: bool = False) -> ReferencePosterior:
    """Sample the model's posterior with NUTS on all of ``data_split`` and check convergence.

    ``data_split`` is a :class:`~pyrocompress.data.Split` or ``(x, y)``; the likelihood's
    ``dataset_size`` is set to its size for the run (plate scale 1) and restored after.
    ``init``: ``"guide"`` (one draw of ``guide`` per chain; the default ``"auto"`` picks it
    when a guide is given), ``"uniform"`` (Pyro's default, uniform in (-2, 2) in the
    unconstrained space; ``"auto"`` without a guide), ``"prior"`` or ``"median"``.
    Models with more than ``max_params`` latent parameters raise :class:`TooLargeError`
    unless ``allow_large``. ``num_threads`` sets torch's intra-op threads while sampling
    (restored after; ``None`` leaves them): NUTS evaluates a tiny network thousands of
    times, and for tensors this small extra threads mostly add synchronisation (measure
    with ``benchmarks/bench_moments_reference.py``). ``jit_compile`` traces the potential
    with ``torch.jit`` (Pyro's option: cheaper gradients, a slower start).

    ``relabel``: the hidden-unit permutation symmetry (:mod:`pyrocompress.infer.relabel`).
    ``"guide"`` maps every draw to the permutation copy nearest the guide's means, ``"mean"``
    to the draws' own mean (Stephens' relabelling), ``"none"`` keeps the draws as sampled;
    ``"auto"`` is ``"guide"`` with a guide, else ``"mean"``. The weight-space diagnostics
    (``diagnostics["max_rhat"]``, ``"converged"``, ...) and the stored draws are those of the
    relabelled draws; ``diagnostics["unaligned"]`` keeps the raw draws' figures. Models without
    exchangeable hidden units are left as they are. ``function_space_examples``: the first that
    many examples get their pointwise log-likelihood per draw (the InferenceData's
    ``log_likelihood`` group) and its R-hat / ESS in ``diagnostics["function_space"]``: the
    symmetry-free check that the chains agree on the predictions (0 turns it off).
    ``dense_mass`` adapts a dense mass matrix in warm-up (Pyro's ``full_mass``) instead of a
    diagonal one: it follows correlated directions (collinear inputs, the softmax's shift
    invariance) at O(d^2) memory and O(d^2)-O(d^3) time per step, fine for a few hundred weights.
    """
    import arviz as az

    if not isinstance(model, BayesianModel):
        raise TypeError("reference_posterior needs a pyrocompress BayesianModel (an ordinary Pyro model works "
                        "with pyro.infer.MCMC directly)")
    for name, value, low in (("num_chains", num_chains, 1), ("num_samples", num_samples, 1), ("warmup", warmup, 0),
                             ("max_tree_depth", max_tree_depth, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    init = str(init).lower()
    if init not in INIT_STRATEGIES:
        raise ValueError(f"unknown init {init!r}; valid: {list(INIT_STRATEGIES)}")
    if init == "auto":
        init = "guide" if guide is not None else "uniform"
    relabel = str(relabel).lower()
    if relabel not in RELABEL_MODES:
        raise ValueError(f"unknown relabel {relabel!r}; valid: {list(RELABEL_MODES)}")
    if relabel == "auto":
        relabel = "guide" if guide is not None else "mean"
    if relabel == "guide" and (guide is None or not hasattr(guide, "loc_of")):
        raise ValueError("relabel='guide' needs a pyrocompress MeanFieldGuide (guide=...); use relabel='mean'")
    if isinstance(function_space_examples, bool) or not isinstance(function_space_examples, int) \
            or function_space_examples < 0:
        raise ValueError(f"function_space_examples must be an integer >= 0, got {function_space_examples!r}")
    if init == "guide":
        if guide is None or not hasattr(guide, "loc_of"):
            raise ValueError("init='guide' needs a pyrocompress MeanFieldGuide (guide=...)")
        guide.check_belongs_to(model)
    n_params = count_latent_parameters(model)
    if n_params > max_params and not allow_large:
        raise TooLargeError(
            f"the model has {n_params} latent parameters, above max_params={max_params}: NUTS needs many gradient "
            f"evaluations per draw, its cost grows quickly with the dimension, and the posterior of a neural network "
            f"is multimodal, so a reference this large is slow and unlikely to converge. Use a smaller model or "
            f"pass allow_large=True (--allow-large) to run anyway.")
    x, y = _as_xy(data_split)
    if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"data_split needs as many labels as inputs and at least one example; got "
                         f"{x.shape[0]} inputs and {y.shape[0]} labels")
    device = model.device
    x, y = x.to(device), y.to(device)

    lik = model.likelihood
    old_size = lik.dataset_size
    lik.dataset_size = int(x.shape[0])  # the whole data set is in every evaluation: plate scale 1
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        torch.set_num_threads(num_threads)
    chains: list[dict[str, torch.Tensor]] = []
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    accept: list[float] = []
    step_sizes: list[float] = []
    accept_prob: list[float] = []
    start = time.perf_counter()
    try:
        with pyro_scope():
            for chain in range(num_chains):
                pyro.set_rng_seed(seed + chain)
                kernel = NUTS(model, max_tree_depth=max_tree_depth, target_accept_prob=float(target_accept),
                              init_strategy=_init_strategy(init, model, guide, chain, seed),
                              jit_compile=bool(jit_compile), ignore_jit_warnings=True, full_mass=bool(dense_mass))
                seen: dict[str, float] = {}

                def _record(kern, _params, stage, _i, seen=seen):  # read before MCMC's cleanup resets it
                    if stage == "Sample":
                        seen["accept_prob"] = float(getattr(kern, "_mean_accept_prob", float("nan")))

                mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup, num_chains=1,
                            disable_progbar=not progress, hook_fn=_record)
                mcmc.run(x, y)
                chains.append({k: v.detach().cpu() for k, v in mcmc.get_samples().items()})
                diag = mcmc.diagnostics()
                div = diag.get("divergences", {}).get("chain 0", [])
                diverging[chain, [int(i) for i in div if 0 <= int(i) < num_samples]] = True
                rate = diag.get("acceptance rate", {}).get("chain 0")
                accept.append(float(rate) if rate is not None else float("nan"))
                # the adapted step size and the mean Metropolis acceptance probability after warm-up (the
                # "acceptance rate" above is the share of iterations that moved, near 1 for NUTS)
                step_sizes.append(float(kernel.step_size))
                accept_prob.append(seen.get("accept_prob", float("nan")))
    finally:
        lik.dataset_size = old_size
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - start

    sites = model.site_names()
    raw = {s: torch.stack([c[s] for c in chains]) for s in sites}
    relabel_report: Optional[dict[str, Any]] = None
    samples = raw
    if relabel != "none" and permutation_groups(model):
        samples, relabel_report = align_hidden_units(raw, model, target=relabel, guide=guide)
    posterior = {s: samples[s].numpy() for s in sites}
    groups: dict[str, Any] = {"posterior": posterior, "sample_stats": {"diverging": diverging},
                              "observed_data": {"y": y.detach().cpu().numpy()}}
    n_fs = min(int(function_space_examples), int(x.shape[0]))
    if n_fs > 0:
        groups["log_likelihood"] = {"y": pointwise_log_likelihood(model, samples, x[:n_fs], y[:n_fs])}
        groups["dims"] = {"y": ["example"]}
    idata = az.from_dict(**groups)
    summary, weight_diag = _convergence(idata, "posterior", sites, num_chains, diverging)
    diagnostics = {
        "num_params": n_params,
        "num_chains": num_chains,
        "num_samples": num_samples,
        "warmup": warmup,
        "num_data": int(x.shape[0]),
        "init": init,
        "seconds": seconds,
        **{k: v for k, v in weight_diag.items() if k != "converged"},
        "divergences": int(diverging.sum()),
        "divergences_per_chain": [int(d) for d in diverging.sum(1)],
        "acceptance_rate": accept,
        "mean_accept_prob": accept_prob,
        "step_size": step_sizes,
        "rhat_threshold": RHAT_THRESHOLD,
        "ess_threshold": ESS_PER_CHAIN * num_chains,
        "converged": weight_diag["converged"],
        "relabel": relabel_report if relabel_report is not None else {"target": "none"},
    }
    if relabel_report is not None:
        raw_idata = az.from_dict(posterior={s: raw[s].numpy() for s in sites})
        _, raw_diag = _convergence(raw_idata, "posterior", sites, num_chains, diverging)
        diagnostics["unaligned"] = raw_diag
    if n_fs > 0:
        _, fs_diag = _convergence(idata, "log_likelihood", ["y"], num_chains, diverging)
        fs_diag["num_examples"] = n_fs
        diagnostics["function_space"] = fs_diag
    if num_chains == 1:
        diagnostics["note"] = "one chain: R-hat is undefined; run num_chains >= 2 to check convergence"
    config = {"num_chains": num_chains, "num_samples": num_samples, "warmup": warmup, "seed": seed, "init": init,
              "max_tree_depth": max_tree_depth, "target_accept": float(target_accept), "max_params": max_params,
              "allow_large": allow_large, "jit_compile": bool(jit_compile), "relabel": relabel,
              "function_space_examples": n_fs, "dense_mass": bool(dense_mass)}
    return ReferencePosterior(samples, idata, summary, diagnostics, config)


def _convergence(idata, group: str, var_names: list[str], num_chains: int,
                 diverging: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """ArviZ summary of one group and the convergence verdict (split R-hat, bulk/tail ESS, divergences)."""
    import warnings

    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # R-hat of one chain is undefined: reported as NaN
        summary = az.summary(idata, group=group, var_names=var_names, kind="all", round_to="none")
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


def pointwise_log_likelihood(model: BayesianModel, samples: dict[str, torch.Tensor], x: torch.Tensor,
                             y: torch.Tensor) -> np.ndarray:
    """log p(y_i | x_i, w) for every draw: (chains, draws, examples).

    The function-space view of a posterior: invariant to the hidden-unit permutations (and any
    other reparametrisation) that make weight-space R-hat fail, so its R-hat and ESS say whether
    the chains agree on what the network predicts (Izmailov et al. 2021 judge HMC for neural
    networks this way). Stored as the ``log_likelihood`` group of the InferenceData (ArviZ's
    place for it: ``az.loo`` / ``az.waic`` read it).
    """
    from pyro import poutine

    sites = list(samples)
    chains, draws = samples[sites[0]].shape[:2]
    device = model.device
    out = np.empty((chains, draws, int(x.shape[0])))
    lik = model.likelihood
    old_size = lik.dataset_size
    lik.dataset_size = int(x.shape[0])
    try:
        with torch.no_grad(), pyro_scope():
            for c in range(chains):
                for d in range(draws):
                    draw = {s: samples[s][c, d].to(device) for s in sites}
                    trace = poutine.trace(poutine.condition(model, data=draw)).get_trace(x, y)
                    out[c, d] = trace.nodes["obs"]["fn"].log_prob(y).detach().cpu().double().numpy()
    finally:
        lik.dataset_size = old_size
    return out


# ---------------------------------------------------------------- comparison
def _spearman(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    from scipy.stats import spearmanr

    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    rho = spearmanr(a, b).statistic
    return None if not np.isfinite(rho) else float(rho)


def _index_name(site: str, index: tuple[int, ...]) -> str:
    return f"{site}[{','.join(str(i) for i in index)}]"


def compare_to_guide(reference: ReferencePosterior, model: BayesianModel, guide, *,
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
        raise ValueError(f"redundant_fraction must be in (0, 1), got {redundant_fraction}")
    if not hasattr(guide, "loc_of"):
        raise TypeError("compare_to_guide needs a pyrocompress MeanFieldGuide")
    guide.check_belongs_to(model)
    moments = reference.moments()
    sites = [s for s in model.site_names() if include_bias or s.endswith(".weight")]
    missing = [s for s in sites if s not in moments]
    if missing:
        raise ValueError(f"the reference has no draws of {missing}; was it sampled from this model?")
    rows: list[dict[str, Any]] = []
    cols = {k: [] for k in ("hmc_mean", "hmc_std", "vi_mean", "vi_std")}
    site_of: list[str] = []
    for site in sites:
        h_mean, h_std = (t.double().numpy() for t in moments[site])
        with torch.no_grad():
            v_mean = guide.loc_of(site).detach().double().cpu().numpy()
            v_std = guide.scale_of(site).detach().double().cpu().numpy()
        if h_mean.shape != v_mean.shape:
            raise ValueError(f"site {site}: reference shape {h_mean.shape} differs from the guide's {v_mean.shape}")
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
        per_site[site] = {"n": int(m.sum()), "spearman_snr": _spearman(hmc_snr[m], vi_snr[m]),
                          "spearman_mean": _spearman(arr["hmc_mean"][m], arr["vi_mean"][m]),
                          "median_std_ratio": float(np.median(arr["vi_std"][m] / np.maximum(arr["hmc_std"][m], tiny)))}
    names = [r["name"] for r in rows]
    summary = {
        "num_weights": n,
        "redundant_fraction": float(redundant_fraction),
        "redundant_count": k,
        "spearman_snr": _spearman(hmc_snr, vi_snr),
        "spearman_mean": _spearman(arr["hmc_mean"], arr["vi_mean"]),
        "spearman_std": _spearman(arr["hmc_std"], arr["vi_std"]),
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


# ---------------------------------------------------------------- output
def write_reference(out_dir: str | os.PathLike, reference: ReferencePosterior,
                    comparison: Optional[dict[str, Any]] = None, extra: Optional[dict[str, Any]] = None) -> Path:
    """Write ``comparison.json`` (diagnostics, config, comparison summary), ``summary.csv``
    (R-hat / ESS per parameter), ``weights.csv`` (per-weight comparison) and ``posterior.nc``
    (ArviZ InferenceData, netCDF) to ``out_dir``, each file atomically."""
    from ..diagnostics._arviz import to_netcdf
    from ..runs import write_csv, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    to_netcdf(reference.inference_data, out / "posterior.nc")
    table = reference.summary.reset_index().rename(columns={"index": "parameter"})
    write_csv(out / "summary.csv", table.to_dict(orient="records"))
    if comparison is not None:
        write_csv(out / "weights.csv", comparison["weights"])
    doc = {"diagnostics": reference.diagnostics, "config": reference.config}
    if comparison is not None:
        doc["comparison"] = comparison["summary"]
    if extra:
        doc.update(extra)
    write_json(out / "comparison.json", doc)
    return out


def load_reference(out_dir: str | os.PathLike, model: Optional[BayesianModel] = None,
                   num_data: Optional[int] = None) -> ReferencePosterior:
    """Load a reference posterior written by :func:`write_reference` (no NUTS is run).

    With ``model`` the stored draws are checked to be that model's posterior: the same sites
    and shapes and, where the folder records it (``model`` in ``comparison.json``), the same
    architecture, priors and likelihood; with ``num_data`` the same number of examples. A
    mismatch raises :class:`ReferenceMismatchError` naming it (a reference of another prior or
    data set would make every comparison meaningless). Only netCDF, CSV and JSON are read.
    """
    import arviz as az
    import pandas as pd

    out = Path(out_dir)
    missing = [n for n in ("posterior.nc", "comparison.json", "summary.csv") if not (out / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{out} is not a reference folder (missing {missing}); write one with "
                                f"`pyrocompress reference RUN_DIR --out {out}`")
    try:
        doc = json.loads((out / "comparison.json").read_text())
        idata = az.from_netcdf(str(out / "posterior.nc"))
        summary = pd.read_csv(out / "summary.csv").set_index("parameter")
    except (ValueError, OSError, KeyError) as exc:
        raise ReferenceMismatchError(f"{out}: cannot read the reference posterior ({exc}); run NUTS again") from None
    sites = list(idata.posterior.data_vars)
    samples = {s: torch.as_tensor(np.asarray(idata.posterior[s].values)) for s in sites}
    diagnostics, config = doc.get("diagnostics", {}), doc.get("config", {})
    if model is not None:
        expected = {s: tuple(model.net.get_submodule(s.rsplit(".", 1)[0]).site_shape(s.rsplit(".", 1)[1]))
                    for s in model.site_names()}
        got = {s: tuple(t.shape[2:]) for s, t in samples.items()}
        if got != expected:
            raise ReferenceMismatchError(f"{out} holds draws of {got}, the model has sites {expected}: it is the "
                                         f"posterior of another model")
        stored = doc.get("model")
        if stored is not None:
            mine = json.loads(json.dumps(model_fingerprint(model)))
            for key, what in (("architecture", "architecture"), ("priors", "prior"), ("likelihood", "likelihood")):
                if stored.get(key) != mine.get(key):
                    raise ReferenceMismatchError(f"{out} was sampled under another {what} ({stored.get(key)}) than "
                                                 f"the model's ({mine.get(key)}); run NUTS for this model")
    if num_data is not None and diagnostics.get("num_data") not in (None, int(num_data)):
        raise ReferenceMismatchError(f"{out} conditions on {diagnostics.get('num_data')} examples, this data has "
                                     f"{num_data}; use the same data (and --subset) or run NUTS again")
    return ReferencePosterior(samples, idata, summary, diagnostics, config)
