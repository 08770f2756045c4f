"""Masks as ``torch.nn.utils.prune`` reparametrisations, for code built on PyTorch's pruning utilities."""
from __future__ import annotations

from torch import nn
from torch.nn.utils import prune as tprune

from ..masks import Masks
from .common import prunable_layers

__all__ = ["to_torch_prune"]


def to_torch_prune(net: nn.Module, masks: Masks) -> nn.Module:
    """Attach masks as ``torch.nn.utils.prune`` reparametrisations (``weight_orig * weight_mask``);
    ``prune.remove`` makes them permanent."""
    layers = dict(prunable_layers(net))
    for name, m in masks.weight.items():
        tprune.custom_from_mask(layers[name], "weight", m.to(layers[name].weight.device))
    for name, m in masks.bias.items():
        if layers[name].bias is not None:
            tprune.custom_from_mask(layers[name], "bias", m.to(layers[name].bias.device))
    return net
