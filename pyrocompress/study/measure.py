"""Every metric of a pruned network against its dense network: the numbers of one study trial.

Test metrics of the (posterior) predictive, agreement / total variation / KL with the dense
network's predictive on the same inputs and MC seed, OOD AUROC, parameters, multiply-adds,
bytes, latency (with the device and threads it was measured on) and per-layer sparsity. The
dense network's probabilities are computed once per trained network and kept in its ``cache/``.

Devices: a network stays where its method left it (fine-tuning on a GPU leaves it there); every
input is moved to the network's device before it runs, and the probabilities come back to the
CPU for the metrics.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import pyro
import torch
from torch import nn

from .. import metrics
from ..data import DataBundle
from ..infer.predictive import network_probs, predictive_probs
from ..prune.compression import compression_report, layer_stats
from ..prune.methods import Pruned
from ..runs import RunError, load_checkpoint, save_checkpoint

__all__ = ["measure", "probs_of", "dense_probs", "device_of"]


def device_of(pruned: Pruned) -> torch.device:
    """The device of a pruned network's parameters (the CPU for a network without any)."""
    module = pruned.model if pruned.is_bayesian else pruned.net
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def probs_of(pruned: Pruned, x: torch.Tensor, samples: int, seed: int, estimator: str = "local_reparam"
             ) -> torch.Tensor:
    """Test-time class probabilities (posterior predictive for a Bayesian network), seeded; ``x`` is moved to
    the network's device, and so are the probabilities returned."""
    pyro.set_rng_seed(seed)
    x = x.to(device_of(pruned))
    if pruned.is_bayesian:
        return predictive_probs(pruned.model, pruned.guide, x, num_samples=samples, estimator=estimator)
    return network_probs(pruned.net, x)


def dense_probs(dense: Pruned, run_dir: Path, x: torch.Tensor, samples: int, seed: int,
                estimator: str) -> torch.Tensor:
    """The dense network's test probabilities, computed once per run and kept in its ``cache/``.

    Every trial of a network compares against the same dense predictive (same inputs, same
    MC seed), so the trials share one file instead of each drawing it again; a missing or
    unreadable file is recomputed.
    """
    tag = re.sub(r"[^A-Za-z0-9_.=-]+", "_", estimator)  # moment-propagation names carry ':' and ','
    path = Path(run_dir) / "cache" / f"dense_probs__{tag}__s{samples}__seed{seed}.safetensors"
    if path.is_file():
        try:
            tensors, _ = load_checkpoint(path)
            probs = tensors.get("probs")
            if probs is not None and probs.shape[0] == x.shape[0] and torch.isfinite(probs).all():
                return probs
        except RunError:
            pass
    probs = probs_of(dense, x, samples, seed, estimator).cpu()
    save_checkpoint(path, {"probs": probs}, {"what": "dense test probabilities", "samples": samples,
                                             "seed": seed, "estimator": estimator})
    return probs


def measure(pruned: Pruned, dense_probs_: torch.Tensor, dense_net: nn.Module, data: DataBundle,
            ood_x: Optional[torch.Tensor], samples: int, eval_seed: int, latency_repeats: int = 10,
            estimator: str = "local_reparam") -> dict:
    """Every metric of a pruned network against its dense network (same test inputs, same MC seed);
    ``estimator`` draws a Bayesian network's posterior predictive."""
    x, y = data.test.x, data.test.y.cpu()
    dense_probs_ = dense_probs_.cpu()
    probs = probs_of(pruned, x, samples, eval_seed, estimator).cpu()
    out = metrics.classification_metrics(probs, y)
    out["agreement"] = metrics.agreement(probs, dense_probs_)
    out["tv_distance"] = metrics.total_variation(probs, dense_probs_)
    out["kl_to_dense"] = metrics.kl_to_reference(probs, dense_probs_)
    if ood_x is not None:
        ood_probs = probs_of(pruned, ood_x, samples, eval_seed + 1, estimator).cpu()
        out["ood_auroc"] = metrics.ood_auroc(probs, ood_probs)
    net = pruned.deployable()
    rep = compression_report(net, data.input_shape, reference=dense_net, latency=latency_repeats > 0,
                             latency_repeats=max(latency_repeats, 1), latency_device=device_of(pruned))
    out.update({"params": rep["params"], "nonzero_params": rep["nonzero_params"],
                "compression": rep["compression_ratio"], "macs": rep["macs"],
                "macs_nonzero": rep["macs_nonzero"], "speedup": rep["speedup"],
                "bytes_dense": rep["bytes"]["dense"], "bytes_sparse": rep["bytes"]["csr"]})
    if "latency" in rep:
        out.update({"latency_ms": 1e3 * rep["latency"]["seconds"],
                    "dense_latency_ms": 1e3 * rep["latency"]["reference_seconds"],
                    "latency_speedup": rep["latency"]["ratio"], "latency_device": rep["latency"]["device"],
                    "latency_threads": rep["latency"]["threads"]})
    ref = layer_stats(dense_net, data.input_shape)
    # per layer: nonzero parameters of the pruned network against the dense layer's parameters
    out["layers"] = {name: {"params": ref[name]["params"] if name in ref else s["params"], "nonzero": s["nonzero"],
                            "units": s["units"], "dense_units": ref[name]["units"] if name in ref else s["units"]}
                     for name, s in rep["per_layer"].items()}
    return out
