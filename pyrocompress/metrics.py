"""Metrics: functions of class probabilities and labels, and parameter counts.

Predictive metrics (accuracy, NLL, ECE with 15 bins, Brier score, predictive entropy)
are computed from class probabilities; :func:`agreement`, :func:`total_variation`,
:func:`kl_to_reference` and :func:`ood_auroc` compare a pruned network's probabilities
with its dense reference's and with out-of-distribution inputs' (what a study records).
For a Bayesian model the probabilities are those of the posterior predictive
(``mode="predictive"``: the average of S sampled networks' probabilities, vectorised) or
of the posterior-mean network (``mode="mean"``).

The posterior predictive (``predictive_probs``, ``network_probs``, ``evaluate`` and the
estimator names) is moving to :mod:`pyrocompress.infer.predictive` (it samples the guide:
inference, not a metric); until then it lives here and imports :mod:`pyrocompress.infer`
lazily, the one cycle left (see docs/architecture.md).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from pyro import poutine

from .errors import UserError
from ._scope import pyro_scope
from .nn.layers import BayesLayer
from .nn.model import BayesianModel

__all__ = [
    "classification_metrics",
    "agreement",
    "total_variation",
    "kl_to_reference",
    "predictive_entropy",
    "ood_auroc",
    "expected_calibration_error",
    "predictive_probs",
    "network_probs",
    "evaluate",
    "parameter_counts",
    "EVAL_ESTIMATORS",
    "resolve_eval_estimator",
]


def expected_calibration_error(probs: torch.Tensor, y: torch.Tensor, num_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum_b |acc_b - conf_b| * n_b / N."""
    conf, pred = probs.max(dim=1)
    correct = (pred == y).to(probs.dtype)
    edges = torch.linspace(0, 1, num_bins + 1, device=probs.device, dtype=probs.dtype)
    idx = torch.bucketize(conf, edges[1:-1], right=True)  # bin b holds (edge_b, edge_b+1]
    counts = torch.bincount(idx, minlength=num_bins).to(probs.dtype)
    conf_sum = torch.zeros(num_bins, dtype=probs.dtype, device=probs.device).index_add_(0, idx, conf)
    acc_sum = torch.zeros(num_bins, dtype=probs.dtype, device=probs.device).index_add_(0, idx, correct)
    return float((conf_sum - acc_sum).abs().sum() / max(len(y), 1))


def classification_metrics(probs: torch.Tensor, y: torch.Tensor, num_bins: int = 15) -> dict[str, float]:
    """accuracy, nll (mean), ece, brier (mean squared error to one-hot, summed over classes), entropy."""
    probs = probs.double()
    y = y.to(probs.device)
    eps = torch.finfo(probs.dtype).tiny
    log_probs = probs.clamp_min(eps).log()
    onehot = F.one_hot(y, probs.shape[1]).to(probs.dtype)
    return {
        "accuracy": float((probs.argmax(1) == y).double().mean()),
        "nll": float(F.nll_loss(log_probs, y)),
        "ece": expected_calibration_error(probs, y, num_bins),
        "brier": float(((probs - onehot) ** 2).sum(1).mean()),
        "entropy": float(-(probs * log_probs).sum(1).mean()),
    }


def agreement(probs: torch.Tensor, reference: torch.Tensor) -> float:
    """Fraction of inputs on which two predictives pick the same class ("Lost in Pruning")."""
    return float((probs.argmax(1) == reference.argmax(1)).double().mean())


def total_variation(probs: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean total-variation distance ``0.5 sum_c |p_c - q_c|`` between two predictives."""
    return float(0.5 * (probs.double() - reference.double()).abs().sum(1).mean())


def kl_to_reference(probs: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean ``KL(reference || probs)``: the information the pruned predictive loses about the dense one."""
    p, q = probs.double(), reference.double()
    eps = torch.finfo(torch.float64).tiny
    return float((q * (q.clamp_min(eps).log() - p.clamp_min(eps).log())).sum(1).mean())


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy of each row of class probabilities (nats), in float64."""
    p = probs.double()
    return -(p * p.clamp_min(torch.finfo(torch.float64).tiny).log()).sum(1)


def ood_auroc(probs_in: torch.Tensor, probs_out: torch.Tensor) -> float:
    """AUROC of predictive entropy separating out-of-distribution inputs (positives) from in-distribution ones."""
    # scikit-learn takes about a second to import: imported when a study first measures OOD inputs
    from sklearn.metrics import roc_auc_score

    ent_in, ent_out = predictive_entropy(probs_in), predictive_entropy(probs_out)
    labels = [0] * len(ent_in) + [1] * len(ent_out)
    return float(roc_auc_score(labels, torch.cat([ent_in, ent_out]).numpy()))


@torch.no_grad()
def network_probs(net: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Class probabilities of a deterministic network."""
    was_training = net.training
    net.eval()
    try:
        out = [F.softmax(net(x[i:i + batch_size]), dim=-1) for i in range(0, x.shape[0], batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def predictive_probs(model: BayesianModel, guide, x: torch.Tensor, num_samples: int = 16,
                     mode: str = "predictive", estimator: str = "local_reparam", batch_size: int = 2048,
                     return_samples: bool = False) -> torch.Tensor:
    """Posterior-predictive class probabilities, averaged over ``num_samples`` draws.

    With a pyrocompress guide the draws are vectorised: the inputs are repeated S times
    and every row gets independent pre-activation noise (local reparameterization), which
    gives each example's output exactly its distribution under q(w). Other guides (Pyro
    autoguides) are sampled S times through the guide and replayed in the model.
    ``mode="mean"`` uses the posterior-mean network. ``return_samples`` returns (S, N, C).
    ``batch_size`` bounds the rows (examples x samples) computed at once.
    """
    if num_samples <= 0:
        raise UserError(f"num_samples must be positive, got {num_samples}")
    if mode not in ("predictive", "mean"):
        raise UserError(f"mode must be 'predictive' or 'mean', got {mode!r}")
    from .infer.guides import is_posterior_guide

    pyrocompress_guide = is_posterior_guide(guide)
    with pyro_scope():
        samples = _predictive_samples(model, guide, x, num_samples, mode, estimator, batch_size, pyrocompress_guide)
    return samples if return_samples else samples.mean(0)


def _predictive_samples(model, guide, x, num_samples, mode, estimator, batch_size, pyrocompress_guide):
    from .infer.estimators import PosteriorMean, make_estimator
    from .infer.moments import is_moment_estimator, moment_options, sample_logits

    chunks = []
    step = max(1, batch_size // num_samples) if mode == "predictive" else batch_size
    for start in range(0, x.shape[0], step):
        xb = x[start:start + step]
        if mode == "mean":
            if not pyrocompress_guide:
                raise UserError("mode='mean' needs a pyrocompress MeanFieldGuide")
            with PosteriorMean(guide):
                probs = F.softmax(model.net(xb), -1)[None]
        elif pyrocompress_guide and is_moment_estimator(estimator):

            opts = moment_options(estimator)
            rules = {k: opts[k] for k in ("relu", "pool") if k in opts}  # the rest: sample_logits' defaults
            logits = sample_logits(model, guide, xb, num_samples, **rules)
            probs = F.softmax(logits, -1)
        elif pyrocompress_guide:
            handler = make_estimator(estimator, guide)
            if handler.per_example_noise:
                reps = xb.repeat((num_samples,) + (1,) * (xb.dim() - 1))
                with handler:
                    logits = model.net(reps)
                probs = F.softmax(logits, -1).reshape(num_samples, xb.shape[0], -1)
            else:
                out = []
                for _ in range(num_samples):
                    with handler:
                        out.append(F.softmax(model.net(xb), -1))
                probs = torch.stack(out)
        else:
            out = []
            for _ in range(num_samples):
                guide_trace = poutine.trace(guide).get_trace(xb)
                logits = poutine.replay(model.net, trace=guide_trace)(xb)
                out.append(F.softmax(logits, -1))
            probs = torch.stack(out)
        chunks.append(probs)
    return torch.cat(chunks, dim=1)


def predictive_estimator(training_estimator: str) -> str:
    """The estimator of the posterior predictive of a guide trained with ``training_estimator``.

    Moment propagation predicts with its own propagated moments (one pass, the rules it was
    trained with, as the eVI papers do); every sampling estimator with local
    reparameterization, whose draws are exact per-example samples under q(w).
    """
    from .infer.moments import is_moment_estimator  # metrics is imported by infer: import lazily

    return str(training_estimator) if is_moment_estimator(training_estimator) else "local_reparam"


#: estimators of the posterior predictive a study or the prune CLI may be asked for
EVAL_ESTIMATORS = ("auto", "local_reparam", "weight_sampling", "flipout")


def resolve_eval_estimator(name: Optional[str], training_estimator: Optional[str]) -> str:
    """The predictive estimator to use: ``name``, or with ``auto`` (or None) the one a guide
    trained with ``training_estimator`` predicts with (:func:`predictive_estimator`)."""
    if not name or name == "auto":
        return predictive_estimator(training_estimator or "local_reparam")
    return str(name)


def evaluate(model, split, guide=None, num_samples: int = 16, mode: str = "predictive",
             batch_size: int = 2048, estimator: str = "local_reparam") -> dict[str, float]:
    """Metrics of a Bayesian model (with its guide) or of a plain ``nn.Module`` on a split.

    ``estimator`` draws the Bayesian predictive (see :func:`predictive_probs`).
    """
    x, y = split.x, split.y
    if isinstance(model, BayesianModel):
        if guide is None:
            raise UserError("evaluating a BayesianModel needs its guide")
        device = model.device
        probs = predictive_probs(model, guide, x.to(device), num_samples, mode, estimator=estimator,
                                 batch_size=batch_size)
    else:
        device = next(model.parameters()).device
        probs = network_probs(model, x.to(device), batch_size)
    return classification_metrics(probs, y.to(device))


def parameter_counts(module: nn.Module, guide=None) -> dict[str, dict[str, int]]:
    """Per-layer parameter counts: ``{"layer": {"params": n, "nonzero": m}}`` plus ``"total"``.

    For a Bayesian model the counts are those of the deployable network (one value per
    weight): the nonzero posterior means of ``guide`` (a
    :class:`~pyrocompress.infer.guides.PosteriorGuide`), or every parameter without a guide;
    for a plain network its weights.
    """
    counts: dict[str, dict[str, int]] = {}
    net = module.net if isinstance(module, BayesianModel) else module
    for name, layer in net.named_modules():
        if isinstance(layer, BayesLayer):
            sizes = {site: math.prod(layer.site_shape(site)) for site in layer.sites()}
            total = sum(sizes.values())
            if guide is not None:
                nonzero = sum(int((guide.loc_of(f"{name}.{s}") != 0).sum()) for s in layer.sites())
            else:
                nonzero = total
            counts[name] = {"params": total, "nonzero": nonzero}
        elif isinstance(layer, (nn.Linear, nn.Conv2d)):
            tensors = [p for p in (layer.weight, layer.bias) if p is not None]
            counts[name] = {"params": sum(t.numel() for t in tensors),
                            "nonzero": sum(int((t != 0).sum()) for t in tensors)}
    counts["total"] = {"params": sum(c["params"] for c in counts.values()),
                       "nonzero": sum(c["nonzero"] for c in counts.values())}
    return counts

