"""Named dims and coords of every Bayesian site, shared by all diagnostics.

A Linear layer ``fc1`` has weight dims (``fc1_out``, ``fc1_in``); a Conv2d layer
``conv1`` has (``conv1_out``, ``conv1_in``, ``conv1_kh``, ``conv1_kw``); a bias has
(``<layer>_out``,). Dots in nested layer names become underscores in dim names
(``block.0`` -> ``block_0_out``) while variable names keep the layer name
(``block.0.weight``). Coords are integer indices (neuron, channel, kernel row/column).
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..names import Level
from ..nn.layers import BayesLayer

__all__ = ["LEVELS", "dim_prefix", "site_dims", "site_coords", "level_dim", "check_level"]

#: the granularities of a score: per weight, per output group (neuron / kernel), per input channel
LEVELS = tuple(level.value for level in Level)


def dim_prefix(layer_name: str) -> str:
    return layer_name.replace(".", "_")


def site_dims(layer_name: str, layer: BayesLayer, site: str = "weight") -> tuple[str, ...]:
    """Dim names of a site's tensor (without chain / draw)."""
    p = dim_prefix(layer_name)
    if site == "bias":
        return (f"{p}_out",)
    if site != "weight":
        raise UserError(f"unknown site {site!r}; valid sites: ['weight', 'bias']")
    shape = layer.site_shape("weight")
    if len(shape) == 2:
        return (f"{p}_out", f"{p}_in")
    if len(shape) == 4:
        return (f"{p}_out", f"{p}_in", f"{p}_kh", f"{p}_kw")
    return (f"{p}_out",) + tuple(f"{p}_d{i}" for i in range(1, len(shape)))


def site_coords(layer_name: str, layer: BayesLayer, site: str = "weight") -> dict[str, np.ndarray]:
    """Integer coords of every dim of a site."""
    dims = site_dims(layer_name, layer, site)
    shape = layer.site_shape(site)
    return {d: np.arange(n) for d, n in zip(dims, shape)}


def check_level(level: str) -> str:
    """The canonical name of a level (see :class:`pyrocompress.names.Level` for the aliases)."""
    return Level.parse(level).value


def level_dim(layer_name: str, level: str) -> str:
    """The one dim of a group-level (``group``) or input-channel-level (``in_channel``) score."""
    p = dim_prefix(layer_name)
    level = check_level(level)
    if level == "group":
        return f"{p}_out"
    if level == "in_channel":
        return f"{p}_in"
    raise UserError("level 'weight' has the site's dims; use site_dims")
