"""Hidden-unit relabelling of posterior draws (the label-switching problem of neural networks).

Permuting the hidden units of a layer (the rows of its weight and bias, the matching inputs of
the next layer) leaves the network's function, and so its likelihood and an exchangeable
prior, unchanged: the posterior has ``H!`` identical copies of every mode for each hidden
layer of ``H`` units. MCMC chains that settle in different copies, or switch copies during
warm-up, make per-weight means meaningless and per-weight R-hat fail although the chains may
sample the same distribution up to that symmetry. As for mixture models (Stephens 2000), each
draw is mapped to the copy nearest a target (the guide's means, or the draws' own mean): for
every hidden layer, the permutation of its units that minimises the squared distance between
the draw's and the target's unit parameters (incoming weights, bias, outgoing weights), found
with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) per draw.

:func:`permutation_groups` finds the hidden layers whose units can be permuted: two Bayesian
layers in a top-level ``nn.Sequential`` with only unit-wise modules between them (activations,
dropout, pooling, flatten). Anything else between them (a deterministic layer, a batch norm
with its own parameters) breaks the symmetry and no group is formed; so does a producer with a
per-unit hierarchical prior (a group prior with latent scales per unit), whose learned
variances tell its units apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..errors import UserError
from ..nn.layers import BayesConv2d, BayesLayer
from .guides import is_posterior_guide

__all__ = ["UnitGroup", "permutation_groups", "align_hidden_units", "RELABEL_MODES"]

RELABEL_MODES = ("auto", "guide", "mean", "none")

_UNITWISE = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.LeakyReLU, nn.SiLU, nn.Softplus,
             nn.Mish, nn.Hardtanh, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten)


@dataclass(frozen=True)
class UnitGroup:
    """The hidden units between ``producer`` (its output units) and ``consumer`` (its inputs).

    ``block`` is how many consumer inputs belong to one unit (a conv channel flattened into a
    linear layer: its spatial positions; otherwise 1).
    """

    producer: str
    consumer: str
    units: int
    block: int
    producer_bias: bool


def permutation_groups(model) -> list[UnitGroup]:
    """The hidden layers of ``model`` (a BayesianModel) whose units are exchangeable."""
    net = model.net
    if not isinstance(net, nn.Sequential):
        return []
    groups: list[UnitGroup] = []
    previous: Optional[tuple[str, BayesLayer]] = None
    flattened = False
    for name, module in net.named_children():
        if isinstance(module, BayesLayer):
            if previous is not None:
                p_name, p_layer = previous
                units = p_layer.out_units
                in_units = module.weight_shape[1]
                flat_conv = flattened and isinstance(p_layer, BayesConv2d) and in_units % units == 0
                # a group prior has latent scale variables per unit: relabelling would have to permute
                # them too, so such layers are left as they are
                exchangeable = not p_layer.prior.per_unit_latents
                if exchangeable and (in_units == units or flat_conv):
                    groups.append(UnitGroup(p_name, name, units, in_units // units, p_layer.has_bias))
            previous, flattened = (name, module), False
        elif isinstance(module, _UNITWISE):
            flattened = flattened or isinstance(module, nn.Flatten)
        else:
            previous, flattened = None, False
    return groups


def _unit_features(values: Mapping[str, np.ndarray], group: UnitGroup) -> np.ndarray:
    """(draws, units, features): each unit's incoming weights, bias and outgoing weights."""
    w_in = values[f"{group.producer}.weight"]
    draws = w_in.shape[0]
    parts = [w_in.reshape(draws, group.units, -1)]
    if group.producer_bias:
        parts.append(values[f"{group.producer}.bias"].reshape(draws, group.units, 1))
    w_out = values[f"{group.consumer}.weight"]
    out = w_out.reshape(draws, w_out.shape[1], group.units, -1)  # (draws, out, units, block * kernel)
    parts.append(np.moveaxis(out, 2, 1).reshape(draws, group.units, -1))
    return np.concatenate(parts, axis=2)


def _permute(values: dict[str, np.ndarray], group: UnitGroup, perm: np.ndarray) -> None:
    """Apply ``perm`` (draws, units): aligned unit j takes the draw's unit ``perm[d, j]``."""
    rows = np.arange(perm.shape[0])[:, None]
    key = f"{group.producer}.weight"
    values[key] = values[key][rows, perm]
    if group.producer_bias:
        key = f"{group.producer}.bias"
        values[key] = values[key][rows, perm]
    key = f"{group.consumer}.weight"
    w = values[key]
    shape = w.shape
    w = w.reshape(shape[0], shape[1], group.units, -1)
    w = np.moveaxis(np.moveaxis(w, 2, 1)[rows, perm], 1, 2)
    values[key] = w.reshape(shape)


def _assign(features: np.ndarray, target: np.ndarray) -> np.ndarray:
    # squared distances (draws, draw unit, target unit)
    cost = ((features ** 2).sum(-1)[:, :, None] + (target ** 2).sum(-1)[None, None, :]
            - 2.0 * np.einsum("duf,tf->dut", features, target))
    perm = np.empty(cost.shape[:2], dtype=np.int64)
    for d in range(cost.shape[0]):
        rows, cols = linear_sum_assignment(cost[d])
        perm[d, cols] = rows
    return perm


def align_hidden_units(samples: Mapping[str, torch.Tensor], model, *, target: str = "guide", guide=None,
                       max_passes: int = 5, iterations: int = 5) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Relabel the hidden units of every draw to one copy of the posterior's permutation symmetry.

    ``samples[site]`` has shape (chains, draws, *site_shape). ``target="guide"`` maps every
    draw to the copy nearest the guide's means (what a per-weight comparison with that guide
    needs); ``target="mean"`` iterates towards the draws' own mean (Stephens' relabelling:
    start from the first chain's last draw, then align to the mean of the aligned draws,
    ``iterations`` times). Layers are aligned from the input to the output, up to
    ``max_passes`` sweeps until no draw changes. Returns the aligned draws and a report
    (per group: the share of draws that were permuted, overall and per chain).
    """
    if target not in ("guide", "mean"):
        raise UserError(f"target must be 'guide' or 'mean', got {target!r}")
    groups = permutation_groups(model)
    sites = list(samples)
    report: dict[str, Any] = {"target": target, "groups": [], "passes": 0}
    if not groups:
        report["note"] = "no exchangeable hidden units (no two Bayesian layers with only unit-wise modules between)"
        return dict(samples), report
    needed = {f"{g.producer}.weight" for g in groups} | {f"{g.consumer}.weight" for g in groups}
    needed |= {f"{g.producer}.bias" for g in groups if g.producer_bias}
    missing = sorted(needed - set(sites))
    if missing:
        raise UserError(f"the draws have no {missing}: they are not draws of this model's sites")
    chains, draws = samples[next(iter(needed))].shape[:2]
    # only the sites a permutation touches; the others (the output layer's bias, ...) pass through
    original = {s: samples[s].detach().cpu().double().numpy().reshape((chains * draws,) + tuple(samples[s].shape[2:]))
                for s in needed}
    if target == "guide":
        if not is_posterior_guide(guide):
            raise UserError("target='guide' needs a pyrocompress MeanFieldGuide (guide=...)")
        with torch.no_grad():
            goal = {s: guide.loc_of(s).detach().cpu().double().numpy()[None] for s in needed}
        rounds = 1
    else:
        goal = {s: original[s][draws - 1:draws] for s in needed}  # chain 0's last draw
        rounds = max(1, int(iterations))
    rows = np.arange(chains * draws)[:, None]
    for _ in range(rounds):
        values = dict(original)  # _permute replaces arrays, never writes into them
        # each draw's permutation relative to its original labels, per group
        total = {g: np.tile(np.arange(g.units), (chains * draws, 1)) for g in groups}
        for sweep in range(max(1, int(max_passes))):
            changed = False
            for g in groups:
                perm = _assign(_unit_features(values, g), _unit_features(goal, g)[0])
                if (perm != np.arange(g.units)[None]).any():
                    changed = True
                    _permute(values, g, perm)
                    total[g] = total[g][rows, perm]
            report["passes"] = max(report["passes"], sweep + 1)
            if not changed:
                break
        if target == "mean":
            goal = {s: values[s].mean(0, keepdims=True) for s in needed}
    for g in groups:
        moved = (total[g] != np.arange(g.units)[None]).any(1)
        per_chain = moved.reshape(chains, draws).mean(1)
        report["groups"].append({"producer": g.producer, "consumer": g.consumer, "units": g.units,
                                 "permuted_fraction": float(moved.mean()),
                                 "permuted_fraction_per_chain": [float(v) for v in per_chain]})
    aligned = dict(samples)
    for s in needed:
        aligned[s] = torch.as_tensor(values[s].reshape(samples[s].shape)).to(dtype=samples[s].dtype)
    return aligned, report
