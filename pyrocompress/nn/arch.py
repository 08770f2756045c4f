"""A JSON description of sequential architectures, to rebuild networks without pickle.

``describe(net)`` turns an ``nn.Sequential`` of supported layers into plain JSON data
(layer names, types and constructor arguments); ``build(description)`` makes the same
network again. Checkpoints and exports store this description beside their tensors, so
loading never executes pickled code, and networks whose shapes changed after structured
deletion load like any other.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .._memory import check_memory
from ..errors import UserError
from .layers import BayesConv2d, BayesLinear

__all__ = ["describe", "build", "parameter_count", "ArchitectureError", "FORMAT"]

FORMAT = "pyrocompress.arch/1"


class ArchitectureError(UserError):
    """A network cannot be described, or a description cannot be built."""


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else v


def _layer_spec(name: str, m: nn.Module) -> dict[str, Any]:
    if isinstance(m, (nn.Linear, BayesLinear)):
        bias = m.bias is not None if isinstance(m, nn.Linear) else m.has_bias
        return {"type": "Linear", "in_features": m.in_features, "out_features": m.out_features, "bias": bias}
    if isinstance(m, (nn.Conv2d, BayesConv2d)):
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"):
            raise ArchitectureError(f"layer {name!r}: grouped or non-zero-padded convolutions are not supported")
        bias = m.bias is not None if isinstance(m, nn.Conv2d) else m.has_bias
        return {"type": "Conv2d", "in_channels": m.in_channels, "out_channels": m.out_channels,
                "kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride), "padding": _pair(m.padding),
                "dilation": _pair(m.dilation), "bias": bias}
    if isinstance(m, nn.MaxPool2d) or isinstance(m, nn.AvgPool2d):
        spec = {"type": type(m).__name__.replace("PyroModule", "").strip("[]"),
                "kernel_size": _pair(m.kernel_size), "stride": _pair(m.stride), "padding": _pair(m.padding)}
        spec["type"] = "MaxPool2d" if isinstance(m, nn.MaxPool2d) else "AvgPool2d"
        return spec
    if isinstance(m, nn.Flatten):
        return {"type": "Flatten", "start_dim": m.start_dim, "end_dim": m.end_dim}
    if isinstance(m, nn.Dropout):
        return {"type": "Dropout", "p": m.p}
    for cls in (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.GELU, nn.ELU, nn.LeakyReLU):
        if isinstance(m, cls):
            spec: dict[str, Any] = {"type": cls.__name__}
            if isinstance(m, nn.LeakyReLU):
                spec["negative_slope"] = m.negative_slope
            return spec
    raise ArchitectureError(
        f"layer {name!r} of type {type(m).__name__} is not supported by the architecture description; "
        "supported: Linear, Conv2d, MaxPool2d, AvgPool2d, Flatten, Dropout, ReLU, Tanh, Sigmoid, GELU, ELU, "
        "LeakyReLU, Identity")


def describe(net: nn.Module) -> dict[str, Any]:
    """JSON-ready description of a flat ``nn.Sequential`` (plain or bayesianized)."""
    if not isinstance(net, nn.Sequential):
        raise ArchitectureError(f"only nn.Sequential networks can be described, got {type(net).__name__}")
    return {"format": FORMAT, "layers": [dict(name=name, **_layer_spec(name, m)) for name, m in net.named_children()]}


_BUILDERS = {
    "Linear": lambda s: nn.Linear(s["in_features"], s["out_features"], bias=s.get("bias", True)),
    "Conv2d": lambda s: nn.Conv2d(s["in_channels"], s["out_channels"], tuple(s["kernel_size"]), tuple(s["stride"]),
                                  s["padding"] if isinstance(s["padding"], str) else tuple(s["padding"]),
                                  tuple(s["dilation"]), bias=s.get("bias", True)),
    "MaxPool2d": lambda s: nn.MaxPool2d(_tuple(s["kernel_size"]), _tuple(s["stride"]), _tuple(s["padding"])),
    "AvgPool2d": lambda s: nn.AvgPool2d(_tuple(s["kernel_size"]), _tuple(s["stride"]), _tuple(s["padding"])),
    "Flatten": lambda s: nn.Flatten(s.get("start_dim", 1), s.get("end_dim", -1)),
    "Dropout": lambda s: nn.Dropout(s.get("p", 0.5)),
    "ReLU": lambda s: nn.ReLU(),
    "Tanh": lambda s: nn.Tanh(),
    "Sigmoid": lambda s: nn.Sigmoid(),
    "GELU": lambda s: nn.GELU(),
    "ELU": lambda s: nn.ELU(),
    "LeakyReLU": lambda s: nn.LeakyReLU(s.get("negative_slope", 0.01)),
    "Identity": lambda s: nn.Identity(),
}


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def _layers(description: dict[str, Any]) -> list[tuple[str, nn.Module]]:
    layers = []
    for spec in description.get("layers", []):
        if not isinstance(spec, dict):
            raise ArchitectureError(f"layer description {spec!r} is not an object")
        kind = spec.get("type")
        if kind not in _BUILDERS:
            raise ArchitectureError(f"layer {spec.get('name')!r}: unknown type {kind!r}; known: {sorted(_BUILDERS)}")
        try:
            layers.append((spec["name"], _BUILDERS[kind](spec)))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ArchitectureError(f"layer {spec.get('name')!r}: bad description {spec}: {exc}") from None
    if not layers:
        raise ArchitectureError("the architecture description has no layers")
    return layers


def parameter_count(description: dict[str, Any]) -> int:
    """The number of parameters of the network a description stands for, computed without allocating
    them (the layers are built on PyTorch's meta device); a bad description raises ArchitectureError."""
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ArchitectureError(f"not a pyrocompress architecture description (expected format {FORMAT!r})")
    with torch.device("meta"):
        layers = _layers(description)
    return sum(p.numel() for _, m in layers for p in m.parameters())


def build(description: dict[str, Any]) -> nn.Sequential:
    """Build the plain ``nn.Sequential`` a description stands for (weights freshly initialised).

    Its size is checked first, without allocating: a description (say a corrupt config.json) asking
    for more memory than the machine has is refused with the estimate.
    """
    count = parameter_count(description)
    check_memory(4 * count, f"the network described ({count:,} parameters)",
                 "the description is corrupt or meant for a larger machine")
    return nn.Sequential(OrderedDict(_layers(description)))
