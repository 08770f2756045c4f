"""Masks from a plain network's importances, through the same policy as the Bayesian criteria.

:func:`select_masks` wraps :meth:`~pyrocompress.prune.policy.PrunePolicy.select` with nested
masks (what was pruned stays pruned) and per-layer rates; :class:`MaskKeeper` holds pruned
weights at zero during training; the rest measures what a selection reached.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ...errors import UserError
from ...names import Scope, Structure
from ..importance import importances
from ..masks import Masks, layer_shapes
from ..policy import PrunePolicy
from ..policy import output_layer as policy_output_layer
from ..targets import Sparsity, as_sparsity
from .common import candidates, prunable_layers

__all__ = ["select_masks", "unit_sparsity", "masks_from_zeros", "MaskKeeper", "reached", "tolerance",
           "warn_reached", "masks_for"]


def _ranked_scores(scores: Mapping[str, torch.Tensor], previous: Optional[Masks], structured: bool
                   ) -> dict[str, torch.Tensor]:
    """Scores with what ``previous`` already pruned set to -inf (it ranks lowest: nested masks)."""
    out = {}
    for name, s in scores.items():
        s = s.detach().float().cpu().clone()
        if previous is not None and name in previous.weight:
            keep = previous.unit_keep(name) if structured else previous.weight[name]
            if keep.shape != s.shape:
                raise UserError(f"previous mask of layer {name!r} has shape {tuple(keep.shape)}, scores "
                                 f"{tuple(s.shape)}")
            s[~keep] = -math.inf
        out[name] = s
    return out


def select_masks(net: nn.Module, scores: Mapping[str, torch.Tensor], sparsity: Union[float, Sparsity], *,
                 structure: Union[Structure, str] = Structure.WEIGHT, scope: Union[Scope, str] = Scope.GLOBAL,
                 ignored_layers: Sequence[str] = (), previous: Optional[Masks] = None,
                 layer_sparsity: Optional[Mapping[str, Union[float, Sparsity]]] = None) -> Masks:
    """Masks from importances through the same :class:`PrunePolicy` as the Bayesian criteria.

    ``scope="global"`` ranks all candidate layers together, ``"layer"`` prunes the same
    fraction of every layer (exactly, up to rounding). ``layer_sparsity`` gives some layers
    their own sparsity, ranked on their own (the lottery ticket's output layer at half
    rate). ``previous`` masks are nested: what they pruned stays pruned. The policy's
    safeguards hold (every layer keeps a unit; the output layer is never deleted whole).
    """
    scope = Scope.parse(scope)
    structure = Structure.parse(structure)
    sparsity = as_sparsity(sparsity)
    layer_sparsity = {k: as_sparsity(v) for k, v in (layer_sparsity or {}).items()}
    unknown = sorted(set(layer_sparsity) - set(scores))
    if unknown:
        raise UserError(f"layer_sparsity names layers {unknown} that are not scored; scored layers: {list(scores)}")
    ranked = _ranked_scores(scores, previous, structure.structured)
    shapes = layer_shapes(net)
    output = policy_output_layer(shapes)
    rest = {n: s for n, s in ranked.items() if n not in layer_sparsity}
    result: Optional[Masks] = None
    parts: list[tuple[dict, Sparsity]] = [({n: ranked[n]}, s) for n, s in layer_sparsity.items()]
    if rest:
        parts.insert(0, (rest, sparsity))
    for part, s in parts:
        policy = PrunePolicy(score=None, structure=structure, sparsity=s, per_layer=(scope is Scope.LAYER),
                             ignored_layers=tuple(ignored_layers))
        masks = policy.select(part, shapes, output)
        result = masks if result is None else (result & masks)
    return result


def masks_for(net: nn.Module, score: str, structure: Structure, scope: Scope, sparsity: Union[float, Sparsity],
              seed: int, ignored_layers: Sequence[str], previous: Optional[Masks] = None,
              layer_sparsity: Optional[Mapping[str, Union[float, Sparsity]]] = None) -> Masks:
    """Rank ``net``'s candidate layers by ``score`` and select ``sparsity`` of them (nested in ``previous``)."""
    chosen = candidates(net, structure, ignored_layers)
    scores = importances(net, score, structure, seed=seed, layers=chosen)
    return select_masks(net, scores, sparsity, structure=structure, scope=scope, ignored_layers=ignored_layers,
                        previous=previous, layer_sparsity=layer_sparsity)


def unit_sparsity(masks: Masks) -> float:
    """Fraction of deleted units (neurons / kernels) over the masked layers."""
    total = kept = 0
    for name in masks.weight:
        units = masks.unit_keep(name)
        total += units.numel()
        kept += int(units.sum())
    return 0.0 if total == 0 else 1.0 - kept / total


def reached(masks: Masks, structure: Structure) -> float:
    """The sparsity ``masks`` reach: of weights (unstructured) or of units (structured)."""
    return unit_sparsity(masks) if Structure.parse(structure).structured else masks.sparsity()


def masks_from_zeros(net: nn.Module) -> Masks:
    """Keep masks of the nonzero weights: the pruning a zero-filled network already carries."""
    return Masks({name: layer.weight.detach() != 0 for name, layer in prunable_layers(net)})


def tolerance(masks: Masks, structure: Structure) -> float:
    """Half a unit of rounding per layer: what exact selection may differ from the target by."""
    if Structure.parse(structure).structured:
        total = sum(masks.unit_keep(n).numel() for n in masks.weight)
    else:
        total = sum(m.numel() for m in masks.weight.values())
    return (0.5 * len(masks.weight) + 1e-9) / max(total, 1)


def warn_reached(method: str, target: float, reached_value: float, why: str, tol: float = 1e-9) -> None:
    """A ``RuntimeWarning`` with the reached value when a schedule stops short of its target."""
    if reached_value + tol < target:
        warnings.warn(f"{method}: the schedule does not reach the target sparsity {target:.4f}: reached "
                      f"{reached_value:.4f} ({why})", RuntimeWarning, stacklevel=3)


class MaskKeeper:
    """A ``step_hook`` for :func:`fit_deterministic` holding pruned weights at zero after every step.

    ``masks`` may be replaced between steps (gradual pruning); ``on_step(net, step)`` runs
    first on every step; ``steps`` counts the calls.
    """

    def __init__(self, masks: Optional[Masks] = None, on_step: Optional[Callable[[nn.Module, int], None]] = None
                 ) -> None:
        self.masks = masks
        self.on_step = on_step
        self.steps = 0

    def __call__(self, net: nn.Module) -> None:
        self.steps += 1
        if self.on_step is not None:
            self.on_step(net, self.steps)
        if self.masks is not None:
            self.masks.apply(net)
