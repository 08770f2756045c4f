"""NUTS draws of a Bayesian network's posterior: the sampling half of a reference posterior.

:func:`sample_nuts` runs Pyro's NUTS on a :class:`~pyrocompress.nn.BayesianModel` (an
ordinary Pyro model: ``model(x, y)`` with one ``PyroSample`` site per weight tensor) on the
full data given, with several chains, and returns the draws with what the sampler reports
(divergences, adapted step sizes, acceptance). Judging them (R-hat, ESS, the comparison with
a guide) is the diagnostics' job: :func:`pyrocompress.diagnostics.reference_posterior`.

The likelihood's ``dataset_size`` is the size of the data for as long as NUTS (or
:func:`pointwise_log_likelihood`) evaluates the model, and only then: the
:func:`dataset_size` context manager sets it and restores it.

Chains run one after the other in this process, each seeded ``seed + chain``: Pyro's
parallel chains spawn processes that must pickle the model, which on a CPU box with few
cores is slower and fragile. NUTS scales badly with the number of parameters and the
posterior of a neural network is multimodal (hidden-unit permutations and sign flips), so
models with more than :data:`DEFAULT_MAX_PARAMS` latent parameters are refused unless
``allow_large=True``. With ``init="guide"`` (the default when a guide is given) every chain
starts from its own draw of the guide, so the chains explore the mode VI found; chains may
still switch to another permutation copy during warm-up, so the draws are relabelled to the
guide's copy (:mod:`~pyrocompress.infer.relabel`) and the raw draws are kept beside them.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_uniform, init_to_value

from ..errors import TooLargeError as _TooLargeError
from ..errors import UserError
from .._scope import pyro_scope
from ..nn.model import BayesianModel, Likelihood
from .guides import is_posterior_guide
from .relabel import RELABEL_MODES, align_hidden_units, permutation_groups

__all__ = ["sample_nuts", "NutsDraws", "count_latent_parameters", "pointwise_log_likelihood", "dataset_size",
           "TooLargeError", "DEFAULT_MAX_PARAMS", "INIT_STRATEGIES"]

#: NUTS is refused above this many latent parameters unless ``allow_large=True``.
DEFAULT_MAX_PARAMS = 2000
INIT_STRATEGIES = ("auto", "guide", "uniform", "prior", "median")


class TooLargeError(_TooLargeError):
    """The model has more latent parameters than NUTS is allowed to sample here."""


@contextlib.contextmanager
def dataset_size(likelihood: Likelihood, size: int) -> Iterator[Likelihood]:
    """Scale ``likelihood`` to a data set of ``size`` examples inside the block, and back after.

    NUTS and the pointwise log-likelihood evaluate the model on every example at once: the
    plate scale must then be 1, not the training set's ``dataset_size / batch_size``.
    """
    old = likelihood.dataset_size
    likelihood.dataset_size = int(size)
    try:
        yield likelihood
    finally:
        likelihood.dataset_size = old


def count_latent_parameters(model: BayesianModel) -> int:
    """Number of scalar latent parameters (every weight and bias of every Bayesian layer)."""
    return sum(math.prod(layer.site_shape(site)) for _, layer in model.bayes_layers() for site in layer.sites())


@dataclass
class NutsDraws:
    """What NUTS produced: draws per site ``(chains, draws, *shape)`` (relabelled, and as sampled),
    divergences ``(chains, draws)``, per-chain sampler statistics, the pointwise log-likelihood
    ``(chains, draws, examples)`` of the first examples, and the settings."""

    samples: dict[str, torch.Tensor]
    raw: dict[str, torch.Tensor]
    diverging: np.ndarray
    acceptance_rate: list[float]
    mean_accept_prob: list[float]
    step_size: list[float]
    seconds: float
    num_params: int
    num_data: int
    observed: np.ndarray
    log_likelihood: Optional[np.ndarray] = None
    relabel: Optional[dict[str, Any]] = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return int(self.diverging.shape[0])


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


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be an integer >= {low}, got {value!r}")


def sample_nuts(model: BayesianModel, data_split, *, num_chains: int = 2, num_samples: int = 200,
                warmup: int = 200, max_params: int = DEFAULT_MAX_PARAMS, allow_large: bool = False,
                seed: int = 0, guide=None, init: str = "auto", max_tree_depth: int = 8,
                target_accept: float = 0.8, jit_compile: bool = False, num_threads: Optional[int] = 1,
                relabel: str = "auto", function_space_examples: int = 200, dense_mass: bool = False,
                progress: bool = False) -> NutsDraws:
    """Sample the model's posterior with NUTS on all of ``data_split``.

    ``data_split`` is a :class:`~pyrocompress.data.Split` or ``(x, y)``. ``init``: ``"guide"``
    (one draw of ``guide`` per chain; the default ``"auto"`` picks it when a guide is given),
    ``"uniform"`` (Pyro's default, uniform in (-2, 2) in the unconstrained space; ``"auto"``
    without a guide), ``"prior"`` or ``"median"``. Models with more than ``max_params`` latent
    parameters raise :class:`TooLargeError` unless ``allow_large``. ``num_threads`` sets torch's
    intra-op threads while sampling (restored after; ``None`` leaves them): NUTS evaluates a tiny
    network thousands of times, and for tensors this small extra threads mostly add
    synchronisation. ``jit_compile`` traces the potential with ``torch.jit``.

    ``relabel``: the hidden-unit permutation symmetry (:mod:`pyrocompress.infer.relabel`):
    ``"guide"`` maps every draw to the permutation copy nearest the guide's means, ``"mean"`` to
    the draws' own mean, ``"none"`` keeps the draws as sampled; ``"auto"`` is ``"guide"`` with a
    guide, else ``"mean"``. ``function_space_examples``: the first that many examples get their
    pointwise log-likelihood per draw (0 turns it off). ``dense_mass`` adapts a dense mass matrix
    in warm-up (Pyro's ``full_mass``) instead of a diagonal one.
    """
    if not isinstance(model, BayesianModel):
        raise TypeError("sample_nuts needs a pyrocompress BayesianModel (an ordinary Pyro model works "
                        "with pyro.infer.MCMC directly)")
    for name, value, low in (("num_chains", num_chains, 1), ("num_samples", num_samples, 1), ("warmup", warmup, 0),
                             ("max_tree_depth", max_tree_depth, 1)):
        _check_int(name, value, low)
    if not 0.0 < float(target_accept) < 1.0:
        raise UserError(f"target_accept must be in (0, 1), got {target_accept}")
    init = str(init).lower()
    if init not in INIT_STRATEGIES:
        raise UserError(f"unknown init {init!r}; valid: {list(INIT_STRATEGIES)}")
    if init == "auto":
        init = "guide" if guide is not None else "uniform"
    relabel = str(relabel).lower()
    if relabel not in RELABEL_MODES:
        raise UserError(f"unknown relabel {relabel!r}; valid: {list(RELABEL_MODES)}")
    if relabel == "auto":
        relabel = "guide" if guide is not None else "mean"
    if relabel == "guide" and not is_posterior_guide(guide):
        raise UserError("relabel='guide' needs a pyrocompress MeanFieldGuide (guide=...); use relabel='mean'")
    _check_int("function_space_examples", function_space_examples, 0)
    if init == "guide":
        if not is_posterior_guide(guide):
            raise UserError("init='guide' needs a pyrocompress MeanFieldGuide (guide=...)")
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
        raise UserError(f"data_split needs as many labels as inputs and at least one example; got "
                         f"{x.shape[0]} inputs and {y.shape[0]} labels")
    if num_threads is not None:
        _check_int("num_threads", num_threads, 1)
    device = model.device
    x, y = x.to(device), y.to(device)

    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    chains: list[dict[str, torch.Tensor]] = []
    diverging = np.zeros((num_chains, num_samples), dtype=bool)
    accept: list[float] = []
    step_sizes: list[float] = []
    accept_prob: list[float] = []
    start = time.perf_counter()
    try:
        with pyro_scope(), dataset_size(model.likelihood, int(x.shape[0])):  # every example at once: scale 1
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
        torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - start

    sites = model.site_names()
    raw = {s: torch.stack([c[s] for c in chains]) for s in sites}
    relabel_report: Optional[dict[str, Any]] = None
    samples = raw
    if relabel != "none" and permutation_groups(model):
        samples, relabel_report = align_hidden_units(raw, model, target=relabel, guide=guide)
    n_fs = min(int(function_space_examples), int(x.shape[0]))
    loglik = pointwise_log_likelihood(model, samples, x[:n_fs], y[:n_fs]) if n_fs > 0 else None
    config = {"num_chains": num_chains, "num_samples": num_samples, "warmup": warmup, "seed": seed, "init": init,
              "max_tree_depth": max_tree_depth, "target_accept": float(target_accept), "max_params": max_params,
              "allow_large": allow_large, "jit_compile": bool(jit_compile), "relabel": relabel,
              "function_space_examples": n_fs, "dense_mass": bool(dense_mass)}
    return NutsDraws(samples=samples, raw=raw, diverging=diverging, acceptance_rate=accept,
                     mean_accept_prob=accept_prob, step_size=step_sizes, seconds=seconds, num_params=n_params,
                     num_data=int(x.shape[0]), observed=y.detach().cpu().numpy(), log_likelihood=loglik,
                     relabel=relabel_report, config=config)


def pointwise_log_likelihood(model: BayesianModel, samples: dict[str, torch.Tensor], x: torch.Tensor,
                             y: torch.Tensor) -> np.ndarray:
    """log p(y_i | x_i, w) for every draw: (chains, draws, examples).

    The function-space view of a posterior: invariant to the hidden-unit permutations (and any
    other reparametrisation) that make weight-space R-hat fail, so its R-hat and ESS say whether
    the chains agree on what the network predicts (Izmailov et al. 2021 judge HMC for neural
    networks this way). Stored as the ``log_likelihood`` group of the reference's InferenceData.
    """
    sites = list(samples)
    chains, draws = samples[sites[0]].shape[:2]
    device = model.device
    out = np.empty((chains, draws, int(x.shape[0])))
    with torch.no_grad(), pyro_scope(), dataset_size(model.likelihood, int(x.shape[0])):
        for c in range(chains):
            for d in range(draws):
                draw = {s: samples[s][c, d].to(device) for s in sites}
                trace = poutine.trace(poutine.condition(model, data=draw)).get_trace(x, y)
                out[c, d] = trace.nodes["obs"]["fn"].log_prob(y).detach().cpu().double().numpy()
    return out
