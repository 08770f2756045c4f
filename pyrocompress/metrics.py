"""Metrics: functions of class probabilities and labels, and parameter counts.

Predictive metrics (accuracy, NLL, ECE with 15 bins, Brier score, predictive entropy)
are computed from class probabilities, whoever computed them: the posterior predictive of
a Bayesian model and the probabilities of a plain network come from
:mod:`pyrocompress.infer.predictive` (``predictive_probs``, ``network_probs``, ``evaluate``).
:func:`agreement`, :func:`total_variation`, :func:`kl_to_reference` and :func:`ood_auroc`
compare a pruned network's probabilities with its dense reference's and with
out-of-distribution inputs' (what a study records, after "Lost in Pruning").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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
    "parameter_counts",
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

