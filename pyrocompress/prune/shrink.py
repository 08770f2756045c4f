"""Structured deletion that physically shrinks a network (plain or Bayesian).

A unit (output neuron of a Linear layer, kernel = output channel of a Conv2d layer) is
deleted when

* its incoming weights are all zero (after masks): it outputs a constant, its bias; or
* every weight of the next layer that reads it is zero: its output is unused.

Deleting unit k of layer L removes row k of L's weight and bias and the matching input
slice of the next Linear/Conv2d layer: input channel k of a conv, input feature k of a
Linear, or, through ``Flatten`` from a conv into a Linear, the k-th channel's block of
``h*w`` features (pooling and elementwise activations in between are passed through).

**Exactness.** A deleted unit with zero weights but a nonzero bias b still sends a
constant ``f(b)`` downstream (``f`` = the activations in between; max-pooling and
average pooling without padding keep a constant map constant). That contribution is
folded into the next layer's bias (``W_next[:, block_k].sum() * f(b)``), so the shrunk
network computes exactly what the masked one does (to float rounding). When a
constant cannot be folded exactly (the next layer is a padded conv, has no bias, or an
average pool with padding lies between) the unit is kept and a warning names it.
The output layer's units are never deleted, and every layer keeps at least one unit.

For a :class:`~pyrocompress.nn.BayesianModel` the plan is made on the posterior-mean
network; the result is a new, smaller BayesianModel (same priors, same likelihood,
``BayesianModel.from_module`` of the shrunk architecture) with a new MeanFieldGuide
whose parameters are the sliced old ones (:meth:`MeanFieldGuide.shrunk`), ready for more SVI with ``fit()``.
A folded constant enters the next layer's bias *location* (the posterior mean of the
deleted unit's output); its posterior variance is dropped.

Supported networks: ``nn.Sequential`` of named children (the zoo's mlp, lenet5,
kernelnet); between two Linear/Conv2d layers only activations (ReLU, Tanh, Sigmoid,
GELU, ELU, LeakyReLU), Identity, Dropout, MaxPool2d, AvgPool2d and Flatten. Anything
else raises :class:`ShrinkError` naming the layer.

Public API: ``shrink(obj, guide=None, masks=None) -> Shrunk`` (``.net``, ``.model``,
``.guide``, ``.plan``, ``.architecture``), ``plan_shrink(net, masks=None) -> ShrinkPlan``,
``apply_plan(net, plan)``, ``unit_sizes(obj)``, ``ShrinkError``.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from ..errors import UserError
from ..infer.guides import is_posterior_guide, posterior_mean_network
from ..nn.arch import describe
from ..nn.layers import BayesLayer
from ..nn.model import BayesianModel
from .masks import Masks, prunable_layers

__all__ = ["ShrinkError", "ShrinkPlan", "Shrunk", "plan_shrink", "apply_plan", "shrink", "unit_sizes"]

_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.LeakyReLU, nn.Identity, nn.Dropout)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


class ShrinkError(UserError):
    """The network contains a structure that structured deletion cannot shrink."""


@dataclass
class ShrinkPlan:
    """What to cut: kept output units and input indices per layer, bias corrections.

    ``keep[layer]``: sorted indices of the output units kept; ``inputs[layer]``: sorted
    indices of input features/channels kept (absent: all); ``bias_delta[layer]``: added
    to the layer's bias before slicing (folded constants of deleted upstream units).
    """

    keep: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    bias_delta: dict[str, torch.Tensor] = field(default_factory=dict)
    sizes_before: dict[str, int] = field(default_factory=dict)
    kept_constant: dict[str, list[int]] = field(default_factory=dict)

    @property
    def sizes_after(self) -> dict[str, int]:
        return {n: int(k.numel()) for n, k in self.keep.items()}

    @property
    def removed(self) -> int:
        return sum(self.sizes_before[n] - int(k.numel()) for n, k in self.keep.items())

    def summary(self) -> dict[str, str]:
        return {n: f"{self.sizes_before[n]} -> {int(k.numel())}" for n, k in self.keep.items()}


@dataclass
class Shrunk:
    """Result of :func:`shrink`: the smaller plain network, and for a Bayesian input its model and guide."""

    net: nn.Sequential
    plan: ShrinkPlan
    model: Optional[BayesianModel] = None
    guide: Any = None

    @property
    def architecture(self) -> dict:
        return describe(self.net)


def unit_sizes(obj: nn.Module) -> dict[str, int]:
    """Output units (neurons / kernels) of every Linear / Conv2d layer."""
    return {n: (m.weight_shape[0] if isinstance(m, BayesLayer) else m.weight.shape[0])
            for n, m in prunable_layers(obj)}


def _kind(m: nn.Module) -> str:
    return "conv" if isinstance(m, nn.Conv2d) else "linear"


def _segments(net: nn.Module) -> list[tuple[str, nn.Module, list[tuple[str, nn.Module]], str, nn.Module]]:
    """(layer name, layer, modules between, next name, next layer) for consecutive prunable layers."""
    if not isinstance(net, nn.Sequential):
        raise ShrinkError(f"structured deletion needs an nn.Sequential of named layers, got {type(net).__name__}")
    children = list(net.named_children())
    idx = [i for i, (_, m) in enumerate(children) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not idx:
        raise ShrinkError("the network has no Linear or Conv2d layer to shrink")
    for name, m in children[idx[0]:idx[-1] + 1]:
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"):
            raise ShrinkError(f"layer {name!r}: grouped or non-zero-padded convolutions cannot be shrunk")
        if not isinstance(m, (nn.Linear, nn.Conv2d) + _ELEMENTWISE + _POOLS + (nn.Flatten,)):
            raise ShrinkError(
                f"layer {name!r} of type {type(m).__name__} cannot be shrunk through: between Linear/Conv2d layers "
                "only activations (ReLU, Tanh, Sigmoid, GELU, ELU, LeakyReLU), Identity, Dropout, MaxPool2d, "
                "AvgPool2d and Flatten are supported")
    segs = []
    for a, b in zip(idx[:-1], idx[1:]):
        name, layer = children[a]
        nxt_name, nxt = children[b]
        between = children[a + 1:b]
        flat = [n for n, m in between if isinstance(m, nn.Flatten)]
        if _kind(layer) == "linear" and _kind(nxt) == "conv":
            raise ShrinkError(f"layer {nxt_name!r}: a Conv2d after a Linear layer ({name!r}) cannot be shrunk")
        if _kind(layer) == "conv" and _kind(nxt) == "linear":
            if len(flat) != 1 or between[[n for n, _ in between].index(flat[0])][1].start_dim != 1:
                raise ShrinkError(f"between conv {name!r} and linear {nxt_name!r} there must be one Flatten "
                                  "(start_dim=1)")
            if nxt.in_features % layer.out_channels:
                raise ShrinkError(f"layer {nxt_name!r}: {nxt.in_features} input features are not a whole number "
                                  f"of blocks of the {layer.out_channels} channels of {name!r}")
        elif flat and _kind(layer) == "conv":
            raise ShrinkError(f"layer {flat[0]!r}: Flatten between two conv layers cannot be shrunk")
        if _kind(layer) == "linear" and any(isinstance(m, _POOLS) for _, m in between):
            raise ShrinkError(f"pooling after the Linear layer {name!r} cannot be shrunk")
        segs.append((name, layer, between, nxt_name, nxt))
    return segs


def _block(layer: nn.Module, nxt: nn.Module) -> int:
    """Input features of ``nxt`` per output unit of ``layer`` (h*w through Flatten, else 1)."""
    if _kind(layer) == "conv" and _kind(nxt) == "linear":
        return nxt.in_features // layer.out_channels
    return 1


def _columns(nxt: nn.Module, unit_idx: torch.Tensor, block: int) -> torch.Tensor:
    if block == 1:
        return unit_idx
    return (unit_idx[:, None] * block + torch.arange(block)[None, :]).reshape(-1)


def _propagate_constant(c: float, between: list[tuple[str, nn.Module]]) -> Optional[float]:
    """Value of a constant feature map after the modules between two layers, or None if not constant."""
    value = torch.tensor([float(c)], dtype=torch.float64)
    for _, m in between:
        if isinstance(m, nn.Dropout) or isinstance(m, nn.Flatten) or isinstance(m, nn.MaxPool2d):
            continue
        if isinstance(m, nn.AvgPool2d):
            pad = m.padding if isinstance(m.padding, (tuple, list)) else (m.padding,)
            if (any(p != 0 for p in pad) and m.count_include_pad) or m.ceil_mode or m.divisor_override:
                if float(value) != 0.0:
                    return None
            continue
        value = m(value.to(torch.float32)).to(torch.float64)
    return float(value)


def _foldable(nxt: nn.Module) -> bool:
    if nxt.bias is None:
        return False
    if isinstance(nxt, nn.Conv2d):
        pad = nxt.padding
        if isinstance(pad, str):
            return pad == "valid"
        return all(p == 0 for p in pad)
    return True


@torch.no_grad()
def plan_shrink(net: nn.Module, masks: Optional[Masks] = None, warn: bool = True) -> ShrinkPlan:
    """Find the units of a plain ``nn.Sequential`` that can be deleted exactly (see the module docstring)."""
    if masks is not None:
        net = copy.deepcopy(net)
        masks.apply(net)
    segs = _segments(net)
    plan = ShrinkPlan()
    layers = prunable_layers(net)
    for name, m in layers:
        plan.sizes_before[name] = int(m.weight.shape[0])
        plan.keep[name] = torch.arange(m.weight.shape[0])
    emptied, unfoldable = [], {}
    for name, layer, between, nxt_name, nxt in segs:
        w = layer.weight.detach().cpu().double()
        wn = nxt.weight.detach().cpu().double()
        out = w.shape[0]
        block = _block(layer, nxt)
        dead_in = (w.reshape(out, -1) == 0).all(dim=1)
        cols = wn.reshape(wn.shape[0], wn.shape[1], -1)  # (out_next, in_next, k*k or 1)
        per_unit = cols.reshape(wn.shape[0], out, block, -1)
        dead_out = (per_unit == 0).all(dim=3).all(dim=2).all(dim=0)
        remove = dead_out.clone()
        delta = torch.zeros(wn.shape[0], dtype=torch.float64)
        bias = layer.bias.detach().cpu().double() if layer.bias is not None else torch.zeros(out, dtype=torch.float64)
        for k in torch.nonzero(dead_in & ~dead_out).flatten().tolist():
            v = _propagate_constant(float(bias[k]), between)
            if v == 0.0:
                remove[k] = True
            elif v is not None and _foldable(nxt):
                remove[k] = True
                delta += v * per_unit[:, k].sum(dim=(1, 2))
            else:
                unfoldable.setdefault(name, []).append(k)
        if bool(remove.all()):
            emptied.append(name)
            norms = w.reshape(out, -1).norm(dim=1) + bias.abs()
            remove[int(torch.argmax(norms))] = False
        kept = torch.nonzero(~remove).flatten()
        plan.keep[name] = kept
        if kept.numel() < out:
            plan.inputs[nxt_name] = _columns(nxt, kept, block)
        if bool((delta != 0).any()):
            plan.bias_delta[nxt_name] = delta
    plan.kept_constant = unfoldable
    if warn and emptied:
        warnings.warn(f"layer(s) {emptied} would lose every unit; each keeps one", UserWarning, stacklevel=2)
    if warn and unfoldable:
        warnings.warn("units whose constant output cannot be folded exactly into the next layer are kept: "
                      f"{unfoldable}", UserWarning, stacklevel=2)
    return plan


def _slice(t: torch.Tensor, out_idx: Optional[torch.Tensor], in_idx: Optional[torch.Tensor]) -> torch.Tensor:
    if out_idx is not None:
        t = t.index_select(0, out_idx.to(t.device))
    if in_idx is not None and t.dim() >= 2 and t.shape[1] != 1:
        t = t.index_select(1, in_idx.to(t.device))
    return t


def _new_layer(m: nn.Module, out_units: int, in_units: int) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(in_units, out_units, m.kernel_size, m.stride, m.padding, m.dilation,
                         bias=m.bias is not None)
    return nn.Linear(in_units, out_units, bias=m.bias is not None)


@torch.no_grad()
def apply_plan(net: nn.Sequential, plan: ShrinkPlan) -> nn.Sequential:
    """A new, smaller copy of ``net`` cut as ``plan`` says (the input network is untouched)."""
    net = copy.deepcopy(net)
    for name, m in prunable_layers(net):
        if name not in plan.keep:
            raise ShrinkError(f"the plan does not cover layer {name!r}; make it with plan_shrink on this network")
        out_idx = plan.keep[name]
        in_idx = plan.inputs.get(name)
        w = _slice(m.weight.detach(), out_idx, in_idx)
        new = _new_layer(m, w.shape[0], w.shape[1]).to(device=m.weight.device, dtype=m.weight.dtype)
        new.weight.copy_(w)
        if m.bias is not None:
            b = m.bias.detach()
            if name in plan.bias_delta:
                b = b + plan.bias_delta[name].to(b.device, b.dtype)
            new.bias.copy_(b.index_select(0, out_idx.to(b.device)))
        new.train(m.training)
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, child, new)
    return net


@torch.no_grad()
def _shrink_bayesian(model: BayesianModel, guide: Any, plan: ShrinkPlan, small_net: nn.Sequential):
    old_layers = dict(model.bayes_layers())
    priors = {n: layer.prior for n, layer in old_layers.items()}
    new_model = BayesianModel.from_module(small_net.cpu(), model.likelihood.num_classes, prior=priors,
                                          dataset_size=model.likelihood.dataset_size, include=list(old_layers))
    for name, layer in new_model.bayes_layers():
        layer.bias_prior = old_layers[name].bias_prior
    new_guide = guide.shrunk(new_model, plan.keep, plan.inputs, plan.bias_delta)
    device = model.device
    return new_model.to(device), new_guide.to(device)


def shrink(obj: nn.Module, guide: Any = None, masks: Optional[Masks] = None, warn: bool = True) -> Shrunk:
    """Physically delete the units that are zero (after ``masks``) from a network or Bayesian model.

    For a plain ``nn.Sequential`` the result has ``.net``; for a BayesianModel with its
    MeanFieldGuide it also has ``.model`` and ``.guide`` (new objects; the inputs are not
    modified) and ``.net`` is the shrunk posterior-mean network.
    """
    if isinstance(obj, BayesianModel):
        if guide is None or not is_posterior_guide(guide):
            raise TypeError("shrinking a BayesianModel needs its pyrocompress guide (a MeanFieldGuide from make_guide)")
        guide.check_belongs_to(obj)
        if obj.architecture is None:
            raise ShrinkError("the model has no architecture template; build it with BayesianModel.from_module")
        if masks is not None:
            obj, guide = copy.deepcopy(obj), copy.deepcopy(guide)
            masks.apply(obj, guide)
        mean_net = posterior_mean_network(obj, guide)
        plan = plan_shrink(mean_net, warn=warn)
        small = apply_plan(mean_net, plan)
        model, new_guide = _shrink_bayesian(obj, guide, plan, copy.deepcopy(small))
        return Shrunk(net=small, plan=plan, model=model, guide=new_guide)
    if not isinstance(obj, nn.Module):
        raise TypeError(f"shrink expects an nn.Module or BayesianModel, got {type(obj).__name__}")
    if any(isinstance(m, BayesLayer) for m in obj.modules()):
        raise TypeError("this network has Bayesian layers: pass the BayesianModel and its guide")
    plan = plan_shrink(obj, masks=masks, warn=warn)
    src = obj
    if masks is not None:
        src = copy.deepcopy(obj)
        masks.apply(src)
    return Shrunk(net=apply_plan(src, plan), plan=plan)
